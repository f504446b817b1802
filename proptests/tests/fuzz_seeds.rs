//! The fuzz seed corpora in `spec/vectors/fuzz-seeds/<target>/`, made from the shared vectors
//! (`grin-v3.json`, `transcript.json`) and a few scripted runs. This test checks that the committed
//! files are what this code makes; `KEYWARD_WRITE_SEEDS=1 cargo test -p keyward-proptests --test
//! fuzz_seeds` rewrites them. `fuzz/ci.sh` copies them into `fuzz/corpus/<target>/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use keyward_core::crypto::{Entropy, Password};
use keyward_core::store::{KdfParams, SeedRecord};
use keyward_proptests::decode::{decode_ops, encode_ops};
use keyward_proptests::model::{Call, CreateKind, Form, Garbage, Op, Tamper, TokenMethod, TokenSel};
use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn vectors(name: &str) -> Value {
    let text = std::fs::read_to_string(root().join("spec/vectors").join(name)).expect("vector file");
    serde_json::from_str(&text).expect("vector JSON")
}

fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serializes")
}

/// Replaces every token value in a JSON value with the `inner_request` placeholder.
fn placeholder_tokens(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if key == "token" && value.is_string() {
                    *value = json!("$TOKEN");
                } else {
                    placeholder_tokens(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(placeholder_tokens),
        _ => {}
    }
}

fn scripts() -> Vec<(&'static str, Vec<Op>)> {
    let call = |c, call| Op::Call { c, call, form: Form::Named };
    let token = |method, token| Call::Token { method, token };
    let create = Call::Create { name: 0, kind: CreateKind::Random(0), pw: 0 };
    let open = Call::Open { name: 0, pw: 0 };
    vec![
        (
            "lifecycle",
            vec![
                Op::Init { c: 0, bad_key: false },
                call(0, create),
                call(0, open),
                call(0, token(TokenMethod::Accounts, TokenSel::Issued(0))),
                call(0, token(TokenMethod::CreateAccount(0), TokenSel::Issued(0))),
                call(0, token(TokenMethod::Sign(1), TokenSel::Issued(0))),
                call(0, Call::Mnemonic { name: 0, pw: 0 }),
                call(0, Call::ChangePassword { name: 0, old: 0, new: 1 }),
                call(0, Call::Close { name: 0 }),
                call(0, token(TokenMethod::Accounts, TokenSel::Issued(0))),
                call(0, Call::Delete { name: 0, pw: 1 }),
            ],
        ),
        (
            "replay-tamper",
            vec![
                Op::Init { c: 1, bad_key: false },
                call(1, Call::Create { name: 1, kind: CreateKind::Restore { zero_len: true }, pw: 2 }),
                Op::Replay { c: 1, back: 0, hint: true },
                Op::Tamper {
                    c: 1,
                    call: Call::Open { name: 1, pw: 2 },
                    how: Tamper::FlipCipher(7),
                    then_original: true,
                },
                Op::Tamper {
                    c: 1,
                    call: Call::Delete { name: 1, pw: 2 },
                    how: Tamper::TruncateCipher { short: true, n: 3 },
                    then_original: false,
                },
                Op::Replay { c: 1, back: 0, hint: false },
                call(1, token(TokenMethod::PublicKey(0), TokenSel::Upper(0))),
            ],
        ),
        (
            "sessions-time",
            vec![
                Op::Init { c: 0, bad_key: false },
                Op::Init { c: 1, bad_key: false },
                Op::Init { c: 2, bad_key: false },
                Op::CrossSend { from: 0, to: 1, call: Call::TopDir },
                call(2, Call::ImportGrin { name: 0, right_pw: true }),
                call(2, Call::Open { name: 0, pw: 3 }),
                Op::Advance(3_999),
                Op::Init { c: 0, bad_key: false },
                call(1, Call::Reinit { bad_key: false }),
                Op::Advance(6_000),
                Op::Timeout,
                call(2, token(TokenMethod::Accounts, TokenSel::Issued(0))),
            ],
        ),
        (
            "store-failures",
            vec![
                Op::PlantLegacy { dir: 0, name: 0, pw: 1 },
                Op::Init { c: 0, bad_key: false },
                Op::ArmFailure(0),
                call(0, Call::Open { name: 0, pw: 1 }),
                Op::ArmFailure(0),
                call(0, Call::ChangePassword { name: 0, old: 1, new: 2 }),
                call(0, Call::Open { name: 0, pw: 1 }),
                Op::ArmFailure(1),
                call(0, Call::CreateConfig { valid: true }),
                call(0, Call::Delete { name: 0, pw: 1 }),
                call(0, Call::SetDir(1)),
                call(0, Call::ListWallets),
                Op::Garbage(Garbage::RandomEnvelope { len: 40 }),
                Op::Shutdown,
            ],
        ),
    ]
}

fn seeds() -> BTreeMap<String, Vec<u8>> {
    let mut seeds = BTreeMap::new();
    let mut add = |target: &str, name: String, data: Vec<u8>| {
        seeds.insert(format!("{target}/{name}"), data);
    };
    let transcript = vectors("transcript.json");
    let grin = vectors("grin-v3.json");
    let steps = transcript["steps"].as_array().expect("steps");
    for (i, step) in steps.iter().enumerate() {
        let method = step["method"].as_str().unwrap_or("step").replace(' ', "-");
        if let Some(request) = step["request"].as_str() {
            add("server_handle", format!("transcript-{i:02}-{method}.json"), request.as_bytes().to_vec());
        }
        if let Some(params) = step.get("params") {
            let mut inner = json!({"jsonrpc": "2.0", "method": step["method"], "id": i, "params": params});
            placeholder_tokens(&mut inner);
            add("inner_request", format!("transcript-{i:02}-{method}.json"), bytes(&inner));
        }
    }
    for (i, envelope) in grin["envelope"].as_array().expect("envelope vectors").iter().enumerate() {
        let outer = json!({"jsonrpc": "2.0", "method": "encrypted_request_v3", "id": 1,
            "params": {"nonce": envelope["nonce"], "body_enc": envelope["body_enc"]}});
        add("server_handle", format!("grin-envelope-{i}.json"), bytes(&outer));
        if let Some(plaintext) = envelope["plaintext"].as_str()
            && let Ok(mut inner) = serde_json::from_str::<Value>(plaintext)
        {
            placeholder_tokens(&mut inner);
            add("inner_request", format!("grin-envelope-{i}.json"), bytes(&inner));
        }
    }
    add("server_handle", "not-json".into(), b"{not json".to_vec());
    add("server_handle", "array".into(), b"[1,2]".to_vec());
    add("inner_request", "batch.json".into(), br#"[{"jsonrpc":"2.0","method":"accounts","id":1,"params":{"token":"$TOKEN"}},{"jsonrpc":"2.0","method":"get_public_key","id":2,"params":["$TOKEN","m/0"]}]"#.to_vec());
    add("inner_request", "list.json".into(), br#"{"jsonrpc":"2.0","method":"list_wallets","id":1}"#.to_vec());
    for (i, file) in grin["grin_wallet_seed"].as_array().expect("grin seeds").iter().enumerate() {
        let seed = json!({"encrypted_seed": file["encrypted_seed"], "salt": file["salt"], "nonce": file["nonce"]});
        add("seed_parsing", format!("grin-wallet-seed-{i}.json"), bytes(&seed));
    }
    let entropy = Entropy::from_bytes((0u8..32).collect()).expect("32 bytes");
    for (name, kdf) in [
        ("test-kdf", KdfParams::INSECURE_FOR_TESTS),
        ("legacy-kdf", keyward_proptests::model::LEGACY_KDF),
        ("default-kdf", KdfParams::DEFAULT),
    ] {
        let record = SeedRecord::seal(&entropy, &Password::from("pw"), kdf, [1; 16], [2; 12]).expect("valid");
        add("seed_parsing", format!("record-{name}.json"), record.to_bytes());
    }
    for (name, ops) in scripts() {
        let data = encode_ops(&ops);
        assert_eq!(decode_ops(&data), ops, "the {name} script round-trips");
        add("op_sequence", format!("{name}.bin"), data);
    }
    let codec_inputs: [(&str, &[u8]); 6] = [
        ("nonce", b"000102030405060708090a0b"),
        ("body-enc", b"AAAAAAAAAAAAAAAAAAAAAA=="),
        ("public-key", b"03b3c18c9a38783d105e238953b1638b021ba7456d87a5c085b3bdb75777b4c490"),
        ("path", b"m/44'/0'/0h/0/1000000000"),
        ("session-id", b"000102030405060708090a0b0c0d0e0f"),
        ("init-answer", br#"{"id":1,"jsonrpc":"2.0","result":{"Ok":"02f8c28dca5c4eb5844c94d2794fb08ff9f88e273beede99b9e0808e636d7bf0c8"}}"#),
    ];
    for (name, data) in codec_inputs {
        add("codecs", name.into(), data.to_vec());
    }
    // The store's records, as it writes them: registry entries and a short audit chain.
    let clients = [
        ("default", keyward_core::Role::Owner, keyward_core::Identity::Cert { spki_sha256: [0x5a; 32] }, None),
        ("dashboard", keyward_core::Role::Reader, keyward_core::Identity::Cert { spki_sha256: [0x17; 32] }, Some(2)),
        ("uid-1000", keyward_core::Role::Signer, keyward_core::Identity::Uid { uid: 1000 }, None),
    ];
    for (i, (name, role, identity, revoked)) in clients.into_iter().enumerate() {
        let record = keyward_core::ClientRecord {
            name: name.into(),
            role,
            identity,
            created_unix_ms: 1,
            revoked_unix_ms: revoked,
        };
        add("store_records", format!("client-{}.json", i + 1), record.to_bytes());
    }
    let events = [
        ("default", "create_wallet", Some("w"), "ok", 1),
        ("default", "open_wallet", Some("w"), "ok", 1),
        ("dashboard", "get_mnemonic", Some("w"), "forbidden", 3),
        ("uid-1000", "sign_message", Some("dir/w"), "ok", 40),
    ];
    let mut prev = [0u8; 32];
    for (i, (principal, method, wallet, outcome, count)) in events.into_iter().enumerate() {
        let event = keyward_core::audit::AuditEvent {
            principal: principal.into(),
            method: method.into(),
            wallet: wallet.map(str::to_owned),
            target: None,
            outcome: outcome.into(),
            count,
            span: None,
        };
        let record = keyward_core::audit::AuditRecord::seal(prev, i as u64 + 1, 1_790_000_000_000 + i as u64, event);
        prev = record.hash;
        add("store_records", format!("audit-{}.json", i + 1), record.to_bytes());
    }
    // The framings carry the transcript's requests, as a browser and a Unix client send them.
    let requests: Vec<&[u8]> = steps.iter().filter_map(|s| s["request"].as_str()).map(str::as_bytes).take(4).collect();
    let native: Vec<u8> = requests.iter().flat_map(|r| [&(r.len() as u32).to_ne_bytes()[..], r].concat()).collect();
    add("native_framing", "transcript-frames.bin".into(), [&[0x3f][..], &native].concat());
    add("native_framing", "cut-frame.bin".into(), [&[0x0f][..], &native[..native.len() - 3]].concat());
    let stream: Vec<u8> = requests.iter().flat_map(|r| [&(r.len() as u32).to_be_bytes()[..], r].concat()).collect();
    add("stream_framing", "transcript-frames.bin".into(), [&[0xff][..], &stream].concat());
    // The pairing messages (spec/pairing.md), with fixed bytes where SPAKE2 puts random ones.
    let b64 = |bytes: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes);
    let point = [&[0x41][..], &[0x58; 32]].concat();
    let messages = [
        ("hello", json!({"keyward_pair": 1, "id": "7K", "spake": b64(&point)})),
        ("reply", json!({"spake": b64(&[&[0x42][..], &[0x66; 32]].concat()), "confirm": b64(&[7; 32])})),
        ("finish", json!({"confirm": b64(&[9; 32]), "sealed": b64(&[1; 80])})),
        ("done", json!({"sealed": b64(&[2; 400])})),
        ("refusal", json!({"error": "wrong code"})),
    ];
    for (name, message) in messages {
        add("pairing_messages", format!("{name}.json"), bytes(&message));
    }
    seeds
}

#[test]
fn committed_seeds_are_current() {
    let dir = root().join("spec/vectors/fuzz-seeds");
    let write = std::env::var_os("KEYWARD_WRITE_SEEDS").is_some();
    let mut stale = Vec::new();
    for (name, data) in seeds() {
        let path = dir.join(&name);
        if write {
            std::fs::create_dir_all(path.parent().expect("in a folder")).expect("mkdir");
            std::fs::write(&path, &data).expect("write");
        } else if std::fs::read(&path).ok().as_ref() != Some(&data) {
            stale.push(name);
        }
    }
    assert!(stale.is_empty(), "seed files out of date (rerun with KEYWARD_WRITE_SEEDS=1): {stale:?}");
}
