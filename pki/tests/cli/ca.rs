//! `ca init`, `ca show`, `ca verification-cert`, key types and encrypted keys.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::util::{Fleet, common_name, openssl_verify, snapshot, webpki_client, with_leaf};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn openssl_text(p: &std::path::Path) -> String {
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn init_makes_root_and_issuing_ca_with_keys_0600() {
    let f = Fleet::with_ca(&["--name", "Acme"]);
    let pki = f.pki();
    for key in ["root.key", "issuing.key"] {
        assert_eq!(mode(&pki.join(key)), 0o600, "{key}");
    }
    let issuing = openssl_text(&pki.join("issuing.crt"));
    assert!(issuing.contains("CA:TRUE, pathlen:0"), "{issuing}");
    assert!(issuing.contains("CN=Acme Issuing CA") || issuing.contains("CN = Acme Issuing CA"));
    // Root 20 years, issuing 10 years.
    let years = |p: &str| {
        with_leaf(&pki.join(p), |c| {
            (c.validity().not_after.to_datetime() - c.validity().not_before.to_datetime())
                .whole_days()
                / 365
        })
    };
    assert_eq!(years("root.crt"), 20);
    assert_eq!(years("issuing.crt"), 10);
    openssl_verify(&pki, &pki.join("issuing.crt"), &[]).unwrap();
}

#[test]
fn init_on_an_existing_ca_changes_nothing_and_says_so() {
    let f = Fleet::with_ca(&[]);
    let before = snapshot(&f.pki());
    let r = f.run(&["ca", "init", "--key-type", "rsa-2048"]);
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(r.stdout.contains("already initialised"), "{r:#?}");
    assert_eq!(snapshot(&f.pki()), before);
}

#[test]
fn half_present_ca_names_the_missing_file_and_nothing_is_overwritten() {
    for missing in ["issuing.key", "root.crt"] {
        let f = Fleet::with_ca(&[]);
        std::fs::remove_file(f.pki().join(missing)).unwrap();
        let before = snapshot(&f.pki());
        for args in [vec!["ca", "init"], vec!["issue", "sensor-1", "--out", "b"]] {
            f.fails(&args, 2, missing);
        }
        assert_eq!(snapshot(&f.pki()), before, "{missing}");
        assert!(!f.path("b").exists());
    }
}

#[test]
fn single_tier_root_signs_devices_that_verify() {
    let f = Fleet::with_ca(&["--single-tier"]);
    assert!(!f.pki().join("issuing.crt").exists());
    let b = f.issue("sensor-1");
    let chain = b.join("device.crt");
    assert_eq!(crate::util::pem_certs(&chain).len(), 1);
    openssl_verify(&f.pki(), &chain, &[]).unwrap();
    webpki_client(&f.pki().join("root.crt"), &chain, None).unwrap();
}

#[test]
fn every_key_type_issues_certificates_that_verify() {
    for kt in ["ecdsa-p384", "rsa-2048"] {
        let f = Fleet::with_ca(&["--key-type", kt]);
        let out = f.path("b");
        f.ok(&[
            "issue",
            "sensor-1",
            "--out",
            out.to_str().unwrap(),
            "--key-type",
            kt,
        ]);
        let chain = out.join("device.crt");
        openssl_verify(&f.pki(), &chain, &[]).unwrap_or_else(|e| panic!("{kt}: {e}"));
        webpki_client(&f.pki().join("root.crt"), &chain, None)
            .unwrap_or_else(|e| panic!("{kt}: {e}"));
        let show = f.ok(&["ca", "show"]);
        assert!(show.contains(&format!("key         {kt}")), "{show}");
    }
}

#[test]
fn encrypted_keys_need_the_passphrase_only_to_sign() {
    let f = Fleet::new();
    let init = f
        .cmd(&["ca", "init", "--encrypt"])
        .env("AUTOPROV_CA_PASSPHRASE", "correct horse")
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let key = std::fs::read_to_string(f.pki().join("issuing.key")).unwrap();
    assert!(key.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    // OpenSSL reads the encrypted key with the same passphrase.
    let o = Command::new("openssl")
        .args(["pkey", "-noout", "-passin", "pass:correct horse", "-in"])
        .arg(f.pki().join("root.key"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");

    // No passphrase and no terminal: a clear configuration error, nothing written.
    f.fails(
        &["issue", "sensor-1", "--out", "b"],
        2,
        "AUTOPROV_CA_PASSPHRASE",
    );
    let wrong = f
        .cmd(&["issue", "sensor-1", "--out", "b"])
        .env("AUTOPROV_CA_PASSPHRASE", "wrong")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong passphrase"));
    assert!(!f.path("b").exists());
    assert!(f.list().is_empty());
    // Listing needs no passphrase; issuing with it works.
    let ok = f
        .cmd(&["issue", "sensor-1", "--out", "b"])
        .env("AUTOPROV_CA_PASSPHRASE", "correct horse")
        .output()
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");
    openssl_verify(&f.pki(), &f.path("b/device.crt"), &[]).unwrap();
}

#[test]
fn ca_show_prints_the_fingerprints_openssl_computes() {
    let f = Fleet::with_ca(&[]);
    let show = f.ok(&["ca", "show"]);
    for cert in ["root.crt", "issuing.crt"] {
        let o = Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(f.pki().join(cert))
            .output()
            .unwrap();
        let fp = String::from_utf8(o.stdout).unwrap();
        let hex = fp
            .trim()
            .rsplit('=')
            .next()
            .unwrap()
            .replace(':', "")
            .to_lowercase();
        assert!(show.contains(&hex), "{cert}: {hex} not in {show}");
    }
}

#[test]
fn verification_cert_carries_the_code_and_chains_to_its_signer() {
    let f = Fleet::with_ca(&[]);
    for (signer, code) in [("issuing", "a1b2c3d4e5"), ("root", "F00DCAFE")] {
        let out = f.path(&format!("verify-{signer}.crt"));
        f.ok(&[
            "ca",
            "verification-cert",
            "--code",
            code,
            "--signer",
            signer,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(common_name(&out), code);
        openssl_verify(&f.pki(), &out, &[]).unwrap();
    }
    let r = f.run(&["ca", "verification-cert", "--code", "has space"]);
    assert_eq!(r.code, 2, "{r:#?}");
}
