//! The params of `keyward call`: what the user gave, checked against the method table and the
//! OpenRPC document before anything is asked or sent, then filled in (see [`crate::discover::Fill`]):
//! nullable params with `null`, `mnemonic_length` with 32 (or `--words`), `chain_type` with
//! `Mainnet`, `token` from `--token`/`KEYWARD_TOKEN`, and passwords from a prompt or, with
//! `--password-stdin`, one line each from standard input. Passwords are never taken from the
//! command line; a password being set is asked twice at a prompt and may be empty only with
//! `--allow-empty-password`.

use std::io::BufRead;

use anyhow::Context;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::discover::{self, Fill};
use crate::failure::{Exit, Failure};

/// What the command line says about filling params in.
#[derive(Default)]
pub struct FillOptions {
    /// Read passwords from standard input, one line each, instead of prompting.
    pub password_stdin: bool,
    /// Accept an empty password where one is being set.
    pub allow_empty_password: bool,
    /// `--words N`: the recovery phrase's length in words (sets `mnemonic_length`).
    pub words: Option<u8>,
    /// `--token` / `KEYWARD_TOKEN`.
    pub token: Option<Zeroizing<String>>,
    /// `--unlisted`: the method is not in the table (an embedder's): send the params as given.
    pub unlisted: bool,
    /// `--restore`: create_wallet's recovery phrase is asked for (never taken from the command line).
    pub restore: bool,
}

impl std::fmt::Debug for FillOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FillOptions")
            .field("password_stdin", &self.password_stdin)
            .field("allow_empty_password", &self.allow_empty_password)
            .field("words", &self.words)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("unlisted", &self.unlisted)
            .field("restore", &self.restore)
            .finish()
    }
}

/// Reads passwords from a prompt or from standard input.
pub struct Passwords {
    from_stdin: bool,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords").field("from_stdin", &self.from_stdin).finish()
    }
}

/// The message for a terminal that cannot be prompted on (none, or not readable).
const NO_TERMINAL: &str =
    "there is no terminal to ask for the password: use --password-stdin (one line per password on standard input)";

impl Passwords {
    /// A source: standard input lines, or the terminal with echo off.
    pub fn new(from_stdin: bool) -> Self {
        Self { from_stdin }
    }

    fn read(&mut self, prompt: &str) -> anyhow::Result<Zeroizing<String>> {
        if self.from_stdin {
            let mut line = Zeroizing::new(String::new());
            let read = std::io::stdin().lock().read_line(&mut line).context("cannot read a password from stdin")?;
            if read == 0 {
                return Err(Failure::usage("standard input ended before every password was read").into());
            }
            return Ok(Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned()));
        }
        match rpassword::prompt_password(prompt) {
            Ok(password) => Ok(Zeroizing::new(password)),
            // No controlling terminal (ENXIO), or one that is not a terminal (ENOTTY).
            Err(error) if matches!(error.raw_os_error(), Some(libc::ENXIO | libc::ENOTTY)) => {
                Err(Failure::usage(NO_TERMINAL).into())
            }
            Err(error) => Err(anyhow::Error::new(error).context(Failure::usage(NO_TERMINAL))),
        }
    }

    /// A password being set: asked twice at a prompt (once from standard input), refused when
    /// empty unless `allow_empty`.
    fn read_new(&mut self, prompt: &str, allow_empty: bool) -> anyhow::Result<Zeroizing<String>> {
        let first = self.read(prompt)?;
        if !self.from_stdin {
            let again = self.read("Repeat it: ")?;
            if *again != *first {
                return Err(Failure::usage("the two passwords differ: nothing was sent; try again").into());
            }
        }
        if first.is_empty() && !allow_empty {
            return Err(Failure::usage(
                "an empty password protects nothing: type one, or pass --allow-empty-password if you mean it",
            )
            .into());
        }
        Ok(first)
    }
}

/// `--words N` as `mnemonic_length` (bytes of entropy: 4 bytes per 3 words).
pub fn words_to_length(words: u8) -> Result<u8, Failure> {
    match words {
        12 | 15 | 18 | 21 | 24 => Ok(words / 3 * 4),
        other => Err(Failure::usage(format!("--words must be 12, 15, 18, 21 or 24, not {other}"))),
    }
}

fn parse_given(given: Option<&str>) -> Result<Map<String, Value>, Failure> {
    let Some(text) = given else { return Ok(Map::new()) };
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Failure::usage("PARAMS must be a JSON object, e.g. '{\"name\":\"demo\"}'")),
        Err(error) => Err(Failure::usage(format!("PARAMS is not JSON ({error}); e.g. '{{\"name\":\"demo\"}}'"))),
    }
}

/// Params checked against the table, not yet filled in: [`Checked::fill`] asks for what is
/// missing.
#[derive(Debug)]
pub struct Checked {
    method: String,
    given: Map<String, Value>,
    /// The method's row, `None` for `--unlisted`.
    table: Option<&'static keyward_core::Method>,
}

