//! Benchmark of `autoprov-agent` against a local Mosquitto; prints its figures.
//!
//! `cargo bench -p autoprov-tests --bench agent [-- PHASE…]` (builds the release agent first).
//! Phases (all but `sweep` when none is named):
//! - `size`: the stripped release binary's size;
//! - `memory`: steady RSS (VmRSS), peak RSS (VmHWM), where the resident pages are (by mapping)
//!   and CPU time per 1,000 readings of `run` with the simulated sensor at a 10 ms interval,
//!   after a warm-up; with an aarch64 build (`AUTOPROV_AARCH64_BIN_DIR`, default
//!   `target/aarch64-unknown-linux-gnu/release` when `scripts/build-aarch64` has filled it) its
//!   binaries' sizes and the same steady state under `qemu-aarch64-static` (qemu-user's RSS
//!   includes its translated code: an upper bound, not what a Pi would show);
//! - `drain`: the durable drain of 100,000 spooled readings (messages per second until every one
//!   is acknowledged), side by side with two baselines publishing the same payloads with QoS 1
//!   over the same TLS configuration and no spool: bare rumqttc with its best settings (see
//!   `sweep`), and a pipelined client that writes a window of PUBLISH packets per TLS write
//!   (what the broker and TLS can take from one connection: the ceiling). Each is run
//!   [`ROUNDS`] times, interleaved, each against a fresh broker, and the median is reported: the
//!   machine is shared and loaded;
//! - `sweep`: bare rumqttc over window, TCP_NODELAY and request channel size, to find its best.
//!
//! Targets (issue 6): steady RSS ≤ 4 MiB, peak ≤ 6 MiB, binary ≤ 3 MiB, drain ≥ 50,000 msg/s.

use std::fs;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use autoprov_agent::config::FsyncPolicy;
use autoprov_agent::credentials::Credentials;
use autoprov_agent::reading::Reading;
use autoprov_agent::spool::{Spool, SpoolOptions};
use autoprov_agent::transport::{Endpoint, client_config};
use autoprov_bundle::Bundle;
use autoprov_tests::agent::AgentEnv;
use autoprov_tests::bins::Runner;
use autoprov_tests::mosquitto::{BrokerOptions, Mosquitto, OBSERVER, Subscriber};
use autoprov_tests::pki::{ServerTls, TestPki};
use autoprov_tests::procfs::{cpu_seconds, proc_status, rss_by_mapping};
use autoprov_tests::wait_until;

const DEVICE: &str = "sensor-007";
const BACKLOG: u64 = 100_000;
/// The agent's default `mqtt.in_flight`, and a larger window.
const WINDOWS: [u16; 2] = [64, 256];
/// Interleaved runs of each throughput measurement.
const ROUNDS: usize = 3;

/// Settings of the bare rumqttc baseline.
#[derive(Clone, Copy, Debug)]
struct BareSettings {
    /// `MqttOptions::set_inflight`.
    window: u16,
    /// TCP_NODELAY on the client socket.
    nodelay: bool,
    /// The request channel's capacity.
    channel: usize,
}

/// The best of `sweep` on this machine, the window aside (the comparisons use the agent's): the
/// window is what counts (64: 37,000-41,000 msg/s, 256: 52,000-58,000, 1000: 49,000-60,000);
/// TCP_NODELAY helps a little with larger windows, the request channel's size not measurably.
/// rumqttc writes and flushes every request on its own, one TLS record and one write(2) each.
const BARE_BEST: BareSettings = BareSettings {
    window: 64,
    nodelay: true,
    channel: 1024,
};

fn reading(seq: u64) -> Vec<u8> {
    Reading {
        device_id: DEVICE.into(),
        seq,
        ts: "2026-12-03T12:00:00Z".into(),
        temperature_c: 21.3,
        humidity_pct: 45.0,
    }
    .to_json()
}

