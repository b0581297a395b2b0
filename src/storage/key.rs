//! Object keys and the metadata an archive is stored with.

use crate::domain::ExportId;

/// How the stored object presents itself to whoever downloads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// `Content-Type`, e.g. from [`crate::archive::content_type`].
    pub content_type: String,
    /// File name offered in `Content-Disposition: attachment`.
    pub filename: String,
}

impl ObjectMeta {
    /// The `Content-Disposition` value; the file name is reduced to safe characters so it cannot
    /// break out of the quoted string.
    pub fn content_disposition(&self) -> String {
        content_disposition(&self.filename)
    }
}

/// `attachment; filename="<name>"` with anything but `[A-Za-z0-9._-]` replaced by `_`.
pub fn content_disposition(filename: &str) -> String {
    let safe: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("attachment; filename=\"{safe}\"")
}

/// `<prefix><export_id>-<128 random bits, hex>.<ext>`: the random part makes the key unguessable
/// from the export id, which callers and logs may know.
pub fn object_key(prefix: &str, export_id: ExportId, ext: &str) -> String {
    let random: [u8; 16] = rand::random();
    format!("{prefix}{export_id}-{}.{ext}", hex::encode(random))
}

/// The key of an archive's manifest: beside the archive, `<key>.manifest.json`.
pub fn manifest_key(archive_key: &str) -> String {
    format!("{archive_key}.manifest.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_prefix_id_and_extension_but_are_not_derivable() {
        let id = ExportId::new();
        let a = object_key("exportedactionlogs/", id, "json.gz");
        let b = object_key("exportedactionlogs/", id, "json.gz");
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("exportedactionlogs/{id}-")));
        assert!(a.ends_with(".json.gz"));
        let random = &a[format!("exportedactionlogs/{id}-").len()..a.len() - ".json.gz".len()];
        assert_eq!(random.len(), 32);
        assert!(random.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn disposition_cannot_be_broken_out_of() {
        assert_eq!(
            content_disposition("a\"b;\r\nc.json"),
            "attachment; filename=\"a_b___c.json\""
        );
    }
}
