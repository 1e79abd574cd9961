//! The `azure` profile: registration with the Azure IoT Hub Device Provisioning Service (DPS)
//! over MQTT, then telemetry to the assigned IoT hub.
//!
//! DPS, API version 2019-03-31 (PROTOCOLS.md; learn.microsoft.com `iot-dps/iot-dps-mqtt-support`;
//! azure-sdk-for-c `az_iot_provisioning_client.h`): connect to `azure.dps_host:8883` with client
//! id = registration id = device id, user name `{idScope}/registrations/{registrationId}/api-version=2019-03-31`,
//! no password (X.509), clean session; subscribe to `$dps/registrations/res/#`; publish
//! `{"registrationId": …}` to `$dps/registrations/PUT/iotdps-register/?$rid={rid}`. Answers arrive
//! on `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]` and are matched by `$rid`.
//! While the status is 202 (`assigning`) the agent waits `retry-after` seconds (3 when absent, as
//! the Azure SDK for C does) and asks `$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={id}`.
//! 200 `assigned` carries `registrationState.assignedHub` and `.deviceId`; `failed` and
//! `disabled` end the attempt with an error naming DPS's reason; 429 backs off at least
//! `retry-after`; no answer within `azure.registration_timeout` ends the attempt. Every failed
//! attempt is followed by the link's backoff.
//!
//! IoT Hub, API version 2021-04-12 (learn.microsoft.com `iot/iot-mqtt-connect-to-iot-hub`):
//! client id = device id, user name `{assignedHub}/{deviceId}/?api-version=2021-04-12`, QoS 1
//! telemetry to `devices/{deviceId}/messages/events/` with the property bag
//! `$.ct=application%2Fjson&$.ce=utf-8`.
//!
//! The assignment is cached in `<state.dir>/azure-assignment.json` (written atomically), so a
//! device that registered once starts, connects and spools without DPS, as Azure's own
//! iot-identity-service does. It registers again only when the hub refuses it (TLS alert or
//! CONNACK refusal) or has been unreachable for `azure.reregister_after`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS, SubscribeReasonCode,
    TlsConfiguration, Transport,
};
use rustls::ClientConfig;
use rustls::pki_types::DnsName;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use super::{
    Diagnosis, Endpoint, FailureKind, TransportError, client_config, cloud_roots, diagnose_generic,
    roots,
};
use crate::clock::{rfc3339, unix_now};
use crate::config::{AzureConfig, Config};
use crate::credentials::Credentials;

/// The DPS MQTT API version this profile speaks.
pub const DPS_API_VERSION: &str = "2019-03-31";
/// The IoT Hub MQTT API version this profile speaks.
pub const HUB_API_VERSION: &str = "2021-04-12";
/// The cached assignment, in the state directory.
pub const ASSIGNMENT_FILE: &str = "azure-assignment.json";
/// Where DPS answers.
pub const RESPONSE_TOPICS: &str = "$dps/registrations/res/#";
const RESPONSE_PREFIX: &str = "$dps/registrations/res/";
/// The telemetry property bag for JSON in UTF-8.
pub const JSON_PROPERTIES: &str = "$.ct=application%2Fjson&$.ce=utf-8";
/// The wait between status polls when DPS gives no `retry-after`.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(3);
/// The longest wait a `retry-after` can impose, as long as the default reconnect cap: DPS asks
/// for seconds, and a larger number (a broken answer) must not park the device for years.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Status polls of one registration before giving up (and backing off).
const MAX_POLLS: u32 = 100;
/// IoT Hub's largest message (256 KB) plus room for the topic and header.
pub const MAX_PACKET: usize = 256 * 1024 + 1024;

/// What DPS assigned, as cached in [`ASSIGNMENT_FILE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The hub's host name.
    pub assigned_hub: String,
    /// The device id in that hub.
    pub device_id: String,
    /// The ID scope it was registered under.
    pub id_scope: String,
    /// The registration id (the certificate CN).
    pub registration_id: String,
    /// When, RFC 3339.
    pub registered_at: String,
    /// When, Unix seconds (for the age `check` reports).
    pub registered_unix: i64,
}

