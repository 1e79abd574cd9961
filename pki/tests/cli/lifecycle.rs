//! `rotate`, `revoke`, `crl`, `list`, and what an interrupted issuance leaves.

use std::path::Path;

use autoprov::{DeviceId, IssueOptions, Pki};

use crate::util::{Fleet, openssl_verify, pem_certs, webpki_client};

fn crl_check(f: &Fleet, chain: &Path) -> Result<(), String> {
    openssl_verify(
        &f.pki(),
        chain,
        &[
            "-crl_check",
            "-CRLfile",
            f.pki().join("crl.pem").to_str().unwrap(),
        ],
    )
}

#[test]
fn rotation_supersedes_and_revoke_previous_revokes() {
    let f = Fleet::with_ca(&[]);
    let first = f.issue("sensor-1");
    f.ok(&["rotate", "sensor-1", "--out", "second"]);
    let st = f.statuses("sensor-1");
    assert_eq!(
        st.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
        ["superseded", "active"]
    );
    // Superseded still verifies: the card in the field keeps working until re-flashed.
    openssl_verify(&f.pki(), &first.join("device.crt"), &[]).unwrap();

    f.ok(&["rotate", "sensor-1", "--out", "third", "--revoke-previous"]);
    let st = f.statuses("sensor-1");
    assert_eq!(
        st.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
        ["superseded", "revoked", "active"]
    );
    let second = f.path("second/device.crt");
    let err = crl_check(&f, &second).unwrap_err();
    assert!(err.contains("revoked"), "{err}");
    crl_check(&f, &f.path("third/device.crt")).unwrap();
}

#[test]
fn rotating_a_device_without_a_certificate_points_to_issue() {
    let f = Fleet::with_ca(&[]);
    f.fails(
        &["rotate", "sensor-9", "--out", "b"],
        2,
        "autoprov issue sensor-9",
    );
    assert!(!f.path("b").exists());
}

#[test]
fn revoke_prints_the_aws_certificate_id_and_cloud_commands_and_updates_the_crl() {
    let f = Fleet::with_ca(&[]);
    let b = f.issue("sensor-1");
    let keep = f.issue("sensor-2");
    let chain = b.join("device.crt");
    crl_check(&f, &f.path("bundles/sensor-2/device.crt")).unwrap_err(); // no CRL yet

    let out = f.ok(&["revoke", "sensor-1", "--reason", "key-compromise"]);
    let aws_id = autoprov_bundle::sha256_hex(&pem_certs(&chain)[0]);
    assert!(
        out.contains(&format!("AWS certificate id: {aws_id}")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "aws iot update-certificate --certificate-id {aws_id} --new-status REVOKED"
        )),
        "{out}"
    );
    assert!(out.contains("az iot hub device-identity update"), "{out}");
    assert!(out.contains("--provisioning-status disabled"), "{out}");

    // OpenSSL accepts the CRL's signature and sees the revocation; the other device still passes.
    let o = std::process::Command::new("openssl")
        .args(["crl", "-noout", "-CAfile"])
        .arg(f.pki().join("issuing.crt"))
        .arg("-in")
        .arg(f.pki().join("crl.pem"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("verify OK"),
        "{o:?}"
    );
    assert!(crl_check(&f, &chain).unwrap_err().contains("revoked"));
    crl_check(&f, &keep.join("device.crt")).unwrap();
    // rustls-webpki with the CRL agrees.
    let crl = f.pki().join("crl.pem");
    let err = webpki_client(&b.join("ca.crt"), &chain, Some(&crl)).unwrap_err();
    assert!(err.contains("Revoked"), "{err}");
    webpki_client(&b.join("ca.crt"), &keep.join("device.crt"), Some(&crl)).unwrap();

    assert_eq!(f.statuses("sensor-1")[0].1, "revoked");
    // Revoking again changes nothing and says so.
    let again = f.ok(&["revoke", "sensor-1"]);
    assert!(again.contains("already revoked"), "{again}");
    let r = f.run(&["revoke", "sensor-404"]);
    assert_eq!(r.code, 2, "{r:#?}");
    let r = f.run(&["revoke", "sensor-2", "--reason", "lost"]);
    assert_eq!(r.code, 2, "{r:#?}");
    assert_eq!(f.statuses("sensor-2")[0].1, "active");
}

