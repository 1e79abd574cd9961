//! Per-device settings for the bundle: `--set KEY=VALUE` into `device.toml`, and Wi-Fi networks
//! into `wifi.conf`.
//!
//! `device.toml` is merged by the agent over the image's `agent.toml`
//! (docs/agent-interface.md), so every key given here is checked against the agent's
//! configuration schema before a card is written: a typo found on the operator's desk costs
//! seconds, found on a device in the field it costs a trip.
//!
//! A PSK never comes from the command line (it would sit in the shell history and in `ps`): it is
//! read from a file, and written to the card as the derived 256-bit key (what `wpa_passphrase`
//! computes), so a passphrase reused elsewhere does not travel on every card.

use std::fs;
use std::io::Read;
use std::path::Path;

use zeroize::Zeroizing;

/// Why a setting or Wi-Fi file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A `--set` argument is not `TABLE.KEY=VALUE`.
    #[error("--set {0:?}: write TABLE.KEY=VALUE, e.g. --set sensor.interval=30s")]
    Syntax(String),
    /// The key is not in the agent's schema.
    #[error(
        "--set {key}: the agent has no such setting (known: {known}); see docs/agent-interface.md"
    )]
    UnknownKey {
        /// The key.
        key: String,
        /// The keys of that table, or the tables.
        known: String,
    },
    /// The value does not fit the key.
    #[error("--set {key}={value}: {why}")]
    BadValue {
        /// The key.
        key: String,
        /// The value as given.
        value: String,
        /// What the key takes.
        why: String,
    },
    /// `device.id` is the certificate's subject and is written by autoprov.
    #[error(
        "--set device.id: the device id comes from the DEVICE_ID argument (it is the certificate's CN)"
    )]
    DeviceId,
    /// The same key given twice.
    #[error("--set {0} is given twice")]
    Twice(String),
    /// A Wi-Fi file could not be read or is not acceptable.
    #[error("{}: {why}", path.display())]
    Wifi {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong and what to do.
        why: String,
    },
    /// The SSID is not acceptable.
    #[error("--wifi-ssid: {0}")]
    Ssid(String),
}

/// The type of a setting, as the agent reads it.
#[derive(Clone, Copy, Debug)]
enum Ty {
    Str,
    /// An absolute path.
    AbsPath,
    Bool,
    /// An integer in an inclusive range.
    Int(i64, i64),
    /// A float in an inclusive range.
    Float(f64, f64),
    /// One of these words.
    Word(&'static [&'static str]),
    /// `"500ms"`, `"10s"`, `"5m"`, `"1h"`.
    Duration,
    /// `"512KiB"`, `"64MiB"`.
    Size,
}

/// The agent's configuration keys (docs/agent-interface.md and `agent/agent.toml`), the one place
/// the operator side knows them.
const SCHEMA: &[(&str, &[(&str, Ty)])] = &[
    (
        "sensor",
        &[
            ("kind", Ty::Word(&["iio", "gpio", "simulated"])),
            ("interval", Ty::Duration),
            ("iio_device", Ty::AbsPath),
            ("gpio", Ty::Int(0, 27)),
            ("seed", Ty::Int(0, i64::MAX)),
            ("failure_rate", Ty::Float(0.0, 1.0)),
        ],
    ),
    ("cloud", &[("profile", Ty::Word(&["mqtt", "aws", "azure"]))]),
    (
        "mqtt",
        &[
            ("host", Ty::Str),
            ("port", Ty::Int(1, 65535)),
            ("ca_file", Ty::AbsPath),
            ("topic", Ty::Str),
            ("keep_alive", Ty::Duration),
            ("clean_session", Ty::Bool),
            ("in_flight", Ty::Int(1, 65535)),
        ],
    ),
    (
        "aws",
        &[
            ("endpoint", Ty::Str),
            ("port", Ty::Int(1, 65535)),
            ("topic", Ty::Str),
        ],
    ),
    ("azure", &[("id_scope", Ty::Str), ("dps_host", Ty::Str)]),
    (
        "spool",
        &[
            ("max_size", Ty::Size),
            ("fsync", Ty::Word(&["always", "batch"])),
            ("batch_interval", Ty::Duration),
        ],
    ),
    (
        "reconnect",
        &[("base", Ty::Duration), ("cap", Ty::Duration)],
    ),
    ("state", &[("dir", Ty::AbsPath)]),
];

