//! `spec/openrpc.json` describes exactly the methods the core dispatches: the same names as
//! the method table (`keyward_core::METHODS`) plus `encrypted_request_v3`, the same params in
//! the same order (positional params are taken in that order, so the order is part of the wire
//! format), and each method's role (`x-keyward-role`) and speed (`x-keyward-speed`) as the table has
//! them. `spec/protocol.md` section 7 lists the same roles and speeds.

use std::collections::BTreeSet;
use std::path::PathBuf;

use keyward_core::METHODS;
use serde_json::Value;

/// The envelope method: handled by the server before dispatch, so it is not in `METHODS` (and has
/// no role or speed of its own: those of the call inside it apply).
const ENVELOPE: (&str, &[&str]) = ("encrypted_request_v3", &["nonce", "body_enc"]);

fn document() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../spec/openrpc.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{} is not readable: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn methods(document: &Value) -> &[Value] {
    document["methods"].as_array().map(Vec::as_slice).unwrap_or_else(|| panic!("no methods array"))
}

fn name(method: &Value) -> &str {
    method["name"].as_str().unwrap_or_else(|| panic!("a method without a string name: {method}"))
}

fn expected() -> Vec<(&'static str, &'static [&'static str])> {
    METHODS.iter().map(|method| (method.name(), method.params())).chain([ENVELOPE]).collect()
}

#[test]
fn is_an_openrpc_1_2_6_document() {
    let document = document();
    assert_eq!(document["openrpc"], "1.2.6");
    assert!(document["info"]["title"].is_string(), "info.title");
    assert!(document["info"]["version"].is_string(), "info.version");
    assert!(!methods(&document).is_empty());
}

#[test]
fn method_names_equal_the_dispatchers() {
    let document = document();
    let listed: Vec<&str> = methods(&document).iter().map(name).collect();
    let unique: BTreeSet<&str> = listed.iter().copied().collect();
    assert_eq!(unique.len(), listed.len(), "a method is listed twice: {listed:?}");
    let dispatched: BTreeSet<&str> = expected().iter().map(|(name, _)| *name).collect();
    let missing: Vec<_> = dispatched.difference(&unique).collect();
    let unknown: Vec<_> = unique.difference(&dispatched).collect();
    assert!(missing.is_empty(), "methods the core dispatches but the document lacks: {missing:?}");
    assert!(unknown.is_empty(), "methods the document lists but the core does not dispatch: {unknown:?}");
}

#[test]
fn params_equal_the_dispatchers_in_order() {
    let document = document();
    for (method_name, params) in expected() {
        let method = method(&document, method_name);
        let listed: Vec<&str> = method["params"]
            .as_array()
            .unwrap_or_else(|| panic!("{method_name}: params is not an array"))
            .iter()
            .map(|p| p["name"].as_str().unwrap_or_else(|| panic!("{method_name}: a param without a name")))
            .collect();
        assert_eq!(listed, params, "{method_name}: param names or order differ from METHODS");
        for param in method["params"].as_array().into_iter().flatten() {
            // V3 refuses a missing named param, so every param is required (nullable ones as null).
            assert_eq!(param["required"], true, "{method_name}.{}: must be required", param["name"]);
            assert!(param["schema"].is_object(), "{method_name}.{}: no schema", param["name"]);
        }
    }
}

fn method<'a>(document: &'a Value, method_name: &str) -> &'a Value {
    methods(document)
        .iter()
        .find(|m| name(m) == method_name)
        .unwrap_or_else(|| panic!("{method_name} is not in the document"))
}

#[test]
fn roles_and_speeds_equal_the_tables() {
    let document = document();
    for builtin in METHODS {
        let listed = method(&document, builtin.name());
        assert_eq!(listed["x-keyward-role"], builtin.role().as_str(), "{}: x-keyward-role", builtin.name());
        assert_eq!(listed["x-keyward-speed"], builtin.speed().as_str(), "{}: x-keyward-speed", builtin.name());
    }
    let envelope = method(&document, ENVELOPE.0);
    assert!(envelope.get("x-keyward-role").is_none() && envelope.get("x-keyward-speed").is_none());
}

/// The rows of `spec/protocol.md`'s method table (section 7): method, params, role, speed.
fn protocol_rows() -> Vec<[String; 4]> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../spec/protocol.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{} is not readable: {e}", path.display()));
    let header = "| method | params | role | speed |";
    let start = text.find(header).unwrap_or_else(|| panic!("protocol.md has no row {header:?}"));
    text[start..]
        .lines()
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<String> = line.split('|').skip(1).take(4).map(|cell| cell.trim().replace('`', "")).collect();
            cells.try_into().unwrap_or_else(|cells| panic!("a row without four cells: {cells:?}"))
        })
        .collect()
}

#[test]
fn the_protocol_documents_table_equals_the_method_table() {
    let rows = protocol_rows();
    let listed: Vec<&str> = rows.iter().map(|[name, ..]| name.as_str()).collect();
    let table: Vec<&str> = METHODS.iter().map(|m| m.name()).collect();
    assert_eq!(listed, table, "protocol.md lists other methods, or in another order");
    for (builtin, [name, params, role, speed]) in METHODS.iter().zip(&rows) {
        let expected = if builtin.params().is_empty() { "—".to_owned() } else { builtin.params().join(", ") };
        assert_eq!(*params, expected, "{name}: params");
        assert_eq!(role, builtin.role().as_str(), "{name}: role");
        assert_eq!(speed, builtin.speed().as_str(), "{name}: speed");
    }
}

#[test]
fn every_result_is_wrapped_in_ok() {
    let document = document();
    for method in methods(&document) {
        let schema = &method["result"]["schema"];
        assert!(method["result"]["name"].is_string(), "{}: result has no name", name(method));
        assert!(schema["properties"]["Ok"].is_object(), "{}: result schema has no Ok property", name(method));
        assert_eq!(schema["required"], serde_json::json!(["Ok"]), "{}: Ok must be required", name(method));
        for error in method["errors"].as_array().into_iter().flatten() {
            assert!(error["code"].is_i64() && error["message"].is_string(), "{}: bad error {error}", name(method));
        }
    }
}
