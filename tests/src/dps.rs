//! A stand-in for the Azure IoT Hub Device Provisioning Service, and the IoT hub's layout, on
//! real Mosquitto brokers. Azure cannot be reached from here; each behaviour models a fact of
//! PROTOCOLS.md ("Azure IoT Hub Device Provisioning Service (DPS) over MQTT", "Azure IoT Hub over
//! MQTT"):
//!
//! - DPS is an MQTT broker with TLS and client certificates: devices publish to
//!   `$dps/registrations/PUT/iotdps-register/?$rid={rid}` and
//!   `$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={id}`, and read
//!   answers on `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]` ([`DPS_ACL`]).
//!   A service client ([`DpsService`], identity [`SERVICE_IDENTITY`]) answers them: 202
//!   `assigning` with `retry-after`, then 200 `assigned` with `registrationState.assignedHub`
//!   and `.deviceId` (= the registration id, as for an X.509 group enrollment); or, per
//!   [`Behaviour`], 429 with `retry-after`, 200 `failed` with an error code, 200 `disabled`, or
//!   nothing at all.
//! - The hub is a Mosquitto with the device-to-cloud topic layout and an ACL limiting each
//!   device to `devices/%u/messages/events/#` ([`hub_acl`]), `%u` being the certificate CN.
//!
//! Limits of the stand-in: Mosquitto shows every subscriber of `$dps/registrations/res/#` every
//! answer (real DPS answers only the asking connection; devices match answers by `$rid`), and it
//! does not check the MQTT user name (`use_identity_as_username` replaces it with the CN); the
//! agent's user names are checked by its unit tests instead.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autoprov_bundle::Bundle;
use rumqttc::tokio_rustls::rustls::pki_types::pem::PemObject;
use rumqttc::tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rumqttc::tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use serde_json::json;

use crate::mosquitto::{BrokerOptions, Mosquitto, OBSERVER};
use crate::pki::ServerTls;
use crate::{Background, wait_until};

/// The CN of the service client that plays DPS.
pub const SERVICE_IDENTITY: &str = "dps-service";

/// The DPS broker's ACL: devices ask and read answers, the service reads questions and answers.
pub const DPS_ACL: &str = "pattern write $dps/registrations/PUT/#\n\
pattern write $dps/registrations/GET/#\n\
pattern read $dps/registrations/res/#\n\
user dps-service\n\
topic read $dps/registrations/PUT/#\n\
topic read $dps/registrations/GET/#\n\
topic write $dps/registrations/res/#\n";

/// The hub's ACL: each device writes its own device-to-cloud messages; the observer reads all.
pub fn hub_acl() -> String {
    format!("pattern write devices/%u/messages/events/#\nuser {OBSERVER}\ntopic read devices/#\n")
}

/// A DPS broker ([`DPS_ACL`]) on `server`'s certificate, with the service answering as
/// `identity` (CN [`SERVICE_IDENTITY`]) per `behaviour`.
pub fn start_dps(
    server: &ServerTls,
    identity: &Bundle,
    behaviour: Behaviour,
) -> (Mosquitto, DpsService) {
    let dps = Mosquitto::start(
        server,
        &BrokerOptions {
            acl: DPS_ACL.into(),
            ..BrokerOptions::default()
        },
    );
    let service = DpsService::start(&dps, identity, behaviour);
    (dps, service)
}

/// A hub ([`hub_acl`]) on `server`'s certificate.
pub fn start_hub(server: &ServerTls) -> Mosquitto {
    Mosquitto::start(
        server,
        &BrokerOptions {
            acl: hub_acl(),
            ..BrokerOptions::default()
        },
    )
}

/// How the stand-in answers registrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// 202 `assigning` (retry-after seconds) `polls` times, then 200 `assigned` to `hub`.
    Assign {
        /// The assigned hub's host name.
        hub: String,
        /// Status requests answered 202 before the 200.
        polls: u32,
        /// The `retry-after` given with each 202, seconds.
        retry_after: u64,
    },
    /// 429 with `retry-after` to the first `times` registrations, then like `then`.
    Throttle {
        /// How many registrations are throttled.
        times: u32,
        /// The `retry-after`, seconds.
        retry_after: u64,
        /// What follows.
        hub: String,
    },
    /// 202, then 200 `failed` with error 400209.
    Failed,
    /// 202, then 200 `disabled`.
    Disabled,
    /// No answer at all.
    Silent,
}

impl Behaviour {
    /// Assigns to the hub on `localhost` after one 202 with `retry-after: 1`.
    pub fn assign_localhost() -> Self {
        Behaviour::Assign {
            hub: "localhost".into(),
            polls: 1,
            retry_after: 1,
        }
    }
}

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct Request {
    /// When.
    pub at: Instant,
    /// The topic.
    pub topic: String,
    /// The payload.
    pub payload: String,
}

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    throttled: u32,
    polls: std::collections::HashMap<String, u32>,
    next_op: u64,
}

/// The service client playing DPS.
pub struct DpsService {
    state: Arc<Mutex<State>>,
    behaviour: Arc<Mutex<Behaviour>>,
    _task: Background,
}

