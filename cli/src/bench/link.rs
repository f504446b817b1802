//! Connections: where each transport is, a worker's secure session over the owner API, and a
//! connection to the echo floor.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use keyward_driver::{SecureSession, SessionOptions};
use keyward_http::{HttpClient, HttpTarget};
use keyward_quic::QuicClient;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::plan::Transport;
use crate::call::{self, Address, BoxLink};

/// One worker's secure session over its own link; it never re-keys by itself (the server under
/// test takes any number of requests per session) and counts its requests.
pub(super) struct Session {
    inner: SecureSession<BoxLink>,
    pub(super) requests: u64,
}

impl Session {
    pub(super) async fn open(link: BoxLink) -> anyhow::Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
        let options = SessionOptions { names_session: true, rekey_after: 0, reinit_when_gone: false };
        let inner = SecureSession::open_with(link, seed, options).await.context("init_secure_api failed")?;
        Ok(Self { inner, requests: 0 })
    }

    pub(super) async fn init(&mut self) -> anyhow::Result<()> {
        self.inner.init().await.context("init_secure_api failed")?;
        self.requests = 0;
        Ok(())
    }

    pub(super) async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let value = self.inner.call(method, params).await.map_err(|e| anyhow::anyhow!("{method}: {e}"))?;
        self.requests += 1;
        Ok(value)
    }

    pub(super) async fn close(self) {
        self.inner.close().await;
    }
}

/// Where a transport is and how to reach it.
#[derive(Clone)]
pub(super) struct Endpoint {
    pub(super) transport: Transport,
    pub(super) addr: SocketAddr,
    /// Checked against the server certificate and sent as Host.
    pub(super) name: String,
    pub(super) tls: Arc<rustls::ClientConfig>,
}

impl Endpoint {
    pub(super) async fn link(&self) -> anyhow::Result<BoxLink> {
        let address = match self.transport {
            Transport::Https => {
                Address::Http { addr: self.addr, host: self.name.clone(), tls: Some(Arc::clone(&self.tls)) }
            }
            Transport::Http => Address::Http { addr: self.addr, host: self.name.clone(), tls: None },
            Transport::Quic => Address::Quic { addr: self.addr, name: self.name.clone(), tls: Arc::clone(&self.tls) },
            Transport::Tcp => bail!("the owner API is not served over raw TCP"),
        };
        call::connect(&address).await
    }

    pub(super) async fn echo(&self) -> anyhow::Result<EchoConn> {
        Ok(match self.transport {
            Transport::Https => {
                let target = HttpTarget::Tls(Arc::clone(&self.tls));
                EchoConn::Http(HttpClient::connect(self.addr, &self.name, target).await?)
            }
            Transport::Http => EchoConn::Http(HttpClient::connect(self.addr, &self.name, HttpTarget::Plain).await?),
            Transport::Quic => EchoConn::Quic(
                QuicClient::connect(self.addr, &self.name, Arc::clone(&self.tls))
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            ),
            Transport::Tcp => {
                let stream = tokio::net::TcpStream::connect(self.addr).await?;
                stream.set_nodelay(true)?;
                EchoConn::Tcp(stream)
            }
        })
    }
}

/// A connection to the echo floor.
pub(super) enum EchoConn {
    Http(HttpClient),
    Quic(QuicClient),
    Tcp(tokio::net::TcpStream),
}

/// The `Keyward-Session` header the echo workers send, so their HTTP requests are as long as the owner
/// API's.
const ECHO_SESSION: &str = "00000000000000000000000000000000";

impl EchoConn {
    pub(super) async fn exchange(&mut self, body: &[u8]) -> anyhow::Result<()> {
        let answer = match self {
            Self::Http(http) => {
                let answer = http.post(body.to_vec(), Some(ECHO_SESSION)).await?;
                anyhow::ensure!(answer.status == 200, "HTTP {}", answer.status);
                answer.body
            }
            Self::Quic(quic) => quic.call(body).await.map_err(|e| anyhow::anyhow!("{e}"))?,
            Self::Tcp(stream) => {
                let mut frame = Vec::with_capacity(body.len() + 4);
                frame.extend_from_slice(&u32::try_from(body.len())?.to_be_bytes());
                frame.extend_from_slice(body);
                stream.write_all(&frame).await?;
                let mut len = [0u8; 4];
                stream.read_exact(&mut len).await?;
                let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
                stream.read_exact(&mut answer).await?;
                answer
            }
        };
        anyhow::ensure!(answer == body, "the echo answer differs from the request");
        Ok(())
    }

    pub(super) async fn close(self) {
        if let Self::Quic(quic) = self {
            quic.close().await;
        }
    }
}
