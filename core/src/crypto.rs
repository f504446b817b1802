//! The cryptography under the protocol, for a client written on another stack and for test vectors:
//! the V3 envelope's key agreement and AEAD, BIP39/BIP32 key derivation and signing, and the secret
//! types that hold what they handle (wiped on drop, never printed by `Debug`).

pub use crate::client::wipe as wipe_answer;
pub use crate::envelope::{
    Cipher, KeyError, NONCE_LEN, OpenError, TAG_LEN, decode_body, parse_nonce, parse_public_key, shared_key,
};
pub use crate::keys::{
    HARDENED, KeyPathError, MAX_DEPTH, derive, entropy_of, grin_master_secret, master_from_seed, master_key,
    mnemonic_of, parse_path, public_key, sign, verify,
};
pub use crate::secret::{
    Entropy, MasterKey, Password, SCRUB_STACK_BYTES, SCRUB_STACK_SHALLOW_BYTES, SecretBuffer, SharedKey, Token,
    WipedJson, wipe_json,
};
