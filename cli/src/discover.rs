//! What `keyward call` knows of the methods, all from the one method table (name, params, role,
//! speed: `keyward_core::METHODS`) and the OpenRPC document checked against it (types, summaries,
//! results, examples: `spec/openrpc.json`, built into the binary): `keyward call --list`,
//! `keyward call help METHOD`, "did you mean", and how each param is filled in when left out.

use std::fmt::Write as _;
use std::sync::OnceLock;

use keyward_core::{METHODS, Method, Speed};
use serde_json::{Map, Value};

use crate::failure::Failure;

/// The OpenRPC document, as built into the binary.
const OPENRPC: &str = include_str!("../../spec/openrpc.json");

fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    // The document is checked against the method table by core/tests/openrpc.rs and parsed by
    // this module's tests, so it is JSON.
    DOCUMENT.get_or_init(|| serde_json::from_str(OPENRPC).unwrap_or(Value::Null))
}

/// The document's entry for `method`.
fn entry(method: &str) -> Option<&'static Value> {
    document()["methods"].as_array()?.iter().find(|entry| entry["name"] == method)
}

/// `schema` with a `$ref` to a component resolved (one level: the document's refs are flat).
fn resolve(schema: &'static Value) -> &'static Value {
    match schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")) {
        Some(name) => &document()["components"]["schemas"][name],
        None => schema,
    }
}

/// The name of the component `schema` refers to, if any.
fn ref_name(schema: &Value) -> Option<&str> {
    schema["$ref"].as_str().and_then(|r| r.rsplit('/').next())
}

/// The JSON types a schema allows (`oneOf` taken as its first choice's).
fn types(schema: &'static Value) -> Vec<&'static str> {
    let schema = resolve(schema);
    match &schema["type"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => match schema["oneOf"].as_array() {
            Some(choices) => choices.iter().flat_map(types).collect(),
            None => Vec::new(),
        },
    }
}

/// A param as `keyward call` sees it.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// Its wire name.
    pub name: &'static str,
    /// Its schema in the document.
    schema: &'static Value,
    /// Its description in the document.
    description: &'static str,
}

/// How `keyward call` fills in a param the user leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fill {
    /// Asked for at a prompt (or read from standard input): a password.
    Prompt {
        /// The prompt.
        prompt: &'static str,
        /// Whether it is a password being set (asked twice at a prompt; empty only if allowed).
        new: bool,
    },
    /// From `--token` / `KEYWARD_TOKEN`.
    Token,
    /// This value.
    Default(Value),
    /// Nothing: the user must give it.
    Required,
}

impl Param {
    /// A one-line rendering of its type: `string`, `string|null`, `reader|signer|owner`, with the
    /// component's name, e.g. `string|null (WalletName)`.
    pub fn type_text(&self) -> String {
        let resolved = resolve(self.schema);
        let mut text = match resolved["enum"].as_array() {
            Some(values) => values.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).collect(),
            None => types(self.schema).iter().map(|t| (*t).to_owned()).collect::<Vec<_>>(),
        }
        .join("|");
        if text.is_empty() {
            text = "any".into();
        }
        if let Some(name) = ref_name(self.schema) {
            let _ = write!(text, " ({name})");
        }
        text
    }

    /// Whether the schema allows JSON `null`.
    pub fn nullable(&self) -> bool {
        types(self.schema).contains(&"null")
    }

    /// The document's example value for it, if it has one.
    pub fn example(&self) -> Option<Value> {
        if self.name == "wallet_seed" {
            return Some(Value::String("@wallet.seed".into()));
        }
        self.schema["examples"].get(0).or_else(|| resolve(self.schema)["examples"].get(0)).cloned()
    }

    /// How the CLI fills it in when left out of `method`'s params.
    pub fn fill(&self, method: &str) -> Fill {
        match (method, self.name) {
            (_, "password") => Fill::Prompt {
                prompt: "Wallet password: ",
                new: matches!(method, "create_wallet" | "import_grin_wallet"),
            },
            (_, "old") => Fill::Prompt { prompt: "Current password: ", new: false },
            (_, "new") => Fill::Prompt { prompt: "New password: ", new: true },
            (_, "token") => Fill::Token,
            (_, "mnemonic_length") => Fill::Default(Value::from(32)),
            (_, "chain_type") => Fill::Default(Value::from("Mainnet")),
            _ if self.nullable() => Fill::Default(Value::Null),
            _ => Fill::Required,
        }
    }

    /// Whether `value` has a type (and, for an enumeration, a value) the schema allows: the check
    /// done before any prompt (the server checks the rest: patterns, lengths).
    pub fn admits(&self, value: &Value) -> Result<(), String> {
        let allowed = types(self.schema);
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let fits = allowed.is_empty()
            || allowed.contains(&actual)
            || (actual == "integer" && allowed.contains(&"number"))
            // `wallet_seed` may be given as the file's text (`@file` is read first).
            || (self.name == "wallet_seed" && actual == "string");
        if !fits {
            return Err(format!("'{}' must be {}, not {actual}", self.name, self.type_text()));
        }
        if let Some(values) = resolve(self.schema)["enum"].as_array()
            && !value.is_null()
            && !values.contains(value)
        {
            return Err(format!("'{}' must be one of {}, not {value}", self.name, self.type_text()));
        }
        Ok(())
    }
}

