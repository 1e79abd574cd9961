//! The `azure` profile against the DPS stand-in and a hub with Azure's topic layout.

use std::ops::RangeInclusive;
use std::time::Duration;

use autoprov_tests::agent::{AgentEnv, AgentProcess};
use autoprov_tests::dps::{Behaviour, DpsService, SERVICE_IDENTITY, start_dps, start_hub};
use autoprov_tests::mosquitto::{Mosquitto, OBSERVER, Subscriber};
use autoprov_tests::pki::{ServerTls, TestPki};
use autoprov_tests::{assert_contiguous_from_one, wait_until};

use super::{DEVICE, device};

const TOPIC: &str = "devices/sensor-007/messages/events/$.ct=application%2Fjson&$.ce=utf-8";

struct Azure {
    server: ServerTls,
    _trust: tempfile::TempDir,
    dps: Mosquitto,
    service: DpsService,
    hub: Mosquitto,
    sub: Subscriber,
    env: AgentEnv,
}

fn azure(behaviour: Behaviour, extra: &str) -> Azure {
    let mut pki = TestPki::new("Test Fleet");
    let server = pki.server();
    let (dps, service) = start_dps(
        &server,
        &pki.device(SERVICE_IDENTITY, Default::default()),
        behaviour,
    );
    let hub = start_hub(&server);
    let sub = Subscriber::start(&hub, &pki.device(OBSERVER, Default::default()), "devices/#");
    // The fixtures' CA, for the documented extra-CA option (the hub's own copy is changed below).
    let trust = tempfile::tempdir().unwrap();
    let ca = trust.path().join("fixture-ca.crt");
    std::fs::write(&ca, &server.ca_pem).unwrap();
    let cfg = format!(
        "[cloud]\nprofile = \"azure\"\n[azure]\nid_scope = \"0ne00FIXTURE\"\ndps_host = \"localhost\"\ndps_port = {}\nhub_port = {}\nextra_ca_file = \"{}\"\n{}{extra}",
        dps.port(),
        hub.port(),
        ca.display(),
        if extra.contains("registration_timeout") {
            ""
        } else {
            "registration_timeout = \"2s\"\n"
        }
    );
    let env = device(&mut pki, &cfg);
    Azure {
        server,
        _trust: trust,
        dps,
        service,
        hub,
        sub,
        env,
    }
}

