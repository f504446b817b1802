//! Who is calling: principals, their roles, and the client registry's records.
//!
//! Every request reaches the core with its [`Principal`], named by the transport through the
//! driver: the registered client whose certificate (HTTPS, QUIC) or uid (Unix socket) the peer
//! presented, `local-http` for loopback plain HTTP, or `local` for an embedder's in-process caller.
//! The registry ([`ClientRecord`], kept by the [`Store`](crate::Store)) gives each its [`Role`].

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// What a principal may do. Ordered: a higher role may do everything a lower one may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Look: list and open/close wallets with their password, accounts, public keys, verify.
    Reader,
    /// Reader, and use keys: sign, add accounts, set the active account, embedder signing methods.
    Signer,
    /// Everything: the lifecycle (create, restore, import, mnemonic, password, delete), the
    /// configuration, client administration and the audit log.
    Owner,
}

impl Role {
    /// All roles, lowest first.
    pub const ALL: [Role; 3] = [Role::Reader, Role::Signer, Role::Owner];

    /// The role's name as `spec/openrpc.json` (`x-keyward-role`), the registry and the CLI write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::Signer => "signer",
            Self::Owner => "owner",
        }
    }

    /// The role called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == name)
    }

    /// Whether this role may call a method that needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A caller, by its registered name. Cheap to clone (one reference count).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal(Arc<str>);

impl Principal {
    /// The principal of loopback plain HTTP (role from the host's config; the weakest door).
    pub const LOCAL_HTTP: &'static str = "local-http";
    /// The principal of an embedder's in-process caller (and of the core's own tests): an owner.
    pub const LOCAL: &'static str = "local";

    /// The principal called `name`.
    pub fn new(name: &str) -> Self {
        Self(Arc::from(name))
    }

    /// The in-process caller, [`Principal::LOCAL`].
    pub fn local() -> Self {
        Self::new(Self::LOCAL)
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Principal({})", self.0)
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a registered client proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Identity {
    /// A client certificate (HTTPS, QUIC), by the SHA-256 of its SubjectPublicKeyInfo.
    Cert {
        /// SHA-256 of the certificate's SPKI (DER).
        #[serde(with = "hex_32")]
        spki_sha256: [u8; 32],
    },
    /// A local user on the Unix socket, by uid (`SO_PEERCRED`).
    Uid {
        /// The uid.
        uid: u32,
    },
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cert { spki_sha256 } => write!(f, "cert sha256:{}", hex::encode(spki_sha256)),
            Self::Uid { uid } => write!(f, "uid {uid}"),
        }
    }
}

/// One registered client: its name, role, identity, and when it was made and revoked (Unix
/// milliseconds, from the host's wall clock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRecord {
    /// Unique name (see [`valid_client_name`]).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// How it authenticates.
    pub identity: Identity,
    /// When it was registered.
    pub created_unix_ms: u64,
    /// When it was revoked; a revoked client is never served again (its name stays taken).
    pub revoked_unix_ms: Option<u64>,
}

impl ClientRecord {
    /// Whether it may still be served.
    pub fn is_active(&self) -> bool {
        self.revoked_unix_ms.is_none()
    }

    /// The record as the store keeps it (JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of plain fields always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A record read back from the store; `None` for bytes that are not a valid record.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let record: Self = serde_json::from_slice(bytes).ok()?;
        valid_client_name(&record.name).then_some(record)
    }
}

/// Whether `name` may name a client: 1 to 64 characters of `a-z A-Z 0-9 . _ -`, not starting with
/// `.` or `-`, and not one of the [`RESERVED_NAMES`].
pub fn valid_client_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.starts_with(['.', '-'])
        && !RESERVED_NAMES.contains(&name)
}

/// Names no client may take: the built-in principals, and the names the audit log gives to the
/// server itself (`keyward`) and gave, before it ran through an in-process server as `local`, to the
/// CLI working on a stopped server's store (`offline`: older records keep it).
pub const RESERVED_NAMES: [&str; 4] = [Principal::LOCAL, Principal::LOCAL_HTTP, "keyward", "offline"];

