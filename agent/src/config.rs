//! Configuration: layered TOML files parsed into raw types, then validated.
//!
//! Layers, later wins key by key: the compiled-in defaults ([`DEFAULT_CONFIG`]), the config file
//! (`/etc/autoprov/agent.toml` or `--config`), the imported bundle's `device.toml`, then
//! `conf.d/*.toml` beside the config file in file-name order. Every raw value keeps the file and
//! byte span it came from, so a validation error can name the file, the line and the key.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use autoprov_bundle::{DEVICE_CONFIG, DeviceId};
use serde::Deserialize;
use toml::Spanned;

use crate::units::{HumanDuration, HumanSize};

/// The documented default configuration, with comments (`print-default-config`).
pub const DEFAULT_CONFIG: &str = include_str!("../agent.toml");
/// The config file used without `--config`.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/autoprov/agent.toml";
/// Name shown for the compiled-in layer in error messages.
const BUILTIN: &str = "<built-in defaults>";

/// Shortest interval a DHT11 can be read at: it needs 2 s between measurements.
pub const DHT11_MIN_INTERVAL: Duration = Duration::from_secs(2);
/// Smallest spool bound accepted: a few segments' worth.
pub const MIN_SPOOL_SIZE: u64 = 64 * 1024;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("{}: {source} (check the path and its permissions)", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A file is not valid TOML or has a key or value of the wrong shape; the message names the
    /// line, the column and the key.
    #[error("{}: {message}", file.display())]
    Parse {
        /// The file.
        file: PathBuf,
        /// The TOML parser's message, with line and key.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{}, line {line}: {field}: {message}", file.display())]
    Invalid {
        /// The file the value came from.
        file: PathBuf,
        /// Its line (1-based).
        line: usize,
        /// The key, as `table.key`.
        field: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
    /// A value that has no default is not set in any file.
    #[error("{field} is not set in any of {files}: {hint}")]
    Missing {
        /// The key, as `table.key`.
        field: &'static str,
        /// The files that were read.
        files: String,
        /// Where it is supposed to come from.
        hint: &'static str,
    },
}

// ---- raw types: what the files say, with spans ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    device: Option<RawDevice>,
    sensor: Option<RawSensor>,
    cloud: Option<RawCloud>,
    mqtt: Option<RawMqtt>,
    aws: Option<RawAws>,
    azure: Option<RawAzure>,
    spool: Option<RawSpool>,
    reconnect: Option<RawReconnect>,
    state: Option<RawState>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    id: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSensor {
    kind: Option<Spanned<SensorKind>>,
    interval: Option<Spanned<HumanDuration>>,
    iio_device: Option<Spanned<PathBuf>>,
    gpio: Option<Spanned<u8>>,
    seed: Option<Spanned<u64>>,
    failure_rate: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCloud {
    profile: Option<Spanned<ProfileKind>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    host: Option<Spanned<String>>,
    port: Option<Spanned<u16>>,
    ca_file: Option<Spanned<PathBuf>>,
    topic: Option<Spanned<String>>,
    keep_alive: Option<Spanned<HumanDuration>>,
    clean_session: Option<Spanned<bool>>,
    in_flight: Option<Spanned<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAws {
    endpoint: Option<Spanned<String>>,
    port: Option<Spanned<u16>>,
    topic: Option<Spanned<String>>,
    keep_alive: Option<Spanned<HumanDuration>>,
    extra_ca_file: Option<Spanned<PathBuf>>,
    jitp_retry: Option<Spanned<HumanDuration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAzure {
    id_scope: Option<Spanned<String>>,
    dps_host: Option<Spanned<String>>,
    dps_port: Option<Spanned<u16>>,
    hub_port: Option<Spanned<u16>>,
    keep_alive: Option<Spanned<HumanDuration>>,
    extra_ca_file: Option<Spanned<PathBuf>>,
    registration_timeout: Option<Spanned<HumanDuration>>,
    reregister_after: Option<Spanned<HumanDuration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpool {
    max_size: Option<Spanned<HumanSize>>,
    fsync: Option<Spanned<FsyncMode>>,
    batch_interval: Option<Spanned<HumanDuration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReconnect {
    base: Option<Spanned<HumanDuration>>,
    cap: Option<Spanned<HumanDuration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    dir: Option<Spanned<PathBuf>>,
}

/// One parsed file.
struct Layer {
    file: PathBuf,
    text: String,
    raw: RawConfig,
}

impl Layer {
    fn parse(file: PathBuf, text: String) -> Result<Self, ConfigError> {
        let raw = toml::from_str(&text).map_err(|e: toml::de::Error| {
            // The parser's message quotes the line it stopped at: not when that may be a key.
            let message = if holds_private_key(&text) {
                let line = e.span().map_or(1, |r| {
                    text.as_bytes()[..r.start.min(text.len())]
                        .iter()
                        .filter(|&&b| b == b'\n')
                        .count()
                        + 1
                });
                format!(
                    "TOML parse error at line {line}: {} (the file holds a private key, which is not shown; keys belong in the credentials directory, not in configuration)",
                    e.message().trim_end()
                )
            } else {
                e.to_string().trim_end().to_owned()
            };
            ConfigError::Parse {
                file: file.clone(),
                message,
            }
        })?;
        Ok(Self { file, text, raw })
    }

    fn read(file: &Path) -> Result<Self, ConfigError> {
        let text = fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_owned(),
            source,
        })?;
        Self::parse(file.to_owned(), text)
    }

    fn line_of(&self, offset: usize) -> usize {
        self.text.as_bytes()[..offset.min(self.text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }
}

/// A value together with where it was set.
#[derive(Debug, Clone)]
struct Located<T> {
    value: T,
    file: PathBuf,
    line: usize,
}

impl<T> Located<T> {
    fn invalid(&self, field: &'static str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.clone(),
            line: self.line,
            field,
            message: redact_private_keys(&message.into()),
        }
    }
}

const PEM_BEGIN: &str = "-----BEGIN ";

fn holds_private_key(text: &str) -> bool {
    text.contains("PRIVATE KEY-----")
}

/// Cuts PEM private-key blocks out of a message that quotes a value: a key pasted into a
/// configuration file by mistake must not be copied into the journal by the error about it.
pub fn redact_private_keys(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(start) = rest.find(PEM_BEGIN) {
        let after = &rest[start + PEM_BEGIN.len()..];
        let label_end = after.find("-----").unwrap_or(after.len());
        if !after[..label_end].ends_with("PRIVATE KEY") {
            out.push_str(&rest[..start + PEM_BEGIN.len()]);
            rest = after;
            continue;
        }
        let end_marker = format!("-----END {}-----", &after[..label_end]);
        // Up to its END line, or, for a key cut short, to the end of the quoted value.
        let end = after
            .find(&end_marker)
            .map(|i| i + end_marker.len())
            .or_else(|| after.find('"'))
            .unwrap_or(after.len());
        out.push_str(&rest[..start]);
        out.push_str("[a private key, not shown]");
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The last layer's value for one key.
fn pick<T: Clone>(
    layers: &[Layer],
    get: impl Fn(&RawConfig) -> Option<&Spanned<T>>,
) -> Option<Located<T>> {
    layers.iter().rev().find_map(|layer| {
        get(&layer.raw).map(|s| Located {
            value: s.get_ref().clone(),
            file: layer.file.clone(),
            line: layer.line_of(s.span().start),
        })
    })
}

/// Like [`pick`] for keys the built-in defaults always set.
fn pick_default<T: Clone>(
    layers: &[Layer],
    field: &'static str,
    get: impl Fn(&RawConfig) -> Option<&Spanned<T>>,
) -> Result<Located<T>, ConfigError> {
    pick(layers, get).ok_or_else(|| ConfigError::Missing {
        field,
        files: file_list(layers),
        hint: "the built-in defaults should set it; this is a bug",
    })
}

fn file_list(layers: &[Layer]) -> String {
    layers
        .iter()
        .map(|l| l.file.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

// ---- validated types ----

/// Which sensor backend reads the DHT11.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SensorKind {
    /// The kernel `dht11` IIO driver.
    Iio,
    /// Bit-banged through `/dev/gpiomem`.
    Gpio,
    /// Deterministic values, no hardware.
    Simulated,
}

/// Which cloud the agent talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileKind {
    /// Any MQTT broker.
    Mqtt,
    /// AWS IoT Core with JITP.
    Aws,
    /// Azure DPS and IoT Hub.
    Azure,
}

/// When the spool forces its writes to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FsyncMode {
    Always,
    Batch,
}

/// When the spool forces its writes to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync after every record.
    Always,
    /// fsync at most this often; records are sent only once synced.
    Batch(Duration),
}

/// `[sensor]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorConfig {
    /// The backend.
    pub kind: SensorKind,
    /// Time between readings.
    pub interval: Duration,
    /// The IIO device directory.
    pub iio_device: PathBuf,
    /// The BCM GPIO pin.
    pub gpio: u8,
    /// The simulated sensor's seed.
    pub seed: u64,
    /// The simulated sensor's failure rate, 0 ≤ r < 1.
    pub failure_rate: f64,
}

/// `[mqtt]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    /// The broker host, if set.
    pub host: Option<String>,
    /// The broker port.
    pub port: u16,
    /// The broker's CA, if not the bundle's `ca.crt`.
    pub ca_file: Option<PathBuf>,
    /// The topic template.
    pub topic: String,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// MQTT clean-session flag.
    pub clean_session: bool,
    /// QoS 1 messages awaiting PUBACK at once.
    pub in_flight: u16,
}

/// `[aws]`, read here and used by the aws profile.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsConfig {
    /// The account's ATS data endpoint (`aws iot describe-endpoint --endpoint-type iot:Data-ATS`).
    pub endpoint: Option<String>,
    /// 8883, or 443 with ALPN `x-amzn-mqtt-ca`.
    pub port: u16,
    /// The topic template.
    pub topic: String,
    /// MQTT keep-alive, clamped to AWS's 30–1200 s by the profile.
    pub keep_alive: Duration,
    /// A CA trusted besides Amazon Root CA 1 and 3.
    pub extra_ca_file: Option<PathBuf>,
    /// Wait before reconnecting after JITP dropped the first connection.
    pub jitp_retry: Duration,
}

/// `[azure]`, read here and used by the azure profile.
#[derive(Debug, Clone, PartialEq)]
pub struct AzureConfig {
    /// The DPS ID scope (`az iot dps show --query properties.idScope`).
    pub id_scope: Option<String>,
    /// The DPS host.
    pub dps_host: String,
    /// The DPS MQTT port.
    pub dps_port: u16,
    /// The IoT hub's MQTT port.
    pub hub_port: u16,
    /// MQTT keep-alive (IoT Hub allows at most 1177 s).
    pub keep_alive: Duration,
    /// A CA trusted besides the three Azure roots.
    pub extra_ca_file: Option<PathBuf>,
    /// How long to wait for each DPS answer before giving up and backing off.
    pub registration_timeout: Duration,
    /// Register again when the assigned hub has been unreachable this long.
    pub reregister_after: Duration,
}

/// `[spool]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolConfig {
    /// Upper bound in bytes.
    pub max_size: u64,
    /// When to fsync.
    pub fsync: FsyncPolicy,
}

/// `[reconnect]`: exponential backoff with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectConfig {
    /// First backoff ceiling.
    pub base: Duration,
    /// Largest backoff ceiling.
    pub cap: Duration,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The device id, if set.
    pub device_id: Option<DeviceId>,
    /// `[sensor]`.
    pub sensor: SensorConfig,
    /// `[cloud] profile`.
    pub profile: ProfileKind,
    /// `[mqtt]`.
    pub mqtt: MqttConfig,
    /// `[aws]`.
    pub aws: AwsConfig,
    /// `[azure]`.
    pub azure: AzureConfig,
    /// `[spool]`.
    pub spool: SpoolConfig,
    /// `[reconnect]`.
    pub reconnect: ReconnectConfig,
    /// `[state] dir`.
    pub state_dir: PathBuf,
    /// The files read, in merge order (for messages).
    pub sources: Vec<PathBuf>,
}

impl Config {
    /// Loads `file`, the imported `device.toml` and `conf.d/*.toml` over the defaults.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let builtin = Layer::parse(PathBuf::from(BUILTIN), DEFAULT_CONFIG.to_owned())?;
        let main = Layer::read(file)?;
        let dropins = conf_d_files(file)?
            .iter()
            .map(|f| Layer::read(f))
            .collect::<Result<Vec<_>, _>>()?;
        // The state directory says where device.toml is, so it is resolved without it.
        let mut layers = vec![builtin, main];
        layers.extend(dropins);
        let state_dir = pick_default(&layers, "state.dir", |r| r.state.as_ref()?.dir.as_ref())?;
        let device_toml = crate::credentials::current_dir(&state_dir.value).join(DEVICE_CONFIG);
        if device_toml.exists() {
            layers.insert(2, Layer::read(&device_toml)?);
        }
        Self::from_layers(&layers)
    }

    /// Validates the compiled-in defaults followed by the given `(name, text)` layers.
    pub fn from_texts(texts: &[(&str, &str)]) -> Result<Self, ConfigError> {
        let mut layers = vec![Layer::parse(
            PathBuf::from(BUILTIN),
            DEFAULT_CONFIG.to_owned(),
        )?];
        for (name, text) in texts {
            layers.push(Layer::parse(PathBuf::from(name), (*text).to_owned())?);
        }
        Self::from_layers(&layers)
    }

    fn from_layers(layers: &[Layer]) -> Result<Self, ConfigError> {
        let device_id = match pick(layers, |r| r.device.as_ref()?.id.as_ref()) {
            None => None,
            Some(id) => Some(
                DeviceId::new(id.value.clone())
                    .map_err(|e| id.invalid("device.id", e.to_string()))?,
            ),
        };
        let sensor = sensor_config(layers)?;
        let profile = pick_default(layers, "cloud.profile", |r| {
            r.cloud.as_ref()?.profile.as_ref()
        })?
        .value;
        let spool = spool_config(layers)?;
        let base = pick_default(layers, "reconnect.base", |r| {
            r.reconnect.as_ref()?.base.as_ref()
        })?;
        if base.value.0.is_zero() {
            return Err(base.invalid(
                "reconnect.base",
                "must be more than 0, or a refused connection is retried in a tight loop",
            ));
        }
        let cap = pick_default(layers, "reconnect.cap", |r| {
            r.reconnect.as_ref()?.cap.as_ref()
        })?;
        if cap.value < base.value {
            return Err(cap.invalid(
                "reconnect.cap",
                format!("{} is less than reconnect.base ({})", cap.value, base.value),
            ));
        }
        let state_dir = pick_default(layers, "state.dir", |r| r.state.as_ref()?.dir.as_ref())?;
        if !state_dir.value.is_absolute() {
            return Err(state_dir.invalid("state.dir", "must be an absolute path"));
        }
        Ok(Self {
            device_id,
            sensor,
            profile,
            mqtt: mqtt_config(layers)?,
            aws: aws_config(layers)?,
            azure: azure_config(layers)?,
            spool,
            reconnect: ReconnectConfig {
                base: base.value.0,
                cap: cap.value.0,
            },
            state_dir: state_dir.value,
            sources: layers.iter().map(|l| l.file.clone()).collect(),
        })
    }

    /// The device id, or an error saying where it should come from.
    pub fn require_device_id(&self) -> Result<&DeviceId, ConfigError> {
        self.device_id.as_ref().ok_or_else(|| ConfigError::Missing {
            field: "device.id",
            files: self.source_list(),
            hint: "it comes from the bundle's device.toml: run `autoprov-agent import` first, or set [device] id",
        })
    }

    /// The broker host of the mqtt profile, or an error saying where to set it.
    pub fn require_mqtt_host(&self) -> Result<&str, ConfigError> {
        self.mqtt
            .host
            .as_deref()
            .ok_or_else(|| ConfigError::Missing {
                field: "mqtt.host",
                files: self.source_list(),
                hint: "set [mqtt] host to the broker's name in the config file",
            })
    }

    /// The error for a required `field` no file sets, with what to do.
    pub fn missing(&self, field: &'static str, hint: &'static str) -> ConfigError {
        ConfigError::Missing {
            field,
            files: self.source_list(),
            hint,
        }
    }

    fn source_list(&self) -> String {
        self.sources
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn sensor_config(layers: &[Layer]) -> Result<SensorConfig, ConfigError> {
    let kind = pick_default(layers, "sensor.kind", |r| r.sensor.as_ref()?.kind.as_ref())?;
    let interval = pick_default(layers, "sensor.interval", |r| {
        r.sensor.as_ref()?.interval.as_ref()
    })?;
    if kind.value != SensorKind::Simulated && interval.value.0 < DHT11_MIN_INTERVAL {
        return Err(interval.invalid(
            "sensor.interval",
            format!(
                "{} is too short: a DHT11 needs at least 2s between measurements",
                interval.value
            ),
        ));
    }
    if interval.value.0.is_zero() {
        return Err(interval.invalid("sensor.interval", "must be more than 0"));
    }
    let gpio = pick_default(layers, "sensor.gpio", |r| r.sensor.as_ref()?.gpio.as_ref())?;
    if gpio.value > 27 {
        return Err(gpio.invalid(
            "sensor.gpio",
            format!(
                "BCM pin {} does not exist on a Raspberry Pi header (0-27)",
                gpio.value
            ),
        ));
    }
    let rate = pick_default(layers, "sensor.failure_rate", |r| {
        r.sensor.as_ref()?.failure_rate.as_ref()
    })?;
    if !(0.0..1.0).contains(&rate.value) {
        return Err(rate.invalid(
            "sensor.failure_rate",
            format!(
                "{} is not a fraction in [0, 1): 1 would never produce a reading",
                rate.value
            ),
        ));
    }
    Ok(SensorConfig {
        kind: kind.value,
        interval: interval.value.0,
        iio_device: pick_default(layers, "sensor.iio_device", |r| {
            r.sensor.as_ref()?.iio_device.as_ref()
        })?
        .value,
        gpio: gpio.value,
        seed: pick_default(layers, "sensor.seed", |r| r.sensor.as_ref()?.seed.as_ref())?.value,
        failure_rate: rate.value,
    })
}

fn mqtt_config(layers: &[Layer]) -> Result<MqttConfig, ConfigError> {
    let port = pick_default(layers, "mqtt.port", |r| r.mqtt.as_ref()?.port.as_ref())?;
    if port.value == 0 {
        return Err(port.invalid("mqtt.port", "0 is not a port; the MQTT/TLS port is 8883"));
    }
    let host = pick(layers, |r| r.mqtt.as_ref()?.host.as_ref());
    if let Some(h) = &host
        && (h.value.is_empty() || h.value.contains(['/', ' ', ':']) && !h.value.contains("::"))
    {
        return Err(h.invalid(
            "mqtt.host",
            format!(
                "{:?} is not a host name or address (no scheme, port or path: set the port with mqtt.port)",
                h.value
            ),
        ));
    }
    let topic = pick_default(layers, "mqtt.topic", |r| r.mqtt.as_ref()?.topic.as_ref())?;
    if topic.value.is_empty() || topic.value.contains(['+', '#']) {
        return Err(topic.invalid(
            "mqtt.topic",
            format!(
                "{:?} is not a topic to publish to (it must be non-empty and without the wildcards + and #)",
                topic.value
            ),
        ));
    }
    let keep_alive = pick_default(layers, "mqtt.keep_alive", |r| {
        r.mqtt.as_ref()?.keep_alive.as_ref()
    })?;
    if keep_alive.value.0 < Duration::from_secs(5) || keep_alive.value.0 > Duration::from_secs(1177)
    {
        return Err(keep_alive.invalid(
            "mqtt.keep_alive",
            format!(
                "{} is outside 5s..1177s (brokers and clouds refuse longer, shorter wastes the radio)",
                keep_alive.value
            ),
        ));
    }
    let in_flight = pick_default(layers, "mqtt.in_flight", |r| {
        r.mqtt.as_ref()?.in_flight.as_ref()
    })?;
    if !(1..=1000).contains(&in_flight.value) {
        return Err(in_flight.invalid("mqtt.in_flight", "must be between 1 and 1000"));
    }
    Ok(MqttConfig {
        host: host.map(|h| h.value),
        port: port.value,
        ca_file: pick(layers, |r| r.mqtt.as_ref()?.ca_file.as_ref()).map(|l| l.value),
        topic: topic.value,
        keep_alive: keep_alive.value.0,
        clean_session: pick_default(layers, "mqtt.clean_session", |r| {
            r.mqtt.as_ref()?.clean_session.as_ref()
        })?
        .value,
        in_flight: in_flight.value,
    })
}

/// A host name as a TLS client sends it: no scheme, port, path or spaces.
fn check_host(host: &Located<String>, field: &'static str, hint: &str) -> Result<(), ConfigError> {
    if host.value.is_empty() || host.value.contains(['/', ' ', ':']) {
        return Err(host.invalid(
            field,
            format!(
                "{:?} is not a host name (no scheme, port or path): {hint}",
                host.value
            ),
        ));
    }
    Ok(())
}

fn nonzero_port(port: &Located<u16>, field: &'static str) -> Result<(), ConfigError> {
    if port.value == 0 {
        return Err(port.invalid(field, "0 is not a port; MQTT over TLS uses 8883"));
    }
    Ok(())
}

fn positive(d: &Located<HumanDuration>, field: &'static str) -> Result<Duration, ConfigError> {
    if d.value.0.is_zero() {
        return Err(d.invalid(field, "must be more than 0"));
    }
    Ok(d.value.0)
}

fn aws_config(layers: &[Layer]) -> Result<AwsConfig, ConfigError> {
    let endpoint = pick(layers, |r| r.aws.as_ref()?.endpoint.as_ref());
    if let Some(e) = &endpoint {
        check_host(
            e,
            "aws.endpoint",
            "use the value of `aws iot describe-endpoint --endpoint-type iot:Data-ATS`",
        )?;
    }
    let port = pick_default(layers, "aws.port", |r| r.aws.as_ref()?.port.as_ref())?;
    nonzero_port(&port, "aws.port")?;
    let topic = pick_default(layers, "aws.topic", |r| r.aws.as_ref()?.topic.as_ref())?;
    if topic.value.is_empty() || topic.value.contains(['+', '#']) || topic.value.starts_with('$') {
        return Err(topic.invalid(
            "aws.topic",
            format!(
                "{:?} is not a topic to publish to (non-empty, no wildcards, no leading $)",
                topic.value
            ),
        ));
    }
    let keep_alive = pick_default(layers, "aws.keep_alive", |r| {
        r.aws.as_ref()?.keep_alive.as_ref()
    })?;
    let jitp_retry = pick_default(layers, "aws.jitp_retry", |r| {
        r.aws.as_ref()?.jitp_retry.as_ref()
    })?;
    Ok(AwsConfig {
        endpoint: endpoint.map(|e| e.value),
        port: port.value,
        topic: topic.value,
        keep_alive: keep_alive.value.0,
        extra_ca_file: pick(layers, |r| r.aws.as_ref()?.extra_ca_file.as_ref()).map(|l| l.value),
        jitp_retry: positive(&jitp_retry, "aws.jitp_retry")?,
    })
}

fn azure_config(layers: &[Layer]) -> Result<AzureConfig, ConfigError> {
    let id_scope = pick(layers, |r| r.azure.as_ref()?.id_scope.as_ref());
    if let Some(s) = &id_scope
        && (s.value.is_empty() || !s.value.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        return Err(s.invalid(
            "azure.id_scope",
            format!(
                "{:?} is not an ID scope (letters and digits, like 0ne00000000: `az iot dps show --query properties.idScope`)",
                s.value
            ),
        ));
    }
    let dps_host = pick_default(layers, "azure.dps_host", |r| {
        r.azure.as_ref()?.dps_host.as_ref()
    })?;
    check_host(
        &dps_host,
        "azure.dps_host",
        "the global endpoint is global.azure-devices-provisioning.net",
    )?;
    let dps_port = pick_default(layers, "azure.dps_port", |r| {
        r.azure.as_ref()?.dps_port.as_ref()
    })?;
    nonzero_port(&dps_port, "azure.dps_port")?;
    let hub_port = pick_default(layers, "azure.hub_port", |r| {
        r.azure.as_ref()?.hub_port.as_ref()
    })?;
    nonzero_port(&hub_port, "azure.hub_port")?;
    let keep_alive = pick_default(layers, "azure.keep_alive", |r| {
        r.azure.as_ref()?.keep_alive.as_ref()
    })?;
    if keep_alive.value.0 < Duration::from_secs(5) || keep_alive.value.0 > Duration::from_secs(1177)
    {
        return Err(keep_alive.invalid(
            "azure.keep_alive",
            format!(
                "{} is outside 5s..1177s (IoT Hub closes connections with a longer keep-alive)",
                keep_alive.value
            ),
        ));
    }
    let timeout = pick_default(layers, "azure.registration_timeout", |r| {
        r.azure.as_ref()?.registration_timeout.as_ref()
    })?;
    let reregister = pick_default(layers, "azure.reregister_after", |r| {
        r.azure.as_ref()?.reregister_after.as_ref()
    })?;
    Ok(AzureConfig {
        id_scope: id_scope.map(|s| s.value),
        dps_host: dps_host.value,
        dps_port: dps_port.value,
        hub_port: hub_port.value,
        keep_alive: keep_alive.value.0,
        extra_ca_file: pick(layers, |r| r.azure.as_ref()?.extra_ca_file.as_ref()).map(|l| l.value),
        registration_timeout: positive(&timeout, "azure.registration_timeout")?,
        reregister_after: positive(&reregister, "azure.reregister_after")?,
    })
}

fn spool_config(layers: &[Layer]) -> Result<SpoolConfig, ConfigError> {
    let max = pick_default(layers, "spool.max_size", |r| {
        r.spool.as_ref()?.max_size.as_ref()
    })?;
    if max.value.0 < MIN_SPOOL_SIZE {
        return Err(max.invalid("spool.max_size", "must be at least 64KiB"));
    }
    let mode = pick_default(layers, "spool.fsync", |r| r.spool.as_ref()?.fsync.as_ref())?;
    let batch = pick_default(layers, "spool.batch_interval", |r| {
        r.spool.as_ref()?.batch_interval.as_ref()
    })?;
    let fsync = match mode.value {
        FsyncMode::Always => FsyncPolicy::Always,
        FsyncMode::Batch if batch.value.0.is_zero() => {
            return Err(batch.invalid(
                "spool.batch_interval",
                "must be more than 0 (or set spool.fsync = \"always\")",
            ));
        }
        FsyncMode::Batch => FsyncPolicy::Batch(batch.value.0),
    };
    Ok(SpoolConfig {
        max_size: max.value.0,
        fsync,
    })
}

/// `conf.d/*.toml` beside `file`, sorted by name; none if the directory does not exist.
fn conf_d_files(file: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let dir = file.parent().unwrap_or(Path::new(".")).join("conf.d");
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ConfigError::Read { file: dir, source }),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| ConfigError::Read {
                file: dir.clone(),
                source,
            })?
            .path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_defaults_parse_and_match_the_interface_document() {
        let c = Config::from_texts(&[]).unwrap();
        assert_eq!(c.sensor.kind, SensorKind::Iio);
        assert_eq!(c.sensor.interval, Duration::from_secs(10));
        assert_eq!(c.profile, ProfileKind::Mqtt);
        assert_eq!(c.mqtt.port, 8883);
        assert_eq!(c.mqtt.topic, "dt/{device_id}/telemetry");
        assert_eq!(c.spool.max_size, 64 << 20);
        assert_eq!(c.spool.fsync, FsyncPolicy::Always);
        assert_eq!(c.reconnect.cap, Duration::from_secs(300));
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/autoprov"));
        assert_eq!(c.device_id, None);
        assert!(c.require_device_id().is_err());
    }

    #[test]
    fn later_layers_win_key_by_key() {
        let c = Config::from_texts(&[
            (
                "agent.toml",
                "[sensor]\nkind = \"simulated\"\ninterval = \"5s\"\n",
            ),
            ("device.toml", "[device]\nid = \"sensor-007\"\n"),
            ("conf.d/10.toml", "[sensor]\ninterval = \"30s\"\n"),
        ])
        .unwrap();
        assert_eq!(c.sensor.kind, SensorKind::Simulated);
        assert_eq!(c.sensor.interval, Duration::from_secs(30));
        assert_eq!(c.require_device_id().unwrap().as_str(), "sensor-007");
    }

    fn error_of(text: &str) -> String {
        Config::from_texts(&[("/etc/autoprov/agent.toml", text)])
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn bad_duration_names_file_line_and_key() {
        let msg = error_of("[device]\nid = \"a\"\n\n[sensor]\ninterval = \"10 seconds\"\n");
        assert!(msg.contains("/etc/autoprov/agent.toml"), "{msg}");
        assert!(msg.contains("line 5"), "{msg}");
        assert!(msg.contains("interval"), "{msg}");
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let msg = error_of("[mqtt]\nhost = \"b\"\nprot = 8883\n");
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("prot"), "{msg}");
    }

    #[test]
    fn too_short_dht11_interval_names_file_line_and_key() {
        let msg = error_of("[sensor]\nkind = \"gpio\"\n\ninterval = \"1s\"\n");
        assert!(
            msg.starts_with("/etc/autoprov/agent.toml, line 4: sensor.interval:"),
            "{msg}"
        );
        assert!(msg.contains("2s"), "{msg}");
    }

    #[test]
    fn semantic_error_points_at_the_layer_that_set_the_value() {
        let err = Config::from_texts(&[
            ("agent.toml", "[sensor]\nkind = \"simulated\"\n"),
            ("conf.d/50-rate.toml", "\n\n[sensor]\nfailure_rate = 1.5\n"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("conf.d/50-rate.toml, line 4: sensor.failure_rate:"),
            "{err}"
        );
    }

    #[test]
    fn invalid_device_id_and_unknown_sensor_kind_are_explained() {
        let msg = error_of("[device]\nid = \"Sensor 7\"\n");
        assert!(msg.contains("line 2: device.id"), "{msg}");
        let msg = error_of("[sensor]\nkind = \"dht22\"\n");
        assert!(msg.contains("line 2") && msg.contains("simulated"), "{msg}");
    }

    #[test]
    fn a_private_key_in_a_value_or_a_file_is_never_quoted() {
        let key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgsecretsecretsecret\n-----END PRIVATE KEY-----\n";
        let msg = error_of(&format!("[mqtt]\nhost = {:?}\n", key.replace('\n', " ")));
        assert!(
            msg.contains("line 2: mqtt.host") && msg.contains("[a private key, not shown]"),
            "{msg}"
        );
        assert!(!msg.contains("secret"), "{msg}");
        let cut = &key[..60];
        let msg = error_of(&format!("[mqtt]\nhost = {:?}\n", cut.replace('\n', " ")));
        assert!(
            !msg.contains("MIGH") && msg.contains("is not a host name"),
            "{msg}"
        );
        let msg = error_of(&format!("[mqtt]\nhost = \"x\"\n{key}"));
        assert!(
            msg.contains("line 3") && msg.contains("private key"),
            "{msg}"
        );
        assert!(!msg.contains("MIGH"), "{msg}");
        // Other PEM blocks (certificates are public) are left as they are.
        assert_eq!(
            redact_private_keys("-----BEGIN CERTIFICATE----- abc -----END CERTIFICATE-----"),
            "-----BEGIN CERTIFICATE----- abc -----END CERTIFICATE-----"
        );
        assert_eq!(
            redact_private_keys("x \"-----BEGIN EC PRIVATE KEY----- abc\" y"),
            "x \"[a private key, not shown]\" y"
        );
    }

    #[test]
    fn host_with_scheme_or_port_is_refused() {
        let msg = error_of("[mqtt]\nhost = \"mqtts://broker:8883\"\n");
        assert!(msg.contains("line 2: mqtt.host"), "{msg}");
    }

    #[test]
    fn load_reads_conf_d_and_device_toml_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let current = crate::credentials::current_dir(&state);
        fs::create_dir_all(&current).unwrap();
        fs::write(
            current.join(DEVICE_CONFIG),
            "[device]\nid = \"sensor-9\"\n[sensor]\ninterval = \"20s\"\n",
        )
        .unwrap();
        let config = tmp.path().join("agent.toml");
        fs::write(
            &config,
            format!(
                "[state]\ndir = \"{}\"\n[sensor]\ninterval = \"15s\"\n",
                state.display()
            ),
        )
        .unwrap();
        fs::create_dir(tmp.path().join("conf.d")).unwrap();
        fs::write(
            tmp.path().join("conf.d/20-b.toml"),
            "[sensor]\ninterval = \"40s\"\n",
        )
        .unwrap();
        fs::write(
            tmp.path().join("conf.d/10-a.toml"),
            "[sensor]\ninterval = \"30s\"\nkind = \"simulated\"\n",
        )
        .unwrap();
        fs::write(tmp.path().join("conf.d/ignored.bak"), "not toml").unwrap();
        let c = Config::load(&config).unwrap();
        assert_eq!(c.require_device_id().unwrap().as_str(), "sensor-9");
        assert_eq!(c.sensor.interval, Duration::from_secs(40));
        assert_eq!(c.sensor.kind, SensorKind::Simulated);
        assert_eq!(c.sources.len(), 5);
    }

    #[test]
    fn missing_config_file_is_named() {
        let err = Config::load(Path::new("/nonexistent/agent.toml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/agent.toml"), "{err}");
    }
}
