//! What narrows a listing or an export: one performer and any of several kinds.

use super::names::Performer;

/// Most kinds one request may name.
const MAX_KINDS: usize = 64;

/// A validated filter: the performer's name is a [`Performer`], kinds are log-kind names
/// (lowercase letters, digits, `_`), sorted and deduplicated so equal filters compare equal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    pub performer: Option<Performer>,
    pub kinds: Vec<String>,
}

/// Why a filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LogFilterError(String);

impl LogFilter {
    /// Parses a performer (empty: none) and kind values, each of which may hold several
    /// comma-separated kinds.
    pub fn parse<'a>(
        performer: Option<&str>,
        kinds: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, LogFilterError> {
        let performer = match performer.map(str::trim).filter(|p| !p.is_empty()) {
            Some(p) => Some(Performer::parse(p).map_err(|e| LogFilterError(e.to_string()))?),
            None => None,
        };
        let mut out = Vec::new();
        for value in kinds {
            for kind in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let valid = kind.len() <= 64
                    && kind
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !valid {
                    return Err(LogFilterError(format!(
                        "invalid kind {:?}: log kinds are lowercase letters, digits and '_'",
                        kind.chars().take(64).collect::<String>()
                    )));
                }
                out.push(kind.to_owned());
            }
        }
        out.sort();
        out.dedup();
        if out.len() > MAX_KINDS {
            return Err(LogFilterError(format!("at most {MAX_KINDS} kinds at once")));
        }
        Ok(Self {
            performer,
            kinds: out,
        })
    }

    /// Whether a log of `kind` passes the kind filter.
    pub fn admits_kind(&self, kind: &str) -> bool {
        self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_split_sorted_and_deduplicated() {
        let f =
            LogFilter::parse(Some(" alice "), ["push_repo,pull_repo", "push_repo", ""]).unwrap();
        assert_eq!(f.performer.unwrap().as_str(), "alice");
        assert_eq!(f.kinds, ["pull_repo", "push_repo"]);
        assert!(LogFilter::parse(None, []).unwrap() == LogFilter::default());
    }

    #[test]
    fn hostile_values_are_refused() {
        for kind in ["Push", "push repo", "a\"b", "x*", &"k".repeat(65)] {
            assert!(LogFilter::parse(None, [kind]).is_err(), "{kind}");
        }
        assert!(LogFilter::parse(Some("bad name!"), []).is_err());
        let many: Vec<String> = (0..65).map(|i| format!("k{i}")).collect();
        assert!(LogFilter::parse(None, many.iter().map(String::as_str)).is_err());
    }

    #[test]
    fn an_empty_kind_filter_admits_every_kind() {
        assert!(LogFilter::default().admits_kind("anything"));
        let f = LogFilter::parse(None, ["push_repo"]).unwrap();
        assert!(f.admits_kind("push_repo") && !f.admits_kind("pull_repo"));
    }
}
