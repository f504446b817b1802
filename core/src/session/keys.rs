//! Trying session keys on an envelope: one named session's, or (for a request naming none) the
//! caller's live sessions' in turn, screened by one block.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::{AcceptError, SessionId};
use crate::envelope::{Cipher, NONCE_LEN, OpenError};

/// Decrypts under one session's key.
pub fn open_in_place(cipher: &Cipher, nonce: &[u8; NONCE_LEN], buffer: &mut Vec<u8>) -> Result<(), AcceptError> {
    cipher.open_in_place(nonce, buffer).map_err(|e| match e {
        OpenError::Authentication => AcceptError::Decryption,
        other => AcceptError::Format(other),
    })
}

/// Tries `candidates`' keys in order on a request that named no session. With `screen`, each key
/// first decrypts one block to see whether the plaintext can start a JSON-RPC request
/// ([`Cipher::may_start_json`]) and only then runs the whole AES-GCM check, so a stranger's
/// garbage costs about one block per session, not one pass over the body per session (the
/// connection's own last session is tried without the screen). −32001 when nothing matches (the
/// client's session ended, or never was), as V3 clients expect.
pub fn try_keys(
    candidates: &[(SessionId, Arc<Cipher>)],
    nonce: &[u8; NONCE_LEN],
    ciphertext: &[u8],
    screen: bool,
) -> Result<Found, AcceptError> {
    if candidates.is_empty() {
        return Err(AcceptError::NoSession);
    }
    if ciphertext.len() < crate::envelope::TAG_LEN {
        return Err(AcceptError::Format(OpenError::Truncated));
    }
    candidates
        .iter()
        .filter(|(_, cipher)| !screen || cipher.may_start_json(nonce, ciphertext))
        .find_map(|(id, cipher)| {
            let plaintext = cipher.open_bytes(nonce, ciphertext).ok()?;
            Some(Found { id: *id, cipher: Arc::clone(cipher), plaintext })
        })
        .ok_or(AcceptError::NoSession)
}

/// The session whose key opened a request that named none, the key that did, and the plaintext.
pub struct Found {
    /// The session.
    pub id: SessionId,
    /// The key tried (passed on to [`SessionTable::commit`]).
    pub cipher: Arc<Cipher>,
    /// The decrypted request.
    pub plaintext: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Found {
    /// The session only: the key and the plaintext are secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Found").field("id", &self.id).finish_non_exhaustive()
    }
}
