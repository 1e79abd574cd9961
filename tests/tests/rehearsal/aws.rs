//! The `aws` profile through the JITP front (`autoprov_tests::jitp`): the registered CA is the
//! fleet's issuing CA, as `autoprov aws setup` registers it; every new certificate's first
//! connection is dropped while it is provisioned. Revocation in AWS is an API call (`aws iot
//! update-certificate --new-status REVOKED`, printed by `autoprov revoke`), not a CRL, so this
//! leg has no revocation step.

use autoprov_tests::agent::AgentEnv;
use autoprov_tests::jitp::{FRONT_IDENTITY, FrontMode, JitpFront, Outcome, start_upstream};
use autoprov_tests::mosquitto::{OBSERVER, Subscriber};
use autoprov_tests::wait_until;

use super::{
    FLEET, FOREIGN, Operator, PATIENCE, ROTATED, boot_fleet, finish, foreign_card, rotate, runner,
    seqs_of,
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

fn tls_refusals(front: &JitpFront) -> usize {
    front
        .connections()
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::TlsFailed(_)))
        .count()
}

#[test]
fn aws_fleet_flashed_imported_provisioned_just_in_time_refusing_a_foreign_card_and_rotating() {
    let runner = runner("aws");
    let op = Operator::new("Rehearsal Fleet");
    let server = op.server_tls();
    let broker = start_upstream(&server);
    let sub = Subscriber::start(&broker, &op.bundle(OBSERVER), "dt/#");
    let registered = std::fs::read_to_string(op.path("pki/issuing.crt")).unwrap();
    let front = JitpFront::start_on(
        0,
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
    let mut fleet = boot_fleet(&op, &image, &runner, configure, &sub, || {
        format!("front: {:#?}", front.connections())
    });
    for id in FLEET {
        assert_eq!(
            outcomes(&front, id),
            (1, 1),
            "{id}: {:#?}",
            front.connections()
        );
    }

    // A card from another CA: the front does not let it in, nothing is provisioned for it.
    let refused_before = tls_refusals(&front);
    let mut foreign = foreign_card(&image, &runner, configure);
    assert!(
        wait_until(PATIENCE, || tls_refusals(&front) > refused_before),
        "{}",
        foreign.log()
    );
    foreign.stop();
    assert_eq!(outcomes(&front, FOREIGN), (0, 0));
    assert!(seqs_of(&sub, FOREIGN).is_empty());

    // The new certificate is provisioned on its first connection, like the first one was.
    rotate(&op, &mut fleet, &sub);
    assert_eq!(
        outcomes(&front, ROTATED),
        (2, 2),
        "{:#?}",
        front.connections()
    );
    finish(&mut fleet, &sub, |id| format!("dt/{id}/telemetry"));
}
