//! A certificate outside its validity is refused by the broker, whoever presents it, and the
//! device's own `check` says so before it tries.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use autoprov_tests::agent::AgentEnv;
use autoprov_tests::mosquitto::{BrokerOptions, Mosquitto, OBSERVER, Subscriber};
use autoprov_tests::pki::TestPki;
use autoprov_tests::wait_until;

use super::{publish, text};

const DAY: i64 = 86_400;

#[test]
fn expired_and_not_yet_valid_certificates_are_refused_by_the_broker() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut pki = TestPki::new("Test Fleet");
    let server = pki.server();
    let broker = Mosquitto::start(&server, &BrokerOptions::with_observer());
    let sub = Subscriber::start(&broker, &pki.device(OBSERVER, Default::default()), "dt/#");
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "sensor-expired",
            now - 30 * DAY,
            now - DAY,
            "expired",
            "certificate has expired",
        ),
        (
            "sensor-future",
            now + DAY,
            now + 30 * DAY,
            "not yet valid",
            "certificate is not yet valid",
        ),
    ];
    let mut seen = 0;
    for (id, from, to, why, openssl_says) in cases {
        let bundle = pki.device_valid_between(id, from, to);
        let topic = format!("dt/{id}/telemetry");
        let out = publish(&broker, &dir.path().join(id), &bundle, id, &topic);
        assert!(
            !out.status.success(),
            "an {why} certificate was accepted: {}",
            text(&out)
        );
        let refusals = || broker.log().matches("certificate verify failed").count();
        // The broker writes its log a moment after the client gave up.
        wait_until(Duration::from_secs(5), || refusals() > seen);
        let refusals = refusals();
        assert!(
            refusals > seen,
            "the broker did not refuse the {why} certificate in the handshake:\n{}",
            broker.log()
        );
        seen = refusals;
        // Why, as OpenSSL (what Mosquitto verifies with) says it: the time, nothing else.
        let files = dir.path().join(id);
        let verify = Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(files.join("ca.crt"))
            .arg("-untrusted")
            .arg(files.join("device.crt"))
            .arg(files.join("device.crt"))
            .output()
            .unwrap();
        let said = text(&verify);
        assert!(
            !verify.status.success() && said.contains(openssl_says),
            "{said}"
        );
    }
    // The same CA, a certificate valid now: accepted (the refusals were about time alone).
    let good = pki.device_valid_between("sensor-now", now - DAY, now + DAY);
    let out = publish(
        &broker,
        &dir.path().join("now"),
        &good,
        "sensor-now",
        "dt/sensor-now/telemetry",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(wait_until(Duration::from_secs(10), || !sub
        .lines()
        .is_empty()));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        sub.lines().iter().all(|l| l.starts_with("dt/sensor-now/")),
        "{:?}",
        sub.lines()
    );

    // The device itself: import refuses the expired bundle, so it never tries to use it.
    let env = AgentEnv::new();
    env.flash(&pki.device_valid_between("sensor-old", now - 30 * DAY, now - DAY));
    let out = env.import(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr.contains("import refused") && stderr.to_lowercase().contains("expired"),
        "{stderr}"
    );
}