/// The DPS user name: `{idScope}/registrations/{registrationId}/api-version=2019-03-31`.
pub fn dps_username(id_scope: &str, registration_id: &str) -> String {
    format!("{id_scope}/registrations/{registration_id}/api-version={DPS_API_VERSION}")
}

/// The IoT Hub user name: `{hub}/{deviceId}/?api-version=2021-04-12`.
pub fn hub_username(hub: &str, device_id: &str) -> String {
    format!("{hub}/{device_id}/?api-version={HUB_API_VERSION}")
}

/// The telemetry topic: `devices/{deviceId}/messages/events/` and the JSON property bag.
pub fn telemetry_topic(device_id: &str) -> String {
    format!("devices/{device_id}/messages/events/{JSON_PROPERTIES}")
}

/// The cache file in `state_dir`.
pub fn assignment_path(state_dir: &Path) -> PathBuf {
    state_dir.join(ASSIGNMENT_FILE)
}

/// Reads the cached assignment; a missing file is `None`, an unreadable one is reported and
/// treated as missing (the device registers again).
pub fn load_assignment(state_dir: &Path) -> Option<Assignment> {
    let path = assignment_path(state_dir);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!("{}: {e}; registering with DPS again", path.display());
            return None;
        }
    };
    match serde_json::from_str(&text) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(
                "{}: not a cached assignment ({e}); registering with DPS again",
                path.display()
            );
            None
        }
    }
}

/// Writes the assignment: temporary file, fsync, rename, fsync of the directory.
fn save_assignment(state_dir: &Path, a: &Assignment) -> Result<(), TransportError> {
    let path = assignment_path(state_dir);
    let io = |source| TransportError::State {
        path: path.clone(),
        source,
    };
    let text = serde_json::to_vec_pretty(a).map_err(|e| io(std::io::Error::other(e)))?;
    let tmp = state_dir.join(format!(".{ASSIGNMENT_FILE}.tmp"));
    let mut f = fs::File::create(&tmp).map_err(io)?;
    f.write_all(&text).and_then(|()| f.sync_all()).map_err(io)?;
    fs::rename(&tmp, &path).map_err(io)?;
    fs::File::open(state_dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

/// Connection parameters, cached assignment and registration state of the `azure` profile.
pub struct AzureProfile {
    cfg: AzureConfig,
    id_scope: String,
    device_id: String,
    state_dir: PathBuf,
    tls: Arc<ClientConfig>,
    dps: Endpoint,
    hub: Endpoint,
    topic: String,
    assignment: Option<Assignment>,
    unreachable_since: Option<Instant>,
    rid: u64,
}

impl std::fmt::Debug for AzureProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureProfile")
            .field("id_scope", &self.id_scope)
            .field("device_id", &self.device_id)
            .field("assignment", &self.assignment)
            .finish_non_exhaustive()
    }
}

impl AzureProfile {
    /// Reads `[azure]` and the cached assignment.
    pub fn from_config(config: &Config, creds: &Credentials) -> Result<Self, TransportError> {
        let device_id = config.require_device_id()?.to_string();
        let cfg = config.azure.clone();
        let id_scope = cfg.id_scope.clone().ok_or_else(|| {
            config.missing(
                "azure.id_scope",
                "set [azure] id_scope to the DPS ID scope (`az iot dps show --query properties.idScope`; autoprov azure setup's setup.sh prints it)",
            )
        })?;
        let (server_roots, roots_file) = cloud_roots(
            &roots::AZURE,
            cfg.extra_ca_file.as_deref(),
            "azure.extra_ca_file",
        )?;
        let dps = Endpoint {
            host: cfg.dps_host.clone(),
            port: cfg.dps_port,
            client_id: device_id.clone(),
            username: Some(dps_username(&id_scope, &device_id)),
            alpn: Vec::new(),
            keep_alive: Duration::from_secs(60),
            clean_session: true,
            server_roots,
            roots_file,
            max_packet: 64 * 1024,
        };
        let tls = client_config(&dps, creds)?;
        let hub = Endpoint {
            host: format!("{} (not yet assigned by DPS)", cfg.dps_host),
            port: cfg.hub_port,
            username: None,
            keep_alive: cfg.keep_alive,
            max_packet: MAX_PACKET,
            ..dps.clone()
        };
        let mut profile = Self {
            topic: telemetry_topic(&device_id),
            cfg,
            id_scope,
            device_id,
            state_dir: config.state_dir.clone(),
            tls,
            dps,
            hub,
            assignment: None,
            unreachable_since: None,
            rid: u64::from(std::process::id()) << 16,
        };
        if let Some(a) = load_assignment(&profile.state_dir) {
            if a.id_scope == profile.id_scope && a.registration_id == profile.device_id {
                profile.assign(a);
            } else {
                tracing::info!(
                    "the cached assignment is for {} in scope {}, not {} in {}: registering with DPS again",
                    a.registration_id,
                    a.id_scope,
                    profile.device_id,
                    profile.id_scope
                );
            }
        }
        Ok(profile)
    }

