//! Splunk's response shapes: message bodies, Atom entries, results documents and export lines.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::engine::{Item, Row, apply_row_op};
use super::plan::{Ctx, EventRef};
use super::spl::Command;
use super::synthetic::Parts;

/// Response format requested with `output_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Xml,
    Json,
}

impl Mode {
    /// `output_mode=json` selects JSON; anything else gets Splunk's default, XML.
    pub fn from_param(v: Option<&str>) -> Self {
        match v {
            Some(m) if m.eq_ignore_ascii_case("json") || m.eq_ignore_ascii_case("json_rows") => {
                Mode::Json
            }
            _ => Mode::Xml,
        }
    }
}

/// Escapes text for XML element content and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => {}
            c => out.push(c),
        }
    }
    out
}

/// A body with its content type.
pub fn body(status: StatusCode, mode: Mode, text: String) -> Response {
    let ct = match mode {
        Mode::Xml => "text/xml; charset=utf-8",
        Mode::Json => "application/json; charset=utf-8",
    };
    let mut r = (status, text).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

/// Splunk's error body: `<response><messages><msg type=..>` or `{"messages":[..]}`.
pub fn message(status: StatusCode, mode: Mode, kind: &str, text: &str) -> Response {
    let payload = match mode {
        Mode::Xml => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<response>\n  <messages>\n    <msg type=\"{kind}\">{}</msg>\n  </messages>\n</response>\n",
            xml_escape(text)
        ),
        Mode::Json => serde_json::json!({"messages": [{"type": kind, "text": text}]}).to_string(),
    };
    body(status, mode, payload)
}

/// A `<s:dict>` from key/value pairs whose values are already XML.
pub fn s_dict(pairs: &[(&str, String)]) -> String {
    let mut out = String::from("<s:dict>");
    for (k, v) in pairs {
        out.push_str(&format!("<s:key name=\"{}\">{v}</s:key>", xml_escape(k)));
    }
    out.push_str("</s:dict>");
    out
}

/// The ACL block every entity carries.
pub fn acl_xml(owner: &str) -> String {
    let perms = s_dict(&[
        (
            "read",
            format!("<s:list><s:item>{}</s:item></s:list>", xml_escape(owner)),
        ),
        (
            "write",
            format!("<s:list><s:item>{}</s:item></s:list>", xml_escape(owner)),
        ),
    ]);
    s_dict(&[
        ("app", "search".into()),
        ("can_write", "1".into()),
        ("modifiable", "1".into()),
        ("owner", xml_escape(owner)),
        ("perms", perms),
        ("sharing", "global".into()),
        ("ttl", "600".into()),
    ])
}

/// The ACL as JSON.
pub fn acl_json(owner: &str) -> serde_json::Value {
    serde_json::json!({"app": "search", "can_write": true, "modifiable": true, "owner": owner,
        "perms": {"read": [owner], "write": [owner]}, "sharing": "global", "ttl": "600"})
}

const ATOM_NS: &str = "xmlns=\"http://www.w3.org/2005/Atom\" xmlns:s=\"http://dev.splunk.com/ns/rest\" xmlns:opensearch=\"http://a9.com/-/spec/opensearch/1.1/\"";

/// One Atom `<entry>` (without the XML declaration).
pub fn atom_entry(
    title: &str,
    href: &str,
    updated: &str,
    owner: &str,
    content: &str,
    with_ns: bool,
) -> String {
    let ns = if with_ns {
        format!(" {ATOM_NS}")
    } else {
        String::new()
    };
    format!(
        "<entry{ns}>\n  <title>{t}</title>\n  <id>{h}</id>\n  <updated>{updated}</updated>\n  <link href=\"{h}\" rel=\"alternate\"/>\n  <author>\n    <name>{o}</name>\n  </author>\n  <content type=\"text/xml\">\n    {content}\n  </content>\n</entry>",
        t = xml_escape(title),
        h = xml_escape(href),
        o = xml_escape(owner),
    )
}

/// An Atom `<feed>` around entries.
pub fn atom_feed(title: &str, updated: &str, entries: &[String]) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feed {ATOM_NS}>\n  <title>{}</title>\n  <id>/services</id>\n  <updated>{updated}</updated>\n  <generator build=\"emulator\" version=\"{ver}\"/>\n  <author>\n    <name>Splunk</name>\n  </author>\n  <opensearch:totalResults>{n}</opensearch:totalResults>\n  <opensearch:itemsPerPage>30</opensearch:itemsPerPage>\n  <opensearch:startIndex>0</opensearch:startIndex>\n  <s:messages/>\n{}\n</feed>\n",
        xml_escape(title),
        entries.join("\n"),
        n = entries.len(),
        ver = super::SPLUNK_VERSION,
    )
}

