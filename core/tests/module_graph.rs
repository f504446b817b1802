//! No two modules of the core depend on each other, directly or around a longer loop: the modules of
//! `core/src/*.rs` form layers (`server` on top of `methods`, `lifecycle` and `state`, and so on down).
//!
//! A module depends on another when its code names it as `crate::other` (in a `use`, a grouped
//! `use crate::{…}`, or a path in the code); comments and string literals do not count. A method in an
//! inherent `impl` of a type written outside the type's own module would let callers reach that
//! module without naming it, so that is refused too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every module's source, by module name: a file `src/name.rs`, or a directory `src/name/` (its
/// `mod.rs` and every file below, together: a module's own files may name each other). The crate
/// root (`lib.rs`) declares the modules and is above them all, so it is left out; every module it
/// declares must be found, so a new directory module cannot escape the checks.
fn sources() -> BTreeMap<String, String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{} is not readable: {e}", dir.display()));
    let mut sources = BTreeMap::new();
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("{}: {e}", dir.display())).path();
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else { continue };
        let files = if path.is_dir() {
            rust_files(&path)
        } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" {
            vec![path.clone()]
        } else {
            continue;
        };
        let code: String = files
            .iter()
            .map(|file| code_only(&std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))))
            .collect::<Vec<_>>()
            .join("\n");
        sources.insert(name.to_owned(), code);
    }
    let root = std::fs::read_to_string(dir.join("lib.rs")).expect("src/lib.rs");
    let declared: BTreeSet<String> = code_only(&root)
        .lines()
        .filter_map(|line| line.trim().trim_start_matches("pub ").strip_prefix("mod "))
        .map(|rest| rest.trim_end_matches(';').trim().to_owned())
        .collect();
    let found: BTreeSet<String> = sources.keys().cloned().collect();
    assert!(declared.len() > 5, "found only {declared:?} declared in src/lib.rs");
    assert_eq!(declared, found, "src/lib.rs declares modules these checks do not see (or the reverse)");
    sources
}

/// The `.rs` files under `dir`, at any depth, in a fixed order.
fn rust_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{} is not readable: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("{}: {e}", dir.display())).path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The files of a directory module by their module names (`mod` for `mod.rs`, which is above them).
fn submodules(module: &str) -> BTreeMap<String, String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src").join(module);
    rust_files(&dir)
        .into_iter()
        .filter(|path| path.parent() == Some(dir.as_path()))
        .map(|path| {
            let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (name, code_only(&text))
        })
        .collect()
}

/// The sibling files a file of a directory module names, as `super::x` (or `crate::module::x`).
fn sibling_graph(module: &str, files: &BTreeMap<String, String>) -> Graph {
    let own = format!("crate::{module}::");
    files
        .iter()
        .filter(|(name, _)| *name != "mod")
        .map(|(name, code)| {
            let chars: Vec<char> = code.chars().collect();
            let mut uses = BTreeSet::new();
            for prefix in ["super::", own.as_str()] {
                for (at, _) in code.match_indices(prefix) {
                    let start = code[..at].chars().count();
                    if start > 0 && is_ident(chars[start - 1]) {
                        continue;
                    }
                    let next = ident_at(&chars, start + prefix.chars().count());
                    if next != *name && files.contains_key(&next) && next != "mod" {
                        uses.insert(next);
                    }
                }
            }
            (name.clone(), uses)
        })
        .collect()
}

