//! `logexport verify`: checks an archive against its manifest offline — size, SHA-256, the
//! manifest's signature, and the number of logs the archive really holds.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use serde::de::IgnoredAny;

use super::digest::ResumableSha256;
use super::manifest::{Manifest, PublicKey};

/// One kind of mismatch, as one line for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding(pub String);

/// Checks `archive` against `manifest` with `trusted` keys; returns every mismatch found (none:
/// the archive is complete, unaltered and signed by a trusted key).
pub fn verify(archive: &Path, manifest: &Manifest, trusted: &[PublicKey]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut fail = |s: String| findings.push(Finding(s));

    match digest_of(archive) {
        Ok((bytes, sha256)) => {
            if bytes != manifest.bytes {
                fail(format!(
                    "size: the archive has {bytes} bytes, the manifest says {}",
                    manifest.bytes
                ));
            }
            if sha256 != manifest.sha256 {
                fail(format!(
                    "digest: the archive's SHA-256 is {sha256}, the manifest says {}",
                    manifest.sha256
                ));
            }
        }
        Err(e) => fail(format!("archive: cannot be read: {e}")),
    }
    if trusted.is_empty() {
        fail("signature: not checked: give --public-key or --keys-url".into());
    } else if let Err(e) = manifest.verify(trusted) {
        fail(format!("signature: {e}"));
    }
    match count_logs(archive, &manifest.format, &manifest.compression) {
        Ok(logs) if logs != manifest.logs => fail(format!(
            "rows: the archive holds {logs} logs, the manifest says {}",
            manifest.logs
        )),
        Ok(_) => {}
        Err(e) => fail(format!(
            "rows: the archive cannot be read as {}{}: {e}",
            manifest.format,
            if manifest.compression == "none" {
                String::new()
            } else {
                format!("+{}", manifest.compression)
            }
        )),
    }
    findings
}

/// Size and SHA-256 of a file, read in blocks.
pub(crate) fn digest_of(path: &Path) -> io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    let mut hash = ResumableSha256::default();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok((hash.length(), hash.finish_hex()))
}

/// The archive's bytes, decompressed (a gzip file may hold several members).
fn open_decompressed(path: &Path, compression: &str) -> io::Result<Box<dyn Read>> {
    let file = BufReader::new(File::open(path)?);
    match compression {
        "none" => Ok(Box::new(file)),
        "gzip" => Ok(Box::new(flate2::bufread::MultiGzDecoder::new(file))),
        // Several frames (one per checkpoint) read as one stream.
        "zstd" => Ok(Box::new(zstd::stream::read::Decoder::with_buffer(file)?)),
        other => Err(io::Error::other(format!("unknown compression {other:?}"))),
    }
}

/// Logs in the archive: JSON array members but the terminator, NDJSON lines, CSV records but
/// the header.
pub(crate) fn count_logs(path: &Path, format: &str, compression: &str) -> io::Result<u64> {
    let reader = open_decompressed(path, compression)?;
    match format {
        "json" => {
            #[derive(serde::Deserialize)]
            struct Doc {
                logs: Vec<IgnoredAny>,
            }
            let doc: Doc = serde_json::from_reader(reader).map_err(io::Error::other)?;
            // The last member is Quay's `{"terminator": true}`.
            Ok(doc.logs.len().saturating_sub(1) as u64)
        }
        "ndjson" => {
            let mut n = 0;
            for line in BufReader::new(reader).lines() {
                let line = line?;
                if !line.trim().is_empty() {
                    serde_json::from_str::<IgnoredAny>(&line).map_err(io::Error::other)?;
                    n += 1;
                }
            }
            Ok(n)
        }
        "csv" => count_csv_records(reader).map(|n| n.saturating_sub(1)),
        other => Err(io::Error::other(format!("unknown format {other:?}"))),
    }
}

/// RFC 4180 records: line breaks inside quoted fields do not end a record.
fn count_csv_records(reader: Box<dyn Read>) -> io::Result<u64> {
    let (mut records, mut quoted, mut in_record) = (0u64, false, false);
    for byte in BufReader::new(reader).bytes() {
        match (byte?, quoted) {
            (b'"', _) => {
                quoted = !quoted;
                in_record = true;
            }
            (b'\n', false) => {
                if in_record {
                    records += 1;
                }
                in_record = false;
            }
            (b'\r', false) => {}
            _ => in_record = true,
        }
    }
    if quoted {
        return Err(io::Error::other("a quoted field is not closed (truncated)"));
    }
    Ok(records + u64::from(in_record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_records_span_quoted_line_breaks() {
        let text = "a,b\r\n\"x\r\ny\",1\r\nz,\"q\"\"r\"\r\n";
        assert_eq!(count_csv_records(Box::new(text.as_bytes())).unwrap(), 3);
        assert!(count_csv_records(Box::new("a,\"b".as_bytes())).is_err());
    }
}
