//! The kernel `dht11` IIO driver: `in_temp_input` (milli-°C) and `in_humidityrelative_input`
//! (milli-%RH) in the device's sysfs directory.
//!
//! Reading either file triggers a measurement unless the driver holds one younger than 2 s, so
//! reading both back to back yields one consistent pair. A failed measurement is an EIO or
//! ETIMEDOUT from `read`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Measurement, Sensor, SensorError};

/// Reads a DHT11 through the IIO sysfs interface.
pub struct IioSensor {
    dir: PathBuf,
}

impl IioSensor {
    /// A sensor at `dir` (e.g. `/sys/bus/iio/devices/iio:device0`).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn milli(&self, name: &str) -> Result<f64, SensorError> {
        let path = self.dir.join(name);
        let text = std::fs::read_to_string(&path).map_err(|source| SensorError::Io {
            path: path.clone(),
            source,
        })?;
        parse_milli(&path, &text)
    }
}

fn parse_milli(path: &Path, text: &str) -> Result<f64, SensorError> {
    text.trim()
        .parse::<i64>()
        .map(|v| v as f64 / 1000.0)
        .map_err(|_| SensorError::Parse {
            path: path.to_owned(),
            text: text.trim().to_owned(),
        })
}

impl Sensor for IioSensor {
    fn read(&mut self) -> Result<Measurement, SensorError> {
        Ok(Measurement {
            temperature_c: self.milli("in_temp_input")?,
            humidity_pct: self.milli("in_humidityrelative_input")?,
        })
    }

    fn retry_delay(&self) -> Duration {
        // Past the driver's 2 s cache, so a retry is a new measurement.
        Duration::from_millis(2100)
    }

    fn describe(&self) -> String {
        format!("iio {}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_milli_units_from_sysfs_files() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("in_temp_input"), "21300\n").unwrap();
        std::fs::write(tmp.path().join("in_humidityrelative_input"), "45000\n").unwrap();
        let m = IioSensor::new(tmp.path().to_owned()).read().unwrap();
        assert_eq!((m.temperature_c, m.humidity_pct), (21.3, 45.0));
    }

    #[test]
    fn missing_or_garbled_files_are_errors_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = IioSensor::new(tmp.path().to_owned());
        let err = s.read().unwrap_err().to_string();
        assert!(err.contains("in_temp_input"), "{err}");
        std::fs::write(tmp.path().join("in_temp_input"), "n/a").unwrap();
        let err = s.read().unwrap_err().to_string();
        assert!(err.contains("\"n/a\" is not a number"), "{err}");
    }
}