/// The name of a launched server's own client (`keyward serve --launcher`), registered for one run
/// only. No client is registered under it to be kept (a kept `launcher` would take the name from
/// every later run); a store that already has one still loads it, and its launcher's client then
/// gets [`launcher_name`]'s other name.
pub const LAUNCHER: &str = "launcher";

/// The name for a launched server's client: [`LAUNCHER`], or `launcher-<pid>` when a kept record
/// (made before the name was held back) has it.
pub fn launcher_name(taken: impl Fn(&str) -> bool, pid: u32) -> String {
    if taken(LAUNCHER) { format!("{LAUNCHER}-{pid}") } else { LAUNCHER.to_owned() }
}

/// The registry as the core keeps it in memory: records by name, and the active ones by identity.
#[derive(Debug, Default)]
pub struct Registry {
    records: std::collections::BTreeMap<String, ClientRecord>,
    by_cert: std::collections::HashMap<[u8; 32], String>,
    by_uid: std::collections::HashMap<u32, String>,
    /// Names of the clients registered for this run only (`keyward serve --launcher`'s own client):
    /// never written to the store, gone at the next start.
    transient: std::collections::BTreeSet<String>,
}

impl Registry {
    /// The registry of `records` (as loaded from the store).
    pub fn new(records: Vec<ClientRecord>) -> Self {
        let mut registry = Self::default();
        for record in records {
            registry.put(record);
        }
        registry
    }

    /// Adds or replaces (by name) a record.
    pub fn put(&mut self, record: ClientRecord) {
        if let Some(old) = self.records.remove(&record.name) {
            self.unindex(&old);
        }
        if record.is_active() {
            match record.identity {
                Identity::Cert { spki_sha256 } => self.by_cert.insert(spki_sha256, record.name.clone()),
                Identity::Uid { uid } => self.by_uid.insert(uid, record.name.clone()),
            };
        }
        self.records.insert(record.name.clone(), record);
    }

    fn unindex(&mut self, record: &ClientRecord) {
        match record.identity {
            Identity::Cert { spki_sha256 } if self.by_cert.get(&spki_sha256) == Some(&record.name) => {
                self.by_cert.remove(&spki_sha256);
            }
            Identity::Uid { uid } if self.by_uid.get(&uid) == Some(&record.name) => {
                self.by_uid.remove(&uid);
            }
            _ => {}
        }
    }

    /// Adds a record that is never written to the store (see [`Registry::is_transient`]).
    pub fn put_transient(&mut self, record: ClientRecord) {
        self.transient.insert(record.name.clone());
        self.put(record);
    }

    /// Whether the record called `name` lives for this run only: a change to it (a new role, a
    /// revocation) is not written to the store either.
    pub fn is_transient(&self, name: &str) -> bool {
        self.transient.contains(name)
    }

    /// The record called `name`, active or revoked.
    pub fn get(&self, name: &str) -> Option<&ClientRecord> {
        self.records.get(name)
    }

    /// The active client with this identity.
    pub fn active(&self, identity: &Identity) -> Option<&ClientRecord> {
        let name = match identity {
            Identity::Cert { spki_sha256 } => self.by_cert.get(spki_sha256),
            Identity::Uid { uid } => self.by_uid.get(uid),
        }?;
        self.records.get(name)
    }

    /// Every record, by name.
    pub fn records(&self) -> impl Iterator<Item = &ClientRecord> {
        self.records.values()
    }
}

