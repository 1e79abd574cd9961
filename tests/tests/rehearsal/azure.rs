//! The `azure` profile through the DPS stand-in and a hub with Azure's topic layout
//! (`autoprov_tests::dps`): each card registers itself with DPS (X.509 group enrollment: the
//! registration id is the certificate CN) and publishes to the hub it is assigned. Azure disables
//! a device through its API (`az iot hub device-identity update`, printed by `autoprov revoke`),
//! not with a CRL, so this leg has no revocation step.

use autoprov_tests::agent::AgentEnv;
use autoprov_tests::dps::{Behaviour, DpsService, SERVICE_IDENTITY, start_dps, start_hub};
use autoprov_tests::mosquitto::{OBSERVER, Subscriber};

use super::{FLEET, FOREIGN, Operator, boot_fleet, finish, foreign_card, rotate, runner, seqs_of};

fn registrations(service: &DpsService) -> Vec<String> {
    let mut r: Vec<String> = service
        .registrations()
        .iter()
        .map(|r| r.payload.clone())
        .collect();
    r.sort();
    r
}

#[test]
fn azure_fleet_flashed_imported_registered_with_dps_refusing_a_foreign_card_and_rotating() {
    let runner = runner("azure");
    let op = Operator::new("Rehearsal Fleet");
    let server = op.server_tls();
    let (dps, service) = start_dps(
        &server,
        &op.bundle(SERVICE_IDENTITY),
        Behaviour::assign_localhost(),
    );
    let hub = start_hub(&server);
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
    let mut fleet = boot_fleet(&op, &image, &runner, configure, &sub, || dps.log());
    let expected: Vec<String> = FLEET
        .iter()
        .map(|id| format!("{{\"registrationId\":\"{id}\"}}"))
        .collect();
    assert_eq!(registrations(&service), expected);

    // A card from another CA: DPS refuses its certificate; it never registers nor publishes.
    let mut foreign = foreign_card(&image, &runner, configure);
    assert!(
        foreign.wait_for_log("refused this device's certificate"),
        "{}",
        foreign.log()
    );
    foreign.stop();
    assert!(registrations(&service).iter().all(|r| !r.contains(FOREIGN)));
    assert!(seqs_of(&sub, FOREIGN).is_empty());

    // The device keeps its assignment and goes on at the hub with the new certificate, without
    // registering again.
    rotate(&op, &mut fleet, &sub);
    assert_eq!(registrations(&service), expected);
    finish(&mut fleet, &sub, |id| {
        format!("devices/{id}/messages/events/")
    });
}