fn main() {
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants =
        |phase: &str| named.iter().any(|a| a == phase) || (named.is_empty() && phase != "sweep");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "--release", "-p", "autoprov-agent"])
        .status()
        .expect("cargo build");
    assert!(built.success());
    let exe = std::env::current_exe().unwrap();
    let release = exe
        .ancestors()
        .find(|p| p.ends_with("release"))
        .expect("target/release");
    if wants("size") {
        println!("== binary");
        let size = fs::metadata(release.join("autoprov-agent")).unwrap().len();
        println!(
            "stripped release binary: {size} bytes = {:.2} MiB (target <= 3 MiB)",
            size as f64 / 1048576.0
        );
    }

    let mut pki = TestPki::new("Bench Fleet");
    let server = pki.server();
    let bundle = pki.device(DEVICE, Default::default());

    if wants("memory") {
        let broker = Mosquitto::start(&server, &BrokerOptions::with_observer());
        let observer = pki.device(OBSERVER, Default::default());
        steady_state(&broker, &observer, &bundle, Runner::Native, "native");
        if let Some(dir) = aarch64_dir(release) {
            println!("== aarch64 binaries ({})", dir.display());
            for name in ["autoprov", "autoprov-agent"] {
                let size = fs::metadata(dir.join(name)).map(|m| m.len()).unwrap_or(0);
                println!("{name}: {size} bytes = {:.2} MiB", size as f64 / 1048576.0);
            }
            steady_state(
                &broker,
                &observer,
                &bundle,
                Runner::Qemu(dir),
                "aarch64 under qemu-aarch64-static",
            );
        } else {
            println!(
                "== aarch64: SKIPPED (no build: run scripts/build-aarch64, or set AUTOPROV_AARCH64_BIN_DIR)"
            );
        }
    }
    if wants("sweep") {
        sweep(&server, &bundle);
    }
    if wants("drain") {
        throughput(&server, &bundle);
    }
}

/// Where an aarch64 build is: `AUTOPROV_AARCH64_BIN_DIR`, else the release cross-build.
fn aarch64_dir(release: &std::path::Path) -> Option<std::path::PathBuf> {
    if let Runner::Qemu(dir) = Runner::from_env() {
        return Some(dir);
    }
    let dir = release
        .parent()?
        .join("aarch64-unknown-linux-gnu")
        .join("release");
    dir.join("autoprov-agent").exists().then_some(dir)
}

fn device_env(bundle: &Bundle, broker: &Mosquitto, extra: &str, runner: Runner) -> AgentEnv {
    let env = AgentEnv::with_runner(runner);
    env.flash(bundle);
    let out = env.import(&[]);
    assert!(out.status.success(), "{out:?}");
    env.configure(Some(broker), extra);
    env
}

fn steady_state(
    broker: &Mosquitto,
    observer: &Bundle,
    bundle: &Bundle,
    runner: Runner,
    label: &str,
) {
    println!("== steady state ({label}): run, simulated sensor every 10 ms, local Mosquitto");
    let sub = Subscriber::start(broker, observer, "dt/#");
    let env = device_env(bundle, broker, "", runner);
    env.dropin("10-bench.toml", "[sensor]\ninterval = \"10ms\"\n");
    let mut agent = env.spawn_with(|c| {
        c.env("AUTOPROV_LOG", "info");
    });
    let pid = agent.pid();
    assert!(wait_until(Duration::from_secs(20), || sub.seqs().len() >= 200));
    let (c0, n0, t0) = (cpu_seconds(pid), sub.seqs().len(), Instant::now());
    let mut rss_max = 0;
    let mut rss_samples = Vec::new();
    while t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(500));
        let rss = proc_status(pid, "VmRSS:");
        rss_samples.push(rss);
        rss_max = rss_max.max(rss);
    }
    let (c1, n1) = (cpu_seconds(pid), sub.seqs().len());
    let hwm = proc_status(pid, "VmHWM:");
    let by_mapping = rss_by_mapping(pid);
    agent.terminate(Duration::from_secs(10));
    let readings = (n1 - n0) as f64;
    rss_samples.sort_unstable();
    println!(
        "readings in window: {readings:.0} over {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    println!(
        "steady RSS: median {} KiB, max {rss_max} KiB ({:.2} MiB; target <= 4 MiB)",
        rss_samples[rss_samples.len() / 2],
        rss_max as f64 / 1024.0
    );
    println!(
        "peak RSS (VmHWM): {hwm} KiB ({:.2} MiB; target <= 6 MiB)",
        hwm as f64 / 1024.0
    );
    let line: Vec<String> = by_mapping
        .iter()
        .map(|(name, kib)| format!("{name} {kib}"))
        .collect();
    println!("resident KiB by mapping at the end: {}", line.join(", "));
    println!(
        "CPU: {:.3}s per 1,000 readings (user+system, fsync per reading)",
        (c1 - c0) / readings * 1000.0
    );
}

