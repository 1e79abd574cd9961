//! Bad input: each gives a clear error with the right exit code and leaves nothing half-written.

use std::time::Duration;

use rcgen::{Issuer, KeyPair};

use crate::util::{Fleet, snapshot};

#[test]
fn invalid_device_id_is_a_usage_error_that_explains_the_rule() {
    let f = Fleet::with_ca(&[]);
    for bad in ["Sensor-1", "sensor.1", "_x", &"a".repeat(65)] {
        f.fails(&["issue", bad, "--out", "b"], 2, "[a-z0-9]");
    }
    assert!(!f.path("b").exists());
    assert!(f.list().is_empty());
}

#[test]
fn missing_ca_says_to_run_ca_init() {
    let f = Fleet::new();
    f.fails(&["issue", "sensor-1", "--out", "b"], 2, "autoprov ca init");
    assert!(!f.path("b").exists() && !f.pki().exists());
}

#[test]
fn corrupted_inventory_is_reported_and_left_as_it_is() {
    let f = Fleet::with_ca(&[]);
    let db = f.pki().join("inventory.db");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(f.pki().join(format!("inventory.db{suffix}")));
    }
    std::fs::write(&db, vec![0xA5u8; 16384]).unwrap();
    let before = snapshot(&f.pki());
    let r = f.run(&["issue", "sensor-1", "--out", "b"]);
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(
        r.stderr.contains("inventory.db") && r.stderr.contains("corrupted"),
        "{r:#?}"
    );
    assert!(!f.path("b").exists());
    assert_eq!(snapshot(&f.pki()), before);
    assert_eq!(f.run(&["list"]).code, 1);
}

#[test]
fn locked_inventory_times_out_with_a_clear_error_and_writes_nothing() {
    let f = Fleet::with_ca(&[]);
    let conn = rusqlite::Connection::open(f.pki().join("inventory.db")).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let started = std::time::Instant::now();
    f.fails(
        &["--lock-timeout", "1", "issue", "sensor-1", "--out", "b"],
        1,
        "locked",
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(!f.path("b").exists());
    conn.execute_batch("ROLLBACK").unwrap();
    drop(conn);
    f.issue("sensor-1");
}

#[test]
fn expired_issuing_ca_is_refused() {
    let f = Fleet::with_ca(&[]);
    let pki = f.pki();
    // Re-sign the same issuing key with a validity that ended yesterday.
    let read = |n: &str| std::fs::read_to_string(pki.join(n)).unwrap();
    let root_key = KeyPair::from_pem(&read("root.key")).unwrap();
    let issuing_key = KeyPair::from_pem(&read("issuing.key")).unwrap();
    let root = Issuer::from_ca_cert_pem(&read("root.crt"), &root_key).unwrap();
    let now = autoprov::profile::now();
    let past = autoprov::profile::Validity {
        not_before: now - time::Duration::days(400),
        not_after: now - time::Duration::days(1),
    };
    let params = autoprov::profile::issuing("autoprov", past).unwrap();
    let expired = params.signed_by(&issuing_key, &root).unwrap();
    std::fs::write(pki.join("issuing.crt"), expired.pem()).unwrap();

    f.fails(&["issue", "sensor-1", "--out", "b"], 2, "expired");
    assert!(!f.path("b").exists());
    assert!(f.list().is_empty());
}

#[test]
fn usage_errors_exit_2() {
    let f = Fleet::with_ca(&[]);
    assert_eq!(f.run(&["issue", "sensor-1"]).code, 2); // no --out
    assert_eq!(
        f.run(&["issue", "sensor-1", "--out", "b", "--days", "0"])
            .code,
        2
    );
    assert_eq!(f.run(&["ca", "init", "--key-type", "dsa"]).code, 2);
    assert!(!f.path("b").exists());
}

#[test]
fn every_command_has_examples_in_its_help() {
    let f = Fleet::new();
    for cmd in [
        vec!["ca", "init"],
        vec!["ca", "show"],
        vec!["ca", "verification-cert"],
        vec!["issue"],
        vec!["issue-server"],
        vec!["list"],
        vec!["rotate"],
        vec!["revoke"],
        vec!["crl"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let out = f.ok(&args);
        assert!(out.contains("Example"), "{cmd:?}: {out}");
    }
}
