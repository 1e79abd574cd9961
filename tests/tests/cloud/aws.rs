//! The `aws` profile against the JITP front.

use std::time::Duration;

use autoprov_tests::agent::AgentEnv;
use autoprov_tests::jitp::{FRONT_IDENTITY, FrontMode, JitpFront, Outcome, start_upstream};
use autoprov_tests::mosquitto::{Mosquitto, OBSERVER, Subscriber};
use autoprov_tests::pki::TestPki;
use autoprov_tests::{assert_contiguous_from_one, wait_until};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::{DEVICE, device};

struct Aws {
    pki: TestPki,
    broker: Mosquitto,
    sub: Subscriber,
    front: JitpFront,
}

fn aws(mode: FrontMode) -> Aws {
    aws_on(0, mode)
}

fn aws_on(port: u16, mode: FrontMode) -> Aws {
    let mut pki = TestPki::new("Test Fleet");
    let server = pki.server();
    let broker = start_upstream(&server);
    let sub = Subscriber::start(&broker, &pki.device(OBSERVER, Default::default()), "dt/#");
    // What `autoprov aws setup` registers: the CA that signs devices.
    let registered = std::fs::read_to_string(pki.dir().join("issuing.crt")).unwrap();
    let identity = pki.device(FRONT_IDENTITY, Default::default());
    let front = JitpFront::start_on(port, &registered, &server, &broker, &identity, mode);
    Aws {
        pki,
        broker,
        sub,
        front,
    }
}

/// [`aws_on`], and a device with its bundle from that PKI configured for the front.
fn with_device(port: u16, mode: FrontMode) -> (Aws, AgentEnv) {
    let mut a = aws_on(port, mode);
    let cfg = config(&a);
    let env = device(&mut a.pki, &cfg);
    (a, env)
}

fn config(a: &Aws) -> String {
    format!(
        "[cloud]\nprofile = \"aws\"\n[aws]\nendpoint = \"localhost\"\nport = {}\nextra_ca_file = \"{}\"\njitp_retry = \"200ms\"\n",
        a.front.port(),
        a.broker.ca_file().display()
    )
}

#[test]
fn jitp_first_connect_drop_is_retried_and_readings_arrive_with_contiguous_seq() {
    let (a, env) = with_device(0, FrontMode::Jitp);
    let mut agent = env.spawn();
    let got = wait_until(Duration::from_secs(20), || a.sub.seqs().len() >= 20);
    let status = agent.terminate(Duration::from_secs(10));
    assert!(got, "agent:\n{}\nbroker:\n{}", agent.log(), a.broker.log());
    assert!(status.success(), "{status:?}");

    let conns = a.front.connections();
    assert!(conns.len() >= 2, "{conns:#?}");
    assert_eq!(conns[0].outcome, Outcome::Dropped, "{conns:#?}");
    assert_eq!(conns[1].outcome, Outcome::Forwarded, "{conns:#?}");
    // At most one CONNECT per second, even with a 200 ms JITP retry.
    let gap = conns[1].at - conns[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "reconnected after {gap:?}"
    );
    assert!(
        gap < Duration::from_secs(3),
        "reconnected only after {gap:?}"
    );
    let issuing = std::fs::read(a.pki.dir().join("issuing.crt")).unwrap();
    let issuing = CertificateDer::from_pem_slice(&issuing).unwrap();
    for c in &conns[..2] {
        // Leaf, then the registered CA; SNI; client id = thing name = CN.
        assert_eq!(c.chain.len(), 2, "{c:#?}");
        assert_eq!(c.chain[1], issuing.as_ref());
        assert_eq!(c.sni.as_deref(), Some("localhost"));
        assert_eq!(c.client_id.as_deref(), Some(DEVICE));
        assert_eq!(c.alpn, None, "no ALPN on a port other than 443");
    }
    let log = agent.log();
    assert!(log.contains("just-in-time provisioning"), "{log}");
    for (topic, _) in a.sub.messages() {
        assert_eq!(topic, format!("dt/{DEVICE}/telemetry"));
    }

    // A restart: the thing exists, so the first connection goes straight through.
    let before = (a.sub.seqs().len(), a.front.connections().len());
    let mut agent = env.spawn();
    let more = wait_until(Duration::from_secs(20), || {
        a.sub.seqs().len() >= before.0 + 20
    });
    let status = agent.terminate(Duration::from_secs(10));
    assert!(more && status.success(), "{}", agent.log());
    let later = &a.front.connections()[before.1..];
    assert_eq!(later[0].outcome, Outcome::Forwarded, "{later:#?}");
    assert!(!agent.log().contains("just-in-time provisioning"));
    assert_contiguous_from_one(&a.sub.seqs(), &log);
}

