//! Interop vectors for other implementations of the pairing exchange (the TypeScript client in
//! `clients/ts` reproduces every value of them, `clients/ts/test/spake2.test.mjs`):
//! `spec/vectors/pairing.json`.
//!
//! Each exchange runs SPAKE2 (crate `spake2` 0.4, Ed25519) with FIXED randomness (64 bytes per
//! side: the bytes `Scalar::random` draws), then the key schedule, the confirmations and the sealed
//! messages of spec/pairing.md. `ClientStart`/`ServerExchange` draw their randomness from the OS, so
//! this test recomputes the exchange with the same crates and checks the recomputation against the
//! protocol module's public API both ways (our client against its server, its client against our
//! server): the vectors are what `keyward-pairing` speaks.
//!
//! The test fails when the committed file differs from what it computes;
//! `KEYWARD_WRITE_VECTORS=1 cargo test -p keyward-pairing --test ts_vectors` rewrites it.

#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

use std::path::{Path, PathBuf};

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hmac::{Hmac, Mac};
use keyward_pairing::Endpoints;
use keyward_pairing::code::PairingCode;
use keyward_pairing::protocol::{
    self, B64, ClientStart, Done, Finish, Granted, Hello, Outcome, Reply, Request, ServerExchange,
};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use spake2::{Ed25519Group, Identity, Password, Spake2};

const ID_CLIENT: &[u8] = b"keyward pairing client";
const ID_SERVER: &[u8] = b"keyward pairing server";
const AAD: &[u8] = b"keyward/pair/v1";

/// An RNG that hands out fixed bytes (and panics past them).
struct FixedRng {
    bytes: Vec<u8>,
    at: usize,
}

impl rand_core_06::RngCore for FixedRng {
    fn next_u32(&mut self) -> u32 {
        rand_core_06::impls::next_u32_via_fill(self)
    }

    fn next_u64(&mut self) -> u64 {
        rand_core_06::impls::next_u64_via_fill(self)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let end = self.at + dest.len();
        assert!(end <= self.bytes.len(), "spake2 drew more than the {} fixed bytes", self.bytes.len());
        dest.copy_from_slice(&self.bytes[self.at..end]);
        self.at = end;
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core_06::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rand_core_06::CryptoRng for FixedRng {}

/// 64 fixed bytes named by `label`: SHA-256(label ‖ 0) ‖ SHA-256(label ‖ 1).
fn fixed_bytes(label: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(64);
    for i in 0u8..2 {
        let mut hash = Sha256::new();
        hash.update(label.as_bytes());
        hash.update([i]);
        bytes.extend_from_slice(&hash.finalize());
    }
    bytes
}

fn rng(bytes: &[u8]) -> FixedRng {
    FixedRng { bytes: bytes.to_vec(), at: 0 }
}

fn normalized(code: &PairingCode) -> String {
    code.display().replace('-', "")
}

fn start_a(password: &str, random: &[u8]) -> (Spake2<Ed25519Group>, Vec<u8>) {
    Spake2::<Ed25519Group>::start_a_with_rng(
        &Password::new(password.as_bytes()),
        &Identity::new(ID_CLIENT),
        &Identity::new(ID_SERVER),
        rng(random),
    )
}

fn start_b(password: &str, random: &[u8]) -> (Spake2<Ed25519Group>, Vec<u8>) {
    Spake2::<Ed25519Group>::start_b_with_rng(
        &Password::new(password.as_bytes()),
        &Identity::new(ID_CLIENT),
        &Identity::new(ID_SERVER),
        rng(random),
    )
}

/// HMAC-SHA256 over parts, each preceded by its length (u64 big-endian): spec/pairing.md.
fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

struct Keys {
    server_confirm: [u8; 32],
    client_confirm: [u8; 32],
    client_to_server: [u8; 32],
    server_to_client: [u8; 32],
}

impl Keys {
    fn derive(k: &[u8]) -> Self {
        let key = |label: &str| hmac(k, &[AAD, label.as_bytes()]);
        Self {
            server_confirm: key("server confirm"),
            client_confirm: key("client confirm"),
            client_to_server: key("client to server"),
            server_to_client: key("server to client"),
        }
    }

    fn json(&self) -> Value {
        json!({
            "server_confirm": hex::encode(self.server_confirm),
            "client_confirm": hex::encode(self.client_confirm),
            "client_to_server": hex::encode(self.client_to_server),
            "server_to_client": hex::encode(self.server_to_client),
        })
    }
}

fn confirmation(key: &[u8; 32], side: &[u8], id: &str, a: &[u8], b: &[u8]) -> [u8; 32] {
    hmac(key, &[side, id.as_bytes(), a, b])
}

fn seal(key: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
    let mut buffer = plaintext.to_vec();
    Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key)).encrypt_in_place(&Nonce::from([0u8; 12]), AAD, &mut buffer).unwrap();
    buffer
}

