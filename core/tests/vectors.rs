//! Every vector in `spec/vectors/` is its own test, and fails if one byte of it changes.
//!
//! * `grin-v3.json`: the shared Owner API V3 vectors (ECDH, envelope, grin `wallet.seed`, mnemonics).
//! * `transcript.json`: Keyward's own deterministic transcript: fixed rng seeds and clock → the exact
//!   request and answer bytes of a whole lifecycle. Regenerate it (only when the protocol changes on
//!   purpose) with `KEYWARD_WRITE_VECTORS=1 cargo test -p keyward-core --test vectors`.

use std::path::PathBuf;

use keyward_core::crypto::{self, Cipher};
use keyward_core::crypto::{Entropy, Password, SharedKey};
use keyward_core::store::GrinWalletSeed;
use keyward_core::{Client, MemoryStore};
use keyward_testkit::{Harness, test_config};
use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::{Value, json};

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors")
}

fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(vectors_dir().join(name)).expect("vector file is readable");
    serde_json::from_str(&text).expect("vector file is JSON")
}

fn text<'a>(vector: &'a Value, field: &str) -> &'a str {
    vector[field].as_str().unwrap_or_else(|| panic!("vector has no string '{field}'"))
}

fn bytes(vector: &Value, field: &str) -> Vec<u8> {
    hex::decode(text(vector, field)).expect("vector field is hex")
}

fn array<const N: usize>(vector: &Value, field: &str) -> [u8; N] {
    bytes(vector, field).try_into().expect("vector field has the right length")
}

fn check(condition: bool, what: String) -> Result<(), Failed> {
    if condition { Ok(()) } else { Err(what.into()) }
}

fn ecdh(vector: &Value) -> Result<(), Failed> {
    let client = secp256k1::SecretKey::from_secret_bytes(array(vector, "client_sk"))?;
    let server = secp256k1::SecretKey::from_secret_bytes(array(vector, "server_sk"))?;
    let client_pub = secp256k1::PublicKey::from_secret_key(&client);
    let server_pub = secp256k1::PublicKey::from_secret_key(&server);
    if vector.get("client_pub_compressed").is_some() {
        check(hex::encode(client_pub.serialize()) == text(vector, "client_pub_compressed"), "client pub".into())?;
        check(hex::encode(server_pub.serialize()) == text(vector, "server_pub_compressed"), "server pub".into())?;
    }
    let from_server = crypto::shared_key(&client_pub, &server);
    let from_client = crypto::shared_key(&server_pub, &client);
    check(from_server.expose()[..] == bytes(vector, "shared_key"), "server-side shared key".into())?;
    check(from_client.expose()[..] == bytes(vector, "shared_key"), "client-side shared key".into())
}

fn envelope_vector(vector: &Value) -> Result<(), Failed> {
    let cipher = Cipher::new(&SharedKey::from_bytes(array(vector, "shared_key")));
    let nonce = crypto::parse_nonce(text(vector, "nonce"))?;
    let sealed = cipher.seal(&nonce, text(vector, "plaintext").as_bytes());
    check(sealed == text(vector, "body_enc"), format!("sealed body_enc differs: {sealed}"))?;
    let opened = cipher.open(&nonce, text(vector, "body_enc"))?;
    check(opened.as_slice() == text(vector, "plaintext").as_bytes(), "opened plaintext differs".into())
}

