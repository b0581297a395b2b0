//! The crate's imports point one way. Every file under `src/` is read, its `crate::`, `super::`,
//! `self::` and child-module paths resolved, and the top-level modules checked against
//! [`LAYERS`]: a module imports from its own layer and the ones below it, never from one above,
//! and the import graph has no loop, not among the top-level modules nor among the files inside
//! one (a file and the module folder it declares, its `mod.rs`, aside). The Splunk emulator
//! imports nothing of the crate at all, and its binary only the emulator ([`STANDALONE`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules of `src/`, lowest layer first (README, "Code layout", says the same).
const LAYERS: &[(&str, &[&str])] = &[
    (
        "values and leaf utilities, importing nothing of the crate",
        &["domain", "http_client", "telemetry", "metrics", "emulator"],
    ),
    (
        "the archive format, and the configuration that checks its keys",
        &["archive", "config"],
    ),
    (
        "the database, and the secrets kept in it",
        &["db", "secrets"],
    ),
    (
        "the queue, the stores and the outside parties (Splunk, Quay, mail, callbacks)",
        &["queue", "storage", "notify", "access", "splunk"],
    ),
    (
        "the work: reading logs, running jobs, exports, schedules, auditing, checks",
        &["logs", "worker", "export", "schedule", "audit", "check"],
    ),
    ("the HTTP API", &["api"]),
    ("the entry points", &["service", "demo", "cli"]),
];

/// `src/` entries that are no module of the library's graph: its root and the binaries.
const OUTSIDE: &[&str] = &["lib", "main", "bin"];

/// Modules that import nothing of the crate but themselves, not even their own layer: the Splunk
/// emulator stands in for Splunk and compiles without the product's types. Each binary named
/// beside one uses the library only through that module.
const STANDALONE: &[(&str, &[&str])] = &[("emulator", &["bin/splunk-emulator.rs"])];

