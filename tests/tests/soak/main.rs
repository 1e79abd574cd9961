//! The fault soak: the agent and the operator tool under network partitions, SIGKILLs, a full
//! or read-only disk, a clock that starts in 1970, and kills of `autoprov` half-way through.
//! Every scenario checks that nothing is lost (every `seq` arrives, or was dropped and counted),
//! and prints its figures (`SOAK-FIGURES` lines, collected by `scripts/soak` for the README).
//!
//! Short form with every test run; `AUTOPROV_SOAK=long` (`scripts/soak`) for the long one.
//! Scenarios that need root (namespaces, mounts) say SKIPPED loudly without it.

mod clock;
mod disk;
mod operator;
mod partition;
mod process;

use std::time::Duration;

use autoprov_tests::agent::{AgentEnv, AgentProcess};
use autoprov_tests::faults::{self, Figures};
use autoprov_tests::mosquitto::{BrokerOptions, Mosquitto, OBSERVER, Subscriber};
use autoprov_tests::netns::{self, BROKER_ADDR};
use autoprov_tests::pki::TestPki;
use autoprov_tests::wait_until;

pub const DEVICE: &str = "sensor-042";

/// A fleet CA, a broker, a subscriber to `dt/#` and a device with its bundle imported.
pub struct Device {
    pub pki: TestPki,
    pub broker: Mosquitto,
    pub sub: Subscriber,
    pub env: AgentEnv,
}

/// Sets up a device; with `link`, the broker and subscriber run in its broker namespace and the
/// agent in its device namespace. `extra` is appended to `agent.toml` (inside `[mqtt]`).
pub fn device(link: Option<&netns::Link>, extra: &str) -> Device {
    let mut pki = TestPki::new("Soak Fleet");
    let server = pki.server_with_ips(&[BROKER_ADDR.into()]);
    let broker = Mosquitto::start(
        &server,
        &BrokerOptions {
            // Every queued message is saved at once, so a broker SIGKILL loses nothing it
            // acknowledged for the subscriber: what the soak measures is the agent.
            extra_conf: "autosave_on_changes true\n".into(),
            netns: link.map(|l| (l.broker_ns().to_owned(), BROKER_ADDR.into())),
            ..BrokerOptions::with_observer()
        },
    );
    let sub = Subscriber::start(&broker, &pki.device(OBSERVER, Default::default()), "dt/#");
    let mut env = AgentEnv::new();
    if let Some(l) = link {
        env.set_netns(l.device_ns());
    }
    env.flash(&pki.device(DEVICE, Default::default()));
    let out = env.import(&[]);
    assert!(out.status.success(), "import: {out:?}");
    env.configure(Some(&broker), extra);
    Device {
        pki,
        broker,
        sub,
        env,
    }
}

/// Every `seq` the subscriber received, duplicates included.
pub fn received(sub: &Subscriber) -> Vec<u64> {
    sub.messages()
        .iter()
        .filter_map(|(_, v)| v["seq"].as_u64())
        .collect()
}

/// Waits until the subscriber's newest seq is `by` beyond what it was: the device publishes.
pub fn progresses(sub: &Subscriber, by: u64, timeout: Duration) -> bool {
    let start = sub.seqs().last().copied().unwrap_or(0);
    wait_until(timeout, || {
        sub.seqs().last().is_some_and(|m| *m >= start + by)
    })
}

/// The logs of every agent run so far in `env`'s directory, in order.
pub fn agent_logs(env: &AgentEnv) -> String {
    // `agent-<n>.log`, n growing with each run.
    let mut logs: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(env.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let n = p
                .file_name()?
                .to_str()?
                .strip_prefix("agent-")?
                .strip_suffix(".log")?
                .parse()
                .ok()?;
            Some((n, p))
        })
        .collect();
    logs.sort();
    logs.iter()
        .map(|(_, p)| p)
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("")
}

/// Readings the agent said it dropped (spool or disk full), summed over its logs.
pub fn dropped_by_log(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(": dropped ")?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// Ends a scenario: stops `agent`, then runs the agent once more with a one-hour interval (one
/// more reading, then none) until everything spooled has arrived, and stops it. Fills `fig`'s
/// delivery figures and asserts that nothing is lost.
pub fn finish(dev: &Device, agent: &mut AgentProcess, fig: &mut Figures) {
    let status = agent.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status:?}\n{}", agent.log());
    let before = faults::last_seq(&dev.env.state());
    dev.env
        .dropin("99-drain.toml", "[sensor]\ninterval = \"1h\"\n");
    let mut drain = dev.env.spawn();
    let everything = |dev: &Device| {
        let seqs = dev.sub.seqs();
        let dropped = dropped_by_log(&agent_logs(&dev.env));
        seqs.last().is_some_and(|m| *m > before) && seqs.len() as u64 + dropped > before
    };
    let arrived = wait_until(Duration::from_secs(60), || everything(dev));
    let status = drain.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status:?}\n{}", drain.log());
    let _ = std::fs::remove_file(dev.env.path().join("conf.d/99-drain.toml"));
    // The subscriber writes what it receives a moment later.
    std::thread::sleep(Duration::from_millis(500));
    let logs = agent_logs(&dev.env);
    fig.delivery(
        faults::last_seq(&dev.env.state()),
        &received(&dev.sub),
        dropped_by_log(&logs),
    );
    fig.print();
    assert!(
        arrived && fig.lost == 0,
        "{} readings lost (drain finished: {arrived}); received {:?}\nbroker log:\n{}\nagent logs:\n{}",
        fig.lost,
        dev.sub.seqs(),
        dev.broker.log(),
        tail(&logs, 200)
    );
}

/// The last `n` lines of a log, for failure messages.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
