use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use super::setup;

#[test]
fn check_passes_on_a_working_device_and_fails_when_the_broker_is_gone() {
    let mut s = setup("");
    s.env.check_ok(&[
        "config",
        "credentials present",
        "key matches certificate",
        "chain verifies",
        "certificate valid",
        "clock plausible",
        "broker reachable",
    ]);
    s.broker.stop();
    let out = s.env.command(&["check"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains("broker reachable")),
        "{stdout}"
    );
}

#[test]
fn systemd_hears_ready_watchdog_status_and_stopping() {
    let s = setup("");
    let sock_path = s.env.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut agent = s.env.spawn_with(|c| {
        c.env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "400000");
    });
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    let end = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < end {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let status = agent.terminate(Duration::from_secs(10));
    while let Ok(n) = sock.recv(&mut buf) {
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(status.success());
    assert_eq!(
        seen.first().map(String::as_str),
        Some("READY=1"),
        "{seen:?}"
    );
    let watchdogs = seen.iter().filter(|m| *m == "WATCHDOG=1").count();
    // Every 200 ms (half of 400 ms) for 3 s.
    assert!(watchdogs >= 10, "{watchdogs} watchdog pings: {seen:?}");
    assert!(
        seen.iter()
            .any(|m| m.starts_with("STATUS=connected to localhost")),
        "{seen:?}"
    );
    assert!(seen.iter().any(|m| m == "STOPPING=1"), "{seen:?}");
}
