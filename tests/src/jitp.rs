//! A stand-in for AWS IoT Core's MQTT front with just-in-time provisioning (JITP), in front of a
//! real Mosquitto. AWS cannot be reached from here; this fixture models what the agent must cope
//! with, each behaviour from PROTOCOLS.md ("AWS IoT Core"):
//!
//! - TLS requiring a client certificate that chains to the *registered* CA (the issuing CA that
//!   `autoprov aws setup` registers), verified with rustls' WebPKI client verifier; the device
//!   must therefore present its chain (leaf + issuing CA). The presented chain, the SNI and the
//!   ALPN offered are recorded (`x-amzn-mqtt-ca` is the one protocol the front speaks).
//! - JITP: the first connection of every certificate it has not seen is dropped right after the
//!   CONNECT ("AWS provisions and drops that connection; the device must reconnect").
//! - The device policy's `${iot:Connection.Thing.ThingName}` only works when the client id is the
//!   thing name (= the CN): a CONNECT with another client id is answered CONNACK 5.
//! - Later connections are forwarded to Mosquitto over TLS as the front's own identity; the
//!   broker's ACL scopes them by client id (`pattern write dt/%c/#`), which the front checked.
//!
//! The front can also be told to drop every connection ([`FrontMode::AlwaysDrop`]: a CA
//! registered without auto-registration, or a template that fails), to see the agent back off.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use autoprov_bundle::Bundle;
use bytes::BytesMut;
use rumqttc::Packet;
use rumqttc::tokio_rustls::rustls::pki_types::pem::PemObject;
use rumqttc::tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rumqttc::tokio_rustls::rustls::server::WebPkiClientVerifier;
use rumqttc::tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use rumqttc::tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Background;
use crate::mosquitto::{BrokerOptions, Mosquitto, OBSERVER};
use crate::pki::ServerTls;

/// The ALPN protocol AWS IoT speaks for MQTT with client certificates on port 443.
pub const ALPN: &[u8] = b"x-amzn-mqtt-ca";
/// The ACL the upstream Mosquitto needs: devices write under `dt/<client id>/`.
pub const UPSTREAM_ACL: &str = "pattern write dt/%c/#\n";
/// The CN of the front's own identity towards Mosquitto.
pub const FRONT_IDENTITY: &str = "jitp-front";

/// The broker behind the front on `server`'s certificate: [`UPSTREAM_ACL`], and the observer
/// reads `dt/#`.
pub fn start_upstream(server: &ServerTls) -> Mosquitto {
    Mosquitto::start(
        server,
        &BrokerOptions {
            acl: format!("{UPSTREAM_ACL}user {OBSERVER}\ntopic read dt/#\n"),
            ..BrokerOptions::default()
        },
    )
}

/// What the front does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontMode {
    /// JITP: drop the first connection of each new certificate, forward the rest.
    Jitp,
    /// Drop every connection after its CONNECT.
    AlwaysDrop,
}

/// What happened to one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The TLS handshake failed (e.g. a certificate from another CA).
    TlsFailed(String),
    /// Closed after the CONNECT: JITP provisioning (or [`FrontMode::AlwaysDrop`]).
    Dropped,
    /// CONNACK 5: the client id is not the certificate's CN.
    Refused,
    /// Forwarded to Mosquitto.
    Forwarded,
    /// Closed before a CONNECT arrived.
    NoConnect,
}

/// One connection as the front saw it.
#[derive(Debug, Clone)]
pub struct Connection {
    /// When the TCP connection was accepted.
    pub at: Instant,
    /// The client's certificates, DER, in the order presented (leaf first).
    pub chain: Vec<Vec<u8>>,
    /// The SNI host name the client sent.
    pub sni: Option<String>,
    /// The ALPN protocol negotiated.
    pub alpn: Option<Vec<u8>>,
    /// The CONNECT's client id.
    pub client_id: Option<String>,
    /// What the front did.
    pub outcome: Outcome,
}

#[derive(Default)]
struct State {
    seen: HashSet<Vec<u8>>,
    connections: Vec<Connection>,
}