fn unit_number(s: &str, units: &[&str]) -> bool {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && s[..digits].parse::<u64>().is_ok() && units.contains(&&s[digits..])
}

impl Ty {
    /// Converts the text after `=` into the TOML value this type takes, or says why not.
    fn value(self, text: &str) -> Result<toml::Value, String> {
        // A quoted value is a string whatever it looks like.
        let literal: Option<toml::Value> = toml::from_str::<toml::Table>(&format!("v = {text}"))
            .ok()
            .and_then(|mut t| t.remove("v"));
        let string = match &literal {
            Some(toml::Value::String(s)) => s.clone(),
            _ => text.to_owned(),
        };
        match self {
            Ty::Str => (!string.is_empty())
                .then_some(toml::Value::String(string))
                .ok_or_else(|| "must not be empty".to_owned()),
            Ty::AbsPath => string
                .starts_with('/')
                .then_some(toml::Value::String(string))
                .ok_or_else(|| "must be an absolute path".to_owned()),
            Ty::Bool => match literal {
                Some(v @ toml::Value::Boolean(_)) => Ok(v),
                _ => Err("must be true or false".to_owned()),
            },
            Ty::Int(lo, hi) => match literal {
                Some(toml::Value::Integer(n)) if (lo..=hi).contains(&n) => {
                    Ok(toml::Value::Integer(n))
                }
                _ => Err(format!("must be a whole number from {lo} to {hi}")),
            },
            Ty::Float(lo, hi) => match literal {
                Some(toml::Value::Float(f)) if (lo..=hi).contains(&f) => Ok(toml::Value::Float(f)),
                Some(toml::Value::Integer(n)) if (lo..=hi).contains(&(n as f64)) => {
                    Ok(toml::Value::Float(n as f64))
                }
                _ => Err(format!("must be a number from {lo} to {hi}")),
            },
            Ty::Word(words) => words
                .contains(&string.as_str())
                .then_some(toml::Value::String(string))
                .ok_or_else(|| format!("must be one of {}", words.join(", "))),
            Ty::Duration => unit_number(&string, &["ms", "s", "m", "min", "h"])
                .then_some(toml::Value::String(string))
                .ok_or_else(|| {
                    "must be a duration such as \"500ms\", \"10s\", \"5m\", \"1h\"".to_owned()
                }),
            Ty::Size => unit_number(&string, &["", "B", "KiB", "MiB", "GiB"])
                .then_some(toml::Value::String(string))
                .ok_or_else(|| "must be a size such as \"512KiB\", \"64MiB\"".to_owned()),
        }
    }
}