/// 32 bytes as 64 lowercase hex characters in serde (records the store keeps).
pub(crate) mod hex_32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_named() {
        assert!(Role::Owner.allows(Role::Signer) && Role::Signer.allows(Role::Reader));
        assert!(!Role::Reader.allows(Role::Signer) && !Role::Signer.allows(Role::Owner));
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("admin"), None);
    }

    #[test]
    fn principals_roles_and_identities_print_their_names() {
        assert_eq!(Role::Signer.to_string(), "signer");
        let principal = Principal::new("dashboard");
        assert_eq!((principal.name(), principal.to_string()), ("dashboard", "dashboard".to_owned()));
        assert_eq!(format!("{principal:?}"), "Principal(dashboard)");
        assert_eq!(Principal::local().name(), "local");
        assert_eq!(Identity::Uid { uid: 1000 }.to_string(), "uid 1000");
        assert_eq!(Identity::Cert { spki_sha256: [0xab; 32] }.to_string(), format!("cert sha256:{}", "ab".repeat(32)));
    }

    #[test]
    fn client_names_are_1_to_64_safe_characters() {
        assert!(valid_client_name("a") && valid_client_name(&"a".repeat(64)) && valid_client_name("a.b_c-D9"));
        for bad in ["", &"a".repeat(65), ".a", "-a", "a/b", "a b", "keyward", "offline", "local-http"] {
            assert!(!valid_client_name(bad), "{bad:?}");
        }
    }

    fn record(name: &str, identity: Identity, revoked: Option<u64>) -> ClientRecord {
        ClientRecord { name: name.into(), role: Role::Signer, identity, created_unix_ms: 1, revoked_unix_ms: revoked }
    }

    #[test]
    fn the_registry_finds_active_clients_by_identity_only() {
        let cert = Identity::Cert { spki_sha256: [1; 32] };
        let uid = Identity::Uid { uid: 1000 };
        let mut registry = Registry::new(vec![record("a", cert, None), record("b", uid, None)]);
        assert!(record("a", cert, None).is_active() && !record("a", cert, Some(2)).is_active());
        assert_eq!(registry.active(&cert).map(|r| r.name.as_str()), Some("a"));
        assert_eq!(registry.active(&uid).map(|r| r.name.as_str()), Some("b"));
        assert_eq!(registry.records().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        // Revoking keeps the record but no identity finds it.
        registry.put(record("a", cert, Some(5)));
        assert_eq!(registry.active(&cert), None);
        assert_eq!(registry.get("a").and_then(|r| r.revoked_unix_ms), Some(5));
        // A record that moves to a new identity frees its old one; another's identity stays indexed.
        registry.put(record("b", Identity::Uid { uid: 1001 }, None));
        assert_eq!(registry.active(&uid), None);
        assert_eq!(registry.active(&Identity::Uid { uid: 1001 }).map(|r| r.name.as_str()), Some("b"));
        registry.put(record("c", cert, None));
        registry.put(record("a", Identity::Uid { uid: 7 }, Some(6)));
        assert_eq!(registry.active(&cert).map(|r| r.name.as_str()), Some("c"), "a's old entry was not its to remove");
        registry.put(record("d", Identity::Uid { uid: 9 }, None));
        registry.put(record("e", Identity::Uid { uid: 9 }, None));
        registry.put(record("d", Identity::Uid { uid: 10 }, None));
        assert_eq!(registry.active(&Identity::Uid { uid: 9 }).map(|r| r.name.as_str()), Some("e"));
        assert_eq!(registry.get("zz"), None);
    }

    #[test]
    fn records_round_trip_and_bad_bytes_are_refused() {
        let record = ClientRecord {
            name: "dashboard".into(),
            role: Role::Reader,
            identity: Identity::Cert { spki_sha256: [7; 32] },
            created_unix_ms: 1,
            revoked_unix_ms: None,
        };
        assert_eq!(ClientRecord::from_bytes(&record.to_bytes()), Some(record.clone()));
        let uid = ClientRecord { identity: Identity::Uid { uid: 1000 }, revoked_unix_ms: Some(2), ..record };
        assert_eq!(ClientRecord::from_bytes(&uid.to_bytes()), Some(uid));
        for bad in [&b""[..], b"{}", b"[1]", br#"{"name":"../x","role":"owner","identity":{"uid":{"uid":1}},"created_unix_ms":1,"revoked_unix_ms":null}"#] {
            assert_eq!(ClientRecord::from_bytes(bad), None);
        }
        assert!(valid_client_name("r1") && !valid_client_name("local") && !valid_client_name("a b"));
    }
}
