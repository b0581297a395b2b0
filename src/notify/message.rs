//! The words of the export e-mail: subject, plain-text and HTML bodies (pure, no I/O).

use chrono::{DateTime, Utc};

use super::notice::{Notice, Outcome};

/// The rendered parts of one notification e-mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailContent {
    pub subject: String,
    pub plain: String,
    pub html: String,
}

/// The subject line; `registry_title` was checked for line breaks when the mailer was built.
pub fn subject(registry_title: &str) -> String {
    format!("[{registry_title}] Export Action Logs Complete")
}

/// Renders the mail for `notice` as seen at `now` (the link's remaining validity depends on it).
pub fn render(registry_title: &str, notice: &Notice, now: DateTime<Utc>) -> MailContent {
    let scope = match &notice.repository {
        Some(repo) => format!("repository {}/{}", notice.namespace, repo),
        None => format!("namespace {}", notice.namespace),
    };
    let range = format!(
        "{} to {}",
        notice.range.start_day_label(),
        notice.range.end_day_label()
    );
    let headline = format!(
        "Your export {} of the action logs of {} ({}) {}.",
        notice.export_id,
        scope,
        range,
        notice.outcome.describe()
    );

    let mut plain = vec![headline.clone(), String::new()];
    let mut html = vec![format!("<p>{}</p>", escape(&headline))];
    match &notice.outcome {
        Outcome::Succeeded {
            url,
            expires_at,
            logs_exported,
            size_bytes,
        } => {
            let summary = format!(
                "It contains {logs_exported} log entries ({}).",
                human_size(*size_bytes)
            );
            let validity = validity(*expires_at, now);
            plain.push(summary.clone());
            plain.push(String::new());
            plain.push("Download it here:".into());
            plain.push(url.to_string());
            plain.push(String::new());
            plain.push(validity.clone());
            if let Some(again) = &notice.download_url {
                plain.push(String::new());
                plain.push(
                    "Signed in to the registry, you can get a fresh link at any time while the \
                     file is kept:"
                        .into(),
                );
                plain.push(again.clone());
            }
            if let Some(sha256) = &notice.sha256 {
                plain.push(String::new());
                plain.push(format!("SHA-256 of the file: {sha256}"));
                html.push(format!(
                    "<p>SHA-256 of the file: <code>{}</code></p>",
                    escape(sha256)
                ));
            }
            html.push(format!("<p>{}</p>", escape(&summary)));
            html.push(format!(
                "<p><a href=\"{0}\">Download the exported logs</a><br>{0}</p>",
                escape(url.as_str())
            ));
            html.push(format!("<p>{}</p>", escape(&validity)));
            if let Some(again) = &notice.download_url {
                html.push(format!(
                    "<p>Signed in to the registry, you can get a fresh link at any time while the \
                     file is kept:<br><a href=\"{0}\">{0}</a></p>",
                    escape(again)
                ));
            }
        }
        Outcome::Failed { reason } | Outcome::InvalidRequest { reason } => {
            let why = format!("Reason: {reason}");
            let next = if matches!(notice.outcome, Outcome::Failed { .. }) {
                "No file was produced. You can request the export again; if it keeps failing, \
                 contact the registry administrator with the export id above."
            } else {
                "No file was produced. Correct the request and submit it again."
            };
            plain.push(why.clone());
            plain.push(String::new());
            plain.push(next.into());
            html.push(format!("<p>{}</p>", escape(&why)));
            html.push(format!("<p>{}</p>", escape(next)));
        }
        Outcome::TimedOut => {
            let next = "The export took longer than the service allows and was stopped; no file \
                        was produced. Try again with a shorter date range.";
            plain.push(next.into());
            html.push(format!("<p>{}</p>", escape(next)));
        }
    }
    let footer = format!(
        "This message was sent by {registry_title} because this address was given for the export."
    );
    plain.push(String::new());
    plain.push("-- ".into());
    plain.push(footer.clone());
    html.push(format!("<hr><p><small>{}</small></p>", escape(&footer)));

    MailContent {
        subject: subject(registry_title),
        plain: plain.join("\n") + "\n",
        html: format!(
            "<!DOCTYPE html>\n<html><body>\n{}\n</body></html>\n",
            html.join("\n")
        ),
    }
}

/// "The link is valid until 2024-06-18 19:59 UTC (1 hour); after that the file is deleted."
fn validity(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let until = expires_at.format("%Y-%m-%d %H:%M UTC");
    let left = (expires_at - now).num_seconds();
    if left <= 0 {
        format!(
            "The link expired at {until} and the file has been deleted; request the export again."
        )
    } else {
        format!(
            "The link is valid until {until} ({}); after that the file is deleted, so save a copy \
             before then.",
            human_duration(left)
        )
    }
}