fn open(key: &[u8; 32], sealed: &[u8]) -> Vec<u8> {
    let mut buffer = sealed.to_vec();
    Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key)).decrypt_in_place(&Nonce::from([0u8; 12]), AAD, &mut buffer).unwrap();
    buffer
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

struct Case {
    about: &'static str,
    typed: &'static str,
    rng_label: &'static str,
    request: Request,
    outcome: Outcome,
}

const PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEPbHdnEfRyuI4+iKrwxXbSvIUDzb2\n\
                          g9e0H7Z0VqnLc3vQ8Y4iG4D2ZQe4pYbVq8y6o7k3cL0x2Q1JtJ0a1Ewl4Q==\n-----END PUBLIC KEY-----\n";

fn cases() -> Vec<Case> {
    vec![
        Case {
            about: "paired: the client names the client it expects, the server grants a certificate",
            typed: "7kq2m-xr4td",
            rng_label: "keyward pairing vector 1",
            request: Request { name: Some("phone".into()), public_key: PUBLIC_KEY.into() },
            outcome: Outcome::Ok(Granted {
                name: "phone".into(),
                role: "signer".into(),
                certificate: "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n".into(),
                ca_certificate: "-----BEGIN CERTIFICATE-----\nMIIBcafake\n-----END CERTIFICATE-----\n".into(),
                endpoints: Endpoints {
                    url: Some("https://127.0.0.1:3420/v3/owner".into()),
                    quic: Some("127.0.0.1:3420".into()),
                },
            }),
        },
        Case {
            about: "the code was right but the server could not register the client (no name asked)",
            typed: "OI23Z YJNR9",
            rng_label: "keyward pairing vector 2",
            request: Request { name: None, public_key: PUBLIC_KEY.into() },
            outcome: Outcome::Error("a client called 'phone' exists".into()),
        },
        Case {
            about: "paired without asking for a name; the server has no QUIC endpoint",
            typed: "hjkmn-pqrst",
            rng_label: "keyward pairing vector 3",
            request: Request { name: None, public_key: PUBLIC_KEY.into() },
            outcome: Outcome::Ok(Granted {
                name: "laptop".into(),
                role: "reader".into(),
                certificate: "-----BEGIN CERTIFICATE-----\nMIIBfake2\n-----END CERTIFICATE-----\n".into(),
                ca_certificate: "-----BEGIN CERTIFICATE-----\nMIIBcafake\n-----END CERTIFICATE-----\n".into(),
                endpoints: Endpoints { url: Some("https://127.0.0.1:3420/v3/owner".into()), quic: None },
            }),
        },
    ]
}