#[test]
fn imports_point_down_the_layers_and_never_loop() {
    let sources = read_sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(sources.len() > 50, "read only {} files", sources.len());
    let problems = check(&sources);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn an_upward_import_or_a_file_loop_is_caught() {
    let problems = problems_with(&[
        (
            "schedule/owner.rs",
            "\nuse crate::api::{auth::Caller, ApiError};\n",
        ),
        ("storage/s3/client.rs", "\nuse super::upload::S3Upload;\n"),
        (
            "domain/net.rs",
            "\nfn f() { crate::notify::ssrf::parse_net(\"\"); }\n",
        ),
    ]);
    for expected in [
        "schedule (layer 5) imports api (layer 6) in schedule/owner.rs",
        "domain (layer 1) imports notify (layer 4) in domain/net.rs",
        "storage/s3/client.rs -> storage/s3/upload.rs -> storage/s3/client.rs",
    ] {
        assert!(
            problems.contains(expected),
            "{expected:?} not in:\n{problems}"
        );
    }
}

/// The problems `check` finds in `src/` with each `(file, code)` appended to its file.
fn problems_with(plants: &[(&str, &str)]) -> String {
    let mut sources = read_sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    for (file, code) in plants {
        let source = sources
            .iter_mut()
            .find(|s| s.file == *file)
            .unwrap_or_else(|| panic!("no {file}"));
        source.code.push_str(code);
    }
    check(&sources).join("\n")
}

#[test]
fn the_emulator_importing_the_product_is_caught() {
    let problems = problems_with(&[
        // `domain` is the emulator's own layer: the layers alone would allow it.
        ("emulator/engine.rs", "\nuse crate::domain::ExportId;\n"),
        (
            "emulator/routes.rs",
            "\nfn f() { let _ = super::super::splunk::SplunkError::Config(String::new()); }\n",
        ),
        (
            "bin/splunk-emulator.rs",
            "\nuse logexport::{api::AppState, emulator::Faults};\n",
        ),
    ]);
    for expected in [
        "emulator imports domain in emulator/engine.rs: it must compile without the product's types",
        "emulator imports splunk in emulator/routes.rs: it must compile without the product's types",
        "bin/splunk-emulator.rs uses logexport::api: it may use only logexport::emulator",
    ] {
        assert!(
            problems.contains(expected),
            "{expected:?} not in:\n{problems}"
        );
    }
    assert!(
        !problems.contains("logexport::emulator:"),
        "the emulator itself is allowed:\n{problems}"
    );
}

/// One file of `src/`: its path there, its module path, and its code without comments and
/// literals.
struct Source {
    file: String,
    module: Vec<String>,
    code: String,
}

fn read_sources(src: &Path) -> Vec<Source> {
    let mut files = Vec::new();
    collect_files(src, &mut files);
    files
        .into_iter()
        .map(|path| {
            let file = path
                .strip_prefix(src)
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            let mut module: Vec<String> = file
                .trim_end_matches(".rs")
                .split('/')
                .map(str::to_owned)
                .collect();
            if module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).expect("readable source");
            Source {
                file,
                module,
                code: strip(&text),
            }
        })
        .collect()
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src/") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// Everything wrong with `sources`' imports, one line each.
fn check(sources: &[Source]) -> Vec<String> {
    let mut problems = Vec::new();
    let layer_of: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, (_, modules))| modules.iter().map(move |m| (*m, i + 1)))
        .collect();
    let tops: BTreeSet<&str> = sources
        .iter()
        .map(|s| s.module[0].as_str())
        .filter(|m| !OUTSIDE.contains(m))
        .collect();
    for top in &tops {
        if !layer_of.contains_key(top) {
            problems.push(format!(
                "{top} is in no layer: add it to LAYERS and the README"
            ));
        }
    }
    for listed in layer_of.keys() {
        if !tops.contains(listed) {
            problems.push(format!("LAYERS names {listed}, which src/ does not have"));
        }
    }

    let file_modules: BTreeSet<&[String]> = sources.iter().map(|s| s.module.as_slice()).collect();
    let mut modules: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut files: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for source in sources {
        let from = source.module[0].as_str();
        if OUTSIDE.contains(&from) {
            continue;
        }
        for path in references(source) {
            let Some(&to) = path.first().and_then(|t| tops.get(t.as_str())) else {
                continue;
            };
            if to != from {
                modules.entry(from).or_default().insert(to);
                let problem = format!(
                    "{from} imports {to} in {}: it must compile without the product's types",
                    source.file
                );
                if STANDALONE.iter().any(|(m, _)| *m == from) && !problems.contains(&problem) {
                    problems.push(problem);
                }
                let (Some(a), Some(b)) = (layer_of.get(from), layer_of.get(to)) else {
                    continue;
                };
                let problem = format!(
                    "{from} (layer {a}) imports {to} (layer {b}) in {}",
                    source.file
                );
                if b > a && !problems.contains(&problem) {
                    problems.push(problem);
                }
            }
            let target = (1..=path.len())
                .rev()
                .map(|n| &path[..n])
                .find(|m| file_modules.contains(m));
            if let Some(target) = target
                && target[0] == from
                && !target.starts_with(&source.module)
                && !source.module.starts_with(target)
            {
                let file = sources
                    .iter()
                    .find(|s| s.module == target)
                    .map(|s| s.file.clone())
                    .expect("a file module");
                files.entry(source.file.as_str()).or_default().insert(file);
            }
        }
    }
    for (module, binaries) in STANDALONE {
        for binary in *binaries {
            let Some(source) = sources.iter().find(|s| s.file == *binary) else {
                problems.push(format!("{binary} is not in src/"));
                continue;
            };
            for path in library_paths(source) {
                let used = path.first().map_or("*", String::as_str);
                let problem =
                    format!("{binary} uses logexport::{used}: it may use only logexport::{module}");
                if used != *module && !problems.contains(&problem) {
                    problems.push(problem);
                }
            }
        }
    }
    if let Some(cycle) = find_cycle(&modules) {
        problems.push(format!(
            "the top-level modules loop: {}",
            cycle.join(" -> ")
        ));
    }
    let files: BTreeMap<&str, BTreeSet<&str>> = files
        .iter()
        .map(|(k, v)| (*k, v.iter().map(String::as_str).collect()))
        .collect();
    if let Some(cycle) = find_cycle(&files) {
        problems.push(format!("files import each other: {}", cycle.join(" -> ")));
    }
    problems
}

/// A loop in `graph`, as the nodes along it with the first repeated at the end.
fn find_cycle<'a>(graph: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Option<Vec<&'a str>> {
    fn visit<'a>(
        node: &'a str,
        graph: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node);
            return Some(cycle);
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

/// The crate paths `source` names, each from the crate root (`crate::a::b` is `[a, b]`, and so
/// is `super::b` in `a/c.rs`). Paths through extern crates and local names are left out.
fn references(source: &Source) -> Vec<Vec<String>> {
    let tokens = tokenize(&source.code);
    let mut children: BTreeSet<&str> = BTreeSet::new();
    for window in tokens.windows(3) {
        if window[0] == "mod" && window[2] == ";" {
            children.insert(window[1].as_str());
        }
    }
    let mut found = Vec::new();
    // Inline modules (`mod tests { … }`) move `self` and `super` one level down.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i].as_str();
        match token {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            "mod" if tokens.get(i + 2).is_some_and(|t| t == "{") => {
                inline.push((tokens[i + 1].clone(), depth));
            }
            _ => {}
        }
        let starts_path = tokens.get(i + 1).is_some_and(|t| t == "::")
            && (i == 0 || tokens[i - 1] != "::")
            && (matches!(token, "crate" | "super" | "self") || children.contains(token));
        if !starts_path {
            i += 1;
            continue;
        }
        let mut here = source.module.clone();
        here.extend(inline.iter().map(|(name, _)| name.clone()));
        let (base, next) = match token {
            "crate" => (Vec::new(), i + 2),
            "self" => (here, i + 2),
            "super" => {
                let mut j = i;
                while tokens.get(j).is_some_and(|t| t == "super")
                    && tokens.get(j + 1).is_some_and(|t| t == "::")
                {
                    here.pop();
                    j += 2;
                }
                (here, j)
            }
            _ => (here, i),
        };
        i = use_tree(&tokens, next, base, &mut found);
    }
    found
}

