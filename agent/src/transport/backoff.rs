//! Exponential backoff with full jitter: the n-th wait is uniform in [0, min(cap, base·2ⁿ)].
//!
//! Full jitter spreads a fleet's reconnects after a broker restart instead of having every
//! device knock at the same instant (the AWS Architecture Blog's "Exponential Backoff and
//! Jitter" analysis).

use std::time::Duration;

/// Backoff state for one link.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    /// A backoff with the given base and cap, seeded from the clock and process id.
    pub fn new(base: Duration, cap: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ (u64::from(std::process::id()) << 32);
        Self::with_seed(base, cap, seed)
    }

    /// A backoff with a fixed seed (tests).
    pub fn with_seed(base: Duration, cap: Duration, seed: u64) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
            rng: seed | 1,
        }
    }

    /// The ceiling of the next wait.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The next wait, and counts the attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        ceiling.mul_f64(unit)
    }

    /// Failed attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts over after a connection that worked.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let mut b = Backoff::with_seed(Duration::from_secs(1), Duration::from_secs(10), 3);
        let mut ceilings = Vec::new();
        for _ in 0..6 {
            ceilings.push(b.ceiling().as_secs());
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(10));
        }
        assert_eq!(ceilings, vec![1, 2, 4, 8, 10, 10]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_secs(1));
    }

    #[test]
    fn waits_are_spread_over_the_whole_window() {
        let mut b = Backoff::with_seed(Duration::from_secs(100), Duration::from_secs(100), 7);
        let waits: Vec<f64> = (0..1000).map(|_| b.next_delay().as_secs_f64()).collect();
        let mean = waits.iter().sum::<f64>() / waits.len() as f64;
        assert!((40.0..60.0).contains(&mean), "{mean}");
        assert!(waits.iter().any(|w| *w < 10.0) && waits.iter().any(|w| *w > 90.0));
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::with_seed(Duration::from_secs(1), Duration::from_secs(300), 1);
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(300));
        }
    }
}
