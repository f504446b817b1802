//! What a run shows: the progress line of each cell, the text tables, the targets and the JSON.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::connections::NewConnection;
use super::floors::Bodies;
use super::memory::Memory;
use super::plan::{Plan, Progress, Transport, What};
use super::stats::{Cell, median, ratio, round};

fn fmt_us(value: f64) -> String {
    if !value.is_finite() {
        "-".to_owned()
    } else if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn fmt_ratio(value: f64) -> String {
    if value.is_finite() { format!("{value:.2}x") } else { "-".to_owned() }
}

/// A text table: the first `left` columns left-aligned, the rest right-aligned.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>], left: usize) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |out: &mut String, cells: &[String]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let width = widths.get(i).copied().unwrap_or(0);
            let pad = width.saturating_sub(cell.chars().count());
            if i > 0 {
                text.push_str("  ");
            }
            if i < left {
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            } else {
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    line(out, &header);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(out, &rule);
    for row in rows {
        line(out, row);
    }
}

/// A target of the issue, checked against this run's figures.
struct Target {
    name: String,
    value: String,
    limit: String,
    met: Option<bool>,
}

pub(super) fn report_cell(progress: &Progress, cell: &Cell) {
    progress.line(format_args!(
        "{:<10} c={:<3} {:<12} {:>7.0} calls/s  p50 {:>6} µs  p99 {:>6} µs  errors {}",
        cell.transport.label(),
        cell.concurrency,
        cell.what.name(),
        cell.calls_per_s(),
        fmt_us(cell.all.p50),
        fmt_us(cell.all.p99),
        cell.errors
    ));
    for example in &cell.error_examples {
        progress.line(format_args!("  error: {example}"));
    }
}

#[expect(clippy::too_many_arguments, reason = "one row of the report")]
pub(super) fn render(
    plan: &Plan,
    cells: &[Cell],
    connections: &[NewConnection],
    memory: Option<&Memory>,
    ecdsa_sign_us: f64,
    bodies: &Bodies,
    (open_ms, kdf_ms): (&[f64], &[f64]),
    (idle_rss_main, after_rss_main): (Option<u64>, Option<u64>),
    errors: u64,
    running: bool,
    background: Option<f64>,
) -> (String, Value, Value) {
    let mut out = String::new();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let _ = writeln!(
        out,
        "keyward bench ({} run): {} cores shared by the server, the echo floor and the load generator; {:.1} s per cell,\n\
         measured in {} slices interleaved with the other cells of the same transport and concurrency.",
        if plan.quick { "quick" } else { "full" },
        cores,
        plan.measure.as_secs_f64(),
        plan.rounds.max(1)
    );
    let _ = writeln!(
        out,
        "Each worker: its own connection and secure session; a cell calls accounts or sign_message (requests {} and {} B, answers {} and {} B)\nor, for the echo floor, sends bodies of those two request sizes in turn.",
        bodies.calls[0].len(),
        bodies.calls[1].len(),
        bodies.answers[0],
        bodies.answers[1]
    );
    let _ = writeln!(out, "Echo floor: same listener, TLS, limits and request handling; answers the request's bytes.");
    let _ = writeln!(
        out,
        "Other processes on the machine used {} cores on average while the calls ran.\n",
        background.map_or("?".to_owned(), |c| format!("{c:.2}"))
    );

    let find = |transport: Transport, what: What, concurrency: usize| {
        cells.iter().find(|c| c.transport == transport && c.what == what && c.concurrency == concurrency)
    };
    let mut rows = Vec::new();
    for cell in cells {
        rows.push(vec![
            cell.transport.label().to_owned(),
            cell.concurrency.to_string(),
            cell.what.name().to_owned(),
            format!("{:.0}", cell.calls_per_s()),
            fmt_us(cell.all.p50),
            fmt_us(cell.all.p90),
            fmt_us(cell.all.p99),
            fmt_us(cell.all.max),
            cell.server_cpu_us.map_or("-".to_owned(), fmt_us),
            cell.client_cpu_us.map_or("-".to_owned(), fmt_us),
            cell.errors.to_string(),
        ]);
    }
    let _ = writeln!(out, "Calls (latency in µs; CPU in µs per call: the server's, and the load generator's)");
    table(
        &mut out,
        &["transport", "conc", "what", "calls/s", "p50", "p90", "p99", "max", "server CPU", "loadgen CPU", "errors"],
        &rows,
        3,
    );

    let mut ratio_rows = Vec::new();
    let mut ratio_json = Vec::new();
    for transport in [Transport::Https, Transport::Quic, Transport::Http] {
        for &concurrency in &plan.concurrency {
            let Some(echo) = find(transport, What::Echo, concurrency) else { continue };
            let (accounts, sign) =
                (find(transport, What::Accounts, concurrency), find(transport, What::Sign, concurrency));
            if accounts.is_none() && sign.is_none() {
                continue;
            }
            let tcp = if transport == Transport::Http { find(Transport::Tcp, What::Echo, concurrency) } else { None };
            let p50 =
                |cell: Option<&Cell>, kind: usize| cell.map_or(f64::NAN, |c| ratio(c.all.p50, echo.kinds[kind].p50));
            let rate = |cell: Option<&Cell>| cell.map_or(f64::NAN, |c| ratio(c.calls_per_s(), echo.calls_per_s()));
            let cpu = |cell: Option<&Cell>| match (cell.and_then(|c| c.server_cpu_us), echo.server_cpu_us) {
                (Some(a), Some(b)) => ratio(a, b),
                _ => f64::NAN,
            };
            // The sign floor: the echo plus the one ECDSA signature the call cannot do without.
            let sign_floor = echo.kinds[1].p50 + ecdsa_sign_us;
            let sign_vs_floor = sign.map_or(f64::NAN, |c| ratio(c.all.p50, sign_floor));
            let vs_tcp = |cell: Option<&Cell>| match (cell, tcp) {
                (Some(c), Some(t)) => ratio(c.all.p50, t.kinds[0].p50),
                _ => f64::NAN,
            };
            ratio_rows.push(vec![
                transport.label().to_owned(),
                concurrency.to_string(),
                fmt_ratio(p50(accounts, 0)),
                fmt_ratio(p50(sign, 1)),
                fmt_ratio(sign_vs_floor),
                fmt_ratio(rate(accounts)),
                fmt_ratio(rate(sign)),
                fmt_ratio(cpu(accounts)),
                fmt_ratio(vs_tcp(accounts)),
            ]);
            ratio_json.push(json!({
                "transport": transport.name(),
                "concurrency": concurrency,
                "p50_accounts": round(p50(accounts, 0)),
                "p50_sign_message": round(p50(sign, 1)),
                "p50_sign_message_vs_echo_plus_ecdsa": round(sign_vs_floor),
                "calls_per_s_accounts": round(rate(accounts)),
                "calls_per_s_sign_message": round(rate(sign)),
                "server_cpu_per_call_accounts": round(cpu(accounts)),
                "server_cpu_per_call_sign_message": round(cpu(sign)),
                "p50_accounts_vs_raw_tcp": tcp.map(|_| round(vs_tcp(accounts))),
            }));
        }
    }
    let _ = writeln!(
        out,
        "\nRatios to the echo floor on the same transport (same run; p50 against echo bodies of the call's size)"
    );
    table(
        &mut out,
        &[
            "transport",
            "conc",
            "p50 acc",
            "p50 sign",
            "sign vs echo+ECDSA",
            "calls/s acc",
            "calls/s sign",
            "srv CPU acc",
            "acc p50 vs TCP",
        ],
        &ratio_rows,
        2,
    );
    let _ = writeln!(
        out,
        "sign vs echo+ECDSA: against the echo plus one ECDSA signature, {} µs in process in this run.",
        fmt_us(ecdsa_sign_us)
    );

    let _ = writeln!(out, "\nopen_wallet (default Argon2id m=64 MiB t=3 p=4)");
    table(
        &mut out,
        &["what", "median ms", "samples"],
        &[
            vec!["open_wallet, end to end".into(), format!("{:.1}", median(open_ms)), open_ms.len().to_string()],
            vec!["bare KDF, in process".into(), format!("{:.1}", median(kdf_ms)), kdf_ms.len().to_string()],
            vec!["ratio".into(), fmt_ratio(ratio(median(open_ms), median(kdf_ms))), String::new()],
        ],
        1,
    );

    let mut connection_rows = Vec::new();
    let mut connection_json = Vec::new();
    for c in connections {
        let (kh, kt, eh, et) =
            (median(&c.keyward_handshake), median(&c.keyward_total), median(&c.echo_handshake), median(&c.echo_total));
        connection_rows.push(vec![
            c.transport.label().to_owned(),
            fmt_us(kh),
            fmt_us(kt),
            fmt_us(eh),
            fmt_us(et),
            fmt_ratio(ratio(kt, et)),
            c.errors.to_string(),
        ]);
        connection_json.push(json!({
            "transport": c.transport.name(),
            "samples": c.keyward_total.len(),
            "keyward_handshake_us": round(kh),
            "keyward_handshake_init_first_call_us": round(kt),
            "echo_handshake_us": round(eh),
            "echo_handshake_two_exchanges_us": round(et),
            "ratio": round(ratio(kt, et)),
            "errors": c.errors,
            "error_examples": c.examples,
        }));
    }
    let _ = writeln!(
        out,
        "\nNew connection (medians, µs): handshake, then init_secure_api + accounts (echo: two exchanges of those sizes)"
    );
    table(
        &mut out,
        &["transport", "handshake", "+ init + call", "echo handshake", "echo + 2 exchanges", "ratio", "errors"],
        &connection_rows,
        1,
    );

    let _ = writeln!(out, "\nServer memory");
    let mut memory_rows = Vec::new();
    if let Some(m) = memory {
        memory_rows.push(vec!["RSS idle (fresh server)".to_owned(), format!("{} KiB", m.idle_kib)]);
        memory_rows.push(vec!["RSS with one connection and session".to_owned(), format!("{} KiB", m.base_kib)]);
        for (count, rss, per) in &m.points {
            memory_rows.push(vec![format!("RSS with {count} idle sessions"), format!("{rss} KiB")]);
            memory_rows.push(vec![format!("growth per idle session at {count}"), format!("{per:.0} B")]);
        }
        let v3_base = m.v3.first().map(|c| c.server_cpu_us_per_call);
        for cost in &m.v3 {
            let ratio = v3_base.map_or(f64::NAN, |base| ratio(cost.server_cpu_us_per_call, base));
            memory_rows.push(vec![
                format!("V3 client (no header) beside {} idle sessions", cost.idle_sessions),
                format!(
                    "accounts p50 {}, server CPU {:.1} us/call ({} the no-session figure), {} calls",
                    fmt_us(cost.p50_us),
                    cost.server_cpu_us_per_call,
                    fmt_ratio(ratio),
                    cost.calls
                ),
            ]);
        }
        if m.errors > 0 {
            memory_rows.push(vec!["errors".to_owned(), m.errors.to_string()]);
        }
    } else {
        memory_rows
            .push(vec!["idle sessions".to_owned(), "not measured (only on a server the bench starts)".to_owned()]);
    }
    if let Some(rss) = idle_rss_main {
        memory_rows.push(vec!["RSS of the server under test before the calls".to_owned(), format!("{rss} KiB")]);
    }
    if let Some(rss) = after_rss_main {
        memory_rows.push(vec!["RSS of the server under test after the calls".to_owned(), format!("{rss} KiB")]);
    }
    table(&mut out, &["what", "value"], &memory_rows, 1);
    let _ = writeln!(
        out,
        "\nIn process: the core's costs (the server's handling of each call, AES-GCM, JSON, BIP32, ECDSA)\n\
         are criterion's: cargo bench -p keyward-core --bench call"
    );

    // Targets.
    let mut targets = Vec::new();
    for transport in [Transport::Https, Transport::Quic, Transport::Http] {
        let Some(echo) = find(transport, What::Echo, 1) else { continue };
        for (kind, what) in [What::Accounts, What::Sign].into_iter().enumerate() {
            let Some(cell) = find(transport, what, 1) else { continue };
            let r = ratio(cell.all.p50, echo.kinds[kind].p50);
            targets.push(Target {
                name: format!("{}: c=1 p50 {} / echo", transport.label(), what.name()),
                value: fmt_ratio(r),
                limit: "<= 1.25x".into(),
                met: Some(r <= 1.25),
            });
        }
    }
    for transport in [Transport::Https, Transport::Quic, Transport::Http] {
        for what in [What::Accounts, What::Sign] {
            let name = format!("{}: c=16 calls/s {} / echo", transport.label(), what.name());
            match (find(transport, what, 16), find(transport, What::Echo, 16)) {
                (Some(cell), Some(echo)) => {
                    let r = ratio(cell.calls_per_s(), echo.calls_per_s());
                    targets.push(Target { name, value: fmt_ratio(r), limit: ">= 0.6x".into(), met: Some(r >= 0.6) });
                }
                _ if cells.iter().any(|c| c.transport == transport && c.what == what) => {
                    targets.push(Target { name, value: "not measured".into(), limit: ">= 0.6x".into(), met: None })
                }
                _ => {}
            }
        }
    }
    if let Some(m) = memory {
        for (count, _, per) in &m.points {
            targets.push(Target {
                name: format!("idle session memory at {count}"),
                value: format!("{per:.0} B"),
                limit: "<= 8192 B".into(),
                met: Some(*per <= 8192.0),
            });
        }
    }
    targets.push(Target {
        name: "errors, every concurrency and phase".into(),
        value: errors.to_string(),
        limit: "0".into(),
        met: Some(errors == 0),
    });
    let _ = writeln!(out, "\nTargets (ratios from this run)");
    let target_rows: Vec<Vec<String>> = targets
        .iter()
        .map(|t| {
            let met = match t.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "-",
            };
            vec![t.name.clone(), t.value.clone(), t.limit.clone(), met.to_owned()]
        })
        .collect();
    table(&mut out, &["target", "value", "limit", ""], &target_rows, 1);
    let _ = writeln!(out, "\nerrors: {errors}");

    let targets_json: Vec<Value> =
        targets.iter().map(|t| json!({"target": t.name, "value": t.value, "limit": t.limit, "met": t.met})).collect();
    let json = json!({
        "keyward_version": env!("CARGO_PKG_VERSION"),
        "quick": plan.quick,
        "running_server": running,
        "cores": cores,
        "other_processes_cores_during_calls": background.map(round),
        "seconds_per_cell": plan.measure.as_secs_f64(),
        "warmup_seconds": plan.warmup.as_secs_f64(),
        "concurrency": plan.concurrency,
        "sizes": {
            "accounts_request": bodies.calls[0].len(),
            "accounts_answer": bodies.answers[0],
            "sign_message_request": bodies.calls[1].len(),
            "sign_message_answer": bodies.answers[1],
            "init_request": bodies.init.len(),
        },
        "calls": cells.iter().map(Cell::json).collect::<Vec<_>>(),
        "ratios": ratio_json,
        "ecdsa_sign_in_process_us": round(ecdsa_sign_us),
        "open_wallet": {
            "samples_ms": open_ms.iter().copied().map(round).collect::<Vec<_>>(),
            "median_ms": round(median(open_ms)),
            "bare_kdf_samples_ms": kdf_ms.iter().copied().map(round).collect::<Vec<_>>(),
            "bare_kdf_median_ms": round(median(kdf_ms)),
            "ratio": round(ratio(median(open_ms), median(kdf_ms))),
        },
        "new_connection": connection_json,
        "memory": memory.map(|m| json!({
            "idle_rss_kib": m.idle_kib,
            "base_rss_kib": m.base_kib,
            "points": m.points.iter().map(|(n, rss, per)| json!({"sessions": n, "rss_kib": rss, "bytes_per_session": round(*per)})).collect::<Vec<_>>(),
            "v3_unnamed_accounts": m.v3.iter().map(|c| json!({"idle_sessions": c.idle_sessions, "calls": c.calls, "p50_us": round(c.p50_us), "server_cpu_us_per_call": round(c.server_cpu_us_per_call)})).collect::<Vec<_>>(),
            "errors": m.errors,
        })),
        "server_under_test_rss_kib": {"before_calls": idle_rss_main, "after_calls": after_rss_main},
        "errors": errors,
    });
    (out, json, Value::Array(targets_json))
}
