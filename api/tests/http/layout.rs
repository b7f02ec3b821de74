//! The crate's layout (ADR 0009), read from its source: which top-level module uses which, from
//! every `use` line and every `crate::`/`super::` path outside comments and test modules. No two
//! modules use each other, even through others, and the shared pieces use no feature.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// The modules that compose the application: they know every feature, and nothing uses them.
const ROOTS: [&str; 4] = ["lib", "main", "app", "state"];
/// The pieces every feature shares; they may not use a feature.
const SHARED: [&str; 9] =
    ["http", "chain", "jobs", "platform", "seal", "random", "config", "wakes", "reads"];

type Graph = BTreeMap<String, BTreeSet<String>>;

#[derive(Debug, PartialEq)]
enum Token {
    Name(String),
    Path,
    Open,
    Close,
    Comma,
    As,
}

fn tokens(tree: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = tree.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' => out.push(Token::Open),
            '}' => out.push(Token::Close),
            ',' => out.push(Token::Comma),
            ':' if chars.peek() == Some(&':') => {
                chars.next();
                out.push(Token::Path);
            }
            c if c.is_alphanumeric() || c == '_' || c == '*' => {
                let mut name = c.to_string();
                while let Some(&c) = chars.peek().filter(|c| c.is_alphanumeric() || **c == '_') {
                    name.push(c);
                    chars.next();
                }
                out.push(if name == "as" { Token::As } else { Token::Name(name) });
            }
            _ => {}
        }
    }
    out
}

/// Every path a use tree names (`crate::{a::X, b::{self, Y}}` → `crate::a::X`, `crate::b`,
/// `crate::b::Y`).
fn expand(tokens: &[Token], at: &mut usize, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    while let Some(token) = tokens.get(*at) {
        *at += 1;
        match token {
            Token::Open => {
                while *at < tokens.len() {
                    expand(tokens, at, prefix.clone(), out);
                    match tokens.get(*at) {
                        Some(Token::Comma) => *at += 1,
                        _ => break,
                    }
                    if tokens.get(*at) == Some(&Token::Close) {
                        break;
                    }
                }
                *at += 1; // the closing brace
                return;
            }
            Token::Name(name) => {
                if name != "self" || prefix.is_empty() {
                    prefix.push(name.clone());
                }
                match tokens.get(*at) {
                    Some(Token::Path) => *at += 1,
                    Some(Token::As) => {
                        *at += 2;
                        break;
                    }
                    _ => break,
                }
            }
            _ => break,
        }
    }
    out.push(prefix);
}

/// The module a file holds: `billing/metering/charges.rs` → `billing::metering::charges`.
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> =
        relative.with_extension("").iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// `path` made absolute from inside `module`; `None` for a path into another crate.
fn absolute(path: &[String], module: &[String]) -> Option<Vec<String>> {
    let (mut base, mut rest) = match path.first().map(String::as_str)? {
        "crate" => (Vec::new(), &path[1..]),
        "self" => (module.to_vec(), &path[1..]),
        "super" => (module.to_vec(), path),
        _ => return None,
    };
    while rest.first().map(String::as_str) == Some("super") {
        base.pop()?;
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// The source without comments and without its test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(at) if text[at..].contains("mod tests {") => &text[..at],
        _ => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path of `crate`, `super` or `self` a file's code names.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut statement: Option<String> = None;
    for line in code.lines() {
        let trimmed = line.trim_start();
        let starts_use = ["use ", "pub use ", "pub(crate) use ", "pub(super) use "]
            .iter()
            .any(|start| trimmed.starts_with(start));
        if statement.is_none() && starts_use {
            statement = Some(String::new());
        }
        match statement.as_mut() {
            Some(text) => {
                text.push_str(line);
                if line.contains(';') {
                    let tree = text.split_once("use ").map(|(_, tree)| tree).unwrap_or_default();
                    expand(&tokens(tree), &mut 0, Vec::new(), &mut out);
                    statement = None;
                }
            }
            None => {
                for start in ["crate::", "super::"] {
                    for (at, _) in line.match_indices(start) {
                        let before = line[..at].chars().last();
                        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                            continue;
                        }
                        let path: String = line[at..]
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                            .collect();
                        out.push(
                            path.split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect(),
                        );
                    }
                }
            }
        }
    }
    out
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read the source folder") {
        let path = entry.expect("a source entry").path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// Which top-level module uses which (re-exports at the crate root resolved to their module).
fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = Vec::new();
    files(&src, &mut sources);
    let sources: Vec<(Vec<String>, String)> = sources
        .iter()
        .map(|file| {
            let relative = file.strip_prefix(&src).expect("under src");
            let text = std::fs::read_to_string(file).expect("read a source file");
            (module_of(relative), code(&text))
        })
        .collect();
    let top: BTreeSet<String> =
        sources.iter().filter_map(|(module, _)| module.first().cloned()).collect();
    // Names the crate root re-exports (`crate::Config`) stand for the module they come from.
    let mut root_names = BTreeMap::new();
    for (module, code) in sources.iter().filter(|(module, _)| module.is_empty()) {
        for path in paths(code) {
            if let (Some(path), Some(name)) = (absolute(&path, module), path.last())
                && let Some(first) = path.first().filter(|first| top.contains(*first))
            {
                root_names.insert(name.clone(), first.clone());
            }
        }
    }
    let mut graph = Graph::new();
    for (module, code) in &sources {
        let from = module.first().cloned().unwrap_or_else(|| "lib".to_owned());
        let uses = graph.entry(from.clone()).or_default();
        for path in paths(code) {
            let Some(first) = absolute(&path, module).and_then(|p| p.first().cloned()) else {
                continue;
            };
            let to =
                if top.contains(&first) { Some(first) } else { root_names.get(&first).cloned() };
            if let Some(to) = to.filter(|to| *to != from) {
                uses.insert(to);
            }
        }
    }
    graph
}

