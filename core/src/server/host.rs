//! What a host asks of the server besides answering requests: the audit queue, the registry of
//! clients, sessions and timers, shutdown, and the vault's memory region.

use super::Server;
use crate::principal::Role;
use crate::session::{SessionId, SessionTable};
use crate::state::{Host, lock};

impl Server {
    /// Writes the queued audit events to the store. It may block (an fsync): call it off the I/O
    /// threads, e.g. every second and whenever [`Server::audit_pending`] grows large.
    /// [`Server::finish`] does it after each slow call.
    pub fn flush_audit(&self) {
        crate::admin::flush_audit(&self.state);
    }

    /// How many audit events wait to be written.
    pub fn audit_pending(&self) -> usize {
        lock(&self.state.audit).len()
    }

    /// Records a refusal the host made before any request reached the core (a revoked or unknown
    /// client's handshake): who (a client name, or the peer as the host describes it), what and why.
    pub fn audit_refusal(&self, principal: &str, what: &str, outcome: &str) {
        self.state.audit(crate::audit::AuditEvent::new(principal, what, None, outcome), crate::audit::Kind::Cheap);
    }

    /// Gives the core the host's wall clock and certificate issuer (see [`Host`]). Call it before
    /// sharing the server.
    pub fn set_host(&mut self, host: std::sync::Arc<dyn Host>) {
        self.state.host = Some(host);
    }

    /// How many clients were revoked since the server started: a host that keeps connections
    /// per client closes a revoked client's when this changes.
    pub fn revocations(&self) -> u64 {
        self.state.revocations.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The role `principal` has now: `None` for an unknown or revoked client.
    pub fn role_of(&self, principal: &str) -> Option<Role> {
        self.state.role_of(principal)
    }

    /// The active client that presented this certificate key (SHA-256 of its SPKI).
    pub fn client_for_cert(&self, spki_sha256: &[u8; 32]) -> Option<String> {
        let identity = crate::principal::Identity::Cert { spki_sha256: *spki_sha256 };
        crate::state::read(&self.state.clients).active(&identity).map(|r| r.name.clone())
    }

    /// The active client registered for this uid (Unix socket).
    pub fn client_for_uid(&self, uid: u32) -> Option<String> {
        let identity = crate::principal::Identity::Uid { uid };
        crate::state::read(&self.state.clients).active(&identity).map(|r| r.name.clone())
    }

    /// Every registered client, revoked ones too, by name.
    pub fn clients(&self) -> Vec<crate::principal::ClientRecord> {
        crate::state::read(&self.state.clients).records().cloned().collect()
    }

    /// Registers a client (at first start, the host registers `default`). Writes the store.
    pub fn add_client(&self, record: crate::principal::ClientRecord) -> Result<(), String> {
        crate::admin::register(&self.state, record).map_err(|e| e.wire().1)
    }

    /// Registers a client for this run only: it is never written to the store (nor is a later
    /// change of its role, or its revocation), so the next start does not know it. `keyward serve
    /// --launcher` registers its own client, whose certificate exists only in memory, this way.
    pub fn add_transient_client(&self, record: crate::principal::ClientRecord) -> Result<(), String> {
        crate::admin::register_as(&self.state, record, crate::admin::Lifetime::ThisRun).map_err(|e| e.wire().1)
    }

    /// Gives an active client a new identity (the host's `default` client follows `keyward certs
    /// rotate` this way). Writes the store. Not reachable over the API.
    pub fn set_client_identity(&self, name: &str, identity: crate::principal::Identity) -> Result<(), String> {
        crate::admin::set_identity(&self.state, name, identity).map_err(|e| e.wire().1)
    }

    /// Live sessions of `principal`.
    pub fn session_count_of(&self, principal: &str) -> usize {
        lock(&self.sessions).count_of(principal)
    }

    /// Drops a session (its QUIC connection closed). Open wallets stay open until closed or expired.
    pub fn drop_session(&self, id: &SessionId) -> bool {
        lock(&self.sessions).remove(id)
    }

    /// Expires idle sessions and tokens. Call it at `poll_timeout()`, or whenever convenient.
    pub fn handle_timeout(&self, now_ms: u64) {
        lock(&self.sessions).expire(now_ms);
        lock(&self.state.vault).expire(now_ms);
    }

    /// When `handle_timeout` next has something to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        let sessions = lock(&self.sessions).next_expiry();
        let tokens = lock(&self.state.vault).next_expiry();
        match (sessions, tokens) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Closes every wallet and forgets every session (shutdown).
    pub fn shutdown(&self) {
        lock(&self.state.vault).close_all();
        // Coalesced audit events whose window has not ended are written now.
        crate::admin::flush_all_audit(&self.state);
        *lock(&self.sessions) = SessionTable::new(self.state.config.sessions);
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// The block of memory that holds the vault's masked seeds (address, length), for the host to
    /// lock in memory. It stays where it is for the server's life.
    pub fn vault_region(&self) -> (usize, usize) {
        lock(&self.state.vault).region()
    }

    /// Number of open wallets, i.e. masked seeds held in the vault.
    pub fn open_wallet_count(&self) -> usize {
        lock(&self.state.vault).open_count()
    }

    /// Every masked seed byte the vault holds (empty once every wallet is closed); panics if a free
    /// slot still holds bytes. For the residency tests: masked bytes tell nothing without the token.
    /// A test probe, not API: only with the `test-probes` feature, which only test crates enable.
    #[cfg(feature = "test-probes")]
    #[doc(hidden)]
    pub fn vault_masked_bytes(&self) -> Vec<u8> {
        lock(&self.state.vault).masked_bytes()
    }
}