/// Builds the params of `method` from what the user gave: [`check`], then [`Checked::fill`].
pub fn fill_params(
    method: &str,
    given: Option<&str>,
    options: &FillOptions,
    passwords: &mut Passwords,
) -> anyhow::Result<Value> {
    check(method, given, options)?.fill(options, passwords)
}

/// Every check of what the user gave, before anything is asked: the method, the names, the types,
/// what is missing.
pub fn check(method: &str, given: Option<&str>, options: &FillOptions) -> anyhow::Result<Checked> {
    let mut given = parse_given(given)?;
    if options.unlisted {
        // An embedder's method: send what was given, with the token if one is set.
        if let Some(token) = &options.token
            && !given.contains_key("token")
        {
            given.insert("token".into(), Value::String(token.to_string()));
        }
        return Ok(Checked { method: method.to_owned(), given, table: None });
    }
    let table = discover::method(method)?;
    let params = discover::params(table);
    for (name, _) in &given {
        let Some(param) = params.iter().find(|p| p.name == name) else {
            let names = table.params().join(", ");
            let names = if names.is_empty() { "none".to_owned() } else { names };
            return Err(Failure::usage(format!("`{method}` takes no param '{name}' (its params: {names})")).into());
        };
        if matches!(param.fill(method), Fill::Prompt { .. }) {
            return Err(Failure::usage(format!(
                "passwords are not taken from the command line: leave '{name}' out and you will be asked for it"
            ))
            .into());
        }
    }
    if given.get("mnemonic").is_some_and(Value::is_string) {
        return Err(Failure::usage(
            "a recovery phrase is not taken from the command line (other local users can read it there): leave \
             'mnemonic' out and pass --restore to be asked for it (or to read it from standard input with \
             --password-stdin)",
        )
        .into());
    }
    if options.restore {
        if !table.params().contains(&"mnemonic") {
            return Err(Failure::usage(format!("--restore is for create_wallet, not `{method}`")).into());
        }
        if options.words.is_some() {
            return Err(Failure::usage("--restore takes the phrase's own length: leave --words out").into());
        }
        // With a phrase, 0 means "its own length".
        given.entry("mnemonic_length").or_insert(Value::from(0));
    }
    if let Some(words) = options.words {
        if !table.params().contains(&"mnemonic_length") {
            return Err(Failure::usage(format!("--words is for create_wallet, not `{method}`")).into());
        }
        if given.contains_key("mnemonic_length") {
            return Err(Failure::usage("give --words or mnemonic_length, not both").into());
        }
        given.insert("mnemonic_length".into(), Value::from(words_to_length(words)?));
    }
    // Every check before the first prompt.
    for param in &params {
        match (given.get(param.name), param.fill(method)) {
            (Some(value), _) => param.admits(value).map_err(Failure::usage)?,
            (None, Fill::Required) => {
                return Err(Failure::usage(format!(
                    "`{method}` needs '{}' ({}); e.g. {}",
                    param.name,
                    param.type_text(),
                    discover::example(table)
                ))
                .into());
            }
            (None, Fill::Token) if options.token.is_none() => {
                return Err(Failure::usage(format!(
                    "`{method}` needs a token: open the wallet (`keyward call --raw open_wallet '{{\"name\":\"demo\"}}'`) \
                     and set KEYWARD_TOKEN to what it prints, or pass --token"
                ))
                .into());
            }
            (None, _) => {}
        }
    }
    Ok(Checked { method: method.to_owned(), given, table: Some(table) })
}

impl Checked {
    /// The params, with what is missing filled in (prompts included).
    pub fn fill(mut self, options: &FillOptions, passwords: &mut Passwords) -> anyhow::Result<Value> {
        let Some(table) = self.table else { return Ok(Value::Object(self.given)) };
        let method = self.method.as_str();
        let params = discover::params(table);
        let given = &mut self.given;
        let mut filled = Map::new();
        for param in &params {
            let value = match given.remove(param.name) {
                None if param.name == "mnemonic" && options.restore => {
                    Value::String(passwords.read("Recovery phrase (typed, not shown): ")?.to_string())
                }
                Some(Value::String(path)) if param.name == "wallet_seed" && path.starts_with('@') => {
                    let text =
                        std::fs::read_to_string(&path[1..]).with_context(|| format!("cannot read {}", &path[1..]))?;
                    Value::String(text)
                }
                Some(value) => value,
                None => match param.fill(method) {
                    Fill::Prompt { prompt, new: true } => {
                        Value::String(passwords.read_new(prompt, options.allow_empty_password)?.to_string())
                    }
                    Fill::Prompt { prompt, new: false } => Value::String(passwords.read(prompt)?.to_string()),
                    Fill::Token => Value::String(options.token.as_ref().map(|t| t.to_string()).unwrap_or_default()),
                    Fill::Default(value) => value,
                    Fill::Required => Value::Null,
                },
            };
            filled.insert(param.name.to_owned(), value);
        }
        Ok(Value::Object(filled))
    }
}

