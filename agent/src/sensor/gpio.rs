//! A DHT11 bit-banged on a GPIO through `/dev/gpiomem` (rppal), for kernels without the `dht11`
//! overlay.
//!
//! The start signal is ≥ 18 ms low; the answer is captured by polling the pin level and
//! timestamping every edge for at most 8 ms, then decoded by the pure [`super::decode`]. User
//! space can be preempted during the capture: that shows up as a decode error and a retry.

use std::time::{Duration, Instant};

use rppal::gpio::{Bias, Gpio, IoPin, Level, Mode};

use super::{Measurement, Sensor, SensorError, decode, pulses_from_edges};

/// The capture window: preamble 160 µs + 40 bits of at most ~120 µs, with margin.
const CAPTURE: Duration = Duration::from_millis(8);

/// A DHT11 on a BCM GPIO pin.
pub struct GpioSensor {
    pin: IoPin,
    number: u8,
}

impl GpioSensor {
    /// Opens BCM pin `number`.
    pub fn open(number: u8) -> Result<Self, SensorError> {
        let gpio_err = |e: rppal::gpio::Error| SensorError::Gpio {
            pin: number,
            reason: e.to_string(),
        };
        let pin = Gpio::new()
            .map_err(gpio_err)?
            .get(number)
            .map_err(gpio_err)?
            .into_io(Mode::Input);
        Ok(Self { pin, number })
    }

    fn capture(&mut self) -> Vec<(u64, bool)> {
        self.pin.set_bias(Bias::PullUp);
        self.pin.set_mode(Mode::Output);
        self.pin.set_low();
        std::thread::sleep(Duration::from_millis(20));
        self.pin.set_mode(Mode::Input);
        let start = Instant::now();
        let mut level = self.pin.read() == Level::High;
        let mut edges = vec![(0u64, level)];
        while start.elapsed() < CAPTURE && edges.len() < 100 {
            let now = self.pin.read() == Level::High;
            if now != level {
                level = now;
                edges.push((start.elapsed().as_micros() as u64, level));
            }
        }
        edges.push((start.elapsed().as_micros() as u64, level));
        edges
    }
}

impl Sensor for GpioSensor {
    fn read(&mut self) -> Result<Measurement, SensorError> {
        let edges = self.capture();
        let frame = decode(&pulses_from_edges(&edges)).map_err(|source| SensorError::Decode {
            pin: self.number,
            source,
        })?;
        Ok(Measurement {
            temperature_c: frame.temperature_c,
            humidity_pct: frame.humidity_pct,
        })
    }

    fn retry_delay(&self) -> Duration {
        // The DHT11 needs about a second after a measurement before the next start signal.
        Duration::from_millis(1500)
    }

    fn describe(&self) -> String {
        format!("gpio BCM{}", self.number)
    }
}
