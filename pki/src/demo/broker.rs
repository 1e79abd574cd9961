//! The demo's embedded MQTT broker: mutual TLS with the fleet CA, a per-device ACL, a CRL.
//!
//! It enforces what the Mosquitto listener of the real setup enforces (`require_certificate`,
//! `use_identity_as_username`, `pattern write dt/%u/#`, `crlfile`): the client's chain must
//! verify to the fleet root for client authentication (rustls' WebPKI verifier, ring) and not be
//! revoked by the CRL; the MQTT client id must be the certificate's CN; a device may publish
//! below `dt/<its CN>/` only. Every accepted reading is handed to the demo through a channel
//! instead of to subscribers.
//!
//! Why not rumqttd: its 0.20 release verifies client certificates through rustls 0.22 (a second
//! rustls in the binary) with no CRL support, reads the client's Organization as a tenant id and
//! refuses one with a space in it (our leaves carry the fleet's name), has no ACL keyed on the
//! certificate, and brings an HTTP server, a Prometheus exporter and a config-file library (193
//! crates without TLS). MQTT 3.1.1 for devices that only publish is small, and the packet codec
//! is rumqttc's own, which the agent already uses.
//!
//! Limits, because this is a demo and not a broker for a fleet: QoS 0 and 1 only (QoS 2 closes
//! the connection), no subscriptions (SUBSCRIBE is answered with failure codes), no retained
//! messages, no sessions, and a second connection with the same client id does not disconnect
//! the first.

use std::net::SocketAddr;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autoprov_agent::credentials::provider;
use bytes::{Bytes, BytesMut};
use rumqttc::{
    ConnAck, ConnectReturnCode, Packet, PubAck, QoS, SubAck, SubscribeReasonCode, UnsubAck,
};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ServerConfig, version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

/// The largest packet accepted (a reading is about 100 bytes).
const MAX_PACKET: usize = 64 * 1024;
/// How long a client has for the TLS handshake and its CONNECT.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the broker could not start or reload.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A PEM input held nothing usable.
    #[error("broker {what}: {why}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// Why.
        why: String,
    },
    /// rustls refused the configuration.
    #[error("broker TLS configuration: {0}")]
    Tls(String),
    /// The listener could not be set up.
    #[error("broker: cannot listen on 127.0.0.1: {0}")]
    Listen(std::io::Error),
}

/// What the broker saw, in the order it happened.
#[derive(Debug, Clone)]
pub enum BrokerEvent {
    /// A device completed TLS and CONNECT.
    Connected {
        /// The certificate's CN (and client id).
        device: String,
        /// The certificate's serial, lower-case hex.
        serial: String,
    },
    /// A TLS handshake failed: the client's certificate was refused (or the client gave up).
    Refused {
        /// The client's address.
        peer: SocketAddr,
        /// rustls' reason, e.g. `invalid peer certificate: UnknownIssuer`.
        why: String,
    },
    /// A connection or a publish was refused by the ACL.
    Denied {
        /// The certificate's CN.
        device: String,
        /// What was refused.
        why: String,
    },
    /// An accepted reading.
    Reading {
        /// The certificate's CN.
        device: String,
        /// The certificate's serial.
        serial: String,
        /// The topic.
        topic: String,
        /// The payload.
        payload: Bytes,
        /// When it arrived.
        at: Instant,
    },
    /// A connection ended.
    Disconnected {
        /// The certificate's CN.
        device: String,
        /// The certificate's serial.
        serial: String,
        /// Why.
        why: String,
    },
}

/// The TLS side: the server's identity and what client certificates must verify against.
#[derive(Clone)]
pub struct BrokerTls {
    /// Server certificate chain, PEM, leaf first.
    pub chain_pem: String,
    /// Server key, PKCS#8 PEM.
    pub key_pem: zeroize::Zeroizing<String>,
    /// The fleet root, PEM: client chains must lead to it.
    pub ca_pem: String,
}

impl std::fmt::Debug for BrokerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerTls").finish_non_exhaustive()
    }
}