/// What to say on standard error after `method` succeeded with `params`, if anything.
pub fn after_success(method: &str, params: &Value) -> Option<String> {
    if method != "create_wallet" {
        return None;
    }
    let name = params["name"].as_str();
    let shown = name.unwrap_or("default");
    if params["mnemonic"].is_string() {
        return Some(format!("keyward: restored wallet `{shown}` from its recovery phrase"));
    }
    let named = name.map_or_else(String::new, |name| format!(" '{}'", serde_json::json!({ "name": name })));
    Some(format!(
        "keyward: created wallet `{shown}`. Its recovery phrase is the only way to restore it if this data directory \
         is lost: show it now, write it on paper and keep that offline:\n  keyward call get_mnemonic{named}"
    ))
}

/// Whether `error` is a failure this module raised as a usage error (for tests).
pub fn is_usage(error: &anyhow::Error) -> bool {
    Failure::exit_of(error) == Exit::Usage
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(method: &str, given: &str, options: &FillOptions) -> anyhow::Result<Value> {
        // No test here reaches a prompt: every check comes before it.
        fill_params(method, Some(given), options, &mut Passwords::new(true))
    }

    fn message(result: anyhow::Result<Value>) -> String {
        match result {
            Ok(value) => format!("unexpectedly filled: {value}"),
            Err(error) => {
                assert!(is_usage(&error), "a usage error: {error:#}");
                format!("{error:#}")
            }
        }
    }

    #[test]
    fn every_check_comes_before_a_prompt() {
        let none = FillOptions::default();
        assert!(message(fill("acounts", "{}", &none)).contains("did you mean `accounts`?"));
        assert!(message(fill("open_wallet", r#"{"nam":"demo"}"#, &none)).contains("takes no param 'nam'"));
        assert!(message(fill("open_wallet", r#"{"name":3}"#, &none)).contains("'name' must be string|null"));
        assert!(message(fill("open_wallet", r#"{"password":"x"}"#, &none)).contains("not taken from the command"));
        assert!(message(fill("sign_message", r#"{"path":"m"}"#, &none)).contains("needs a token"));
        let token = FillOptions { token: Some(Zeroizing::new("00".repeat(32))), ..FillOptions::default() };
        let missing = message(fill("sign_message", r#"{"path":"m"}"#, &token));
        assert!(missing.contains("needs 'message' (string)"), "{missing}");
        assert!(message(fill("accounts", "[1]", &none)).contains("must be a JSON object"));
        assert!(message(fill("accounts", "{", &none)).contains("PARAMS is not JSON"));
        let words = FillOptions { words: Some(13), ..FillOptions::default() };
        assert!(message(fill("create_wallet", "{}", &words)).contains("12, 15, 18, 21 or 24"));
        let words = FillOptions { words: Some(12), ..FillOptions::default() };
        assert!(message(fill("open_wallet", "{}", &words)).contains("--words is for create_wallet"));
        let phrase = r#"{"mnemonic":"abandon abandon about"}"#;
        assert!(message(fill("create_wallet", phrase, &none)).contains("pass --restore to be asked for it"));
        let restore = FillOptions { restore: true, ..FillOptions::default() };
        assert!(message(fill("open_wallet", "{}", &restore)).contains("--restore is for create_wallet"));
        let both = FillOptions { restore: true, words: Some(12), ..FillOptions::default() };
        assert!(message(fill("create_wallet", "{}", &both)).contains("leave --words out"));
    }

    #[test]
    fn defaults_and_the_token_are_filled_in() {
        let token = FillOptions { token: Some(Zeroizing::new("ab".repeat(32))), ..FillOptions::default() };
        let filled = fill("sign_message", r#"{"path":"m/0","message":"hi"}"#, &token).ok();
        assert_eq!(filled, Some(serde_json::json!({"token": "ab".repeat(32), "path": "m/0", "message": "hi"})));
        let filled = fill("audit_log", "{}", &FillOptions::default()).ok();
        assert_eq!(filled, Some(serde_json::json!({"after": null, "limit": null})));
        let unlisted = FillOptions { unlisted: true, ..token };
        let filled = fill("app_echo", r#"{"x":1}"#, &unlisted).ok();
        assert_eq!(filled, Some(serde_json::json!({"x": 1, "token": "ab".repeat(32)})));
    }

    #[test]
    fn words_count_four_bytes_per_three_words() {
        let lengths: Vec<u8> = [12, 15, 18, 21, 24].into_iter().filter_map(|w| words_to_length(w).ok()).collect();
        assert_eq!(lengths, [16, 20, 24, 28, 32]);
    }

    #[test]
    fn a_new_wallet_is_followed_by_the_backup_advice() {
        let advice = after_success("create_wallet", &serde_json::json!({"name": "demo", "mnemonic": null}));
        assert!(advice.is_some_and(|a| a.contains(r#"keyward call get_mnemonic '{"name":"demo"}'"#)));
        let restored = after_success("create_wallet", &serde_json::json!({"name": null, "mnemonic": "abandon …"}));
        assert!(restored.is_some_and(|a| a.contains("restored wallet `default`")));
        assert_eq!(after_success("open_wallet", &serde_json::json!({})), None);
    }
}
