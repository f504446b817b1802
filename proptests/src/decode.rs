//! Fuzz bytes ↔ operations. [`decode_ops`] reads any byte string as a list of [`Op`]s (so every fuzz
//! input is a valid run); [`encode_ops`] writes the bytes that decode to given ops (seed corpora).
//!
//! Format: one tag byte per op, then one byte per small field and two (little-endian) per `u16`
//! field; missing bytes read as zero, and decoding stops at the end of the input or at
//! [`MAX_OPS`]. Tags from [`PRINCIPAL_TAGS`] up are the principal ops (`Become`, `Steal`,
//! `StealReplay`); every smaller tag reads modulo 12, as before they were added, so saved inputs
//! whose tags are all below it run the ops they were saved with.

use crate::model::{Call, CreateKind, Form, Garbage, Op, Tamper, TokenMethod, TokenSel};

/// Most ops decoded from one input (bounds the time per fuzz input).
pub const MAX_OPS: usize = 64;
/// Longest garbage body.
pub const MAX_GARBAGE: usize = 255;
/// The first tag of the principal ops: 240 to 255 read as `Become`, `Steal`, `StealReplay` in turn.
pub const PRINCIPAL_TAGS: u8 = 240;

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((first, rest)) => {
                self.0 = rest;
                *first
            }
            None => 0,
        }
    }
    fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn bytes(&mut self) -> Vec<u8> {
        let len = usize::from(self.u8()).min(self.0.len());
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        taken.to_vec()
    }
}

/// Decodes fuzz bytes into ops.
pub fn decode_ops(data: &[u8]) -> Vec<Op> {
    let mut reader = Reader(data);
    let mut ops = Vec::new();
    while !reader.0.is_empty() && ops.len() < MAX_OPS {
        ops.push(decode_op(&mut reader));
    }
    ops
}

fn decode_op(r: &mut Reader<'_>) -> Op {
    let tag = r.u8();
    if tag >= PRINCIPAL_TAGS {
        return match (tag - PRINCIPAL_TAGS) % 3 {
            0 => Op::Become { c: r.u8(), p: r.u8() },
            1 => {
                let (from, by, hint) = (r.u8(), r.u8(), r.bool());
                Op::Steal { from, by, call: decode_call(r), hint }
            }
            _ => Op::StealReplay { from: r.u8(), by: r.u8(), back: r.u8(), hint: r.bool() },
        };
    }
    match tag % 12 {
        0 => Op::Init { c: r.u8(), bad_key: r.bool() },
        1 => {
            let c = r.u8();
            let call = decode_call(r);
            let form = match r.u8() % 3 {
                0 => Form::Named,
                1 => Form::Positional,
                _ => Form::UpperNonce,
            };
            Op::Call { c, call, form }
        }
        2 => {
            let c = r.u8();
            let call = decode_call(r);
            let how = decode_tamper(r);
            Op::Tamper { c, call, how, then_original: r.bool() }
        }
        3 => {
            let (from, to) = (r.u8(), r.u8());
            Op::CrossSend { from, to, call: decode_call(r) }
        }
        4 => Op::Replay { c: r.u8(), back: r.u8(), hint: r.bool() },
        5 => Op::Garbage(match r.u8() % 6 {
            0 => Garbage::Bytes(r.bytes()),
            1 => Garbage::NotJson,
            2 => Garbage::Array,
            3 => Garbage::NoMethod,
            4 => Garbage::PlainCall,
            _ => Garbage::RandomEnvelope { len: u16::from(r.u8()) },
        }),
        6 => Op::Advance(u64::from(r.u16())),
        7 => Op::Timeout,
        8 => Op::DropSession { c: r.u8() },
        9 => Op::Shutdown,
        10 => Op::ArmFailure(r.u8()),
        _ => Op::PlantLegacy { dir: r.u8(), name: r.u8(), pw: r.u8() },
    }
}

