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

/// The round trip through the emulator's SPL parser (the same subset real Splunk accepts): what
/// the builder writes parses back to exactly the intended terms, whatever the values hold.
mod round_trip {
    use super::*;
    use crate::emulator::spl::{self, CmpOp, Command, SearchTerm, ValuePattern};

    fn term(field: &str, op: CmpOp, value: &str) -> SearchTerm {
        SearchTerm::Field {
            field: field.into(),
            op,
            value: ValuePattern::new(value, true),
        }
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,6}([._-][a-z0-9]{1,6}){0,2}"
    }

    fn kind() -> impl Strategy<Value = String> {
        "[a-z0-9_]{1,12}"
    }

    proptest! {
        #[test]
        fn arbitrary_values_cannot_add_terms_pipes_or_subsearches(value in any::<String>()) {
            let mut spl = String::from("search");
            match push_term(&mut spl, "performer", "=", &value) {
                Ok(()) => {
                    let parsed = spl::parse(&spl).map_err(|e| TestCaseError::fail(format!("{spl}: {e}")))?;
                    prop_assert_eq!(parsed.terms, vec![term("performer", CmpOp::Eq, &value)]);
                    prop_assert!(parsed.commands.is_empty());
                }
                Err(_) => prop_assert!(value.contains('*') || value.chars().any(char::is_control)),
            }
        }

        #[test]
        fn filters_parse_back_exactly(
            ns in name().prop_filter_map("namespace", |s| Namespace::parse(&s).ok()),
            repo in proptest::option::of("[a-z0-9][a-z0-9._-]{0,10}")
                .prop_map(|r| r.and_then(|r| RepositoryName::parse(&r).ok())),
            performer in proptest::option::of((name(), proptest::option::of("[a-z][a-z0-9_]{0,8}")))
                .prop_map(|p| p.and_then(|(owner, robot)| {
                    let text = match robot { Some(r) => format!("{owner}+{r}"), None => owner };
                    Performer::parse(&text).ok()
                })),
            included in proptest::collection::vec(kind(), 0..=1),
            excluded in proptest::collection::vec(kind(), 0..4),
            head in 1u64..100_000,
        ) {
            let filters = SearchFilters {
                namespace: Some(ns.clone()),
                repository: repo.clone(),
                performer: performer.clone(),
                kinds: included.clone(),
                excluded_kinds: excluded.clone(),
                ..base()
            };
            let q = filters.build().unwrap().sort_by_time(SortOrder::NewestFirst).head(head);
            let parsed = spl::parse(&q.spl).map_err(|e| TestCaseError::fail(format!("{}: {e}", q.spl)))?;
            let mut want = vec![term("index", CmpOp::Eq, "quay_logs"), term("account", CmpOp::Eq, ns.as_str())];
            want.extend(repo.iter().map(|r| term("repository", CmpOp::Eq, r.as_str())));
            want.extend(performer.iter().map(|p| term("performer", CmpOp::Eq, p.as_str())));
            want.extend(included.iter().map(|k| term("kind", CmpOp::Eq, k)));
            want.extend(excluded.iter().map(|k| term("kind", CmpOp::Ne, k)));
            prop_assert_eq!(parsed.terms, want);
            prop_assert_eq!(parsed.commands.len(), 2);
            let sorted_newest_first = matches!(
                &parsed.commands[0],
                Command::Sort { limit: Some(0), keys }
                    if keys.len() == 1 && keys[0].field == "_time" && keys[0].descending
            );
            prop_assert!(sorted_newest_first, "{:?}", parsed.commands[0]);
            prop_assert_eq!(&parsed.commands[1], &Command::Head(head));
        }
    }

    #[test]
    fn stats_pipes_parse() {
        let q = base().build().unwrap().count_by(&[StatsField::Kind, StatsField::Day]);
        let parsed = spl::parse(&q.spl).unwrap();
        assert!(matches!(&parsed.commands[0], Command::Strftime { target, source, .. } if target == "day" && source == "_time"));
        assert_eq!(
            parsed.commands[1],
            Command::StatsCount { by: vec!["kind".into(), "day".into()] }
        );
    }
}
