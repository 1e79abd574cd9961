//! What the fault soak needs besides the components themselves: its short and long forms, a
//! seeded source of random moments, mounts that fill up or refuse writes, the agent's test-only
//! clock, the reconnect attempts read back from an agent's log, and the figures each scenario
//! reports.
//!
//! The soak runs in its short form with every `cargo nextest run`; `AUTOPROV_SOAK=long` (what
//! `scripts/soak` sets) runs the long form, whose figures go into the README. `AUTOPROV_SOAK_SEED`
//! replays a run's random moments (each scenario prints the seed it used).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Whether the tests run as root (namespaces and mounts need it).
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0")
}

/// Says loudly that a scenario did not run, and why (nextest shows the soak's output even when
/// a test passes, see `.config/nextest.toml`): never a silent pass.
pub fn skip(scenario: &str, why: &str) {
    eprintln!("SKIPPED {scenario}: {why}");
    println!("SOAK-SKIPPED {scenario}: {why}");
}

/// The form the soak runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// With every test run: a few faults, seconds each.
    Short,
    /// `AUTOPROV_SOAK=long`: the figures for the README.
    Long,
}

impl Form {
    /// The form `AUTOPROV_SOAK` asks for.
    pub fn from_env() -> Self {
        match std::env::var("AUTOPROV_SOAK").as_deref() {
            Ok("long") => Self::Long,
            _ => Self::Short,
        }
    }

    /// `short` or `long`, by form.
    pub fn pick<T>(self, short: T, long: T) -> T {
        match self {
            Self::Short => short,
            Self::Long => long,
        }
    }
}

/// A small seeded generator (xorshift64*): the moments faults strike at, reproducible.
#[derive(Debug, Clone)]
pub struct Rng {
    seed: u64,
    state: u64,
}

impl Rng {
    /// Seeded from `AUTOPROV_SOAK_SEED`, or from the clock (the seed is printed either way).
    pub fn from_env(scenario: &str) -> Self {
        let seed = std::env::var("AUTOPROV_SOAK_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        println!("{scenario}: AUTOPROV_SOAK_SEED={seed}");
        Self::new(seed)
    }

    /// A generator with this seed.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            state: seed | 1,
        }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A duration uniform in `lo..=hi`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_millis() as u64;
        lo + Duration::from_millis(self.next_u64() % (span + 1))
    }
}

/// A mount this test made, undone (lazily, so a process still inside cannot block it) on drop.
pub struct Mount {
    path: PathBuf,
}

