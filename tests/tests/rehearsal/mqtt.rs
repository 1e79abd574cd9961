//! The `mqtt` profile against Mosquitto: TLS requiring a client certificate from the fleet CA,
//! the CN as user name, `pattern write dt/%u/#`, and a `crlfile` reloaded on SIGHUP.

use std::fs;

use autoprov_tests::agent::AgentEnv;
use autoprov_tests::mosquitto::{BrokerOptions, Mosquitto, OBSERVER, Subscriber};

use super::{
    Device, FLEET, FOREIGN, Operator, ROTATED, boot_fleet, counts, finish, foreign_card, logs,
    rotate, runner, seqs_of, wait_for_readings,
};

#[test]
fn mqtt_fleet_flashed_imported_publishing_refusing_foreign_and_revoked_certificates() {
    let runner = runner("mqtt");
    let op = Operator::new("Rehearsal Fleet");
    let server = op.server_tls();
    let broker = Mosquitto::start(
        &server,
        &BrokerOptions {
            crl_pem: Some(op.crl()),
            ..BrokerOptions::with_observer()
        },
    );
    let sub = Subscriber::start(&broker, &op.bundle(OBSERVER), "dt/#");
    let image = op.image();
    let configure = |env: &AgentEnv| env.configure(Some(&broker), "");
    let mut fleet = boot_fleet(&op, &image, &runner, configure, &sub, || broker.log());

    // A card flashed from another fleet's CA, in an image that trusts this broker: the broker
    // refuses its certificate (OpenSSL's alert says why), and nothing it reads is published.
    let mut foreign = foreign_card(&image, &runner, |env| {
        // After `[mqtt]`, which `configure` writes last: the image's trust in the broker.
        env.configure(
            Some(&broker),
            &format!("ca_file = \"{}\"\n", broker.ca_file().display()),
        )
    });
    assert!(
        foreign.wait_for_log("refused this device's certificate"),
        "{}",
        foreign.log()
    );
    let foreign_log = foreign.stop();
    assert!(foreign_log.contains("UnknownCA"), "{foreign_log}");
    assert!(!foreign_log.contains("connected to"), "{foreign_log}");
    assert!(
        !broker.log().contains(&format!("as {FOREIGN}")),
        "{}",
        broker.log()
    );
    assert!(seqs_of(&sub, FOREIGN).is_empty());

    let (old_serial, _) = rotate(&op, &mut fleet, &sub);

    // Revocation of the old certificate, the broker's CRL reloaded: a copy of the card as it was
    // before the rotation (the previous set the import kept) is refused.
    op.ok(&["revoke", ROTATED, "--serial", &old_serial]);
    broker.reload_crl(&fs::read_to_string(op.path("pki/crl.pem")).unwrap());
    let rotated = fleet.iter().find(|d| d.id == ROTATED).unwrap();
    let mut clone = Device::new(ROTATED, rotated.card.clone(), runner.clone(), configure);
    fs::create_dir_all(clone.env.card()).unwrap();
    for f in fs::read_dir(rotated.env.credentials().join("previous")).unwrap() {
        let f = f.unwrap().path();
        fs::copy(&f, clone.env.card().join(f.file_name().unwrap())).unwrap();
    }
    let out = clone.env.import(&[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(clone.serial(), old_serial);
    clone.agent = Some(clone.env.spawn());
    assert!(
        clone.wait_for_log("refused this device's certificate"),
        "{}\nbroker:\n{}",
        clone.log(),
        broker.log()
    );
    // Mosquitto's log only says "certificate verify failed"; the alert names the reason.
    let clone_log = clone.stop();
    assert!(clone_log.contains("CertificateRevoked"), "{clone_log}");

    // Everyone reconnects after a broker restart, the rotated device with its new certificate.
    let mut broker = broker;
    let before = counts(&sub, &FLEET);
    broker.restart();
    assert!(
        wait_for_readings(&sub, &FLEET, &before, 5),
        "after the broker restart: {:?}\nbroker:\n{}\n{}",
        counts(&sub, &FLEET),
        broker.log(),
        logs(&fleet)
    );
    finish(&mut fleet, &sub, |id| format!("dt/{id}/telemetry"));
}
