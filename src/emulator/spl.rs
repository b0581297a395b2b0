//! The SPL subset the emulator understands, parsed into a [`Pipeline`].
//!
//! Everything outside the subset is rejected with Splunk's wording, so a client that builds an
//! unsupported query fails here as it would against a real search head.

use super::pattern::Pattern;
use super::timefmt::StrftimeFormat;

pub use super::pattern::Pattern as ValuePattern;

/// Rows `sort` keeps when no count is written, as in Splunk.
pub const SORT_DEFAULT_LIMIT: u64 = 10_000;
/// Rows `head` keeps when no count is written, as in Splunk.
pub const HEAD_DEFAULT_LIMIT: u64 = 10;

/// A rejected search string; the text is what Splunk would say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SplError(pub String);

/// Comparison in a `field=value` term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `field=value`
    Eq,
    /// `field!=value` (the field exists and differs)
    Ne,
}

/// One term of the initial `search` command; terms are ANDed.
#[derive(Debug, Clone, PartialEq)]
pub enum SearchTerm {
    /// `field=value` / `field!=value` (including `index=` and `sourcetype=`).
    Field {
        field: String,
        op: CmpOp,
        value: Pattern,
    },
    /// A bare word or quoted phrase matched inside `_raw`.
    Text(Pattern),
    /// `earliest=<epoch seconds>` (inclusive).
    Earliest(f64),
    /// `latest=<epoch seconds>` (exclusive).
    Latest(f64),
}

/// One `sort` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub field: String,
    pub descending: bool,
}

/// A command after a pipe.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `sort [N] [-|+]field, ...`; `limit` is `None` when no count was written (Splunk then keeps
    /// [`SORT_DEFAULT_LIMIT`] rows) and `Some(0)` for "all rows".
    Sort {
        limit: Option<u64>,
        keys: Vec<SortKey>,
    },
    /// `head [N]`
    Head(u64),
    /// `reverse`
    Reverse,
    /// `fields [+|-] a, b` (`remove` for `-`); names may hold `*` wildcards.
    Fields { remove: bool, fields: Vec<String> },
    /// `eval target=strftime(source, "format")`
    Strftime {
        target: String,
        source: String,
        format: StrftimeFormat,
    },
    /// `stats count [by a, b]`
    StatsCount { by: Vec<String> },
}

/// A parsed search: the filter terms, then the piped commands in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pipeline {
    pub terms: Vec<SearchTerm>,
    pub commands: Vec<Command>,
}

impl Pipeline {
    /// The `field=value` / `field!=value` terms, in order.
    pub fn field_terms(&self) -> impl Iterator<Item = (&str, CmpOp, &Pattern)> {
        self.terms.iter().filter_map(|t| match t {
            SearchTerm::Field { field, op, value } => Some((field.as_str(), *op, value)),
            _ => None,
        })
    }
}

fn search_error(detail: &str) -> SplError {
    SplError(format!(
        "Error in 'search' command: Unable to parse the search: {detail}"
    ))
}

fn command_error(cmd: &str, detail: &str) -> SplError {
    SplError(format!("Error in '{cmd}' command: {detail}"))
}

/// Parses a search string as Splunk's search API receives it.
///
/// A string that starts with neither `search` nor `|` is taken as `search <string>`.
pub fn parse(spl: &str) -> Result<Pipeline, SplError> {
    let segments = split_pipes(spl.trim())?;
    let mut iter = segments.into_iter();
    let first = iter.next().unwrap_or_default();
    let terms_text = if first.trim().is_empty() {
        // A leading pipe: the first command must generate events, and only `search` is known.
        let next = iter.next().unwrap_or_default();
        let (name, rest) = split_command(&next);
        if !name.eq_ignore_ascii_case("search") {
            return Err(unknown_or_misplaced(&name));
        }
        rest
    } else {
        let (name, rest) = split_command(&first);
        if name.eq_ignore_ascii_case("search") {
            rest
        } else {
            first
        }
    };
    let terms = parse_terms(&terms_text)?;
    let commands = iter.map(|s| parse_command(&s)).collect::<Result<_, _>>()?;
    Ok(Pipeline { terms, commands })
}

