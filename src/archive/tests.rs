//! Encoder tests: every format parses back, gzip round-trips, CSV quoting holds for any input.

use std::io::Read;
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::domain::{ExportId, LogEntry, Metadata, PerformerInfo};

fn details(repository: Option<&str>) -> ArchiveDetails {
    ArchiveDetails {
        export_id: ExportId::new(),
        start_time: "Tue, 18 Jun 2024 00:00:00 -0000".into(),
        end_time: "Wed, 19 Jun 2024 00:00:00 -0000".into(),
        namespace: "acme".into(),
        repository: repository.map(str::to_owned),
        performer: None,
        kinds: Vec::new(),
    }
}

fn log(i: u64) -> LogEntry<'static> {
    let mut metadata = serde_json::Map::new();
    metadata.insert("repo".into(), json!("web"));
    metadata.insert("tag".into(), json!(format!("v{i}")));
    metadata.insert("note".into(), json!("comma, \"quote\"\r\nnewline"));
    LogEntry {
        kind: "push_repo".into(),
        datetime: Utc.timestamp_opt(1_718_737_153 + i as i64, 0).unwrap(),
        namespace: Some("acme".into()),
        repository: Some("web".into()),
        ip: Some("192.0.2.7".into()),
        metadata: Metadata::from_map(&metadata),
        performer: (!i.is_multiple_of(3)).then(|| PerformerInfo {
            name: if i.is_multiple_of(2) {
                "acme+robot".into()
            } else {
                "alice".into()
            },
            is_robot: i.is_multiple_of(2),
            avatar_hash: "ab".repeat(32).into(),
            avatar_color: "#969696",
        }),
    }
}

/// Encodes `logs`, draining the writer at `take_every` bytes as the pipeline does.
fn encode(
    format: ExportFormat,
    compression: Compression,
    details: &ArchiveDetails,
    logs: &[LogEntry<'_>],
    take_every: usize,
) -> Vec<u8> {
    let mut writer = ArchiveWriter::new(format, compression, details);
    let mut out = Vec::new();
    for l in logs {
        writer.write_log(l).unwrap();
        if let Some(chunk) = writer.take_bytes(take_every) {
            assert!(chunk.len() >= take_every);
            out.extend_from_slice(&chunk);
        }
    }
    assert_eq!(writer.logs_written(), logs.len() as u64);
    out.extend_from_slice(&writer.finish().unwrap());
    out
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// A strict RFC 4180 parser: CRLF records, quoted fields with doubled quotes.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted_field = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if field.is_empty() && !quoted_field => {
                quoted_field = true;
                loop {
                    match chars.next().expect("unterminated quoted field") {
                        '"' if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        '"' => break,
                        other => field.push(other),
                    }
                }
            }
            ',' => {
                record.push(std::mem::take(&mut field));
                quoted_field = false;
            }
            '\r' => {
                assert_eq!(chars.next(), Some('\n'), "bare CR outside quotes");
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
                quoted_field = false;
            }
            '\n' => panic!("bare LF outside quotes"),
            '"' => panic!("quote inside an unquoted field"),
            other => {
                assert!(!quoted_field, "text after a closing quote");
                field.push(other);
            }
        }
    }
    assert!(
        field.is_empty() && record.is_empty(),
        "last record lacks CRLF"
    );
    records
}

#[test]
fn json_archive_parses_back_with_quay_layout() {
    let d = details(Some("web"));
    let logs: Vec<_> = (0..50).map(log).collect();
    let bytes = encode(ExportFormat::Json, Compression::None, &d, &logs, 512);
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc["export_id"], json!(d.export_id.to_string()));
    assert_eq!(
        doc["details"],
        json!({"start_time": d.start_time, "end_time": d.end_time,
               "namespace": "acme", "repository": "web"})
    );
    let out = doc["logs"].as_array().unwrap();
    assert_eq!(out.len(), 51);
    assert_eq!(out[50], json!({"terminator": true}));
    for (parsed, original) in out.iter().zip(&logs) {
        assert_eq!(parsed, &serde_json::to_value(original).unwrap());
    }
    assert_eq!(out[1]["datetime"], json!("Tue, 18 Jun 2024 18:59:14 -0000"));
    assert!(bytes.ends_with(b"{\"terminator\": true}]}"));
}

#[test]
fn empty_json_archive_holds_only_the_terminator() {
    let d = details(None);
    let bytes = encode(ExportFormat::Json, Compression::None, &d, &[], 1);
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc["logs"], json!([{"terminator": true}]));
    assert_eq!(doc["details"]["repository"], Value::Null);
}

