//! The pairing exchange, sans-IO: four JSON messages, each in one length-prefixed frame
//! (spec/pairing.md).
//!
//! ```text
//! client → server  Hello   {"keyward_pair":1, "id":"7K", "spake":B64}            SPAKE2 side A
//! server → client  Reply   {"spake":B64, "confirm":B64}  or  {"error":"…"}        SPAKE2 side B, server's MAC
//! client → server  Finish  {"confirm":B64, "sealed":B64}                          client's MAC, sealed Request
//! server → client  Done    {"sealed":B64}  or  {"error":"wrong code"}             sealed Outcome
//! ```
//!
//! Both sides run SPAKE2 (Ed25519 group) with the whole code as the password. From its key K,
//! HMAC-SHA256(K, label) gives four keys: one MAC key per side for key confirmation (a MAC over the
//! code's id and both SPAKE2 messages) and one AES-256-GCM key per direction. The server confirms
//! first, so a client facing a server that does not know the code stops before it sends anything
//! but its SPAKE2 message; the client's public key and name go only under the client-to-server
//! key, after its own MAC. Each AES key seals exactly one message, so its nonce is zero.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use spake2::{Ed25519Group, Identity, Password, Spake2};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::bundle::Endpoints;
use crate::code::{PairingCode, valid_id};

/// The protocol version in [`Hello`].
pub const VERSION: u32 = 1;

/// The largest pairing message (a request with a PEM key, an outcome with two certificates and
/// the endpoints fit in 8 KiB).
pub const MAX_MESSAGE: usize = 16 * 1024;

/// SPAKE2 identities of the two sides.
const ID_CLIENT: &[u8] = b"keyward pairing client";
const ID_SERVER: &[u8] = b"keyward pairing server";

/// Why a message or an exchange failed. No variant carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Not a message of this protocol (or too large).
    #[error("not a pairing message: {0}")]
    Malformed(String),
    /// The other side does not know the code (or is not a keyward pairing peer).
    #[error("wrong code")]
    WrongCode,
}

/// Bytes carried as standard base64 in JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct B64(pub Vec<u8>);

impl Serialize for B64 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&BASE64.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        BASE64.decode(text.as_bytes()).map(B64).map_err(serde::de::Error::custom)
    }
}

/// The client's first message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// [`VERSION`].
    pub keyward_pair: u32,
    /// The code's id (its first two characters).
    pub id: String,
    /// The SPAKE2 message of side A.
    pub spake: B64,
}

/// The server's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// The SPAKE2 message of side B.
    pub spake: B64,
    /// The server's key confirmation.
    pub confirm: B64,
}

/// A refusal, in clear (no live code, wrong code, not a pairing message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    /// Why.
    pub error: String,
}

/// The client's second message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finish {
    /// The client's key confirmation.
    pub confirm: B64,
    /// A [`Request`] under the client-to-server key.
    pub sealed: B64,
}

/// The server's last message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Done {
    /// An [`Outcome`] under the server-to-client key.
    pub sealed: B64,
}

/// What the client asks for, sealed in [`Finish`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The name the client expects to get (the owner chose it; a mismatch is refused), if any.
    pub name: Option<String>,
    /// The client's public key (PEM SubjectPublicKeyInfo) for its certificate.
    pub public_key: String,
}

/// What the client gets, sealed in [`Done`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Outcome {
    /// Paired.
    Ok(Granted),
    /// The code was right but the server could not register the client (why, without paths).
    Error(String),
}

/// A paired client's certificate, role and where to reach the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Granted {
    /// The client's registered name.
    pub name: String,
    /// Its role: reader, signer or owner.
    pub role: String,
    /// Its certificate (PEM), signed by the server's CA.
    pub certificate: String,
    /// The CA's certificate (PEM): the only root the client trusts for this server.
    pub ca_certificate: String,
    /// The server's addresses.
    pub endpoints: Endpoints,
}

/// Parses one message, refusing more than [`MAX_MESSAGE`] bytes and unknown fields.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtocolError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(ProtocolError::Malformed(format!("{} bytes is more than {MAX_MESSAGE}", bytes.len())));
    }
    serde_json::from_slice(bytes).map_err(|e| ProtocolError::Malformed(e.to_string()))
}

/// A message's bytes.
pub fn to_bytes<T: Serialize>(message: &T) -> Vec<u8> {
    // The messages are strings, numbers and byte strings: they always serialize.
    serde_json::to_vec(message).unwrap_or_default()
}

