//! The `aws` profile: AWS IoT Core, devices provisioned just in time (JITP).
//!
//! What AWS IoT requires and this profile does, speaking MQTT 3.1.1 (PROTOCOLS.md, "AWS IoT
//! Core"; AWS IoT developer guide `jit-provisioning`, `protocols`, `mqtt`,
//! `server-authentication`, `iot-quotas`):
//!
//! - client id = thing name = device id (the certificate CN): the device policy written by
//!   `autoprov aws setup` uses `${iot:Connection.Thing.ThingName}`, which resolves only then;
//! - the chain presented is the leaf and the issuing CA (the registered CA: JITP finds the
//!   template through it; rustls also sends SNI, which SNI_ONLY registration relies on);
//! - port 8883, or 443 with the ALPN protocol `x-amzn-mqtt-ca`;
//! - server trust: Amazon Root CA 1 and 3 ([`super::roots::AWS`]), plus `aws.extra_ca_file`;
//! - the first connection of a new certificate is closed by AWS once provisioning ran: it is
//!   expected, logged as such, and retried after `aws.jitp_retry`, then with the backoff;
//! - at most one CONNECT per second per client id;
//! - keep-alive within 30–1200 s (clamped); QoS 0 and 1 only (the agent publishes QoS 1);
//!   messages of at most 128 KB.

use std::time::{Duration, Instant};

use rumqttc::ConnectionError;

use super::{
    Diagnosis, Endpoint, FailureKind, TransportError, closed_by_peer, cloud_roots,
    diagnose_generic, roots,
};
use crate::config::Config;

/// The ALPN protocol AWS IoT expects for MQTT with client certificates on port 443.
pub const ALPN_MQTT_CA: &[u8] = b"x-amzn-mqtt-ca";
/// AWS IoT's keep-alive range.
pub const KEEP_ALIVE_RANGE: (Duration, Duration) =
    (Duration::from_secs(30), Duration::from_secs(1200));
/// AWS IoT's largest message (payload 128 KB, plus room for the topic and header).
pub const MAX_PACKET: usize = 128 * 1024 + 512;
/// AWS IoT accepts one CONNECT per second per client id.
pub const MIN_CONNECT_INTERVAL: Duration = Duration::from_secs(1);

/// Connection parameters and JITP state of the `aws` profile.
#[derive(Debug)]
pub struct AwsProfile {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// The topic, `{device_id}` filled in.
    pub topic: String,
    jitp_retry: Duration,
    connected_once: bool,
    jitp_drop_seen: bool,
    last_connect: Option<Instant>,
}

impl AwsProfile {
    /// Reads `[aws]`.
    pub fn from_config(config: &Config) -> Result<Self, TransportError> {
        let device_id = config.require_device_id()?.to_string();
        let aws = &config.aws;
        let host = aws.endpoint.clone().ok_or_else(|| {
            config.missing(
                "aws.endpoint",
                "set [aws] endpoint to the output of `aws iot describe-endpoint --endpoint-type iot:Data-ATS` (autoprov aws setup's setup.sh prints it)",
            )
        })?;
        let keep_alive = aws.keep_alive.clamp(KEEP_ALIVE_RANGE.0, KEEP_ALIVE_RANGE.1);
        if keep_alive != aws.keep_alive {
            tracing::warn!(
                "aws.keep_alive {:?} is outside AWS IoT's 30s..1200s: using {:?}",
                aws.keep_alive,
                keep_alive
            );
        }
        let (server_roots, roots_file) = cloud_roots(
            &roots::AWS,
            aws.extra_ca_file.as_deref(),
            "aws.extra_ca_file",
        )?;
        Ok(Self {
            topic: aws.topic.replace("{device_id}", &device_id),
            endpoint: Endpoint {
                host,
                port: aws.port,
                client_id: device_id,
                username: None,
                alpn: if aws.port == 443 {
                    vec![ALPN_MQTT_CA.to_vec()]
                } else {
                    Vec::new()
                },
                keep_alive,
                clean_session: false,
                server_roots,
                roots_file,
                max_packet: MAX_PACKET,
            },
            jitp_retry: aws.jitp_retry,
            connected_once: false,
            jitp_drop_seen: false,
            last_connect: None,
        })
    }