/// Turns `--set TABLE.KEY=VALUE` arguments into the settings table of `device.toml`, each key
/// checked against the agent's schema and each value converted to the type the agent reads.
pub fn from_args(args: &[String]) -> Result<toml::Table, SettingsError> {
    let mut out = toml::Table::new();
    for arg in args {
        let (key, text) = arg
            .split_once('=')
            .ok_or_else(|| SettingsError::Syntax(arg.clone()))?;
        let key = key.trim();
        let (table, field) = key
            .split_once('.')
            .ok_or_else(|| SettingsError::Syntax(arg.clone()))?;
        if table == "device" && field == "id" {
            return Err(SettingsError::DeviceId);
        }
        let Some((_, fields)) = SCHEMA.iter().find(|(t, _)| *t == table) else {
            return Err(SettingsError::UnknownKey {
                key: key.to_owned(),
                known: SCHEMA
                    .iter()
                    .map(|(t, _)| *t)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let Some((_, ty)) = fields.iter().find(|(f, _)| *f == field) else {
            return Err(SettingsError::UnknownKey {
                key: key.to_owned(),
                known: fields
                    .iter()
                    .map(|(f, _)| format!("{table}.{f}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let value = ty
            .value(text.trim())
            .map_err(|why| SettingsError::BadValue {
                key: key.to_owned(),
                value: text.to_owned(),
                why,
            })?;
        let entry = out
            .entry(table.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(t) = entry
            && t.insert(field.to_owned(), value).is_some()
        {
            return Err(SettingsError::Twice(key.to_owned()));
        }
    }
    Ok(out)
}

/// Reads at most a small file, naming it in errors.
fn read_small(path: &Path, what: &str) -> Result<Zeroizing<Vec<u8>>, SettingsError> {
    let wifi = |why: String| SettingsError::Wifi {
        path: path.to_owned(),
        why,
    };
    let file = fs::File::open(path).map_err(|e| wifi(e.to_string()))?;
    let limit = autoprov_bundle::MAX_FILE_SIZE as u64;
    let mut data = Zeroizing::new(Vec::new());
    file.take(limit + 1)
        .read_to_end(&mut data)
        .map_err(|e| wifi(e.to_string()))?;
    if data.len() as u64 > limit {
        return Err(wifi(format!(
            "larger than {limit} bytes; is this really {what}?"
        )));
    }
    Ok(data)
}

/// `wifi.conf` for one WPA2-Personal network: the SSID and the key derived from the passphrase in
/// `psk_file` (or the 64-hex-digit key it holds).
pub fn wifi_psk(ssid: &str, psk_file: &Path) -> Result<Zeroizing<Vec<u8>>, SettingsError> {
    if ssid.is_empty() || ssid.len() > 32 {
        return Err(SettingsError::Ssid(format!(
            "{ssid:?} is {} bytes; an SSID has 1 to 32",
            ssid.len()
        )));
    }
    let raw = read_small(psk_file, "a Wi-Fi passphrase")?;
    let mut text: &[u8] = &raw;
    for suffix in [&b"\r\n"[..], b"\n"] {
        if let Some(t) = text.strip_suffix(suffix) {
            text = t;
            break;
        }
    }
    let bad = |why: &str| SettingsError::Wifi {
        path: psk_file.to_owned(),
        why: why.to_owned(),
    };
    let psk_hex = if text.len() == 64 && text.iter().all(u8::is_ascii_hexdigit) {
        Zeroizing::new(String::from_utf8_lossy(text).to_ascii_lowercase())
    } else if (8..=63).contains(&text.len()) && text.iter().all(|c| (0x20..0x7f).contains(c)) {
        let mut key = Zeroizing::new([0u8; 32]);
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA1,
            std::num::NonZeroU32::new(4096).unwrap_or(std::num::NonZeroU32::MIN),
            ssid.as_bytes(),
            text,
            &mut key[..],
        );
        Zeroizing::new(hex::encode(&key[..]))
    } else {
        return Err(bad(
            "must hold the passphrase (8 to 63 printable ASCII characters) or the 64-hex-digit key, on one line",
        ));
    };
    let ssid_line = if ssid.bytes().all(|c| (0x20..0x7f).contains(&c) && c != b'"') {
        format!("ssid=\"{ssid}\"")
    } else {
        format!("ssid={}", hex::encode(ssid.as_bytes()))
    };
    let conf = format!(
        "# Written by autoprov. WPA2-Personal; the key is derived from the passphrase.\nnetwork={{\n\t{ssid_line}\n\tscan_ssid=1\n\tkey_mgmt=WPA-PSK\n\tpsk={}\n}}\n",
        psk_hex.as_str()
    );
    Ok(Zeroizing::new(conf.into_bytes()))
}

/// `wifi.conf` as given (several networks, WPA3, enterprise): checked to be wpa_supplicant network
/// blocks, copied as is.
pub fn wifi_conf(path: &Path) -> Result<Zeroizing<Vec<u8>>, SettingsError> {
    let data = read_small(path, "a wpa_supplicant configuration")?;
    let bad = |why: &str| SettingsError::Wifi {
        path: path.to_owned(),
        why: why.to_owned(),
    };
    let text = std::str::from_utf8(&data).map_err(|_| bad("is not UTF-8 text"))?;
    if !text.contains("network={") {
        return Err(bad(
            "has no network={ … } block; see wpa_supplicant.conf(5), or use --wifi-ssid with --wifi-psk-file",
        ));
    }
    let mut depth = 0i32;
    for c in text.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            break;
        }
    }
    if depth != 0 {
        return Err(bad("has unbalanced { } braces"));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn values_take_the_type_the_agent_reads() {
        let t = from_args(&args(&[
            "sensor.interval=30s",
            "mqtt.port=8884",
            "mqtt.clean_session=true",
            "mqtt.host=mqtt.example.net",
            "sensor.failure_rate=0",
            "cloud.profile=aws",
        ]))
        .unwrap();
        let text = toml::to_string(&t).unwrap();
        let back: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(back["sensor"]["interval"].as_str(), Some("30s"));
        assert_eq!(back["mqtt"]["port"].as_integer(), Some(8884));
        assert_eq!(back["mqtt"]["clean_session"].as_bool(), Some(true));
        assert_eq!(back["sensor"]["failure_rate"].as_float(), Some(0.0));
        assert_eq!(back["cloud"]["profile"].as_str(), Some("aws"));
    }

    #[test]
    fn a_host_that_looks_like_a_number_stays_a_string() {
        let t = from_args(&args(&["mqtt.host=10"])).unwrap();
        assert_eq!(t["mqtt"]["host"].as_str(), Some("10"));
    }

    #[test]
    fn unknown_keys_name_the_known_ones() {
        let err = from_args(&args(&["sensor.intervall=30s"])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("sensor.interval"), "{msg}");
        let err = from_args(&args(&["sensors.interval=30s"])).unwrap_err();
        assert!(err.to_string().contains("known: sensor, cloud"), "{err}");
    }

    #[test]
    fn bad_values_say_what_the_key_takes() {
        for (arg, expect) in [
            ("mqtt.port=70000", "from 1 to 65535"),
            ("sensor.interval=soon", "duration"),
            ("cloud.profile=gcp", "mqtt, aws, azure"),
            ("spool.max_size=64MB", "size"),
            ("state.dir=relative", "absolute"),
            ("mqtt.clean_session=yes", "true or false"),
        ] {
            let err = from_args(&args(&[arg])).unwrap_err();
            assert!(err.to_string().contains(expect), "{arg}: {err}");
        }
    }

    #[test]
    fn device_id_twice_and_syntax_are_refused() {
        assert!(matches!(
            from_args(&args(&["device.id=x"])),
            Err(SettingsError::DeviceId)
        ));
        assert!(matches!(
            from_args(&args(&["mqtt.port=1", "mqtt.port=2"])),
            Err(SettingsError::Twice(_))
        ));
        assert!(matches!(
            from_args(&args(&["interval"])),
            Err(SettingsError::Syntax(_))
        ));
    }

    #[test]
    fn the_psk_is_derived_like_wpa_passphrase() {
        // IEEE 802.11i-2004 Annex H.4.2 test vector: "password", SSID "IEEE".
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("psk");
        fs::write(&f, "password\n").unwrap();
        let conf = String::from_utf8(wifi_psk("IEEE", &f).unwrap().to_vec()).unwrap();
        assert!(
            conf.contains("psk=f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"),
            "{conf}"
        );
        assert!(conf.contains("ssid=\"IEEE\""), "{conf}");
        assert!(!conf.contains("password"), "{conf}");
    }

    #[test]
    fn short_passphrases_and_odd_ssids() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("psk");
        fs::write(&f, "short").unwrap();
        let err = wifi_psk("Net", &f).unwrap_err();
        assert!(err.to_string().contains("8 to 63"), "{err}");
        fs::write(&f, "long enough passphrase").unwrap();
        let conf = wifi_psk("Caf\u{e9} \"1\"", &f).unwrap();
        let conf = String::from_utf8(conf.to_vec()).unwrap();
        assert!(conf.contains("ssid=436166c3a9202231"), "{conf}");
        assert!(wifi_psk(&"x".repeat(33), &f).is_err());
    }

    #[test]
    fn wifi_conf_must_hold_balanced_network_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("wifi.conf");
        fs::write(&f, "network={\n ssid=\"a\"\n psk=\"12345678\"\n}\n").unwrap();
        wifi_conf(&f).unwrap();
        fs::write(&f, "network={\n ssid=\"a\"\n").unwrap();
        assert!(
            wifi_conf(&f)
                .unwrap_err()
                .to_string()
                .contains("unbalanced")
        );
        fs::write(&f, "ssid=a\n").unwrap();
        assert!(wifi_conf(&f).is_err());
    }
}