fn unknown_or_misplaced(name: &str) -> SplError {
    match name {
        "sort" | "head" | "reverse" | "fields" | "eval" | "stats" => command_error(
            name,
            "This command must be preceded by a search that generates events.",
        ),
        "" => search_error("Missing a search command before '|'."),
        other => SplError(format!("Unknown search command '{other}'.")),
    }
}

/// Splits at `|` outside quotes; rejects subsearches and unbalanced quotes.
fn split_pipes(s: &str) -> Result<Vec<String>, SplError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    let mut in_quote = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_quote => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                in_quote = !in_quote;
                cur.push(c);
            }
            '|' if !in_quote => out.push(std::mem::take(&mut cur)),
            '[' | ']' if !in_quote => {
                return Err(search_error(
                    "Subsearches are not supported by this server.",
                ));
            }
            _ => cur.push(c),
        }
    }
    if in_quote {
        return Err(search_error("Unbalanced quotes."));
    }
    out.push(cur);
    Ok(out)
}

fn split_command(segment: &str) -> (String, String) {
    let t = segment.trim_start();
    let end = t.find(char::is_whitespace).unwrap_or(t.len());
    (t[..end].to_string(), t[end..].to_string())
}

/// Reads a quoted string starting after the opening quote; returns the unescaped text.
fn read_quoted(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<String, SplError> {
    let mut out = String::new();
    loop {
        match chars.next() {
            None => return Err(search_error("Unbalanced quotes.")),
            Some('"') => return Ok(out),
            Some('\\') => match chars.next() {
                Some(c @ ('"' | '\\')) => out.push(c),
                Some(c) => {
                    out.push('\\');
                    out.push(c);
                }
                None => return Err(search_error("Unbalanced quotes.")),
            },
            Some(c) => out.push(c),
        }
    }
}

fn parse_terms(text: &str) -> Result<Vec<SearchTerm>, SplError> {
    let mut terms = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&c) = chars.peek() else { break };
        match c {
            '(' | ')' => {
                return Err(search_error(
                    "Parenthesised expressions are not supported by this server.",
                ));
            }
            '"' => {
                chars.next();
                terms.push(SearchTerm::Text(Pattern::new(
                    read_quoted(&mut chars)?,
                    true,
                )));
                continue;
            }
            '=' => {
                return Err(search_error(
                    "Comparator '=' has an invalid term on the left hand side.",
                ));
            }
            _ => {}
        }
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() || matches!(c, '=' | '<' | '>' | '"' | '(' | ')') {
                break;
            }
            if c == '!' {
                let mut look = chars.clone();
                look.next();
                if look.peek() == Some(&'=') {
                    break;
                }
            }
            word.push(c);
            chars.next();
        }
        let op = match chars.peek() {
            Some('=') => {
                chars.next();
                Some(CmpOp::Eq)
            }
            Some('!') => {
                chars.next();
                chars.next();
                Some(CmpOp::Ne)
            }
            Some('<' | '>') => {
                return Err(search_error(
                    "Comparators '<' and '>' are not supported by this server.",
                ));
            }
            Some('(' | ')' | '"') => return Err(search_error(&format!("Invalid term '{word}'."))),
            _ => None,
        };
        let Some(op) = op else {
            match word.to_ascii_uppercase().as_str() {
                "AND" => {}
                "OR" | "NOT" => {
                    return Err(search_error(&format!(
                        "The boolean operator '{word}' is not supported by this server."
                    )));
                }
                _ => terms.push(SearchTerm::Text(Pattern::new(word, false))),
            }
            continue;
        };
        let sym = if op == CmpOp::Eq { "=" } else { "!=" };
        if word.is_empty() {
            return Err(search_error(&format!(
                "Comparator '{sym}' has an invalid term on the left hand side."
            )));
        }
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            Pattern::new(read_quoted(&mut chars)?, true)
        } else {
            let mut v = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                if matches!(c, '"' | '(' | ')' | '=' | '<' | '>') {
                    return Err(search_error(&format!(
                        "Comparator '{sym}' has an invalid term on the right hand side: {word}{sym}{v}{c}"
                    )));
                }
                v.push(c);
                chars.next();
            }
            if v.is_empty() {
                return Err(search_error(&format!(
                    "Comparator '{sym}' is missing a term on the right hand side."
                )));
            }
            Pattern::new(v, false)
        };
        terms.push(time_or_field(word, op, value)?);
    }
    Ok(terms)
}

