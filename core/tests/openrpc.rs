//! `spec/openrpc.json` describes exactly the methods the core dispatches: the same names as
//! `keyward_core::methods::METHODS` plus `encrypted_request_v3`, and the same params in the same
//! order (positional params are taken in that order, so the order is part of the wire format).

use std::collections::BTreeSet;
use std::path::PathBuf;

use keyward_core::methods::METHODS;
use serde_json::Value;

/// The envelope method: handled by the server before dispatch, so it is not in `METHODS`.
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
    METHODS.iter().copied().chain([ENVELOPE]).collect()
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
        let method = methods(&document)
            .iter()
            .find(|m| name(m) == method_name)
            .unwrap_or_else(|| panic!("{method_name} is not in the document"));
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
