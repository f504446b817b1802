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
    /// The server refused this client's certificate and its TLS alert says why: revoked
    /// ([`LinkErrorKind::Revoked`]) or unknown to it ([`LinkErrorKind::Unknown`]).
    #[error("{0}")]
    Refused(LinkError),
}

/// How long a failed request waits for its connection's own error (which says why the server
/// closed it, a TLS alert say) once the request has failed.
const CONNECTION_ERROR_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The connection task's end: `None` while it runs, then the refusal its error carried, if any.
type Ended = tokio::sync::watch::Receiver<Option<Option<LinkError>>>;

/// What a connection's reads and writes saw of a refusal: hyper ends a connection that fails while
/// no request is in flight with `Ok(())`, dropping the error (the server's alert may arrive before
/// the first request is written), so the stream keeps it.
type Seen = Arc<std::sync::Mutex<Option<LinkError>>>;

/// A stream that notes the first refusal (a TLS alert naming this client) its reads or writes fail with.
struct Watched<S> {
    inner: S,
    seen: Seen,
}

impl<S> Watched<S> {
    fn note<T>(&self, result: std::task::Poll<std::io::Result<T>>) -> std::task::Poll<std::io::Result<T>> {
        if let std::task::Poll::Ready(Err(error)) = &result
            && let Some(refusal) = keyward_driver::refusal_in(error)
            && let Ok(mut seen) = self.seen.lock()
        {
            seen.get_or_insert(refusal);
        }
        result
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let result = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        self.note(result)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let result = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(result)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let result = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.note(result)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let result = std::pin::Pin::new(&mut self.inner).poll_shutdown(cx);
        self.note(result)
    }
}

/// Runs the connection on its own task, keeping what its error (or, if it ended quietly, its
/// stream, `seen`) says about this client's certificate: with TLS 1.3 the server's refusal arrives
/// after the client's handshake, as an alert the connection task reads, not the request.
fn drive<C>(connection: C, seen: Seen) -> Ended
where
    C: std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
{
    let (tell, ended) = tokio::sync::watch::channel(None);
    tokio::spawn(async move {
        let result = connection.await;
        let from_stream = seen.lock().ok().and_then(|mut seen| seen.take());
        let refusal = result.err().and_then(|error| keyward_driver::refusal_in(&error)).or(from_stream);
        let _ = tell.send(Some(refusal));
    });
    ended
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
    ended: Ended,
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
        let (sender, ended) = match target {
            HttpTarget::Plain => {
                let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                (sender, drive(connection, Seen::default()))
            }
            HttpTarget::Tls(config) => {
                let mut config = (*config).clone();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let name = ServerName::try_from(server_name.to_owned())
                    .map_err(|_| ClientError::ServerName(server_name.to_owned()))?;
                let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
                let stream = connector.connect(name, stream).await.map_err(|error| {
                    keyward_driver::refusal_in(&error).map_or(ClientError::Tls(error), ClientError::Refused)
                })?;
                let seen = Seen::default();
                let stream = Watched { inner: stream, seen: Arc::clone(&seen) };
                let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                (sender, drive(connection, seen))
            }
        };
        Ok(Self { sender, host, ended })
    }

    /// `error`, or the refusal the connection's own error carried if the connection ended with one.
    async fn why(&mut self, error: hyper::Error) -> ClientError {
        let ended = tokio::time::timeout(CONNECTION_ERROR_WAIT, self.ended.wait_for(Option::is_some)).await;
        match ended {
            Ok(Ok(end)) => match end.as_ref().and_then(Option::clone) {
                Some(refusal) => ClientError::Refused(refusal),
                None => ClientError::Http(error),
            },
            _ => ClientError::Http(error),
        }
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
        if let Err(error) = self.sender.ready().await {
            return Err(self.why(error).await);
        }
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::HOST, host.unwrap_or(&self.host))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(session) = session {
            request = request.header(SESSION_HEADER, session);
        }
        let request = request.body(Full::new(Bytes::from(body))).map_err(|e| ClientError::Request(e.to_string()))?;
        let response = match self.sender.send_request(request).await {
            Ok(response) => response,
            Err(error) => return Err(self.why(error).await),
        };
        let status = response.status();
        let session =
            response.headers().get(SESSION_HEADER).and_then(|v: &HeaderValue| v.to_str().ok()).map(str::to_owned);
        let body = match response.into_body().collect().await {
            Ok(body) => body.to_bytes().to_vec(),
            Err(error) => return Err(self.why(error).await),
        };
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
                    ClientError::Refused(refusal) => return refusal,
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
