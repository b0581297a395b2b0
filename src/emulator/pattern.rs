//! Splunk value patterns: case-insensitive text where `*` matches any run of characters.

/// A search value as written (after unquoting), with its wildcard structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    quoted: bool,
}

impl Pattern {
    /// A pattern from unescaped text; `quoted` records how it was written.
    pub fn new(text: impl Into<String>, quoted: bool) -> Self {
        Self {
            text: text.into(),
            quoted,
        }
    }

    /// The unescaped value (wildcards included).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the value was written in double quotes.
    pub fn quoted(&self) -> bool {
        self.quoted
    }

    /// Whether `*` occurs, making this a wildcard match rather than equality.
    pub fn has_wildcard(&self) -> bool {
        self.text.contains('*')
    }

    /// The exact value when there is no wildcard.
    pub fn literal(&self) -> Option<&str> {
        (!self.has_wildcard()).then_some(self.text.as_str())
    }

    /// Whole-value match, ASCII case-insensitive as Splunk compares field values.
    pub fn matches(&self, value: &str) -> bool {
        wildcard_match(self.text.as_bytes(), value.as_bytes(), true)
    }

    /// Match anywhere inside `haystack` (bare search terms against `_raw`).
    pub fn matches_within(&self, haystack: &str) -> bool {
        wildcard_match(self.text.as_bytes(), haystack.as_bytes(), false)
    }
}

fn eq_ci(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn find_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| eq_ci(w, needle))
}

/// Anchored (`whole`) or unanchored wildcard match.
fn wildcard_match(pattern: &[u8], text: &[u8], whole: bool) -> bool {
    let parts: Vec<&[u8]> = pattern.split(|b| *b == b'*').collect();
    if parts.len() == 1 {
        return if whole {
            eq_ci(pattern, text)
        } else {
            find_ci(text, pattern).is_some()
        };
    }
    let (first, rest) = (parts[0], &parts[1..]);
    let mut pos = if whole {
        if text.len() < first.len() || !eq_ci(&text[..first.len()], first) {
            return false;
        }
        first.len()
    } else {
        match find_ci(text, first) {
            Some(p) => p + first.len(),
            None => return false,
        }
    };
    let empty: &[u8] = b"";
    let (last, middle) = match rest.split_last() {
        Some((l, m)) => (*l, m),
        None => (empty, &[][..]),
    };
    for part in middle {
        match find_ci(&text[pos..], part) {
            Some(p) => pos += p + part.len(),
            None => return false,
        }
    }
    if !whole {
        return find_ci(&text[pos..], last).is_some();
    }
    text.len() - pos >= last.len() && eq_ci(&text[text.len() - last.len()..], last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_is_case_insensitive() {
        assert!(Pattern::new("MyOrg", true).matches("myorg"));
        assert!(!Pattern::new("myorg", true).matches("myorg2"));
    }

    #[test]
    fn wildcards() {
        let p = Pattern::new("ns1*", false);
        assert!(p.matches("ns1") && p.matches("ns10") && !p.matches("xns1"));
        assert!(Pattern::new("*", false).matches(""));
        assert!(Pattern::new("a*b*c", false).matches("aXXbYYc"));
        assert!(!Pattern::new("a*b*c", false).matches("aXXcYYb"));
        assert!(!Pattern::new("ab*ba", false).matches("aba"));
        assert!(Pattern::new("push", false).matches_within(r#"{"kind":"PUSH_repo"}"#));
    }
}