/// The running front.
pub struct JitpFront {
    port: u16,
    state: Arc<Mutex<State>>,
    mode: Arc<Mutex<FrontMode>>,
    _task: Background,
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.expect("PEM certificate"))
        .collect()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl JitpFront {
    /// Starts the front on loopback `port` (0: any free one): TLS with `server`'s certificate,
    /// client certificates verified against `registered_ca_pem`, forwarding to `upstream` as
    /// `identity` (a bundle whose CN is [`FRONT_IDENTITY`]). AWS's port 443 needs root; panics
    /// naming the port if it cannot be bound.
    pub fn start_on(
        port: u16,
        registered_ca_pem: &str,
        server: &ServerTls,
        upstream: &Mosquitto,
        identity: &Bundle,
        mode: FrontMode,
    ) -> Self {
        let mut registered = RootCertStore::empty();
        for c in certs(registered_ca_pem) {
            registered.add(c).expect("registered CA");
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(registered), provider())
                .build()
                .expect("client verifier");
        let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).expect("server key");
        let mut server_config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&server.chain_pem), key)
            .expect("server config");
        server_config.alpn_protocols = vec![ALPN.to_vec()];

        let mut fleet = RootCertStore::empty();
        for c in certs(&server.ca_pem) {
            fleet.add(c).expect("fleet root");
        }
        let id_key = PrivateKeyDer::from_pem_slice(identity.device_key()).expect("identity key");
        let id_chain = certs(std::str::from_utf8(identity.device_crt()).expect("PEM"));
        let client_config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(fleet)
            .with_client_auth_cert(id_chain, id_key)
            .expect("client config");

        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| {
            panic!("cannot listen on 127.0.0.1:{port}: {e} (ports below 1024 need root)")
        });
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let mode = Arc::new(Mutex::new(mode));
        let upstream_port = upstream.port();
        let (st, md) = (state.clone(), mode.clone());
        let task = Background::spawn(move |mut stop| async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let acceptor = TlsAcceptor::from(Arc::new(server_config));
            let connector = TlsConnector::from(Arc::new(client_config));
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        let mode = *md.lock().unwrap_or_else(|e| e.into_inner());
                        tokio::spawn(serve(
                            tcp,
                            acceptor.clone(),
                            connector.clone(),
                            upstream_port,
                            st.clone(),
                            mode,
                        ));
                    }
                }
            }
        });
        Self {
            port,
            state,
            mode,
            _task: task,
        }
    }

    /// The port devices connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every connection so far.
    pub fn connections(&self) -> Vec<Connection> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .connections
            .clone()
    }

    /// Changes what the front does with new connections.
    pub fn set_mode(&self, mode: FrontMode) {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
    }
}

fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

async fn serve(
    tcp: tokio::net::TcpStream,
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    upstream_port: u16,
    state: Arc<Mutex<State>>,
    mode: FrontMode,
) {
    let mut conn = Connection {
        at: Instant::now(),
        chain: Vec::new(),
        sni: None,
        alpn: None,
        client_id: None,
        outcome: Outcome::NoConnect,
    };
    let record = |c: Connection| {
        state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .connections
            .push(c);
    };
    let mut tls = match acceptor.accept(tcp).await {
        Ok(t) => t,
        Err(e) => {
            conn.outcome = Outcome::TlsFailed(e.to_string());
            return record(conn);
        }
    };
    {
        let (_, session) = tls.get_ref();
        conn.chain = session
            .peer_certificates()
            .map(|c| c.iter().map(|d| d.to_vec()).collect())
            .unwrap_or_default();
        conn.sni = session.server_name().map(str::to_owned);
        conn.alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    }
    // The CONNECT, and its exact bytes for forwarding.
    let mut buf = BytesMut::with_capacity(1024);
    let (connect, raw) = loop {
        match rumqttc::mqttbytes::check(buf.iter(), 1 << 20) {
            Ok(header) => {
                let raw = buf.split_to(header.frame_length());
                match Packet::read(&mut raw.clone(), 1 << 20) {
                    Ok(Packet::Connect(c)) => break (c, raw),
                    _ => return record(conn),
                }
            }
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {
                match tls.read_buf(&mut buf).await {
                    Ok(n) if n > 0 => {}
                    _ => return record(conn),
                }
            }
            Err(_) => return record(conn),
        }
    };
    conn.client_id = Some(connect.client_id.clone());
    let leaf = conn.chain.first().cloned().unwrap_or_default();
    let first_time = state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .seen
        .insert(leaf.clone());
    if mode == FrontMode::AlwaysDrop || first_time {
        conn.outcome = Outcome::Dropped;
        record(conn);
        let _ = tls.shutdown().await;
        return;
    }
    if common_name(&leaf).as_deref() != Some(connect.client_id.as_str()) {
        conn.outcome = Outcome::Refused;
        record(conn);
        let _ = tls.write_all(&[0x20, 0x02, 0x00, 0x05]).await;
        let _ = tls.shutdown().await;
        return;
    }
    let upstream = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await?;
        let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
        connector.connect(name, tcp).await
    };
    let mut up = match upstream.await {
        Ok(u) => u,
        Err(_) => return record(conn),
    };
    conn.outcome = Outcome::Forwarded;
    record(conn);
    if up.write_all(&raw).await.is_err() || up.write_all(&buf).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
}
