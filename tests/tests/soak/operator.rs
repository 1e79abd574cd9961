//! The operator side: `autoprov issue`, `rotate` and `flash` killed with SIGKILL at random
//! points. The inventory must stay consistent — SQLite's integrity check passes, no certificate
//! exists (in a bundle or on a card) without a row, no row is active for a bundle that was never
//! written — and a card whose flash was cut short is never recorded as flashed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use autoprov_bundle::Bundle;
use autoprov_tests::bins::bin;
use autoprov_tests::faults::{Figures, Form, Rng};
use autoprov_tests::image::{self, Layout};

struct Operator {
    dir: tempfile::TempDir,
}

impl Operator {
    fn new() -> Self {
        let op = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        op.ok(&["ca", "init", "--name", "Soak Operator Fleet"]);
        op
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("autoprov"));
        c.arg("--pki-dir")
            .arg(self.path("pki"))
            .args(args)
            .stdin(Stdio::null())
            .env_remove("AUTOPROV_PKI_DIR");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "autoprov {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `args`, killing it with SIGKILL after `after`; whether it had already exited.
    fn kill_after(&self, args: &[&str], after: Duration) -> bool {
        let mut child = self
            .command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(after);
        let done = matches!(child.try_wait(), Ok(Some(_)));
        let _ = child.kill();
        let _ = child.wait();
        done
    }

    /// Times one run of `args` that must succeed.
    fn timed(&self, args: &[&str]) -> Duration {
        let t = Instant::now();
        self.ok(args);
        t.elapsed()
    }