fn time_or_field(field: String, op: CmpOp, value: Pattern) -> Result<SearchTerm, SplError> {
    let lower = field.to_ascii_lowercase();
    if lower != "earliest" && lower != "latest" {
        return Ok(SearchTerm::Field { field, op, value });
    }
    let secs = value
        .text()
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite());
    match (op, secs) {
        (CmpOp::Eq, Some(v)) if lower == "earliest" => Ok(SearchTerm::Earliest(v)),
        (CmpOp::Eq, Some(v)) => Ok(SearchTerm::Latest(v)),
        _ => Err(SplError(format!(
            "Error in 'search' command: Invalid value \"{}\" for time term '{lower}'",
            value.text()
        ))),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Comma,
    Eq,
    LParen,
    RParen,
}

fn tokenize_args(cmd: &str, text: &str) -> Result<Vec<Tok>, SplError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            ',' | '=' | '(' | ')' => {
                chars.next();
                out.push(match c {
                    ',' => Tok::Comma,
                    '=' => Tok::Eq,
                    '(' => Tok::LParen,
                    _ => Tok::RParen,
                });
            }
            '"' => {
                chars.next();
                let s = read_quoted(&mut chars)
                    .map_err(|_| command_error(cmd, "Unbalanced quotes."))?;
                out.push(Tok::Quoted(s));
            }
            _ => {
                let mut w = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, ',' | '=' | '(' | ')' | '"') {
                        break;
                    }
                    w.push(c);
                    chars.next();
                }
                out.push(Tok::Word(w));
            }
        }
    }
    Ok(out)
}

fn parse_count(cmd: &str, s: &str) -> Result<u64, SplError> {
    s.parse::<u64>()
        .map_err(|_| command_error(cmd, &format!("Invalid count '{s}'.")))
}

fn is_field_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '@' | '-' | '*'))
}

fn parse_command(segment: &str) -> Result<Command, SplError> {
    let (name, rest) = split_command(segment);
    let cmd = name.to_ascii_lowercase();
    let toks = tokenize_args(&cmd, &rest)?;
    match cmd.as_str() {
        "sort" => parse_sort(&toks),
        "head" => match toks.as_slice() {
            [] => Ok(Command::Head(HEAD_DEFAULT_LIMIT)),
            [Tok::Word(n)] => Ok(Command::Head(parse_count("head", n)?)),
            [Tok::Word(k), Tok::Eq, Tok::Word(n)] if k == "limit" => {
                Ok(Command::Head(parse_count("head", n)?))
            }
            _ => Err(command_error(
                "head",
                "Only 'head [N]' is supported by this server.",
            )),
        },
        "reverse" if toks.is_empty() => Ok(Command::Reverse),
        "reverse" => Err(command_error("reverse", "This command takes no arguments.")),
        "fields" => parse_fields(&toks),
        "eval" => parse_eval(&toks),
        "stats" => parse_stats(&toks),
        "" => Err(search_error("Empty search command after '|'.")),
        "search" => Err(command_error(
            "search",
            "'search' after a pipe is not supported by this server.",
        )),
        _ => Err(SplError(format!("Unknown search command '{name}'."))),
    }
}

