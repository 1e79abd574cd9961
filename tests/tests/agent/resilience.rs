use std::time::Duration;

use autoprov_tests::agent::AgentEnv;
use autoprov_tests::mosquitto::{BrokerOptions, Mosquitto};
use autoprov_tests::pki::TestPki;
use autoprov_tests::wait_until;

use super::{DEVICE, assert_contiguous_from_one, setup};

#[test]
fn every_seq_arrives_across_three_broker_and_three_agent_sigkills() {
    let mut s = setup("");
    let mut agent = s.env.spawn();
    let grow = |s: &super::Setup, by: usize| {
        let start = s.sub.seqs().len();
        wait_until(Duration::from_secs(30), || s.sub.seqs().len() >= start + by)
    };
    for round in 0..3 {
        assert!(grow(&s, 10), "round {round}: no progress\n{}", agent.log());
        s.broker.kill();
        // Readings keep being taken and spooled while the broker is gone.
        std::thread::sleep(Duration::from_millis(400));
        s.broker.start_again();
        assert!(
            grow(&s, 10),
            "round {round}: no progress after broker restart\n{}\nbroker {:?} {:?}:\n{}\nsub: {:?}",
            agent.log(),
            s.broker.log_path(),
            std::fs::metadata(s.broker.log_path()).map(|m| m.len()),
            s.broker.log(),
            s.sub.seqs()
        );
        agent.kill9();
        std::thread::sleep(Duration::from_millis(200));
        agent = s.env.spawn();
    }
    assert!(grow(&s, 10), "no progress at the end\n{}", agent.log());
    let status = agent.terminate(Duration::from_secs(10));
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(500));
    let seqs = s.sub.seqs();
    assert!(seqs.len() >= 70, "only {} readings arrived", seqs.len());
    assert_contiguous_from_one(&seqs, &format!("broker log:\n{}", s.broker.log()));
    assert_eq!(s.broker.starts(), 4);
}

#[test]
fn certificate_from_another_ca_is_refused_clearly_with_backoff() {
    let mut fleet = TestPki::new("Test Fleet");
    let server = fleet.server();
    let broker = Mosquitto::start(&server, &BrokerOptions::default());
    let mut foreign = TestPki::new("Someone Else");
    let env = AgentEnv::new();
    env.flash(&foreign.device(DEVICE, Default::default()));
    assert!(env.import(&[]).status.success());
    // The foreign bundle's root does not know the broker's certificate either: trust the
    // broker explicitly so the refusal under test is the broker's, of our certificate.
    // `extra` lands in [mqtt]; the backoff is set by a drop-in, as an operator would.
    env.configure(
        Some(&broker),
        &format!("ca_file = \"{}\"\n", broker.ca_file().display()),
    );
    env.dropin(
        "50-backoff.toml",
        "[reconnect]\nbase = \"100ms\"\ncap = \"1s\"\n",
    );
    let mut agent = env.spawn();
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        agent.is_running(),
        "a refused certificate is retried, not fatal"
    );
    agent.terminate(Duration::from_secs(10));
    let log = agent.log();
    let refusals = log
        .lines()
        .filter(|l| l.contains("refused this device's certificate"))
        .count();
    // Backoff 100 ms doubling to 1 s with full jitter: about 8-12 attempts in 5 s. A tight loop
    // would make hundreds.
    assert!(
        (2..=25).contains(&refusals),
        "{refusals} refusals in 5 s:\n{log}"
    );
    assert!(log.contains("(attempt 2)"), "{log}");
    assert!(!log.contains("connected to"), "{log}");
    let broker_log = broker.log();
    assert!(
        !broker_log.contains(&format!("as {DEVICE}")),
        "the broker must not have accepted the device:\n{broker_log}"
    );
}
