//! Where private keys may be: in the bundle and the device's credentials (mode 0600), on the
//! card; and where they may not: any output, any error message, the operator's disk after a
//! flash. (The inventory never holds one: `pki/tests/cli/issue.rs`.)

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use autoprov_tests::agent::AgentEnv;
use autoprov_tests::bins::bin;
use autoprov_tests::image::{self, Layout};
use autoprov_tests::pki::TestPki;

use super::{assert_no_key, autoprov, text};

fn output(cmd: &mut Command) -> String {
    text(&cmd.output().expect("run"))
}

#[test]
fn no_error_message_and_no_check_output_shows_the_private_key() {
    let mut pki = TestPki::new("Test Fleet");
    let env = AgentEnv::new();
    let bundle = pki.device("sensor-007", Default::default());
    let other = pki.device("sensor-008", Default::default());
    env.flash(&bundle);
    assert!(env.import(&[]).status.success());
    // No broker: `check` goes as far as it can and fails at the end.
    env.configure(None, "[mqtt]\nhost = \"localhost\"\nport = 1\n");
    let key = bundle.device_key();
    let current = env.credentials().join("current");
    let key_file = current.join("device.key");
    let mut seen = vec![("check", output(&mut env.command(&["check"])))];

    // Configuration files that are really keys: parse errors quote the line they stop at.
    seen.push((
        "--config device.key",
        output(
            Command::new(bin("autoprov-agent"))
                .arg("--config")
                .arg(&key_file)
                .arg("check"),
        ),
    ));
    env.dropin("10-pasted.toml", std::str::from_utf8(key).unwrap());
    seen.push((
        "a drop-in holding a key, check",
        output(&mut env.command(&["check"])),
    ));
    seen.push((
        "a drop-in holding a key, run",
        output(&mut env.command(&["run"])),
    ));
    fs::remove_file(env.path().join("conf.d/10-pasted.toml")).unwrap();
    env.dropin(
        "10-quoted.toml",
        &format!(
            "[mqtt]\nhost = {:?}\n",
            String::from_utf8_lossy(key).replace('\n', " ")
        ),
    );
    seen.push(("a key as a host name", output(&mut env.command(&["check"]))));
    fs::remove_file(env.path().join("conf.d/10-quoted.toml")).unwrap();

    // Another device's key in place of this one's, then half a key.
    let real = fs::read(&key_file).unwrap();
    fs::write(&key_file, other.device_key()).unwrap();
    seen.push((
        "someone else's key, check",
        output(&mut env.command(&["check"])),
    ));
    seen.push((
        "someone else's key, run",
        output(&mut env.command(&["run"])),
    ));
    fs::write(&key_file, &real[..real.len() / 2]).unwrap();
    seen.push(("half a key, check", output(&mut env.command(&["check"]))));
    seen.push(("half a key, run", output(&mut env.command(&["run"]))));
    fs::write(&key_file, &real).unwrap();

    // A card whose key was swapped: import refuses it, naming the file.
    let tampered = AgentEnv::new();
    tampered.flash(&bundle);
    fs::write(tampered.card().join("device.key"), other.device_key()).unwrap();
    seen.push(("a swapped key on the card", text(&tampered.import(&[]))));

    for (what, out) in &seen {
        assert_no_key(out, key, what);
        assert_no_key(out, other.device_key(), what);
    }
}

#[test]
fn a_wrong_ca_passphrase_is_not_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let right = "correct horse battery staple";
    let out = autoprov(&pki, &["ca", "init", "--encrypt"])
        .env("AUTOPROV_CA_PASSPHRASE", right)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let wrong = "Tr0ub4dor&3 wrong";
    let out = autoprov(&pki, &["issue", "sensor-1", "--out"])
        .arg(dir.path().join("b"))
        .env("AUTOPROV_CA_PASSPHRASE", wrong)
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("passphrase"), "{said}");
    assert!(!said.contains(wrong) && !said.contains(right), "{said}");
    for key in ["root.key", "issuing.key"] {
        let pem = fs::read_to_string(pki.join(key)).unwrap();
        assert!(
            pem.contains("ENCRYPTED PRIVATE KEY"),
            "{key} is stored in clear"
        );
    }
}

