//! The public API of keyward-core is a deliberate list: the crate root's `pub use` items and the
//! three namespace modules (`audit`, `crypto`, `store`). This test reads them from the source and
//! compares them with `core/api.txt`; a change of the public API is a change of that file, made on
//! purpose and seen in review. Every other module is private.

use std::collections::BTreeSet;
use std::path::PathBuf;

fn src(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A module's own file: `name.rs`, or `name/mod.rs` for a module with files of its own.
fn module_src(module: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src").join(module).join("mod.rs");
    if dir.exists() { src(&format!("{module}/mod.rs")) } else { src(&format!("{module}.rs")) }
}

/// The top-level (column 0) `pub` statements of a file, each as one line, comments dropped.
fn pub_statements(text: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        if let Some(open) = current.as_mut() {
            open.push(' ');
            open.push_str(code.trim());
        } else if code.starts_with("pub ") {
            current = Some(code.trim().to_owned());
        } else {
            continue;
        }
        let done = current.as_ref().is_some_and(|c| !c.starts_with("pub use") || c.ends_with(';'));
        if done {
            statements.extend(current.take());
        }
    }
    statements
}

/// The names a `pub use a::b::{C, D as E, f};` statement brings in.
fn used_names(statement: &str) -> Vec<String> {
    let body = statement.trim_start_matches("pub use").trim().trim_end_matches(';');
    let items: Vec<&str> = match body.find('{') {
        Some(open) => body[open + 1..body.rfind('}').unwrap_or(body.len())].split(',').collect(),
        None => vec![body],
    };
    items
        .into_iter()
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| match item.split_once(" as ") {
            Some((_, alias)) => alias.trim().to_owned(),
            None => item.rsplit("::").next().unwrap_or(item).to_owned(),
        })
        .collect()
}

/// The name a `pub fn|struct|enum|trait|const|static|type|mod` statement declares.
fn declared_name(statement: &str) -> Option<(String, String)> {
    let mut words = statement.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| !w.is_empty());
    let _pub = words.next()?;
    let kind = words.next()?;
    let kind = if kind == "async" || kind == "unsafe" { words.next()? } else { kind };
    matches!(kind, "fn" | "struct" | "enum" | "trait" | "const" | "static" | "type" | "mod")
        .then(|| (kind.to_owned(), words.next().unwrap_or_default().to_owned()))
}

/// Every public path of the crate, from its source.
fn public_api() -> (BTreeSet<String>, Vec<String>) {
    let mut api = BTreeSet::new();
    let mut modules = Vec::new();
    for statement in pub_statements(&src("lib.rs")) {
        if statement.starts_with("pub use") {
            api.extend(used_names(&statement).into_iter().map(|name| format!("keyward_core::{name}")));
        } else if let Some((kind, name)) = declared_name(&statement) {
            assert_eq!(kind, "mod", "lib.rs declares `{statement}`: items live in modules");
            modules.push(name);
        }
    }
    for module in &modules {
        for statement in pub_statements(&module_src(module)) {
            let names = if statement.starts_with("pub use") {
                used_names(&statement)
            } else {
                declared_name(&statement).map(|(_, name)| name).into_iter().collect()
            };
            api.extend(names.into_iter().map(|name| format!("keyward_core::{module}::{name}")));
        }
    }
    (api, modules)
}

#[test]
fn the_public_api_is_the_list() {
    let (api, modules) = public_api();
    assert!(modules.len() <= 3, "at most three public modules, each a namespace an embedder needs: {modules:?}");
    let listed: BTreeSet<String> = include_str!("../api.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let added: Vec<_> = api.difference(&listed).collect();
    let removed: Vec<_> = listed.difference(&api).collect();
    assert!(
        added.is_empty() && removed.is_empty(),
        "the public API changed; update core/api.txt if that is meant.\nadded: {added:#?}\nremoved: {removed:#?}"
    );
}

#[test]
fn the_reader_sees_what_it_must() {
    let text = "pub use a::{B, c::D as E,\n    f};\npub(crate) use x::Y;\n// pub use z::W;\npub struct S;\npub mod m;\nfn g() {}\n";
    let statements = pub_statements(text);
    assert_eq!(statements.len(), 3, "{statements:?}");
    assert_eq!(used_names(&statements[0]), ["B", "E", "f"]);
    assert_eq!(declared_name(&statements[1]), Some(("struct".to_owned(), "S".to_owned())));
    assert_eq!(declared_name(&statements[2]), Some(("mod".to_owned(), "m".to_owned())));
}
