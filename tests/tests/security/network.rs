//! An attacker on the network cannot pose as the broker: the agent verifies the broker's
//! certificate (chain and name) before it sends anything, so readings never reach an impostor,
//! even one that would accept the device's own certificate.

use std::time::Duration;

use autoprov_tests::agent::AgentEnv;
use autoprov_tests::mosquitto::{BrokerOptions, Mosquitto};
use autoprov_tests::pki::{ServerTls, TestPki};

#[test]
fn a_broker_impostor_gets_no_reading_whether_its_certificate_is_foreign_or_for_another_name() {
    let mut fleet = TestPki::new("Test Fleet");
    let mut rogue = TestPki::new("Rogue CA");
    // A certificate the fleet's CA signed, but for another host (a stolen server certificate
    // of some other fleet service): the right issuer, the wrong name.
    let other_host = {
        let dir = tempfile::tempdir().unwrap();
        let pki = fleet.dir().to_owned();
        let out = std::process::Command::new(autoprov_tests::bins::bin("autoprov"))
            .arg("--pki-dir")
            .arg(&pki)
            .args([
                "issue-server",
                "other-host",
                "--dns",
                "other.example.net",
                "--out",
            ])
            .arg(dir.path().join("s"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", super::text(&out));
        let read = |n: &str| std::fs::read_to_string(dir.path().join("s").join(n)).unwrap();
        ServerTls {
            chain_pem: read("server.crt"),
            key_pem: read("server.key"),
            ca_pem: read("ca.crt"),
        }
    };
    // The impostor trusts the fleet's root for client certificates: the device's own
    // certificate would be accepted, so only the device's check of the server stops it.
    let foreign = ServerTls {
        ca_pem: std::fs::read_to_string(fleet.dir().join("root.crt")).unwrap(),
        ..rogue.server()
    };
    for (n, (case, tls, why)) in [
        ("foreign CA", foreign, "UnknownIssuer"),
        ("another host's certificate", other_host, "NotValidForName"),
    ]
    .into_iter()
    .enumerate()
    {
        let broker = Mosquitto::start(&tls, &BrokerOptions::default());
        let id = format!("sensor-{n}");
        let env = AgentEnv::new();
        env.flash(&fleet.device(&id, Default::default()));
        assert!(env.import(&[]).status.success());
        env.configure(Some(&broker), "");
        let check = env.command(&["check"]).output().unwrap();
        let said = String::from_utf8_lossy(&check.stdout);
        assert_eq!(check.status.code(), Some(1), "{case}: {said}");
        assert!(
            said.lines().any(|l| l.starts_with("FAIL")
                && l.contains("broker reachable")
                && l.contains(why)),
            "{case}: {said}"
        );
        let mut agent = env.spawn();
        assert!(
            agent.wait_for_log("(attempt 3)", Duration::from_secs(15)),
            "{case}: {}",
            agent.log()
        );
        agent.terminate(Duration::from_secs(10));
        let log = agent.log();
        assert!(
            log.contains("presented a certificate that does not verify") && log.contains(why),
            "{case}: {log}"
        );
        assert!(!log.contains("connected to"), "{case}: {log}");
        // The impostor never saw an MQTT CONNECT, let alone a reading.
        assert!(
            !broker.log().contains(&format!("as {id}")),
            "{case}:\n{}",
            broker.log()
        );
    }
}
