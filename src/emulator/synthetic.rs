//! Deterministic synthetic audit events: event `i` is computed from `i` alone, so millions of
//! events cost no memory and any row can be produced directly.

use std::borrow::Cow;

use super::SyntheticSpec;
use super::timefmt::{Micros, write_iso};

const REPOS: [&str; 6] = ["web", "api", "db", "cache", "worker", "builder"];
const KINDS: [&str; 8] = [
    "push_repo",
    "pull_repo",
    "create_tag",
    "delete_tag",
    "revert_tag",
    "manifest_label_add",
    "change_repo_permission",
    "create_repo",
];
const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];

/// Repository names every synthetic namespace has.
pub fn repositories() -> &'static [&'static str] {
    &REPOS
}

/// Event kinds the generator uses.
pub fn kinds() -> &'static [&'static str] {
    &KINDS
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Time of event `i`, non-decreasing in `i`: `start + i * (end - start) / count` when evenly
/// spread; with `skew` F, the first `F * count` events are evenly spread over the first tenth
/// of the range and the rest over the other nine tenths.
pub fn time_of(spec: &SyntheticSpec, i: u64) -> Micros {
    let start = spec.start.timestamp_micros();
    let span = (spec.end.timestamp_micros() - start).max(0) as i128;
    let n = spec.count.max(1) as i128;
    if spec.skew <= 0.0 {
        return start + ((i as i128 * span) / n) as Micros;
    }
    let dense = ((spec.skew.min(1.0) * n as f64) as i128).clamp(1, n);
    let tenth = span / 10;
    let i = i as i128;
    if i < dense {
        start + ((i * tenth) / dense) as Micros
    } else {
        let sparse = (n - dense).max(1);
        start + (tenth + ((i - dense) * (span - tenth)) / sparse) as Micros
    }
}

/// Namespace index of event `i` (`ns{i % K}`), the key of the arithmetic namespace filter.
pub fn namespace_of(spec: &SyntheticSpec, i: u64) -> u64 {
    i % u64::from(spec.namespaces.max(1))
}

/// The decoded attributes of one synthetic event.
#[derive(Debug, Clone, Copy)]
pub struct Parts {
    pub time: Micros,
    pub ns: u64,
    pub repo: &'static str,
    pub kind: &'static str,
    /// Index into the users, or `None` for the namespace's robot.
    pub user: Option<&'static str>,
    pub ip: [u8; 4],
    pub tag: u64,
}

impl Parts {
    /// Decodes event `i`.
    pub fn of(spec: &SyntheticSpec, i: u64) -> Self {
        let h = splitmix64(i);
        let ns = namespace_of(spec, i);
        let p = ((h >> 16) % 5) as usize;
        Parts {
            time: time_of(spec, i),
            ns,
            repo: REPOS[(h % REPOS.len() as u64) as usize],
            kind: KINDS[((h >> 8) % KINDS.len() as u64) as usize],
            user: USERS.get(p).copied(),
            ip: [
                10,
                (ns % 256) as u8,
                (h >> 24) as u8,
                ((h >> 32) % 254 + 1) as u8,
            ],
            tag: (h >> 40) % 100,
        }
    }

    fn performer(&self) -> Cow<'static, str> {
        match self.user {
            Some(u) => Cow::Borrowed(u),
            None => Cow::Owned(format!("ns{}+bot", self.ns)),
        }
    }

    /// An extracted field's value, as Splunk would show it.
    pub fn field(&self, name: &str) -> Option<Cow<'static, str>> {
        Some(match name {
            "kind" => Cow::Borrowed(self.kind),
            "account" => Cow::Owned(format!("ns{}", self.ns)),
            "performer" => self.performer(),
            "performer_email" => Cow::Owned(format!("{}@example.com", self.user?)),
            "performer_kind" => Cow::Borrowed(if self.user.is_some() { "user" } else { "robot" }),
            "repository" => Cow::Borrowed(self.repo),
            "ip" => Cow::Owned(self.ip_text()),
            "metadata_json" => {
                let mut b = Vec::new();
                self.write_metadata(&mut b, b"\"");
                Cow::Owned(String::from_utf8(b).unwrap_or_default())
            }
            "datetime" => {
                let mut b = Vec::new();
                write_iso(&mut b, self.time, 6);
                Cow::Owned(String::from_utf8(b).unwrap_or_default())
            }
            _ => return None,
        })
    }

    /// The fields whose values are fixed strings (so counting them allocates nothing).
    pub fn is_static_field(name: &str) -> bool {
        matches!(name, "kind" | "repository" | "performer_kind")
    }

    /// The value of a field [`Parts::is_static_field`] accepts.
    pub fn static_field(&self, name: &str) -> Option<&'static str> {
        match name {
            "kind" => Some(self.kind),
            "repository" => Some(self.repo),
            "performer_kind" => Some(if self.user.is_some() { "user" } else { "robot" }),
            _ => None,
        }
    }

    /// The extracted field names, in `_raw` order.
    pub fn field_names(&self) -> &'static [&'static str] {
        if self.user.is_some() {
            &[
                "kind",
                "account",
                "performer",
                "performer_email",
                "performer_kind",
                "repository",
                "ip",
                "metadata_json",
                "datetime",
            ]
        } else {
            &[
                "kind",
                "account",
                "performer",
                "performer_kind",
                "repository",
                "ip",
                "metadata_json",
                "datetime",
            ]
        }
    }

    fn ip_text(&self) -> String {
        let [a, b, c, d] = self.ip;
        format!("{a}.{b}.{c}.{d}")
    }

    fn write_metadata(&self, b: &mut Vec<u8>, q: &[u8]) {
        b.push(b'{');
        kv(b, q, b"repo", self.repo.as_bytes());
        b.push(b',');
        key(b, q, b"namespace");
        b.extend_from_slice(q);
        b.extend_from_slice(b"ns");
        push_u64(b, self.ns);
        b.extend_from_slice(q);
        b.push(b',');
        key(b, q, b"tag");
        b.extend_from_slice(q);
        b.push(b'v');
        push_u64(b, self.tag);
        b.extend_from_slice(q);
        b.push(b',');
        key(b, q, b"username");
        self.write_performer(b, q);
        b.push(b'}');
    }

    fn write_performer(&self, b: &mut Vec<u8>, q: &[u8]) {
        b.extend_from_slice(q);
        match self.user {
            Some(u) => b.extend_from_slice(u.as_bytes()),
            None => {
                b.extend_from_slice(b"ns");
                push_u64(b, self.ns);
                b.extend_from_slice(b"+bot");
            }
        }
        b.extend_from_slice(q);
    }

    /// Writes the event's JSON; `q` is the quote as it must appear (`"` or `\"` inside a string).
    pub fn write_raw(&self, b: &mut Vec<u8>, q: &[u8]) {
        b.push(b'{');
        kv(b, q, b"kind", self.kind.as_bytes());
        b.push(b',');
        key(b, q, b"account");
        b.extend_from_slice(q);
        b.extend_from_slice(b"ns");
        push_u64(b, self.ns);
        b.extend_from_slice(q);
        b.push(b',');
        key(b, q, b"performer");
        self.write_performer(b, q);
        b.push(b',');
        if let Some(u) = self.user {
            key(b, q, b"performer_email");
            b.extend_from_slice(q);
            b.extend_from_slice(u.as_bytes());
            b.extend_from_slice(b"@example.com");
            b.extend_from_slice(q);
            b.push(b',');
        }
        kv(
            b,
            q,
            b"performer_kind",
            if self.user.is_some() {
                b"user"
            } else {
                b"robot"
            },
        );
        b.push(b',');
        kv(b, q, b"repository", self.repo.as_bytes());
        b.push(b',');
        key(b, q, b"ip");
        self.write_ip(b, q);
        b.push(b',');
        key(b, q, b"metadata_json");
        self.write_metadata(b, q);
        b.push(b',');
        key(b, q, b"datetime");
        b.extend_from_slice(q);
        write_iso(b, self.time, 6);
        b.extend_from_slice(q);
        b.push(b'}');
    }

    fn write_ip(&self, b: &mut Vec<u8>, q: &[u8]) {
        b.extend_from_slice(q);
        for (n, octet) in self.ip.iter().enumerate() {
            if n > 0 {
                b.push(b'.');
            }
            push_u64(b, u64::from(*octet));
        }
        b.extend_from_slice(q);
    }

    /// Writes the Splunk result object (`_raw`, `_time`, `index`, `sourcetype`, extracted fields).
    /// `index_json` and `sourcetype_json` are already JSON string literals.
    pub fn write_result(&self, b: &mut Vec<u8>, index_json: &[u8], sourcetype_json: &[u8]) {
        const Q: &[u8] = b"\"";
        const EQ: &[u8] = b"\\\"";
        b.extend_from_slice(b"{\"_raw\":\"");
        self.write_raw(b, EQ);
        b.extend_from_slice(b"\",\"_time\":\"");
        write_iso(b, self.time, 3);
        b.extend_from_slice(b"\",\"index\":");
        b.extend_from_slice(index_json);
        b.extend_from_slice(b",\"sourcetype\":");
        b.extend_from_slice(sourcetype_json);
        b.push(b',');
        // The extracted fields repeat `_raw`'s members, with the metadata object as JSON text.
        kv(b, Q, b"kind", self.kind.as_bytes());
        b.extend_from_slice(b",\"account\":\"ns");
        push_u64(b, self.ns);
        b.extend_from_slice(b"\",\"performer\":");
        self.write_performer(b, Q);
        b.push(b',');
        if let Some(u) = self.user {
            b.extend_from_slice(b"\"performer_email\":\"");
            b.extend_from_slice(u.as_bytes());
            b.extend_from_slice(b"@example.com\",");
        }
        kv(
            b,
            Q,
            b"performer_kind",
            if self.user.is_some() {
                b"user"
            } else {
                b"robot"
            },
        );
        b.push(b',');
        kv(b, Q, b"repository", self.repo.as_bytes());
        b.extend_from_slice(b",\"ip\":");
        self.write_ip(b, Q);
        b.extend_from_slice(b",\"metadata_json\":\"");
        self.write_metadata(b, EQ);
        b.extend_from_slice(b"\",\"datetime\":\"");
        write_iso(b, self.time, 6);
        b.extend_from_slice(b"\"}");
    }
}

