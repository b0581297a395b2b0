use chrono::TimeZone;
use proptest::prelude::*;

use super::*;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn base() -> SearchFilters {
    SearchFilters::new("quay_logs", t("2024-06-01T00:00:00Z"), t("2024-06-02T00:00:00Z"))
}

#[test]
fn builds_namespace_repository_and_time_params() {
    let f = SearchFilters {
        namespace: Some(Namespace::parse("myorg").unwrap()),
        repository: Some(RepositoryName::parse("web").unwrap()),
        performer: Some(Performer::parse("myorg+deploy").unwrap()),
        sourcetype: Some("quay:audit".into()),
        excluded_kinds: vec!["pull_repo".into(), "push_repo".into()],
        ..base()
    };
    let q = f.build().unwrap();
    assert_eq!(
        q.spl,
        r#"search index="quay_logs" sourcetype="quay:audit" account="myorg" repository="web" performer="myorg+deploy" kind!="pull_repo" kind!="push_repo""#
    );
    assert_eq!(q.earliest_time, "1717200000");
    assert_eq!(q.latest_time, "1717286400");
}

#[test]
fn one_included_kind_is_a_term_several_are_refused() {
    let q = SearchFilters {
        kinds: vec!["create_repo".into()],
        ..base()
    }
    .build()
    .unwrap();
    assert!(q.spl.ends_with(r#" kind="create_repo""#), "{}", q.spl);
    let err = SearchFilters {
        kinds: vec!["a".into(), "b".into()],
        ..base()
    }
    .build()
    .unwrap_err();
    assert_eq!(err, QueryError::SeveralKinds(2));
}

#[test]
fn escapes_backslash_then_quote() {
    assert_eq!(quote_value("x", r#"a\"b"#).unwrap(), r#""a\\\"b""#);
    assert_eq!(quote_value("x", r"\").unwrap(), r#""\\""#);
    assert_eq!(quote_value("x", r#"""#).unwrap(), r#""\"""#);
    assert_eq!(
        quote_value("x", r#"x" OR account="y"#).unwrap(),
        r#""x\" OR account=\"y""#
    );
}

#[test]
fn refuses_wildcards_and_control_characters() {
    for bad in ["*", "a*", "x\" OR account=\"*"] {
        assert_eq!(
            quote_value("account", bad),
            Err(QueryError::Wildcard { field: "account" })
        );
    }
    for bad in ["a\nb", "a\rb", "\0", "tab\there", "del\u{7f}", "c1\u{85}"] {
        assert_eq!(
            quote_value("kind", bad),
            Err(QueryError::ControlCharacter { field: "kind" })
        );
    }
}

#[test]
fn checks_kinds_index_and_sourcetype() {
    for bad in ["Push", "a b", "x\" | delete", "", "k*"] {
        let f = SearchFilters {
            excluded_kinds: vec![bad.into()],
            ..base()
        };
        assert!(f.build().is_err(), "kind {bad:?} accepted");
    }
    for bad in ["", "Quay", "a b", "-x", "x\"y", "q*"] {
        let f = SearchFilters::new(bad, base().start, base().end);
        assert!(f.build().is_err(), "index {bad:?} accepted");
    }
    let f = SearchFilters {
        sourcetype: Some("a\" | delete".into()),
        ..base()
    };
    assert!(f.build().is_err());
}

#[test]
fn time_params_keep_fractions_and_refuse_reversed_ranges() {
    let start = Utc.timestamp_opt(1_700_000_000, 250_000_000).unwrap();
    let end = Utc.timestamp_opt(1_700_000_100, 0).unwrap();
    let q = SearchFilters::new("quay_logs", start, end).build().unwrap();
    assert_eq!(q.earliest_time, "1700000000.250000");
    assert_eq!(q.latest_time, "1700000100");
    assert_eq!(
        SearchFilters::new("quay_logs", end, start).build(),
        Err(QueryError::ReversedRange)
    );
}

#[test]
fn typed_pipes() {
    let q = base().build().unwrap();
    assert_eq!(
        q.clone().sort_by_time(SortOrder::NewestFirst).head(20).spl,
        r#"search index="quay_logs" | sort 0 -_time | head 20"#
    );
    assert_eq!(
        q.clone().sort_by_time(SortOrder::OldestFirst).spl,
        r#"search index="quay_logs" | sort 0 _time"#
    );
    assert_eq!(
        q.clone().count_by(&[StatsField::Kind, StatsField::Day]).spl,
        r#"search index="quay_logs" | eval day=strftime(_time, "%Y-%m-%d") | stats count by kind, day"#
    );
    assert_eq!(
        q.count_by(&[]).spl,
        r#"search index="quay_logs" | stats count"#
    );
}

/// Reads back the quoted value that starts at `s[0] == '"'`, undoing the escaping; returns the
/// value and the rest after the closing quote. A reference decoder for the property below.
fn unquote(s: &str) -> Option<(String, &str)> {
    let mut chars = s.strip_prefix('"')?.char_indices();
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '"' => return Some((out, &s[i + 2..])),
            c => out.push(c),
        }
    }
    None
}

proptest! {
    #[test]
    fn quoted_values_round_trip(value in any::<String>()) {
        match quote_value("performer", &value) {
            Ok(quoted) => {
                let (back, rest) = unquote(&quoted).expect("closing quote");
                prop_assert_eq!(back, value);
                prop_assert_eq!(rest, "");
            }
            Err(_) => prop_assert!(value.contains('*') || value.chars().any(char::is_control)),
        }
    }

    #[test]
    fn wildcards_and_control_characters_are_always_refused(
        prefix in any::<String>(),
        bad in prop_oneof![Just('*'), any::<char>().prop_filter("control", |c| c.is_control())],
        suffix in any::<String>(),
    ) {
        let value = format!("{prefix}{bad}{suffix}");
        prop_assert!(quote_value("account", &value).is_err());
    }
}
