//! # keyward-unix
//!
//! Keyward's owner API over a Unix-domain socket, written only against `keyward-driver`'s public
//! API. The wire contract is `spec/transport-unix.md`: one length-prefixed JSON-RPC message each
//! way (4-byte big-endian length, then the bytes), any number per connection, answered in order;
//! a session belongs to its connection. The socket file is 0600 in a 0700 directory, and the
//! peer's uid (`SO_PEERCRED`) must be a registered, active client's (its principal, resolved by the
//! driver): any other peer is closed without an answer, and logged.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use keyward_driver::frame::{self, FrameLimits};
use keyward_driver::{Driver, Exchange, Link, LinkFuture, Listener, Peer, ServeLimits, SessionBinding};
use tokio::net::{UnixListener, UnixStream};

/// Limits of the Unix transport.
#[derive(Debug, Clone, Copy)]
pub struct UnixLimits {
    /// Most connections served at once (default 64); more wait in the kernel's queue. The driver's
    /// `owner_reserve` of them are for owners only, and one client holds at most its
    /// `per_principal` ([`keyward_driver::ConnectionLimits`]).
    pub max_connections: usize,
    /// Largest message in bytes (default 1 MiB); a larger one closes the connection.
    pub max_message_bytes: usize,
    /// A connection with no message starting for this long is closed (default 60 s).
    pub idle_timeout: Duration,
    /// A started message must arrive whole, and an answer be taken, within this long (default 10 s).
    pub io_timeout: Duration,
    /// On shutdown, connections get this long to finish the message in flight (default 5 s).
    pub shutdown_grace: Duration,
}

impl Default for UnixLimits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            max_message_bytes: 1024 * 1024,
            idle_timeout: Duration::from_secs(60),
            io_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Why the socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum UnixError {
    /// The socket's directory is open to other users.
    #[error("{0} is readable or writable by other users; use a directory only its owner can open (mode 0700)")]
    OpenDirectory(PathBuf),
    /// The socket's directory belongs to another user, who could replace the socket.
    #[error("{0} belongs to another user, who could replace the socket; use a directory this user owns (mode 0700)")]
    ForeignDirectory(PathBuf),
    /// A server already answers on the path.
    #[error("another server is listening on {0}")]
    InUse(PathBuf),
    /// Something that is not a socket is in the way.
    #[error("{0} exists and is not a socket")]
    NotSocket(PathBuf),
    /// Creating, binding or inspecting failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> UnixError + '_ {
    move |source| UnixError::Io { path: path.to_owned(), source }
}

/// A bound Unix-socket listener.
#[derive(Debug)]
pub struct UnixServer {
    listener: UnixListener,
    path: PathBuf,
    limits: UnixLimits,
}

impl UnixServer {
    /// Binds `path`: makes its directory (0700) if missing and refuses one that others can open or
    /// that another user owns,
    /// replaces a stale socket left by a crash (never a live one, never another file), and sets
    /// the socket to 0600. A peer is served only if a registered, active client has its uid (its
    /// principal, resolved by the driver); any other is closed without an answer.
    pub async fn bind(path: &Path, limits: UnixLimits) -> Result<Self, UnixError> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !dir.exists() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
        }
        if std::fs::metadata(dir).map_err(io(dir))?.mode() & 0o077 != 0 {
            return Err(UnixError::OpenDirectory(dir.to_owned()));
        }
        if let Ok(existing) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt as _;
            if !existing.file_type().is_socket() {
                return Err(UnixError::NotSocket(path.to_owned()));
            }
            if UnixStream::connect(path).await.is_ok() {
                return Err(UnixError::InUse(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(io(path))?;
        }
        let listener = UnixListener::bind(path).map_err(io(path))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io(path))?;
        // The socket file is ours: its owner is this process's effective uid.
        let own = std::fs::metadata(path).map_err(io(path))?.uid();
        // Another user who owns the directory could swap the socket for their own.
        if std::fs::metadata(dir).map_err(io(dir))?.uid() != own {
            let _ = std::fs::remove_file(path);
            return Err(UnixError::ForeignDirectory(dir.to_owned()));
        }
        Ok(Self { listener, path: path.to_owned(), limits })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves `driver` until `shutdown` completes; then removes the socket file.
    pub async fn run(self, driver: Driver, shutdown: impl Future<Output = ()>) {
        let Self { listener, path, limits } = self;
        let serve_limits = ServeLimits {
            max_connections: limits.max_connections,
            owner_reserve: driver.connection_limits().owner_reserve,
            max_handshakes: limits.max_connections,
            handshake_timeout: limits.io_timeout,
            grace: limits.shutdown_grace,
        };
        let frames =
            FrameLimits { max_bytes: limits.max_message_bytes, idle: limits.idle_timeout, io: limits.io_timeout };
        keyward_driver::serve(Accept { listener }, serve_limits, shutdown, |(mut stream, peer), seat| {
            // A uid no active client has, a client at its connection bound, a reader or signer
            // finding only the owner's reserve: refused (logged and audited) by the driver.
            let admitted = seat.admit(&driver, peer, SessionBinding::Bound);
            async move {
                if let Ok((conn, mut stopping)) = admitted {
                    frame::serve_stream(&conn, &mut stream, frames, &mut stopping).await;
                }
            }
        })
        .await;
        let _ = std::fs::remove_file(&path);
    }
}

/// The peer as the kernel reports it; one without credentials is logged (and closed by the caller).
fn admit(stream: &UnixStream) -> Option<Peer> {
    let cred = match stream.peer_cred() {
        Ok(cred) => cred,
        Err(error) => {
            tracing::warn!(%error, "refusing a Unix connection: no peer credentials");
            return None;
        }
    };
    Some(Peer::Unix { uid: cred.uid(), gid: cred.gid(), pid: cred.pid() })
}

struct Accept {
    listener: UnixListener,
}

impl Listener for Accept {
    type Conn = UnixStream;
    type Ready = (UnixStream, Peer);

    async fn accept(&mut self) -> Option<std::io::Result<UnixStream>> {
        Some(self.listener.accept().await.map(|(stream, _)| stream))
    }

    /// The peer's credentials; whether its uid is served is the driver's principal check.
    fn handshake(
        &self,
        stream: UnixStream,
        _progress: keyward_driver::Progress,
    ) -> impl Future<Output = Option<Self::Ready>> + Send + 'static {
        std::future::ready(admit(&stream).map(|peer| (stream, peer)))
    }
}

/// A client connection: a [`Link`] for [`keyward_driver::SecureSession`].
#[derive(Debug)]
pub struct UnixClient {
    stream: UnixStream,
    limits: FrameLimits,
}

impl UnixClient {
    /// Connects to the socket at `path`.
    pub async fn connect(path: &Path) -> std::io::Result<Self> {
        let limits = FrameLimits { max_bytes: 16 << 20, idle: Duration::from_secs(60), io: Duration::from_secs(60) };
        Ok(Self { stream: UnixStream::connect(path).await?, limits })
    }
}

impl Link for UnixClient {
    fn exchange(&mut self, body: Vec<u8>, _session: Option<keyward_driver::SessionId>) -> LinkFuture<'_> {
        Box::pin(async move {
            Ok(Exchange { body: frame::exchange(&mut self.stream, &body, self.limits).await?, session: None })
        })
    }
}
