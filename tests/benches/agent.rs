//! Benchmark of `autoprov-agent` against a local Mosquitto; prints its figures.
//!
//! `cargo bench -p autoprov-tests --bench agent` (builds the release agent first). Measures:
//! 1. the stripped release binary's size;
//! 2. steady RSS (VmRSS), peak RSS (VmHWM) and CPU time per 1,000 readings of `run` with the
//!    simulated sensor at a 10 ms interval, after a warm-up;
//! 3. the durable drain of 100,000 spooled readings (messages per second until every one is
//!    acknowledged), beside bare rumqttc + rustls publishing the same payloads with the same
//!    window and no spool: the ceiling.
//!
//! 4. with an aarch64 build (`AUTOPROV_AARCH64_BIN_DIR`, default
//!    `target/aarch64-unknown-linux-gnu/release` when `scripts/build-aarch64` has filled it):
//!    its binaries' sizes, and the steady state of 2. again with that agent under
//!    `qemu-aarch64-static` (qemu-user's RSS includes its translated code: an upper bound, not
//!    what a Pi would show).
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
use autoprov_tests::agent::AgentEnv;
use autoprov_tests::bins::Runner;
use autoprov_tests::mosquitto::{BrokerOptions, Mosquitto, OBSERVER, Subscriber};
use autoprov_tests::pki::TestPki;
use autoprov_tests::procfs::{cpu_seconds, proc_status};
use autoprov_tests::wait_until;

const DEVICE: &str = "sensor-007";
const BACKLOG: u64 = 100_000;
const WINDOW: u16 = 64;

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
    let bin = release.join("autoprov-agent");
    println!("== binary");
    let size = fs::metadata(&bin).unwrap().len();
    println!(
        "stripped release binary: {size} bytes = {:.2} MiB (target <= 3 MiB)",
        size as f64 / 1048576.0
    );

    let mut pki = TestPki::new("Bench Fleet");
    let server = pki.server();
    let broker = Mosquitto::start(&server, &BrokerOptions::with_observer());
    let observer = pki.device(OBSERVER, Default::default());
    let bundle = pki.device(DEVICE, Default::default());

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
    let agent_rate = drain(&broker, &bundle, &bin);
    let bare_rate = bare_rumqttc(&broker, &bundle);
    println!("== summary");
    println!(
        "durable drain {agent_rate:.0} msg/s vs bare rumqttc {bare_rate:.0} msg/s ({:.0}% of the ceiling; target >= 50000)",
        100.0 * agent_rate / bare_rate
    );
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

fn device_env(
    bundle: &autoprov_bundle::Bundle,
    broker: &Mosquitto,
    extra: &str,
    runner: Runner,
) -> AgentEnv {
    let env = AgentEnv::with_runner(runner);
    env.flash(bundle);
    let out = env.import(&[]);
    assert!(out.status.success(), "{out:?}");
    env.configure(Some(broker), extra);
    env
}

fn steady_state(
    broker: &Mosquitto,
    observer: &autoprov_bundle::Bundle,
    bundle: &autoprov_bundle::Bundle,
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
    println!(
        "CPU: {:.3}s per 1,000 readings (user+system, fsync per reading)",
        (c1 - c0) / readings * 1000.0
    );
}

fn drain(broker: &Mosquitto, bundle: &autoprov_bundle::Bundle, _bin: &std::path::Path) -> f64 {
    println!("== durable drain of {BACKLOG} spooled readings (window {WINDOW})");
    let env = device_env(bundle, broker, "", Runner::Native);
    env.dropin("10-bench.toml", "[sensor]\ninterval = \"1h\"\n");
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
        println!("spool on disk: {} bytes", spool.size());
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
    agent.terminate(Duration::from_secs(10));
    assert!(done, "the backlog did not drain:\n{}", agent.log());
    let log = agent.log();
    let line = log.lines().find(|l| l.contains("spool drained")).unwrap();
    let rate: f64 = line
        .rsplit_once('(')
        .and_then(|(_, r)| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    println!(
        "agent: {}",
        line.split("INFO").nth(1).map(str::trim).unwrap_or(line)
    );
    println!(
        "wall time from process start (spool scan + TLS connect + drain): {wall:.3}s = {:.0} msg/s",
        BACKLOG as f64 / wall
    );
    println!(
        "peak RSS during the drain: {hwm} KiB ({:.2} MiB)",
        hwm as f64 / 1024.0
    );
    rate
}

fn bare_rumqttc(broker: &Mosquitto, bundle: &autoprov_bundle::Bundle) -> f64 {
    println!("== bare rumqttc + rustls, no spool, window {WINDOW} (the ceiling)");
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
        client_id: "bench-bare".into(),
        username: None,
        alpn: Vec::new(),
        keep_alive: Duration::from_secs(60),
        clean_session: true,
        server_roots: creds.ca.clone(),
        roots_file: "ca.crt".into(),
        max_packet: 64 * 1024,
    };
    let tls: Arc<rustls::ClientConfig> = client_config(&ep, &creds).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
        // The broker's ACL lets a device publish under dt/<its CN>/ only: use the device's CN.
        let mut o = MqttOptions::new(DEVICE, "localhost", broker.port());
        o.set_inflight(WINDOW)
            .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        let (client, mut el) = AsyncClient::new(o, 1024);
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
        let rate = BACKLOG as f64 / secs;
        println!("bare: {BACKLOG} acknowledged in {secs:.3}s ({rate:.0} msg/s)");
        rate
    })
}
