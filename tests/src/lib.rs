//! Real-component test fixtures for autoprov, and (under `tests/`) the cross-crate integration
//! tests that use them.
//!
//! - [`mosquitto`]: a real Mosquitto broker on a free loopback port with a TLS listener that
//!   requires client certificates, an ACL, an optional CRL, and stop / SIGKILL / restart on the
//!   same port; plus a subscriber that collects what it receives.
//! - [`pki`]: certificates made by the project's own PKI code (`autoprov`), never by hand.
//! - [`agent`]: a state directory, configuration and process handle for `autoprov-agent`.
//! - [`bins`]: where the workspace's binaries are (`AUTOPROV_BIN_DIR` overrides).
//! - [`procfs`]: a process's RSS and CPU time, for the benchmarks.
//! - [`image`]: SD card images built like nixpkgs' sd-image, with sfdisk, mkfs.vfat, mkfs.ext4
//!   and zstd, and the third-party readers (fsck.fat, mcopy) results are checked with.
//! - [`jitp`]: a stand-in for AWS IoT Core's front with just-in-time provisioning, before Mosquitto.
//! - [`leaks`]: the record of keys made and logs written, for the suite-wide key leak check.
//! - [`netns`]: two network namespaces joined by a veth pair, and a link that can be cut.
//! - [`faults`]: the fault soak's forms, random moments, mounts that fill up or refuse writes,
//!   the agent's test-only clock, reconnect attempts read from a log, and the figures.
//! - [`dps`]: a stand-in for Azure's Device Provisioning Service on Mosquitto, and the IoT hub's
//!   topic layout and ACL.
//!
//! Every fixture lives in its own temporary directory and keeps its logs there, so a failing
//! assertion can show what the broker or the agent said.

pub mod agent;
pub mod bins;
pub mod dps;
pub mod faults;
pub mod image;
pub mod jitp;
pub mod leaks;
pub mod mosquitto;
pub mod netns;
pub mod pki;
pub mod procfs;

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// A task on a tokio current-thread runtime of its own thread, told to stop (through the
/// receiver it is given) and joined when this is dropped. The fixtures that speak TLS and MQTT
/// themselves (the JITP front, the DPS service) run in one.
pub struct Background {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Runs `task(stop)` until it returns; it should return soon after `stop` fires.
    pub fn spawn<F, Fut>(task: F) -> Self
    where
        F: FnOnce(oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let (tx, rx) = oneshot::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(task(rx));
        });
        Self {
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A command's exit status and both output streams, for assertion messages.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts that `seqs` (sorted, distinct) is exactly 1..=max.
pub fn assert_contiguous_from_one(seqs: &[u64], context: &str) {
    let max = seqs.last().copied().unwrap_or(0);
    let missing: Vec<u64> = (1..=max)
        .filter(|s| seqs.binary_search(s).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "gaps in the received seqs (max {max}): missing {missing:?}\n{context}"
    );
}
