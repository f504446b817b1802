//! The outer JSON shapes the server reads and writes: the request object, the id it echoes, the
//! envelope's params and its answer (written straight into the output buffer, the ciphertext's
//! base64 included), and the plaintext errors of the envelope layer.

use std::borrow::Cow;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::Outgoing;
use crate::envelope::NONCE_LEN;
use crate::jsonrpc::{self, EnvelopeError};
use crate::session::SessionId;

/// An outer request, parsed in place.
#[derive(Deserialize)]
pub(super) struct Request<'a> {
    #[serde(borrow, default)]
    pub(super) id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) params: Option<&'a RawValue>,
}

/// `encrypted_request_v3` params: named (no other names) or positional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EnvelopeParams<'a> {
    #[serde(borrow)]
    pub(super) nonce: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) body_enc: Cow<'a, str>,
}

impl<'a> EnvelopeParams<'a> {
    pub(super) fn parse(raw: &'a RawValue) -> Option<Self> {
        if let Ok(params) = serde_json::from_str::<EnvelopeParams<'a>>(raw.get()) {
            return Some(params);
        }
        let (nonce, body_enc) = serde_json::from_str::<(Cow<'a, str>, Cow<'a, str>)>(raw.get()).ok()?;
        Some(Self { nonce, body_enc })
    }
}

/// Bytes the envelope answer adds around the base64 of its ciphertext and the id.
const ANSWER_FRAME: usize = 96;

/// Writes `{"id":…,"jsonrpc":"2.0","result":{"Ok":{"nonce":"…","body_enc":"…"}}}` (grin's field
/// order), encoding the nonce as hex and the ciphertext as base64 straight into `body`.
pub(super) fn envelope_answer(id: &RawValue, nonce: &[u8; NONCE_LEN], ciphertext: &[u8]) -> Vec<u8> {
    // (`None` only past `usize::MAX`, which no answer reaches.)
    let encoded = base64::encoded_len(ciphertext.len(), true).unwrap_or(0);
    let mut body = Vec::with_capacity(id.get().len() + encoded + ANSWER_FRAME);
    body.extend_from_slice(b"{\"id\":");
    body.extend_from_slice(id.get().as_bytes());
    body.extend_from_slice(b",\"jsonrpc\":\"2.0\",\"result\":{\"Ok\":{\"nonce\":\"");
    let mut hex = [0u8; 2 * NONCE_LEN];
    // The buffer is exactly twice the nonce's length: encoding cannot fail.
    if hex::encode_to_slice(nonce, &mut hex).is_ok() {
        body.extend_from_slice(&hex);
    }
    body.extend_from_slice(b"\",\"body_enc\":\"");
    let start = body.len();
    body.resize(start + encoded, 0);
    let written = base64::engine::general_purpose::STANDARD.encode_slice(ciphertext, &mut body[start..]).unwrap_or(0);
    body.truncate(start + written);
    body.extend_from_slice(b"\"}}}");
    body
}

/// The request id to echo: a string, a number or `null` as the client wrote it; anything else (an
/// object, an array, a number no JSON library can hold, like `2e2121`) is answered with `null`, so
/// every client can parse the answer.
pub(super) fn echoable_id(id: Option<&RawValue>) -> &RawValue {
    let Some(raw) = id else { return RawValue::NULL };
    let echoable = match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::String(_) | Value::Null) => true,
        Ok(Value::Number(n)) => n.as_f64().is_some_and(f64::is_finite),
        _ => false,
    };
    if echoable { raw } else { RawValue::NULL }
}

/// The id of a batch's request, by [`echoable_id`]'s rules; `null` if the request is no object.
pub(super) fn batch_id(request: &RawValue) -> &RawValue {
    #[derive(Deserialize)]
    struct IdOnly<'a> {
        #[serde(borrow, default)]
        id: Option<&'a RawValue>,
    }
    if !starts_object(request.get().as_bytes()) {
        return RawValue::NULL;
    }
    serde_json::from_str::<IdOnly<'_>>(request.get()).map_or(RawValue::NULL, |request| echoable_id(request.id))
}

/// Whether a JSON text is an object (serde would also read a struct from an array).
pub(super) fn starts_object(text: &[u8]) -> bool {
    first_byte(text) == Some(b'{')
}

/// The first byte of a JSON text that is not white space.
pub(super) fn first_byte(text: &[u8]) -> Option<u8> {
    text.iter().find(|b| !b.is_ascii_whitespace()).copied()
}

/// A plaintext error answer of the envelope layer.
pub(super) fn plain_error<I: Serialize + ?Sized>(
    id: &I,
    error: &EnvelopeError,
    session: Option<SessionId>,
) -> Outgoing {
    let (code, message) = error.wire();
    Outgoing { body: jsonrpc::error_bytes(id, code, &message), session, created_session: false, unmatched: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct EnvelopeAnswer<'a> {
        nonce: &'a str,
        body_enc: &'a str,
    }

    #[test]
    fn the_envelope_answer_is_what_serde_writes() {
        let nonce = [0xa5; NONCE_LEN];
        for id in ["1", "null", "\"x\\\"y\"", "1e2", "-0.5"] {
            for ciphertext in [&b""[..], b"a", b"ab", b"abc", &[0xff; 100]] {
                let id: Box<RawValue> = serde_json::from_str(id).expect("an id");
                let base64 = base64::engine::general_purpose::STANDARD.encode(ciphertext);
                let mut expected = Vec::new();
                let answer = EnvelopeAnswer { nonce: &hex::encode(nonce), body_enc: &base64 };
                jsonrpc::write_ok(&*id, &answer, &mut expected);
                let written = envelope_answer(&id, &nonce, ciphertext);
                assert_eq!(written, expected, "{}", String::from_utf8_lossy(&written));
            }
        }
    }

    #[test]
    fn only_strings_finite_numbers_and_null_are_echoed() {
        let echo =
            |text: &str| echoable_id(Some(serde_json::from_str::<&RawValue>(text).expect("JSON"))).get().to_owned();
        assert_eq!(echo("\"a\""), "\"a\"");
        assert_eq!(echo("1e2"), "1e2");
        assert_eq!(echo("2e2121"), "null");
        assert_eq!(echo("{}"), "null");
        assert_eq!(echo("[1]"), "null");
        assert_eq!(echoable_id(None).get(), "null");
        assert_eq!(batch_id(serde_json::from_str::<&RawValue>("[1]").expect("JSON")).get(), "null");
        assert_eq!(batch_id(serde_json::from_str::<&RawValue>("{\"id\":7}").expect("JSON")).get(), "7");
    }
}
