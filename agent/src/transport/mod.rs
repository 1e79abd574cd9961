//! The transport: a cloud profile, a TLS client identity, and the MQTT link that reconnects with
//! backoff.
//!
//! A [`Profile`] says where to connect and how (host, port, client id, username, ALPN, server
//! roots), which topic readings go to, and what a connection failure means; it may also run a
//! registration step before connecting (Azure DPS). The link ([`link`]) owns the MQTT event loop
//! and reports to the run loop; it is the same for every profile. `mqtt` is the generic profile;
//! [`aws`] (AWS IoT Core with just-in-time provisioning) and [`azure`] (Device Provisioning
//! Service, then IoT Hub) are the cloud profiles, trusting the compiled-in [`roots`].

pub mod aws;
pub mod azure;
pub mod backoff;
pub mod link;
mod mqtt;
pub mod roots;

pub use aws::AwsProfile;
pub use azure::AzureProfile;
pub use mqtt::MqttProfile;

use std::error::Error as StdError;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{ConnectReturnCode, ConnectionError};
use rustls::pki_types::CertificateDer;
use rustls::{AlertDescription, ClientConfig, RootCertStore};

use crate::clock::AgentClock;
use crate::config::{Config, ConfigError, ProfileKind};
use crate::credentials::{Credentials, CredentialsError, provider};

/// Why the transport could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The configuration lacks something the profile needs.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A certificate file could not be read.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The profile is not part of this build.
    #[error(
        "cloud.profile = \"{0}\" is not available in this build of autoprov-agent (use \"mqtt\")"
    )]
    Unsupported(&'static str),
    /// The state directory could not be read or written (the Azure assignment cache).
    #[error("{}: {source}", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// rustls refused the client configuration.
    #[error("TLS client configuration: {0}")]
    Tls(#[from] rustls::Error),
}

impl TransportError {
    /// Whether this is the operator's configuration rather than a runtime failure.
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Config(_) | Self::Unsupported(_))
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Host name (TLS SNI and certificate name) or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// MQTT client id (the device id).
    pub client_id: String,
    /// MQTT user name, if the cloud wants one.
    pub username: Option<String>,
    /// TLS ALPN protocols.
    pub alpn: Vec<Vec<u8>>,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// MQTT clean-session flag.
    pub clean_session: bool,
    /// Certificates the broker's chain must lead to.
    pub server_roots: Vec<CertificateDer<'static>>,
    /// Where they came from, for messages.
    pub roots_file: PathBuf,
    /// Largest MQTT packet the broker accepts from us.
    pub max_packet: usize,
}

/// What a failed connection attempt means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The broker refused the device's certificate (TLS alert).
    CertificateRefused,
    /// The broker accepted TLS but refused the MQTT connection (CONNACK code).
    NotAuthorized,
    /// The broker's certificate does not verify against the configured roots.
    ServerUntrusted,
    /// Nothing answered, or the connection dropped.
    Unreachable,
    /// A failure the profile expects and simply retries (AWS JITP's first connect).
    Expected,
}

/// A connection failure explained for the log.
#[derive(Debug, Clone)]
pub struct Diagnosis {
    /// The category.
    pub kind: FailureKind,
    /// One line for the operator: what happened and what to check.
    pub message: String,
    /// A wait the other side asked for (DPS `retry-after`) or the profile prescribes (after
    /// AWS JITP's expected drop); the link waits at least this long.
    pub retry_after: Option<Duration>,
}

/// A cloud profile.
#[derive(Debug)]
pub enum Profile {
    /// Any MQTT broker.
    Mqtt(MqttProfile),
    /// AWS IoT Core.
    Aws(AwsProfile),
    /// Azure DPS, then IoT Hub.
    Azure(Box<AzureProfile>),
}

impl Profile {
    /// The profile the configuration selects.
    pub fn from_config(config: &Config, creds: &Credentials) -> Result<Self, TransportError> {
        match config.profile {
            ProfileKind::Mqtt => Ok(Self::Mqtt(MqttProfile::from_config(config, creds)?)),
            ProfileKind::Aws => Ok(Self::Aws(AwsProfile::from_config(config)?)),
            ProfileKind::Azure => Ok(Self::Azure(Box::new(AzureProfile::from_config(
                config, creds,
            )?))),
        }
    }

    /// The profile's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Mqtt(_) => "mqtt",
            Self::Aws(_) => "aws",
            Self::Azure(_) => "azure",
        }
    }

    /// Where to connect.
    pub fn endpoint(&self) -> &Endpoint {
        match self {
            Self::Mqtt(p) => &p.endpoint,
            Self::Aws(p) => &p.endpoint,
            Self::Azure(p) => p.endpoint(),
        }
    }

    /// The topic readings are published to.
    pub fn topic(&self) -> &str {
        match self {
            Self::Mqtt(p) => &p.topic,
            Self::Aws(p) => &p.topic,
            Self::Azure(p) => p.topic(),
        }
    }

    /// Runs before every connection attempt (registration with a provisioning service).
    pub async fn pre_connect(&mut self) -> Result<(), Diagnosis> {
        match self {
            Self::Mqtt(_) => Ok(()),
            Self::Aws(p) => {
                p.pre_connect().await;
                Ok(())
            }
            Self::Azure(p) => p.pre_connect().await,
        }
    }

    /// The broker accepted the connection (CONNACK).
    pub fn connected(&mut self) {
        match self {
            Self::Mqtt(_) => {}
            Self::Aws(p) => p.connected(),
            Self::Azure(p) => p.connected(),
        }
    }

    /// Explains a failed connection attempt, and lets the profile react to it (AWS: JITP's
    /// expected first drop; Azure: register again when the hub refuses the device).
    pub fn diagnose(&mut self, err: &ConnectionError) -> Diagnosis {
        match self {
            Self::Mqtt(p) => diagnose_generic(&p.endpoint, err),
            Self::Aws(p) => p.diagnose(err),
            Self::Azure(p) => p.diagnose(err),
        }
    }
}

