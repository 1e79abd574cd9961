//! The agent's layered configuration: up to four NUL-separated TOML files (the config file, the
//! bundle's `device.toml`, two drop-ins) over the built-in defaults.
//!
//! Invariants: loading never panics; a configuration that loads satisfies every documented
//! bound; an error names one of the given files, and a line inside it; durations print as text
//! that parses back to the same duration.

#![no_main]

use std::time::Duration;

use autoprov_agent::config::{
    Config, ConfigError, DHT11_MIN_INTERVAL, FsyncPolicy, MIN_SPOOL_SIZE, SensorKind,
};
use autoprov_agent::units::HumanDuration;
use autoprov_fuzz::split;
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 4] = [
    "/etc/autoprov/agent.toml",
    "/var/lib/autoprov/credentials/current/device.toml",
    "/etc/autoprov/conf.d/10-site.toml",
    "/etc/autoprov/conf.d/20-local.toml",
];

fn round_trips(d: Duration) {
    let text = HumanDuration(d).to_string();
    let back: HumanDuration = text
        .parse()
        .unwrap_or_else(|e| panic!("{d:?} prints as {text:?}, which does not parse: {e}"));
    assert_eq!(back.0, d, "{text:?}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(texts) = split(data, NAMES.len())
        .into_iter()
        .map(std::str::from_utf8)
        .collect::<Result<Vec<_>, _>>()
    else {
        return;
    };
    let layers: Vec<(&str, &str)> = NAMES.iter().copied().zip(texts.iter().copied()).collect();
    match Config::from_texts(&layers) {
        Ok(c) => {
            assert!(!c.sensor.interval.is_zero());
            if c.sensor.kind != SensorKind::Simulated {
                assert!(c.sensor.interval >= DHT11_MIN_INTERVAL);
            }
            assert!(c.sensor.gpio <= 27);
            assert!((0.0..1.0).contains(&c.sensor.failure_rate));
            assert_ne!(c.mqtt.port, 0);
            assert!(!c.mqtt.topic.is_empty() && !c.mqtt.topic.contains(['+', '#']));
            assert!((5..=1177).contains(&c.mqtt.keep_alive.as_secs()));
            assert!((1..=1000).contains(&c.mqtt.in_flight));
            assert!(c.spool.max_size >= MIN_SPOOL_SIZE);
            if let FsyncPolicy::Batch(every) = c.spool.fsync {
                assert!(!every.is_zero());
                round_trips(every);
            }
            assert!(!c.reconnect.base.is_zero() && c.reconnect.cap >= c.reconnect.base);
            assert!(c.state_dir.is_absolute());
            for d in [
                c.sensor.interval,
                c.mqtt.keep_alive,
                c.reconnect.base,
                c.reconnect.cap,
            ] {
                round_trips(d);
            }
        }
        Err(ConfigError::Invalid { file, line, .. }) => {
            let i = NAMES
                .iter()
                .position(|n| file.as_os_str() == *n)
                .unwrap_or_else(|| panic!("the error names {}, not a given file", file.display()));
            assert!(
                (1..=texts[i].lines().count().max(1)).contains(&line),
                "line {line} is not in {}",
                file.display()
            );
        }
        Err(ConfigError::Parse { file, .. }) => {
            assert!(
                NAMES.iter().any(|n| file.as_os_str() == *n),
                "{}",
                file.display()
            );
        }
        Err(e) => panic!("from_texts cannot fail this way: {e}"),
    }
});
