//! `autoprov-agent run`: sensor → spool → MQTT, until SIGTERM.
//!
//! One thread reads the sensor on its interval and hands good measurements to the run loop.
//! The run loop (a single-threaded tokio runtime) numbers each measurement, appends it to the
//! spool, and keeps up to `in_flight` spooled records published and awaiting their PUBACK; a
//! record leaves the spool only when acknowledged. The link task connects and reconnects. On
//! SIGTERM the loop stops reading, waits briefly for in-flight acknowledgements and exits 0.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, QoS};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::clock::{NonDecreasing, parse_rfc3339, rfc3339, unix_now};
use crate::config::{Config, ConfigError};
use crate::credentials::{Credentials, CredentialsError};
use crate::memory;
use crate::notify::{Notifier, watchdog_interval};
use crate::reading::Reading;
use crate::sensor::{self, Measurement, Sampler, SamplerStats, SensorError};
use crate::seq::{SeqAllocator, SeqError};
use crate::spool::{Spool, SpoolError, SpoolOptions};
use crate::transport::backoff::Backoff;
use crate::transport::link::{self, LinkEvent, LinkOptions};
use crate::transport::{Profile, TransportError, client_config};

/// Name of the spool directory in the state directory.
pub const SPOOL_DIR: &str = "spool";
/// How long SIGTERM waits for outstanding PUBACKs.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How often the seq floor is written while running.
const SEQ_PERSIST_EVERY: u64 = 1000;