fn key(b: &mut Vec<u8>, q: &[u8], k: &[u8]) {
    b.extend_from_slice(q);
    b.extend_from_slice(k);
    b.extend_from_slice(q);
    b.push(b':');
}

fn kv(b: &mut Vec<u8>, q: &[u8], k: &[u8], v: &[u8]) {
    key(b, q, k);
    b.extend_from_slice(q);
    b.extend_from_slice(v);
    b.extend_from_slice(q);
}

/// Appends a decimal number.
pub fn push_u64(b: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    b.extend_from_slice(&tmp[i..]);
}

/// The synthetic event `i` as the JSON document a Quay producer would have written.
pub fn event(spec: &SyntheticSpec, i: u64) -> serde_json::Value {
    let mut b = Vec::with_capacity(384);
    Parts::of(spec, i).write_raw(&mut b, b"\"");
    serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn spec() -> SyntheticSpec {
        SyntheticSpec {
            count: 1000,
            start: Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
            end: Utc.with_ymd_and_hms(2024, 1, 2, 0, 0, 0).unwrap(),
            namespaces: 3,
            skew: 0.0,
        }
    }

    #[test]
    fn deterministic_and_well_formed() {
        let s = spec();
        for i in [0, 1, 4, 999] {
            let e = event(&s, i);
            assert_eq!(e, event(&s, i));
            assert_eq!(e["account"], format!("ns{}", i % 3));
            assert!(e["metadata_json"].is_object());
        }
        assert_eq!(event(&s, 0)["datetime"], "2024-01-01T00:00:00.000000+00:00");
        assert_eq!(time_of(&s, 500) - time_of(&s, 0), 43_200_000_000);
        let skewed = SyntheticSpec {
            skew: 0.8,
            ..s.clone()
        };
        let tenth = (skewed.end - skewed.start).num_microseconds().unwrap() / 10;
        let first_tenth = (0..skewed.count)
            .filter(|i| time_of(&skewed, *i) < skewed.start.timestamp_micros() + tenth)
            .count() as u64;
        assert_eq!(first_tenth, skewed.count * 8 / 10);
        assert!((1..skewed.count).all(|i| time_of(&skewed, i - 1) <= time_of(&skewed, i)));
        assert!(time_of(&skewed, skewed.count - 1) < skewed.end.timestamp_micros());
    }

    #[test]
    fn result_object_agrees_with_raw_and_fields() {
        let s = spec();
        for i in 0..50 {
            let p = Parts::of(&s, i);
            let mut b = Vec::new();
            p.write_result(&mut b, b"\"quay_logs\"", b"\"_json\"");
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            let raw: serde_json::Value = serde_json::from_str(v["_raw"].as_str().unwrap()).unwrap();
            assert_eq!(raw, event(&s, i));
            for name in p.field_names() {
                assert_eq!(
                    v[*name].as_str().map(str::to_string),
                    p.field(name).map(|c| c.into_owned()),
                    "{name}"
                );
            }
            let meta: serde_json::Value =
                serde_json::from_str(v["metadata_json"].as_str().unwrap()).unwrap();
            assert_eq!(meta, raw["metadata_json"]);
        }
    }
}