/// A JSON collection document as Splunk's `output_mode=json` returns entities.
pub fn json_feed(updated: &str, entries: Vec<serde_json::Value>) -> String {
    serde_json::json!({
        "links": {}, "origin": "/services", "updated": updated,
        "generator": {"build": "emulator", "version": super::SPLUNK_VERSION},
        "paging": {"total": entries.len(), "perPage": 30, "offset": 0},
        "entry": entries, "messages": [],
    })
    .to_string()
}

/// Writes one result as a JSON object into `buf`.
pub fn write_item_json(buf: &mut Vec<u8>, item: &Item<'_>, row_ops: &[Command], ctx: &Ctx) {
    match item {
        Item::Row(r) => write_row_json(buf, r),
        Item::Event(e) => write_event_json(buf, e, row_ops, ctx),
    }
}

/// Writes an event's result object, on the fast path when no per-row command applies.
pub fn write_event_json(buf: &mut Vec<u8>, e: &EventRef, row_ops: &[Command], ctx: &Ctx) {
    if row_ops.is_empty() {
        match (e, &ctx.synthetic) {
            (EventRef::Stored(s), _) => return buf.extend_from_slice(s.result_json.as_bytes()),
            (EventRef::Synth(i), Some(spec)) => {
                return Parts::of(spec, *i).write_result(
                    buf,
                    &ctx.index_json,
                    &ctx.sourcetype_json,
                );
            }
            _ => {}
        }
    }
    let mut row = e.to_row(ctx);
    row_ops.iter().for_each(|op| apply_row_op(op, &mut row));
    write_row_json(buf, &row);
}

/// Writes a row as a JSON object of strings.
pub fn write_row_json(buf: &mut Vec<u8>, row: &Row) {
    buf.push(b'{');
    for (n, (k, v)) in row.fields.iter().enumerate() {
        if n > 0 {
            buf.push(b',');
        }
        // Writing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *buf, k);
        buf.push(b':');
        let _ = serde_json::to_writer(&mut *buf, v);
    }
    buf.push(b'}');
}

/// Field names of a page in first-seen order.
pub fn field_names(rows: &[Row]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for r in rows {
        for (k, _) in &r.fields {
            if !names.iter().any(|n| n == k) {
                names.push(k.clone());
            }
        }
    }
    names
}

/// Rows of a page with per-row commands applied (for field lists and XML).
pub fn page_rows(items: &[Item<'_>], row_ops: &[Command], ctx: &Ctx) -> Vec<Row> {
    items
        .iter()
        .map(|it| match it {
            Item::Row(r) => (*r).clone(),
            Item::Event(e) => {
                let mut row = e.to_row(ctx);
                row_ops.iter().for_each(|op| apply_row_op(op, &mut row));
                row
            }
        })
        .collect()
}

/// A results page: the JSON document or Splunk's XML `<results>`.
pub fn results_page(
    mode: Mode,
    offset: u64,
    items: &[Item<'_>],
    row_ops: &[Command],
    ctx: &Ctx,
) -> Response {
    let rows = page_rows(items, row_ops, ctx);
    let names = field_names(&rows);
    match mode {
        Mode::Json => {
            let mut buf = Vec::with_capacity(256 + items.len() * 512);
            buf.extend_from_slice(b"{\"preview\":false,\"init_offset\":");
            buf.extend_from_slice(offset.to_string().as_bytes());
            buf.extend_from_slice(b",\"messages\":[],\"fields\":");
            let fields: Vec<serde_json::Value> = names
                .iter()
                .map(|n| serde_json::json!({"name": n}))
                .collect();
            let _ = serde_json::to_writer(&mut buf, &fields);
            buf.extend_from_slice(b",\"results\":[");
            for (n, it) in items.iter().enumerate() {
                if n > 0 {
                    buf.push(b',');
                }
                write_item_json(&mut buf, it, row_ops, ctx);
            }
            buf.extend_from_slice(b"]}");
            body(
                StatusCode::OK,
                Mode::Json,
                String::from_utf8(buf).unwrap_or_default(),
            )
        }
        Mode::Xml => {
            let mut out = String::from(
                "<?xml version='1.0' encoding='UTF-8'?>\n<results preview='0'>\n<meta>\n<fieldOrder>\n",
            );
            for n in &names {
                out.push_str(&format!("<field>{}</field>\n", xml_escape(n)));
            }
            out.push_str("</fieldOrder>\n</meta>\n");
            for (n, r) in rows.iter().enumerate() {
                out.push_str(&format!("<result offset='{}'>\n", offset + n as u64));
                for (k, v) in &r.fields {
                    if k == "_raw" {
                        out.push_str(&format!(
                            "<field k='_raw'><v xml:space='preserve' trunc='0'>{}</v></field>\n",
                            xml_escape(v)
                        ));
                    } else {
                        out.push_str(&format!(
                            "<field k='{}'><value><text>{}</text></value></field>\n",
                            xml_escape(k),
                            xml_escape(v)
                        ));
                    }
                }
                out.push_str("</result>\n");
            }
            out.push_str("</results>\n");
            body(StatusCode::OK, Mode::Xml, out)
        }
    }
}