impl DpsService {
    /// Connects to `broker` as `identity` (CN [`SERVICE_IDENTITY`]) and answers registrations.
    pub fn start(broker: &Mosquitto, identity: &Bundle, behaviour: Behaviour) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(identity.ca_crt()) {
            roots.add(c.expect("root")).expect("root");
        }
        let chain: Vec<_> = CertificateDer::pem_slice_iter(identity.device_crt())
            .map(|c| c.expect("chain"))
            .collect();
        let key = PrivateKeyDer::from_pem_slice(identity.device_key()).expect("key");
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .expect("client config");
        let mut options = MqttOptions::new(SERVICE_IDENTITY, broker.host(), broker.port());
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(tls),
            )));
        let state = Arc::new(Mutex::new(State::default()));
        let behaviour = Arc::new(Mutex::new(behaviour));
        let subscribed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (st, bh, sub) = (state.clone(), behaviour.clone(), subscribed.clone());
        let task = Background::spawn(move |mut stop| async move {
            let (client, mut eventloop) = AsyncClient::new(options, 100);
            loop {
                let ev = tokio::select! {
                    _ = &mut stop => break,
                    ev = eventloop.poll() => ev,
                };
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client
                            .subscribe("$dps/registrations/PUT/#", QoS::AtLeastOnce)
                            .await;
                        let _ = client
                            .subscribe("$dps/registrations/GET/#", QoS::AtLeastOnce)
                            .await;
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        sub.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let payload = String::from_utf8_lossy(&p.payload).into_owned();
                        let b = bh.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        let answer = {
                            let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
                            s.requests.push(Request {
                                at: Instant::now(),
                                topic: p.topic.clone(),
                                payload: payload.clone(),
                            });
                            answer(&mut s, &b, &p.topic, &payload)
                        };
                        if let Some((topic, body)) = answer {
                            let _ = client.publish(topic, QoS::AtLeastOnce, false, body).await;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let up = wait_until(Duration::from_secs(10), || {
            subscribed.load(std::sync::atomic::Ordering::Relaxed)
        });
        assert!(up, "the DPS stand-in did not subscribe:\n{}", broker.log());
        Self {
            state,
            behaviour,
            _task: task,
        }
    }

    /// Changes how later requests are answered.
    pub fn set_behaviour(&self, b: Behaviour) {
        *self.behaviour.lock().unwrap_or_else(|e| e.into_inner()) = b;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .requests
            .clone()
    }

    /// The registration requests (`PUT iotdps-register`) so far.
    pub fn registrations(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| {
                r.topic
                    .starts_with("$dps/registrations/PUT/iotdps-register/")
            })
            .collect()
    }

    /// The status requests (`GET iotdps-get-operationstatus`) so far.
    pub fn polls(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| {
                r.topic
                    .starts_with("$dps/registrations/GET/iotdps-get-operationstatus/")
            })
            .collect()
    }
}

/// `$rid=…` and other query parameters of a request topic's last level.
fn query<'a>(topic: &'a str, key: &str) -> Option<&'a str> {
    let (_, q) = topic.rsplit_once("/?")?;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then_some(v)
    })
}

fn response(status: u16, rid: &str, retry_after: Option<u64>) -> String {
    match retry_after {
        Some(s) => format!("$dps/registrations/res/{status}/?$rid={rid}&retry-after={s}"),
        None => format!("$dps/registrations/res/{status}/?$rid={rid}"),
    }
}

fn answer(s: &mut State, b: &Behaviour, topic: &str, payload: &str) -> Option<(String, String)> {
    let rid = query(topic, "$rid")?.to_owned();
    if *b == Behaviour::Silent {
        return None;
    }
    if topic.starts_with("$dps/registrations/PUT/iotdps-register/") {
        let v: serde_json::Value = serde_json::from_str(payload).ok()?;
        let reg = v["registrationId"].as_str()?.to_owned();
        if let Behaviour::Throttle {
            times, retry_after, ..
        } = b
            && s.throttled < *times
        {
            s.throttled += 1;
            let body = json!({"errorCode": 429001, "trackingId": "fixture", "message": "Operations are being throttled for this tenant."});
            return Some((response(429, &rid, Some(*retry_after)), body.to_string()));
        }
        s.next_op += 1;
        let op = format!("4.fixture{}.{reg}", s.next_op);
        s.polls.insert(op.clone(), 0);
        let retry = match b {
            Behaviour::Assign { retry_after, .. } => *retry_after,
            _ => 1,
        };
        let body = json!({"operationId": op, "status": "assigning"});
        return Some((response(202, &rid, Some(retry)), body.to_string()));
    }
    // A status request.
    let op = query(topic, "operationId")?.to_owned();
    let reg = op.rsplit_once('.').map(|(_, r)| r.to_owned())?;
    let n = s.polls.entry(op.clone()).or_default();
    *n += 1;
    let state = |status: &str| {
        json!({
            "registrationId": reg,
            "createdDateTimeUtc": "2026-12-03T12:00:00Z",
            "status": status,
            "etag": "fixture",
            "lastUpdatedDateTimeUtc": "2026-12-03T12:00:01Z",
        })
    };
    let body = match b {
        Behaviour::Assign {
            hub,
            polls,
            retry_after,
        } => {
            if *n < *polls {
                let body = json!({"operationId": op, "status": "assigning"});
                return Some((response(202, &rid, Some(*retry_after)), body.to_string()));
            }
            let mut st = state("assigned");
            st["assignedHub"] = json!(hub);
            st["deviceId"] = json!(reg);
            st["substatus"] = json!("initialAssignment");
            json!({"operationId": op, "status": "assigned", "registrationState": st})
        }
        Behaviour::Throttle { hub, .. } => {
            let mut st = state("assigned");
            st["assignedHub"] = json!(hub);
            st["deviceId"] = json!(reg);
            json!({"operationId": op, "status": "assigned", "registrationState": st})
        }
        Behaviour::Failed => {
            let mut st = state("failed");
            st["errorCode"] = json!(400209);
            st["errorMessage"] = json!("Custom allocation failed with status code: 400");
            json!({"operationId": op, "status": "failed", "registrationState": st})
        }
        Behaviour::Disabled => {
            json!({"operationId": op, "status": "disabled", "registrationState": state("disabled")})
        }
        Behaviour::Silent => return None,
    };
    Some((response(200, &rid, None), body.to_string()))
}
