//! The in-process server of `keyward clients` and `keyward audit` when no server runs on the data
//! directory.
//!
//! A stopped server's data directory is served by the command itself: its store (opened, and so
//! locked, for the command: a `keyward serve` cannot start in between) under a
//! [`keyward_core::Server`] of its own, with the host `keyward serve` gives its core
//! ([`ServeHost`]: the system's wall clock, and certificates signed with the set's `ca.key`, or the
//! key of `--ca-key`). The command then makes the very owner calls it makes to a running server
//! (`add_client`, `list_clients`, `set_client_role`, `revoke_client`, `audit_log`), through the
//! same [`keyward_driver::SecureSession`], over a [`LocalLink`]: the core applies its own rules and
//! answers with its own texts, and records the changes in the audit log under its in-process
//! principal, [`Principal::LOCAL`] (`local`). (Before, the CLI changed the store itself and
//! recorded its changes as `offline`; older logs still hold such records, and no client may take
//! either name.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use keyward_core::Incoming;
use keyward_core::SessionId;
use keyward_core::{Principal, Server, ServerConfig};
use keyward_driver::{Exchange, Link, LinkError, LinkErrorKind, LinkFuture};
use keyward_store::FjallStore;

use crate::principals::{self, ServeHost};

/// How a command's in-process server is made.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Sign new clients' certificates with this CA key (PEM) instead of the set's `ca.key`.
    pub ca_key: Option<PathBuf>,
    /// Refuse a store whose client registry cannot be read (the commands that change the
    /// registry), rather than serve it with none.
    pub needs_registry: bool,
}

/// A [`Link`] to a core in this process: each message is handled on a blocking thread as the
/// in-process owner ([`Principal::LOCAL`]) at the system clock's time, and the audit events it
/// queued are written to the store before its answer returns.
#[derive(Debug)]
pub struct LocalLink {
    core: Arc<Server>,
}

impl LocalLink {
    /// A core over `store`, the store of the data directory `data_dir`, with the host of `keyward
    /// serve` on the data directory's certificate set (and `options.ca_key`).
    pub fn serve(data_dir: &Path, store: FjallStore, options: &Options) -> anyhow::Result<Self> {
        if options.needs_registry {
            // A registry that cannot be read would be served empty: names taken would look free.
            keyward_core::Store::load_clients(&store)
                .map_err(|e| anyhow::anyhow!("cannot read the client registry: {e}"))?;
        }
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut *seed).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
        let config = ServerConfig { data_root: data_dir.display().to_string(), ..ServerConfig::default() };
        let mut core = Server::new(config, Box::new(store), *seed);
        let host = ServeHost::in_process(crate::serve::tls_dir(data_dir), options.ca_key.clone());
        core.set_host(Arc::new(host));
        Ok(Self { core: Arc::new(core) })
    }
}

impl Drop for LocalLink {
    /// The command is done: coalesced audit events whose window has not ended are written now.
    fn drop(&mut self) {
        self.core.shutdown();
    }
}

impl Link for LocalLink {
    fn exchange(&mut self, body: Vec<u8>, session: Option<SessionId>) -> LinkFuture<'_> {
        let core = Arc::clone(&self.core);
        Box::pin(async move {
            let outgoing = tokio::task::spawn_blocking(move || {
                let incoming = Incoming {
                    body: &body,
                    session,
                    recent: None,
                    principal: &Principal::local(),
                    now_ms: principals::unix_time_ms(),
                };
                let outgoing = core.handle(incoming);
                core.flush_audit();
                outgoing
            })
            .await
            .context("the in-process server stopped")
            .map_err(|error| LinkError::new(LinkErrorKind::Closed, format!("{error:#}")))?;
            Ok(Exchange { body: outgoing.body, session: outgoing.session })
        })
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

    use keyward_driver::SecureSession;
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn owner_calls_run_on_the_store_and_are_audited_as_local() {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallStore::open(&dir.path().join("store")).unwrap();
        let options = Options { needs_registry: true, ..Options::default() };
        let link = LocalLink::serve(dir.path(), store, &options).unwrap();
        let mut session = SecureSession::open(link).await.unwrap();
        let params = json!({"name": "u1", "role": "reader", "public_key": null, "uid": 4242});
        session.call("add_client", params.clone()).await.unwrap();
        let error = session.call("add_client", params).await.unwrap_err().to_string();
        assert!(error.contains("a client called 'u1' exists (names are never reused)"), "{error}");
        let log = session.call("audit_log", json!({"after": 0, "limit": null})).await.unwrap();
        let events: Vec<_> = log["records"].as_array().unwrap().iter().map(|r| r["event"].clone()).collect();
        assert_eq!(events[0]["principal"], "local", "{events:?}");
        assert_eq!(
            (&events[0]["method"], &events[0]["wallet"], &events[0]["target"], &events[0]["outcome"]),
            (&json!("add_client"), &json!(null), &json!("u1"), &json!("ok"))
        );
        assert_eq!(events.len(), 2, "the refused add is recorded too: {events:?}");
        session.close().await;
    }
}