#[test]
fn ndjson_has_one_log_object_per_line() {
    let logs: Vec<_> = (0..20).map(log).collect();
    let bytes = encode(
        ExportFormat::Ndjson,
        Compression::None,
        &details(None),
        &logs,
        100,
    );
    let text = String::from_utf8(bytes).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 20);
    for (line, original) in lines.iter().zip(&logs) {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v, serde_json::to_value(original).unwrap());
    }
    assert!(
        encode(
            ExportFormat::Ndjson,
            Compression::None,
            &details(None),
            &[],
            1
        )
        .is_empty()
    );
}

#[test]
fn csv_rows_follow_rfc4180_and_carry_every_column() {
    let logs: Vec<_> = (0..7).map(log).collect();
    let bytes = encode(
        ExportFormat::Csv,
        Compression::None,
        &details(None),
        &logs,
        64,
    );
    let records = parse_csv(std::str::from_utf8(&bytes).unwrap());
    assert_eq!(
        records[0],
        [
            "datetime",
            "kind",
            "namespace",
            "repository",
            "performer",
            "performer_is_robot",
            "ip",
            "metadata"
        ]
    );
    assert_eq!(records.len(), 8);
    // log(0) has no performer; log(1) is alice; log(2) is a robot.
    assert_eq!(
        records[1][..7],
        [
            "2024-06-18T18:59:13Z",
            "push_repo",
            "acme",
            "web",
            "",
            "",
            "192.0.2.7"
        ]
    );
    assert_eq!(records[2][4..6], ["alice", "false"]);
    assert_eq!(records[3][4..6], ["acme+robot", "true"]);
    let metadata: Value = serde_json::from_str(&records[2][7]).unwrap();
    assert_eq!(Value::Object(logs[1].metadata.to_map()), metadata);
}

#[test]
fn csv_datetime_keeps_subsecond_precision_in_utc() {
    let mut l = log(0);
    l.datetime = DateTime::parse_from_rfc3339("2024-06-18T20:59:13.250+02:00")
        .unwrap()
        .with_timezone(&Utc);
    let bytes = encode(
        ExportFormat::Csv,
        Compression::None,
        &details(None),
        &[l],
        1,
    );
    let records = parse_csv(std::str::from_utf8(&bytes).unwrap());
    assert_eq!(records[1][0], "2024-06-18T18:59:13.250Z");
}

#[test]
fn csv_quotes_only_when_needed() {
    let mut l = log(0);
    l.kind = "plain".into();
    l.ip = Some("a,b".into());
    l.namespace = Some("say \"hi\"".into());
    l.repository = Some("line\nbreak".into());
    l.metadata = Metadata::default();
    let bytes = encode(
        ExportFormat::Csv,
        Compression::None,
        &details(None),
        &[l],
        1,
    );
    let text = std::str::from_utf8(&bytes).unwrap();
    let row = text.split_once("\r\n").unwrap().1;
    assert_eq!(
        row,
        "2024-06-18T18:59:13Z,plain,\"say \"\"hi\"\"\",\"line\nbreak\",,,\"a,b\",{}\r\n"
    );
}

#[test]
fn gzip_wraps_every_format_and_round_trips() {
    let logs: Vec<_> = (0..3000).map(log).collect();
    let d = details(Some("web"));
    for format in [ExportFormat::Json, ExportFormat::Ndjson, ExportFormat::Csv] {
        let plain = encode(format, Compression::None, &d, &logs, 10_000);
        let gz = encode(format, Compression::Gzip, &d, &logs, 4_096);
        assert_eq!(&gz[..2], &[0x1f, 0x8b], "{format}: gzip magic");
        assert!(gz.len() < plain.len() / 3, "{format}: compresses");
        assert_eq!(gunzip(&gz), plain, "{format}");
    }
    let empty = encode(ExportFormat::Json, Compression::Gzip, &d, &[], 1);
    let doc: Value = serde_json::from_slice(&gunzip(&empty)).unwrap();
    assert_eq!(doc["logs"], json!([{"terminator": true}]));
}