/// Every regular file below `root` that holds a PEM private key.
fn key_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let Ok(meta) = fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file()
                && fs::read(&p).is_ok_and(|b| b.windows(11).any(|w| w == b"PRIVATE KEY"))
            {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn every_private_key_file_written_is_0600_even_with_a_permissive_umask() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // What every writer of keys is run as here: umask 000, so only the modes the code asks for
    // protect the keys.
    let sh = |args: &[&str]| {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg("umask 000; exec \"$@\"")
            .arg("sh")
            .args(args)
            .env("AUTOPROV_CA_PASSPHRASE", "pass phrase")
            .env_remove("AUTOPROV_PKI_DIR");
        let out = c.output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    };
    let ap = bin("autoprov").to_string_lossy().into_owned();
    let agent = bin("autoprov-agent").to_string_lossy().into_owned();
    let p = |s: &str| root.join(s).to_string_lossy().into_owned();
    sh(&[&ap, "--pki-dir", &p("pki"), "ca", "init"]);
    sh(&[&ap, "--pki-dir", &p("pki-enc"), "ca", "init", "--encrypt"]);
    sh(&[
        &ap,
        "--pki-dir",
        &p("pki"),
        "issue",
        "sensor-1",
        "--out",
        &p("bundles/s1"),
    ]);
    sh(&[
        &ap,
        "--pki-dir",
        &p("pki"),
        "rotate",
        "sensor-1",
        "--out",
        &p("bundles/s1b"),
    ]);
    sh(&[
        &ap,
        "--pki-dir",
        &p("pki-enc"),
        "issue",
        "sensor-2",
        "--out",
        &p("bundles/s2"),
    ]);
    sh(&[
        &ap,
        "--pki-dir",
        &p("pki"),
        "issue-server",
        "broker",
        "--out",
        &p("broker"),
        "--dns",
        "localhost",
    ]);
    sh(&[
        &agent,
        "import",
        "--from",
        &p("bundles/s1"),
        "--to",
        &p("state/credentials"),
        "--keep-source",
    ]);
    sh(&[
        &agent,
        "import",
        "--from",
        &p("bundles/s1b"),
        "--to",
        &p("state/credentials"),
        "--keep-source",
    ]);
    let built = image::build(root, "sd", &Layout::default());
    let img = built.img.to_string_lossy().into_owned();
    sh(&[
        &ap,
        "--pki-dir",
        &p("pki"),
        "flash",
        "sensor-3",
        "--image",
        &img,
        "--to",
        &p("card.img"),
        "--yes",
    ]);
    sh(&[
        &ap,
        "--pki-dir",
        &p("pki"),
        "demo",
        "--devices",
        "1",
        "--duration",
        "5s",
        "--plain",
        "--keep",
        &p("demo"),
    ]);

    let keys = key_files(root);
    let mut expected: Vec<&str> = vec![
        "pki/root.key",
        "pki/issuing.key",
        "pki-enc/root.key",
        "pki-enc/issuing.key",
        "bundles/s1/device.key",
        "bundles/s1b/device.key",
        "bundles/s2/device.key",
        "broker/server.key",
    ];
    expected.sort_unstable();
    for e in &expected {
        assert!(keys.contains(&root.join(e)), "{e} not written: {keys:?}");
    }
    assert!(
        keys.iter()
            .any(|k| k.starts_with(root.join("state/credentials"))),
        "the imported credentials hold no key: {keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.starts_with(root.join("demo"))),
        "the demo kept no key: {keys:?}"
    );
    let loose: Vec<String> = keys
        .iter()
        .filter_map(|k| {
            let mode = fs::metadata(k).unwrap().permissions().mode() & 0o777;
            (mode != 0o600).then(|| format!("{} is {mode:o}", k.display()))
        })
        .collect();
    assert!(
        loose.is_empty(),
        "key files not 0600:\n{}",
        loose.join("\n")
    );
    // The card image holds a key in its FAT partition: it is 0600 too.
    let mode = fs::metadata(root.join("card.img"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn flash_writes_no_private_key_to_the_operators_disk() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let pki = root.join("pki");
    let out = autoprov(&pki, &["ca", "init"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let built = image::build(root, "sd", &Layout::default());
    let (home, tmp, cwd) = (root.join("home"), root.join("tmp"), root.join("cwd"));
    for d in [&home, &tmp, &cwd] {
        fs::create_dir_all(d).unwrap();
    }
    let card = root.join("card.img");
    let out = autoprov(&pki, &["flash", "sensor-1", "--yes", "--image"])
        .arg(&built.img)
        .arg("--to")
        .arg(&card)
        .env("HOME", &home)
        .env("TMPDIR", &tmp)
        .current_dir(&cwd)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let bundle = image::card_bundle(&card, &built.boot).unwrap();
    let secret = super::secret_lines(bundle.device_key());
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p == card {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let data = String::from_utf8_lossy(&fs::read(&p).unwrap()).into_owned();
            assert!(
                !data.contains("PRIVATE KEY") || p.starts_with(&pki),
                "{} holds a private key",
                p.display()
            );
            for l in &secret {
                assert!(!data.contains(l), "{} holds the device's key", p.display());
            }
        }
    }
    assert_no_key(&text(&out), bundle.device_key(), "flash's output");
}