/// A running broker on a loopback port, in its own thread.
#[derive(Debug)]
pub struct Broker {
    addr: SocketAddr,
    tls: BrokerTls,
    config: Arc<Mutex<Arc<ServerConfig>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn server_config(tls: &BrokerTls, crl_pem: Option<&str>) -> Result<ServerConfig, BrokerError> {
    let pem_err = |what: &'static str| move |why: String| BrokerError::Pem { what, why };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(tls.ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| pem_err("CA")(e.to_string()))?;
        roots.add(cert).map_err(|e| pem_err("CA")(e.to_string()))?;
    }
    let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    if let Some(crl) = crl_pem {
        let crls = CertificateRevocationListDer::pem_slice_iter(crl.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err("CRL")(e.to_string()))?;
        // The CRL is the issuing CA's list of leaves; nothing revokes the issuing CA itself.
        verifier = verifier.with_crls(crls).only_check_end_entity_revocation();
    }
    let verifier = verifier
        .build()
        .map_err(|e| BrokerError::Tls(e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(tls.chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err("certificate")(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes())
        .map_err(|e| pem_err("key")(e.to_string()))?;
    ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .map_err(|e| BrokerError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| BrokerError::Tls(e.to_string()))
}

impl Broker {
    /// Starts listening on 127.0.0.1 (a free port); events go to `events`.
    pub fn start(tls: BrokerTls, events: Sender<BrokerEvent>) -> Result<Self, BrokerError> {
        let config = Arc::new(Mutex::new(Arc::new(server_config(&tls, None)?)));
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(BrokerError::Listen)?;
        std_listener
            .set_nonblocking(true)
            .map_err(BrokerError::Listen)?;
        let addr = std_listener.local_addr().map_err(BrokerError::Listen)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(BrokerError::Listen)?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let shared = config.clone();
        let thread = std::thread::Builder::new()
            .name("demo-broker".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(std_listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = stop_rx => {}
                        _ = accept_loop(listener, shared, events) => {}
                    }
                });
            })
            .map_err(BrokerError::Listen)?;
        Ok(Self {
            addr,
            tls,
            config,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Checks client certificates against `crl_pem` from the next connection on (Mosquitto
    /// reads its `crlfile` again on reload in the same way).
    pub fn set_crl(&self, crl_pem: &str) -> Result<(), BrokerError> {
        let new = Arc::new(server_config(&self.tls, Some(crl_pem))?);
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(())
    }

    /// Stops accepting and closes every connection.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<Mutex<Arc<ServerConfig>>>,
    events: Sender<BrokerEvent>,
) {
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let current = config.lock().unwrap_or_else(|e| e.into_inner()).clone();
        tokio::spawn(connection(tcp, peer, current, events.clone()));
    }
}

/// The identity a verified client certificate gives a connection.
struct Identity {
    device: String,
    serial: String,
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    events: Sender<BrokerEvent>,
) {
    let accepted =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(tcp)).await;
    let mut stream = match accepted {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let why = e
                .get_ref()
                .map_or_else(|| e.to_string(), |inner| inner.to_string());
            let _ = events.send(BrokerEvent::Refused { peer, why });
            return;
        }
        Err(_) => {
            let why = "no TLS handshake within 10 s".to_owned();
            let _ = events.send(BrokerEvent::Refused { peer, why });
            return;
        }
    };
    // The verifier required a certificate, so there is one; its CN is the identity.
    let info = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|leaf| autoprov_agent::x509::parse(leaf).ok());
    let Some(info) = info else {
        let why = "no readable client certificate".to_owned();
        let _ = events.send(BrokerEvent::Refused { peer, why });
        return;
    };
    let id = Identity {
        device: info.common_name.unwrap_or_default(),
        serial: info.serial,
    };
    let why = match session(&mut stream, &id, &events).await {
        Ok(why) => why,
        Err(why) => why,
    };
    let _ = stream.shutdown().await;
    let _ = events.send(BrokerEvent::Disconnected {
        device: id.device,
        serial: id.serial,
        why,
    });
}