    /// (serial, device, status) of every device certificate, read with SQL.
    fn rows(&self) -> Vec<(String, String, String)> {
        let db = self.inventory();
        let mut q = db
            .prepare("SELECT serial, subject, status FROM certificates WHERE kind = 'device'")
            .unwrap();
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn inventory(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.path("pki/inventory.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap()
    }

    /// SQLite's own check of the whole file.
    fn integrity(&self) -> String {
        self.inventory()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap()
    }

    fn active_devices(&self) -> Vec<String> {
        self.rows()
            .into_iter()
            .filter(|(_, _, st)| st == "active")
            .map(|(_, d, _)| d)
            .collect()
    }
}

/// Every bundle directory under `root` (complete ones, and staging directories a killed run left
/// behind), with the serial of the certificate it holds: from the manifest, or from the leaf.
fn bundles_on_disk(root: &Path) -> Vec<(PathBuf, Option<String>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        let serial = match Bundle::read_dir(&p) {
            Ok(b) => Some(b.manifest().serial.clone()),
            // Half-staged: whatever certificate is there.
            Err(_) => std::fs::read(p.join("device.crt")).ok().and_then(|pem| {
                let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
                let cert = pem.parse_x509().ok()?;
                Some(cert.raw_serial_as_string().replace(':', "").to_lowercase())
            }),
        };
        out.push((p, serial));
    }
    out
}

fn trim_serial(s: &str) -> String {
    s.trim_start_matches('0').to_owned()
}

/// The consistency the issue asks for, after any number of kills.
fn assert_consistent(op: &Operator, out_root: &Path, context: &str) {
    assert_eq!(op.integrity(), "ok", "{context}");
    let rows = op.rows();
    let known: BTreeSet<String> = rows.iter().map(|(s, _, _)| trim_serial(s)).collect();
    let on_disk = bundles_on_disk(out_root);
    for (dir, serial) in &on_disk {
        if let Some(serial) = serial {
            assert!(
                known.contains(&trim_serial(serial)),
                "{} holds certificate {serial}, which the inventory does not know ({context})",
                dir.display()
            );
        }
    }
    let written: BTreeSet<String> = on_disk
        .iter()
        .filter(|(d, _)| Bundle::read_dir(d).is_ok())
        .filter_map(|(_, s)| s.as_deref().map(trim_serial))
        .collect();
    for (serial, device, status) in &rows {
        if status == "active" {
            assert!(
                written.contains(&trim_serial(serial)),
                "{device}'s certificate {serial} is active but no bundle holds it ({context})"
            );
        }
    }
    // The CLI reads the same inventory without complaint.
    op.ok(&["list"]);
}

#[test]
fn sigkilled_issue_and_rotate_leave_a_consistent_inventory_and_no_stray_key() {
    let form = Form::from_env();
    let kills = form.pick(10, 20);
    let mut rng = Rng::from_env("operator issue/rotate");
    let op = Operator::new();
    let out = op.path("out");
    std::fs::create_dir_all(&out).unwrap();
    let s = |p: PathBuf| p.to_string_lossy().into_owned();
    let typical = op
        .timed(&["issue", "warm-up", "--out", &s(out.join("warm-up"))])
        .max(Duration::from_millis(20));
    let mut finished = 0;
    for i in 0..kills {
        let dest = s(out.join(format!("run-{i}")));
        let active = op.active_devices();
        let rotate = !active.is_empty() && rng.next_u64().is_multiple_of(2);
        let args: Vec<String> = if rotate {
            let dev = &active[(rng.next_u64() % active.len() as u64) as usize];
            vec!["rotate".into(), dev.clone(), "--out".into(), dest]
        } else {
            vec![
                "issue".into(),
                format!("dev-{}", i % 5),
                "--out".into(),
                dest,
            ]
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let at = rng.between(Duration::ZERO, typical.mul_f64(1.3));
        if op.kill_after(&args, at) {
            finished += 1;
        }
        assert_consistent(&op, &out, &format!("after kill {i} of {args:?} at {at:?}"));
    }
    // Every device can be issued or rotated again; a pending row from a killed run is revoked
    // on the way, and the staging directories killed runs left (each with a private key) go.
    let devices: BTreeSet<String> = op.rows().into_iter().map(|(_, d, _)| d).collect();
    for id in devices {
        let dest = s(out.join(format!("again-{id}")));
        if op.active_devices().contains(&id) {
            op.ok(&["rotate", &id, "--out", &dest, "--revoke-previous"]);
        } else {
            op.ok(&["issue", &id, "--out", &dest]);
        }
    }
    assert_consistent(&op, &out, "after issuing every device again");
    let pending: Vec<_> = op
        .rows()
        .into_iter()
        .filter(|(_, _, st)| st == "pending")
        .collect();
    assert!(pending.is_empty(), "still pending: {pending:?}");
    let stray: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        stray.is_empty(),
        "staging directories of killed runs (with their keys) are left: {stray:?}"
    );
    Figures {
        scenario: "operator: issue/rotate".into(),
        faults: format!("{kills} SIGKILLs of autoprov issue/rotate at random points"),
        injected: kills,
        notes: format!(
            "{} killed before they finished; inventory integrity ok after each",
            kills - finished
        ),
        ..Figures::default()
    }
    .print();
}

#[test]
fn sigkilled_flash_is_never_recorded_as_flashed() {
    let form = Form::from_env();
    let kills = form.pick(4, 20);
    let mut rng = Rng::from_env("operator flash");
    let op = Operator::new();
    let built = image::build(op.dir.path(), "sd", &Layout::default());
    let img = built.img.to_string_lossy().into_owned();
    let card = |i: u64| op.path(&format!("card-{i}.img"));
    let s = |p: PathBuf| p.to_string_lossy().into_owned();
    let flash = |i: u64| {
        vec![
            "flash".to_owned(),
            "sensor-9".into(),
            "--image".into(),
            img.clone(),
            "--to".into(),
            s(card(i)),
            "--replace".into(),
            "--yes".into(),
        ]
    };
    // The slower of two runs: a kill anywhere up to a bit past it hits every phase (issue,
    // decompress, write, verify, record) and, now and then, a run that had just finished.
    let typical = [1000, 1001]
        .map(|i| {
            let a = flash(i);
            op.timed(&a.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .into_iter()
        .max()
        .unwrap_or_default();
    let mut cut_short = 0;
    for i in 0..kills {
        let a = flash(i);
        let at = rng.between(Duration::ZERO, typical.mul_f64(1.4));
        if !op.kill_after(&a.iter().map(String::as_str).collect::<Vec<_>>(), at) {
            cut_short += 1;
        }
        assert_eq!(op.integrity(), "ok");
    }
    let last = flash(kills);
    op.ok(&last.iter().map(String::as_str).collect::<Vec<_>>());

    let flashes: serde_json::Value = serde_json::from_str(&op.ok(&["flashes", "--json"])).unwrap();
    let rows = op.rows();
    let status_of = |serial: &str| {
        rows.iter()
            .find(|(s, _, _)| s == serial)
            .map(|(_, _, st)| st.clone())
    };
    let mut ok = 0;
    for f in flashes.as_array().unwrap() {
        // `PATH (new file)` for a file target.
        let target = f["target"].as_str().unwrap();
        let target = target.strip_suffix(" (new file)").unwrap_or(target);
        let serial = f["serial"].as_str().unwrap_or("");
        match f["result"].as_str().unwrap() {
            // Recorded flashed: the card holds the whole bundle of that certificate.
            "ok" => {
                ok += 1;
                assert!(
                    Path::new(target).exists(),
                    "{f} recorded ok but its target is gone"
                );
                let bundle = image::card_bundle(Path::new(target), &built.boot)
                    .unwrap_or_else(|e| panic!("flash {f} recorded ok, but: {e}"));
                assert_eq!(bundle.manifest().serial, serial, "{f}");
                assert!(
                    matches!(status_of(serial).as_deref(), Some("active" | "superseded")),
                    "{f}: {:?}",
                    status_of(serial)
                );
            }
            // Cut short: reported failed (the next flash of the device found it unfinished),
            // and its certificate never became active.
            "failed" => {
                assert!(
                    f["detail"].as_str().unwrap_or("").contains("interrupted"),
                    "{f}"
                );
                if !serial.is_empty() {
                    assert!(
                        matches!(status_of(serial).as_deref(), Some("pending" | "revoked")),
                        "{f}: {:?}",
                        status_of(serial)
                    );
                }
            }
            other => panic!("flash {f} left as {other:?} after the device was flashed again"),
        }
    }
    assert!(ok >= 3, "the timing runs and the last run are recorded ok");
    // No certificate without a row: whatever a cut-short card holds is known.
    for i in 0..kills {
        let c = card(i);
        let long_enough = std::fs::metadata(&c).is_ok_and(|m| m.len() >= built.boot.end);
        if let Some(b) = long_enough
            .then(|| image::card_bundle(&c, &built.boot).ok())
            .flatten()
        {
            assert!(
                status_of(&b.manifest().serial).is_some(),
                "{} holds certificate {} the inventory does not know",
                c.display(),
                b.manifest().serial
            );
        }
    }
    Figures {
        scenario: "operator: flash".into(),
        faults: format!("{kills} SIGKILLs of autoprov flash at random points"),
        injected: kills,
        notes: format!(
            "{cut_short} cut short, each recorded failed, none as flashed; integrity ok after each"
        ),
        ..Figures::default()
    }
    .print();
}
