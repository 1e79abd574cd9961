//! The suite-wide check that no private key ends up in a log or an output.
//!
//! When `AUTOPROV_LEAK_DIR` is set (`scripts/test` sets it), the fixtures record every private
//! key they make in `<dir>/keys/` and keep every log they wrote — agents', brokers' — in
//! `<dir>/logs/` when they are dropped. `scripts/check-leaks` then searches those logs and the
//! captured output of every test (nextest's JUnit report) for the body of each key and for any
//! PEM private-key header at all. Without the variable nothing is recorded or kept.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable naming the directory.
pub const ENV: &str = "AUTOPROV_LEAK_DIR";

fn dir(sub: &str) -> Option<PathBuf> {
    let d = PathBuf::from(std::env::var_os(ENV).filter(|v| !v.is_empty())?).join(sub);
    fs::create_dir_all(&d).ok()?;
    Some(d)
}

fn unique(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Records a private key (PEM) the fixtures made, so the check knows what to look for.
pub fn record_key(pem: &[u8]) {
    if let Some(d) = dir("keys") {
        let name = autoprov_bundle::sha256_hex(pem);
        let _ = fs::write(d.join(format!("{name}.pem")), pem);
    }
}

/// Keeps a copy of a log the fixtures wrote (before its temporary directory goes).
pub fn keep_log(path: &Path, name: &str) {
    if let Some(d) = dir("logs") {
        let _ = fs::copy(path, d.join(unique(name)));
    }
}