/// A cycle through `from`, if there is one: the modules along it.
fn cycle(graph: &Graph, from: &str, path: &mut Vec<String>) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|m| m == from) {
        let mut cycle = path[at..].to_vec();
        cycle.push(from.to_owned());
        return Some(cycle);
    }
    path.push(from.to_owned());
    for next in graph.get(from).into_iter().flatten() {
        if let Some(cycle) = cycle(graph, next, path) {
            return Some(cycle);
        }
    }
    path.pop();
    None
}

fn shown(graph: &Graph) -> String {
    graph
        .iter()
        .map(|(from, to)| format!("{from} -> {}", to.iter().cloned().collect::<Vec<_>>().join(" ")))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn no_module_uses_itself_through_others() {
    let graph = graph();
    assert!(graph.len() > 15, "too few modules read:\n{}", shown(&graph));
    for module in graph.keys() {
        if let Some(cycle) = cycle(&graph, module, &mut Vec::new()) {
            panic!("a module cycle: {}\n\nthe graph:\n{}", cycle.join(" -> "), shown(&graph));
        }
    }
}

#[test]
fn shared_pieces_use_no_feature_and_nothing_uses_the_composition() {
    let graph = graph();
    for (from, uses) in &graph {
        for to in uses {
            let composing = ROOTS.contains(&from.as_str());
            assert!(
                composing || !ROOTS.contains(&to.as_str()),
                "{from} uses {to}, which composes the application"
            );
            if SHARED.contains(&from.as_str()) {
                assert!(SHARED.contains(&to.as_str()), "the shared {from} uses the feature {to}");
            }
        }
    }
}

#[test]
fn the_reader_sees_cycles_and_re_exports() {
    let module = |m: &str| m.split("::").map(str::to_owned).collect::<Vec<_>>();
    let mut found = Vec::new();
    let tree = "crate::{a::X, b::{self, Y as Z}, super::c}";
    expand(&tokens(tree), &mut 0, Vec::new(), &mut found);
    let found: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    assert_eq!(found, ["crate::a::X", "crate::b", "crate::b::Y", "crate::super::c"]);
    assert_eq!(
        absolute(&module("super::x"), &module("billing::ledger")),
        Some(module("billing::x"))
    );
    assert_eq!(absolute(&module("super::x"), &module("billing")), Some(module("x")));
    assert_eq!(absolute(&module("std::x"), &module("billing")), None);
    let code = code(
        "use crate::a::B; // crate::c\nfn f() { crate::d::e(); }\n#[cfg(test)]\nmod tests {\n use crate::f;\n}",
    );
    let firsts: Vec<String> = paths(&code).iter().map(|p| p[1].clone()).collect();
    assert_eq!(firsts, ["a", "d"]);
    let graph = Graph::from([
        ("a".into(), BTreeSet::from(["b".into()])),
        ("b".into(), BTreeSet::from(["c".into()])),
        ("c".into(), BTreeSet::from(["a".into()])),
    ]);
    assert_eq!(
        cycle(&graph, "a", &mut Vec::new()),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