fn cached(env: &AgentEnv) -> serde_json::Value {
    let text = std::fs::read_to_string(env.state().join("azure-assignment.json"))
        .expect("azure-assignment.json");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn fresh_device_registers_then_publishes_to_its_hub_and_restarts_from_the_cache_without_dps() {
    let mut z = azure(Behaviour::assign_localhost(), "");
    let mut agent = z.env.spawn();
    let got = wait_until(Duration::from_secs(20), || z.sub.seqs().len() >= 20);
    let status = agent.terminate(Duration::from_secs(10));
    assert!(got, "agent:\n{}\ndps:\n{}", agent.log(), z.dps.log());
    assert!(status.success());

    let regs = z.service.registrations();
    let polls = z.service.polls();
    assert_eq!(regs.len(), 1, "{regs:#?}");
    assert_eq!(
        regs[0].payload,
        format!("{{\"registrationId\":\"{DEVICE}\"}}")
    );
    assert!(regs[0].topic.contains("/?$rid="), "{}", regs[0].topic);
    assert_eq!(polls.len(), 1, "{polls:#?}");
    assert!(
        polls[0]
            .topic
            .contains("&operationId=4.fixture1.sensor-007")
    );
    // retry-after: 1 was honoured before asking for the status.
    assert!(polls[0].at - regs[0].at >= Duration::from_millis(950));
    let a = cached(&z.env);
    assert_eq!(a["assigned_hub"], "localhost");
    assert_eq!(a["device_id"], DEVICE);
    assert_eq!(a["id_scope"], "0ne00FIXTURE");
    for (topic, v) in z.sub.messages() {
        assert_eq!(topic, TOPIC);
        assert_eq!(v["device_id"], DEVICE);
    }
    let before = z.sub.seqs().len();
    let text = z
        .env
        .check_ok(&["azure assignment", "dps reachable", "hub reachable"]);
    assert!(text.contains("hub localhost as sensor-007"), "{text}");
    assert!(text.contains("(0 days ago)"), "{text}");

    // DPS gone: a registered device starts and publishes from its cache.
    z.dps.kill();
    let mut agent = z.env.spawn();
    let more = wait_until(Duration::from_secs(20), || {
        z.sub.seqs().len() >= before + 20
    });
    let status = agent.terminate(Duration::from_secs(10));
    let log = agent.log();
    assert!(more && status.success(), "{log}");
    assert!(!log.contains("registering"), "{log}");
    assert_eq!(z.service.registrations().len(), 1);
    assert_contiguous_from_one(&z.sub.seqs(), &log);
}

#[test]
fn a_hub_that_refuses_the_device_sends_it_back_to_dps() {
    let mut z = azure(Behaviour::assign_localhost(), "");
    let mut agent = z.env.spawn();
    assert!(wait_until(Duration::from_secs(20), || z.sub.seqs().len() >= 5));
    assert!(agent.terminate(Duration::from_secs(10)).success());
    assert_eq!(z.service.registrations().len(), 1);

    // The hub stops trusting the fleet's CA (the device was moved, or disabled there).
    let other = TestPki::new("Other Fleet").server();
    std::fs::write(z.hub.ca_file(), &other.ca_pem).unwrap();
    z.hub.restart();
    let agent = z.env.spawn();
    let back = wait_until(Duration::from_secs(20), || {
        z.service.registrations().len() >= 2
    });
    let log = agent.log();
    assert!(back, "{log}\nhub:\n{}", z.hub.log());
    assert!(
        log.contains("the assigned hub refused the device: registering with DPS again"),
        "{log}"
    );

    // The hub takes the device again: readings spooled meanwhile arrive, none lost.
    std::fs::write(z.hub.ca_file(), &z.server.ca_pem).unwrap();
    let before = z.sub.seqs().len();
    z.hub.restart();
    twenty_more_none_lost(&z, agent, before);
}

#[test]
fn a_hub_unreachable_beyond_reregister_after_sends_the_device_back_to_dps() {
    let mut z = azure(
        Behaviour::assign_localhost(),
        "reregister_after = \"1500ms\"\n",
    );
    let agent = z.env.spawn();
    assert!(wait_until(Duration::from_secs(20), || z.sub.seqs().len() >= 5));
    // Stopped cleanly: a killed Mosquitto may lose what it acknowledged but had not yet saved,
    // which would be the broker's loss, not the agent's.
    z.hub.stop();
    let back = wait_until(Duration::from_secs(15), || {
        z.service.registrations().len() >= 2
    });
    let log = agent.log();
    assert!(back, "{log}");
    assert!(
        log.contains("unreachable for more than azure.reregister_after"),
        "{log}"
    );
    z.hub.start_again();
    let before = z.sub.seqs().len();
    twenty_more_none_lost(&z, agent, before);
}

#[test]
fn dps_throttling_is_honoured_then_the_device_is_assigned() {
    let z = azure(
        Behaviour::Throttle {
            times: 2,
            retry_after: 1,
            hub: "localhost".into(),
        },
        "",
    );
    let mut agent = z.env.spawn();
    let got = wait_until(Duration::from_secs(20), || z.sub.seqs().len() >= 10);
    let status = agent.terminate(Duration::from_secs(10));
    let log = agent.log();
    assert!(got && status.success(), "{log}");
    let regs = z.service.registrations();
    assert_eq!(regs.len(), 3, "{regs:#?}");
    for w in regs.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(
            gap >= Duration::from_millis(950),
            "retry-after 1 not honoured: {gap:?}"
        );
    }
    assert!(log.contains("throttled (429: error 429001"), "{log}");
    assert_contiguous_from_one(&z.sub.seqs(), &log);
}

