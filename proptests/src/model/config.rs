//! The model's server: its configuration and limits, and the fixed vocabulary of a run (clients,
//! passwords, wallet names, directories, labels, key paths and the test vectors).

use keyward_core::SessionLimits;
use keyward_core::ThrottleConfig;
use keyward_core::TokenLimits;
use keyward_core::store::KdfParams;
use keyward_core::{ClientRecord, Identity, Role, ServerConfig, SessionId};

/// Clients in a run. Clients 0 and 1 name their session (`Keyward-Session`); client 2 is a plain V3
/// client found by trial decryption. Each speaks as one of the [`PRINCIPALS`]: client 0 as `local`
/// (the built-in owner), client 1 as the run's choice of [`CLIENT1_STARTS`], client 2 as the
/// registered owner `v3`; an [`Op::Become`](super::Op::Become) makes a client another principal
/// (the same program presenting another certificate).
pub const CLIENTS: usize = 3;

/// The principals a client may speak as: the name the transport gives the core, and the role the
/// server knows it by (`None`: a name the server does not know, refused before anything is parsed).
/// `local` is built in; the others with a role are registered at start ([`registered_clients`]).
pub const PRINCIPALS: [(&str, Option<Role>); 6] = [
    ("local", Some(Role::Owner)),
    ("reader", Some(Role::Reader)),
    ("signer", Some(Role::Signer)),
    ("owner", Some(Role::Owner)),
    ("v3", Some(Role::Owner)),
    ("ghost", None),
];
/// The built-in in-process principal (index into [`PRINCIPALS`]).
pub const LOCAL: u8 = 0;
/// The registered reader.
pub const READER: u8 = 1;
/// The registered signer.
pub const SIGNER: u8 = 2;
/// The registered owner (beside `local`).
pub const OWNER: u8 = 3;
/// The registered owner the plain V3 client speaks as.
pub const V3: u8 = 4;
/// Principals client 1 may start a run as: a registered reader (most refusals), signer (may sign,
/// not manage), owner (a second owner beside `local`: two principals with full power over the same
/// wallets), or `local` itself (two clients of one principal share its sessions' cap, its tokens,
/// its openings and its throttle).
pub const CLIENT1_STARTS: [u8; 4] = [READER, SIGNER, OWNER, LOCAL];

/// The client records the driver registers at start (`Server::add_client`): every principal with a
/// role but the built-in `local`, each with its own uid.
pub fn registered_clients() -> Vec<ClientRecord> {
    let mut records = Vec::new();
    for (uid, (name, role)) in (1000u32..).zip(PRINCIPALS) {
        if let Some(role) = role
            && name != PRINCIPALS[usize::from(LOCAL)].0
        {
            let identity = Identity::Uid { uid };
            records.push(ClientRecord { name: name.into(), role, identity, created_unix_ms: 0, revoked_unix_ms: None });
        }
    }
    records
}

/// The data root the server is configured with.
pub const DATA_ROOT: &str = "/srv/keyward";
/// Session limits of the model's server: small, so that eviction, expiry and the request cap happen.
/// A principal holds at most 2 of the 3 sessions, so both eviction rules happen: a principal's third
/// session evicts its own, and a full table (three principals, or two with 2 + 1) evicts from the
/// principal holding the most.
pub const SESSIONS: SessionLimits = SessionLimits {
    max_sessions: 3,
    idle_ms: 6_000,
    lifetime_ms: 25_000,
    max_requests: 24,
    max_nonces: 1 << 20,
    max_per_principal: 2,
    max_unnamed_bytes: 64 * 1024,
    // No grace period: the model evicts the least recently used at once (the grace period is held
    // by `session::tests` and `tests/tests/sessions_burst.rs`).
    grace_ms: 0,
};
/// Token limits of the model's server (other limits, such as how many wallets may be open, stay at
/// their defaults: the model never has more than four wallets).
pub fn tokens() -> TokenLimits {
    TokenLimits { idle_ms: 4_000, lifetime_ms: 15_000, ..TokenLimits::default() }
}
/// Throttle of the model's server.
pub const THROTTLE: ThrottleConfig =
    ThrottleConfig { free_attempts: 2, base_ms: 1_000, max_ms: 8_000, max_entries: 4096 };
/// Weaker KDF parameters of "legacy" records planted in the store, which `open_wallet` upgrades.
pub const LEGACY_KDF: KdfParams = KdfParams { m_cost_kib: 8, t_cost: 1, p_cost: 1 };
/// The clock's start.
pub const START_MS: u64 = 1_000;

/// Passwords; the last one is the grin vector's.
pub const PASSWORDS: [&str; 4] = ["pw0", "pw1", "pw2", "testpass"];
/// `name` params: `null` (the default wallet), `"w1"`, an invalid name, and `"default"` spelled out.
pub const NAME_PARAMS: [Option<&str>; 4] = [None, Some("w1"), Some("../x"), Some("default")];
/// Wallet names in the store.
pub const WALLET_NAMES: [&str; 2] = ["default", "w1"];
/// Top-level directories, relative to the data root.
pub const DIRS: [&str; 2] = ["", "team"];
/// `set_top_level_directory` params and the directory each means (`None`: refused).
pub const SET_DIRS: [(&str, Option<u8>); 5] = [
    (".", Some(0)),
    ("/srv/keyward/team", Some(1)),
    ("team/../../etc", None),
    ("/srv/keyward", Some(0)),
    ("team", Some(1)),
];
/// Account labels; the last is invalid.
pub const LABELS: [&str; 3] = ["savings", "spend", ""];
/// Key paths; the last is invalid.
pub const PATHS: [&str; 3] = ["m/0", "m/44'/0'/0'/0/0", "m/x"];
/// Entropy lengths of new wallets.
pub const LENGTHS: [u32; 3] = [16, 24, 32];
/// The message `sign_message` signs.
pub const MESSAGE: &str = "keyward model";
/// Entropy of planted legacy wallets.
pub const LEGACY_ENTROPY: [u8; 16] = [0x33; 16];
/// The grin `wallet.seed` vector (password `testpass`).
pub const GRIN_SEED: (&str, &str, &str) = (
    "994653864318ff63a974f023fe07ab70fa3841d03658c65e04eb6fe807d33ed66e1cfe6724bc127ec66d720e5db4c378",
    "57ad5a138863f0a0",
    "aefde28ebc85e2b69ed41fa5",
);
/// The grin vector's mnemonic.
pub const GRIN_MNEMONIC: &str = "pizza pipe about immense crawl issue pull head butter bamboo fan spare organ dismiss hurdle elite young isolate essay thumb vast domain hover hope";
/// Most accepted envelopes each client keeps for replays.
pub const KEPT_ENVELOPES: usize = 8;

/// The server configuration the model describes.
pub fn config() -> ServerConfig {
    ServerConfig {
        data_root: DATA_ROOT.into(),
        sessions: SESSIONS,
        tokens: tokens(),
        kdf: KdfParams::INSECURE_FOR_TESTS,
        throttle: THROTTLE,
        local_http_role: keyward_core::Role::Owner,
    }
}

/// A session id that no server hands out in a run (its rng would have to draw it).
pub fn bogus_session() -> SessionId {
    SessionId::from_bytes([0xb0; 16])
}
