//! Quay's avatar block: a hash of the e-mail (or name) and a colour picked from it.

use std::sync::Arc;

use sha2::{Digest, Sha256};

/// Quay's 32-colour avatar palette (`AVATAR_COLORS`), in Quay's order.
pub const AVATAR_COLORS: [&str; 32] = [
    "#969696", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896",
    "#9467bd", "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7",
    "#bcbd22", "#1f77b4", "#17becf", "#9edae5", "#393b79", "#5254a3", "#6b6ecf", "#9c9ede",
    "#9ecae1", "#31a354", "#b5cf6b", "#a1d99b", "#8c6d31", "#ad494a", "#e7ba52", "#a55194",
];

/// The avatar hash and colour for a performer, as Quay's `BaseAvatar.get_data` computes them:
/// lowercase hex SHA-256 of the trimmed, lowercased e-mail (the name when the e-mail is missing or
/// empty), and the colour indexed by the first two hex digits (`ceil(log16(32)) = 2`) modulo 32.
pub fn avatar(name: &str, email: Option<&str>) -> (Arc<str>, &'static str) {
    let source = email.filter(|e| !e.is_empty()).unwrap_or(name);
    // Exports repeat the same few performers millions of times: remember recent answers.
    // foldhash rather than SipHash: the keys are short and this runs once per exported event.
    type Recent =
        std::collections::HashMap<String, (Arc<str>, &'static str), foldhash::fast::RandomState>;
    thread_local! {
        static RECENT: std::cell::RefCell<Recent> = std::cell::RefCell::new(Recent::default());
    }
    if let Some(hit) = RECENT.with(|r| r.borrow().get(source).cloned()) {
        return hit;
    }
    let computed = compute(source);
    RECENT.with(|r| {
        let mut recent = r.borrow_mut();
        if recent.len() >= 4096 {
            recent.clear();
        }
        recent.insert(source.to_owned(), computed.clone());
    });
    computed
}

fn compute(source: &str) -> (Arc<str>, &'static str) {
    let digest = Sha256::digest(source.trim().to_lowercase().as_bytes());
    let hash = Arc::from(hex::encode(digest));
    // The first two hex digits are the first byte of the digest.
    let color = AVATAR_COLORS[usize::from(digest[0]) % AVATAR_COLORS.len()];
    (hash, color)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values computed independently with Python's hashlib over Quay's algorithm.
    #[test]
    fn matches_quays_algorithm_on_known_inputs() {
        let cases = [
            (
                "alice",
                Some("Alice@Example.com "),
                "ff8d9819fc0e12bf0d24892e45987e249a28dce836a85cad60e28eaaa8c6d976",
                "#a55194",
            ),
            (
                "devtable",
                None,
                "56260c6e45614dcecc3525c54a934f6862a53a914c537866d952a9164d6bf26c",
                "#6b6ecf",
            ),
            (
                "myorg+deploy",
                None,
                "d0539501946030e00b4961d6794919e279bfe877777f539d62eabde65317f3f8",
                "#bcbd22",
            ),
            (
                "bob",
                Some(""),
                "81b637d8fcd2c6da6359e6963113a1170de795e4b725b84d1e0b4cfd9ec58ce9",
                "#aec7e8",
            ),
            (
                "Élodie",
                None,
                "36bac2631d17463d569eaf1b869e7bf8d40e4636fd8b2b778ee93f504baf6691",
                "#6b6ecf",
            ),
        ];
        for (name, email, hash, color) in cases {
            assert_eq!(avatar(name, email), (Arc::from(hash), color), "{name}");
        }
    }
}
