//! Issuance benchmark: `cargo bench -p autoprov --bench issue [-- N]` (N devices, default 10,000).
//!
//! Prints, side by side:
//! - bulk: N device certificates (ECDSA P-256 keys and certificates, bundles in memory) issued
//!   and recorded through `Pki::issue_devices` + `Pki::activate_all` in batches of 1,000, with
//!   the inventory at `synchronous = FULL` (what autoprov uses);
//! - one at a time, the way `autoprov issue` records (a pending and an active commit per device),
//!   with `synchronous = FULL` and `NORMAL`, to show what the per-commit fsync costs;
//! - the original approach on a few devices: per device `openssl genrsa 2048`, `openssl req`,
//!   `openssl x509 -req` — and the ratio.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use autoprov::{DeviceId, InitOptions, IssueOptions, Pki};

const BATCH: usize = 1000;

fn ids(prefix: &str, n: usize) -> Vec<DeviceId> {
    (0..n)
        .map(|i| DeviceId::new(format!("{prefix}-{i:06}")).unwrap())
        .collect()
}

fn fresh_pki(dir: &Path) -> Pki {
    Pki::init(dir, &InitOptions::default()).unwrap();
    Pki::open(dir, None).unwrap()
}

fn bulk(dir: &Path, n: usize) -> f64 {
    let mut pki = fresh_pki(dir);
    let all = ids("bulk", n);
    let start = Instant::now();
    for chunk in all.chunks(BATCH) {
        let issued = pki.issue_devices(chunk, &IssueOptions::default()).unwrap();
        pki.activate_all(&issued).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let rows = pki.list().unwrap();
    assert_eq!(rows.len(), n, "every certificate is recorded");
    secs
}

fn one_at_a_time(dir: &Path, n: usize, normal: bool) -> f64 {
    let mut pki = fresh_pki(dir);
    pki.inventory().set_synchronous_normal(normal).unwrap();
    let start = Instant::now();
    for id in ids("single", n) {
        let issued = pki.issue_device(&id, &IssueOptions::default()).unwrap();
        pki.activate(&issued, false).unwrap();
    }
    start.elapsed().as_secs_f64()
}

fn openssl(dir: &Path, args: &[&str]) {
    let ok = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "openssl {args:?} failed (is openssl installed?)");
}

fn original_script(dir: &Path, n: usize) -> f64 {
    std::fs::create_dir_all(dir).unwrap();
    openssl(dir, &["genrsa", "-out", "ca.key", "2048"]);
    openssl(
        dir,
        &[
            "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=ca", "-days", "365", "-out",
            "ca.crt",
        ],
    );
    let start = Instant::now();
    for i in 0..n {
        let (key, csr, crt) = (
            format!("d{i}.key"),
            format!("d{i}.csr"),
            format!("d{i}.crt"),
        );
        openssl(dir, &["genrsa", "-out", &key, "2048"]);
        let subj = format!("/CN=device-{i}");
        openssl(
            dir,
            &["req", "-new", "-key", &key, "-subj", &subj, "-out", &csr],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "365",
                "-out",
                &crt,
            ],
        );
    }
    start.elapsed().as_secs_f64()
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let single_n = 200.min(n);
    let openssl_n = 20.min(n);
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let tmp = tempfile::tempdir().unwrap();
    println!("autoprov issuance benchmark ({cores} cores, ECDSA P-256 device keys)");

    let secs = bulk(&tmp.path().join("bulk"), n);
    let bulk_rate = n as f64 / secs;
    println!(
        "bulk, batches of {BATCH}, synchronous=FULL : {n:>6} certificates in {secs:6.3} s = {bulk_rate:>9.0} certificates/s  (target: 10000 in < 3 s)"
    );

    let full = one_at_a_time(&tmp.path().join("full"), single_n, false);
    let normal = one_at_a_time(&tmp.path().join("normal"), single_n, true);
    println!(
        "one at a time, synchronous=FULL          : {single_n:>6} certificates in {full:6.3} s = {:>9.0} certificates/s  ({:.2} ms each)",
        single_n as f64 / full,
        full * 1000.0 / single_n as f64
    );
    println!(
        "one at a time, synchronous=NORMAL        : {single_n:>6} certificates in {normal:6.3} s = {:>9.0} certificates/s  ({:.2} ms each)",
        single_n as f64 / normal,
        normal * 1000.0 / single_n as f64
    );

    let orig = original_script(&tmp.path().join("openssl"), openssl_n);
    let orig_rate = openssl_n as f64 / orig;
    println!(
        "original script (genrsa, req, x509 -req) : {openssl_n:>6} certificates in {orig:6.3} s = {orig_rate:>9.1} certificates/s  ({:.0} ms each)",
        orig * 1000.0 / openssl_n as f64
    );
    println!(
        "bulk autoprov is {:.0}x the original script; one-at-a-time (FULL) is {:.0}x",
        bulk_rate / orig_rate,
        (single_n as f64 / full) / orig_rate
    );
}
