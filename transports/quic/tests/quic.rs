//! The QUIC transport over real loopback UDP, driving a real `keyward_core::Server`.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyward_core::Client;
use keyward_quic::{ALPN, QuicClient, QuicError, QuicLimits, codes};
use quinn::{ConnectionError, ReadError, ReadToEndError, TransportErrorCode, VarInt};
use serde_json::{Value, json};
use support::{Ca, Fixture, Usage, eventually, within};

/// The answer of any request the core can parse enough to answer: a JSON object.
/// A plaintext init on a raw connection gets a JSON answer; then the connection is closed.
async fn init_answers_and_close(connection: &quinn::Connection) {
    let answer = within(10, support::raw_call(connection, &Client::new([9; 32]).init_request())).await;
    assert!(answer.is_ok_and(|a| is_json_answer(&a)));
    connection.close(VarInt::from_u32(0), b"");
}

fn is_json_answer(bytes: &[u8]) -> bool {
    matches!(serde_json::from_slice::<Value>(bytes), Ok(Value::Object(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_lifecycle_over_quic_and_wallets_outlive_connections() {
    let fx = Fixture::start(QuicLimits::default()).await;
    let mut c = fx.caller(1).await;
    assert_eq!(fx.core.session_count(), 1);
    assert_eq!(c.ok("get_top_level_directory", json!({})).await, json!("/srv/keyward"));
    let create = json!({"name": null, "mnemonic": null, "mnemonic_length": 16, "password": "pw"});
    assert_eq!(c.ok("create_wallet", create).await, Value::Null);
    let token = c.ok("open_wallet", json!({"name": null, "password": "pw"})).await;
    assert_eq!(
        c.ok("accounts", json!({"token": token})).await,
        json!([{"label": "default", "path": "0200000000000000000000000000000000"}])
    );
    let path = "m/44'/0'/0'/0/0";
    let public = c.ok("get_public_key", json!({"token": token, "path": path})).await;
    let signed = c.ok("sign_message", json!({"token": token, "path": path, "message": "hi"})).await;
    assert_eq!(signed["public_key"], public);
    let verify = json!({"public_key": public, "message": "hi", "signature": signed["signature"]});
    assert_eq!(c.ok("verify_message", verify).await, json!(true));

    // Closing the connection drops its session, not the open wallet: the token works elsewhere.
    within(5, c.quic().close()).await;
    eventually("the closed connection's session is dropped", || fx.core.session_count() == 0).await;
    assert_eq!(fx.core.open_wallet_count(), 1);
    let mut c = fx.caller(2).await;
    assert_eq!(c.ok("accounts", json!({"token": token})).await.as_array().map(Vec::len), Some(1));
    assert_eq!(c.ok("close_wallet", json!({"name": null})).await, Value::Null);
    let refused = c.call("accounts", json!({"token": token})).await;
    assert!(refused.is_err_and(|e| e.contains("Wallet has not been opened")));
    assert_eq!(fx.core.open_wallet_count(), 0);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_belong_to_their_connection() {
    let fx = Fixture::start(QuicLimits::default()).await;
    let mut a = fx.caller(1).await;
    let mut b = fx.caller(2).await;
    assert_eq!(fx.core.session_count(), 2);
    for _ in 0..3 {
        assert_eq!(a.ok("get_top_level_directory", json!({})).await, json!("/srv/keyward"));
        assert_eq!(b.ok("list_wallets", json!({})).await, json!([]));
    }

    // B's connection names B's session: a request sealed under A's key does not authenticate there.
    let (body, pending) = a.keys().seal("list_wallets", json!({})).expect("seal");
    let answer = within(10, b.quic().call(&body)).await.expect("an answer");
    assert!(a.keys().open(pending, &answer).is_err());
    assert_eq!(a.ok("list_wallets", json!({})).await, json!([]));

    // A second plaintext init on A's connection replaces A's session.
    let mut old = std::mem::replace(a.keys(), Client::new([3; 32]));
    a.init().await;
    assert_eq!(fx.core.session_count(), 2, "the replaced session is dropped");
    let (body, pending) = old.seal("list_wallets", json!({})).expect("seal");
    let answer = within(10, a.quic().call(&body)).await.expect("an answer");
    assert!(old.open(pending, &answer).is_err(), "the old key no longer works on this connection");
    assert_eq!(a.ok("list_wallets", json!({})).await, json!([]));
    assert_eq!(b.ok("list_wallets", json!({})).await, json!([]));

    // Closing a connection drops its session, and only its session.
    within(5, a.quic().close()).await;
    eventually("A's session is dropped", || fx.core.session_count() == 1).await;
    assert_eq!(b.ok("get_top_level_directory", json!({})).await, json!("/srv/keyward"));
    // Dropping the client without close() also ends the connection (implicit close).
    drop(b);
    eventually("B's session is dropped", || fx.core.session_count() == 0).await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_connections_without_errors() {
    let fx = Arc::new(Fixture::start(QuicLimits::default()).await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64u8 {
        let fx = Arc::clone(&fx);
        tasks.spawn(async move {
            // 64 front ends (one client's own slow calls are bounded: `slow_per_principal`).
            let mut c = fx.caller_of_its_own(i + 1).await;
            let name = format!("w{i}");
            let create = json!({"name": name, "mnemonic": null, "mnemonic_length": 16, "password": "pw"});
            c.call("create_wallet", create).await?;
            let token = c.call("open_wallet", json!({"name": name, "password": "pw"})).await?;
            let accounts = c.call("accounts", json!({"token": token})).await?;
            if accounts.as_array().map(Vec::len) != Some(1) {
                return Err(format!("unexpected accounts {accounts}"));
            }
            c.call("get_top_level_directory", json!({})).await?;
            c.call("close_wallet", json!({"name": name})).await?;
            c.quic().close().await;
            Ok::<(), String>(())
        });
    }
    let results = within(120, tasks.join_all()).await;
    let errors: Vec<_> = results.into_iter().filter_map(Result::err).collect();
    assert!(errors.is_empty(), "errors: {errors:?}");
    eventually("all sessions dropped", || fx.core.session_count() == 0).await;
    assert_eq!(fx.core.open_wallet_count(), 0);
    let fx = Arc::into_inner(fx).expect("no other owner");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_carries_concurrent_calls() {
    let fx = Fixture::start(QuicLimits::default()).await;
    let caller = fx.caller(7).await;
    let (quic, keys) = caller.session.into_parts();
    let (quic, keys) = (Arc::new(quic), Arc::new(Mutex::new(keys)));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (quic, keys) = (Arc::clone(&quic), Arc::clone(&keys));
        tasks.spawn(async move {
            let (body, pending) = keys.lock().expect("lock").seal("get_top_level_directory", json!({}))?;
            let answer = quic.call(&body).await.map_err(|e| keyward_core::ClientError::Malformed(e.to_string()))?;
            keys.lock().expect("lock").open(pending, &answer)
        });
    }
    for result in within(60, tasks.join_all()).await {
        assert_eq!(result.expect("call"), json!("/srv/keyward"));
    }
    assert_eq!(fx.core.session_count(), 1);
    fx.stop().await;
}

/// Connects with `tls` and sends an init; the server must close the connection with TLS alert `alert`
/// (during the handshake, or, TLS 1.3 being what it is, just after the client thinks it is done), and
/// nothing may reach the core.
async fn assert_refused(fx: &Fixture, tls: rustls::ClientConfig, alert: u8, what: &str) {
    let outcome = within(10, async {
        let client = QuicClient::connect(fx.addr, "localhost", Arc::new(tls)).await?;
        client.call(&Client::new([9; 32]).init_request()).await
    })
    .await;
    match outcome {
        Err(QuicError::Connection(ConnectionError::ConnectionClosed(close))) => {
            assert_eq!(close.error_code, TransportErrorCode::crypto(alert), "{what}: {close:?}");
        }
        other => panic!("{what}: expected a refusal with TLS alert {alert}, got {other:?}"),
    }
    assert_eq!(fx.core.session_count(), 0, "{what}: no session may be created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_client_certificates_are_refused() {
    let fx = Fixture::start(QuicLimits::default()).await;
    assert_refused(&fx, support::client_config(&fx.ca, None), 116, "no client certificate").await;

    let rogue = Ca::new("Rogue CA");
    let rogue_client = rogue.leaf("intruder", &[], Usage::Client, false);
    assert_refused(&fx, support::client_config(&fx.ca, Some(&rogue_client)), 48, "another CA's certificate").await;

    let server_as_client = support::client_config(&fx.ca, Some(&fx.server_identity));
    assert_refused(&fx, server_as_client, 43, "the server's certificate (serverAuth only)").await;

    let expired = fx.ca.leaf("old back end", &[], Usage::Client, true);
    assert_refused(&fx, support::client_config(&fx.ca, Some(&expired)), 45, "an expired certificate").await;

    // A certificate of the right CA that no client is registered with: closed after the handshake.
    let stranger = fx.ca.leaf("unregistered", &[], Usage::Client, false);
    let outcome = within(10, async {
        let client =
            QuicClient::connect(fx.addr, "localhost", Arc::new(support::client_config(&fx.ca, Some(&stranger))))
                .await?;
        client.call(&Client::new([9; 32]).init_request()).await
    })
    .await;
    assert!(
        matches!(&outcome, Err(QuicError::Connection(ConnectionError::ApplicationClosed(close))) if close.error_code.into_inner() == codes::CLIENT_CERT_REQUIRED),
        "an unregistered certificate: {outcome:?}"
    );

    // The server keeps serving good clients.
    let mut good = fx.caller(1).await;
    assert_eq!(good.ok("list_wallets", json!({})).await, json!([]));
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_alpn_is_refused() {
    let fx = Fixture::start(QuicLimits::default()).await;
    let identity = &fx.front_end;
    for alpn in [vec![b"h3".to_vec()], vec![]] {
        let mut tls = support::client_config(&fx.ca, Some(identity));
        tls.alpn_protocols = alpn.clone();
        let endpoint = support::raw_endpoint();
        let outcome = within(10, async {
            let connecting = endpoint
                .connect_with(support::raw_client_config(tls), fx.addr, "localhost")
                .map_err(|e| e.to_string())?;
            let connection = connecting.await.map_err(|e| e.to_string())?;
            support::raw_call(&connection, &Client::new([9; 32]).init_request()).await
        })
        .await;
        // TLS alert 120, no_application_protocol.
        assert!(outcome.as_ref().is_err_and(|e| e.contains("120")), "ALPN {alpn:?} must be refused: {outcome:?}");
        endpoint.close(VarInt::from_u32(0), b"");
    }
    assert_eq!(fx.core.session_count(), 0);
    // The right ALPN, by hand, works.
    let mut tls = support::client_config(&fx.ca, Some(identity));
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let endpoint = support::raw_endpoint();
    let connecting = endpoint.connect_with(support::raw_client_config(tls), fx.addr, "localhost").expect("connect");
    let connection = within(10, connecting).await.expect("handshake");
    init_answers_and_close(&connection).await;
    within(5, endpoint.wait_idle()).await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_rtt_is_refused() {
    let fx = Fixture::start(QuicLimits::default()).await;
    let mut tls = support::client_config(&fx.ca, Some(&fx.front_end));
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_early_data = true;
    let config = support::raw_client_config(tls);
    let endpoint = support::raw_endpoint();
    for attempt in 0..2 {
        let connecting = endpoint.connect_with(config.clone(), fx.addr, "localhost").expect("connect");
        let connecting = match connecting.into_0rtt() {
            Ok(_) => panic!("attempt {attempt}: the server must not allow 0-RTT"),
            Err(connecting) => connecting,
        };
        let connection = within(10, connecting).await.expect("full handshake");
        init_answers_and_close(&connection).await;
    }
    within(5, endpoint.wait_idle()).await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_is_refused_and_everything_else_keeps_working() {
    let fx = Arc::new(Fixture::start(QuicLimits::default()).await);
    let mut big = fx.caller(1).await;
    let other = fx.caller(2).await;

    let background = {
        let mut other = other;
        tokio::spawn(async move {
            for _ in 0..30 {
                assert_eq!(other.ok("get_top_level_directory", json!({})).await, json!("/srv/keyward"));
            }
            other
        })
    };
    let oversized = vec![b' '; QuicLimits::default().max_message_size + 1];
    for _ in 0..3 {
        let refused = within(30, big.quic().call(&oversized)).await;
        assert_eq!(
            refused.as_ref().err().and_then(QuicError::stream_code),
            Some(codes::MESSAGE_TOO_LARGE),
            "{refused:?}"
        );
    }
    let mut other = within(60, background).await.expect("other client");
    assert_eq!(other.ok("list_wallets", json!({})).await, json!([]));
    // The same connection (and its session) still works.
    assert_eq!(big.ok("list_wallets", json!({})).await, json!([]));
    drop((big, other));
    let fx = Arc::into_inner(fx).expect("no other owner");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_size_limit_is_exact() {
    let limits = QuicLimits { max_message_size: 1000, ..QuicLimits::default() };
    let fx = Fixture::start(limits).await;
    let client = fx.connect().await;
    let mut at_limit = vec![b' '; 998];
    at_limit.extend_from_slice(b"{}");
    let answer = within(10, client.call(&at_limit)).await.expect("a message of exactly the limit is served");
    assert!(is_json_answer(&answer));
    at_limit.insert(0, b' ');
    let refused = within(10, client.call(&at_limit)).await;
    assert_eq!(refused.err().and_then(|e| e.stream_code()), Some(codes::MESSAGE_TOO_LARGE));
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_request_times_out_and_the_connection_survives() {
    let limits = QuicLimits { read_timeout: Duration::from_millis(300), ..QuicLimits::default() };
    let fx = Fixture::start(limits).await;
    let mut caller = fx.caller(1).await;
    let (mut send, mut recv) = within(5, caller.quic().connection().open_bi()).await.expect("stream");
    within(5, send.write_all(b"{\"jsonrpc\": \"2.0\"")).await.expect("partial write");
    let outcome = within(5, recv.read_to_end(1024)).await;
    match outcome {
        Err(ReadToEndError::Read(ReadError::Reset(code))) => assert_eq!(code.into_inner(), codes::REQUEST_INCOMPLETE),
        other => panic!("expected a reset with REQUEST_INCOMPLETE, got {other:?}"),
    }
    assert_eq!(caller.ok("list_wallets", json!({})).await, json!([]));
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_connection_are_limited() {
    let limits = QuicLimits { max_streams_per_connection: 2, ..QuicLimits::default() };
    let fx = Fixture::start(limits).await;
    let client = fx.connect().await;
    let connection = client.connection();
    let request = Client::new([5; 32]).init_request();
    let (head, tail) = request.split_at(10);
    let mut open = Vec::new();
    for _ in 0..2 {
        let (mut send, recv) = within(5, connection.open_bi()).await.expect("stream within the limit");
        within(5, send.write_all(head)).await.expect("partial write");
        open.push((send, recv));
    }
    let third = tokio::time::timeout(Duration::from_millis(500), connection.open_bi()).await;
    assert!(third.is_err(), "a third concurrent stream must wait for credit");

    let (mut send, mut recv) = open.remove(0);
    within(5, send.write_all(tail)).await.expect("rest of the request");
    send.finish().expect("finish");
    let answer = within(5, recv.read_to_end(1 << 20)).await.expect("answer");
    assert!(is_json_answer(&answer));
    let (mut send, mut recv) = within(5, connection.open_bi()).await.expect("credit after a stream closed");
    within(5, send.write_all(&Client::new([6; 32]).init_request())).await.expect("write");
    send.finish().expect("finish");
    assert!(is_json_answer(&within(5, recv.read_to_end(1 << 20)).await.expect("answer")));
    drop(open);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_time_out_and_lose_their_session() {
    let limits = QuicLimits { idle_timeout: Duration::from_millis(400), ..QuicLimits::default() };
    let fx = Fixture::start(limits).await;
    let mut caller = fx.caller(1).await;
    assert_eq!(fx.core.session_count(), 1);
    eventually("the idle connection's session is dropped", || fx.core.session_count() == 0).await;
    let outcome = within(5, caller.quic().call(b"{}")).await;
    assert!(matches!(outcome, Err(QuicError::Connection(ConnectionError::TimedOut))), "{outcome:?}");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_maximum_are_refused() {
    let limits = QuicLimits { max_connections: 2, ..QuicLimits::default() };
    let fx = Fixture::start(limits).await;
    let mut a = fx.caller(1).await;
    let mut b = fx.caller(2).await;
    let refused = within(10, QuicClient::connect(fx.addr, "localhost", fx.client_tls())).await;
    match refused {
        Err(QuicError::Connection(ConnectionError::ConnectionClosed(close))) => {
            assert_eq!(close.error_code, TransportErrorCode::CONNECTION_REFUSED);
        }
        other => panic!("expected CONNECTION_REFUSED, got {other:?}"),
    }
    assert_eq!(a.ok("list_wallets", json!({})).await, json!([]));

    // A slot frees up when a connection closes.
    within(5, b.quic().close()).await;
    let mut c = support::Caller::new(fx.connect_once_a_slot_frees(5).await, 3).await;
    assert_eq!(c.ok("list_wallets", json!({})).await, json!([]));
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_hold_no_connection_slot() {
    // With address validation (the default), an Initial that is never followed up gets a stateless
    // Retry and holds nothing: the only slot is free for an honest client at once.
    let limits = QuicLimits { max_connections: 1, ..QuicLimits::default() };
    let fx = Fixture::start(limits).await;
    let mut tls = support::client_config(&fx.ca, None);
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let stalls = [
        support::stalled_handshake(fx.addr, tls.clone()).await,
        support::stalled_handshake(fx.addr, tls.clone()).await,
    ];
    let mut c = support::Caller::new(within(2, fx.connect()).await, 1).await;
    assert_eq!(c.ok("list_wallets", json!({})).await, json!([]));
    drop(stalls);
    fx.stop().await;

    // Without it, stalled handshakes wait in the handshake stage (bounded: the oldest is dropped
    // for a new one) and still take no connection slot.
    let limits =
        QuicLimits { max_connections: 1, max_handshakes: 2, validate_addresses: false, ..QuicLimits::default() };
    let fx = Fixture::start(limits).await;
    let mut stalls = Vec::new();
    for _ in 0..3 {
        stalls.push(support::stalled_handshake(fx.addr, tls.clone()).await);
    }
    let mut c = support::Caller::new(within(2, fx.connect()).await, 2).await;
    assert_eq!(c.ok("list_wallets", json!({})).await, json!([]));
    drop(stalls);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_streams_in_flight_then_closes() {
    let mut fx = Fixture::start(QuicLimits::default()).await;
    let mut idle = fx.caller(1).await;
    let busy = fx.connect().await;
    let request = Client::new([2; 32]).init_request();
    let (head, tail) = request.split_at(10);
    let (mut send, mut recv) = within(5, busy.connection().open_bi()).await.expect("stream");
    within(5, send.write_all(head)).await.expect("partial write");
    eventually("the idle client's session exists", || fx.core.session_count() == 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    fx.begin_stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    within(5, send.write_all(tail)).await.expect("rest of the request");
    send.finish().expect("finish");
    let answer = within(10, recv.read_to_end(1 << 20)).await.expect("the request in flight is answered");
    assert!(is_json_answer(&answer));

    let closed = within(10, idle.quic().connection().closed()).await;
    match closed {
        ConnectionError::ApplicationClosed(close) => assert_eq!(close.error_code.into_inner(), codes::NO_ERROR),
        other => panic!("expected an application close, got {other:?}"),
    }
    let (addr, tls, core) = (fx.addr, fx.client_tls(), Arc::clone(&fx.core));
    fx.stop().await;
    assert_eq!(core.session_count(), 0, "sessions of closed connections are dropped");
    let late = tokio::time::timeout(Duration::from_secs(1), QuicClient::connect(addr, "localhost", tls)).await;
    assert!(!matches!(late, Ok(Ok(_))), "no connection is served after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_validated() {
    let fx = Fixture::start(QuicLimits::default()).await;
    let bad = [
        QuicLimits { max_connections: 0, ..QuicLimits::default() },
        QuicLimits { max_streams_per_connection: 0, ..QuicLimits::default() },
        QuicLimits { max_message_size: 0, ..QuicLimits::default() },
        QuicLimits { idle_timeout: Duration::ZERO, ..QuicLimits::default() },
        QuicLimits { handshake_timeout: Duration::ZERO, ..QuicLimits::default() },
        QuicLimits { read_timeout: Duration::ZERO, ..QuicLimits::default() },
        QuicLimits { write_timeout: Duration::ZERO, ..QuicLimits::default() },
    ];
    for limits in bad {
        let tls = support::server_tls(&fx.ca, &fx.server_identity);
        let bound = keyward_quic::QuicServer::bind(
            "127.0.0.1:0".parse().expect("addr"),
            tls,
            support::driver(support::core()),
            limits,
        );
        assert!(matches!(bound, Err(QuicError::Config(_))), "{limits:?}");
    }
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_cannot_make_the_server_hold_more_than_its_window() {
    // 64 streams each write a message just under the size limit and never finish it. Before the
    // per-connection budget the server read and held all of them (64 MiB); now a stream whose bytes
    // would take the connection's unfinished requests past `receive_window` (4 MiB) is refused
    // with CONNECTION_BUSY and its bytes dropped, so the server never holds more than that.
    let fx = Fixture::start(QuicLimits::default()).await;
    let quic = Arc::new(fx.connect().await);
    let message = vec![b' '; QuicLimits::default().max_message_size - 1];
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (quic, message) = (Arc::clone(&quic), message.clone());
        tasks.spawn(async move {
            let (mut send, recv) = quic.connection().open_bi().await.expect("stream");
            let written = tokio::time::timeout(Duration::from_secs(3), send.write_all(&message)).await;
            let outcome = match written {
                Ok(Ok(())) => "whole",
                Ok(Err(quinn::WriteError::Stopped(code))) if code.into_inner() == codes::CONNECTION_BUSY => "busy",
                Ok(Err(_)) => "other error",
                Err(_) => "blocked",
            };
            // Kept open (a dropped send stream is finished, which would complete the message).
            (outcome, send, recv)
        });
    }
    let streams = within(30, tasks.join_all()).await;
    let outcomes: Vec<&str> = streams.iter().map(|(outcome, _, _)| *outcome).collect();
    let busy = outcomes.iter().filter(|o| **o == "busy").count();
    eprintln!("64 unfinished 1 MiB messages on one connection: {busy} streams refused as busy");
    assert!(busy >= 8, "only {busy} streams were refused: {outcomes:?}");
    drop(streams);
    // The connection, and the server, still answer.
    let mut caller = support::Caller::new(fx.connect().await, 9).await;
    assert_eq!(caller.ok("list_wallets", json!({})).await, json!([]));
    fx.stop().await;
}

/// Revocation reaches an open connection: within a second it is closed, its session is dropped,
/// and the client's next connection is closed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_clients_connection_is_closed_within_a_second() {
    let fx = Fixture::start(QuicLimits::default()).await;
    let reader = fx.ca.leaf("dashboard", &[], Usage::Client, false);
    let name = support::register(&fx.core, &reader, keyward_core::Role::Reader);
    let tls = Arc::new(support::client_config(&fx.ca, Some(&reader)));
    let quic = within(10, QuicClient::connect(fx.addr, "localhost", Arc::clone(&tls))).await.expect("connect");
    let mut dashboard = support::Caller::new(quic, 5).await;
    assert_eq!(dashboard.ok("list_wallets", json!({})).await, json!([]));
    let refused = dashboard.call("get_mnemonic", json!({"name": "w", "password": "p"})).await;
    assert!(refused.is_err_and(|e| e.contains("Forbidden: get_mnemonic needs the owner role")));
    let mut owner = fx.caller(1).await;
    assert_eq!(owner.ok("revoke_client", json!({"name": name})).await, Value::Null);
    let revoked_at = std::time::Instant::now();
    eventually("the revoked client's session is dropped", || fx.core.session_count_of(&name) == 0).await;
    let closed = within(5, dashboard.quic().connection().closed()).await;
    assert!(
        matches!(&closed, ConnectionError::ApplicationClosed(close) if close.error_code.into_inner() == codes::CLIENT_CERT_REQUIRED),
        "{closed:?}"
    );
    eprintln!("revoked client's connection closed after {} ms", revoked_at.elapsed().as_millis());
    assert!(revoked_at.elapsed() < Duration::from_secs(1), "closed within a second");
    let again = within(10, async {
        let client = QuicClient::connect(fx.addr, "localhost", tls).await?;
        client.call(&Client::new([9; 32]).init_request()).await
    })
    .await;
    assert!(again.is_err(), "a revoked client's new connection is refused: {again:?}");
    assert_eq!(owner.ok("list_wallets", json!({})).await, json!([]));
    fx.stop().await;
}

/// A client moved to a new key (as `default` after `keyward certs rotate`): connections made with
/// the old key are closed, and the old key no longer connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_of_a_replaced_key_are_closed() {
    let fx = Fixture::start(QuicLimits::default()).await;
    let old = fx.ca.leaf("front end, old key", &[], Usage::Client, false);
    let name = support::register(&fx.core, &old, keyward_core::Role::Owner);
    let tls = Arc::new(support::client_config(&fx.ca, Some(&old)));
    let quic = within(10, QuicClient::connect(fx.addr, "localhost", Arc::clone(&tls))).await.expect("connect");
    let mut held = support::Caller::new(quic, 5).await;
    assert_eq!(held.ok("list_wallets", json!({})).await, json!([]));
    let new = fx.ca.leaf("front end, new key", &[], Usage::Client, false);
    let spki_sha256 = keyward_driver::spki_sha256(&new.chain[0]).expect("a certificate");
    fx.core.set_client_identity(&name, keyward_core::Identity::Cert { spki_sha256 }).expect("moved");
    // The next answer on any connection makes the driver look (the timer does within a second).
    let mut other = fx.caller(1).await;
    assert_eq!(other.ok("list_wallets", json!({})).await, json!([]));
    let closed = within(5, held.quic().connection().closed()).await;
    assert!(matches!(closed, ConnectionError::ApplicationClosed(_)), "{closed:?}");
    let again = within(10, async {
        let client = QuicClient::connect(fx.addr, "localhost", tls).await?;
        client.call(&Client::new([9; 32]).init_request()).await
    })
    .await;
    assert!(again.is_err(), "the old key is refused: {again:?}");
    fx.stop().await;
}

/// A UDP port where nothing answers (a bound socket that never reads): the connection attempt
/// gives up after `CONNECT_TIMEOUT` (5 s) and says so, rather than waiting out the 60 s idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_port_is_reported_as_nothing_answering() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
    let addr = silent.local_addr().expect("its address");
    let ca = Ca::new("Keyward test CA");
    let tls = Arc::new(support::client_config(&ca, None));
    let error = QuicClient::connect(addr, "localhost", tls).await.expect_err("nothing answers");
    assert!(matches!(error, QuicError::NoAnswer { addr: called } if called == addr), "{error:?}");
    assert_eq!(error.to_string(), format!("nothing answers at {addr} over QUIC"));
    assert_eq!(error.link_error().kind(), keyward_driver::LinkErrorKind::Unreachable);
    drop(silent);
}