/// The params of `method`, in the table's order, with what the document says of each.
pub fn params(method: &'static Method) -> Vec<Param> {
    static NULL: Value = Value::Null;
    let documented = entry(method.name()).and_then(|e| e["params"].as_array());
    method
        .params()
        .iter()
        .map(|name| {
            let param = documented.and_then(|list| list.iter().find(|p| p["name"] == *name));
            Param {
                name,
                schema: param.map_or(&NULL, |p| &p["schema"]),
                description: param.and_then(|p| p["description"].as_str()).unwrap_or(""),
            }
        })
        .collect()
}

/// The built-in method `name`, or a usage failure that suggests the nearest one.
pub fn method(name: &str) -> Result<&'static Method, Failure> {
    keyward_core::find_method(name).ok_or_else(|| {
        let hint = match suggest(name) {
            Some(near) => format!("did you mean `{near}`? "),
            None => String::new(),
        };
        Failure::usage(format!(
            "there is no method `{name}`: {hint}(`keyward call --list` lists them; --unlisted sends a method the \
             server's embedder added)"
        ))
    })
}

/// The method whose name is nearest `name` (a typo away: at most a third of its letters wrong),
/// or one that `name` is a part of.
pub fn suggest(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase().replace('-', "_");
    let nearest = METHODS.iter().map(|m| (distance(&name, m.name()), m.name())).min_by_key(|(d, _)| *d);
    match nearest {
        Some((d, found)) if d <= (found.len() / 3).max(1) => Some(found),
        _ if name.len() >= 4 => METHODS.iter().map(Method::name).find(|m| m.contains(name.as_str())),
        _ => None,
    }
}

/// Optimal string alignment distance (Levenshtein with adjacent transpositions).
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1).min(rows[i][j - 1] + 1).min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

fn speed_text(speed: Speed) -> &'static str {
    match speed {
        Speed::Fast => "fast (answered at once)",
        Speed::Slow => "slow (runs a KDF or writes to the store)",
    }
}