fn parse_sort(toks: &[Tok]) -> Result<Command, SplError> {
    let mut i = 0;
    let mut limit = None;
    if let Some(Tok::Word(w)) = toks.first() {
        if w.chars().all(|c| c.is_ascii_digit()) {
            limit = Some(parse_count("sort", w)?);
            i = 1;
        } else if w == "limit" && toks.get(1) == Some(&Tok::Eq) {
            let Some(Tok::Word(n)) = toks.get(2) else {
                return Err(command_error("sort", "Invalid limit."));
            };
            limit = Some(parse_count("sort", n)?);
            i = 3;
        }
    }
    let mut keys = Vec::new();
    let mut pending_desc = None;
    while i < toks.len() {
        match &toks[i] {
            Tok::Word(w) if w == "-" || w == "+" => pending_desc = Some(w == "-"),
            Tok::Word(w) => {
                let (desc, field) = match w.as_bytes()[0] {
                    b'-' => (true, &w[1..]),
                    b'+' => (false, &w[1..]),
                    _ => (pending_desc.unwrap_or(false), w.as_str()),
                };
                if !is_field_name(field) || field.contains('*') {
                    return Err(command_error("sort", &format!("Invalid sort field '{w}'.")));
                }
                keys.push(SortKey {
                    field: field.to_string(),
                    descending: desc,
                });
                pending_desc = None;
            }
            Tok::Comma => {}
            _ => {
                return Err(command_error(
                    "sort",
                    "Sort functions such as num() or str() are not supported by this server.",
                ));
            }
        }
        i += 1;
    }
    if keys.is_empty() {
        return Err(command_error("sort", "A field to sort on is required."));
    }
    Ok(Command::Sort { limit, keys })
}

fn parse_fields(toks: &[Tok]) -> Result<Command, SplError> {
    let mut remove = false;
    let mut rest = toks;
    if let Some(Tok::Word(w)) = toks.first()
        && (w == "-" || w == "+")
    {
        remove = w == "-";
        rest = &toks[1..];
    }
    let mut fields = Vec::new();
    for t in rest {
        match t {
            Tok::Word(w) if is_field_name(w) => fields.push(w.clone()),
            Tok::Comma => {}
            _ => return Err(command_error("fields", "Invalid field list.")),
        }
    }
    if fields.is_empty() {
        return Err(command_error("fields", "A field list is required."));
    }
    Ok(Command::Fields { remove, fields })
}

fn parse_eval(toks: &[Tok]) -> Result<Command, SplError> {
    match toks {
        [
            Tok::Word(target),
            Tok::Eq,
            Tok::Word(func),
            Tok::LParen,
            Tok::Word(source),
            Tok::Comma,
            Tok::Quoted(fmt),
            Tok::RParen,
        ] if func.eq_ignore_ascii_case("strftime")
            && is_field_name(target)
            && is_field_name(source) =>
        {
            let format = StrftimeFormat::parse(fmt).ok_or_else(|| {
                command_error("eval", &format!("Invalid strftime format \"{fmt}\"."))
            })?;
            Ok(Command::Strftime {
                target: target.clone(),
                source: source.clone(),
                format,
            })
        }
        _ => Err(command_error(
            "eval",
            "Only 'eval x=strftime(field, \"format\")' is supported by this server.",
        )),
    }
}

fn parse_stats(toks: &[Tok]) -> Result<Command, SplError> {
    match toks {
        [Tok::Word(c)] if c == "count" => Ok(Command::StatsCount { by: Vec::new() }),
        [Tok::Word(c), Tok::Word(b), rest @ ..] if c == "count" && b.eq_ignore_ascii_case("by") => {
            let mut by = Vec::new();
            for t in rest {
                match t {
                    Tok::Word(w) if is_field_name(w) && !w.contains('*') => by.push(w.clone()),
                    Tok::Comma => {}
                    _ => return Err(command_error("stats", "Invalid 'by' clause.")),
                }
            }
            if by.is_empty() {
                return Err(command_error("stats", "A field is required after 'by'."));
            }
            Ok(Command::StatsCount { by })
        }
        _ => Err(command_error(
            "stats",
            "Only 'stats count [by field, ...]' is supported by this server.",
        )),
    }
}

#[cfg(test)]
#[path = "spl_tests.rs"]
mod tests;