/// The source with comments and the contents of string and character literals blanked out.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let rest = &chars[i..];
        if rest.starts_with(&['/', '/']) {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if rest.starts_with(&['/', '*']) {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i..].starts_with(&['/', '*']) {
                    depth += 1;
                    i += 2;
                } else if chars[i..].starts_with(&['*', '/']) {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if let Some(hashes) = raw_string_start(rest).filter(|_| i == 0 || !is_ident(chars[i - 1])) {
            // r"…", r#"…"#, br#"…"#: ends at a quote followed by as many hashes.
            i += rest.iter().position(|c| *c == '"').unwrap_or(0) + 1;
            while i < chars.len()
                && !(chars[i] == '"' && chars[i + 1..].iter().take_while(|c| **c == '#').count() >= hashes)
            {
                i += 1;
            }
            i += 1 + hashes;
            out.push_str("\"\"");
        } else if chars[i] == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if chars[i] == '\'' && rest.get(1) == Some(&'\\') {
            // '\n', '\'', '\u{…}': skip the escaped character, then up to the closing quote.
            i += 3;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else if chars[i] == '\'' && rest.get(2) == Some(&'\'') {
            i += 3;
            out.push_str("' '");
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// The number of `#`s if `rest` starts a raw (byte) string literal.
fn raw_string_start(rest: &[char]) -> Option<usize> {
    let after_b = if rest.first() == Some(&'b') { &rest[1..] } else { rest };
    if after_b.first() != Some(&'r') {
        return None;
    }
    let hashes = after_b[1..].iter().take_while(|c| **c == '#').count();
    (after_b.get(1 + hashes) == Some(&'"')).then_some(hashes)
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn ident_at(code: &[char], start: usize) -> String {
    code[start..].iter().take_while(|c| is_ident(**c)).collect()
}

/// The first path segment after every `crate::` in `code`, including each item of a grouped
/// `crate::{a, b::c}`.
fn crate_references(code: &str) -> BTreeSet<String> {
    let chars: Vec<char> = code.chars().collect();
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let start = code[..at].chars().count();
        if start > 0 && (is_ident(chars[start - 1]) || chars[start - 1] == '$') {
            continue;
        }
        let after = start + "crate::".len();
        if chars.get(after) != Some(&'{') {
            found.insert(ident_at(&chars, after));
            continue;
        }
        let mut depth = 0;
        let mut item_start = true;
        for (offset, c) in chars[after..].iter().enumerate() {
            match c {
                '{' => {
                    depth += 1;
                    item_start = depth == 1;
                }
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                ',' if depth == 1 => item_start = true,
                c if item_start && is_ident(*c) => {
                    found.insert(ident_at(&chars, after + offset));
                    item_start = false;
                }
                _ => {}
            }
        }
    }
    found
}

/// Each module and the other modules it names.
fn graph(sources: &BTreeMap<String, String>) -> Graph {
    sources
        .iter()
        .map(|(module, code)| {
            let uses = crate_references(code)
                .into_iter()
                .filter(|name| name != module && sources.contains_key(name))
                .collect();
            (module.clone(), uses)
        })
        .collect()
}

/// A cycle of the graph as `a -> b -> … -> a`, if there is one.
fn find_cycle(graph: &Graph) -> Option<String> {
    fn visit<'a>(
        node: &'a str,
        graph: &'a Graph,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<String> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node);
            return Some(cycle.join(" -> "));
        }
        if done.contains(node) {
            return None;
        }
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node);
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

/// The types, traits and aliases each module defines at any depth.
fn definitions(code: &str) -> BTreeSet<String> {
    let words: Vec<&str> = code.split(|c: char| !is_ident(c)).filter(|w| !w.is_empty()).collect();
    words
        .windows(2)
        .filter(|pair| matches!(pair[0], "struct" | "enum" | "trait" | "type" | "union"))
        .map(|pair| pair[1].to_owned())
        .collect()
}

/// `(module, type)` for every inherent `impl Type` whose type only another module defines.
fn foreign_inherent_impls(sources: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let defined: BTreeMap<&String, BTreeSet<String>> =
        sources.iter().map(|(module, code)| (module, definitions(code))).collect();
    let mut foreign = Vec::new();
    for (module, code) in sources {
        for line in code.lines().map(str::trim_start) {
            let Some(rest) = line.strip_prefix("impl") else { continue };
            if !(rest.starts_with(' ') || rest.starts_with('<')) || line.contains(" for ") {
                continue;
            }
            // `impl<'a> Name<'a> {`, `impl Name {` or `impl crate::m::Name {`: the type is the last
            // segment of the path after the generics.
            let rest = if rest.starts_with('<') { rest.split_once('>').map_or("", |(_, r)| r) } else { rest };
            let path: String = rest.trim_start().chars().take_while(|c| is_ident(*c) || *c == ':').collect();
            let name = path.rsplit("::").next().unwrap_or_default().to_owned();
            let elsewhere = defined.iter().any(|(other, names)| *other != module && names.contains(&name));
            if !defined[module].contains(&name) && elsewhere {
                foreign.push((module.clone(), name));
            }
        }
    }
    foreign
}

#[test]
fn modules_form_layers_without_cycles() {
    let graph = graph(&sources());
    if let Some(cycle) = find_cycle(&graph) {
        panic!("the core's modules import each other: {cycle}\nthe whole graph: {graph:#?}");
    }
}

/// Within a directory module (`server/`, `session/`), the files below `mod.rs` form layers too.
#[test]
fn a_modules_own_files_form_layers_without_cycles() {
    let directories: Vec<String> = ["server", "session"].into_iter().map(str::to_owned).collect();
    for module in &directories {
        let files = submodules(module);
        assert!(files.len() >= 3, "{module}/ holds only {:?}", files.keys());
        let graph = sibling_graph(module, &files);
        if let Some(cycle) = find_cycle(&graph) {
            panic!("the files of {module}/ import each other: {cycle}\nthe whole graph: {graph:#?}");
        }
    }
}

#[test]
fn inherent_impls_live_with_their_types() {
    let foreign = foreign_inherent_impls(&sources());
    assert!(
        foreign.is_empty(),
        "inherent impls outside their type's module (callers reach them without naming the module): {foreign:?}"
    );
}

#[test]
fn the_checks_see_what_they_must() {
    let code = code_only(
        "use crate::server::{Server, lock};\nuse crate::{jsonrpc, state::State};\n// crate::vault in a comment\n\
         let s = \"crate::keys\"; let r = r#\"crate::keys\"#; let c = '\"'; let q = '\\''; crate::secret::wipe(x); f::<'a>()",
    );
    let found: Vec<String> = crate_references(&code).into_iter().collect();
    assert_eq!(found, ["jsonrpc", "secret", "server", "state"]);
    let graph: Graph = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]
        .into_iter()
        .map(|(from, to)| (from.to_owned(), BTreeSet::from([to.to_owned()])))
        .collect();
    assert_eq!(find_cycle(&graph).as_deref(), Some("a -> b -> c -> a"));
    let layered: Graph =
        [("a", "b"), ("b", "c")].into_iter().map(|(f, t)| (f.to_owned(), BTreeSet::from([t.to_owned()]))).collect();
    assert_eq!(find_cycle(&layered), None);
    let sources = BTreeMap::from([
        ("server".to_owned(), "pub struct Server;\nimpl Server {}\n".to_owned()),
        (
            "methods".to_owned(),
            "impl Server {\n}\nimpl fmt::Debug for Server {}\nstruct Method;\nimpl<'a> crate::server::Server {}"
                .to_owned(),
        ),
    ]);
    let foreign = ("methods".to_owned(), "Server".to_owned());
    assert_eq!(foreign_inherent_impls(&sources), [foreign.clone(), foreign]);
    let files = BTreeMap::from([
        ("mod".to_owned(), "mod a; mod b; use a::X;".to_owned()),
        ("a".to_owned(), "use super::b::Y; use super::State;".to_owned()),
        ("b".to_owned(), "fn f() { crate::server::a::g() }".to_owned()),
    ]);
    let siblings = sibling_graph("server", &files);
    assert_eq!(siblings["a"], BTreeSet::from(["b".to_owned()]));
    assert_eq!(find_cycle(&siblings).as_deref(), Some("a -> b -> a"));
}
