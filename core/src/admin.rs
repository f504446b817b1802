//! Client administration and the audit log over the API (owner only): `add_client`,
//! `pair_client`, `list_clients`, `set_client_role`, `revoke_client`, `audit_log`.

use serde_json::{Value, json};

use crate::audit::AuditRecord;
use crate::jsonrpc::{MethodError, string};
use crate::principal::{ClientRecord, Identity, Principal, Role, valid_client_name};
use crate::state::{CallContext, State, lock, read, store_error, write};

/// Most audit records one `audit_log` call answers.
pub const AUDIT_PAGE_MAX: usize = 1000;

/// A client's record as `list_clients` answers it.
pub fn client_json(record: &ClientRecord) -> Value {
    let identity = match record.identity {
        Identity::Cert { spki_sha256 } => json!({"cert": {"spki_sha256": hex::encode(spki_sha256)}}),
        Identity::Uid { uid } => json!({"uid": uid}),
    };
    json!({
        "name": record.name,
        "role": record.role.as_str(),
        "identity": identity,
        "created_unix_ms": record.created_unix_ms,
        "revoked_unix_ms": record.revoked_unix_ms,
    })
}

fn role_param(value: &Value) -> Result<Role, MethodError> {
    let name = string(value, "role")?;
    Role::parse(name).ok_or_else(|| MethodError::Argument("role must be reader, signer or owner".into()))
}

fn client_name(value: &Value) -> Result<&str, MethodError> {
    let name = string(value, "name")?;
    if !valid_client_name(name) {
        let why = "a client name is 1 to 64 characters of A-Z a-z 0-9 . _ - (not starting with . or -)";
        return Err(MethodError::Argument(why.into()));
    }
    Ok(name)
}

/// Registers a client: its record goes to the store, then to the registry in memory.
pub(crate) fn register(state: &State, record: ClientRecord) -> Result<(), MethodError> {
    register_as(state, record, Lifetime::Kept)
}

/// How long a registration lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifetime {
    /// In the store: the client is known at every start.
    Kept,
    /// In memory only, for this run (the launcher's client).
    ThisRun,
}

/// Registers a client for `lifetime`.
pub(crate) fn register_as(state: &State, record: ClientRecord, lifetime: Lifetime) -> Result<(), MethodError> {
    if !valid_client_name(&record.name) || record.name == Principal::LOCAL_HTTP {
        return Err(MethodError::Argument(format!("'{}' cannot name a client", record.name)));
    }
    if lifetime == Lifetime::Kept && record.name == crate::principal::LAUNCHER {
        return Err(MethodError::Argument(format!(
            "'{}' is the name of a launched server's own client (keyward serve --launcher): choose another",
            record.name
        )));
    }
    let mut clients = write(&state.clients);
    if clients.get(&record.name).is_some() {
        return Err(MethodError::Argument(format!(
            "a client called '{}' exists (names are never reused)",
            record.name
        )));
    }
    if let Some(holder) = clients.active(&record.identity) {
        return Err(MethodError::Argument(format!("client '{}' has this identity already", holder.name)));
    }
    match lifetime {
        Lifetime::Kept => {
            state.store.save_client(&record).map_err(store_error)?;
            clients.put(record);
        }
        Lifetime::ThisRun => clients.put_transient(record),
    }
    Ok(())
}

/// `add_client(name, role, public_key, uid)`: exactly one of a PEM public key (answered with its
/// certificate, signed by the server's CA) or a uid (for the Unix socket).
pub(crate) fn add_client(state: &State, p: &[Value], _: &CallContext) -> Result<Value, MethodError> {
    let name = client_name(&p[0])?;
    let role = role_param(&p[1])?;
    let created_unix_ms = state.unix_time_ms();
    match (&p[2], &p[3]) {
        (Value::String(public_key), Value::Null) => {
            if read(&state.clients).get(name).is_some() {
                return Err(MethodError::Argument(format!("a client called '{name}' exists (names are never reused)")));
            }
            let host = state
                .host
                .as_ref()
                .ok_or_else(|| MethodError::Argument("this server cannot issue certificates".into()))?;
            let issued = host.issue_certificate(name, public_key).map_err(MethodError::Argument)?;
            let identity = Identity::Cert { spki_sha256: issued.spki_sha256 };
            register(
                state,
                ClientRecord { name: name.into(), role, identity, created_unix_ms, revoked_unix_ms: None },
            )?;
            Ok(json!({
                "name": name,
                "role": role.as_str(),
                "certificate": issued.certificate_pem,
                "ca_certificate": issued.ca_certificate_pem,
                "spki_sha256": hex::encode(issued.spki_sha256),
            }))
        }
        (Value::Null, Value::Number(uid)) => {
            let uid = uid
                .as_u64()
                .and_then(|uid| u32::try_from(uid).ok())
                .ok_or_else(|| MethodError::Argument("uid must be a number from 0 to 4294967295".into()))?;
            let identity = Identity::Uid { uid };
            register(
                state,
                ClientRecord { name: name.into(), role, identity, created_unix_ms, revoked_unix_ms: None },
            )?;
            Ok(json!({"name": name, "role": role.as_str(), "uid": uid}))
        }
        _ => Err(MethodError::InvalidParams("give exactly one of 'public_key' (PEM) or 'uid'".into())),
    }
}

