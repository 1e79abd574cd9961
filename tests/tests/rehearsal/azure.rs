//! The `azure` profile through the DPS stand-in and a hub with Azure's topic layout
//! (`autoprov_tests::dps`): each card registers itself with DPS (X.509 group enrollment: the
//! registration id is the certificate CN) and publishes to the hub it is assigned. Azure disables
//! a device through its API (`az iot hub device-identity update`, printed by `autoprov revoke`),
//! not with a CRL, so this leg has no revocation step.

use autoprov_tests::agent::AgentEnv;
use autoprov_tests::dps::{Behaviour, DPS_ACL, DpsService, SERVICE_IDENTITY, hub_acl};
use autoprov_tests::mosquitto::{BrokerOptions, Mosquitto, OBSERVER, Subscriber};

use super::{
    Device, FLEET, FOREIGN, Operator, ROTATED, assert_own_identity_and_contiguous, counts, logs,
    next_seq, runner, seqs_of, wait_for_readings,
};

#[test]
fn azure_fleet_flashed_imported_registered_with_dps_refusing_a_foreign_card_and_rotating() {
    let runner = runner("azure");
    let op = Operator::new("Rehearsal Fleet");
    let server = op.server_tls();
    let dps = Mosquitto::start(
        &server,
        &BrokerOptions {
            acl: DPS_ACL.into(),
            ..BrokerOptions::default()
        },
    );
    let service = DpsService::start(
        &dps,
        &op.bundle(SERVICE_IDENTITY),
        Behaviour::Assign {
            hub: "localhost".into(),
            polls: 1,
            retry_after: 1,
        },
    );
    let hub = Mosquitto::start(
        &server,
        &BrokerOptions {
            acl: hub_acl(),
            ..BrokerOptions::default()
        },
    );
    let sub = Subscriber::start(&hub, &op.bundle(OBSERVER), "devices/#");
    // The image's agent.toml: the azure profile, trusting the fixtures' CA besides Azure's roots.
    let cfg = format!(
        "[cloud]\nprofile = \"azure\"\n[azure]\nid_scope = \"0ne00FIXTURE\"\ndps_host = \"localhost\"\ndps_port = {}\nhub_port = {}\nextra_ca_file = \"{}\"\nregistration_timeout = \"5s\"\n",
        dps.port(),
        hub.port(),
        hub.ca_file().display()
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
        "readings per device {:?}\ndps:\n{}\n{}",
        counts(&sub, &FLEET),
        dps.log(),
        logs(&fleet)
    );
    let mut registered: Vec<String> = service
        .registrations()
        .iter()
        .map(|r| r.payload.clone())
        .collect();
    registered.sort();
    let expected: Vec<String> = FLEET
        .iter()
        .map(|id| format!("{{\"registrationId\":\"{id}\"}}"))
        .collect();
    assert_eq!(registered, expected);

    // A card from another CA: DPS refuses its certificate; it never registers nor publishes.
    let other = Operator::new("Other Fleet");
    let mut foreign = Device::new(
        FOREIGN,
        other.flash(FOREIGN, &image),
        runner.clone(),
        configure,
    );
    foreign.boot();
    assert!(
        foreign.wait_for_log("refused this device's certificate"),
        "{}",
        foreign.log()
    );
    foreign.stop();
    assert!(
        service
            .registrations()
            .iter()
            .all(|r| !r.payload.contains(FOREIGN))
    );
    assert!(seqs_of(&sub, FOREIGN).is_empty());

    // Rotation: the device keeps its assignment and goes on at the hub with the new certificate.
    let r = FLEET.iter().position(|id| *id == ROTATED).unwrap();
    let old_serial = fleet[r].serial();
    fleet[r].stop();
    let last_before = *seqs_of(&sub, ROTATED).last().unwrap();
    let card = fleet[r].card.clone();
    op.ok(&["inject", ROTATED, "--to", card.to_str().unwrap()]);
    let before = counts(&sub, &FLEET);
    fleet[r].boot();
    let new_serial = fleet[r].serial();
    assert_ne!(new_serial, old_serial);
    assert!(
        wait_for_readings(&sub, &FLEET, &before, 5),
        "after the rotation: {:?}\n{}",
        counts(&sub, &FLEET),
        fleet[r].log()
    );
    assert!(
        fleet[r]
            .log()
            .contains(&format!("certificate serial {new_serial}"))
    );
    let next = next_seq(&fleet[r].log());
    assert!(
        next > 1 && next <= last_before + 1,
        "next {next}, last {last_before}"
    );

    for d in &mut fleet {
        d.stop();
    }
    assert_own_identity_and_contiguous(&sub, &fleet, |id| format!("devices/{id}/messages/events/"));
}
