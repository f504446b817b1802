//! Which answers a host may delay (`Outgoing::unmatched`): a request no live session takes, named
//! or not, and nothing an honest client's live session sends.

use keyward_core::store::KdfParams;
use keyward_core::{Client, Incoming, Server, ServerConfig, SessionId};
use keyward_testkit::WatchedStore;
use serde_json::json;

fn server() -> Server {
    let config = ServerConfig { kdf: KdfParams::INSECURE_FOR_TESTS, ..ServerConfig::default() };
    Server::new(config, Box::new(WatchedStore::new(|_| {})), [3; 32])
}

/// `init_secure_api` at time 1: the server's answer, after the client took it.
fn init(server: &Server, client: &mut Client) -> keyward_core::Outgoing {
    let body = client.init_request();
    let init = server.handle(Incoming {
        body: &body,
        session: None,
        recent: None,
        principal: &keyward_core::Principal::local(),
        now_ms: 1,
    });
    client.handle_init_answer(&init.body).expect("init answer");
    init
}

#[test]
fn only_requests_no_live_session_takes_are_marked_unmatched() {
    let server = server();
    let mut client = Client::new([4; 32]);
    let init = init(&server, &mut client);
    let id = init.session.expect("a session");
    assert!(!init.unmatched);

    let call = |client: &mut Client, session: Option<SessionId>, now_ms: u64| {
        let (body, _) = client.seal("get_top_level_directory", json!({})).expect("sealed");
        server.handle(Incoming {
            body: &body,
            session,
            recent: None,
            principal: &keyward_core::Principal::local(),
            now_ms,
        })
    };
    assert!(!call(&mut client, Some(id), 2).unmatched, "named, live");
    assert!(!call(&mut client, None, 3).unmatched, "unnamed, matched by key");
    let unknown = call(&mut client, Some(SessionId::from_bytes([9; 16])), 4);
    assert!(unknown.unmatched, "a session that does not exist");
    assert!(String::from_utf8_lossy(&unknown.body).contains("-32001"));

    // A wrong key on a live session is refused, not delayed (no key was tried but that one).
    let mut stranger = Client::new([5; 32]);
    let other = server.handle(Incoming {
        body: &stranger.init_request(),
        session: None,
        recent: None,
        principal: &keyward_core::Principal::local(),
        now_ms: 5,
    });
    stranger.handle_init_answer(&other.body).expect("init answer");
    assert!(server.drop_session(&other.session.expect("a session")));
    assert!(!call(&mut stranger, Some(id), 6).unmatched);
    // The stranger's session is gone: named or not, nothing takes its requests.
    assert!(call(&mut stranger, None, 7).unmatched);
    assert!(call(&mut stranger, other.session, 8).unmatched);
}

#[test]
fn an_unnamed_body_may_be_exactly_the_largest_that_is_tried_against_keys() {
    let server = server();
    let max = server.max_unnamed_body();
    let answer = |len: usize| {
        let mut body = br#"{"jsonrpc":"2.0","method":"accounts","id":1}"#.to_vec();
        body.resize(len, b' ');
        let out = server.handle(Incoming {
            body: &body,
            session: None,
            recent: None,
            principal: &keyward_core::Principal::local(),
            now_ms: 1,
        });
        (String::from_utf8(out.body).expect("UTF-8"), out.unmatched)
    };
    let (at_max, unmatched) = answer(max);
    assert!(at_max.contains("-32001") && !unmatched, "read and answered: {at_max}");
    let (over, unmatched) = answer(max + 1);
    assert!(over.contains("must name its session") && unmatched, "refused unread: {over}");
    assert_eq!(server.refuse_unnamed_body().body, over.as_bytes());
    // Twice the largest ciphertext (the bound is about 4/3 of it, as base64): refused by its length
    // alone, never parsed.
    let (huge, unmatched) = answer(2 * server.config().sessions.max_unnamed_bytes);
    assert!(huge.contains("must name its session") && unmatched, "{huge}");
}

#[test]
fn an_unnamed_envelope_with_the_largest_ciphertext_is_tried_against_keys() {
    let server = server();
    let limit = server.config().sessions.max_unnamed_bytes;
    let mut client = Client::new([4; 32]);
    let _session = init(&server, &mut client);
    // A request padded so that its ciphertext (plaintext and a 16-byte tag) is exactly the limit.
    let mut plaintext = br#"{"jsonrpc":"2.0","method":"get_top_level_directory","params":{},"id":7}"#.to_vec();
    plaintext.resize(limit - 16, b' ');
    let (body, pending) = client.seal_raw(&plaintext, 7, None).expect("sealed");
    let out = server.handle(Incoming {
        body: &body,
        session: None,
        recent: None,
        principal: &keyward_core::Principal::local(),
        now_ms: 2,
    });
    assert!(!out.unmatched);
    assert!(client.open(pending, &out.body).is_ok(), "{}", String::from_utf8_lossy(&out.body));
}