#[test]
fn take_bytes_waits_for_enough_and_take_all_drains() {
    let mut w = ArchiveWriter::new(ExportFormat::Ndjson, Compression::None, &details(None));
    assert_eq!(w.buffered_len(), 0);
    assert!(w.take_bytes(0).is_none(), "nothing to take");
    w.write_log(&log(1)).unwrap();
    let len = w.buffered_len();
    assert!(w.take_bytes(len + 1).is_none());
    assert_eq!(w.take_bytes(len).map(|b| b.len()), Some(len));
    assert_eq!(w.buffered_len(), 0);
    w.write_log(&log(2)).unwrap();
    assert!(!w.take_all().is_empty());
    assert_eq!(w.take_all(), Bytes::new());
    assert!(w.finish().unwrap().is_empty());
}

#[test]
fn extensions_and_content_types() {
    assert_eq!(
        file_extension(ExportFormat::Json, Compression::None),
        "json"
    );
    assert_eq!(
        file_extension(ExportFormat::Csv, Compression::Gzip),
        "csv.gz"
    );
    assert_eq!(
        file_extension(ExportFormat::Ndjson, Compression::Gzip),
        "ndjson.gz"
    );
    assert_eq!(
        content_type(ExportFormat::Json, Compression::Gzip),
        "application/gzip"
    );
    assert_eq!(
        content_type(ExportFormat::Csv, Compression::None),
        "text/csv; charset=utf-8"
    );
    assert_eq!(
        content_type_for_file_name("x.ndjson"),
        "application/x-ndjson"
    );
    assert_eq!(content_type_for_file_name("x.json.gz"), "application/gzip");
}

proptest! {
    #[test]
    fn arbitrary_strings_round_trip_through_csv_and_json(
        kind in any::<String>(),
        namespace in proptest::option::of(any::<String>()),
        repository in proptest::option::of(any::<String>()),
        ip in proptest::option::of(any::<String>()),
        name in any::<String>(),
        key in any::<String>(),
        value in any::<String>(),
        detail in any::<String>(),
    ) {
        let mut l = log(1);
        l.kind = kind.clone().into();
        l.namespace = namespace.clone().map(Into::into);
        l.repository = repository.clone().map(Into::into);
        l.ip = ip.clone().map(Into::into);
        l.performer.as_mut().unwrap().name = name.clone().into();
        let mut members = serde_json::Map::new();
        members.insert(key, Value::String(value));
        l.metadata = Metadata::from_map(&members);
        let mut d = details(None);
        d.namespace = detail;

        let csv = encode(ExportFormat::Csv, Compression::None, &d, std::slice::from_ref(&l), 1);
        let records = parse_csv(std::str::from_utf8(&csv).unwrap());
        prop_assert_eq!(records.len(), 2);
        let row = &records[1];
        prop_assert_eq!(&row[1], &kind);
        prop_assert_eq!(&row[2], &namespace.unwrap_or_default());
        prop_assert_eq!(&row[3], &repository.unwrap_or_default());
        prop_assert_eq!(&row[4], &name);
        prop_assert_eq!(&row[6], &ip.unwrap_or_default());
        let metadata: Value = serde_json::from_str(&row[7]).unwrap();
        prop_assert_eq!(metadata, Value::Object(l.metadata.to_map()));

        let json = encode(ExportFormat::Json, Compression::None, &d, std::slice::from_ref(&l), 1);
        let doc: Value = serde_json::from_slice(&json).unwrap();
        prop_assert_eq!(&doc["details"]["namespace"], &Value::String(d.namespace.clone()));
        prop_assert_eq!(&doc["logs"][0], &serde_json::to_value(&l).unwrap());
    }
}

/// Throughput check: `cargo test --release --lib archive::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore = "measurement; run in release mode"]
fn throughput() {
    let logs: Vec<_> = (0..10_000).map(log).collect();
    let d = details(Some("web"));
    let rounds = 20;
    for format in [ExportFormat::Json, ExportFormat::Ndjson, ExportFormat::Csv] {
        for compression in [Compression::None, Compression::Gzip] {
            let started = Instant::now();
            let mut bytes = 0usize;
            let mut w = ArchiveWriter::new(format, compression, &d);
            for _ in 0..rounds {
                for l in &logs {
                    w.write_log(l).unwrap();
                    if let Some(b) = w.take_bytes(8 << 20) {
                        bytes += b.len();
                    }
                }
            }
            bytes += w.finish().unwrap().len();
            let secs = started.elapsed().as_secs_f64();
            let n = (rounds * logs.len()) as f64;
            println!(
                "{format}/{compression}: {:.0} logs/s, {:.1} MB/s out",
                n / secs,
                bytes as f64 / secs / 1e6
            );
        }
    }
}