    /// The DPS endpoint.
    pub fn dps_endpoint(&self) -> &Endpoint {
        &self.dps
    }

    /// The hub endpoint (its host is a placeholder until DPS assigned one).
    pub fn endpoint(&self) -> &Endpoint {
        &self.hub
    }

    /// The telemetry topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The current assignment, cached or fresh.
    pub fn assignment(&self) -> Option<&Assignment> {
        self.assignment.as_ref()
    }

    fn assign(&mut self, a: Assignment) {
        self.hub.host = a.assigned_hub.clone();
        self.hub.client_id = a.device_id.clone();
        self.hub.username = Some(hub_username(&a.assigned_hub, &a.device_id));
        self.assignment = Some(a);
        self.unreachable_since = None;
    }

    fn forget(&mut self) {
        self.assignment = None;
        let path = assignment_path(&self.state_dir);
        if let Err(e) = fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("{}: {e}", path.display());
        }
    }

    /// Registers with DPS unless an assignment is known.
    pub async fn pre_connect(&mut self) -> Result<(), Diagnosis> {
        if self.assignment.is_some() {
            return Ok(());
        }
        tracing::info!(
            "registering {} with DPS {}:{} (ID scope {}, api-version {DPS_API_VERSION})",
            self.device_id,
            self.dps.host,
            self.dps.port,
            self.id_scope
        );
        let a = self.register().await?;
        if a.device_id != self.device_id {
            return Err(self.dps_error(
                FailureKind::NotAuthorized,
                format!(
                    "DPS assigned the device id {:?} to registration {}: the enrollment must keep the device id (an X.509 group enrollment does)",
                    a.device_id, self.device_id
                ),
                None,
            ));
        }
        if let Err(e) = save_assignment(&self.state_dir, &a) {
            // Still usable now; the next start registers again.
            tracing::warn!("the assignment could not be cached: {e}");
        }
        tracing::info!("DPS assigned {} to IoT hub {}", a.device_id, a.assigned_hub);
        self.assign(a);
        Ok(())
    }

    /// The hub accepted the connection.
    pub fn connected(&mut self) {
        self.unreachable_since = None;
    }

    /// Explains a failed hub connection; a refusal, or unreachability for longer than
    /// `azure.reregister_after`, sends the device back to DPS.
    pub fn diagnose(&mut self, err: &ConnectionError) -> Diagnosis {
        let mut d = diagnose_generic(&self.hub, err);
        let again = match d.kind {
            FailureKind::CertificateRefused | FailureKind::NotAuthorized => true,
            FailureKind::Unreachable => {
                let since = *self.unreachable_since.get_or_insert_with(Instant::now);
                since.elapsed() >= self.cfg.reregister_after
            }
            FailureKind::ServerUntrusted | FailureKind::Expected => false,
        };
        if again && self.assignment.is_some() {
            d.message = match d.kind {
                FailureKind::Unreachable => format!(
                    "{}; the hub has been unreachable for more than azure.reregister_after ({:?}): registering with DPS again",
                    d.message, self.cfg.reregister_after
                ),
                _ => format!(
                    "{}; the assigned hub refused the device: registering with DPS again",
                    d.message
                ),
            };
            self.forget();
        }
        d
    }

    fn dps_error(
        &self,
        kind: FailureKind,
        message: String,
        retry_after: Option<Duration>,
    ) -> Diagnosis {
        Diagnosis {
            kind,
            message: format!(
                "DPS {}:{} (ID scope {}, registration {}): {message}",
                self.dps.host, self.dps.port, self.id_scope, self.device_id
            ),
            retry_after,
        }
    }

    fn next_rid(&mut self) -> u64 {
        self.rid = self.rid.wrapping_add(1);
        self.rid
    }

    async fn register(&mut self) -> Result<Assignment, Diagnosis> {
        let timeout = self.cfg.registration_timeout;
        let mut options = MqttOptions::new(&self.dps.client_id, &self.dps.host, self.dps.port);
        options
            .set_keep_alive(self.dps.keep_alive)
            .set_clean_session(true)
            .set_credentials(self.dps.username.clone().unwrap_or_default(), "")
            .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                self.tls.clone(),
            )));
        let (client, mut eventloop) = AsyncClient::new(options, 10);
        let (tx, mut rx) = mpsc::unbounded_channel();
        // The event loop runs on its own so that waiting here never cancels it mid-packet.
        let pump = AbortOnDrop(tokio::spawn(async move {
            loop {
                let ev = eventloop.poll().await;
                let stop = ev.is_err();
                if tx.send(ev).is_err() || stop {
                    break;
                }
            }
        }));
        let result = self.exchange(&client, &mut rx, timeout).await;
        let _ = client.try_disconnect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(pump);
        result
    }

    async fn exchange(
        &mut self,
        client: &AsyncClient,
        rx: &mut mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
        timeout: Duration,
    ) -> Result<Assignment, Diagnosis> {
        let silent = |p: &Self, what: &str| {
            p.dps_error(
                FailureKind::Unreachable,
                format!("no {what} within azure.registration_timeout ({timeout:?}); backing off"),
                None,
            )
        };
        // Connected and subscribed before asking, or the answer could go unheard.
        let mut stage = "CONNACK";
        loop {
            let ev = match tokio::time::timeout(timeout, rx.recv()).await {
                Err(_) | Ok(None) => return Err(silent(self, stage)),
                Ok(Some(Err(e))) => return Err(diagnose_generic(&self.dps, &e)),
                Ok(Some(Ok(ev))) => ev,
            };
            match ev {
                Event::Incoming(Packet::ConnAck(_)) => {
                    stage = "SUBACK";
                    if client
                        .subscribe(RESPONSE_TOPICS, QoS::AtLeastOnce)
                        .await
                        .is_err()
                    {
                        return Err(silent(self, stage));
                    }
                }
                Event::Incoming(Packet::SubAck(ack)) => {
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, SubscribeReasonCode::Failure))
                    {
                        return Err(self.dps_error(
                            FailureKind::NotAuthorized,
                            format!("the subscription to {RESPONSE_TOPICS} was refused"),
                            None,
                        ));
                    }
                    break;
                }
                _ => {}
            }
        }
        let mut rid = self.next_rid();
        let body = serde_json::json!({ "registrationId": self.device_id }).to_string();
        self.send(
            client,
            format!("$dps/registrations/PUT/iotdps-register/?$rid={rid}"),
            body,
        )
        .await?;
        let mut polls = 0u32;
        loop {
            let ev = match tokio::time::timeout(timeout, rx.recv()).await {
                Err(_) | Ok(None) => return Err(silent(self, "answer to the registration")),
                Ok(Some(Err(e))) => return Err(diagnose_generic(&self.dps, &e)),
                Ok(Some(Ok(ev))) => ev,
            };
            let Event::Incoming(Packet::Publish(p)) = ev else {
                continue;
            };
            match dps_step(&p.topic, &p.payload, rid, polls) {
                DpsStep::Ignore => {}
                DpsStep::Assigned { hub, device_id } => return Ok(self.assigned(hub, device_id)),
                DpsStep::Fail {
                    kind,
                    message,
                    retry_after,
                } => return Err(self.dps_error(kind, message, retry_after)),
                DpsStep::Poll {
                    state,
                    operation_id,
                    wait,
                } => {
                    polls += 1;
                    tracing::debug!("DPS: {state}; asking again in {wait:?}");
                    tokio::time::sleep(wait).await;
                    rid = self.next_rid();
                    self.send(client, status_topic(rid, &operation_id), String::new())
                        .await?;
                }
            }
        }
    }

    async fn send(
        &self,
        client: &AsyncClient,
        topic: String,
        body: String,
    ) -> Result<(), Diagnosis> {
        client
            .publish(topic, QoS::AtLeastOnce, false, body)
            .await
            .map_err(|e| {
                self.dps_error(
                    FailureKind::Unreachable,
                    format!("the request could not be sent ({e})"),
                    None,
                )
            })
    }

    fn assigned(&self, hub: String, device_id: String) -> Assignment {
        let now = unix_now();
        Assignment {
            assigned_hub: hub,
            device_id,
            id_scope: self.id_scope.clone(),
            registration_id: self.device_id.clone(),
            registered_at: rfc3339(now),
            registered_unix: now,
        }
    }
}