/// Builds the rustls client configuration: TLS 1.2 or 1.3, ring, the device chain and key as
/// client identity, the endpoint's roots as server trust, and the agent's clock
/// ([`AgentClock`]) to judge the server's certificate by.
pub fn client_config(
    endpoint: &Endpoint,
    creds: &Credentials,
) -> Result<Arc<ClientConfig>, TransportError> {
    let mut roots = RootCertStore::empty();
    for cert in &endpoint.server_roots {
        roots.add(cert.clone())?;
    }
    let mut config = ClientConfig::builder_with_details(provider(), Arc::new(AgentClock))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_client_auth_cert(creds.chain.clone(), creds.key.clone_key())?;
    config.alpn_protocols = endpoint.alpn.clone();
    Ok(Arc::new(config))
}

/// Finds the rustls error inside a connection error, through I/O error wrappers.
fn rustls_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(r) = rustls_error(inner)
        {
            return Some(r);
        }
        cur = e.source();
    }
    None
}

/// The diagnosis any MQTT broker's failures get.
pub fn diagnose_generic(endpoint: &Endpoint, err: &ConnectionError) -> Diagnosis {
    let at = format!("{}:{}", endpoint.host, endpoint.port);
    let (kind, message) = match (err, rustls_error(err)) {
        (_, Some(rustls::Error::AlertReceived(alert))) if is_cert_alert(*alert) => (
            FailureKind::CertificateRefused,
            format!(
                "the broker at {at} refused this device's certificate (TLS alert {alert:?}): \
                 it does not trust the CA that issued it, or the certificate is revoked or expired; \
                 check the broker's cafile/crlfile and `autoprov-agent check`"
            ),
        ),
        (_, Some(rustls::Error::InvalidCertificate(why))) => (
            FailureKind::ServerUntrusted,
            format!(
                "the broker at {at} presented a certificate that does not verify against {} ({why:?}): \
                 trust the CA that signed it (mqtt.ca_file, or aws.extra_ca_file / azure.extra_ca_file for the cloud profiles) and connect to a name it holds",
                endpoint.roots_file.display()
            ),
        ),
        (ConnectionError::ConnectionRefused(code), _) => (
            if matches!(
                code,
                ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword
            ) {
                FailureKind::NotAuthorized
            } else {
                FailureKind::Unreachable
            },
            format!(
                "the broker at {at} refused the MQTT connection ({code:?}) for client id {}: check its ACL and that the id is allowed",
                endpoint.client_id
            ),
        ),
        (_, Some(other)) => (
            FailureKind::Unreachable,
            format!("TLS with {at} failed: {other}"),
        ),
        (e, None) => (
            FailureKind::Unreachable,
            format!("cannot reach the broker at {at}: {e}"),
        ),
    };
    Diagnosis {
        kind,
        message,
        retry_after: None,
    }
}

/// Whether the connection was closed under us without a TLS or MQTT error: what AWS IoT does
/// to the first connection of a device it provisions just in time.
pub fn closed_by_peer(err: &ConnectionError) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    if rustls_error(err).is_some() {
        return false;
    }
    let io_closed = |e: &std::io::Error| {
        matches!(
            e.kind(),
            ConnectionAborted | ConnectionReset | UnexpectedEof | BrokenPipe
        )
    };
    match err {
        ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted) => true,
        ConnectionError::MqttState(rumqttc::StateError::Io(e)) | ConnectionError::Io(e) => {
            io_closed(e)
        }
        _ => false,
    }
}

/// The compiled-in `roots` plus the certificates of `extra` (the documented extra-CA option).
/// Returns the roots and a description of where they came from, for messages.
pub fn cloud_roots(
    roots: &[roots::TrustRoot],
    extra: Option<&std::path::Path>,
    field: &'static str,
) -> Result<(Vec<CertificateDer<'static>>, PathBuf), TransportError> {
    let mut ders = roots::ders(roots);
    let mut described = format!("the compiled-in roots ({})", roots::names(roots));
    if let Some(file) = extra {
        let pem =
            std::fs::read(file).map_err(|source| crate::credentials::CredentialsError::Read {
                file: file.to_owned(),
                source,
                hint: match field {
                    "aws.extra_ca_file" => {
                        " (aws.extra_ca_file: a CA trusted besides Amazon's roots)"
                    }
                    _ => " (azure.extra_ca_file: a CA trusted besides Azure's roots)",
                },
            })?;
        ders.extend(crate::credentials::parse_certs(&pem, file)?);
        described.push_str(&format!(" and {}", file.display()));
    }
    Ok((ders, PathBuf::from(described)))
}

fn is_cert_alert(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::CertificateRequired
            | AlertDescription::DecryptError
            | AlertDescription::HandshakeFailure
    )
}
