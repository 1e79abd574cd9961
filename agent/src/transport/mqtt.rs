//! The generic `mqtt` profile: any broker that authenticates clients by certificate.

use super::{Endpoint, TransportError};
use crate::config::Config;
use crate::credentials::{Credentials, CredentialsError, parse_certs};

/// Connection parameters of the `mqtt` profile.
#[derive(Debug)]
pub struct MqttProfile {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// The topic, `{device_id}` filled in.
    pub topic: String,
}

impl MqttProfile {
    /// Reads `[mqtt]`; the server roots are `mqtt.ca_file` or the bundle's `ca.crt`.
    pub fn from_config(config: &Config, creds: &Credentials) -> Result<Self, TransportError> {
        let device_id = config.require_device_id()?.to_string();
        let host = config.require_mqtt_host()?.to_owned();
        let (roots_file, server_roots) = match &config.mqtt.ca_file {
            Some(file) => {
                let pem = std::fs::read(file).map_err(|source| CredentialsError::Read {
                    file: file.clone(),
                    source,
                    hint: " (mqtt.ca_file: the CA that signed the broker's certificate)",
                })?;
                (file.clone(), parse_certs(&pem, file)?)
            }
            None => (creds.ca_file.clone(), creds.ca.clone()),
        };
        Ok(Self {
            topic: config.mqtt.topic.replace("{device_id}", &device_id),
            endpoint: Endpoint {
                host,
                port: config.mqtt.port,
                client_id: device_id,
                username: None,
                alpn: Vec::new(),
                keep_alive: config.mqtt.keep_alive,
                clean_session: config.mqtt.clean_session,
                server_roots,
                roots_file,
                max_packet: 64 * 1024,
            },
        })
    }
}