fn mount(args: &[&str], path: &Path) -> Result<(), String> {
    let out = Command::new("mount")
        .args(args)
        .arg(path)
        .output()
        .map_err(|e| format!("mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mount {} {}: {}",
            args.join(" "),
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Mount {
    /// A tmpfs of `kib` KiB at `path` (created if missing), mode 0700.
    pub fn tmpfs(path: &Path, kib: u64) -> Result<Self, String> {
        fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
        mount(
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={kib}k,mode=0700"),
                "tmpfs",
            ],
            path,
        )?;
        Ok(Self {
            path: path.to_owned(),
        })
    }

    /// `path` bound onto itself read-only: writes fail with EROFS, also for root.
    pub fn read_only(path: &Path) -> Result<Self, String> {
        mount(&["--bind", &path.to_string_lossy()], path)?;
        let m = Self {
            path: path.to_owned(),
        };
        mount(&["-o", "remount,bind,ro"], path)?;
        Ok(m)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// The agent's test-only clock offset (`AUTOPROV_TEST_CLOCK_OFFSET_FILE`): a file holding the
/// seconds added to the system clock, rewritten atomically to jump a running agent's time.
pub struct ClockOffset {
    path: PathBuf,
}

impl ClockOffset {
    /// The environment variable the agent reads.
    pub const ENV: &'static str = "AUTOPROV_TEST_CLOCK_OFFSET_FILE";

    /// An offset file in `dir`, starting at `seconds`.
    pub fn new(dir: &Path, seconds: i64) -> Self {
        let c = Self {
            path: dir.join("clock-offset"),
        };
        c.set(seconds);
        c
    }

    /// The file, for the agent's environment.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the agent's clock to system time + `seconds`.
    pub fn set(&self, seconds: i64) {
        let tmp = self.path.with_extension("tmp");
        fs::write(&tmp, format!("{seconds}\n")).expect("write the clock offset");
        fs::rename(&tmp, &self.path).expect("replace the clock offset");
    }

    /// The offset that puts the agent's clock at the Unix epoch plus `at`, now.
    pub fn to_reach(at: i64) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        at - now
    }
}

/// One failed connection attempt as the agent logs it: `… (attempt N); retrying in W s`.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// When it was logged, seconds since the Unix epoch.
    pub at: f64,
    /// The attempt's number since the last connection that worked.
    pub number: u32,
    /// The wait the agent announced before the next attempt.
    pub wait: f64,
}

/// The Unix time of a log line's leading `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn log_time(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?;
    let (whole, frac) = stamp.strip_suffix('Z')?.split_once('.')?;
    let secs = autoprov_agent::clock::parse_rfc3339(&format!("{whole}Z"))?;
    let frac: f64 = format!("0.{frac}").parse().ok()?;
    Some(secs as f64 + frac)
}

/// Every failed connection attempt in an agent's log, in order.
pub fn attempts(log: &str) -> Vec<Attempt> {
    log.lines()
        .filter_map(|l| {
            let (_, rest) = l.rsplit_once("(attempt ")?;
            let (n, rest) = rest.split_once("); retrying in ")?;
            let wait = rest.trim().strip_suffix('s')?.parse().ok()?;
            Some(Attempt {
                at: log_time(l)?,
                number: n.parse().ok()?,
                wait,
            })
        })
        .collect()
}

/// Checks that `attempts` follow exponential backoff with full jitter from `base` to `cap`:
/// each announced wait is within its ceiling (`min(cap, base·2^(n-1))` for attempt n), and the
/// next attempt came no sooner than announced. Returns a description of every violation.
pub fn backoff_violations(attempts: &[Attempt], base: Duration, cap: Duration) -> Vec<String> {
    let mut out = Vec::new();
    // The agent rounds the wait it prints to 0.1 s; log stamps are taken after the attempt.
    let slack = 0.06;
    for (i, a) in attempts.iter().enumerate() {
        let ceiling = base
            .saturating_mul(
                1u32.checked_shl(a.number.saturating_sub(1))
                    .unwrap_or(u32::MAX),
            )
            .min(cap)
            .as_secs_f64();
        if a.wait > ceiling + slack {
            out.push(format!(
                "attempt {} announced {:.1}s, above its ceiling {ceiling:.2}s",
                a.number, a.wait
            ));
        }
        if let Some(next) = attempts.get(i + 1)
            && next.number == a.number + 1
            && next.at + slack < a.at + a.wait
        {
            out.push(format!(
                "attempt {} came {:.2}s after attempt {}, which announced a wait of {:.1}s",
                next.number,
                next.at - a.at,
                a.number,
                a.wait
            ));
        }
    }
    out
}

/// What a scenario did and what came of it: the README's soak table is made of these.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// The scenario's name.
    pub scenario: String,
    /// Which faults, in words (`5 link cuts of 10-60 s`).
    pub faults: String,
    /// How many faults were injected.
    pub injected: u64,
    /// Readings the device took (its last seq).
    pub produced: u64,
    /// Distinct readings that reached the subscriber.
    pub delivered: u64,
    /// Copies received beyond the first (QoS 1 is at least once; consumers drop them by seq).
    pub duplicates: u64,
    /// Readings the agent dropped and counted (spool or disk full), by its own log.
    pub dropped_counted: u64,
    /// Readings neither delivered nor counted as dropped: must be 0.
    pub lost: u64,
    /// Anything else worth a column (reconnect attempts, torn tails, ...).
    pub notes: String,
}