/// `keyward call --list`: one line per method: name, the least role, params.
pub fn list() -> String {
    let width = METHODS.iter().map(|m| m.name().len()).max().unwrap_or(0);
    let mut out = format!("{:width$}  {:6}  PARAMS\n", "METHOD", "ROLE");
    for method in METHODS {
        let params: Vec<String> = params(method)
            .iter()
            .map(|p| match p.fill(method.name()) {
                Fill::Required => p.name.to_owned(),
                _ => format!("[{}]", p.name),
            })
            .collect();
        let line = format!("{:width$}  {:6}  {}", method.name(), method.role().as_str(), params.join(" "));
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out.push_str(
        "\n[param]: may be left out (asked for, from KEYWARD_TOKEN, or a default). `keyward call help METHOD` shows a \
         method's params, types, result and an example.\n",
    );
    out
}

/// `keyward call help METHOD`.
pub fn help(name: &str) -> Result<String, Failure> {
    let method = method(name)?;
    let documented = entry(method.name());
    let text = |key: &str| documented.and_then(|e| e[key].as_str()).unwrap_or("");
    let mut out = format!("{}: {}\n", method.name(), text("summary"));
    if !text("description").is_empty() {
        let _ = writeln!(out, "{}", text("description"));
    }
    let _ = writeln!(out, "\nrole:   {} (the least role that may call it)", method.role().as_str());
    let _ = writeln!(out, "speed:  {}", speed_text(method.speed()));
    let params = params(method);
    if params.is_empty() {
        out.push_str("params: none\n");
    } else {
        out.push_str("params:\n");
        let width = params.iter().map(|p| p.name.len()).max().unwrap_or(0);
        for param in &params {
            let left_out = match param.fill(method.name()) {
                Fill::Prompt { new: true, .. } => {
                    "left out: asked for twice (once with --password-stdin); never on the command line".to_owned()
                }
                Fill::Prompt { .. } => "left out: asked for (or --password-stdin); never on the command line".into(),
                Fill::Token => "left out: --token or KEYWARD_TOKEN".into(),
                Fill::Default(_) if param.name == "mnemonic" => {
                    "left out: null (a new phrase); --restore asks for one (never on the command line)".into()
                }
                Fill::Default(value) => format!("left out: {value}"),
                Fill::Required => "required".into(),
            };
            let _ = writeln!(out, "  {:width$}  {}; {left_out}", param.name, param.type_text());
            if !param.description.is_empty() {
                let _ = writeln!(out, "  {:width$}  {}", "", param.description);
            }
        }
    }
    if let Some(result) = documented.map(|e| &e["result"]) {
        let ok = &result["schema"]["properties"]["Ok"];
        let shape = match types(ok).as_slice() {
            [] if ok.get("$ref").is_some() => ref_name(ok).unwrap_or("value").to_owned(),
            [] => "value".to_owned(),
            list => list.join("|"),
        };
        let about = ok["description"].as_str().or_else(|| resolve(ok)["description"].as_str()).unwrap_or("");
        match shape.as_str() {
            "null" => out.push_str("result: null\n"),
            _ => {
                let name = result["name"].as_str().unwrap_or("result");
                let _ = writeln!(out, "result: {name} ({shape}){}", prefixed(about));
            }
        }
    }
    let _ = writeln!(out, "example:\n  {}", example(method));
    Ok(out)
}

fn prefixed(text: &str) -> String {
    if text.is_empty() { String::new() } else { format!(": {text}") }
}

/// A command line that calls `method`: the params it needs (or has an example for), none of those
/// the CLI asks for or fills in from the environment.
pub fn example(method: &'static Method) -> String {
    let mut given = Map::new();
    for param in params(method) {
        if matches!(param.fill(method.name()), Fill::Prompt { .. } | Fill::Token) {
            continue;
        }
        if let Some(value) = param.example() {
            given.insert(param.name.to_owned(), value);
        }
    }
    let mut line = format!("keyward call {}", method.name());
    if !given.is_empty() {
        let _ = write!(line, " '{}'", Value::Object(given));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_document_describes_every_param_of_the_table() {
        assert!(document().is_object(), "spec/openrpc.json is JSON");
        for method in METHODS {
            assert!(entry(method.name()).is_some(), "{} is documented", method.name());
            for param in params(method) {
                assert!(!types(param.schema).is_empty(), "{}.{} has a type", method.name(), param.name);
                // Every param the user must give has an example, so `help` shows a call that works.
                if param.fill(method.name()) == Fill::Required {
                    assert!(param.example().is_some(), "{}.{} has an example", method.name(), param.name);
                }
                if let Some(example) = param.example()
                    && param.name != "wallet_seed"
                {
                    assert_eq!(param.admits(&example), Ok(()), "{}.{}'s example fits", method.name(), param.name);
                }
            }
        }
    }

    #[test]
    fn typos_are_suggested_and_strangers_are_not() {
        assert_eq!(suggest("acounts"), Some("accounts"));
        assert_eq!(suggest("open-wallet"), Some("open_wallet"));
        assert_eq!(suggest("sing_message"), Some("sign_message"));
        assert_eq!(suggest("mnemonic"), Some("get_mnemonic"));
        assert_eq!(suggest("help"), None);
        assert_eq!(suggest("zzzzzzzz"), None);
        let refused = method("acounts").err().map(|f| f.message).unwrap_or_default();
        assert!(refused.contains("did you mean `accounts`?"), "{refused}");
    }

    #[test]
    fn list_and_help_come_from_the_table() {
        let list = list();
        assert_eq!(list.lines().filter(|l| !l.is_empty()).count(), METHODS.len() + 2, "{list}");
        assert!(list.contains("get_mnemonic") && list.contains("owner   [name] [password]"), "{list}");
        let signing = help("sign_message").unwrap_or_default();
        for part in ["role:   signer", "speed:  fast", "string (Bip32Path); required", "result: signature (object)"] {
            assert!(signing.contains(part), "{part} in {signing}");
        }
        assert!(
            signing.contains(r#"keyward call sign_message '{"message":"hello","path":"m/44h/0h/0h/0/0"}'"#),
            "{signing}"
        );
        let create = help("create_wallet").unwrap_or_default();
        assert!(create.contains("asked for twice"), "{create}");
        assert!(create.contains("0|16|20|24|28|32 (MnemonicLength)"), "{create}");
    }

    #[test]
    fn values_are_checked_by_type_and_enumeration() {
        let params = keyward_core::find_method("add_client").map(params).unwrap_or_default();
        let find = |name: &str| params.iter().find(|p| p.name == name).copied();
        let (role, uid) = (find("role"), find("uid"));
        assert!(role.is_some() && uid.is_some(), "add_client has role and uid");
        let (Some(role), Some(uid)) = (role, uid) else { return };
        assert_eq!(role.admits(&Value::from("signer")), Ok(()));
        assert!(role.admits(&Value::from("admin")).is_err_and(|e| e.contains("one of reader|signer|owner")));
        assert!(role.admits(&Value::from(3)).is_err_and(|e| e.contains("not integer")));
        assert_eq!(uid.admits(&Value::Null), Ok(()));
        assert!(uid.admits(&Value::from("1000")).is_err_and(|e| e.contains("'uid' must be integer|null")));
    }
}
