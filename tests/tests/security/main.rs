//! Security checks of the threat model (`docs/threat-model.md`): who can publish where, which
//! certificates a broker refuses, and where private keys may and may not be. Checks that other
//! suites already make are referenced from the threat model, not repeated here.

mod access;
mod keys;
mod network;
mod validity;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use autoprov_bundle::Bundle;
use autoprov_tests::mosquitto::Mosquitto;

/// The base64 lines of a PEM private key that hold secret bytes (all but the header, the footer
/// and the last line, which in an EC key is the public point).
pub fn secret_lines(key_pem: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(key_pem);
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with("-----") && !l.is_empty())
        .map(str::to_owned)
        .collect();
    lines.pop();
    assert!(!lines.is_empty(), "not a PEM key");
    lines
}

/// Asserts that `text` holds no part of `key_pem` and no PEM private-key header.
pub fn assert_no_key(text: &str, key_pem: &[u8], what: &str) {
    assert!(
        !text.contains("PRIVATE KEY-----"),
        "{what} quotes a PEM private key:\n{text}"
    );
    for l in secret_lines(key_pem) {
        assert!(
            !text.contains(&l),
            "{what} holds a line of the private key:\n{text}"
        );
    }
}

/// `mosquitto_pub` of one QoS 1 message with a device's certificate and key, as any MQTT client
/// holding the device's files could: a third party's client, not the agent.
pub fn publish(
    broker: &Mosquitto,
    dir: &Path,
    bundle: &Bundle,
    client_id: &str,
    topic: &str,
) -> Output {
    autoprov_tests::pki::write_bundle(bundle, dir);
    broker
        .command("mosquitto_pub")
        .args(["-h", broker.host(), "-p", &broker.port().to_string()])
        .arg("--cafile")
        .arg(dir.join("ca.crt"))
        .arg("--cert")
        .arg(dir.join("device.crt"))
        .arg("--key")
        .arg(dir.join("device.key"))
        .args([
            "-i",
            client_id,
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            "{\"forged\":true}",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("mosquitto_pub is installed (scripts/install-deps)")
}

pub use autoprov_tests::text;

/// `autoprov --pki-dir PKI ARGS`.
pub fn autoprov(pki: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(autoprov_tests::bins::bin("autoprov"));
    c.arg("--pki-dir")
        .arg(pki)
        .args(args)
        .stdin(Stdio::null())
        .env_remove("AUTOPROV_PKI_DIR")
        .env_remove("AUTOPROV_CA_PASSPHRASE");
    c
}
