//! Clients of one run only (the launcher's): never written to the store, and their name held back.

use super::*;

/// A client record made at time 0, not revoked.
fn record(name: &str, role: Role, identity: Identity) -> ClientRecord {
    ClientRecord { name: name.into(), role, identity, created_unix_ms: 0, revoked_unix_ms: None }
}

#[test]
fn a_client_of_this_run_only_never_reaches_the_store() {
    let store = Arc::new(keyward_core::MemoryStore::new());
    let server = Server::new(test_config(), Box::new(Arc::clone(&store)), [4; 32]);
    let owner = record("owner", Role::Owner, Identity::Uid { uid: 3 });
    server.add_client(owner).unwrap();
    let launcher = record("launcher", Role::Owner, Identity::Cert { spki_sha256: [b'L'; 32] });
    server.add_transient_client(launcher.clone()).unwrap();
    assert_eq!(server.client_for_cert(&[b'L'; 32]).as_deref(), Some("launcher"));
    assert_eq!(server.role_of("launcher"), Some(Role::Owner));
    let stored = || keyward_core::Store::load_clients(&*store).unwrap();
    assert_eq!(stored().iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["owner"]);
    // The same checks as a kept registration: no second client of that name or identity.
    assert!(server.add_transient_client(launcher.clone()).unwrap_err().contains("exists"));
    let mut same_key = launcher.clone();
    same_key.name = "other".into();
    assert!(server.add_client(same_key).unwrap_err().contains("has this identity already"));
    assert!(stored().iter().all(|r| r.name != "other"));

    // A new role or a revocation applies, and is not written either.
    let mut caller = Caller::new(&server, "owner", 3);
    caller.call(&server, "set_client_role", json!({"name": "launcher", "role": "reader"})).unwrap();
    assert_eq!(server.role_of("launcher"), Some(Role::Reader));
    caller.call(&server, "revoke_client", json!({"name": "launcher"})).unwrap();
    assert_eq!(server.role_of("launcher"), None);
    assert_eq!(stored().len(), 1, "{:?}", stored());
    // A kept client's changes do reach the store, beside it.
    let phone = record("phone", Role::Reader, Identity::Uid { uid: 5 });
    server.add_client(phone).unwrap();
    caller.call(&server, "set_client_role", json!({"name": "phone", "role": "signer"})).unwrap();
    let kept = |name: &str| stored().into_iter().find(|r| r.name == name).unwrap();
    assert_eq!(kept("phone").role, Role::Signer);
    caller.call(&server, "revoke_client", json!({"name": "phone"})).unwrap();
    assert!(kept("phone").revoked_unix_ms.is_some());
    assert!(stored().iter().all(|r| r.name != "launcher"));

    // A restarted server over the same store does not know it, and the name is free again.
    drop(server);
    let restarted = Server::new(test_config(), Box::new(Arc::clone(&store)), [5; 32]);
    assert_eq!(restarted.client_for_cert(&[b'L'; 32]), None);
    assert!(restarted.clients().iter().all(|r| r.name != "launcher"));
    restarted.add_transient_client(launcher).unwrap();
}

#[test]
fn the_launchers_name_is_never_kept_and_a_kept_one_from_before_is_stepped_around() {
    let (server, _) = server(None);
    let mut owner = Caller::new(&server, "owner", 3);
    let refused = owner
        .call(&server, "add_client", json!({"name": "launcher", "role": "reader", "public_key": null, "uid": 77}))
        .unwrap_err();
    assert!(refused.1.contains("launched server's own client"), "{refused:?}");
    assert!(server.clients().iter().all(|r| r.name != "launcher"));
    // For this run only, the name is the launcher's.
    let record = record(keyward_core::LAUNCHER, Role::Owner, Identity::Uid { uid: 77 });
    server.add_transient_client(record).unwrap();
    // A name taken (by a record kept before the name was held back) gives the pid's name.
    assert_eq!(keyward_core::launcher_name(|_| false, 42), "launcher");
    assert_eq!(keyward_core::launcher_name(|name| name == "launcher", 42), "launcher-42");
}