/// Reads one packet, waiting at most `limit` for it.
async fn read_packet<S: AsyncReadExt + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    limit: Option<Duration>,
) -> Result<Packet, String> {
    let deadline = limit.map(|l| tokio::time::Instant::now() + l);
    loop {
        match Packet::read(buf, MAX_PACKET) {
            Ok(p) => return Ok(p),
            Err(rumqttc::Error::InsufficientBytes(_)) => {}
            Err(e) => return Err(format!("malformed packet: {e}")),
        }
        let read = stream.read_buf(buf);
        let n = match deadline {
            Some(d) => tokio::time::timeout_at(d, read)
                .await
                .map_err(|_| "keep-alive expired".to_owned())?,
            None => read.await,
        };
        match n {
            Ok(0) => return Err("connection closed by the client".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

async fn send<S: AsyncWriteExt + Unpin>(stream: &mut S, packet: Packet) -> Result<(), String> {
    let mut out = BytesMut::new();
    packet
        .write(&mut out, MAX_PACKET)
        .map_err(|e| format!("encode: {e}"))?;
    stream
        .write_all(&out)
        .await
        .map_err(|e| format!("write: {e}"))?;
    stream.flush().await.map_err(|e| format!("write: {e}"))
}

/// Runs the MQTT session; returns why it ended (Ok for a clean end).
async fn session<S: AsyncReadExt + AsyncWriteExt + Unpin>(
    stream: &mut S,
    id: &Identity,
    events: &Sender<BrokerEvent>,
) -> Result<String, String> {
    let mut buf = BytesMut::with_capacity(4096);
    let connect = match read_packet(stream, &mut buf, Some(HANDSHAKE_TIMEOUT)).await? {
        Packet::Connect(c) => c,
        other => return Err(format!("expected CONNECT, got {other:?}")),
    };
    if connect.client_id != id.device {
        send(
            stream,
            Packet::ConnAck(ConnAck::new(ConnectReturnCode::NotAuthorized, false)),
        )
        .await?;
        let why = format!(
            "client id {:?} is not the certificate's CN {:?}",
            connect.client_id, id.device
        );
        let _ = events.send(BrokerEvent::Denied {
            device: id.device.clone(),
            why: why.clone(),
        });
        return Err(why);
    }
    send(
        stream,
        Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)),
    )
    .await?;
    let _ = events.send(BrokerEvent::Connected {
        device: id.device.clone(),
        serial: id.serial.clone(),
    });
    // MQTT 3.1.1: the server may close after one and a half keep-alive periods of silence.
    let idle = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    let allowed = format!("dt/{}/", id.device);
    loop {
        match read_packet(stream, &mut buf, idle).await? {
            Packet::Publish(p) => {
                if p.qos == QoS::ExactlyOnce {
                    return Err("QoS 2 is not supported by the demo broker".into());
                }
                if p.topic.starts_with(&allowed) {
                    let _ = events.send(BrokerEvent::Reading {
                        device: id.device.clone(),
                        serial: id.serial.clone(),
                        topic: p.topic.clone(),
                        payload: p.payload.clone(),
                        at: Instant::now(),
                    });
                } else {
                    // Like Mosquitto: acknowledged (MQTT 3.1.1 has no refusal) and dropped.
                    let _ = events.send(BrokerEvent::Denied {
                        device: id.device.clone(),
                        why: format!("publish to {:?} outside {allowed}#", p.topic),
                    });
                }
                if p.qos == QoS::AtLeastOnce {
                    send(stream, Packet::PubAck(PubAck::new(p.pkid))).await?;
                }
            }
            Packet::PingReq => send(stream, Packet::PingResp).await?,
            Packet::Subscribe(s) => {
                let codes = vec![SubscribeReasonCode::Failure; s.filters.len()];
                send(stream, Packet::SubAck(SubAck::new(s.pkid, codes))).await?;
            }
            Packet::Unsubscribe(u) => send(stream, Packet::UnsubAck(UnsubAck::new(u.pkid))).await?,
            Packet::Disconnect => return Ok("DISCONNECT from the client".into()),
            other => return Err(format!("unexpected {other:?} from a client")),
        }
    }
}