/// What one message on the DPS response topics asks of the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DpsStep {
    /// Not the answer to the request waited for (another request's, or not DPS's): keep waiting.
    Ignore,
    /// Registered: the hub and the device id DPS assigned.
    Assigned {
        /// The hub's host name.
        hub: String,
        /// The device id in that hub.
        device_id: String,
    },
    /// Still assigning: ask about the operation again after `wait`.
    Poll {
        /// DPS's status word, for the log.
        state: String,
        /// The operation to ask about.
        operation_id: String,
        /// How long to wait first.
        wait: Duration,
    },
    /// This registration attempt ends.
    Fail {
        /// The category, for the link's log and backoff.
        kind: FailureKind,
        /// What DPS said and what to check.
        message: String,
        /// The least wait DPS asked for before the next attempt.
        retry_after: Option<Duration>,
    },
}

/// The topic of the status request about `operation_id`.
pub fn status_topic(rid: u64, operation_id: &str) -> String {
    format!(
        "$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={operation_id}"
    )
}

/// Whether `op` can go into [`status_topic`] as it is: no MQTT wildcard, no character that would
/// end the query parameter or the topic level.
fn usable_operation_id(op: &str) -> bool {
    !op.is_empty()
        && op
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"#+/?&".contains(&b))
}

/// Interprets one message received on [`RESPONSE_TOPICS`] while waiting for the answer to the
/// request `rid`, after `polls` status requests: the whole of what the device makes of DPS's
/// answers (public so that the fuzz target `dps_answer` runs exactly this code).
pub fn dps_step(topic: &str, payload: &[u8], rid: u64, polls: u32) -> DpsStep {
    let fail = |kind, message: String, retry_after| DpsStep::Fail {
        kind,
        message,
        retry_after,
    };
    let Some(answer) = Answer::parse(topic, payload) else {
        return DpsStep::Ignore;
    };
    if answer.rid.as_deref() != Some(rid.to_string().as_str()) {
        // Another request's answer (or another device's, on a shared stand-in).
        return DpsStep::Ignore;
    }
    let state = answer.body["status"].as_str().unwrap_or("").to_owned();
    match (answer.status, state.as_str()) {
        (200, "assigned") => {
            let registration = &answer.body["registrationState"];
            match (
                registration["assignedHub"].as_str(),
                registration["deviceId"].as_str(),
            ) {
                // The hub becomes the host to connect to and the TLS server name.
                (Some(hub), Some(_)) if DnsName::try_from(hub).is_err() => fail(
                    FailureKind::Unreachable,
                    format!("assigned the hub {hub:?}, which is not a host name; backing off"),
                    None,
                ),
                (Some(hub), Some(device_id)) => DpsStep::Assigned {
                    hub: hub.to_owned(),
                    device_id: device_id.to_owned(),
                },
                _ => fail(
                    FailureKind::Unreachable,
                    "answered assigned without registrationState.assignedHub and .deviceId".into(),
                    None,
                ),
            }
        }
        (200, "failed") => fail(
            FailureKind::NotAuthorized,
            format!(
                "registration failed: {} (check the enrollment group and its linked hub)",
                reason(&answer.body)
            ),
            None,
        ),
        (200, "disabled") => fail(
            FailureKind::NotAuthorized,
            "the enrollment of this device is disabled in DPS (enable the enrollment group, or the device's registration, to let it in)".into(),
            None,
        ),
        (200 | 202, _) if polls >= MAX_POLLS => fail(
            FailureKind::Unreachable,
            format!("still {state:?} after {MAX_POLLS} status requests; backing off"),
            None,
        ),
        (200 | 202, _) => match answer.body["operationId"].as_str() {
            Some(op) if !usable_operation_id(op) => fail(
                FailureKind::Unreachable,
                format!("answered with the operationId {op:?}, which cannot be asked about; backing off"),
                None,
            ),
            Some(op) => DpsStep::Poll {
                state,
                operation_id: op.to_owned(),
                wait: answer.retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
            },
            None => fail(
                FailureKind::Unreachable,
                format!("answered {} without an operationId", answer.status),
                None,
            ),
        },
        (429, _) => {
            let wait = answer.retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
            fail(
                FailureKind::Unreachable,
                format!(
                    "throttled (429: {}); backing off at least {wait:?}",
                    reason(&answer.body)
                ),
                Some(wait),
            )
        }
        (401 | 403 | 404, _) => fail(
            FailureKind::NotAuthorized,
            format!(
                "refused the device ({}: {}): the CA must be uploaded and verified, an enabled enrollment group must use it, and the device must present its chain up to that CA",
                answer.status,
                reason(&answer.body)
            ),
            None,
        ),
        (code, _) => fail(
            FailureKind::Unreachable,
            format!("answered {code}: {}; backing off", reason(&answer.body)),
            answer.retry_after,
        ),
    }
}