fn exchange(case: &Case) -> Value {
    let code = PairingCode::parse(case.typed).unwrap();
    let password = normalized(&code);
    let id = code.id().to_owned();
    let rng_a = fixed_bytes(&format!("{} A", case.rng_label));
    let rng_b = fixed_bytes(&format!("{} B", case.rng_label));

    let (a, msg_a) = start_a(&password, &rng_a);
    let (b, msg_b) = start_b(&password, &rng_b);
    let key = a.finish(&msg_b).unwrap();
    assert_eq!(key, b.finish(&msg_a).unwrap(), "both sides agree");
    let keys = Keys::derive(&key);
    let confirm_server = confirmation(&keys.server_confirm, b"server", &id, &msg_a, &msg_b);
    let confirm_client = confirmation(&keys.client_confirm, b"client", &id, &msg_a, &msg_b);
    let request = protocol::to_bytes(&case.request);
    let outcome = protocol::to_bytes(&case.outcome);
    let sealed_request = seal(&keys.client_to_server, &request);
    let sealed_outcome = seal(&keys.server_to_client, &outcome);
    let hello = Hello { keyward_pair: protocol::VERSION, id: id.clone(), spake: B64(msg_a.clone()) };
    let reply = Reply { spake: B64(msg_b.clone()), confirm: B64(confirm_server.to_vec()) };
    let finish = Finish { confirm: B64(confirm_client.to_vec()), sealed: B64(sealed_request.clone()) };
    let done = Done { sealed: B64(sealed_outcome.clone()) };

    // The protocol module's server answers our (fixed) client as we compute it.
    let (server, their_reply) =
        ServerExchange::new(&code, &protocol::parse(&protocol::to_bytes(&hello)).unwrap()).unwrap();
    let (a, _) = start_a(&password, &rng_a);
    let their_keys = Keys::derive(&a.finish(&their_reply.spake.0).unwrap());
    assert_eq!(
        their_reply.confirm.0,
        confirmation(&their_keys.server_confirm, b"server", &id, &msg_a, &their_reply.spake.0),
        "the server's confirmation is as computed here"
    );
    let their_finish = Finish {
        confirm: B64(confirmation(&their_keys.client_confirm, b"client", &id, &msg_a, &their_reply.spake.0).to_vec()),
        sealed: B64(seal(&their_keys.client_to_server, &request)),
    };
    assert_eq!(server.request(&their_finish).unwrap(), case.request, "the server opens the request sealed here");
    assert_eq!(open(&their_keys.server_to_client, &server.done(case.outcome.clone()).sealed.0), outcome);

    // The protocol module's client accepts our (fixed) server as we compute it.
    let (client, their_hello) = ClientStart::new(&code);
    let (b, _) = start_b(&password, &rng_b);
    let their_keys = Keys::derive(&b.finish(&their_hello.spake.0).unwrap());
    let our_reply = Reply {
        spake: B64(msg_b.clone()),
        confirm: B64(confirmation(&their_keys.server_confirm, b"server", &id, &their_hello.spake.0, &msg_b).to_vec()),
    };
    let mut client = client.confirm(&our_reply).unwrap();
    let their_finish = client.finish(&case.request);
    assert_eq!(
        their_finish.confirm.0,
        confirmation(&their_keys.client_confirm, b"client", &id, &their_hello.spake.0, &msg_b),
        "the client's confirmation is as computed here"
    );
    assert_eq!(open(&their_keys.client_to_server, &their_finish.sealed.0), request);
    let our_done = Done { sealed: B64(seal(&their_keys.server_to_client, &outcome)) };
    assert_eq!(client.outcome(&our_done).unwrap(), case.outcome);

    json!({
        "about": case.about,
        "code": case.typed,
        "password": password,
        "id": id,
        "rng_a": hex::encode(&rng_a),
        "rng_b": hex::encode(&rng_b),
        "msg_a": hex::encode(&msg_a),
        "msg_b": hex::encode(&msg_b),
        "key": hex::encode(&key),
        "keys": keys.json(),
        "confirm_server": hex::encode(confirm_server),
        "confirm_client": hex::encode(confirm_client),
        "request": text(&request),
        "sealed_request": hex::encode(&sealed_request),
        "outcome": text(&outcome),
        "sealed_outcome": hex::encode(&sealed_outcome),
        "frames": {
            "hello": text(&protocol::to_bytes(&hello)),
            "reply": text(&protocol::to_bytes(&reply)),
            "finish": text(&protocol::to_bytes(&finish)),
            "done": text(&protocol::to_bytes(&done)),
        },
    })
}

