//! A small HTTP/1.1 client for the owner API (keep-alive, optional TLS with a client certificate),
//! used by `keyward call`, the end-to-end tests and `keyward bench`.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use keyward_core::SessionId;
use keyward_driver::{LinkError, LinkErrorKind};
use rustls::pki_types::ServerName;

use crate::{OWNER_PATH, SESSION_HEADER};

/// How to reach the server.
#[derive(Clone)]
pub enum HttpTarget {
    /// Plain HTTP (loopback only on the server side).
    Plain,
    /// HTTPS with this client config (Keyward's CA as the only root, the client certificate).
    Tls(Arc<rustls::ClientConfig>),
}

impl std::fmt::Debug for HttpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plain => "Plain",
            Self::Tls(_) => "Tls",
        })
    }
}

/// Client failures. None carries a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// TCP connect failed.
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// The server name is not valid for TLS.
    #[error("invalid server name for TLS: {0}")]
    ServerName(String),
    /// The TLS handshake failed (or the server refused our certificate).
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    /// HTTP failed (connection closed, protocol error; a refused client certificate shows here).
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("bad request: {0}")]
    Request(String),
}

/// An HTTP answer.
#[derive(Debug)]
pub struct HttpAnswer {
    /// The status.
    pub status: StatusCode,
    /// The `Keyward-Session` header, if any.
    pub session: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// One keep-alive connection to the owner API.
pub struct HttpClient {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").field("host", &self.host).finish()
    }
}

impl HttpClient {
    /// Connects to `addr`; `server_name` is checked against the server certificate and sent as Host.
    pub async fn connect(addr: SocketAddr, server_name: &str, target: HttpTarget) -> Result<Self, ClientError> {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(ClientError::Connect)?;
        let _ = stream.set_nodelay(true);
        let host = if server_name.contains(':') {
            format!("[{server_name}]:{}", addr.port())
        } else {
            format!("{server_name}:{}", addr.port())
        };
        let sender = match target {
            HttpTarget::Plain => {
                let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(connection);
                sender
            }
            HttpTarget::Tls(config) => {
                let mut config = (*config).clone();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let name = ServerName::try_from(server_name.to_owned())
                    .map_err(|_| ClientError::ServerName(server_name.to_owned()))?;
                let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
                let stream = connector.connect(name, stream).await.map_err(ClientError::Tls)?;
                let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(connection);
                sender
            }
        };
        Ok(Self { sender, host })
    }

    /// POSTs a body to `/v3/owner`, naming `session` if given.
    pub async fn post(&mut self, body: Vec<u8>, session: Option<&str>) -> Result<HttpAnswer, ClientError> {
        self.post_to(OWNER_PATH, body, session, None).await
    }

    /// POSTs a body to any path, with an optional Host override (for tests of the server's rules).
    pub async fn post_to(
        &mut self,
        path: &str,
        body: Vec<u8>,
        session: Option<&str>,
        host: Option<&str>,
    ) -> Result<HttpAnswer, ClientError> {
        self.sender.ready().await?;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::HOST, host.unwrap_or(&self.host))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(session) = session {
            request = request.header(SESSION_HEADER, session);
        }
        let request = request.body(Full::new(Bytes::from(body))).map_err(|e| ClientError::Request(e.to_string()))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let session =
            response.headers().get(SESSION_HEADER).and_then(|v: &HeaderValue| v.to_str().ok()).map(str::to_owned);
        let body = response.into_body().collect().await?.to_bytes().to_vec();
        Ok(HttpAnswer { status, session, body })
    }
}

/// HTTP(S) as a [`keyward_driver::Link`]: `session` goes in the `Keyward-Session` header, and the
/// answer's header comes back in [`keyward_driver::Exchange::session`]. A status other than 200
/// is a link error.
impl keyward_driver::Link for HttpClient {
    fn exchange(&mut self, body: Vec<u8>, session: Option<SessionId>) -> keyward_driver::LinkFuture<'_> {
        Box::pin(async move {
            let named = session.map(|id| id.to_string());
            let answer = self.post(body, named.as_deref()).await.map_err(|e| {
                let kind = match e {
                    ClientError::Http(_) => LinkErrorKind::Closed,
                    _ => LinkErrorKind::Unreachable,
                };
                LinkError::new(kind, e.to_string())
            })?;
            if answer.status != StatusCode::OK {
                return Err(LinkError::new(
                    LinkErrorKind::Refused,
                    format!("the server answered HTTP {}", answer.status),
                ));
            }
            let session = match answer.session.as_deref().map(SessionId::parse) {
                None => None,
                Some(Some(id)) => Some(id),
                Some(None) => {
                    return Err(LinkError::new(
                        LinkErrorKind::Refused,
                        "the server named a session that is not a session id",
                    ));
                }
            };
            Ok(keyward_driver::Exchange { body: answer.body, session })
        })
    }
}