/// Why `run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Credentials.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// Transport setup.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The spool.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The seq file.
    #[error(transparent)]
    Seq(#[from] SeqError),
    /// The sensor could not be opened.
    #[error(transparent)]
    Sensor(#[from] SensorError),
    /// The runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

impl RunError {
    /// Whether the operator's configuration is at fault (exit code 2).
    pub fn is_config(&self) -> bool {
        match self {
            Self::Config(_) => true,
            Self::Transport(t) => t.is_config(),
            _ => false,
        }
    }
}

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(config: &Config) -> Result<(), RunError> {
    start(config, || {
        let mut sigterm = signal(SignalKind::terminate()).map_err(RunError::Runtime)?;
        let mut sigint = signal(SignalKind::interrupt()).map_err(RunError::Runtime)?;
        Ok(async move {
            tokio::select! {
                _ = sigterm.recv() => {}
                _ = sigint.recv() => {}
            }
        })
    })
}

/// Runs the agent until `shutdown` completes, then stops as on SIGTERM. Installs no signal
/// handler, so several agents can run in one process (`autoprov demo`), each on its own thread.
pub fn run_until(config: &Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    start(config, || Ok(shutdown))
}

/// Checks and opens everything, then runs the loop on a current-thread runtime until the
/// future `shutdown` makes (inside the runtime, so it may register signal handlers) completes.
fn start<F: Future<Output = ()>>(
    config: &Config,
    shutdown: impl FnOnce() -> Result<F, RunError>,
) -> Result<(), RunError> {
    let device_id = config.require_device_id()?.clone();
    memory::one_arena();
    let creds = Credentials::load(&config.state_dir)?;
    creds.check_key_matches()?;
    let leaf = creds.leaf_info();
    if leaf.common_name.as_deref() != Some(device_id.as_str()) {
        tracing::warn!(
            "the certificate's CN is {:?} but device.id is {device_id:?}: the broker will see the CN",
            leaf.common_name
        );
    }
    // Which certificate is in use, so a rotation can be seen in the log.
    tracing::info!(
        "{device_id}: certificate serial {}, valid until {}",
        leaf.serial,
        rfc3339(leaf.not_after)
    );
    let now = unix_now();
    if now < leaf.not_before {
        tracing::warn!(
            "the clock reads {}, before the certificate's start {}: the time is not set yet (the Pi has no RTC); TLS fails until time sync sets it, and readings are spooled meanwhile",
            rfc3339(now),
            rfc3339(leaf.not_before)
        );
    }
    let profile = Profile::from_config(config, &creds)?;
    let tls = client_config(profile.endpoint(), &creds)?;
    drop(creds);
    let sensor = sensor::open(&config.sensor)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(RunError::Runtime)?;
    let shutdown = {
        let _context = runtime.enter();
        shutdown()?
    };
    runtime.block_on(run_loop(
        config,
        device_id.to_string(),
        profile,
        tls,
        sensor,
        shutdown,
    ))
}

struct SensorFeed {
    rx: mpsc::Receiver<(i64, Measurement, SamplerStats)>,
    stop: Arc<AtomicBool>,
}

fn start_sensor(sensor: Box<dyn sensor::Sensor>, interval: Duration) -> SensorFeed {
    let (tx, rx) = mpsc::channel(64);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let body = move || {
        let mut sampler = Sampler::new(sensor);
        let mut next = Instant::now();
        while !flag.load(Ordering::Relaxed) {
            let deadline = next + interval;
            let got = sampler.sample(deadline, &|| flag.load(Ordering::Relaxed));
            if let Some(m) = got
                && tx.blocking_send((unix_now(), m, sampler.stats)).is_err()
            {
                return;
            }
            let now = Instant::now();
            // Behind by a whole interval (a slow read, a suspended board): skip, never burst.
            next = if now > deadline + interval {
                now
            } else {
                deadline
            };
            std::thread::sleep(next.saturating_duration_since(now));
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("sensor".into())
        .stack_size(128 * 1024)
        .spawn(body)
    {
        tracing::error!("cannot start the sensor thread: {e}");
    }
    SensorFeed { rx, stop }
}

/// In-flight bookkeeping: publishes queued to rumqttc, and packet ids to sequence numbers.
#[derive(Default)]
struct InFlight {
    queued: VecDeque<u64>,
    by_pkid: HashMap<u16, u64>,
}

impl InFlight {
    fn clear(&mut self) {
        self.queued.clear();
        self.by_pkid.clear();
    }
    fn len(&self) -> usize {
        self.queued.len() + self.by_pkid.len()
    }
}

struct Counters {
    /// When a backlog started draining, and how big it was.
    draining: Option<(Instant, u64)>,
    published: u64,
    acked: u64,
    lost_writes: u64,
    sampler: SamplerStats,
}

async fn run_loop(
    config: &Config,
    device_id: String,
    profile: Profile,
    tls: Arc<rustls::ClientConfig>,
    sensor: Box<dyn sensor::Sensor>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let spool_dir = config.state_dir.join(SPOOL_DIR);
    let mut spool = Spool::open(
        &spool_dir,
        SpoolOptions {
            max_size: config.spool.max_size,
            fsync: config.spool.fsync,
        },
    )?;
    let mut seq = SeqAllocator::open(&config.state_dir, spool.last_seq())?;
    let mut stamps = NonDecreasing::after(
        spool
            .newest_record()?
            .and_then(|r| serde_json::from_slice::<Reading>(&r.payload).ok())
            .and_then(|r| parse_rfc3339(&r.ts)),
    );
    tracing::info!(
        "spool {} open: {} unacknowledged readings, next seq {}",
        spool_dir.display(),
        spool.backlog(),
        seq.peek()
    );
    if spool.stats.corrupt > 0 {
        tracing::warn!(
            "spool: {} torn or corrupt tail(s) truncated ({} bytes) on start",
            spool.stats.corrupt,
            spool.stats.truncated_bytes
        );
    }
    let topic = profile.topic().to_owned();
    let target = format!("{}:{}", profile.endpoint().host, profile.endpoint().port);
    let window = usize::from(config.mqtt.in_flight);
    let (link_tx, mut link_rx) = mpsc::unbounded_channel();
    let link_task = tokio::spawn(link::run(
        profile,
        LinkOptions {
            tls,
            in_flight: config.mqtt.in_flight,
            backoff: Backoff::new(config.reconnect.base, config.reconnect.cap),
        },
        link_tx,
    ));
    let mut feed = start_sensor(sensor, config.sensor.interval);
    let notifier = Notifier::from_env();
    notifier.notify("READY=1");
    let tick_every = watchdog_interval()
        .unwrap_or(Duration::from_secs(1))
        .min(Duration::from_secs(1));
    let watchdog = watchdog_interval().is_some();
    let mut tick = tokio::time::interval(tick_every);
    let mut client: Option<AsyncClient> = None;
    let mut flight = InFlight::default();
    let mut counters = Counters {
        draining: None,
        published: 0,
        acked: 0,
        lost_writes: 0,
        sampler: SamplerStats::default(),
    };
    let mut last_status = String::new();
    let mut since_seq_persist = 0u64;
    let mut bookkeeping = Bookkeeping::default();
    loop {
        if let Some(c) = &client {
            feed_publishes(c, &topic, &mut spool, &mut flight, window, &mut counters)?;
        }
        let sync_at = spool.sync_due().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = &mut shutdown => break,
            Some(ev) = link_rx.recv() => {
                handle_link_event(ev, &mut client, &mut spool, &mut flight, &mut counters)?;
                // A draining backlog brings an event per publish and per PUBACK: take all that
                // are waiting before going round the select again (and refilling the window).
                while let Ok(ev) = link_rx.try_recv() {
                    handle_link_event(ev, &mut client, &mut spool, &mut flight, &mut counters)?;
                }
            }
            Some((ts, m, stats)) = feed.rx.recv() => {
                counters.sampler = stats;
                let reading = Reading {
                    device_id: device_id.clone(),
                    seq: seq.take(),
                    ts: rfc3339(stamps.stamp(ts)),
                    temperature_c: m.temperature_c,
                    humidity_pct: m.humidity_pct,
                };
                if let Err(e) = spool.append(reading.seq, &reading.to_json()) {
                    // The sequence number stays used, so consumers see the gap.
                    counters.lost_writes += 1;
                    tracing::error!(
                        "reading seq {} could not be spooled and is lost ({} so far): {e}",
                        reading.seq,
                        counters.lost_writes
                    );
                }
                since_seq_persist += 1;
                if since_seq_persist >= SEQ_PERSIST_EVERY {
                    since_seq_persist = 0;
                    // The spool's newest segment holds the floor too: a full disk is not fatal.
                    if let Err(e) = seq.persist() {
                        bookkeeping.failed("the seq floor", &e);
                    }
                }
            }
            _ = sleep_until_opt(sync_at), if sync_at.is_some() => spool.sync()?,
            _ = tick.tick() => {
                if watchdog {
                    notifier.notify("WATCHDOG=1");
                }
                match spool.persist_acked() {
                    Ok(()) => bookkeeping.ok(),
                    Err(e) => bookkeeping.failed("the acknowledged position", &e),
                }
                let status = format!(
                    "STATUS={}; next seq {}; backlog {}; dropped {}; failed reads {}",
                    if client.is_some() { format!("connected to {target}") } else { format!("connecting to {target}") },
                    seq.peek(),
                    spool.backlog(),
                    spool.stats.dropped,
                    counters.sampler.failed_reads + counters.sampler.out_of_range,
                );
                if status != last_status {
                    notifier.notify(&status);
                    last_status = status;
                }
            }
        }
    }
    notifier.notify("STOPPING=1");
    tracing::info!(
        "stopping: waiting up to {}s for {} acknowledgements",
        SHUTDOWN_GRACE.as_secs(),
        flight.len()
    );
    feed.stop.store(true, Ordering::Relaxed);
    drop(feed);
    spool.sync()?;
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while client.is_some() && flight.len() > 0 {
        match tokio::time::timeout_at(deadline, link_rx.recv()).await {
            Ok(Some(ev)) => {
                handle_link_event(ev, &mut client, &mut spool, &mut flight, &mut counters)?
            }
            _ => break,
        }
    }
    if let Some(c) = &client {
        let _ = c.try_disconnect();
        // Give the event loop a moment to send DISCONNECT.
        let _ = tokio::time::timeout(Duration::from_millis(200), link_rx.recv()).await;
    }
    link_task.abort();
    if let Err(e) = spool.persist_acked() {
        bookkeeping.failed("the acknowledged position", &e);
    }
    if let Err(e) = seq.persist() {
        bookkeeping.failed("the seq floor", &e);
    }
    tracing::info!(
        "stopped: {} published, {} acknowledged this run, {} left in the spool",
        counters.published,
        counters.acked,
        spool.backlog()
    );
    Ok(())
}

/// The small files written beside the spool (`acked`, `seq`) are bookkeeping: failing to write
/// them (a full disk) costs at most duplicates after a restart, so the agent goes on and says
/// so once, not every second.
#[derive(Default)]
struct Bookkeeping {
    failing: bool,
}

impl Bookkeeping {
    fn failed(&mut self, what: &str, e: &dyn std::fmt::Display) {
        if !self.failing {
            tracing::warn!(
                "cannot save {what}: {e}; going on (after a restart some readings may be sent twice)"
            );
            self.failing = true;
        }
    }

    fn ok(&mut self) {
        if self.failing {
            tracing::info!("bookkeeping files are written again");
            self.failing = false;
        }
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

fn feed_publishes(
    client: &AsyncClient,
    topic: &str,
    spool: &mut Spool,
    flight: &mut InFlight,
    window: usize,
    counters: &mut Counters,
) -> Result<(), RunError> {
    while flight.len() < window {
        let Some(rec) = spool.next_unsent()? else {
            break;
        };
        match client.try_publish(topic, QoS::AtLeastOnce, false, rec.payload.clone()) {
            Ok(()) => {
                flight.queued.push_back(rec.seq);
                counters.published += 1;
            }
            Err(_) => {
                // The link is going down; the record is sent again after the reconnect.
                spool.unread(rec);
                break;
            }
        }
    }
    Ok(())
}

fn handle_link_event(
    ev: LinkEvent,
    client: &mut Option<AsyncClient>,
    spool: &mut Spool,
    flight: &mut InFlight,
    counters: &mut Counters,
) -> Result<(), RunError> {
    match ev {
        LinkEvent::Up(c) => {
            *client = Some(c);
            flight.clear();
            spool.rewind();
            // Start-up and the TLS handshake are over: their memory is not needed again.
            memory::give_back();
            let backlog = spool.backlog();
            if backlog > 0 {
                tracing::info!("sending {backlog} spooled readings");
                counters.draining = Some((Instant::now(), backlog));
            }
        }
        LinkEvent::Sent(pkid) => {
            if let Some(seq) = flight.queued.pop_front() {
                flight.by_pkid.insert(pkid, seq);
            }
        }
        LinkEvent::Acked(pkid) => {
            if let Some(seq) = flight.by_pkid.remove(&pkid) {
                spool.ack(seq)?;
                counters.acked += 1;
                if let Some((since, n)) = counters.draining
                    && spool.backlog() == 0
                {
                    let secs = since.elapsed().as_secs_f64();
                    tracing::info!(
                        "spool drained: {n} readings acknowledged in {secs:.3}s ({:.0} msg/s)",
                        n as f64 / secs.max(1e-9)
                    );
                    counters.draining = None;
                    memory::give_back();
                }
            }
        }
        LinkEvent::Down => {
            counters.draining = None;
            *client = None;
            flight.clear();
            spool.rewind();
        }
    }
    Ok(())
}

/// The spool directory for a state directory.
pub fn spool_dir(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join(SPOOL_DIR)
}