/// A client with a mistyped code against a server with the real one: the client's check of the
/// server's confirmation fails.
fn wrong_code() -> Value {
    let client_code = PairingCode::parse("7KQ2M-XR4TE").unwrap();
    let server_code = PairingCode::parse("7KQ2M-XR4TD").unwrap();
    let id = server_code.id().to_owned();
    let rng_a = fixed_bytes("keyward pairing wrong code A");
    let rng_b = fixed_bytes("keyward pairing wrong code B");
    let (a, msg_a) = start_a(&normalized(&client_code), &rng_a);
    let (b, msg_b) = start_b(&normalized(&server_code), &rng_b);
    let client_key = a.finish(&msg_b).unwrap();
    let server_key = b.finish(&msg_a).unwrap();
    assert_ne!(client_key, server_key);
    let keys = Keys::derive(&server_key);
    let reply = Reply {
        spake: B64(msg_b.clone()),
        confirm: B64(confirmation(&keys.server_confirm, b"server", &id, &msg_a, &msg_b).to_vec()),
    };
    // The protocol module's client refuses it.
    let (client, hello) = ClientStart::new(&client_code);
    let (b, _) = start_b(&normalized(&server_code), &rng_b);
    let keys = Keys::derive(&b.finish(&hello.spake.0).unwrap());
    let their_reply = Reply {
        spake: B64(msg_b.clone()),
        confirm: B64(confirmation(&keys.server_confirm, b"server", &id, &hello.spake.0, &msg_b).to_vec()),
    };
    assert!(client.confirm(&their_reply).is_err());
    json!({
        "about": "the client typed the last character wrong: its check of the server's confirmation fails, it sends nothing more",
        "client_code": "7KQ2M-XR4TE",
        "server_code": "7KQ2M-XR4TD",
        "rng_a": hex::encode(&rng_a),
        "rng_b": hex::encode(&rng_b),
        "msg_a": hex::encode(&msg_a),
        "msg_b": hex::encode(&msg_b),
        "client_key": hex::encode(&client_key),
        "server_key": hex::encode(&server_key),
        "reply": text(&protocol::to_bytes(&reply)),
    })
}

fn codes() -> Value {
    let typed = [
        "0123Z-YJNR9",
        "o123zyjnr9",
        " 0 1 2 3 z - y j n r 9 ",
        "OI23ZYJNR9",
        "0L23Z-yjnr9",
        "7kq2m-xr4td",
        "",
        "0123Z-YJNR",
        "0123Z-YJNR9X",
        "0123Z-YJNRU",
        "0123Z_YJNR9",
        "0123Z-YJNRé",
        "0123Z\t-YJNR9",
    ];
    Value::Array(
        typed
            .iter()
            .map(|typed| {
                let code = PairingCode::parse(typed).ok();
                json!({
                    "typed": typed,
                    "normalized": code.as_ref().map(normalized),
                    "id": code.as_ref().map(|code| code.id().to_owned()),
                })
            })
            .collect(),
    )
}

fn vectors() -> String {
    let value = json!({
        "about": "Pairing (spec/pairing.md) with fixed randomness, made by pairing/tests/ts_vectors.rs \
                  (KEYWARD_WRITE_VECTORS=1 rewrites it). SPAKE2 is crate spake2 0.4 over Ed25519: side A (client) \
                  and side B (server) each draw 64 bytes (rng_a, rng_b), read as a little-endian integer modulo \
                  the group order for their scalar; the password is the normalized code. Bytes are hex, except \
                  in the JSON texts (request, outcome, frames: the exact bytes of each message), where they are \
                  standard base64.",
        "identity_a": text(ID_CLIENT),
        "identity_b": text(ID_SERVER),
        "aad": text(AAD),
        "codes": codes(),
        "exchanges": cases().iter().map(exchange).collect::<Vec<_>>(),
        "wrong_code": wrong_code(),
    });
    let mut text = serde_json::to_string_pretty(&value).unwrap();
    text.push('\n');
    text
}

fn path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors/pairing.json")
}

#[test]
fn committed_vectors_are_current() {
    let made = vectors();
    assert_eq!(made, vectors(), "the vectors are deterministic");
    if std::env::var_os("KEYWARD_WRITE_VECTORS").is_some() {
        std::fs::write(path(), &made).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(path()).unwrap_or_default();
    assert!(
        committed == made,
        "spec/vectors/pairing.json is out of date (rerun with KEYWARD_WRITE_VECTORS=1 \
         cargo test -p keyward-pairing --test ts_vectors)"
    );
}
