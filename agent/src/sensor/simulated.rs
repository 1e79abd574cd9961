//! A deterministic stand-in for a DHT11, for tests and virtual machines.
//!
//! The same seed gives the same sequence of values and failures, so a test can predict them.
//! Values drift slowly inside the DHT11's range, to one decimal like the real sensor's output.

use std::time::Duration;

use super::{Measurement, Sensor, SensorError};

/// Seeded pseudo-random measurements with an optional failure rate.
pub struct SimulatedSensor {
    state: u64,
    failure_rate: f64,
    step: u64,
}

impl SimulatedSensor {
    /// A sensor producing the sequence of `seed`, failing a `failure_rate` fraction of reads.
    pub fn new(seed: u64, failure_rate: f64) -> Self {
        Self {
            // xorshift must not start at 0.
            state: seed ^ 0x9e37_79b9_7f4a_7c15,
            failure_rate,
            step: 0,
        }
    }

    fn next_u64(&mut self) -> u64 {
        // xorshift64*: tiny, fast and good enough for test data.
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A quarter of [`wave`]'s period: `wave(x + QUARTER)` is to `wave` what cosine is to sine.
const QUARTER: f64 = std::f64::consts::FRAC_PI_2;

/// A sine-like wave in -1..=1 with sine's period, made of two parabolas. `f64::sin` would be the
/// only thing linking libm into the agent, which maps it (600 KiB resident on a desktop kernel)
/// on every device, for values only tests and virtual machines see.
fn wave(x: f64) -> f64 {
    let turns = x.abs() / std::f64::consts::TAU;
    // The fraction of a period, without `floor` (also libm on some targets); x >= 0 here.
    let f = turns - (turns as u64) as f64;
    let half = |g: f64| 8.0 * g * (1.0 - 2.0 * g);
    if f < 0.5 { half(f) } else { -half(f - 0.5) }
}

impl Sensor for SimulatedSensor {
    fn read(&mut self) -> Result<Measurement, SensorError> {
        self.step += 1;
        if self.unit() < self.failure_rate {
            return Err(SensorError::Simulated);
        }
        let phase = self.step as f64 / 60.0;
        let t = 21.0 + 4.0 * wave(phase) + self.unit() - 0.5;
        let h = 50.0 + 15.0 * wave(phase / 3.0 + QUARTER) + 2.0 * self.unit() - 1.0;
        Ok(Measurement {
            temperature_c: (t * 10.0).round() / 10.0,
            humidity_pct: (h * 10.0).round() / 10.0,
        })
    }

    fn retry_delay(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn describe(&self) -> String {
        "simulated".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::check_range;

    #[test]
    fn wave_follows_sine_within_six_percent() {
        for i in 0..1000 {
            let x = i as f64 * 0.0377;
            assert!((wave(x) - x.sin()).abs() < 0.06, "x = {x}");
            assert!((wave(x + QUARTER) - x.cos()).abs() < 0.06, "x = {x}");
        }
    }

    #[test]
    fn same_seed_same_values_and_all_in_range() {
        let mut a = SimulatedSensor::new(7, 0.0);
        let mut b = SimulatedSensor::new(7, 0.0);
        for _ in 0..1000 {
            let m = a.read().unwrap();
            assert_eq!(m, b.read().unwrap());
            check_range(m).unwrap();
        }
        assert_ne!(
            SimulatedSensor::new(8, 0.0).read().unwrap(),
            SimulatedSensor::new(7, 0.0).read().unwrap()
        );
    }

    #[test]
    fn failure_rate_is_honoured_roughly() {
        let mut s = SimulatedSensor::new(1, 0.25);
        let failed = (0..10_000).filter(|_| s.read().is_err()).count();
        assert!((2_200..2_800).contains(&failed), "{failed}");
    }
}