fn grin_seed(vector: &Value) -> Result<(), Failed> {
    let password = Password::from(text(vector, "password"));
    let file = match vector.get("file") {
        Some(file) => file.clone(),
        None => json!({
            "encrypted_seed": vector["encrypted_seed"], "salt": vector["salt"], "nonce": vector["nonce"],
        }),
    };
    if vector.get("derived_key").is_some() {
        let key = GrinWalletSeed::derive_key(&password, &bytes(vector, "salt"));
        check(key[..] == bytes(vector, "derived_key"), "PBKDF2 key differs".into())?;
    }
    let entropy = GrinWalletSeed::from_json(&file)?.open(&password)?;
    if vector.get("entropy").is_some() {
        check(entropy.expose() == bytes(vector, "entropy"), "entropy differs".into())?;
    }
    if vector.get("mnemonic").is_some() {
        check(*crypto::mnemonic_of(&entropy) == text(vector, "mnemonic"), "mnemonic differs".into())?;
    }
    if vector.get("grin_master_secret").is_some() {
        let secret = crypto::grin_master_secret(&entropy);
        check(secret[..] == bytes(vector, "grin_master_secret"), "grin master secret differs".into())?;
    }
    let wrong = GrinWalletSeed::from_json(&file)?.open(&Password::from("not the password"));
    check(wrong.is_err(), "a wrong password decrypts".into())
}

fn mnemonic(vector: &Value) -> Result<(), Failed> {
    let entropy = crypto::entropy_of(text(vector, "mnemonic")).ok_or("mnemonic does not parse")?;
    check(entropy.expose() == bytes(vector, "entropy"), "entropy differs".into())?;
    let again = Entropy::from_bytes(bytes(vector, "entropy")).ok_or("entropy length")?;
    check(*crypto::mnemonic_of(&again) == text(vector, "mnemonic"), "mnemonic differs".into())?;
    let secret = crypto::grin_master_secret(&entropy);
    check(secret[..] == bytes(vector, "grin_master_secret"), "grin master secret differs".into())
}

/// The lifecycle of the transcript: (method, params). `$token` is replaced by the opened token.
fn transcript_calls() -> Vec<(&'static str, Value)> {
    vec![
        ("get_top_level_directory", json!({})),
        (
            "create_config",
            json!({"chain_type": "Mainnet", "wallet_config": null, "logging_config": null, "tor_config": null}),
        ),
        ("create_wallet", json!({"name": null, "mnemonic": null, "mnemonic_length": 16, "password": "correct horse"})),
        ("open_wallet", json!({"name": null, "password": "correct horse"})),
        ("accounts", json!({"token": "$token"})),
        ("create_account_path", json!({"token": "$token", "label": "savings"})),
        ("set_active_account", json!({"token": "$token", "label": "savings"})),
        ("get_public_key", json!({"token": "$token", "path": "m/44'/0'/0'/0/0"})),
        ("sign_message", json!({"token": "$token", "path": "m/44'/0'/0'/0/0", "message": "keyward"})),
        ("get_mnemonic", json!({"name": null, "password": "correct horse"})),
        ("change_password", json!({"name": null, "old": "correct horse", "new": "battery staple"})),
        ("open_wallet", json!({"name": null, "password": "correct horse"})),
        ("close_wallet", json!({"name": null})),
        ("accounts", json!({"token": "$token"})),
        ("delete_wallet", json!({"name": null, "password": "battery staple"})),
    ]
}

fn substitute(params: &Value, token: &Value) -> Value {
    match params {
        Value::Object(map) => Value::Object(
            map.iter().map(|(k, v)| (k.clone(), if v == "$token" { token.clone() } else { v.clone() })).collect(),
        ),
        other => other.clone(),
    }
}

