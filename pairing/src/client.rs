//! The front end's side: [`pair`] makes a key pair, runs the exchange with the code and returns
//! the [`Bundle`] to keep. Nothing leaves this side but the SPAKE2 message until the server has
//! proved it knows the code.

use std::net::SocketAddr;
use std::time::Duration;

use keyward_driver::frame::{self, FrameLimits};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use sha2::{Digest as _, Sha256};
use tokio::net::TcpStream;
use zeroize::Zeroizing;

use crate::bundle::{Bundle, BundleConfig};
use crate::code::PairingCode;
use crate::protocol::{self, ClientStart, Done, MAX_MESSAGE, Outcome, ProtocolError, Refusal, Reply, Request};

/// How long a whole pairing may take.
pub const PAIR_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a connection that is refused, or closed before the server's first answer (its
/// listener full, or not open yet), is tried again: nothing was exchanged, so nothing is spent.
pub const CONNECT_RETRY: Duration = Duration::from_secs(5);

/// Why pairing failed. No variant carries the code or a key.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    /// The pairing address is not `tcp://HOST:PORT` or `HOST:PORT`.
    #[error("the pairing address must be tcp://IP:PORT, as `keyward clients pair` printed it")]
    BadUrl,
    /// The server could not be reached or the connection failed.
    #[error("cannot reach the pairing listener: {0} (is a pairing code live? the listener is open only then)")]
    Io(String),
    /// The server refused (no live code with this id, a code voided or expired, ...).
    #[error("the server refused: {0}")]
    Refused(String),
    /// The server did not prove it knows the code: a mistyped code, or not the server the code came
    /// from. Nothing was sent but the SPAKE2 message, and nothing was written.
    #[error(
        "the server did not prove it knows this code: check the code (a wrong code counts as one of its 3 attempts); \
         nothing was sent and nothing written"
    )]
    ServerNotConfirmed,
    /// The server knew the code but could not register this client.
    #[error("the server could not register this client: {0}")]
    NotRegistered(String),
    /// The server answered something that is not the protocol, or a certificate not for our key.
    #[error("the server broke the pairing protocol: {0}")]
    Protocol(String),
    /// No key pair could be made.
    #[error("cannot make a key pair: {0}")]
    Key(String),
}

/// Reads a pairing address: `tcp://IP:PORT` or `IP:PORT`.
pub fn parse_pair_url(url: &str) -> Result<SocketAddr, PairError> {
    url.strip_prefix("tcp://").unwrap_or(url).trim_end_matches('/').parse().map_err(|_| PairError::BadUrl)
}

fn limits() -> FrameLimits {
    FrameLimits { max_bytes: MAX_MESSAGE, idle: PAIR_TIMEOUT, io: PAIR_TIMEOUT }
}

/// Sends one message and reads the answer: the answer's bytes, or the server's refusal.
async fn round(stream: &mut TcpStream, message: &[u8]) -> Result<Vec<u8>, PairError> {
    frame::write_frame(stream, message).await.map_err(|e| PairError::Io(e.to_string()))?;
    match frame::read_frame(stream, limits()).await {
        Ok(Some(answer)) => Ok(answer),
        Ok(None) => Err(PairError::Io("the server closed the connection".into())),
        Err(error) => Err(PairError::Io(error.to_string())),
    }
}

/// Connects and sends the first message; a connection refused, or closed or reset before any
/// answer came, is tried again (every 100 ms, doubling to 1 s) for [`CONNECT_RETRY`].
async fn first_round(addr: SocketAddr, hello: &[u8]) -> Result<(TcpStream, Vec<u8>), PairError> {
    let deadline = tokio::time::Instant::now() + CONNECT_RETRY;
    let mut pause = Duration::from_millis(100);
    loop {
        let attempt = async {
            let mut stream = TcpStream::connect(addr).await.map_err(|e| PairError::Io(e.to_string()))?;
            let answer = round(&mut stream, hello).await?;
            Ok::<_, PairError>((stream, answer))
        };
        match attempt.await {
            Err(PairError::Io(why)) if tokio::time::Instant::now() + pause < deadline => {
                tracing::debug!(%why, "pairing connection failed before any answer; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

fn refusal(answer: &[u8]) -> Option<String> {
    protocol::parse::<Refusal>(answer).ok().map(|r| r.error)
}

/// Pairs with the server at `addr` using `code`: a new ECDSA P-256 key pair, its certificate
/// (checked to be for that key) and the CA's, the role and the server's addresses. `name`, if
/// given, must be the name the owner chose. Write the result with [`Bundle::write`].
pub async fn pair(addr: SocketAddr, code: &PairingCode, name: Option<&str>) -> Result<Bundle, PairError> {
    tokio::time::timeout(PAIR_TIMEOUT, pair_inner(addr, code, name))
        .await
        .unwrap_or_else(|_| Err(PairError::Io("timed out".into())))
}

async fn pair_inner(addr: SocketAddr, code: &PairingCode, name: Option<&str>) -> Result<Bundle, PairError> {
    let key = rcgen::KeyPair::generate().map_err(|e| PairError::Key(e.to_string()))?;
    let (start, hello) = ClientStart::new(code);
    let (mut stream, answer) = first_round(addr, &protocol::to_bytes(&hello)).await?;
    let reply: Reply = match protocol::parse(&answer) {
        Ok(reply) => reply,
        Err(error) => return Err(refusal(&answer).map_or(PairError::Protocol(error.to_string()), PairError::Refused)),
    };
    let mut exchange = start.confirm(&reply).map_err(|_| PairError::ServerNotConfirmed)?;
    let request = Request { name: name.map(str::to_owned), public_key: key.public_key_pem() };
    let answer = round(&mut stream, &protocol::to_bytes(&exchange.finish(&request))).await?;
    let done: Done = match protocol::parse(&answer) {
        Ok(done) => done,
        Err(error) => return Err(refusal(&answer).map_or(PairError::Protocol(error.to_string()), PairError::Refused)),
    };
    let granted = match exchange.outcome(&done) {
        Ok(Outcome::Ok(granted)) => granted,
        Ok(Outcome::Error(why)) => return Err(PairError::NotRegistered(why)),
        Err(ProtocolError::WrongCode) => return Err(PairError::Protocol("its last message does not open".into())),
        Err(error) => return Err(PairError::Protocol(error.to_string())),
    };
    if name.is_some_and(|name| name != granted.name) {
        return Err(PairError::Protocol("it registered another name".into()));
    }
    check_certificate(&granted.certificate, &key)?;
    CertificateDer::from_pem_slice(granted.ca_certificate.as_bytes())
        .map_err(|_| PairError::Protocol("its CA certificate is not PEM".into()))?;
    Ok(Bundle {
        ca_certificate_pem: granted.ca_certificate,
        certificate_pem: granted.certificate,
        key_pem: Zeroizing::new(key.serialize_pem()),
        config: BundleConfig { name: granted.name, role: granted.role, endpoints: granted.endpoints },
    })
}

/// Checks that the certificate is X.509 over our key.
fn check_certificate(pem: &str, key: &rcgen::KeyPair) -> Result<(), PairError> {
    use rcgen::PublicKeyData as _;
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| PairError::Protocol("its certificate is not PEM".into()))?;
    let got =
        keyward_driver::spki_sha256(&der).ok_or_else(|| PairError::Protocol("its certificate is not X.509".into()))?;
    let ours: [u8; 32] = Sha256::digest(key.subject_public_key_info()).into();
    if got != ours {
        return Err(PairError::Protocol("the certificate is for another key".into()));
    }
    Ok(())
}
