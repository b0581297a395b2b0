//! Requester-facing wording of an operator's error text: the e-mail, the callback and the
//! status document say what happened; which configuration key to check is for the log.

/// The configuration sections; `section.key` in a message is an operator's hint.
const SECTIONS: [&str; 12] = [
    "server", "database", "worker", "export", "splunk", "storage", "email", "callback", "logs",
    "auth", "audit", "schedule",
];

/// `text` without operator hints: a `; check …` clause and configuration keys in parentheses
/// (`(splunk.search_timeout_seconds)`, `(7200 s, worker.max_work_seconds)` → `(7200 s)`).
pub fn for_requester(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find(" (") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find(')') else {
            out.push_str(&rest[open..]);
            rest = "";
            break;
        };
        let kept: Vec<&str> = after[..close]
            .split(", ")
            .filter(|part| !is_config_key(part))
            .collect();
        if !kept.is_empty() {
            out.push_str(" (");
            out.push_str(&kept.join(", "));
            out.push(')');
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    // "…; check splunk.bearer_token and …" up to the end of that clause.
    while let Some(at) = out.find("; check ") {
        let end = out[at + 2..].find(';').map_or(out.len(), |i| at + 2 + i);
        out.replace_range(at..end, "");
    }
    out
}

/// `splunk.bearer_token`, `storage.s3.bucket`, `splunk.host/port`: a configuration key.
fn is_config_key(text: &str) -> bool {
    let text = text.trim();
    text.split_once('.').is_some_and(|(section, key)| {
        SECTIONS.contains(&section)
            && !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_./".contains(c))
    })
}

#[cfg(test)]
mod tests {
    use super::for_requester;

    #[test]
    fn operator_hints_are_left_out() {
        assert_eq!(
            for_requester(
                "Splunk rejected the bearer token (HTTP 401): call not properly authenticated; \
                 check splunk.bearer_token and the token's search permissions"
            ),
            "Splunk rejected the bearer token (HTTP 401): call not properly authenticated"
        );
        assert_eq!(
            for_requester(
                "Splunk search job 17 did not finish within 60s (splunk.search_timeout_seconds)"
            ),
            "Splunk search job 17 did not finish within 60s"
        );
        assert_eq!(
            for_requester(
                "the export did not finish within the time one attempt may take (7200 s, worker.max_work_seconds)"
            ),
            "the export did not finish within the time one attempt may take (7200 s)"
        );
    }

    #[test]
    fn other_text_is_unchanged() {
        for text in [
            "could not talk to Splunk: connection failed: error sending request (gave up after 3 attempts)",
            "S3 storage (bucket exports) answered 503",
            "no events (none at all)",
            "unbalanced (paren",
        ] {
            assert_eq!(for_requester(text), text);
        }
    }
}
