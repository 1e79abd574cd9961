//! Clock faults: the Pi has no RTC, so it boots in 1970 until time sync jumps the clock to now.
//! The agent's clock is moved through its test-only offset file, never the machine's.

use std::time::Duration;

use autoprov_tests::faults::{ClockOffset, Figures};

use super::{agent_logs, device, finish, progresses, tail};

/// 1970-01-01T01:00:00Z: where a board without an RTC starts.
const BOOT_1970: i64 = 3600;

#[test]
fn a_1970_clock_is_reported_retried_after_time_sync_and_timestamps_never_go_back() {
    let dev = device(None, "");
    let clock = ClockOffset::new(dev.env.path(), ClockOffset::to_reach(BOOT_1970));
    let with_clock = |c: &mut std::process::Command| {
        c.env(ClockOffset::ENV, clock.path());
    };

    // `check` before time sync names the clock as the problem.
    let mut check = dev.env.command(&["check"]);
    with_clock(&mut check);
    let out = check.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("FAIL")
            && l.contains("clock plausible")
            && l.contains("1970-01-01")
            && l.contains("no RTC")),
        "{stdout}"
    );

    // First boot: the server's certificate is "not valid yet" by this clock; the agent says why,
    // keeps measuring into the spool and keeps trying.
    let mut agent = dev.env.spawn_with(with_clock);
    assert!(
        agent.wait_for_log("NotValidYet", Duration::from_secs(10)),
        "{}",
        agent.log()
    );
    assert!(agent.wait_for_log("(attempt 3)", Duration::from_secs(10)));
    assert!(agent.log().contains("the clock reads 1970-01-01"));
    assert!(dev.sub.seqs().is_empty());
    // Time sync: the clock jumps to now; the next attempt connects and the 1970 readings follow.
    clock.set(0);
    assert!(
        progresses(&dev.sub, 20, Duration::from_secs(20)),
        "no readings after the clock jump:\n{}",
        tail(&agent.log(), 40)
    );
    assert!(agent.is_running());

    // A reboot without an RTC: 1970 again, after readings stamped with the real time were sent.
    agent.kill9();
    clock.set(ClockOffset::to_reach(BOOT_1970));
    let mut agent = dev.env.spawn_with(with_clock);
    assert!(agent.wait_for_log("before the last reading's time", Duration::from_secs(10)));
    std::thread::sleep(Duration::from_secs(1));
    clock.set(0);
    assert!(agent.wait_for_log("the clock has caught up", Duration::from_secs(10)));
    assert!(progresses(&dev.sub, 20, Duration::from_secs(20)));

    let mut check = dev.env.command(&["check"]);
    with_clock(&mut check);
    let out = check.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && stdout
                .lines()
                .any(|l| l.starts_with("ok") && l.contains("clock plausible")),
        "{stdout}"
    );

    let mut fig = Figures {
        scenario: "clock".into(),
        faults: "boot at 1970, jump to now; reboot at 1970, jump to now".into(),
        injected: 4,
        ..Figures::default()
    };
    finish(&dev, &mut agent, &mut fig);

    // In seq order, timestamps never go back.
    let mut by_seq: Vec<(u64, String)> = dev
        .sub
        .messages()
        .iter()
        .filter_map(|(_, v)| Some((v["seq"].as_u64()?, v["ts"].as_str()?.to_owned())))
        .collect();
    by_seq.sort();
    by_seq.dedup();
    let backwards: Vec<_> = by_seq
        .windows(2)
        .filter(|w| w[1].1 < w[0].1)
        .map(|w| format!("seq {} {} after seq {} {}", w[1].0, w[1].1, w[0].0, w[0].1))
        .collect();
    assert!(
        backwards.is_empty(),
        "{}\n{}",
        backwards.join("\n"),
        tail(&agent_logs(&dev.env), 40)
    );
    // The first boot's readings honestly carry the clock they were taken by.
    assert!(by_seq[0].1.starts_with("1970-01-01"), "{:?}", by_seq[0]);
    assert!(
        by_seq.last().is_some_and(|(_, ts)| !ts.starts_with("1970")),
        "{:?}",
        by_seq.last()
    );
}
