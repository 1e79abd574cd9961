//! Disk faults: the spool on a tiny tmpfs that fills up and then gets space back, and a state
//! directory that cannot be written at all.

use std::fs;
use std::time::Duration;

use autoprov_tests::faults::{self, Figures, Form, Mount};
use autoprov_tests::wait_until;

use super::{agent_logs, device, finish, progresses, tail};

const TMPFS_KIB: u64 = 512;

fn disk_fulls(log: &str) -> usize {
    log.matches("disk full under spool").count()
}

#[test]
fn full_disk_drops_the_oldest_counts_them_and_recovers_when_space_returns() {
    let scenario = "disk full";
    if !faults::is_root() {
        faults::skip(scenario, "mounting a tmpfs needs root (CI runs as root)");
        return;
    }
    let form = Form::from_env();
    let mut dev = device(None, "");
    // The whole state directory on the tiny file system, as /var/lib/autoprov shares the
    // card's root with everything else: credentials, seq, spool.
    let state = dev.env.state();
    let imported = dev.env.path().join("state.imported");
    fs::rename(&state, &imported).unwrap();
    let _tmpfs = Mount::tmpfs(&state, TMPFS_KIB).unwrap_or_else(|e| panic!("{e}"));
    let copy = std::process::Command::new("cp")
        .arg("-a")
        .arg(imported.join("."))
        .arg(&state)
        .status()
        .unwrap();
    assert!(copy.success());
    // Most of the file system is taken by something else; the spool's own bound (64 MiB by
    // default) is far away, so it is the disk that fills.
    let free_kib = form.pick(96, 160);
    let filler = state.join("filler");
    fs::write(&filler, vec![0u8; ((TMPFS_KIB - free_kib) * 1024) as usize]).unwrap();
    dev.env
        .dropin("50-fast.toml", "[sensor]\ninterval = \"5ms\"\n");
    dev.broker.stop();
    let mut agent = dev.env.spawn();
    let fills = form.pick(3, 12);
    let filled = wait_until(Duration::from_secs(60), || {
        disk_fulls(&agent.log()) >= fills
    });
    assert!(filled, "the disk never filled:\n{}", tail(&agent.log(), 40));
    assert!(agent.is_running(), "a full disk stopped the agent");
    // A restart on a disk full to the last byte (a crash, the watchdog, a reboot): it starts
    // and goes on.
    agent.kill9();
    let last_byte = state.join("filler-2");
    {
        use std::io::Write;
        let mut f = fs::File::create(&last_byte).unwrap();
        while f.write_all(&[0u8; 4096]).is_ok() {}
    }
    let mut agent = dev.env.spawn();
    let before = disk_fulls(&agent_logs(&dev.env));
    assert!(
        wait_until(Duration::from_secs(30), || {
            disk_fulls(&agent_logs(&dev.env)) > before
        }),
        "no progress after a restart on a full disk:\n{}",
        tail(&agent.log(), 40)
    );
    assert!(
        agent.is_running(),
        "the agent does not start on a full disk:\n{}",
        tail(&agent.log(), 40)
    );

    // Space returns: no more drops, the spool grows past what fitted before.
    fs::remove_file(&filler).unwrap();
    fs::remove_file(&last_byte).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let drops = disk_fulls(&agent_logs(&dev.env));
    std::thread::sleep(Duration::from_secs(2));
    let log = agent.log();
    assert_eq!(
        disk_fulls(&agent_logs(&dev.env)),
        drops,
        "still dropping with space back:\n{}",
        tail(&log, 40)
    );
    assert!(agent.is_running());
    dev.broker.start_again();
    assert!(
        progresses(&dev.sub, 50, Duration::from_secs(60)),
        "nothing delivered after the disk recovered:\n{}",
        tail(&agent.log(), 40)
    );
    let mut fig = Figures {
        scenario: scenario.into(),
        faults: format!(
            "state directory on a {TMPFS_KIB} KiB tmpfs with {free_kib} KiB free, broker down, 5 ms readings; a SIGKILL and restart on the disk full to the last byte; then space back"
        ),
        injected: 2,
        notes: format!(
            "the disk filled {drops} times; each time the oldest segment was dropped and counted"
        ),
        ..Figures::default()
    };
    finish(&dev, &mut agent, &mut fig);
    let logs = agent_logs(&dev.env);
    assert!(fig.dropped_counted > 0, "nothing was dropped");
    // What was dropped is what the log says, and the rest arrived: the two never overlap.
    let seqs = dev.sub.seqs();
    for line in logs.lines().filter(|l| l.contains(": dropped ")) {
        let range = line
            .split_once(", seq ")
            .and_then(|(_, r)| r.split_whitespace().next())
            .and_then(|r| r.split_once("..="))
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
            .unwrap_or_else(|| panic!("no seq range in {line:?}"));
        assert!(
            !seqs.iter().any(|s| (range.0..=range.1).contains(s)),
            "seq {range:?} was counted dropped but arrived"
        );
    }
    assert!(
        !logs.contains("could not be spooled and is lost"),
        "a reading was lost instead of the oldest being dropped:\n{}",
        tail(&logs, 40)
    );
}

#[test]
fn read_only_state_directory_exits_1_with_a_clear_error() {
    let scenario = "read-only state directory";
    if !faults::is_root() {
        faults::skip(
            scenario,
            "a read-only bind mount needs root (as root, file modes do not stop writes)",
        );
        return;
    }
    let dev = device(None, "");
    let _ro = Mount::read_only(&dev.env.state()).unwrap_or_else(|e| panic!("{e}"));
    let mut agent = dev.env.spawn();
    assert!(
        wait_until(Duration::from_secs(10), || !agent.is_running()),
        "the agent kept running on a read-only state directory:\n{}",
        agent.log()
    );
    let out = dev.env.command(&["run"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 1, a runtime failure: systemd's Restart=always brings it back once the disk is fixed.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Read-only file system")
            && stderr.contains("must be writable")
            && stderr.contains(&dev.env.state().display().to_string()),
        "{stderr}"
    );
    let unit = include_str!("../../../agent/systemd/autoprov-agent.service");
    assert!(unit.lines().any(|l| l == "Restart=always"), "{unit}");
    let fig = Figures {
        scenario: scenario.into(),
        faults: "state directory bind-mounted read-only".into(),
        injected: 1,
        notes: "exit 1 naming the directory; systemd restarts it".into(),
        ..Figures::default()
    };
    fig.print();
    drop(agent);
}
