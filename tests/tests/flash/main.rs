//! `autoprov flash` and `autoprov inject` against real images made by sfdisk, mkfs.vfat,
//! mkfs.ext4 and zstd, checked with real readers: fsck.fat, mcopy, openssl. One module per area;
//! each test has its own directory, CA and images. Block devices are never touched: the refusals
//! that need one (mounted, system disk, too small, not removable) are tested through the checker's
//! seam in `pki/src/flash/target.rs`.

mod flash;
mod inject;
mod refuse;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use autoprov_bundle::Bundle;
use autoprov_tests::bins::bin;
use autoprov_tests::image::{self, Built, Layout};

pub const DEVICE: &str = "sensor-007";

/// A directory with a fleet CA in `pki/`.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Fixture {
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
        };
        let out = f.autoprov(&["ca", "init", "--name", "Flash Test Fleet"]);
        assert!(out.status.success(), "ca init: {}", text(&out));
        f
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `autoprov --pki-dir DIR/pki ARGS` with no terminal.
    pub fn autoprov(&self, args: &[&str]) -> Output {
        Command::new(bin("autoprov"))
            .arg("--pki-dir")
            .arg(self.path("pki"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .env_remove("AUTOPROV_PKI_DIR")
            .output()
            .unwrap()
    }

    /// An image with `layout` in the fixture's directory.
    pub fn image(&self, name: &str, layout: &Layout) -> Built {
        image::build(self.dir.path(), name, layout)
    }

    /// `autoprov list --json`, as (serial, status) pairs of the device.
    pub fn certs(&self) -> Vec<(String, String)> {
        let out = self.autoprov(&["list", "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["kind"] == "device")
            .map(|r| {
                (
                    r["serial"].as_str().unwrap().to_owned(),
                    r["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// `autoprov flashes --json`.
    pub fn flashes(&self) -> Vec<serde_json::Value> {
        let out = self.autoprov(&["flashes", "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        rows.as_array().unwrap().clone()
    }

    /// Runs a command that must succeed and returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.autoprov(args);
        assert!(out.status.success(), "autoprov {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `autoprov flash DEVICE --image IMAGE --to TARGET EXTRA…`, which must succeed, and
    /// returns its stdout.
    pub fn flash(&self, image: &Path, to: &Path, extra: &[&str]) -> String {
        self.ok(&flash_args(image, to, extra))
    }

    /// Runs the same flash, which must fail with `code`, and returns its stderr.
    pub fn flash_fails(&self, image: &Path, to: &Path, extra: &[&str], code: i32) -> String {
        self.fails(&flash_args(image, to, extra), code)
    }

    /// Runs `autoprov inject DEVICE --to CARD EXTRA…`, which must succeed, and returns its stdout.
    pub fn inject(&self, card: &Path, extra: &[&str]) -> String {
        self.ok(&inject_args(card, extra))
    }

    /// Runs the same inject, which must fail with `code`, and returns its stderr.
    pub fn inject_fails(&self, card: &Path, extra: &[&str], code: i32) -> String {
        self.fails(&inject_args(card, extra), code)
    }

    /// `wifi.psk` in the fixture's directory, holding the passphrase `correct horse battery`.
    pub fn psk_file(&self) -> PathBuf {
        let psk = self.path("wifi.psk");
        std::fs::write(&psk, "correct horse battery\n").unwrap();
        psk
    }

    /// Runs a command that must fail with `code` and returns its stderr.
    pub fn fails<A: AsRef<str>>(&self, args: &[A], code: i32) -> String {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        let args = &args[..];
        let out = self.autoprov(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "autoprov {args:?}: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

fn flash_args<'a>(image: &'a Path, to: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["flash", DEVICE, "--image", s(image), "--to", s(to)];
    args.extend_from_slice(extra);
    args
}

fn inject_args<'a>(card: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["inject", DEVICE, "--to", s(card)];
    args.extend_from_slice(extra);
    args
}

/// Whether the fixture's `crl.pem` lists `serial` (read by openssl).
pub fn crl_lists(f: &Fixture, serial: &str) -> bool {
    let crl = image::run(
        Command::new("openssl")
            .args(["crl", "-noout", "-text", "-in"])
            .arg(f.path("pki/crl.pem")),
    );
    crl.to_lowercase().contains(serial)
}

pub use autoprov_tests::text;

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The boot partition of `card` extracted, checked by `fsck.fat -n`, and its bundle read with
/// `mcopy` and checked by the bundle crate (manifest hashes) and by openssl (chain and key).
pub struct Card {
    pub fat: PathBuf,
    pub bundle: Bundle,
    pub dir: tempfile::TempDir,
}

pub fn read_card(card: &Path, built: &Built) -> Card {
    let dir = tempfile::tempdir().unwrap();
    let fat = image::extract(card, &built.boot, &dir.path().join("boot.fat"));
    let (clean, said) = image::fsck_fat(&fat);
    assert!(clean, "fsck.fat -n: {said}");
    assert!(
        !said.contains("Leaving filesystem unchanged"),
        "fsck.fat found problems: {said}"
    );
    let names = image::mdir(&fat, "autoprov");
    let bundle = Bundle::from_files(|name| {
        Ok(names
            .iter()
            .any(|n| n == name)
            .then(|| image::mcopy_out(&fat, &format!("autoprov/{name}")).unwrap()))
    })
    .unwrap_or_else(|e| panic!("the bundle mcopy reads from the card: {e} (files {names:?})"));
    let files = dir.path().join("bundle");
    autoprov_bundle::write_dir(&bundle, &files, false).unwrap();
    let verify = image::run(
        Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(files.join("ca.crt"))
            .arg("-untrusted")
            .arg(files.join("device.crt"))
            .arg(files.join("device.crt")),
    );
    assert!(verify.contains(": OK"), "openssl verify: {verify}");
    let from_key = image::run(
        Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(files.join("device.key")),
    );
    let from_cert = image::run(
        Command::new("openssl")
            .args(["x509", "-pubkey", "-noout", "-in"])
            .arg(files.join("device.crt")),
    );
    assert_eq!(
        from_key, from_cert,
        "the key does not match the certificate"
    );
    Card { fat, bundle, dir }
}