    /// Keeps CONNECTs at least a second apart.
    pub async fn pre_connect(&mut self) {
        if let Some(last) = self.last_connect {
            let next = last + MIN_CONNECT_INTERVAL;
            tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
        }
        self.last_connect = Some(Instant::now());
    }

    /// The connection was accepted.
    pub fn connected(&mut self) {
        if !self.connected_once {
            tracing::info!("AWS IoT accepted {} (thing {0})", self.endpoint.client_id);
        }
        self.connected_once = true;
    }

    /// JITP's drop of the very first connection is expected; a second one is not.
    pub fn diagnose(&mut self, err: &ConnectionError) -> Diagnosis {
        if !self.connected_once && closed_by_peer(err) {
            let id = &self.endpoint.client_id;
            if !self.jitp_drop_seen {
                self.jitp_drop_seen = true;
                // The wait the log announces is the one that happens: the CONNECT gate included.
                let gate = self.last_connect.map_or(Duration::ZERO, |t| {
                    (t + MIN_CONNECT_INTERVAL).saturating_duration_since(Instant::now())
                });
                return Diagnosis {
                    kind: FailureKind::Expected,
                    message: format!(
                        "AWS IoT closed the first connection of {id}, as just-in-time provisioning does once it has created the thing {id} and activated its certificate; reconnecting (at most one CONNECT a second)"
                    ),
                    retry_after: Some(self.jitp_retry.max(gate)),
                };
            }
            return Diagnosis {
                kind: FailureKind::NotAuthorized,
                message: format!(
                    "AWS IoT at {}:{} closed the connection of {id} again without accepting it: check that the CA is registered ACTIVE with auto-registration and the JITP template and role (setup.sh of `autoprov aws setup`; CloudWatch provisioning metrics), and that the policy allows iot:Connect for client id {id}",
                    self.endpoint.host, self.endpoint.port
                ),
                retry_after: None,
            };
        }
        diagnose_generic(&self.endpoint, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(extra: &str) -> AwsProfile {
        let config = Config::from_texts(&[(
            "agent.toml",
            &format!(
                "[device]\nid = \"sensor-1\"\n[cloud]\nprofile = \"aws\"\n[aws]\nendpoint = \"abc-ats.iot.eu-west-1.amazonaws.com\"\n{extra}"
            ),
        )])
        .unwrap();
        AwsProfile::from_config(&config).unwrap()
    }

    #[test]
    fn port_443_offers_the_alpn_aws_expects_and_8883_none() {
        assert_eq!(
            profile("port = 443").endpoint.alpn,
            vec![b"x-amzn-mqtt-ca".to_vec()]
        );
        assert!(profile("").endpoint.alpn.is_empty());
    }

    #[test]
    fn client_id_is_the_device_id_and_keep_alive_is_clamped() {
        let p = profile("keep_alive = \"10s\"");
        assert_eq!(p.endpoint.client_id, "sensor-1");
        assert_eq!(p.topic, "dt/sensor-1/telemetry");
        assert_eq!(p.endpoint.keep_alive, Duration::from_secs(30));
        assert_eq!(
            profile("keep_alive = \"2h\"").endpoint.keep_alive,
            Duration::from_secs(1200)
        );
        // Amazon's two roots and nothing else.
        assert_eq!(p.endpoint.server_roots.len(), 2);
    }

    #[test]
    fn only_the_first_drop_is_expected() {
        let mut p = profile("jitp_retry = \"250ms\"");
        let drop = || ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted);
        let first = p.diagnose(&drop());
        assert_eq!(first.kind, FailureKind::Expected);
        assert_eq!(first.retry_after, Some(Duration::from_millis(250)));
        let second = p.diagnose(&drop());
        assert_eq!(second.kind, FailureKind::NotAuthorized);
        assert!(
            second.message.contains("auto-registration"),
            "{}",
            second.message
        );
    }
}
