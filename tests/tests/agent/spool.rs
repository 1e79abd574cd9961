use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use autoprov_tests::agent::AgentProcess;
use autoprov_tests::wait_until;

use super::{Setup, assert_contiguous_from_one, setup};

/// Runs the agent with the broker down for `run_for` and at least until a reading is spooled
/// (a loaded machine may take longer than `run_for` to start it), then stops it with SIGTERM.
fn spool_offline(s: &mut Setup, run_for: Duration) -> String {
    s.broker.stop();
    let mut agent = s.env.spawn();
    std::thread::sleep(run_for);
    let spooled = wait_until(Duration::from_secs(30), || {
        segments(s)
            .iter()
            .any(|p| fs::metadata(p).is_ok_and(|m| m.len() > 0))
    });
    assert!(spooled, "nothing was spooled:\n{}", agent.log());
    let status = agent.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", agent.log());
    agent.log()
}

/// Starts the agent and waits up to `secs` for its log to say `needle`.
fn spawn_until(s: &Setup, needle: &str, secs: u64) -> AgentProcess {
    let agent = s.env.spawn();
    assert!(
        agent.wait_for_log(needle, Duration::from_secs(secs)),
        "{}",
        agent.log()
    );
    agent
}

/// A drop-in bounding the spool to `max_size`, with a reading every `interval`.
fn spool_bound(s: &Setup, max_size: &str, interval: &str) {
    s.env.dropin(
        "50-small.toml",
        &format!("[spool]\nmax_size = \"{max_size}\"\n[sensor]\ninterval = \"{interval}\"\n"),
    );
}

fn segments(s: &Setup) -> Vec<PathBuf> {
    // None yet before the agent has made the directory.
    let mut v: Vec<PathBuf> = fs::read_dir(s.env.state().join("spool"))
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn restart_with_a_backlog_delivers_every_reading() {
    let mut s = setup("");
    spool_offline(&mut s, Duration::from_millis(1500));
    assert!(s.sub.seqs().is_empty());
    s.broker.start_again();
    let mut agent = spawn_until(&s, "sending", 10);
    assert!(wait_until(Duration::from_secs(20), || s.sub.seqs().len() >= 40));
    agent.terminate(Duration::from_secs(10));
    assert_contiguous_from_one(&s.sub.seqs(), &agent.log());
}

#[test]
fn torn_tail_is_truncated_counted_and_the_rest_delivered() {
    let mut s = setup("");
    spool_offline(&mut s, Duration::from_millis(1000));
    let newest = segments(&s).pop().expect("a segment");
    // Half a record, as a power cut in the middle of a write leaves it.
    fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap()
        .write_all(&[0x80, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3])
        .unwrap();
    s.broker.start_again();
    let mut agent = spawn_until(&s, "torn or corrupt", 10);
    assert!(wait_until(Duration::from_secs(20), || s.sub.seqs().len() >= 30));
    agent.terminate(Duration::from_secs(10));
    assert!(
        agent
            .log()
            .contains("1 torn or corrupt tail(s) truncated (11 bytes)")
    );
    assert_contiguous_from_one(&s.sub.seqs(), &agent.log());
}

#[test]
fn full_spool_drops_the_oldest_and_counts_them() {
    let mut s = setup("");
    spool_bound(&s, "64KiB", "2ms");
    s.broker.stop();
    // How long filling 64 KiB takes depends on the disk's fsync and the machine's load: wait
    // for the spool to say it is full, not for a time.
    let mut agent = spawn_until(&s, "spool full", 60);
    let status = agent.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", agent.log());
    let log = agent.log();
    let size: u64 = segments(&s)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert!(size <= 64 * 1024, "spool is {size} bytes");
    let dropped = dropped_so_far(&log);
    assert!(dropped > 0, "{log}");
    // Drain under a bound the backlog cannot reach again, so the readings taken meanwhile drop
    // nothing more (at 64 KiB a loaded machine may rightly drop the oldest while they go out).
    spool_bound(&s, "1MiB", "100ms");
    s.broker.start_again();
    let mut agent = spawn_until(&s, "next seq", 30);
    let last_spooled = next_seq(&agent.log()) - 1;
    let all_out = wait_until(Duration::from_secs(60), || {
        s.sub.seqs().last().is_some_and(|&max| max >= last_spooled)
    });
    agent.terminate(Duration::from_secs(10));
    assert!(all_out, "seq {last_spooled} never arrived\n{}", agent.log());
    assert!(!agent.log().contains("spool full"), "{}", agent.log());
    let seqs = s.sub.seqs();
    // Exactly the oldest readings were dropped, every one of them counted, and what is left
    // arrives without holes.
    assert_eq!(
        seqs[0],
        dropped + 1,
        "the first reading delivered is not the first one not dropped: {:?}\n{log}",
        &seqs[..5.min(seqs.len())]
    );
    let tail: Vec<u64> = seqs.iter().map(|x| x - seqs[0] + 1).collect();
    assert_contiguous_from_one(&tail, &agent.log());
}

/// The running count of dropped readings in the last "spool full" line of an agent's log.
fn dropped_so_far(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("spool full"))
        .filter_map(|l| {
            let (_, tail) = l.rsplit_once('(')?;
            tail.strip_suffix(" dropped so far)")?.parse().ok()
        })
        .next_back()
        .unwrap_or_else(|| panic!("no dropped count in the log:\n{log}"))
}

/// The next seq an agent announced on start ("…, next seq N").
fn next_seq(log: &str) -> u64 {
    log.lines()
        .find_map(|l| l.split_once("next seq ")?.1.trim().parse().ok())
        .unwrap_or_else(|| panic!("no next seq in the log:\n{log}"))
}
