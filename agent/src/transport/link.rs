//! The MQTT link: connects, forwards what the run loop needs, and reconnects with backoff.
//!
//! It runs as its own task so the event loop is never cancelled halfway through a write. Each
//! attempt gets a fresh rumqttc event loop: the run loop re-sends everything unacknowledged from
//! the spool after a reconnect, so rumqttc must not replay its own copies as well. Publishes are
//! reported in the order rumqttc assigns their packet ids, which is the order they were queued,
//! so the run loop can map packet ids back to sequence numbers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, TlsConfiguration, Transport};
use rustls::ClientConfig;
use tokio::sync::mpsc::UnboundedSender;

use super::backoff::Backoff;
use super::{Diagnosis, FailureKind, Profile};

/// What the link tells the run loop.
#[derive(Debug)]
pub enum LinkEvent {
    /// Connected (CONNACK accepted); publish through this client.
    Up(AsyncClient),
    /// A queued publish went out with this packet id.
    Sent(u16),
    /// The broker acknowledged this packet id.
    Acked(u16),
    /// The connection is gone; everything unacknowledged must be sent again.
    Down,
}

/// A connection that lasted this long resets the backoff even without a PUBACK.
const STABLE: Duration = Duration::from_secs(30);

/// Link settings besides the profile.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// TLS client configuration.
    pub tls: Arc<ClientConfig>,
    /// QoS 1 messages in flight.
    pub in_flight: u16,
    /// Reconnect backoff.
    pub backoff: Backoff,
}

/// Runs the link until the run loop goes away.
pub async fn run(mut profile: Profile, opts: LinkOptions, tx: UnboundedSender<LinkEvent>) {
    let LinkOptions {
        tls,
        in_flight,
        mut backoff,
    } = opts;
    let mut failures: u64 = 0;
    loop {
        if let Err(d) = profile.pre_connect().await {
            failures += 1;
            let wait = wait_after(&d, &mut backoff);
            tracing::warn!(
                "{} (attempt {failures}); retrying in {:.1}s",
                d.message,
                wait.as_secs_f64()
            );
            tokio::time::sleep(wait).await;
            continue;
        }
        let ep = profile.endpoint().clone();
        let mut options = MqttOptions::new(&ep.client_id, &ep.host, ep.port);
        options
            .set_keep_alive(ep.keep_alive)
            .set_clean_session(ep.clean_session)
            .set_inflight(in_flight)
            .set_request_channel_capacity(usize::from(in_flight) + 8)
            .set_max_packet_size(64 * 1024, ep.max_packet)
            .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.clone(),
            )));
        if let Some(user) = &ep.username {
            options.set_credentials(user, "");
        }
        let (client, mut eventloop) = AsyncClient::new(options, usize::from(in_flight) + 8);
        let mut up_since: Option<Instant> = None;
        let mut acked_any = false;
        let err = loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    tracing::info!(
                        "connected to {}:{} as {} ({} profile)",
                        ep.host,
                        ep.port,
                        ep.client_id,
                        profile.name()
                    );
                    up_since = Some(Instant::now());
                    profile.connected();
                    if tx.send(LinkEvent::Up(client.clone())).is_err() {
                        return;
                    }
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    if tx.send(LinkEvent::Sent(pkid)).is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    acked_any = true;
                    if tx.send(LinkEvent::Acked(ack.pkid)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        if let Some(since) = up_since {
            if tx.send(LinkEvent::Down).is_err() {
                return;
            }
            if acked_any || since.elapsed() >= STABLE {
                backoff.reset();
                failures = 0;
            }
        }
        failures += 1;
        let d = profile.diagnose(&err);
        let wait = wait_after(&d, &mut backoff);
        let line = format!(
            "{} (attempt {failures}); retrying in {:.1}s",
            d.message,
            wait.as_secs_f64()
        );
        match d.kind {
            FailureKind::Expected => tracing::info!("{line}"),
            FailureKind::Unreachable if up_since.is_some() => {
                tracing::warn!("connection lost: {line}")
            }
            FailureKind::Unreachable => tracing::warn!("{line}"),
            FailureKind::CertificateRefused
            | FailureKind::NotAuthorized
            | FailureKind::ServerUntrusted => tracing::error!("{line}"),
        }
        tracing::debug!("connection error detail: {err:?}");
        drop(eventloop);
        tokio::time::sleep(wait).await;
    }
}

/// The wait before the next attempt: the profile's own for an expected failure (AWS JITP's
/// first drop), otherwise the backoff, but never less than what the server asked for.
pub fn wait_after(d: &Diagnosis, backoff: &mut Backoff) -> Duration {
    match (d.kind, d.retry_after) {
        (FailureKind::Expected, Some(w)) => w,
        (_, Some(w)) => backoff.next_delay().max(w),
        (_, None) => backoff.next_delay(),
    }
}
