use std::fs;
use std::os::unix::fs::PermissionsExt;

use autoprov_bundle::{Bundle, Contents};
use autoprov_tests::agent::AgentEnv;
use autoprov_tests::pki::TestPki;

use super::DEVICE;

fn current_target(env: &AgentEnv, link: &str) -> Option<String> {
    fs::read_link(env.credentials().join(link))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

fn snapshot(env: &AgentEnv) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(env.credentials()) {
        for e in rd {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let content = fs::read_link(&p)
                .map(|t| t.to_string_lossy().into_owned().into_bytes())
                .unwrap_or_default();
            out.push((name, content));
        }
    }
    out.sort();
    out
}

#[test]
fn good_bundle_is_installed_and_the_key_on_the_card_wiped() {
    let mut pki = TestPki::new("Test Fleet");
    let bundle = pki.device(DEVICE, Default::default());
    let env = AgentEnv::new();
    env.flash(&bundle);
    let out = env.import(&[]);
    assert!(out.status.success(), "{out:?}");
    let set = format!("set-{}", bundle.manifest().serial);
    assert_eq!(current_target(&env, "current"), Some(set.clone()));
    assert_eq!(current_target(&env, "previous"), None);
    let cur = env.credentials().join("current");
    assert_eq!(
        fs::read(cur.join("device.key")).unwrap(),
        bundle.device_key()
    );
    assert_eq!(
        fs::metadata(cur.join("device.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(
        !env.card().join("device.key").exists(),
        "key left on the card"
    );
    assert!(env.card().join("manifest.toml").exists());
}

#[test]
fn reimporting_the_same_bundle_is_a_no_op() {
    let mut pki = TestPki::new("Test Fleet");
    let env = AgentEnv::new();
    env.flash(&pki.device(DEVICE, Default::default()));
    assert!(env.import(&["--keep-source"]).status.success());
    let before = snapshot(&env);
    let out = env.import(&[]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already imported"),
        "{out:?}"
    );
    assert_eq!(snapshot(&env), before);
    // The second run, without --keep-source, finished the job of wiping the key.
    assert!(!env.card().join("device.key").exists());
    // And with the key gone from the card, later boots are still a no-op.
    assert!(env.import(&[]).status.success());
}

#[test]
fn newer_bundle_replaces_and_the_previous_is_kept() {
    let mut pki = TestPki::new("Test Fleet");
    let first = pki.device(DEVICE, Default::default());
    let env = AgentEnv::new();
    env.flash(&first);
    assert!(env.import(&[]).status.success());
    let second = pki.rotate(DEVICE);
    assert_ne!(first.manifest().serial, second.manifest().serial);
    env.flash(&second);
    let out = env.import(&[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        current_target(&env, "current"),
        Some(format!("set-{}", second.manifest().serial))
    );
    assert_eq!(
        current_target(&env, "previous"),
        Some(format!("set-{}", first.manifest().serial))
    );
    let prev = env.credentials().join("previous");
    assert_eq!(
        fs::read(prev.join("device.crt")).unwrap(),
        first.device_crt()
    );
}

fn refused(env: &AgentEnv, expect_in_message: &str) {
    let before = snapshot(env);
    let out = env.import(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(expect_in_message), "{stderr}");
    assert!(stderr.contains("nothing changed"), "{stderr}");
    assert_eq!(
        snapshot(env),
        before,
        "a refused bundle changed the credentials"
    );
    assert!(
        env.card().join("device.key").exists(),
        "a refused bundle's key was wiped"
    );
}

#[test]
fn tampered_file_is_refused_and_changes_nothing() {
    let mut pki = TestPki::new("Test Fleet");
    let env = AgentEnv::new();
    env.flash(&pki.device(DEVICE, Default::default()));
    assert!(env.import(&[]).status.success());
    env.flash(&pki.rotate(DEVICE));
    let toml = env.card().join("device.toml");
    let mut text = fs::read_to_string(&toml).unwrap();
    text.push_str("\n[mqtt]\nhost = \"evil.example\"\n");
    fs::write(&toml, text).unwrap();
    refused(&env, "device.toml does not match manifest.toml");
}

/// `mine` with its key and CA certificate replaced, under a manifest consistent with its files:
/// import must refuse it with `expect_in_message`.
fn mixed_is_refused(mine: &Bundle, device_key: &[u8], ca_crt: &[u8], expect_in_message: &str) {
    let mixed = Bundle::new(Contents {
        device_id: mine.device_id().clone(),
        serial: mine.manifest().serial.clone(),
        created_at: mine.manifest().created_at.clone(),
        device_crt: mine.device_crt().to_vec(),
        device_key: zeroize::Zeroizing::new(device_key.to_vec()),
        ca_crt: ca_crt.to_vec(),
        device_toml: mine.device_toml().to_vec(),
        wifi_conf: None,
    });
    let env = AgentEnv::new();
    env.flash(&mixed);
    refused(&env, expect_in_message);
}

#[test]
fn key_of_another_device_is_refused() {
    let mut pki = TestPki::new("Test Fleet");
    let mine = pki.device(DEVICE, Default::default());
    let other = pki.device("sensor-008", Default::default());
    // The key belongs to another certificate.
    mixed_is_refused(
        &mine,
        other.device_key(),
        mine.ca_crt(),
        "does not belong to the first certificate",
    );
}

#[test]
fn chain_from_another_fleet_is_refused() {
    let mut pki = TestPki::new("Test Fleet");
    let mut other = TestPki::new("Other Fleet");
    let mine = pki.device(DEVICE, Default::default());
    let theirs = other.device(DEVICE, Default::default());
    mixed_is_refused(
        &mine,
        mine.device_key(),
        theirs.ca_crt(),
        "does not verify against",
    );
}

#[test]
fn empty_card_is_nothing_to_import() {
    let env = AgentEnv::new();
    fs::create_dir_all(env.card()).unwrap();
    let out = env.import(&[]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to import"));
    assert!(!env.credentials().join("current").exists());
}
