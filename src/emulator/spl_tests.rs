use super::*;
use proptest::prelude::*;

fn field(f: &str, op: CmpOp, v: &str, quoted: bool) -> SearchTerm {
    SearchTerm::Field {
        field: f.into(),
        op,
        value: Pattern::new(v, quoted),
    }
}

#[test]
fn terms_and_escapes() {
    let p = parse(
        r#"search index="quay_logs" account=ns1 repository!="a\"b\\c" earliest=10 latest=20.5"#,
    )
    .unwrap();
    assert_eq!(
        p.terms,
        vec![
            field("index", CmpOp::Eq, "quay_logs", true),
            field("account", CmpOp::Eq, "ns1", false),
            field("repository", CmpOp::Ne, "a\"b\\c", true),
            SearchTerm::Earliest(10.0),
            SearchTerm::Latest(20.5),
        ]
    );
    assert!(p.commands.is_empty());
}

#[test]
fn implicit_search_and_leading_pipe() {
    assert_eq!(
        parse("account=x").unwrap().terms,
        vec![field("account", CmpOp::Eq, "x", false)]
    );
    assert_eq!(
        parse("| search account=x").unwrap().terms,
        vec![field("account", CmpOp::Eq, "x", false)]
    );
    assert!(parse("| makeresults").is_err());
}

#[test]
fn commands() {
    let p = parse(r#"search * | sort 0 -_time, +kind | head 5 | reverse | fields - ip, kind | eval d=strftime(_time, "%Y-%m-%d") | stats count by account, kind"#).unwrap();
    assert_eq!(p.terms, vec![SearchTerm::Text(Pattern::new("*", false))]);
    assert_eq!(p.commands.len(), 6);
    assert_eq!(
        p.commands[0],
        Command::Sort {
            limit: Some(0),
            keys: vec![
                SortKey {
                    field: "_time".into(),
                    descending: true
                },
                SortKey {
                    field: "kind".into(),
                    descending: false
                }
            ]
        }
    );
    assert_eq!(p.commands[1], Command::Head(5));
    assert_eq!(
        p.commands[3],
        Command::Fields {
            remove: true,
            fields: vec!["ip".into(), "kind".into()]
        }
    );
    assert_eq!(
        p.commands[5],
        Command::StatsCount {
            by: vec!["account".into(), "kind".into()]
        }
    );
    assert_eq!(
        parse("x | sort - _time").unwrap().commands[0],
        Command::Sort {
            limit: None,
            keys: vec![SortKey {
                field: "_time".into(),
                descending: true
            }]
        }
    );
}

#[test]
fn rejections_read_like_splunk() {
    for bad in [
        "search a=1 OR b=2",
        "search NOT a=1",
        "search a=\"unterminated",
        "search a=1 | frobnicate",
        "search a=1 | eval x=1+2",
        "search [search a=1]",
        "search a=b|c",
        "search a=1 | stats avg(x)",
        "search earliest=-24h",
        "search a>1",
        "search =x",
        "search a=",
        "search a=1 | sort num(x)",
    ] {
        let err = parse(bad).expect_err(bad);
        assert!(
            err.0.starts_with("Error in '") || err.0.starts_with("Unknown search command"),
            "{bad}: {err}"
        );
    }
    assert_eq!(
        parse("search a=b|c").unwrap_err().0,
        "Unknown search command 'c'."
    );
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

proptest! {
    #[test]
    fn quoted_values_round_trip(ns in "[ -~]{0,20}", repo in "[ -~]{0,20}") {
        let q = format!(r#"search index="quay_logs" account="{}" repository="{}""#, escape(&ns), escape(&repo));
        let p = parse(&q).unwrap();
        prop_assert_eq!(p.terms, vec![
            field("index", CmpOp::Eq, "quay_logs", true),
            field("account", CmpOp::Eq, &ns, true),
            field("repository", CmpOp::Eq, &repo, true),
        ]);
    }
}