/// "1 hour", "2 hours 5 minutes", "45 minutes", "less than a minute" (to the nearest minute, so
/// a link sent a few seconds after it was made still reads "1 hour").
fn human_duration(seconds: i64) -> String {
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    let total = (seconds + 30) / 60;
    let (days, hours, minutes) = (total / 1440, total % 1440 / 60, total % 60);
    let parts: Vec<String> = [(days, "day"), (hours, "hour"), (minutes, "minute")]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| plural(n, unit))
        .collect();
    if parts.is_empty() {
        "less than a minute".into()
    } else {
        parts.join(" ")
    }
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Escapes text for HTML element content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DateRange, ExportId};
    use proptest::prelude::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn notice(outcome: Outcome) -> Notice {
        let range = DateRange::from_request(
            Some("06/01/2024"),
            Some("06/18/2024"),
            None,
            at("2024-06-18T12:00:00Z"),
            366,
        )
        .unwrap();
        Notice {
            export_id: ExportId::new(),
            namespace: "acme".into(),
            repository: Some("<script>".into()),
            range,
            outcome,
            webhook_id: "msg_1".into(),
            download_url: Some("https://registry.example/api/v1/exportlogs/x/download".into()),
            sha256: Some("ab".repeat(32)),
        }
    }

    #[test]
    fn success_mail_has_link_validity_and_escaped_fields() {
        let url = url::Url::parse("https://s3.example.com/b/k?X-Amz-Signature=ab&x=1").unwrap();
        let n = notice(Outcome::Succeeded {
            url: url.clone(),
            expires_at: at("2024-06-18T19:59:00Z"),
            logs_exported: 1234,
            size_bytes: 2_500_000,
        });
        let mail = render("Quay <Prod>", &n, at("2024-06-18T18:59:00Z"));
        assert_eq!(mail.subject, "[Quay <Prod>] Export Action Logs Complete");
        for body in [&mail.plain, &mail.html] {
            assert!(body.contains(&n.export_id.to_string()));
            assert!(
                body.contains("valid until 2024-06-18 19:59 UTC (1 hour)"),
                "{body}"
            );
            assert!(body.contains("06/01/2024 to 06/18/2024"));
        }
        assert!(mail.plain.contains(url.as_str()));
        assert!(mail.html.contains("X-Amz-Signature=ab&amp;x=1"));
        assert!(mail.html.contains("acme/&lt;script&gt;"));
        assert!(!mail.html.contains("<script>"));
        assert!(!mail.html.contains("<Prod>"));
        assert!(mail.plain.contains("1234 log entries (2.4 MiB)"));
    }

    #[test]
    fn failure_outcomes_say_so() {
        let cases = [
            (
                Outcome::Failed {
                    reason: "Splunk unreachable".into(),
                },
                "failed",
                Some("Splunk unreachable"),
            ),
            (Outcome::TimedOut, "timed out", None),
            (
                Outcome::InvalidRequest {
                    reason: "no such namespace".into(),
                },
                "invalid request",
                Some("no such namespace"),
            ),
        ];
        for (outcome, phrase, reason) in cases {
            let mail = render("Quay", &notice(outcome), at("2024-06-18T18:59:00Z"));
            assert!(mail.plain.contains(phrase), "{}", mail.plain);
            assert!(mail.html.contains(phrase));
            if let Some(reason) = reason {
                assert!(mail.plain.contains(reason));
            }
            assert!(!mail.plain.contains("Download"));
        }
    }

    #[test]
    fn expired_links_are_not_called_valid() {
        let n = notice(Outcome::Succeeded {
            url: url::Url::parse("https://x.example/a").unwrap(),
            expires_at: at("2024-06-18T19:59:00Z"),
            logs_exported: 0,
            size_bytes: 10,
        });
        let mail = render("Quay", &n, at("2024-06-18T20:00:00Z"));
        assert!(mail.plain.contains("expired at 2024-06-18 19:59 UTC"));
        assert!(!mail.plain.contains("valid until"));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(3600), "1 hour");
        assert_eq!(human_duration(7500), "2 hours 5 minutes");
        assert_eq!(human_duration(2700), "45 minutes");
        assert_eq!(human_duration(3597), "1 hour");
        assert_eq!(human_duration(29), "less than a minute");
        assert_eq!(human_duration(90_000), "1 day 1 hour");
    }

    proptest! {
        #[test]
        fn escaped_text_has_no_markup(s in ".*") {
            let e = escape(&s);
            prop_assert!(!e.contains('<') && !e.contains('>') && !e.contains('"') && !e.contains('\''));
        }
    }
}
