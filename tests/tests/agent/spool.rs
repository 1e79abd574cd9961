use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use autoprov_tests::wait_until;

use super::{Setup, assert_contiguous_from_one, setup};

/// Runs the agent with the broker down for `run_for`, then stops it with SIGTERM.
fn spool_offline(s: &mut Setup, run_for: Duration) -> String {
    s.broker.stop();
    let mut agent = s.env.spawn();
    std::thread::sleep(run_for);
    let status = agent.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", agent.log());
    agent.log()
}

fn segments(s: &Setup) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(s.env.state().join("spool"))
        .unwrap()
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
    let mut agent = s.env.spawn();
    assert!(
        agent.wait_for_log("sending", Duration::from_secs(10)),
        "{}",
        agent.log()
    );
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
    let mut agent = s.env.spawn();
    assert!(
        agent.wait_for_log("torn or corrupt", Duration::from_secs(10)),
        "{}",
        agent.log()
    );
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
    s.env.dropin(
        "50-small.toml",
        "[spool]\nmax_size = \"64KiB\"\n[sensor]\ninterval = \"2ms\"\n",
    );
    let log = spool_offline(&mut s, Duration::from_millis(3000));
    assert!(log.contains("spool full"), "{log}");
    let size: u64 = segments(&s)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert!(size <= 64 * 1024, "spool is {size} bytes");
    // Drain at a pace the spool can keep up with: at 2 ms a reading a loaded machine fills it
    // faster than it drains, and the spool rightly keeps dropping while the backlog goes out.
    s.env.dropin(
        "50-small.toml",
        "[spool]\nmax_size = \"64KiB\"\n[sensor]\ninterval = \"100ms\"\n",
    );
    s.broker.start_again();
    let mut agent = s.env.spawn();
    assert!(wait_until(Duration::from_secs(20), || s.sub.seqs().len() >= 400));
    agent.terminate(Duration::from_secs(10));
    let seqs = s.sub.seqs();
    // The oldest readings were dropped; what is left arrives without holes.
    assert!(seqs[0] > 1, "nothing was dropped: {:?}", &seqs[..5]);
    let tail: Vec<u64> = seqs.iter().map(|x| x - seqs[0] + 1).collect();
    assert_contiguous_from_one(&tail, &agent.log());
}