/// The library paths a binary names (`logexport::a::b` is `[a, b]`).
fn library_paths(source: &Source) -> Vec<Vec<String>> {
    let tokens = tokenize(&source.code);
    let mut found = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i] == "logexport"
            && tokens.get(i + 1).is_some_and(|t| t == "::")
            && (i == 0 || tokens[i - 1] != "::")
        {
            i = use_tree(&tokens, i + 2, Vec::new(), &mut found);
        } else {
            i += 1;
        }
    }
    found
}

/// Reads a path or `use` tree from `tokens[at]` on (after `prefix::`) into `found`; returns the
/// index after it.
fn use_tree(
    tokens: &[String],
    mut at: usize,
    mut prefix: Vec<String>,
    found: &mut Vec<Vec<String>>,
) -> usize {
    loop {
        match tokens.get(at).map(String::as_str) {
            Some("{") => {
                at += 1;
                loop {
                    match tokens.get(at).map(String::as_str) {
                        None => return at,
                        Some("}") => return at + 1,
                        Some(",") => at += 1,
                        Some(t) if is_ident(t) || t == "{" => {
                            at = use_tree(tokens, at, prefix.clone(), found);
                            // `a as b`, then the next item.
                            while tokens.get(at).is_some_and(|t| t != "," && t != "}") {
                                at += 1;
                            }
                        }
                        Some(_) => at += 1,
                    }
                }
            }
            Some(t) if is_ident(t) => {
                if t != "self" {
                    prefix.push(t.to_owned());
                }
                at += 1;
                if tokens.get(at).is_some_and(|t| t == "::") {
                    at += 1;
                    continue;
                }
                found.push(prefix);
                return at;
            }
            _ => {
                // `*`, or a path that ends in `::<…>`.
                found.push(prefix);
                return at;
            }
        }
    }
}

fn is_ident(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Identifiers, `::` and single punctuation characters.
fn tokenize(code: &str) -> Vec<String> {
    let chars: Vec<char> = code.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push("::".to_owned());
            i += 2;
        } else {
            if !c.is_whitespace() {
                tokens.push(c.to_string());
            }
            i += 1;
        }
    }
    tokens
}

/// `text` without comments (doc comments too), string literals and character literals, so that
/// only code is read.
fn strip(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut code = String::with_capacity(text.len());
    let mut i = 0;
    let at = |i: usize, s: &str| {
        s.chars()
            .enumerate()
            .all(|(k, c)| chars.get(i + k) == Some(&c))
    };
    while i < chars.len() {
        let c = chars[i];
        let after_ident = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if at(i, "//") {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if at(i, "/*") {
            let mut depth = 0;
            while i < chars.len() {
                if at(i, "/*") {
                    depth += 1;
                    i += 2;
                } else if at(i, "*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            code.push(' ');
        } else if !after_ident && (at(i, "r\"") || at(i, "r#") || at(i, "br\"") || at(i, "br#")) {
            // A raw string: r"…", r#"…"#, with as many #s at the end as at the start.
            i += if c == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while chars.get(i) == Some(&'#') {
                hashes += 1;
                i += 1;
            }
            if chars.get(i) != Some(&'"') {
                // `r#ident`, a raw identifier.
                continue;
            }
            i += 1;
            let end: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            while i < chars.len() && !at(i, &end) {
                i += 1;
            }
            i += end.chars().count();
            code.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            code.push_str("\"\"");
        } else if c == '\'' && char_literal_len(&chars[i..]).is_some() {
            i += char_literal_len(&chars[i..]).unwrap_or(1);
            code.push_str("' '");
        } else {
            code.push(c);
            i += 1;
        }
    }
    code
}

/// The length of the character literal `chars` starts with (`'a'`, `'\n'`, `'\u{1F600}'`), or
/// `None` for a lifetime.
fn char_literal_len(chars: &[char]) -> Option<usize> {
    match chars.get(1)? {
        '\\' => chars.iter().skip(2).position(|c| *c == '\'').map(|p| p + 3),
        _ => (chars.get(2)? == &'\'').then_some(3),
    }
}