/// The four keys of an exchange, from the SPAKE2 key.
#[derive(Zeroize, ZeroizeOnDrop)]
struct Keys {
    server_confirm: [u8; 32],
    client_confirm: [u8; 32],
    client_to_server: [u8; 32],
    server_to_client: [u8; 32],
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

impl Keys {
    fn derive(spake_key: &[u8]) -> Self {
        let key = |label: &str| hmac(spake_key, &[b"keyward/pair/v1", label.as_bytes()]);
        Self {
            server_confirm: key("server confirm"),
            client_confirm: key("client confirm"),
            client_to_server: key("client to server"),
            server_to_client: key("server to client"),
        }
    }
}

/// The MAC each side sends: over its label, the code's id and both SPAKE2 messages.
fn confirmation(key: &[u8; 32], side: &[u8], id: &str, a: &[u8], b: &[u8]) -> [u8; 32] {
    hmac(key, &[side, id.as_bytes(), a, b])
}

fn verify(expected: &[u8; 32], got: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(&expected[..], got).into()
}

fn seal(key: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key));
    let mut buffer = plaintext.to_vec();
    // Sealing fails only past GCM's length limit (64 GiB); messages are a few KiB.
    if cipher.encrypt_in_place(&Nonce::from([0u8; 12]), b"keyward/pair/v1", &mut buffer).is_err() {
        buffer.zeroize();
    }
    buffer
}

fn open(key: &[u8; 32], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, ProtocolError> {
    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key));
    let mut buffer = Zeroizing::new(sealed.to_vec());
    cipher
        .decrypt_in_place(&Nonce::from([0u8; 12]), b"keyward/pair/v1", &mut *buffer)
        .map_err(|_| ProtocolError::WrongCode)?;
    Ok(buffer)
}

/// The client between [`Hello`] and [`Reply`].
pub struct ClientStart {
    spake: Spake2<Ed25519Group>,
    id: String,
    hello: Vec<u8>,
}

impl std::fmt::Debug for ClientStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientStart").field("id", &self.id).finish_non_exhaustive()
    }
}

/// The client after a confirmed [`Reply`]: it shares keys with a server that knows the code.
pub struct ClientExchange {
    keys: Keys,
    confirm: [u8; 32],
    finished: bool,
}

impl std::fmt::Debug for ClientExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientExchange")
    }
}

impl ClientStart {
    /// Starts the client's side: its [`Hello`].
    pub fn new(code: &PairingCode) -> (Self, Hello) {
        let (spake, message) = Spake2::<Ed25519Group>::start_a(
            &Password::new(code.password()),
            &Identity::new(ID_CLIENT),
            &Identity::new(ID_SERVER),
        );
        let hello = Hello { keyward_pair: VERSION, id: code.id().to_owned(), spake: B64(message.clone()) };
        (Self { spake, id: code.id().to_owned(), hello: message }, hello)
    }

    /// Checks the server's confirmation: [`ProtocolError::WrongCode`] if the server does not know
    /// the code (then nothing else may be sent).
    pub fn confirm(self, reply: &Reply) -> Result<ClientExchange, ProtocolError> {
        let key = Zeroizing::new(self.spake.finish(&reply.spake.0).map_err(|_| ProtocolError::WrongCode)?);
        let keys = Keys::derive(&key);
        let expected = confirmation(&keys.server_confirm, b"server", &self.id, &self.hello, &reply.spake.0);
        if !verify(&expected, &reply.confirm.0) {
            return Err(ProtocolError::WrongCode);
        }
        let confirm = confirmation(&keys.client_confirm, b"client", &self.id, &self.hello, &reply.spake.0);
        Ok(ClientExchange { keys, confirm, finished: false })
    }
}

impl ClientExchange {
    /// The client's [`Finish`], sealing `request` (once: the key seals one message).
    pub fn finish(&mut self, request: &Request) -> Finish {
        assert!(!self.finished, "a pairing client seals one request");
        self.finished = true;
        let plaintext = Zeroizing::new(to_bytes(request));
        Finish { confirm: B64(self.confirm.to_vec()), sealed: B64(seal(&self.keys.client_to_server, &plaintext)) }
    }

    /// Opens the server's [`Done`].
    pub fn outcome(&self, done: &Done) -> Result<Outcome, ProtocolError> {
        let plaintext = open(&self.keys.server_to_client, &done.sealed.0)?;
        parse(&plaintext)
    }
}

/// The server after its [`Reply`].
pub struct ServerExchange {
    keys: Keys,
    expected: [u8; 32],
}

impl std::fmt::Debug for ServerExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerExchange")
    }
}

impl ServerExchange {
    /// Answers a [`Hello`] for `code`: a malformed SPAKE2 message is [`ProtocolError::WrongCode`]
    /// (it counts as an attempt).
    pub fn new(code: &PairingCode, hello: &Hello) -> Result<(Self, Reply), ProtocolError> {
        if hello.keyward_pair != VERSION {
            return Err(ProtocolError::Malformed(format!(
                "protocol version {} (this server speaks 1)",
                hello.keyward_pair
            )));
        }
        if !valid_id(&hello.id) {
            return Err(ProtocolError::Malformed("the code's id is two characters of the code".into()));
        }
        let (spake, message) = Spake2::<Ed25519Group>::start_b(
            &Password::new(code.password()),
            &Identity::new(ID_CLIENT),
            &Identity::new(ID_SERVER),
        );
        let key = Zeroizing::new(spake.finish(&hello.spake.0).map_err(|_| ProtocolError::WrongCode)?);
        let keys = Keys::derive(&key);
        let confirm = confirmation(&keys.server_confirm, b"server", &hello.id, &hello.spake.0, &message);
        let expected = confirmation(&keys.client_confirm, b"client", &hello.id, &hello.spake.0, &message);
        Ok((Self { keys, expected }, Reply { spake: B64(message), confirm: B64(confirm.to_vec()) }))
    }