fn decode_call(r: &mut Reader<'_>) -> Call {
    match r.u8() % 14 {
        0 => Call::Reinit { bad_key: r.bool() },
        1 => Call::TopDir,
        2 => Call::SetDir(r.u8()),
        3 => Call::CreateConfig { valid: r.bool() },
        4 => {
            let name = r.u8();
            let kind = match r.u8() % 4 {
                0 => CreateKind::Random(r.u8()),
                1 => CreateKind::Restore { zero_len: r.bool() },
                2 => CreateKind::BadLength,
                _ => CreateKind::BadMnemonic,
            };
            Call::Create { name, kind, pw: r.u8() }
        }
        5 => Call::ImportGrin { name: r.u8(), right_pw: r.bool() },
        6 => Call::Open { name: r.u8(), pw: r.u8() },
        7 => Call::Close { name: r.u8() },
        8 => Call::Mnemonic { name: r.u8(), pw: r.u8() },
        9 => Call::ChangePassword { name: r.u8(), old: r.u8(), new: r.u8() },
        10 => Call::Delete { name: r.u8(), pw: r.u8() },
        11 => Call::ListWallets,
        12 => {
            let method = match r.u8() % 5 {
                0 => TokenMethod::Accounts,
                1 => TokenMethod::CreateAccount(r.u8()),
                2 => TokenMethod::SetActive(r.u8()),
                3 => TokenMethod::PublicKey(r.u8()),
                _ => TokenMethod::Sign(r.u8()),
            };
            let token = match r.u8() % 8 {
                0 => TokenSel::Issued(r.u8()),
                1 => TokenSel::Upper(r.u8()),
                2 => TokenSel::Flipped(r.u8()),
                3 => TokenSel::Wrong,
                4 => TokenSel::Null,
                5 => TokenSel::Missing,
                6 => TokenSel::Malformed,
                _ => TokenSel::Number,
            };
            Call::Token { method, token }
        }
        _ => Call::Raw(r.u8()),
    }
}

fn decode_tamper(r: &mut Reader<'_>) -> Tamper {
    match r.u8() % 6 {
        0 => Tamper::FlipCipher(r.u16()),
        1 => Tamper::TruncateCipher { short: r.bool(), n: r.u16() },
        2 => Tamper::FlipNonce(r.u8()),
        3 => Tamper::ShortNonce,
        4 => Tamper::BadBase64,
        _ => Tamper::TruncateBody(r.u16()),
    }
}

/// The bytes that [`decode_ops`] reads as `ops` (garbage longer than [`MAX_GARBAGE`] is cut, and
/// `Advance` and `RandomEnvelope` lengths are cut to their field widths).
pub fn encode_ops(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        encode_op(op, &mut out);
    }
    out
}

