//! Per-device settings for the bundle: `--set KEY=VALUE` into `device.toml`, and Wi-Fi networks
//! into `wifi.conf`.
//!
//! `device.toml` is merged by the agent over the image's `agent.toml`
//! (docs/agent-interface.md), so every key given here is checked — by the agent's own
//! configuration code (`autoprov_agent::config`), over its compiled-in defaults — before a card is
//! written: a typo found on the operator's desk costs seconds, found on a device in the field it
//! costs a trip.
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
    /// The agent's configuration code refused the setting (unknown key, wrong type, bad value).
    #[error(
        "--set {arg}: the agent would refuse this setting: {why} (see docs/agent-interface.md)"
    )]
    Agent {
        /// The argument(s).
        arg: String,
        /// The agent's error, naming the key.
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
    /// The `device.toml` already on the card cannot be carried over.
    #[error(
        "the card's /autoprov/device.toml cannot be kept ({0}); give the settings again with --set"
    )]
    Card(String),
    /// The SSID is not acceptable.
    #[error("--wifi-ssid: {0}")]
    Ssid(String),
}

/// The name the `--set` layer has in the agent's error messages.
const LAYER: &str = "device.toml (from --set)";

/// The value text as TOML: a literal if it is one (`8883`, `true`, `0.5`, `"quoted"`), else the
/// text as a string (`30s`, `mqtt.example.net`).
fn literal(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

/// Validates `settings` as the bundle's `device.toml` over the agent's compiled-in defaults, with
/// the agent's own configuration code — the one schema there is.
pub(crate) fn validate(settings: &toml::Table) -> Result<(), String> {
    let text = toml::to_string(settings).map_err(|e| e.to_string())?;
    use autoprov_agent::config::{Config, ConfigError};
    Config::from_texts(&[(LAYER, &text)])
        .map(|_| ())
        .map_err(|e| match e {
            // The TOML parser quotes the synthesized document; its last line is the point.
            ConfigError::Parse { message, .. } => message
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or_default()
                .trim()
                .to_owned(),
            ConfigError::Invalid { field, message, .. } => format!("{field}: {message}"),
            other => other.to_string(),
        })
}

/// Turns `--set TABLE.KEY=VALUE` arguments into the settings table of `device.toml`, checked by
/// the agent's configuration code. A value is a TOML literal if it is one and a string
/// otherwise; where the agent wants a string for a key (`mqtt.host=10`), the text is taken as
/// one.
pub fn from_args(args: &[String]) -> Result<toml::Table, SettingsError> {
    let mut out = toml::Table::new();
    for arg in args {
        let (key, text) = arg
            .split_once('=')
            .ok_or_else(|| SettingsError::Syntax(arg.clone()))?;
        let (key, text) = (key.trim(), text.trim());
        let Some((table, field)) = key.split_once('.') else {
            return Err(SettingsError::Syntax(arg.clone()));
        };
        if table.is_empty() || field.is_empty() || field.contains('.') {
            return Err(SettingsError::Syntax(arg.clone()));
        }
        if table == "device" && field == "id" {
            return Err(SettingsError::DeviceId);
        }
        if out
            .get(table)
            .and_then(|t| t.as_table())
            .is_some_and(|t| t.contains_key(field))
        {
            return Err(SettingsError::Twice(key.to_owned()));
        }
        let one = |value: toml::Value| {
            let mut t = toml::Table::new();
            t.insert(field.to_owned(), value.clone());
            let mut doc = toml::Table::new();
            doc.insert(table.to_owned(), toml::Value::Table(t));
            validate(&doc).map(|()| value)
        };
        let value = match one(literal(text)) {
            Ok(v) => Ok(v),
            Err(first) if !literal(text).is_str() => {
                one(toml::Value::String(text.to_owned())).map_err(|_| first)
            }
            Err(e) => Err(e),
        }
        .map_err(|why| SettingsError::Agent {
            arg: arg.clone(),
            why,
        })?;
        if let toml::Value::Table(t) = out
            .entry(table.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            t.insert(field.to_owned(), value);
        }
    }
    // Each key was checked alone; together they must hold too (e.g. reconnect.base <= cap).
    validate(&out).map_err(|why| SettingsError::Agent {
        arg: args.join(" "),
        why,
    })?;
    Ok(out)
}

/// The settings of a `device.toml` found on a card, without `device.id` (which comes from the
/// certificate), checked like `--set` values.
pub fn from_card(text: &[u8]) -> Result<toml::Table, SettingsError> {
    let bad = |why: String| SettingsError::Card(why);
    let text = std::str::from_utf8(text).map_err(|_| bad("is not UTF-8 text".into()))?;
    let mut table: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    if let Some(toml::Value::Table(device)) = table.get_mut("device") {
        device.remove("id");
        if device.is_empty() {
            table.remove("device");
        }
    }
    validate(&table).map_err(bad)?;
    Ok(table)
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
            "sensor.failure_rate=0.25",
            "cloud.profile=aws",
        ]))
        .unwrap();
        let text = toml::to_string(&t).unwrap();
        let back: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(back["sensor"]["interval"].as_str(), Some("30s"));
        assert_eq!(back["mqtt"]["port"].as_integer(), Some(8884));
        assert_eq!(back["mqtt"]["clean_session"].as_bool(), Some(true));
        assert_eq!(back["sensor"]["failure_rate"].as_float(), Some(0.25));
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
        assert!(msg.contains("unknown field `intervall`"), "{msg}");
        assert!(msg.contains("`interval`"), "{msg}");
        let err = from_args(&args(&["sensors.interval=30s"])).unwrap_err();
        assert!(err.to_string().contains("`sensor`, `cloud`"), "{err}");
    }

    #[test]
    fn bad_values_say_what_the_key_takes() {
        for (arg, expect) in [
            ("mqtt.port=70000", "expected u16"),
            ("sensor.interval=soon", "not a duration"),
            ("cloud.profile=gcp", "`mqtt`, `aws`, `azure`"),
            ("spool.max_size=64MB", "not a size"),
            ("state.dir=relative", "absolute path"),
            ("mqtt.clean_session=yes", "expected a boolean"),
            ("sensor.interval=1s", "2s"),
        ] {
            let err = from_args(&args(&[arg])).unwrap_err();
            assert!(err.to_string().contains(expect), "{arg}: {err}");
        }
    }

    #[test]
    fn settings_that_only_fail_together_are_refused() {
        let err = from_args(&args(&["reconnect.base=10s", "reconnect.cap=5s"])).unwrap_err();
        assert!(err.to_string().contains("reconnect.cap"), "{err}");
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
