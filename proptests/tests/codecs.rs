//! Properties of the codecs: round trips, and any input gives an error value, never a panic.
//! `PROPTEST_CASES` sets the number of cases (256 by default).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use keyward_core::crypto::{self, Cipher, KeyError, OpenError};
use keyward_core::crypto::{Entropy, Password, SharedKey};
use keyward_core::crypto::{HARDENED, KeyPathError, MAX_DEPTH};
use keyward_core::store::{GrinWalletSeed, KdfParams, SeedRecord, SeedRecordError};
use keyward_core::{Incoming, MemoryStore, Server};
use keyward_testkit::test_config;
use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{Value, json};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "[a-z0-9_$ ]{0,12}".prop_map(Value::from),
        "[0-9a-f]{24,66}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec(("[a-z_]{1,10}", inner), 0..4).prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

fn server() -> Server {
    Server::new(test_config(), Box::new(MemoryStore::new()), [9; 32])
}

fn record(password: &str) -> SeedRecord {
    let entropy = Entropy::from_bytes((0u8..16).collect()).expect("16 bytes");
    SeedRecord::seal(&entropy, &Password::from(password), KdfParams::INSECURE_FOR_TESTS, [1; 16], [2; 12])
        .expect("valid parameters")
}

proptest! {
    #[test]
    fn seal_open_round_trip(
        key in any::<[u8; 32]>(),
        nonce in any::<[u8; 12]>(),
        other in any::<[u8; 12]>(),
        plaintext in vec(any::<u8>(), 0..300),
        flip in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let cipher = Cipher::new(&SharedKey::from_bytes(key));
        let body = cipher.seal(&nonce, &plaintext);
        let opened = cipher.open(&nonce, &body).expect("opens");
        prop_assert_eq!(opened.as_slice(), plaintext.as_slice());
        let raw = BASE64.decode(&body).expect("base64");
        prop_assert_eq!(raw.len(), plaintext.len() + crypto::TAG_LEN);
        let mut damaged = raw.clone();
        damaged[flip.index(raw.len())] ^= 1 << (flip.index(8));
        prop_assert_eq!(cipher.open_bytes(&nonce, &damaged), Err(OpenError::Authentication));
        let cut = cut.index(raw.len());
        let expected = if cut < crypto::TAG_LEN { OpenError::Truncated } else { OpenError::Authentication };
        prop_assert_eq!(cipher.open_bytes(&nonce, &raw[..cut]), Err(expected));
        if other != nonce {
            prop_assert_eq!(cipher.open(&other, &body), Err(OpenError::Authentication));
        }
        let mut wrong_key = key;
        wrong_key[0] ^= 1;
        prop_assert!(Cipher::new(&SharedKey::from_bytes(wrong_key)).open(&nonce, &body).is_err());
    }

    #[test]
    fn handle_answers_any_bytes(body in vec(any::<u8>(), 0..400)) {
        let server = server();
        let out = server.handle(Incoming { body: &body, session: None, recent: None, principal: &keyward_core::Principal::local(), now_ms: 5 });
        let answer: Value = serde_json::from_slice(&out.body).expect("the answer is JSON");
        prop_assert_eq!(&answer["jsonrpc"], "2.0");
        prop_assert!(answer["error"]["code"].is_i64(), "{}", answer);
        prop_assert!(!out.created_session);
        prop_assert_eq!(server.session_count(), 0);
    }

    #[test]
    fn handle_answers_any_request_object(
        method in prop_oneof![
            Just("init_secure_api".to_owned()),
            Just("encrypted_request_v3".to_owned()),
            Just("open_wallet".to_owned()),
            "[a-z_]{0,20}",
        ],
        params in proptest::option::of(json_value()),
        id in json_value(),
    ) {
        let server = server();
        let mut request = json!({"jsonrpc": "2.0", "method": method, "id": id});
        if let Some(params) = params {
            request["params"] = params;
        }
        let body = serde_json::to_vec(&request).expect("serializes");
        let out = server.handle(Incoming { body: &body, session: None, recent: None, principal: &keyward_core::Principal::local(), now_ms: 5 });
        let answer: Value = serde_json::from_slice(&out.body).expect("the answer is JSON");
        // Compared as parsed from the same text (serde_json's float parsing does not round-trip).
        let sent: Value = serde_json::from_slice(&body).expect("parses");
        // A string, number or null id is echoed; any other (an array, an object) becomes null.
        let expected = if sent["id"].is_string() || sent["id"].is_number() { sent["id"].clone() } else { Value::Null };
        prop_assert_eq!(&answer["id"], &expected, "the id is echoed when it is a valid JSON-RPC id");
        if answer.get("result").is_some() {
            prop_assert_eq!(method.as_str(), "init_secure_api");
            prop_assert!(out.created_session);
        } else {
            prop_assert!(!out.created_session);
            prop_assert!([-32600, -32602, -32001, -32002].contains(&answer["error"]["code"].as_i64().unwrap_or(0)), "{}", answer);
        }
    }

    #[test]
    fn seed_record_from_any_bytes(bytes in vec(any::<u8>(), 0..400)) {
        match SeedRecord::from_bytes(&bytes) {
            Ok(record) => prop_assert_eq!(SeedRecord::from_bytes(&record.to_bytes()), Ok(record)),
            Err(e) => prop_assert_eq!(e, SeedRecordError::Malformed),
        }
    }

    #[test]
    fn damaged_seed_records_never_open(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let original = record("pw");
        let mut bytes = original.to_bytes();
        let at = at.index(bytes.len());
        bytes[at] = byte;
        if let Ok(parsed) = SeedRecord::from_bytes(&bytes) {
            let kdf = parsed.kdf;
            if kdf.m_cost_kib <= 4096 && kdf.t_cost <= 4 && kdf.p_cost <= 4 && parsed.open(&Password::from("pw")).is_ok() {
                // Only an edit that changes nothing (say, hex case) may still open.
                prop_assert_eq!(parsed, original);
            }
        }
    }

    #[test]
    fn seed_record_parameters_are_bounded(m in any::<u32>(), t in any::<u32>(), p in any::<u32>()) {
        let text = format!(
            r#"{{"version":1,"kdf":{{"algorithm":"argon2id","m_cost_kib":{m},"t_cost":{t},"p_cost":{p}}},"salt":"{}","nonce":"{}","ciphertext":"{}"}}"#,
            "00".repeat(16), "00".repeat(12), "00".repeat(32),
        );
        if let Ok(record) = SeedRecord::from_bytes(text.as_bytes()) {
            prop_assert!(record.kdf.m_cost_kib <= KdfParams::MAX_M_COST_KIB);
            prop_assert!(record.kdf.t_cost <= KdfParams::MAX_T_P && record.kdf.p_cost <= KdfParams::MAX_T_P);
        }
    }

    #[test]
    fn grin_seed_from_any_input(
        bytes in vec(any::<u8>(), 0..300),
        seed in "[0-9a-f]{0,120}",
        salt in "[0-9a-f]{0,140}",
        nonce in "[0-9a-fx]{0,30}",
    ) {
        if let Ok(file) = GrinWalletSeed::from_bytes(&bytes) {
            let _ = file.open(&Password::from("testpass"));
        }
        let value = json!({"encrypted_seed": seed, "salt": salt, "nonce": nonce});
        let file = GrinWalletSeed::from_json(&value).expect("three strings parse");
        match file.open(&Password::from("testpass")) {
            Ok(entropy) => prop_assert!(Entropy::LENGTHS.contains(&entropy.expose().len())),
            Err(e) => prop_assert!(matches!(e, SeedRecordError::Malformed | SeedRecordError::WrongPassword)),
        }
    }

    #[test]
    fn nonce_rules(text in prop_oneof!["[0-9a-fA-F]{0,80}", ".{0,40}", "[0-9a-f]{1000,1030}"]) {
        let valid = (24..=1024).contains(&text.len()) && text.len() % 2 == 0 && text.bytes().all(|b| b.is_ascii_hexdigit());
        match crypto::parse_nonce(&text) {
            Ok(nonce) => {
                prop_assert!(valid, "accepted {text:?}");
                prop_assert_eq!(hex::decode(&text[..24]).expect("hex"), nonce.to_vec());
            }
            Err(e) => {
                prop_assert!(!valid, "refused {text:?}");
                prop_assert_eq!(e, OpenError::BadNonce);
            }
        }
    }

    #[test]
    fn body_enc_round_trip(bytes in vec(any::<u8>(), 0..200), text in ".{0,60}") {
        prop_assert_eq!(crypto::decode_body(&BASE64.encode(&bytes)), Ok(bytes));
        if let Err(e) = crypto::decode_body(&text) {
            prop_assert_eq!(e, OpenError::BadBase64);
        }
    }

    #[test]
    fn public_keys(secret in any::<[u8; 32]>(), text in prop_oneof!["[0-9a-f]{0,140}", ".{0,40}"]) {
        if let Ok(secret) = secp256k1::SecretKey::from_secret_bytes(secret) {
            let public = secp256k1::PublicKey::from_secret_key(&secret);
            prop_assert_eq!(crypto::parse_public_key(&hex::encode(public.serialize())), Ok(public));
            prop_assert_eq!(crypto::parse_public_key(&hex::encode(public.serialize_uncompressed())), Ok(public));
            prop_assert_eq!(crypto::parse_public_key(&hex::encode(&public.serialize()[1..])), Err(KeyError::Length(32)));
        }
        if let Ok(key) = crypto::parse_public_key(&text) {
            prop_assert!(text.len() == 66 || text.len() == 130);
            prop_assert_eq!(crypto::parse_public_key(&hex::encode(key.serialize())), Ok(key));
        }
    }

    #[test]
    fn key_paths(indexes in vec((0..HARDENED, any::<bool>(), any::<bool>()), 0..40), text in ".{0,40}") {
        let mut path = String::from("m");
        for (index, hardened, h) in &indexes {
            path += &format!("/{index}{}", if !hardened { "" } else if *h { "h" } else { "'" });
        }
        let expected: Vec<u32> = indexes.iter().map(|(i, hardened, _)| if *hardened { i | HARDENED } else { *i }).collect();
        if indexes.len() <= MAX_DEPTH {
            prop_assert_eq!(crypto::parse_path(&path), Ok(expected));
        } else {
            prop_assert_eq!(crypto::parse_path(&path), Err(KeyPathError::BadPath));
        }
        if let Ok(parsed) = crypto::parse_path(&text) {
            prop_assert!(parsed.len() <= MAX_DEPTH);
        }
    }
}