impl Figures {
    /// Fills the delivery figures from what the subscriber received (`seq` of every message,
    /// duplicates included) and the device's last seq; `lost` is what is left unexplained.
    pub fn delivery(&mut self, produced: u64, received: &[u64], dropped_counted: u64) {
        let mut distinct = received.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        self.produced = produced;
        self.delivered = distinct
            .iter()
            .filter(|s| (1..=produced).contains(*s))
            .count() as u64;
        self.duplicates = (received.len() - distinct.len()) as u64;
        self.dropped_counted = dropped_counted;
        self.lost = produced.saturating_sub(self.delivered + dropped_counted);
    }

    /// Prints the figures: a line for people and a `SOAK-FIGURES` JSON line for `scripts/soak`.
    pub fn print(&self) {
        println!(
            "{}: {} ({} injected): {} readings produced, {} delivered, {} duplicates, {} dropped and counted, {} lost{}",
            self.scenario,
            self.faults,
            self.injected,
            self.produced,
            self.delivered,
            self.duplicates,
            self.dropped_counted,
            self.lost,
            if self.notes.is_empty() {
                String::new()
            } else {
                format!("; {}", self.notes)
            }
        );
        let json = serde_json::json!({
            "scenario": self.scenario,
            "form": match Form::from_env() { Form::Short => "short", Form::Long => "long" },
            "faults": self.faults,
            "injected": self.injected,
            "produced": self.produced,
            "delivered": self.delivered,
            "duplicates": self.duplicates,
            "dropped_counted": self.dropped_counted,
            "lost": self.lost,
            "notes": self.notes,
        });
        println!("SOAK-FIGURES {json}");
    }
}

/// The device's last seq: the floor the agent persists in `<state>/seq` on a clean stop, minus one.
pub fn last_seq(state_dir: &Path) -> u64 {
    fs::read_to_string(state_dir.join("seq"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(0, |next| next.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(lines: &[(&str, u32, &str)]) -> String {
        lines
            .iter()
            .map(|(t, n, w)| {
                format!("2026-03-01T12:00:{t}Z  WARN cannot reach the broker at x:1: down (attempt {n}); retrying in {w}s\n")
            })
            .collect()
    }

    #[test]
    fn attempts_are_read_with_their_time_number_and_wait() {
        let a = attempts(&log(&[("00.100000", 1, "0.0"), ("00.250000", 2, "0.1")]));
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].number, 2);
        assert!((a[1].at - a[0].at - 0.15).abs() < 1e-6, "{a:?}");
        assert!((a[1].wait - 0.1).abs() < 1e-9);
    }

    #[test]
    fn backoff_check_catches_waits_above_the_ceiling_and_attempts_too_soon() {
        let (base, cap) = (Duration::from_millis(100), Duration::from_millis(400));
        let good = attempts(&log(&[
            ("00.000000", 1, "0.1"),
            ("00.150000", 2, "0.2"),
            ("00.400000", 3, "0.4"),
            ("00.900000", 4, "0.3"),
        ]));
        assert_eq!(backoff_violations(&good, base, cap), Vec::<String>::new());
        let above = attempts(&log(&[("00.000000", 4, "0.9")]));
        assert_eq!(backoff_violations(&above, base, cap).len(), 1);
        let soon = attempts(&log(&[("00.000000", 1, "0.1"), ("00.010000", 2, "0.1")]));
        assert_eq!(backoff_violations(&soon, base, cap).len(), 1);
    }

    #[test]
    fn lost_is_what_neither_arrived_nor_was_counted() {
        let mut f = Figures::default();
        f.delivery(10, &[1, 2, 2, 3, 5, 6, 7, 8, 9, 10, 10], 1);
        assert_eq!((f.delivered, f.duplicates, f.lost), (9, 2, 0));
        f.delivery(10, &[1, 2, 3], 0);
        assert_eq!(f.lost, 7);
    }
}