    /// Checks the client's confirmation and opens its request.
    pub fn request(&self, finish: &Finish) -> Result<Request, ProtocolError> {
        if !verify(&self.expected, &finish.confirm.0) {
            return Err(ProtocolError::WrongCode);
        }
        let plaintext = open(&self.keys.client_to_server, &finish.sealed.0)?;
        parse(&plaintext)
    }

    /// The server's [`Done`], sealing `outcome` (it takes the exchange: the key seals one message).
    pub fn done(self, outcome: Outcome) -> Done {
        Done { sealed: B64(seal(&self.keys.server_to_client, &to_bytes(&outcome))) }
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

    use super::*;

    fn code(seed: u8) -> PairingCode {
        PairingCode::from_random([seed; 10])
    }

    fn request() -> Request {
        Request { name: Some("phone".into()), public_key: "PEM".into() }
    }

    #[test]
    fn both_sides_with_the_code_agree_and_exchange_sealed_messages() {
        let (client, hello) = ClientStart::new(&code(7));
        let hello: Hello = parse(&to_bytes(&hello)).unwrap();
        let (server, reply) = ServerExchange::new(&code(7), &hello).unwrap();
        let mut client = client.confirm(&parse(&to_bytes(&reply)).unwrap()).unwrap();
        let finish = client.finish(&request());
        assert!(!String::from_utf8_lossy(&to_bytes(&finish)).contains("phone"), "the request travels sealed");
        assert_eq!(server.request(&parse(&to_bytes(&finish)).unwrap()).unwrap(), request());
        let outcome = Outcome::Error("a client called 'phone' exists".into());
        assert_eq!(client.outcome(&server.done(outcome.clone())).unwrap(), outcome);
    }

    #[test]
    fn a_server_without_the_code_fails_the_clients_confirmation() {
        let (client, hello) = ClientStart::new(&code(7));
        let (_, reply) = ServerExchange::new(&code(8), &hello).unwrap();
        assert_eq!(client.confirm(&reply).unwrap_err(), ProtocolError::WrongCode);
    }

    #[test]
    fn a_client_without_the_code_fails_the_servers_confirmation() {
        let (client, hello) = ClientStart::new(&code(8));
        let (server, reply) = ServerExchange::new(&code(7), &hello).unwrap();
        // A fake client cannot confirm; sending its own MAC (computed with its wrong key) fails.
        let (honest, _) = ClientStart::new(&code(8));
        assert!(honest.confirm(&reply).is_err());
        assert!(client.confirm(&reply).is_err());
        let forged = Finish { confirm: B64(vec![0; 32]), sealed: B64(vec![0; 40]) };
        assert_eq!(server.request(&forged).unwrap_err(), ProtocolError::WrongCode);
    }

    #[test]
    fn a_tampered_message_fails() {
        let (client, hello) = ClientStart::new(&code(7));
        let (server, mut reply) = ServerExchange::new(&code(7), &hello).unwrap();
        reply.confirm.0[0] ^= 1;
        assert!(client.confirm(&reply).is_err());
        let (client, hello) = ClientStart::new(&code(7));
        let (_, reply) = ServerExchange::new(&code(7), &hello).unwrap();
        let mut client = client.confirm(&reply).unwrap();
        let mut finish = client.finish(&request());
        let last = finish.sealed.0.len() - 1;
        finish.sealed.0[last] ^= 1;
        assert!(server.request(&finish).is_err(), "the first exchange's server cannot read another's");
    }

    #[test]
    fn bad_messages_are_refused_not_panicked_on() {
        assert!(matches!(parse::<Hello>(b"{}"), Err(ProtocolError::Malformed(_))));
        assert!(parse::<Hello>(br#"{"keyward_pair":1,"id":"AB","spake":"!!"}"#).is_err());
        assert!(parse::<Hello>(br#"{"keyward_pair":1,"id":"AB","spake":"","x":1}"#).is_err());
        assert!(parse::<Hello>(&vec![b' '; MAX_MESSAGE + 1]).is_err());
        let hello = Hello { keyward_pair: 1, id: "AB".into(), spake: B64(vec![0x41; 3]) };
        assert_eq!(ServerExchange::new(&code(1), &hello).unwrap_err(), ProtocolError::WrongCode);
        let hello = Hello { keyward_pair: 2, id: "AB".into(), spake: B64(vec![]) };
        assert!(matches!(ServerExchange::new(&code(1), &hello), Err(ProtocolError::Malformed(_))));
    }
}
