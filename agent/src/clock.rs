//! The agent's clock, and calendar arithmetic for RFC 3339 timestamps and X.509 validity dates,
//! without a date crate.
//!
//! Everything in the agent that asks for the time asks [`unix_now`]: reading timestamps, `check`,
//! import's chain check, and rustls' certificate validation (through [`AgentClock`]). So one
//! test-only override, [`TEST_CLOCK_OFFSET_FILE`], moves the agent's whole notion of now — which
//! is how the fault tests start a device at 1970 and then jump to the present, as a Pi without
//! an RTC does when time sync arrives, without touching the machine's clock.
//!
//! The agent needs only UTC: readings carry `YYYY-MM-DDTHH:MM:SSZ` and certificates carry
//! `UTCTime`/`GeneralizedTime`. Days are converted with Howard Hinnant's civil-date algorithms.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::UnixTime;

/// Test only: the environment variable naming a file that holds a signed number of seconds
/// added to the system clock. It is read on every call, so rewriting it (atomically) jumps the
/// clock of a running agent. Not for production: a device takes its time from NTP.
pub const TEST_CLOCK_OFFSET_FILE: &str = "AUTOPROV_TEST_CLOCK_OFFSET_FILE";

fn test_offset() -> i64 {
    static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
    FILE.get_or_init(|| std::env::var_os(TEST_CLOCK_OFFSET_FILE).map(PathBuf::from))
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0)
}

fn system_now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Seconds since the Unix epoch now, as the agent sees it (negative before 1970).
pub fn unix_now() -> i64 {
    system_now().saturating_add(test_offset())
}

/// rustls' source of the time for certificate validation: [`unix_now`], so a TLS handshake
/// judges certificates by the same clock as everything else in the agent.
#[derive(Debug, Clone, Copy, Default)]
pub struct AgentClock;

impl rustls::time_provider::TimeProvider for AgentClock {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(Duration::from_secs(
            unix_now().max(0) as u64,
        )))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The (year, month, day) of a day number since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time.
pub fn rfc3339(unix: i64) -> String {
    let (y, mo, d) = civil_from_days(unix.div_euclid(86_400));
    let s = unix.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Timestamps that never go back: a clock set back (time sync correcting a fast clock, or a
/// reboot of a board without an RTC) must not make a reading look older than one already sent.
/// While the clock is behind, readings carry the last timestamp given; the change is logged
/// once each way.
#[derive(Debug, Default)]
pub struct NonDecreasing {
    floor: Option<i64>,
    behind: bool,
}

impl NonDecreasing {
    /// Starts above `floor`, the timestamp of the last reading spooled (if any).
    pub fn after(floor: Option<i64>) -> Self {
        Self {
            floor,
            behind: false,
        }
    }

    /// The timestamp for a reading taken at `now`.
    pub fn stamp(&mut self, now: i64) -> i64 {
        let ts = match self.floor {
            Some(floor) if now < floor => {
                if !self.behind {
                    tracing::warn!(
                        "the clock reads {}, before the last reading's time {}: readings keep that time until the clock catches up",
                        rfc3339(now),
                        rfc3339(floor)
                    );
                    self.behind = true;
                }
                floor
            }
            _ => {
                if self.behind {
                    tracing::info!("the clock has caught up: {}", rfc3339(now));
                    self.behind = false;
                }
                now
            }
        };
        self.floor = Some(ts);
        ts
    }
}

/// The Unix time of a `YYYY-MM-DDTHH:MM:SSZ` timestamp (what [`rfc3339`] writes), if it is one.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(y, mo as u32, d as u32) * 86_400 + h * 3600 + mi * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_never_go_back_and_follow_the_clock_again_once_it_catches_up() {
        let mut s = NonDecreasing::after(Some(1_000));
        assert_eq!(s.stamp(5), 1_000);
        assert_eq!(s.stamp(6), 1_000);
        assert_eq!(s.stamp(1_001), 1_001);
        assert_eq!(s.stamp(900), 1_001);
        assert_eq!(s.stamp(2_000), 2_000);
        let mut fresh = NonDecreasing::after(None);
        assert_eq!(fresh.stamp(0), 0);
    }

    #[test]
    fn parse_reads_back_what_rfc3339_writes_and_refuses_the_rest() {
        for t in [0, 951_782_400, 1_796_299_200, -1, 4_102_444_799] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        for bad in [
            "",
            "2026-12-03T12:00:00",
            "2026-12-03 12:00:00Z",
            "2026-13-03T12:00:00Z",
            "2026-12-03T24:00:00Z",
            "20x6-12-03T12:00:00Z",
            "2026-12-03T12:00:0+Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_299_200), "2026-12-03T12:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn civil_round_trips_over_centuries() {
        for z in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }
}