/// The drain and its baselines, interleaved, [`ROUNDS`] times, at the agent's default window and
/// at a larger one; prints each run and the medians.
fn throughput(server: &ServerTls, bundle: &Bundle) {
    println!(
        "== durable drain of {BACKLOG} spooled readings beside the baselines, windows {WINDOWS:?}, {ROUNDS} rounds, a fresh broker each"
    );
    let fresh = || Mosquitto::start(server, &BrokerOptions::default());
    let mut runs = vec![(Vec::new(), Vec::new(), Vec::new()); WINDOWS.len()];
    for round in 1..=ROUNDS {
        for (&window, (agent, bare, raw)) in WINDOWS.iter().zip(&mut runs) {
            println!("-- round {round}, window {window}");
            agent.push(drain(&fresh(), bundle, window));
            let settings = BareSettings {
                window,
                ..BARE_BEST
            };
            bare.push(bare_rumqttc(&fresh(), bundle, settings));
            raw.push(pipelined(&fresh(), bundle, window));
        }
    }
    println!("== summary (medians of {ROUNDS}; target >= 50000)");
    for (&window, (agent, bare, raw)) in WINDOWS.iter().zip(runs) {
        let (agent, bare, raw) = (median(agent), median(bare), median(raw));
        println!(
            "window {window}: durable drain {agent:.0} msg/s; bare rumqttc {bare:.0} msg/s ({:.0}% of it); pipelined ceiling {raw:.0} msg/s ({:.0}% of it)",
            100.0 * agent / bare,
            100.0 * agent / raw,
        );
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn drain(broker: &Mosquitto, bundle: &Bundle, window: u16) -> f64 {
    let env = device_env(bundle, broker, "", Runner::Native);
    env.dropin(
        "10-bench.toml",
        &format!("[sensor]\ninterval = \"1h\"\n[mqtt]\nin_flight = {window}\n"),
    );
    {
        let mut spool = Spool::open(
            &env.state().join("spool"),
            SpoolOptions {
                max_size: 64 << 20,
                fsync: FsyncPolicy::Batch(Duration::from_secs(3600)),
            },
        )
        .unwrap();
        for seq in 1..=BACKLOG {
            spool.append(seq, &reading(seq)).unwrap();
        }
        spool.sync().unwrap();
    }
    let started = Instant::now();
    let mut agent = env.spawn_with(|c| {
        c.env("AUTOPROV_LOG", "info");
    });
    let pid = agent.pid();
    let mut hwm = 0;
    let done = wait_until(Duration::from_secs(120), || {
        hwm = hwm.max(proc_status(pid, "VmHWM:"));
        agent.log().contains("spool drained")
    });
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid);
    agent.terminate(Duration::from_secs(10));
    assert!(done, "the backlog did not drain:\n{}", agent.log());
    let log = agent.log();
    let line = log.lines().find(|l| l.contains("spool drained")).unwrap();
    let rate: f64 = line
        .rsplit_once('(')
        .and_then(|(_, r)| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    println!(
        "agent: {}; {wall:.3}s from process start (spool scan + TLS connect + drain); CPU {cpu:.2}s; peak RSS {hwm} KiB",
        line.split("INFO").nth(1).map(str::trim).unwrap_or(line)
    );
    rate
}

fn tls_config(broker: &Mosquitto, bundle: &Bundle) -> Arc<rustls::ClientConfig> {
    let creds = Credentials::from_pem(
        bundle.device_crt(),
        "device.crt".as_ref(),
        bundle.device_key(),
        "device.key".as_ref(),
        bundle.ca_crt(),
        "ca.crt".as_ref(),
    )
    .unwrap();
    let ep = Endpoint {
        host: "localhost".into(),
        port: broker.port(),
        client_id: DEVICE.into(),
        username: None,
        alpn: Vec::new(),
        keep_alive: Duration::from_secs(60),
        clean_session: true,
        server_roots: creds.ca.clone(),
        roots_file: "ca.crt".into(),
        max_packet: 64 * 1024,
    };
    client_config(&ep, &creds).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Bare rumqttc + rustls: every payload queued at once, PUBACKs counted from CONNACK on.
fn bare_rumqttc(broker: &Mosquitto, bundle: &Bundle, s: BareSettings) -> f64 {
    use rumqttc::{
        AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS, TlsConfiguration, Transport,
    };
    let tls = tls_config(broker, bundle);
    let rate = runtime().block_on(async move {
        // The broker's ACL lets a device publish under dt/<its CN>/ only: use the device's CN.
        let mut o = MqttOptions::new(DEVICE, "localhost", broker.port());
        o.set_inflight(s.window)
            .set_request_channel_capacity(s.channel)
            .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        let (client, mut el) = AsyncClient::new(o, s.channel);
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(s.nodelay);
        el.set_network_options(net);
        let topic = format!("dt/{DEVICE}/telemetry");
        let payloads: Vec<Vec<u8>> = (1..=BACKLOG).map(reading).collect();
        let publisher = tokio::spawn(async move {
            for p in payloads {
                client
                    .publish(&topic, QoS::AtLeastOnce, false, p)
                    .await
                    .unwrap();
            }
            client
        });
        let mut acked = 0u64;
        let mut started = None;
        while acked < BACKLOG {
            match el.poll().await.unwrap() {
                Event::Incoming(Packet::ConnAck(_)) => started = Some(Instant::now()),
                Event::Incoming(Packet::PubAck(_)) => acked += 1,
                _ => {}
            }
        }
        let secs = started.unwrap().elapsed().as_secs_f64();
        let _client = publisher.await;
        BACKLOG as f64 / secs
    });
    println!("bare rumqttc {s:?}: {rate:.0} msg/s");
    rate
}

/// What the broker and TLS can take from one connection: PUBLISH packets encoded with rumqttc's
/// own codec, written a window at a time (one TLS record and one write for up to `window`
/// messages), each acknowledged with QoS 1 before its packet id is used again.
fn pipelined(broker: &Mosquitto, bundle: &Bundle, window: u16) -> f64 {
    use bytes::BytesMut;
    use rumqttc::tokio_rustls::TlsConnector;
    use rumqttc::{Connect, Packet, Publish, QoS};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::Semaphore;

    const MAX: usize = 64 * 1024;
    let tls = tls_config(broker, bundle);
    let port = broker.port();
    let rate = runtime().block_on(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let stream = TlsConnector::from(tls).connect(name, tcp).await.unwrap();
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut out = BytesMut::new();
        Packet::Connect(Connect::new(DEVICE))
            .write(&mut out, MAX)
            .unwrap();
        wr.write_all(&out).await.unwrap();
        wr.flush().await.unwrap();
        let mut inb = BytesMut::with_capacity(16 * 1024);
        loop {
            match Packet::read(&mut inb, MAX) {
                Ok(Packet::ConnAck(_)) => break,
                Ok(p) => panic!("expected CONNACK, got {p:?}"),
                Err(_) => assert!(rd.read_buf(&mut inb).await.unwrap() > 0, "closed"),
            }
        }
        let started = Instant::now();
        let permits = Arc::new(Semaphore::new(usize::from(window)));
        let writer = {
            let permits = permits.clone();
            tokio::spawn(async move {
                let topic = format!("dt/{DEVICE}/telemetry");
                let mut out = BytesMut::with_capacity(64 * 1024);
                let mut seq = 0u64;
                while seq < BACKLOG {
                    permits.acquire().await.unwrap().forget();
                    let mut n = 1;
                    while permits.try_acquire().map(|p| p.forget()).is_ok() {
                        n += 1;
                    }
                    out.clear();
                    for _ in 0..n.min((BACKLOG - seq) as usize) {
                        seq += 1;
                        let mut p = Publish::new(&topic, QoS::AtLeastOnce, reading(seq));
                        // At most `window` are unacknowledged, so ids cycling through 1..=65535
                        // are never reused while in flight.
                        p.pkid = (seq % 65535) as u16 + 1;
                        Packet::Publish(p).write(&mut out, MAX).unwrap();
                    }
                    wr.write_all(&out).await.unwrap();
                    wr.flush().await.unwrap();
                }
                wr
            })
        };
        let mut acked = 0u64;
        while acked < BACKLOG {
            match Packet::read(&mut inb, MAX) {
                Ok(Packet::PubAck(_)) => {
                    acked += 1;
                    permits.add_permits(1);
                }
                Ok(p) => panic!("unexpected {p:?}"),
                Err(_) => assert!(rd.read_buf(&mut inb).await.unwrap() > 0, "closed"),
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let _ = writer.await;
        BACKLOG as f64 / secs
    });
    println!("pipelined, window {window}: {rate:.0} msg/s");
    rate
}

/// Bare rumqttc over its settings: which of them make it fastest here.
fn sweep(server: &ServerTls, bundle: &Bundle) {
    println!("== bare rumqttc sweep (window, TCP_NODELAY, request channel), a fresh broker each");
    for window in [64, 256, 1000] {
        for nodelay in [false, true] {
            for channel in [64, 1024] {
                bare_rumqttc(
                    &Mosquitto::start(server, &BrokerOptions::default()),
                    bundle,
                    BareSettings {
                        window,
                        nodelay,
                        channel,
                    },
                );
            }
        }
    }
    for window in [64, 256, 1000] {
        pipelined(
            &Mosquitto::start(server, &BrokerOptions::default()),
            bundle,
            window,
        );
    }
}