/// Runs the transcript's lifecycle with fixed seeds; every step's exact bytes.
fn make_transcript() -> Value {
    let mut harness = Harness::new(Box::new(MemoryStore::new()));
    let mut client = Client::new([0x42; 32]);
    let mut steps = Vec::new();
    let request = client.init_request();
    let answer = harness.send(None, &request);
    client.handle_init_answer(&answer.body).expect("init answer");
    steps.push(json!({
        "method": "init_secure_api", "now_ms": harness.now_ms, "session_header": null,
        "request": String::from_utf8_lossy(&request), "answer": String::from_utf8_lossy(&answer.body),
    }));
    let mut token = Value::Null;
    let mut replay = None;
    for (method, params) in transcript_calls() {
        let params = substitute(&params, &token);
        let (request, pending) = client.seal(method, params.clone()).expect("seal");
        let answer = harness.send(None, &request);
        let inner = client.open_raw(pending, &answer.body).expect("answer opens");
        if method == "open_wallet" && inner["result"]["Ok"].is_string() {
            token = inner["result"]["Ok"].clone();
        }
        if method == "accounts" && replay.is_none() {
            replay = Some(request.clone());
        }
        steps.push(json!({
            "method": method, "params": params, "now_ms": harness.now_ms, "session_header": null,
            "request": String::from_utf8_lossy(&request), "answer": String::from_utf8_lossy(&answer.body),
            "inner_answer": inner,
        }));
    }
    let request = replay.expect("an accounts call was made");
    let answer = harness.send(None, &request);
    steps.push(json!({
        "method": "replay of the first accounts request", "now_ms": harness.now_ms, "session_header": null,
        "request": String::from_utf8_lossy(&request), "answer": String::from_utf8_lossy(&answer.body),
    }));
    json!({
        "about": "Keyward's deterministic transcript: server rng seed 0x5e×32, client rng seed 0x42×32, \
                  clock from 1000 ms +1 per request, Argon2id m=64 KiB t=1 p=1 (test parameters), \
                  data root /srv/keyward. Feeding each request to a fresh server, in order, gives each answer byte for byte.",
        "server_config": {"data_root": test_config().data_root, "kdf": test_config().kdf.m_cost_kib},
        "steps": steps,
    })
}

/// Feeds the recorded requests, in order, to a fresh server and compares answers up to `step`.
fn replay_transcript(recorded: &Value, step: usize) -> Result<(), Failed> {
    let fresh = make_transcript();
    let mut harness = Harness::new(Box::new(MemoryStore::new()));
    let steps = recorded["steps"].as_array().ok_or("no steps")?;
    for (i, recorded_step) in steps.iter().enumerate().take(step + 1) {
        let request = text(recorded_step, "request");
        let answer = harness.send(None, request.as_bytes());
        if i == step {
            check(
                String::from_utf8_lossy(&answer.body) == text(recorded_step, "answer"),
                format!("step {i}: the server's answer differs from the recorded one"),
            )?;
            check(fresh["steps"][i] == *recorded_step, format!("step {i}: the regenerated step differs"))?;
        }
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let transcript_path = vectors_dir().join("transcript.json");
    if std::env::var_os("KEYWARD_WRITE_VECTORS").is_some() {
        let text = serde_json::to_string_pretty(&make_transcript()).expect("JSON") + "\n";
        std::fs::write(&transcript_path, text).expect("write transcript.json");
    }
    let shared = load("grin-v3.json");
    let mut trials = Vec::new();
    type Check = fn(&Value) -> Result<(), Failed>;
    let groups: [(&str, Check); 4] =
        [("ecdh", ecdh), ("envelope", envelope_vector), ("grin_wallet_seed", grin_seed), ("mnemonic", mnemonic)];
    for (group, test) in groups {
        let vectors = shared[group].as_array().cloned().unwrap_or_default();
        assert!(!vectors.is_empty(), "no {group} vectors");
        for (i, vector) in vectors.into_iter().enumerate() {
            trials.push(Trial::test(format!("grin_v3::{group}_{i}"), move || test(&vector)));
        }
    }
    let recorded = load("transcript.json");
    let steps = recorded["steps"].as_array().map_or(0, Vec::len);
    assert!(steps > 10, "transcript.json has too few steps");
    for step in 0..steps {
        let recorded = recorded.clone();
        let name = format!("transcript::step_{step:02}_{}", text(&recorded["steps"][step], "method").replace(' ', "_"));
        trials.push(Trial::test(name, move || replay_transcript(&recorded, step)));
    }
    let whole = recorded.clone();
    trials.push(Trial::test("transcript::whole_file_regenerates", move || {
        check(make_transcript() == whole, "the regenerated transcript differs from transcript.json".into())
    }));
    libtest_mimic::run(&args, trials).exit();
}
