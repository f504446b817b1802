//! The lifecycle scenarios every [`Store`] must pass, grouped by topic, and the list of them
//! ([`scenarios`]). Each scenario takes a fresh, empty store and panics on failure.
//!
//! * [`lifecycle`]: create, open, use, restore, import and delete wallets;
//! * [`envelope`]: replays, tampering, bad keys and the V3 error codes;
//! * [`sessions`]: separate sessions, re-init and session expiry;
//! * [`tokens`]: token checks and lifetimes, and what the vault holds;
//! * [`unlock`]: wrong passwords and the unlock throttle;
//! * [`slow_calls`]: KDF calls set aside, busy refusals and batches.

use serde_json::{Value, json};

use keyward_core::store::Store;

use crate::harness::{Harness, TestClient};

mod envelope;
mod lifecycle;
mod sessions;
mod slow_calls;
mod tokens;
mod unlock;

pub use unlock::made_up_names;

fn create(h: &mut Harness, c: &mut TestClient, name: Value, password: &str) {
    let params = json!({"name": name, "mnemonic": null, "mnemonic_length": 16, "password": password});
    assert_eq!(h.ok(c, "create_wallet", params), Value::Null);
}

fn open(h: &mut Harness, c: &mut TestClient, name: Value, password: &str) -> Value {
    h.ok(c, "open_wallet", json!({"name": name, "password": password}))
}

/// A scenario: a name and a function of a fresh store.
pub type Scenario = (&'static str, fn(Box<dyn Store>));

/// Every lifecycle scenario.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        ("whole_lifecycle", lifecycle::whole_lifecycle),
        ("restore_from_mnemonic_gives_the_same_keys", lifecycle::restore_from_mnemonic),
        ("two_clients_interleave_in_separate_sessions", sessions::two_clients_interleave),
        ("replayed_envelope_is_refused_and_changes_nothing", envelope::replay_refused),
        ("tampered_or_truncated_body_is_refused_and_changes_nothing", envelope::tampered_refused),
        ("x_only_and_bad_keys_are_refused", envelope::bad_keys_refused),
        ("wrong_stale_missing_and_closed_tokens", tokens::token_checks),
        ("vault_holds_no_seed_after_close_or_expiry", tokens::vault_empty_after_close),
        ("wrong_password_and_unknown_wallet_are_indistinguishable", unlock::wrong_password_like_unknown_wallet),
        ("arguments_are_validated", lifecycle::arguments_validated),
        ("top_level_directory_stays_inside_the_data_root", lifecycle::top_level_directory),
        ("several_named_wallets_keep_apart", lifecycle::several_wallets),
        ("encrypted_reinit_answers_under_the_old_key", sessions::encrypted_reinit),
        ("envelope_and_call_errors_have_v3_codes", envelope::error_codes),
        ("sessions_expire_when_idle", sessions::session_expiry),
        ("failed_unlocks_back_off", unlock::unlock_throttle),
        ("embedder_methods_get_the_seed_only_with_a_token", tokens::embedder_method),
        ("grin_wallet_seed_imports", lifecycle::grin_import),
        ("change_password_keeps_exactly_one_password", lifecycle::change_password),
        ("kdf_calls_are_set_aside_and_others_answered_at_once", slow_calls::slow_calls_set_aside),
        ("tokens_expire_after_their_lifetime_however_busy", tokens::token_lifetime),
        ("sessions_expire_after_their_lifetime_however_busy", sessions::session_lifetime),
        ("open_wallets_are_limited_by_the_vault", tokens::vault_capacity),
        ("busy_refusal_runs_nothing", slow_calls::busy_refusal_runs_nothing),
        ("failed_opens_on_made_up_names_lock_nobody_out", unlock::made_up_names_lock_nobody_out),
        ("a_batch_runs_one_slow_call_and_echoes_ids_like_the_envelope", slow_calls::batch_rules),
    ]
}
