//! `autoprov-agent`: the daemon on every device.
//!
//! It reads a DHT11 (or a simulated sensor) every interval, appends each reading to a durable
//! on-disk spool, and publishes it with QoS 1 over MQTT with mutual TLS, removing it from the
//! spool only when the broker acknowledges it. It also imports the device bundle from the card
//! (`import`), checks its own setup (`check`) and prints readings for bringing up hardware
//! (`read-sensor`). The binary is a thin wrapper around [`cli::main`].

pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod import;
pub mod memory;
pub mod notify;
pub mod reading;
pub mod run;
pub mod sensor;
pub mod seq;
pub mod spool;
pub mod transport;
pub mod units;
pub mod x509;