#[test]
fn revoke_by_serial_touches_only_that_certificate() {
    let f = Fleet::with_ca(&[]);
    f.issue("sensor-1");
    f.ok(&["rotate", "sensor-1", "--out", "new"]);
    let old = f.statuses("sensor-1")[0].0.clone();
    // OpenSSL notation (upper case, colons) is accepted.
    let openssl_style = old
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    f.ok(&[
        "revoke",
        "sensor-1",
        "--serial",
        &openssl_style,
        "--reason",
        "superseded",
    ]);
    let st = f.statuses("sensor-1");
    assert_eq!(st[0], (old, "revoked".into()));
    assert_eq!(st[1].1, "active");
}

#[test]
fn crl_command_regenerates_with_a_growing_number_and_copies_it() {
    let f = Fleet::with_ca(&[]);
    let out = f.path("mosquitto-crl.pem");
    let first = f.ok(&[
        "crl",
        "--out",
        out.to_str().unwrap(),
        "--next-update-days",
        "7",
    ]);
    assert!(first.contains("CRL number 1"), "{first}");
    let second = f.ok(&["crl"]);
    assert!(second.contains("CRL number 2"), "{second}");
    let text = std::process::Command::new("openssl")
        .args(["crl", "-noout", "-text", "-in"])
        .arg(&out)
        .output()
        .unwrap()
        .stdout;
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("No Revoked Certificates"), "{text}");
}

#[test]
fn list_filters_expiring_certificates() {
    let f = Fleet::with_ca(&[]);
    f.ok(&["issue", "soon", "--out", "a", "--days", "10"]);
    f.issue("later");
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&f.ok(&["list", "--expiring-within", "30", "--json"])).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], "soon");
    assert!(rows[0]["days_left"].as_i64().unwrap() <= 10);
    let table = f.ok(&["list"]);
    assert!(table.contains("soon") && table.contains("later"), "{table}");
}

#[test]
fn interrupted_issuance_is_listed_pending_and_revoked_when_the_device_is_issued_again() {
    let f = Fleet::with_ca(&[]);
    let id = DeviceId::new("sensor-1").unwrap();
    // What a process killed between recording and writing leaves: a pending row, no bundle.
    {
        let mut pki = Pki::open(&f.pki(), None).unwrap();
        let issued = pki.issue_device(&id, &IssueOptions::default()).unwrap();
        assert!(!issued.serial.is_empty());
    }
    let table = f.ok(&["list"]);
    assert!(
        table.contains("pending") && table.contains("1 pending"),
        "{table}"
    );
    let pending = f.statuses("sensor-1")[0].0.clone();

    f.issue("sensor-1");
    let st = f.statuses("sensor-1");
    assert_eq!(st[0], (pending.clone(), "revoked".into()));
    assert_eq!(st[1].1, "active");
    let crl = std::process::Command::new("openssl")
        .args(["crl", "-noout", "-text", "-in"])
        .arg(f.pki().join("crl.pem"))
        .output()
        .unwrap()
        .stdout;
    assert!(
        String::from_utf8(crl)
            .unwrap()
            .to_lowercase()
            .contains(&pending[..8]),
        "the interrupted certificate is in the CRL"
    );
}

#[test]
fn revoke_into_a_closed_pipe_still_revokes_and_does_not_panic() {
    // `autoprov revoke sensor-1 | head -1`: the reader leaves before the output ends.
    let f = Fleet::with_ca(&[]);
    f.issue("sensor-1");
    let mut child = f
        .cmd(&["revoke", "sensor-1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let st = f.statuses("sensor-1");
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].1, "revoked");
}