/// DPS's reason, from an error or a failed registration state.
fn reason(body: &Value) -> String {
    let state = &body["registrationState"];
    let code = body["errorCode"]
        .as_i64()
        .or_else(|| state["errorCode"].as_i64());
    let message = body["message"]
        .as_str()
        .or_else(|| state["errorMessage"].as_str())
        .unwrap_or("no message");
    match code {
        Some(c) => format!("error {c}, {message}"),
        None => message.to_owned(),
    }
}

/// One answer of DPS: `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]`.
#[derive(Debug)]
struct Answer {
    status: u16,
    rid: Option<String>,
    retry_after: Option<Duration>,
    body: Value,
}

impl Answer {
    fn parse(topic: &str, payload: &[u8]) -> Option<Self> {
        let rest = topic.strip_prefix(RESPONSE_PREFIX)?;
        let (status, query) = rest.split_once('/')?;
        let status = status.parse().ok()?;
        let mut rid = None;
        let mut retry_after = None;
        for pair in query.trim_start_matches('?').split('&') {
            match pair.split_once('=') {
                Some(("$rid", v)) => rid = Some(v.to_owned()),
                Some(("retry-after", v)) => {
                    retry_after = v
                        .parse::<u64>()
                        .ok()
                        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
                }
                _ => {}
            }
        }
        let body = serde_json::from_slice(payload).unwrap_or(Value::Null);
        Some(Self {
            status,
            rid,
            retry_after,
            body,
        })
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_and_topic_follow_the_documented_api_versions() {
        assert_eq!(
            dps_username("0ne00000A0A", "sensor-7"),
            "0ne00000A0A/registrations/sensor-7/api-version=2019-03-31"
        );
        assert_eq!(
            hub_username("h.azure-devices.net", "sensor-7"),
            "h.azure-devices.net/sensor-7/?api-version=2021-04-12"
        );
        assert_eq!(
            telemetry_topic("sensor-7"),
            "devices/sensor-7/messages/events/$.ct=application%2Fjson&$.ce=utf-8"
        );
    }

    #[test]
    fn answers_are_parsed_with_rid_and_retry_after() {
        let a = Answer::parse(
            "$dps/registrations/res/202/?$rid=7&retry-after=3",
            br#"{"operationId":"4.x","status":"assigning"}"#,
        )
        .unwrap();
        assert_eq!(a.status, 202);
        assert_eq!(a.rid.as_deref(), Some("7"));
        assert_eq!(a.retry_after, Some(Duration::from_secs(3)));
        assert_eq!(a.body["operationId"], "4.x");
        let b = Answer::parse("$dps/registrations/res/200/?$rid=8", b"{}").unwrap();
        assert_eq!((b.status, b.retry_after), (200, None));
        assert!(Answer::parse("devices/x/messages/events/", b"{}").is_none());
    }

    const RES: &str = "$dps/registrations/res";

    #[test]
    fn an_assigned_hub_that_is_no_host_name_is_refused() {
        // Found by fuzzing (dps_answer): the hub became the host and TLS name as it came.
        let body = br#"{"status":"assigned","registrationState":{"assignedHub":"fleet-hub.azure-devices.ne|","deviceId":"sensor-7"}}"#;
        let step = dps_step(&format!("{RES}/200/?$rid=7"), body, 7, 0);
        assert!(
            matches!(&step, DpsStep::Fail { kind: FailureKind::Unreachable, message, .. } if message.contains("not a host name")),
            "{step:?}"
        );
    }

    #[test]
    fn retry_after_is_capped() {
        // Found by fuzzing (dps_answer): any number of seconds was waited, years included.
        let body = br#"{"operationId":"4.x","status":"assigning"}"#;
        let step = dps_step(
            &format!("{RES}/202/?$rid=7&retry-after=99999999999"),
            body,
            7,
            0,
        );
        assert!(
            matches!(step, DpsStep::Poll { wait, .. } if wait == MAX_RETRY_AFTER),
            "{step:?}"
        );
        let step = dps_step(&format!("{RES}/429/?$rid=7&retry-after=86400"), b"{}", 7, 0);
        assert!(
            matches!(step, DpsStep::Fail { retry_after: Some(w), .. } if w == MAX_RETRY_AFTER),
            "{step:?}"
        );
    }

    #[test]
    fn an_operation_id_that_would_change_the_request_is_refused() {
        for op in ["", "4.x&$rid=1", "4/x", "4.x#", "4 x"] {
            let body = serde_json::json!({"operationId": op, "status": "assigning"}).to_string();
            let step = dps_step(&format!("{RES}/202/?$rid=7"), body.as_bytes(), 7, 0);
            assert!(matches!(step, DpsStep::Fail { .. }), "{op:?}: {step:?}");
        }
        let step = dps_step(
            &format!("{RES}/202/?$rid=7"),
            br#"{"operationId":"4.d0a6.42d7-4c78","status":"assigning"}"#,
            7,
            0,
        );
        assert!(matches!(step, DpsStep::Poll { .. }), "{step:?}");
    }

    #[test]
    fn reasons_come_from_errors_and_failed_states() {
        let failed = serde_json::json!({"status": "failed", "registrationState": {"errorCode": 400209, "errorMessage": "Custom allocation failed"}});
        assert_eq!(reason(&failed), "error 400209, Custom allocation failed");
        let throttled =
            serde_json::json!({"errorCode": 429001, "message": "Operations are being throttled"});
        assert_eq!(
            reason(&throttled),
            "error 429001, Operations are being throttled"
        );
    }

    #[test]
    fn the_cache_is_written_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_assignment(dir.path()), None);
        let a = Assignment {
            assigned_hub: "hub.azure-devices.net".into(),
            device_id: "sensor-1".into(),
            id_scope: "0ne00000000".into(),
            registration_id: "sensor-1".into(),
            registered_at: "2026-12-03T12:00:00Z".into(),
            registered_unix: 1,
        };
        save_assignment(dir.path(), &a).unwrap();
        assert_eq!(load_assignment(dir.path()), Some(a));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        fs::write(assignment_path(dir.path()), "{torn").unwrap();
        assert_eq!(load_assignment(dir.path()), None);
    }
}