#[test]
fn connections_dropped_after_provisioning_are_an_error_retried_at_most_once_a_second() {
    let (a, env) = with_device(0, FrontMode::AlwaysDrop);
    let mut agent = env.spawn();
    std::thread::sleep(Duration::from_millis(4500));
    let conns = a.front.connections();
    let log = agent.log();
    assert!(
        (2..=6).contains(&conns.len()),
        "{} connections in 4.5 s:\n{log}",
        conns.len()
    );
    for w in conns.windows(2) {
        assert!(
            w[1].at - w[0].at >= Duration::from_millis(950),
            "two CONNECTs {:?} apart",
            w[1].at - w[0].at
        );
    }
    assert!(log.contains("again without accepting it"), "{log}");
    assert!(log.contains("auto-registration"), "{log}");
    // The CA gets its template: the next connection goes through and nothing spooled is lost.
    a.front.set_mode(FrontMode::Jitp);
    let got = wait_until(Duration::from_secs(20), || a.sub.seqs().len() >= 60);
    let status = agent.terminate(Duration::from_secs(10));
    assert!(got && status.success(), "{}", agent.log());
    assert_contiguous_from_one(&a.sub.seqs(), &agent.log());
}

#[test]
fn a_certificate_from_another_ca_is_refused_in_the_handshake() {
    let a = aws(FrontMode::Jitp);
    let mut other = TestPki::new("Other Fleet");
    let cfg = config(&a);
    let env = device(&mut other, &cfg);
    let mut agent = env.spawn();
    let refused = wait_until(Duration::from_secs(10), || {
        agent.log().contains("refused this device's certificate")
    });
    agent.kill9();
    assert!(refused, "{}", agent.log());
    let conns = a.front.connections();
    assert!(
        conns
            .iter()
            .all(|c| matches!(c.outcome, Outcome::TlsFailed(_))),
        "{conns:#?}"
    );
    assert!(a.sub.seqs().is_empty());
}

#[test]
fn check_reports_the_endpoint_and_the_port() {
    let (a, env) = with_device(0, FrontMode::Jitp);
    let text = env.check_ok(&["aws endpoint", "aws port", "aws iot reachable"]);
    assert!(text.contains(&format!("{} (MQTT over TLS, no ALPN)", a.front.port())));
}

/// Binds 127.0.0.1:443 like AWS's HTTPS port, so it needs root (as CI and the development
/// machines run); it fails, naming the port, where that is not possible.
#[test]
fn port_443_offers_alpn_x_amzn_mqtt_ca_and_check_shows_it() {
    let (a, env) = with_device(443, FrontMode::Jitp);
    let mut agent = env.spawn();
    let got = wait_until(Duration::from_secs(20), || a.sub.seqs().len() >= 5);
    let status = agent.terminate(Duration::from_secs(10));
    assert!(got && status.success(), "{}", agent.log());
    let conns = a.front.connections();
    assert!(conns.len() >= 2, "{conns:#?}");
    for c in &conns {
        assert_eq!(
            c.alpn.as_deref(),
            Some(b"x-amzn-mqtt-ca".as_slice()),
            "{c:#?}"
        );
    }
    let text = env.check_ok(&[]);
    assert!(text.contains("443 with ALPN x-amzn-mqtt-ca"), "{text}");
    assert!(
        text.contains("ALPN x-amzn-mqtt-ca, server certificate trusted"),
        "{text}"
    );
}
