//! Sensors: one trait, three backends, and the sampler that turns reads into readings.
//!
//! A backend only reads; the [`Sampler`] retries failed or physically impossible reads within
//! the interval, counts them, and hands out a measurement only when a fresh read succeeded. An
//! old value is never handed out again: a failed interval produces no reading at all.

mod dht11;
mod gpio;
mod iio;
mod simulated;

pub use dht11::{DecodeError, Frame, Pulse, decode, pulses_from_edges};
pub use gpio::GpioSensor;
pub use iio::IioSensor;
pub use simulated::SimulatedSensor;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::{SensorConfig, SensorKind};

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// Temperature, °C.
    pub temperature_c: f64,
    /// Relative humidity, %.
    pub humidity_pct: f64,
}

/// DHT11 temperature range, °C (datasheet).
pub const TEMPERATURE_RANGE: std::ops::RangeInclusive<f64> = 0.0..=50.0;
/// DHT11 humidity range, %RH (datasheet).
pub const HUMIDITY_RANGE: std::ops::RangeInclusive<f64> = 20.0..=90.0;

/// Why one read failed.
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    /// A sysfs or device file could not be read (the dht11 driver reports EIO or ETIMEDOUT for
    /// a failed measurement).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A sysfs file did not hold an integer.
    #[error("{}: {text:?} is not a number", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held.
        text: String,
    },
    /// The pulse train did not decode.
    #[error("DHT11 on GPIO {pin}: {source}")]
    Decode {
        /// The BCM pin.
        pin: u8,
        /// The decoder's reason.
        source: DecodeError,
    },
    /// The GPIO could not be used.
    #[error("GPIO {pin}: {reason} (is /dev/gpiomem there and accessible?)")]
    Gpio {
        /// The BCM pin.
        pin: u8,
        /// Why.
        reason: String,
    },
    /// The configured IIO device does not exist: the driver is not bound, or the path is wrong.
    #[error("{}: no such IIO device; {hint}", path.display())]
    NoIioDevice {
        /// The configured `sensor.iio_device`.
        path: PathBuf,
        /// What exists instead, and what to check.
        hint: String,
    },
    /// The value read is outside what a DHT11 can measure.
    #[error(
        "impossible reading {temperature_c} °C / {humidity_pct} %RH (a DHT11 measures 0-50 °C, 20-90 %RH)"
    )]
    OutOfRange {
        /// Temperature read.
        temperature_c: f64,
        /// Humidity read.
        humidity_pct: f64,
    },
    /// A failure injected by the simulated sensor.
    #[error("simulated read failure")]
    Simulated,
}

/// A source of measurements.
pub trait Sensor: Send {
    /// Takes one measurement (blocking).
    fn read(&mut self) -> Result<Measurement, SensorError>;
    /// How long to wait before retrying a failed read.
    fn retry_delay(&self) -> Duration;
    /// A short description for logs.
    fn describe(&self) -> String;
}

/// Opens the configured backend.
pub fn open(config: &SensorConfig) -> Result<Box<dyn Sensor>, SensorError> {
    Ok(match config.kind {
        SensorKind::Iio => Box::new(IioSensor::open(config.iio_device.clone())?),
        SensorKind::Gpio => Box::new(GpioSensor::open(config.gpio)?),
        SensorKind::Simulated => Box::new(SimulatedSensor::new(config.seed, config.failure_rate)),
    })
}

/// Checks a measurement against what a DHT11 can physically report.
pub fn check_range(m: Measurement) -> Result<Measurement, SensorError> {
    if TEMPERATURE_RANGE.contains(&m.temperature_c) && HUMIDITY_RANGE.contains(&m.humidity_pct) {
        Ok(m)
    } else {
        Err(SensorError::OutOfRange {
            temperature_c: m.temperature_c,
            humidity_pct: m.humidity_pct,
        })
    }
}

/// Counters of the sampler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SamplerStats {
    /// Reads that failed (I/O, decode, injected).
    pub failed_reads: u64,
    /// Reads that returned impossible values.
    pub out_of_range: u64,
    /// Intervals that ended without a good read.
    pub missed_intervals: u64,
}

/// Retries reads within an interval and keeps count.
pub struct Sampler {
    sensor: Box<dyn Sensor>,
    /// Counters so far.
    pub stats: SamplerStats,
}

impl Sampler {
    /// Wraps a sensor.
    pub fn new(sensor: Box<dyn Sensor>) -> Self {
        Self {
            sensor,
            stats: SamplerStats::default(),
        }
    }

    /// A good measurement taken before `deadline`, or `None` if every try failed.
    ///
    /// `stop` is checked between tries so shutdown is not held up by a failing sensor.
    pub fn sample(&mut self, deadline: Instant, stop: &dyn Fn() -> bool) -> Option<Measurement> {
        loop {
            match self.sensor.read().and_then(check_range) {
                Ok(m) => return Some(m),
                Err(e) => {
                    if matches!(e, SensorError::OutOfRange { .. }) {
                        self.stats.out_of_range += 1;
                    } else {
                        self.stats.failed_reads += 1;
                    }
                    tracing::debug!(sensor = %self.sensor.describe(), "read failed, retrying: {e}");
                    let retry_at = Instant::now() + self.sensor.retry_delay();
                    if retry_at >= deadline || stop() {
                        self.stats.missed_intervals += 1;
                        tracing::warn!(
                            sensor = %self.sensor.describe(),
                            "no good reading this interval (last error: {e}); nothing is published for it"
                        );
                        return None;
                    }
                    std::thread::sleep(retry_at.saturating_duration_since(Instant::now()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scripted(Vec<Result<Measurement, ()>>);
    impl Sensor for Scripted {
        fn read(&mut self) -> Result<Measurement, SensorError> {
            self.0.remove(0).map_err(|_| SensorError::Simulated)
        }
        fn retry_delay(&self) -> Duration {
            Duration::from_millis(1)
        }
        fn describe(&self) -> String {
            "scripted".into()
        }
    }

    const GOOD: Measurement = Measurement {
        temperature_c: 21.0,
        humidity_pct: 45.0,
    };
    const HOT: Measurement = Measurement {
        temperature_c: 80.0,
        humidity_pct: 45.0,
    };

    #[test]
    fn failed_and_impossible_reads_are_retried_and_counted() {
        let mut s = Sampler::new(Box::new(Scripted(vec![Err(()), Ok(HOT), Ok(GOOD)])));
        let got = s.sample(Instant::now() + Duration::from_secs(5), &|| false);
        assert_eq!(got, Some(GOOD));
        assert_eq!(s.stats.failed_reads, 1);
        assert_eq!(s.stats.out_of_range, 1);
    }

    #[test]
    fn a_failed_interval_yields_nothing_rather_than_an_old_value() {
        let mut s = Sampler::new(Box::new(Scripted(vec![
            Ok(GOOD),
            Err(()),
            Err(()),
            Err(()),
        ])));
        assert_eq!(
            s.sample(Instant::now() + Duration::from_secs(1), &|| false),
            Some(GOOD)
        );
        // Deadline already close: one try, then give up.
        assert_eq!(s.sample(Instant::now(), &|| false), None);
        assert_eq!(s.stats.missed_intervals, 1);
    }

    #[test]
    fn range_is_the_datasheets() {
        assert!(check_range(GOOD).is_ok());
        for (t, h) in [(-1.0, 50.0), (51.0, 50.0), (20.0, 19.0), (20.0, 91.0)] {
            assert!(
                check_range(Measurement {
                    temperature_c: t,
                    humidity_pct: h
                })
                .is_err()
            );
        }
    }
}
