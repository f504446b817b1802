//! What a run measures: its plan (durations, concurrency, counts), the transports, the calls and
//! their parameters, and the progress lines.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{BenchOptions, SIGN_MESSAGE, SIGN_PATH};

/// The two encrypted calls each worker alternates.
pub(super) const KINDS: [&str; 2] = ["accounts", "sign_message"];

/// How much of everything a run does.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) quick: bool,
    pub(super) warmup: Duration,
    pub(super) measure: Duration,
    pub(super) rounds: usize,
    pub(super) calls: Vec<What>,
    pub(super) concurrency: Vec<usize>,
    pub(super) opens: usize,
    pub(super) kdf_runs: usize,
    pub(super) connections: usize,
    pub(super) session_counts: Vec<usize>,
}

impl Plan {
    pub(super) fn new(options: &BenchOptions) -> Self {
        let quick = options.quick;
        let seconds = options.seconds.unwrap_or(if quick { 0.5 } else { 2.0 }).clamp(0.05, 3600.0);
        Self {
            quick,
            warmup: Duration::from_secs_f64(if quick { 0.2_f64 } else { 0.4 }.min(seconds)),
            measure: Duration::from_secs_f64(seconds),
            rounds: if quick { 2 } else { 4 },
            calls: [What::Accounts, What::Sign, What::Echo]
                .into_iter()
                .filter(|w| options.calls.as_ref().is_none_or(|c| c.iter().any(|n| n.eq_ignore_ascii_case(w.name()))))
                .collect(),
            concurrency: options
                .concurrency
                .clone()
                .unwrap_or_else(|| if quick { vec![1, 4] } else { vec![1, 4, 16, 64] }),
            opens: if quick { 2 } else { 5 },
            kdf_runs: if quick { 2 } else { 5 },
            connections: if quick { 10 } else { 40 },
            session_counts: if quick { vec![500, 2000] } else { vec![1000, 10_000] },
        }
    }
}

/// A transport (or the raw TCP floor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transport {
    Https,
    Quic,
    Http,
    Tcp,
}

impl Transport {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Https => "https",
            Self::Quic => "quic",
            Self::Http => "http",
            Self::Tcp => "tcp",
        }
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Https => "HTTPS+mTLS",
            Self::Quic => "QUIC+mTLS",
            Self::Http => "plain HTTP",
            Self::Tcp => "plain TCP",
        }
    }
}

/// Progress lines on standard error, with the time since the start.
pub(super) struct Progress {
    pub(super) start: Instant,
}

impl Progress {
    pub(super) fn line(&self, text: impl std::fmt::Display) {
        eprintln!("keyward bench [{:6.1}s] {text}", self.start.elapsed().as_secs_f64());
    }
}

/// What a cell measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum What {
    /// Keyward, `accounts` only.
    Accounts,
    /// Keyward, `sign_message` only.
    Sign,
    /// The echo floor, bodies of both calls' sizes alternately.
    Echo,
}

impl What {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Accounts => "accounts",
            Self::Sign => "sign_message",
            Self::Echo => "echo",
        }
    }

    /// The kinds of call the workers make, in turn.
    pub(super) fn pattern(self) -> &'static [usize] {
        match self {
            Self::Accounts => &[0],
            Self::Sign => &[1],
            Self::Echo => &[0, 1],
        }
    }
}

/// The parameters of call `kind` (an index into [`KINDS`]).
pub(super) fn call_params(kind: usize, token: &str) -> Value {
    match kind {
        0 => json!({"token": token}),
        _ => json!({"token": token, "path": SIGN_PATH, "message": SIGN_MESSAGE}),
    }
}

/// Whether `value` is a plausible answer to call `kind`.
pub(super) fn answer_ok(kind: usize, value: &Value) -> bool {
    match kind {
        0 => value.as_array().is_some_and(|accounts| !accounts.is_empty()),
        _ => value.get("signature").and_then(Value::as_str).is_some_and(|s| s.len() == 128),
    }
}