/// Waits for 20 readings more than `before` (within 30 s), stops `agent` cleanly, and checks
/// that every reading arrived, contiguous from seq 1.
fn twenty_more_none_lost(z: &Azure, mut agent: AgentProcess, before: usize) {
    let more = wait_until(Duration::from_secs(30), || {
        z.sub.seqs().len() >= before + 20
    });
    let status = agent.terminate(Duration::from_secs(10));
    assert!(more && status.success(), "{}", agent.log());
    assert_contiguous_from_one(&z.sub.seqs(), &agent.log());
}

/// Runs the agent for 4 s against a DPS that refuses per `behaviour` (agent.toml's `[azure]`
/// plus `extra`), then lets DPS assign and checks that nothing spooled was lost. The log of the
/// refused part must name `reason` and its registration attempts fall within `attempts`.
/// Returns that log.
fn refused_then_assigned(
    behaviour: Behaviour,
    extra: &str,
    reason: &str,
    attempts: RangeInclusive<usize>,
) -> String {
    let z = azure(behaviour, extra);
    let mut agent = z.env.spawn();
    std::thread::sleep(Duration::from_secs(4));
    let log = agent.log();
    let tried = z.service.registrations().len();
    assert!(z.sub.seqs().is_empty(), "nothing can reach a hub yet");
    z.service.set_behaviour(Behaviour::assign_localhost());
    let got = wait_until(Duration::from_secs(30), || z.sub.seqs().len() >= 40);
    let status = agent.terminate(Duration::from_secs(10));
    assert!(got && status.success(), "{}", agent.log());
    // Readings taken while DPS refused were spooled and arrive from seq 1.
    assert_contiguous_from_one(&z.sub.seqs(), &agent.log());
    assert!(log.contains(reason), "{log}");
    assert!(attempts.contains(&tried), "{tried} attempts in 4 s\n{log}");
    log
}

#[test]
fn a_failed_registration_ends_with_dps_reason_and_backs_off() {
    // Each attempt waits DPS's retry-after (1 s) and then the backoff: a handful, not a storm.
    refused_then_assigned(
        Behaviour::Failed,
        "",
        "registration failed: error 400209, Custom allocation failed",
        2..=4,
    );
}

#[test]
fn a_disabled_enrollment_ends_with_a_clear_error_and_backs_off() {
    refused_then_assigned(
        Behaviour::Disabled,
        "",
        "the enrollment of this device is disabled in DPS",
        2..=4,
    );
}

#[test]
fn a_dps_that_never_answers_times_out_and_backs_off() {
    // Without backoff a 300 ms timeout would allow 13 attempts in 4 s.
    let log = refused_then_assigned(
        Behaviour::Silent,
        "registration_timeout = \"300ms\"\n",
        "no answer to the registration within azure.registration_timeout (300ms)",
        2..=9,
    );
    assert!(log.contains("(attempt 3)"), "{log}");
}

#[test]
fn the_hub_stand_in_lets_a_device_write_only_its_own_events() {
    let mut pki = TestPki::new("Test Fleet");
    let server = pki.server();
    let hub = start_hub(&server);
    let sub = Subscriber::start(&hub, &pki.device(OBSERVER, Default::default()), "devices/#");
    let dir = tempfile::tempdir().unwrap();
    autoprov_tests::pki::write_bundle(&pki.device(DEVICE, Default::default()), dir.path());
    let publish = |topic: &str, body: &str| {
        let o = std::process::Command::new("mosquitto_pub")
            .args(["-h", hub.host(), "-p", &hub.port().to_string()])
            .arg("--cafile")
            .arg(dir.path().join("ca.crt"))
            .arg("--cert")
            .arg(dir.path().join("device.crt"))
            .arg("--key")
            .arg(dir.path().join("device.key"))
            .args(["-i", DEVICE, "-q", "1", "-t", topic, "-m", body])
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
    };
    publish(
        "devices/sensor-008/messages/events/$.ct=application%2Fjson&$.ce=utf-8",
        "{\"seq\":2}",
    );
    publish(TOPIC, "{\"seq\":1}");
    assert!(wait_until(Duration::from_secs(10), || !sub
        .lines()
        .is_empty()));
    std::thread::sleep(Duration::from_millis(500));
    let lines = sub.lines();
    assert_eq!(
        lines,
        vec![format!("{TOPIC} {{\"seq\":1}}")],
        "{}",
        hub.log()
    );
}
