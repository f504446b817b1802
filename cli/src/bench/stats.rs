//! Latency statistics, and the results of a cell as its slices add them up.

use std::time::Duration;

use serde_json::{Value, json};

use super::plan::{Transport, What};

/// Latency statistics in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Stats {
    pub(super) n: usize,
    pub(super) p50: f64,
    pub(super) p90: f64,
    pub(super) p99: f64,
    pub(super) max: f64,
}

impl Stats {
    fn of(samples: &mut [u64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1] as f64 / 1000.0
        };
        Self { n: samples.len(), p50: at(0.5), p90: at(0.9), p99: at(0.99), max: at(1.0) }
    }

    pub(super) fn json(&self) -> Value {
        json!({"n": self.n, "p50_us": round(self.p50), "p90_us": round(self.p90), "p99_us": round(self.p99), "max_us": round(self.max)})
    }
}

pub(super) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

pub(super) fn round(value: f64) -> f64 {
    if value.is_finite() { (value * 100.0).round() / 100.0 } else { value }
}

pub(super) fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

/// The result of one cell: one target, one transport, one concurrency.
#[derive(Debug, Clone)]
pub(super) struct Cell {
    pub(super) transport: Transport,
    pub(super) what: What,
    pub(super) concurrency: usize,
    pub(super) seconds: f64,
    pub(super) calls: usize,
    pub(super) errors: u64,
    pub(super) error_examples: Vec<String>,
    pub(super) all: Stats,
    pub(super) kinds: [Stats; 2],
    pub(super) server_cpu_us: Option<f64>,
    pub(super) client_cpu_us: Option<f64>,
}

impl Cell {
    pub(super) fn calls_per_s(&self) -> f64 {
        self.calls as f64 / self.seconds
    }

    pub(super) fn json(&self) -> Value {
        json!({
            "transport": self.transport.name(),
            "target": self.what.name(),
            "concurrency": self.concurrency,
            "seconds": round(self.seconds),
            "calls": self.calls,
            "calls_per_s": round(self.calls_per_s()),
            "errors": self.errors,
            "error_examples": self.error_examples,
            "latency": self.all.json(),
            "latency_accounts_size": self.kinds[0].json(),
            "latency_sign_message_size": self.kinds[1].json(),
            "server_cpu_us_per_call": self.server_cpu_us.map(round),
            "load_generator_cpu_us_per_call": self.client_cpu_us.map(round),
        })
    }
}

#[derive(Default)]
pub(super) struct Samples {
    pub(super) latencies: [Vec<u64>; 2],
    pub(super) errors: u64,
    pub(super) examples: Vec<String>,
}

impl Samples {
    pub(super) fn error(&mut self, error: &anyhow::Error) {
        self.errors += 1;
        if self.examples.len() < 3 {
            self.examples.push(format!("{error:#}"));
        }
    }
}

/// What the measured part of slices added up to, for one `What`.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) samples: Samples,
    pub(super) seconds: f64,
    pub(super) server_cpu: Option<Duration>,
    pub(super) client_cpu: Option<Duration>,
}

impl Tally {
    pub(super) fn into_cell(mut self, transport: Transport, what: What, concurrency: usize) -> Cell {
        let calls = self.samples.latencies[0].len() + self.samples.latencies[1].len();
        let mut all: Vec<u64> = self.samples.latencies.iter().flatten().copied().collect();
        let per_call = |cpu: Option<Duration>| cpu.filter(|_| calls > 0).map(|d| d.as_secs_f64() * 1e6 / calls as f64);
        self.samples.examples.truncate(3);
        Cell {
            transport,
            what,
            concurrency,
            seconds: self.seconds,
            calls,
            errors: self.samples.errors,
            error_examples: self.samples.examples,
            all: Stats::of(&mut all),
            kinds: [Stats::of(&mut self.samples.latencies[0]), Stats::of(&mut self.samples.latencies[1])],
            server_cpu_us: per_call(self.server_cpu),
            client_cpu_us: per_call(self.client_cpu),
        }
    }
}

pub(super) fn add_cpu(total: &mut Option<Duration>, before: Option<Duration>, after: Option<Duration>, first: bool) {
    *total = match (first, *total, before, after) {
        (true, _, Some(a), Some(b)) => Some(b.saturating_sub(a)),
        (false, Some(t), Some(a), Some(b)) => Some(t + b.saturating_sub(a)),
        _ => None,
    };
}