/// `pair_client(name, role, ttl_secs)`: a one-time code with which a front end registers itself
/// as client `name` with `role` (see the host's [`crate::Host::start_pairing`]); the code is
/// answered only to the owner who asked.
pub(crate) fn pair_client(state: &State, p: &[Value], _: &CallContext) -> Result<Value, MethodError> {
    let name = client_name(&p[0])?;
    let role = role_param(&p[1])?;
    let ttl_secs = match &p[2] {
        Value::Null => None,
        value => {
            Some(value.as_u64().ok_or_else(|| MethodError::Argument("'ttl_secs' must be a number of seconds".into()))?)
        }
    };
    if name == Principal::LOCAL_HTTP || read(&state.clients).get(name).is_some() {
        return Err(MethodError::Argument(format!("a client called '{name}' exists (names are never reused)")));
    }
    let host = state.host.as_ref().ok_or_else(|| MethodError::Argument("this server does not pair clients".into()))?;
    let ticket = host.start_pairing(name, role, ttl_secs).map_err(MethodError::Argument)?;
    Ok(json!({
        "name": name,
        "role": role.as_str(),
        "code": ticket.code.as_str(),
        "expires_unix_ms": ticket.expires_unix_ms,
        "pair_url": ticket.pair_url,
    }))
}

pub(crate) fn list_clients(state: &State) -> Value {
    Value::Array(read(&state.clients).records().map(client_json).collect())
}

fn change(state: &State, name: &str, apply: impl FnOnce(&mut ClientRecord)) -> Result<ClientRecord, MethodError> {
    let mut clients = write(&state.clients);
    let mut record = clients
        .get(name)
        .filter(|r| r.is_active())
        .cloned()
        .ok_or_else(|| MethodError::Argument(format!("no active client called '{name}'")))?;
    apply(&mut record);
    // A client of this run only stays out of the store whatever happens to it.
    if !clients.is_transient(name) {
        state.store.save_client(&record).map_err(store_error)?;
    }
    clients.put(record.clone());
    Ok(record)
}

pub(crate) fn set_identity(state: &State, name: &str, identity: Identity) -> Result<(), MethodError> {
    if let Some(holder) = read(&state.clients).active(&identity).filter(|holder| holder.name != name) {
        return Err(MethodError::Argument(format!("client '{}' has this identity already", holder.name)));
    }
    change(state, name, |record| record.identity = identity)?;
    // Connections made with the old key are closed like a revoked client's.
    state.revocations.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    Ok(())
}

pub(crate) fn set_client_role(state: &State, p: &[Value], _: &CallContext) -> Result<Value, MethodError> {
    let name = string(&p[0], "name")?;
    let role = role_param(&p[1])?;
    change(state, name, |record| record.role = role)?;
    Ok(Value::Null)
}

/// Revokes a client: from now on its handshakes fail and its requests are refused; its openings
/// are closed here, and its sessions by the server ([`crate::methods::AfterAnswer::revoked`]).
pub(crate) fn revoke_client(state: &State, p: &[Value], context: &CallContext) -> Result<Value, MethodError> {
    let name = string(&p[0], "name")?;
    if name == context.principal.name() {
        return Err(MethodError::Argument("a client cannot revoke itself".into()));
    }
    let now = state.unix_time_ms();
    change(state, name, |record| record.revoked_unix_ms = Some(now))?;
    state.revocations.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    lock(&state.vault).close_principal(name);
    Ok(Value::Null)
}

/// Writes the queued audit events to the store (on a thread that may block).
pub(crate) fn flush_audit(state: &State) {
    let now = state.unix_time_ms();
    let events = lock(&state.audit).take(now);
    write_audit(state, events);
}

/// Writes every audit event held, coalescing windows that have not ended included (at shutdown).
pub(crate) fn flush_all_audit(state: &State) {
    let now = state.unix_time_ms();
    let events = lock(&state.audit).close_all(now);
    write_audit(state, events);
}

fn write_audit(state: &State, events: Vec<crate::audit::AuditEvent>) {
    if events.is_empty() {
        return;
    }
    if let Err(error) = state.store.append_audit(&events) {
        tracing::error!(%error, events = events.len(), "cannot write the audit log");
        lock(&state.audit).lost(events.len());
    }
}

/// `audit_log(after, limit)`: the log's anchor and head and up to `limit` records after `after`.
pub(crate) fn audit_log(state: &State, p: &[Value]) -> Result<Value, MethodError> {
    let after = match &p[0] {
        Value::Null => 0,
        value => value.as_u64().ok_or_else(|| MethodError::Argument("'after' must be a record number".into()))?,
    };
    let limit = match &p[1] {
        Value::Null => AUDIT_PAGE_MAX,
        value => value
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| MethodError::Argument("'limit' must be a number".into()))?
            .min(AUDIT_PAGE_MAX),
    };
    flush_audit(state);
    let (anchor, head) = state.store.audit_bounds().map_err(store_error)?;
    let records: Vec<AuditRecord> = state.store.read_audit(after, limit).map_err(store_error)?;
    Ok(json!({"anchor": anchor, "head": head, "records": records}))
}
