//! The `aws` profile through the JITP front (`autoprov_tests::jitp`): the registered CA is the
//! fleet's issuing CA, as `autoprov aws setup` registers it; every new certificate's first
//! connection is dropped while it is provisioned. Revocation in AWS is an API call (`aws iot
//! update-certificate --new-status REVOKED`, printed by `autoprov revoke`), not a CRL, so this
//! leg has no revocation step.

use autoprov_tests::agent::AgentEnv;
use autoprov_tests::jitp::{FRONT_IDENTITY, FrontMode, JitpFront, Outcome, UPSTREAM_ACL};
use autoprov_tests::mosquitto::{BrokerOptions, Mosquitto, OBSERVER, Subscriber};
use autoprov_tests::wait_until;

use super::{
    Device, FLEET, FOREIGN, Operator, PATIENCE, ROTATED, assert_own_identity_and_contiguous,
    counts, logs, next_seq, runner, seqs_of, wait_for_readings,
};

/// Connections of `id` the front dropped for provisioning, and forwarded.
fn outcomes(front: &JitpFront, id: &str) -> (usize, usize) {
    let conns = front.connections();
    let of = |o: Outcome| {
        conns
            .iter()
            .filter(|c| c.client_id.as_deref() == Some(id) && c.outcome == o)
            .count()
    };
    (of(Outcome::Dropped), of(Outcome::Forwarded))
}

#[test]
fn aws_fleet_flashed_imported_provisioned_just_in_time_refusing_a_foreign_card_and_rotating() {
    let runner = runner("aws");
    let op = Operator::new("Rehearsal Fleet");
    let server = op.server_tls();
    let broker = Mosquitto::start(
        &server,
        &BrokerOptions {
            acl: format!("{UPSTREAM_ACL}user {OBSERVER}\ntopic read dt/#\n"),
            ..BrokerOptions::default()
        },
    );
    let sub = Subscriber::start(&broker, &op.bundle(OBSERVER), "dt/#");
    let registered = std::fs::read_to_string(op.path("pki/issuing.crt")).unwrap();
    let front = JitpFront::start(
        &registered,
        &server,
        &broker,
        &op.bundle(FRONT_IDENTITY),
        FrontMode::Jitp,
    );
    // The image's agent.toml: the aws profile at the front, trusting the fixtures' CA besides
    // Amazon's roots.
    let cfg = format!(
        "[cloud]\nprofile = \"aws\"\n[aws]\nendpoint = \"localhost\"\nport = {}\nextra_ca_file = \"{}\"\njitp_retry = \"200ms\"\n",
        front.port(),
        broker.ca_file().display()
    );
    let configure = |env: &AgentEnv| env.configure(None, &cfg);
    let image = op.image();

    let mut fleet: Vec<Device> = FLEET
        .iter()
        .map(|id| Device::new(id, op.flash(id, &image), runner.clone(), configure))
        .collect();
    for d in &mut fleet {
        d.boot();
    }
    assert!(
        wait_for_readings(&sub, &FLEET, &[0; 3], 10),
        "readings per device {:?}\nfront: {:#?}\n{}",
        counts(&sub, &FLEET),
        front.connections(),
        logs(&fleet)
    );
    for id in FLEET {
        assert_eq!(
            outcomes(&front, id),
            (1, 1),
            "{id}: {:#?}",
            front.connections()
        );
    }

    // A card from another CA: the front does not let it in, nothing is provisioned for it.
    let other = Operator::new("Other Fleet");
    let mut foreign = Device::new(
        FOREIGN,
        other.flash(FOREIGN, &image),
        runner.clone(),
        configure,
    );
    let refused_before = front
        .connections()
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::TlsFailed(_)))
        .count();
    foreign.boot();
    assert!(
        wait_until(PATIENCE, || front
            .connections()
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::TlsFailed(_)))
            .count()
            > refused_before),
        "{}",
        foreign.log()
    );
    foreign.stop();
    assert_eq!(outcomes(&front, FOREIGN), (0, 0));
    assert!(seqs_of(&sub, FOREIGN).is_empty());

    // Rotation: the new certificate is provisioned on its first connection like the first one
    // was, and the seq goes on.
    let r = FLEET.iter().position(|id| *id == ROTATED).unwrap();
    let old_serial = fleet[r].serial();
    fleet[r].stop();
    let last_before = *seqs_of(&sub, ROTATED).last().unwrap();
    let card = fleet[r].card.clone();
    op.ok(&["inject", ROTATED, "--to", card.to_str().unwrap()]);
    let before = counts(&sub, &FLEET);
    fleet[r].boot();
    assert_ne!(fleet[r].serial(), old_serial);
    assert!(
        wait_for_readings(&sub, &FLEET, &before, 5),
        "after the rotation: {:?}\n{}",
        counts(&sub, &FLEET),
        fleet[r].log()
    );
    assert_eq!(
        outcomes(&front, ROTATED),
        (2, 2),
        "{:#?}",
        front.connections()
    );
    let next = next_seq(&fleet[r].log());
    assert!(
        next > 1 && next <= last_before + 1,
        "next {next}, last {last_before}"
    );

    for d in &mut fleet {
        d.stop();
    }
    assert_own_identity_and_contiguous(&sub, &fleet, |id| format!("dt/{id}/telemetry"));
}
