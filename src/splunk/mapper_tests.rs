use chrono::{DateTime, Utc};
use proptest::strategy::Strategy;
use serde_json::json;

use super::*;
use crate::splunk::timestamp::parse_timestamp;

fn row(v: serde_json::Value) -> Row {
    Row::from_json(v.to_string()).unwrap()
}

/// A row as Splunk returns it: the event as `_raw` text plus some of Splunk's own fields.
fn raw_row(event: serde_json::Value) -> Row {
    row(json!({
        "_bkt": "quay_logs~0~X", "_cd": "0:1", "_indextime": "1718737153",
        "_raw": event.to_string(), "_serial": "0", "_si": ["idx", "quay_logs"],
        "_sourcetype": "_json", "_time": "2024-06-18T18:59:13.000+00:00",
        "host": "h", "index": "quay_logs", "linecount": "1", "source": "quay",
    }))
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[test]
fn maps_a_full_event_from_raw() {
    let entry = map_row(&raw_row(json!({
        "kind": "push_repo", "account": "myorg", "performer": "alice",
        "performer_email": "Alice@Example.com ", "performer_kind": "user",
        "repository": "web", "ip": "10.0.0.1",
        "metadata_json": {"tag": "latest", "n": 1},
        "datetime": "2024-06-18T18:59:13+00:00",
    })))
    .unwrap();
    assert_eq!(entry.kind, "push_repo");
    assert_eq!(entry.namespace.as_deref(), Some("myorg"));
    assert_eq!(entry.repository.as_deref(), Some("web"));
    assert_eq!(entry.ip.as_deref(), Some("10.0.0.1"));
    assert_eq!(entry.datetime, t("2024-06-18T18:59:13Z"));
    assert_eq!(json!(entry.metadata), json!({"tag": "latest", "n": 1}));
    let p = entry.performer.unwrap();
    assert_eq!(p.name, "alice");
    assert!(!p.is_robot);
    assert_eq!(
        &*p.avatar_hash,
        "ff8d9819fc0e12bf0d24892e45987e249a28dce836a85cad60e28eaaa8c6d976"
    );
    assert_eq!(p.avatar_color, "#a55194");
}

#[test]
fn every_datetime_form_maps_to_the_same_instant() {
    let want = t("2024-06-18T18:59:13Z");
    for dt in [
        json!(1718737153),
        json!(1718737153.0),
        json!("1718737153"),
        json!("1718737153.000"),
        json!("2024-06-18T18:59:13Z"),
        json!("2024-06-18T18:59:13+00:00"),
        json!("2024-06-18T20:59:13+02:00"),
        json!("2024-06-18T20:59:13.000+0200"),
        json!("2024-06-18 18:59:13"),
        json!("2024-06-18T18:59:13"),
        json!("2024-06-18 18:59:13.000000"),
        json!("Tue, 18 Jun 2024 18:59:13 -0000"),
    ] {
        let entry = map_event_json(&json!({"kind": "k", "datetime": dt}).to_string())
            .unwrap_or_else(|e| panic!("{dt}: {e}"));
        assert_eq!(entry.datetime, want, "{dt}");
    }
    let frac = map_event_json(r#"{"kind":"k","datetime":"1718737153.25"}"#).unwrap();
    assert_eq!(frac.datetime, t("2024-06-18T18:59:13.25Z"));
    let float = map_event_json(r#"{"kind":"k","datetime":1718737153.5}"#).unwrap();
    assert_eq!(float.datetime, t("2024-06-18T18:59:13.5Z"));
}

#[test]
fn metadata_as_string_object_or_alternate_key() {
    for event in [
        json!({"kind": "k", "datetime": 0, "metadata_json": "{\"a\": [1, 2]}"}),
        json!({"kind": "k", "datetime": 0, "metadata_json": {"a": [1, 2]}}),
        json!({"kind": "k", "datetime": 0, "metadata": {"a": [1, 2]}}),
        json!({"kind": "k", "datetime": 0, "metadata_json": "not json", "metadata": "{\"a\":[1,2]}"}),
    ] {
        let entry = map_event_json(&event.to_string()).unwrap();
        assert_eq!(json!(entry.metadata), json!({"a": [1, 2]}), "{event}");
    }
    let none = map_event_json(r#"{"kind":"k","datetime":0,"metadata_json":null}"#).unwrap();
    assert!(none.metadata.is_empty());
}

#[test]
fn falls_back_to_extracted_fields_and_time() {
    // `_raw` is not JSON: everything comes from Splunk's extracted fields and `_time`.
    let entry = map_row(&row(json!({
        "_raw": "kind=pull_repo account=ns1", "_time": "2024-06-18T20:59:13.000+02:00",
        "kind": "pull_repo", "account": "ns1", "repository": ["r1", "r1"],
        "performer": "bob", "ip": "",
    })))
    .unwrap();
    assert_eq!(entry.kind, "pull_repo");
    assert_eq!(entry.namespace.as_deref(), Some("ns1"));
    assert_eq!(entry.repository.as_deref(), Some("r1"));
    assert_eq!(entry.ip, None);
    assert_eq!(entry.datetime, t("2024-06-18T18:59:13Z"));
    assert_eq!(entry.performer.unwrap().name, "bob");

    // `_raw` lacks the datetime: `_time` fills in; `_raw` fields win over extracted ones.
    let entry = map_row(&row(json!({
        "_raw": json!({"kind": "create_repo", "account": "real"}).to_string(),
        "_time": "1718737153", "account": "extracted",
    })))
    .unwrap();
    assert_eq!(entry.namespace.as_deref(), Some("real"));
    assert_eq!(entry.datetime, t("2024-06-18T18:59:13Z"));
}

#[test]
fn extracted_fields_fill_only_what_raw_lacks() {
    // `_raw` has no repository or ip: those come from the extracted fields, the rest from `_raw`.
    let entry = map_row(&row(json!({
        "_raw": json!({"kind": "pull_repo", "account": "real", "datetime": 1718737153,
                       "performer": "alice", "metadata_json": {"a": 1}}).to_string(),
        "_time": "1", "account": "extracted", "repository": "web", "ip": "10.0.0.9",
        "performer": "mallory", "performer_email": "mallory@example.com",
    })))
    .unwrap();
    assert_eq!(entry.namespace.as_deref(), Some("real"));
    assert_eq!(entry.repository.as_deref(), Some("web"));
    assert_eq!(entry.ip.as_deref(), Some("10.0.0.9"));
    assert_eq!(entry.datetime, t("2024-06-18T18:59:13Z"));
    // The performer's e-mail comes from where its name came from, never from another source.
    let performer = entry.performer.unwrap();
    assert_eq!(performer.name, "alice");
    let (alice_hash, _) = avatar("alice", None);
    assert_eq!(performer.avatar_hash, alice_hash);
}

#[test]
fn fields_after_a_complete_raw_are_not_read() {
    let event = json!({"kind": "k", "account": "a", "performer": "p", "repository": "r",
                       "ip": "1.2.3.4", "metadata_json": {}, "datetime": 0});
    let map = |text: &str| map_row_text(text.as_bytes(), |e| e.into_owned());
    // Broken after `_raw`, but `_raw` holds every field: the row maps without reading on.
    let entry = map(&format!(
        r#"{{"_raw":{},"index": [1 }}"#,
        json!(event.to_string())
    ));
    assert_eq!(entry.unwrap().kind, "k");
    // The same break where a field is missing from `_raw` is a malformed row.
    let mut partial = event.clone();
    partial.as_object_mut().unwrap().remove("ip");
    let partial = json!(partial.to_string());
    assert_eq!(
        map(&format!(r#"{{"_raw":{partial},"index": [1 }}"#)),
        Err(SkipReason::Malformed)
    );
    // Fields before `_raw` count too.
    let entry = map(&format!(r#"{{"ip":"9.9.9.9","_raw":{partial}}}"#)).unwrap();
    assert_eq!(entry.ip.as_deref(), Some("9.9.9.9"));
}

#[test]
fn robots_and_missing_performers() {
    let robot = map_event_json(r#"{"kind":"k","datetime":0,"performer":"myorg+deploy"}"#)
        .unwrap()
        .performer
        .unwrap();
    assert!(robot.is_robot);
    assert_eq!(
        &*robot.avatar_hash,
        "d0539501946030e00b4961d6794919e279bfe877777f539d62eabde65317f3f8"
    );
    assert_eq!(robot.avatar_color, "#bcbd22");
    let by_kind = map_event_json(
        r#"{"kind":"k","datetime":0,"performer":"builder","performer_kind":"robot"}"#,
    )
    .unwrap();
    assert!(by_kind.performer.unwrap().is_robot);
    for event in [
        r#"{"kind":"k","datetime":0}"#,
        r#"{"kind":"k","datetime":0,"performer":null}"#,
        r#"{"kind":"k","datetime":0,"performer":""}"#,
    ] {
        assert_eq!(map_event_json(event).unwrap().performer, None, "{event}");
    }
}

#[test]
fn unmappable_rows_are_skipped_not_fatal() {
    assert_eq!(
        map_row(&raw_row(json!({"datetime": 0}))),
        Err(SkipReason::NoKind)
    );
    assert_eq!(
        map_row(&row(
            json!({"_raw": "{\"kind\":\"k\",\"datetime\":\"soon\"}"})
        )),
        Err(SkipReason::NoTimestamp)
    );
    assert_eq!(
        map_row(&row(json!({"kind": "k", "_time": "garbage"}))),
        Err(SkipReason::NoTimestamp)
    );
    assert_eq!(map_event_json("[1,2]"), Err(SkipReason::Malformed));
    assert_eq!(map_event_json("{"), Err(SkipReason::Malformed));
    for weird in [
        r#"{"kind":{"a":1},"datetime":0}"#,
        r#"{"kind":"k","datetime":1e300}"#,
        r#"{"kind":"k","datetime":"-"}"#,
        r#"{"kind":"k","datetime":"1.2.3"}"#,
        r#"{"kind":"k","datetime":99999999999999999999}"#,
    ] {
        assert!(map_event_json(weird).is_err(), "{weird}");
    }
}

proptest::proptest! {
    #[test]
    fn never_panics_on_arbitrary_rows(text in ".*", dt in ".*") {
        let _ = map_event_json(&text);
        let _ = parse_timestamp(&dt);
        let event = json!({"kind": "k", "datetime": dt, "metadata_json": text}).to_string();
        let _ = map_row(&raw_row(serde_json::from_str(&event).unwrap()));
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// Reading `_raw` in place gives exactly what unescaping it first gives, whatever the event.
    #[test]
    fn reading_raw_in_place_agrees_with_unescaping_it(
        kind in proptest::option::of(text_value()),
        account in proptest::option::of(text_value()),
        performer in proptest::option::of(text_value()),
        email in proptest::option::of(text_value()),
        robot in proptest::option::of(proptest::bool::ANY),
        ip in proptest::option::of(text_value()),
        metadata in proptest::option::of(metadata_value()),
        datetime in proptest::option::of(proptest::prop_oneof![
            (0i64..4_000_000_000).prop_map(|n| json!(n)),
            (0i64..4_000_000_000).prop_map(|n| json!(n.to_string())),
            proptest::strategy::Just(json!("2024-06-18T18:59:13.000000+00:00")),
            proptest::strategy::Just(json!("2024-06-18 20:59:13+02:00")),
            text_value(),
        ]),
        extra in proptest::option::of(metadata_value()),
        spaced in proptest::bool::ANY,
    ) {
        let mut event = serde_json::Map::new();
        let mut put = |k: &str, v: Option<serde_json::Value>| {
            if let Some(v) = v {
                event.insert(k.into(), v);
            }
        };
        put("kind", kind);
        put("account", account);
        put("performer", performer);
        put("performer_email", email);
        put("performer_kind", robot.map(|r| json!(if r { "robot" } else { "user" })));
        put("ip", ip);
        put("metadata_json", metadata);
        put("datetime", datetime);
        put("other", extra);
        let raw = if spaced {
            serde_json::to_string_pretty(&event).unwrap().replace('\n', " ")
        } else {
            serde_json::to_string(&event).unwrap()
        };
        let row = json!({"_raw": raw, "_time": "2024-06-18T18:59:13.000+00:00", "kind": "top"})
            .to_string();
        let owned = |entry: LogEntry<'_>| entry.into_owned();
        let in_place = map_row_text_via(row.as_bytes(), true, owned);
        let general = map_row_text_via(row.as_bytes(), false, owned);
        proptest::prop_assert_eq!(in_place, general, "{}", row);
    }
}

/// Strings an audit event may hold: plain names mostly, and now and then quotes, backslashes,
/// control characters, non-ASCII text, blanks or a number instead.
fn text_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    prop_oneof![
        4 => "[a-z0-9_.+@-]{0,12}".prop_map(serde_json::Value::from),
        1 => any::<String>().prop_map(serde_json::Value::from),
        1 => "[ a\"\\\\\n\té]{0,6}".prop_map(serde_json::Value::from),
        1 => any::<i32>().prop_map(serde_json::Value::from),
        1 => Just(serde_json::Value::Null),
    ]
}

/// Metadata as an object (nested, with awkward strings), as a JSON string of one, or not an
/// object at all.
fn metadata_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        "[a-z0-9 ]{0,8}".prop_map(serde_json::Value::from),
        "[a\"\\\\}\\]{]{0,4}".prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        any::<bool>().prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
    ];
    let nested = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![
        3 => proptest::collection::btree_map("[a-z_]{1,6}", nested.clone(), 0..4)
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        1 => nested.clone().prop_map(|v| serde_json::Value::String(v.to_string())),
        1 => nested,
    ]
}
