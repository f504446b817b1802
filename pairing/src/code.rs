//! One-time pairing codes: 10 characters of Crockford's base32 in two groups of five, e.g.
//! `7KQ2M-XR4TD`. The first two characters name the code among the live ones (they travel in
//! clear); the whole code is the PAKE's password, so an online guess has one chance in 2^40 and a
//! code dies after [`crate::MAX_ATTEMPTS`] wrong guesses.
//!
//! Typing is forgiving: case, spaces and dashes do not matter, and `I`/`L` read as `1`, `O` as `0`.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Crockford's base32 alphabet (no I, L, O, U).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Characters in a code.
pub const CODE_LEN: usize = 10;

/// Characters of the code that name it (sent in clear).
pub const ID_LEN: usize = 2;

/// A pairing code, normalized (10 characters of the alphabet). Wiped on drop; `Debug` shows only
/// its id.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct PairingCode([u8; CODE_LEN]);

impl fmt::Debug for PairingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PairingCode({}…)", self.id())
    }
}

/// Why a typed code is not a code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a pairing code is 10 characters of 0-9 and A-Z (without U), as `keyward clients pair` printed it")]
pub struct BadCode;

impl PairingCode {
    /// A code from 10 random bytes (each byte's low 5 bits pick a character).
    pub fn from_random(random: [u8; CODE_LEN]) -> Self {
        let mut code = [0u8; CODE_LEN];
        for (out, byte) in code.iter_mut().zip(random) {
            *out = ALPHABET[usize::from(byte & 31)];
        }
        Self(code)
    }

    /// A fresh code from the OS's randomness.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut random = zeroize::Zeroizing::new([0u8; CODE_LEN]);
        getrandom::fill(&mut *random)?;
        Ok(Self::from_random(*random))
    }

    /// Reads a code as a person typed it.
    pub fn parse(typed: &str) -> Result<Self, BadCode> {
        let mut code = [0u8; CODE_LEN];
        let mut len = 0;
        for c in typed.chars() {
            let c = match c.to_ascii_uppercase() {
                '-' | ' ' => continue,
                'I' | 'L' => '1',
                'O' => '0',
                c => c,
            };
            let byte = u8::try_from(c).map_err(|_| BadCode)?;
            if !ALPHABET.contains(&byte) || len == CODE_LEN {
                code.zeroize();
                return Err(BadCode);
            }
            code[len] = byte;
            len += 1;
        }
        if len != CODE_LEN {
            code.zeroize();
            return Err(BadCode);
        }
        Ok(Self(code))
    }

    /// The characters that name the code among the live ones.
    pub fn id(&self) -> &str {
        // The alphabet is ASCII.
        std::str::from_utf8(&self.0[..ID_LEN]).unwrap_or("??")
    }

    /// The PAKE password: the whole code.
    pub(crate) fn password(&self) -> &[u8] {
        &self.0
    }

    /// The code for a person: `XXXXX-XXXXX`.
    pub fn display(&self) -> zeroize::Zeroizing<String> {
        let mut text = zeroize::Zeroizing::new(String::with_capacity(CODE_LEN + 1));
        for (i, byte) in self.0.iter().enumerate() {
            if i == CODE_LEN / 2 {
                text.push('-');
            }
            text.push(char::from(*byte));
        }
        text
    }
}

/// Whether `id` could name a code (two characters of the alphabet).
pub fn valid_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| ALPHABET.contains(&b))
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

    use super::*;

    #[test]
    fn a_code_reads_back_however_it_is_typed() {
        let code = PairingCode::from_random([0, 1, 2, 3, 31, 30, 18, 21, 24, 9]);
        assert_eq!(&*code.display(), "0123Z-YJNR9");
        for typed in ["0123Z-YJNR9", "o123zyjnr9", " 0 1 2 3 z - y j n r 9 ", "OI23ZYJNR9", "0L23Z-yjnr9"] {
            assert_eq!(PairingCode::parse(typed).unwrap(), code, "{typed}");
        }
        assert_eq!(code.id(), "01");
        assert!(format!("{code:?}").contains("01…") && !format!("{code:?}").contains("YJN"));
    }

    #[test]
    fn anything_else_is_refused() {
        for typed in ["", "0123Z-YJNR", "0123Z-YJNR9X", "0123Z-YJNRU", "0123Z_YJNR9", "0123Z-YJNRé"] {
            assert_eq!(PairingCode::parse(typed), Err(BadCode), "{typed}");
        }
        assert!(valid_id("7K") && !valid_id("7") && !valid_id("7U") && !valid_id("7k"));
    }

    #[test]
    fn generated_codes_use_the_whole_alphabet() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            seen.extend(PairingCode::generate().unwrap().display().chars());
        }
        assert_eq!(seen.len(), 33, "32 characters and the dash");
    }
}