fn u16_bytes(value: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn encode_op(op: &Op, out: &mut Vec<u8>) {
    match op {
        Op::Init { c, bad_key } => out.extend([0, *c, u8::from(*bad_key)]),
        Op::Call { c, call, form } => {
            out.extend([1, *c]);
            encode_call(call, out);
            out.push(match form {
                Form::Named => 0,
                Form::Positional => 1,
                Form::UpperNonce => 2,
            });
        }
        Op::Tamper { c, call, how, then_original } => {
            out.extend([2, *c]);
            encode_call(call, out);
            encode_tamper(how, out);
            out.push(u8::from(*then_original));
        }
        Op::CrossSend { from, to, call } => {
            out.extend([3, *from, *to]);
            encode_call(call, out);
        }
        Op::Replay { c, back, hint } => out.extend([4, *c, *back, u8::from(*hint)]),
        Op::Garbage(garbage) => {
            out.push(5);
            match garbage {
                Garbage::Bytes(bytes) => {
                    let bytes = &bytes[..bytes.len().min(MAX_GARBAGE)];
                    out.extend([0, bytes.len() as u8]);
                    out.extend_from_slice(bytes);
                }
                Garbage::NotJson => out.push(1),
                Garbage::Array => out.push(2),
                Garbage::NoMethod => out.push(3),
                Garbage::PlainCall => out.push(4),
                Garbage::RandomEnvelope { len } => out.extend([5, (*len).min(255) as u8]),
            }
        }
        Op::Advance(ms) => {
            out.push(6);
            u16_bytes((*ms).min(u64::from(u16::MAX)) as u16, out);
        }
        Op::Timeout => out.push(7),
        Op::DropSession { c } => out.extend([8, *c]),
        Op::Shutdown => out.push(9),
        Op::ArmFailure(k) => out.extend([10, *k]),
        Op::PlantLegacy { dir, name, pw } => out.extend([11, *dir, *name, *pw]),
        Op::Become { c, p } => out.extend([PRINCIPAL_TAGS, *c, *p]),
        Op::Steal { from, by, call, hint } => {
            out.extend([PRINCIPAL_TAGS + 1, *from, *by, u8::from(*hint)]);
            encode_call(call, out);
        }
        Op::StealReplay { from, by, back, hint } => {
            out.extend([PRINCIPAL_TAGS + 2, *from, *by, *back, u8::from(*hint)]);
        }
    }
}

fn encode_call(call: &Call, out: &mut Vec<u8>) {
    match call {
        Call::Reinit { bad_key } => out.extend([0, u8::from(*bad_key)]),
        Call::TopDir => out.push(1),
        Call::SetDir(i) => out.extend([2, *i]),
        Call::CreateConfig { valid } => out.extend([3, u8::from(*valid)]),
        Call::Create { name, kind, pw } => {
            out.extend([4, *name]);
            match kind {
                CreateKind::Random(i) => out.extend([0, *i]),
                CreateKind::Restore { zero_len } => out.extend([1, u8::from(*zero_len)]),
                CreateKind::BadLength => out.push(2),
                CreateKind::BadMnemonic => out.push(3),
            }
            out.push(*pw);
        }
        Call::ImportGrin { name, right_pw } => out.extend([5, *name, u8::from(*right_pw)]),
        Call::Open { name, pw } => out.extend([6, *name, *pw]),
        Call::Close { name } => out.extend([7, *name]),
        Call::Mnemonic { name, pw } => out.extend([8, *name, *pw]),
        Call::ChangePassword { name, old, new } => out.extend([9, *name, *old, *new]),
        Call::Delete { name, pw } => out.extend([10, *name, *pw]),
        Call::ListWallets => out.push(11),
        Call::Token { method, token } => {
            out.push(12);
            match method {
                TokenMethod::Accounts => out.push(0),
                TokenMethod::CreateAccount(i) => out.extend([1, *i]),
                TokenMethod::SetActive(i) => out.extend([2, *i]),
                TokenMethod::PublicKey(i) => out.extend([3, *i]),
                TokenMethod::Sign(i) => out.extend([4, *i]),
            }
            match token {
                TokenSel::Issued(i) => out.extend([0, *i]),
                TokenSel::Upper(i) => out.extend([1, *i]),
                TokenSel::Flipped(i) => out.extend([2, *i]),
                TokenSel::Wrong => out.push(3),
                TokenSel::Null => out.push(4),
                TokenSel::Missing => out.push(5),
                TokenSel::Malformed => out.push(6),
                TokenSel::Number => out.push(7),
            }
        }
        Call::Raw(i) => out.extend([13, *i]),
    }
}

fn encode_tamper(how: &Tamper, out: &mut Vec<u8>) {
    match how {
        Tamper::FlipCipher(n) => {
            out.push(0);
            u16_bytes(*n, out);
        }
        Tamper::TruncateCipher { short, n } => {
            out.extend([1, u8::from(*short)]);
            u16_bytes(*n, out);
        }
        Tamper::FlipNonce(i) => out.extend([2, *i]),
        Tamper::ShortNonce => out.push(3),
        Tamper::BadBase64 => out.push(4),
        Tamper::TruncateBody(n) => {
            out.push(5);
            u16_bytes(*n, out);
        }
    }
}
