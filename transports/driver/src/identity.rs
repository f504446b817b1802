//! The client-certificate key a transport reports for its peer: the SHA-256 of the certificate's
//! SubjectPublicKeyInfo (what the client registry records), read with a minimal DER walk.

use sha2::{Digest as _, Sha256};

/// One DER element: its tag, and its whole encoding and its contents within `input`.
struct Element<'a> {
    tag: u8,
    whole: &'a [u8],
    contents: &'a [u8],
}

/// The element at the start of `input`, and what follows it.
fn element(input: &[u8]) -> Option<(Element<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        (bytes.iter().fold(0usize, |len, b| (len << 8) | usize::from(*b)), rest)
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    let (contents, after) = rest.split_at(len);
    Some((Element { tag, whole: &input[..header + len], contents }, after))
}

/// The SubjectPublicKeyInfo of an X.509 certificate (DER): the field after the subject in the
/// `tbsCertificate`.
pub fn spki(cert_der: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    let (certificate, _) = element(cert_der)?;
    let (tbs, _) = element(certificate.contents)?;
    if certificate.tag != SEQUENCE || tbs.tag != SEQUENCE {
        return None;
    }
    let mut fields = tbs.contents;
    // version [0] EXPLICIT (absent for v1), then serial, signature, issuer, validity, subject.
    if element(fields)?.0.tag == 0xa0 {
        fields = element(fields)?.1;
    }
    for _ in 0..5 {
        fields = element(fields)?.1;
    }
    let (spki, _) = element(fields)?;
    (spki.tag == SEQUENCE).then_some(spki.whole)
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo, or `None` if it is not a certificate.
pub fn spki_sha256(cert_der: &[u8]) -> Option<[u8; 32]> {
    spki(cert_der).map(|spki| Sha256::digest(spki).into())
}
