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

    /// A sensor at `dir`, which must exist. The IIO device of a bound `dht11` driver exists
    /// whether or not a sensor answers (a silent one gives EIO per read, which is retried), so a
    /// missing directory is a wrong `sensor.iio_device` or an unloaded overlay: said at start,
    /// with the DHT11 devices that do exist, rather than as a warning every interval.
    pub fn open(dir: PathBuf) -> Result<Self, SensorError> {
        if dir.is_dir() {
            return Ok(Self::new(dir));
        }
        let bus = dir.parent().unwrap_or(Path::new("/sys/bus/iio/devices"));
        let found = dht11_devices(bus);
        let hint = if found.is_empty() {
            format!(
                "{} lists no dht11 device: is the DHT11 overlay applied and the dht11 kernel module loaded?",
                bus.display()
            )
        } else {
            let list: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
            format!(
                "DHT11 devices here: {}; set sensor.iio_device to one of them",
                list.join(", ")
            )
        };
        Err(SensorError::NoIioDevice { path: dir, hint })
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

/// The IIO devices under `bus` whose driver calls itself `dht11`.
fn dht11_devices(bus: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(bus) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| std::fs::read_to_string(p.join("name")).is_ok_and(|n| n.trim() == "dht11"))
        .collect();
    found.sort();
    found
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
    fn a_missing_device_is_refused_at_open_naming_the_dht11_devices_that_exist() {
        let bus = tempfile::tempdir().unwrap();
        let err = IioSensor::open(bus.path().join("iio:device0"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("iio:device0: no such IIO device"), "{err}");
        assert!(err.contains("overlay"), "{err}");
        for (dev, name) in [("iio:device0", "mcp3008"), ("iio:device1", "dht11")] {
            std::fs::create_dir(bus.path().join(dev)).unwrap();
            std::fs::write(bus.path().join(dev).join("name"), format!("{name}\n")).unwrap();
        }
        let err = IioSensor::open(bus.path().join("iio:device7"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("iio:device1"), "{err}");
        assert!(!err.contains("iio:device0,"), "{err}");
        assert!(IioSensor::open(bus.path().join("iio:device1")).is_ok());
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
