//! Who may take a connection once its peer has authenticated: at most
//! [`ConnectionLimits::per_principal`] connections per principal over every listener of a driver,
//! and in every listener [`ConnectionLimits::owner_reserve`] slots that only owner-role principals
//! may take. So one client — or a few low-role clients together — cannot hold every slot: the
//! owner's next connection finds one.

use std::sync::{Mutex, PoisonError};

/// Bounds on authenticated connections. They read themselves from a config file's
/// `[connections]` table (every key optional, unknown keys refused): `per_principal`,
/// `owner_reserve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionLimits {
    /// Authenticated connections one principal (a registered client, `local`) may hold at once,
    /// over every listener of the driver together. One more is refused (logged and audited) and
    /// closed. Default 32. Not applied to `local-http` (every loopback plain-HTTP peer, any local
    /// process, is that one principal: only the plain listener's slots bound it), nor by a driver
    /// answering with a [`crate::Service`] (no principals).
    pub per_principal: usize,
    /// Slots of every listener that only owner-role principals may take: a connection of a reader
    /// or signer is refused once a listener has fewer than this many slots free. Default 8 (of 256
    /// on HTTPS and QUIC, of 64 on the Unix socket).
    pub owner_reserve: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self { per_principal: 32, owner_reserve: 8 }
    }
}

/// Why an authenticated peer was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// No active client has its certificate or uid (never registered, or revoked).
    Unknown,
    /// Its principal already holds [`ConnectionLimits::per_principal`] connections.
    PrincipalFull,
    /// Its listener has no slot left that its role may take (every slot taken, or only the
    /// owner's reserve left and it is not an owner).
    ListenerFull,
}

impl Refusal {
    /// The outcome an audit record and a log line give.
    pub fn outcome(self) -> &'static str {
        match self {
            Self::Unknown => "unknown or revoked client",
            Self::PrincipalFull => "too many connections of this client",
            Self::ListenerFull => "no connection slot left for this role",
        }
    }
}

/// One listener's connection slots: taken by an admitted connection, given back when it drops.
#[derive(Debug)]
pub(crate) struct Slots {
    max: usize,
    reserve: usize,
    taken: Mutex<usize>,
}

impl Slots {
    /// `max` slots, the last `reserve` of them for owners only (never all of them: one slot
    /// at least is open to every role).
    pub(crate) fn new(max: usize, reserve: usize) -> Self {
        let max = max.max(1);
        Self { max, reserve: reserve.min(max - 1), taken: Mutex::new(0) }
    }

    /// Whether every slot is taken (a new connection is refused before its handshake).
    pub(crate) fn full(&self) -> bool {
        *self.taken.lock().unwrap_or_else(PoisonError::into_inner) >= self.max
    }

    /// Takes a slot, if one is left that `owner` (or not) may take.
    pub(crate) fn take(&self, owner: bool) -> bool {
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        let limit = if owner { self.max } else { self.max - self.reserve };
        if *taken >= limit {
            return false;
        }
        *taken += 1;
        true
    }

    /// Gives a slot back.
    pub(crate) fn give(&self) {
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        *taken = taken.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_kept_for_owners_and_never_the_whole_listener() {
        let slots = Slots::new(4, 2);
        assert!(slots.take(false) && slots.take(false));
        assert!(!slots.take(false), "the last two are the owner's");
        assert!(slots.take(true) && slots.take(true));
        assert!(slots.full() && !slots.take(true));
        slots.give();
        assert!(!slots.take(false) && slots.take(true));
        let all_reserved = Slots::new(2, 9);
        assert!(all_reserved.take(false), "one slot is always open to every role");
        assert!(!all_reserved.take(false));
    }
}
