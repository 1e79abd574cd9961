//! `issue` and `issue-server`: the certificate profile, the bundle, and refusals.

use std::os::unix::fs::PermissionsExt;

use autoprov_bundle::Bundle;
use x509_parser::prelude::*;

use crate::util::{Fleet, openssl_verify, pem_certs, snapshot, webpki_client, with_leaf};

#[test]
fn issued_bundle_verifies_with_openssl_and_webpki_and_has_the_profile() {
    let f = Fleet::with_ca(&[]);
    let b = f.issue("sensor-007");
    let chain = b.join("device.crt");
    openssl_verify(&f.pki(), &chain, &["-purpose", "sslclient"]).unwrap();
    webpki_client(&b.join("ca.crt"), &chain, None).unwrap();

    let certs = pem_certs(&chain);
    assert_eq!(certs.len(), 2, "leaf then issuing CA");
    assert_eq!(certs[1], pem_certs(&f.pki().join("issuing.crt"))[0]);
    assert_eq!(
        std::fs::read(b.join("ca.crt")).unwrap(),
        std::fs::read(f.pki().join("root.crt")).unwrap()
    );
    with_leaf(&chain, |c| {
        assert_eq!(c.version(), X509Version::V3);
        let cn = c.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "sensor-007");
        assert!(c.extended_key_usage().unwrap().unwrap().value.client_auth);
        assert!(c.key_usage().unwrap().unwrap().value.digital_signature());
        let serial = c.raw_serial();
        assert!(
            (16..=20).contains(&serial.len()) && serial[0] & 0x80 == 0,
            "{serial:?}"
        );
        let days = (c.validity().not_after.to_datetime() - c.validity().not_before.to_datetime())
            .whole_days();
        assert!((730..=731).contains(&days), "{days}");
        let has = |f: fn(&ParsedExtension<'_>) -> bool| {
            c.extensions().iter().any(|e| f(e.parsed_extension()))
        };
        assert!(has(|e| matches!(
            e,
            ParsedExtension::SubjectKeyIdentifier(_)
        )));
        assert!(has(|e| matches!(
            e,
            ParsedExtension::AuthorityKeyIdentifier(_)
        )));
    });

    // The bundle reads back whole; the key is private and matches the certificate.
    let bundle = Bundle::read_dir(&b).unwrap();
    assert_eq!(bundle.device_id().as_str(), "sensor-007");
    let listed = f.statuses("sensor-007");
    assert_eq!(
        listed,
        [(bundle.manifest().serial.clone(), "active".into())]
    );
    let mode = std::fs::metadata(b.join("device.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let key_pub = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(b.join("device.key"))
        .output()
        .unwrap()
        .stdout;
    let cert_pub = std::process::Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(&chain)
        .output()
        .unwrap()
        .stdout;
    assert_eq!(key_pub, cert_pub);
    let toml: toml::Table = std::str::from_utf8(bundle.device_toml())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(toml["device"]["id"].as_str(), Some("sensor-007"));
}

#[test]
fn leaf_never_outlives_the_issuing_ca() {
    let f = Fleet::with_ca(&["--issuing-days", "100"]);
    let b = f.issue("sensor-1");
    let issuer_end = with_leaf(&f.pki().join("issuing.crt"), |c| c.validity().not_after);
    let leaf_end = with_leaf(&b.join("device.crt"), |c| c.validity().not_after);
    assert_eq!(leaf_end, issuer_end);
}

#[test]
fn device_with_an_active_certificate_is_pointed_to_rotate() {
    let f = Fleet::with_ca(&[]);
    f.issue("sensor-1");
    f.fails(
        &["issue", "sensor-1", "--out", "again"],
        2,
        "autoprov rotate sensor-1",
    );
    assert!(!f.path("again").exists());
    assert_eq!(f.statuses("sensor-1").len(), 1);
}

#[test]
fn non_empty_out_is_refused_without_force_and_left_alone() {
    let f = Fleet::with_ca(&[]);
    let out = f.path("b");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let before = snapshot(&out);
    f.fails(&["issue", "sensor-1", "--out", "b"], 2, "--force");
    assert_eq!(snapshot(&out), before);
    // Refused before signing: no certificate exists.
    assert!(f.list().is_empty());
    f.ok(&["issue", "sensor-1", "--out", "b", "--force"]);
    assert!(!out.join("notes.txt").exists());
    Bundle::read_dir(&out).unwrap();
}

#[test]
fn out_under_a_regular_file_is_refused_before_signing() {
    let f = Fleet::with_ca(&[]);
    std::fs::write(f.path("file"), "x").unwrap();
    f.fails(&["issue", "sensor-1", "--out", "file/sub"], 2, "file");
    assert!(f.list().is_empty());
}

#[test]
fn unwritable_out_fails_and_the_undelivered_certificate_is_revoked() {
    let f = Fleet::with_ca(&[]);
    // Nobody, root included, can create directories in /proc: the write fails after signing.
    f.fails(
        &["issue", "sensor-1", "--out", "/proc/autoprov-unwritable"],
        1,
        "/proc",
    );
    assert!(!std::path::Path::new("/proc/autoprov-unwritable").exists());
    let st = f.statuses("sensor-1");
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].1, "revoked", "never active, never left pending");
    let crl = std::fs::read_to_string(f.pki().join("crl.pem")).unwrap();
    assert!(crl.contains("BEGIN X509 CRL"));
    // The device can be issued again.
    f.issue("sensor-1");
}

#[test]
fn server_certificate_has_sans_and_server_auth() {
    let f = Fleet::with_ca(&[]);
    let out = f.path("tls");
    f.ok(&[
        "issue-server",
        "broker",
        "--out",
        out.to_str().unwrap(),
        "--dns",
        "localhost",
        "--dns",
        "mqtt.example.net",
        "--ip",
        "127.0.0.1",
    ]);
    let chain = out.join("server.crt");
    openssl_verify(&f.pki(), &chain, &["-purpose", "sslserver"]).unwrap();
    openssl_verify(&f.pki(), &chain, &["-verify_hostname", "mqtt.example.net"]).unwrap();
    openssl_verify(&f.pki(), &chain, &["-verify_ip", "127.0.0.1"]).unwrap();
    assert!(openssl_verify(&f.pki(), &chain, &["-verify_hostname", "other.net"]).is_err());
    let mode = std::fs::metadata(out.join("server.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let rows = f.list();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["kind"], "server");
    assert_eq!(rows[0]["status"], "active");
}

#[test]
fn the_inventory_never_holds_a_private_key() {
    let f = Fleet::with_ca(&[]);
    let b = f.issue("sensor-1");
    let key = ::pem::parse(std::fs::read(b.join("device.key")).unwrap()).unwrap();
    let secret = key.contents();
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(f.pki()).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("inventory.db")
        {
            stored.extend(std::fs::read(&p).unwrap());
        }
    }
    assert!(!stored.is_empty());
    assert!(!stored.windows(secret.len()).any(|w| w == secret));
    assert!(!stored.windows(11).any(|w| w == b"PRIVATE KEY"));
}
