//! The `mqtt` profile against Mosquitto: TLS requiring a client certificate from the fleet CA,
//! the CN as user name, `pattern write dt/%u/#`, and a `crlfile` reloaded on SIGHUP.

use std::fs;

use autoprov_tests::mosquitto::{BrokerOptions, Mosquitto, OBSERVER, Subscriber};

use super::{
    Device, FLEET, FOREIGN, Operator, ROTATED, assert_own_identity_and_contiguous, counts, logs,
    next_seq, runner, seqs_of, wait_for_readings,
};

#[test]
fn mqtt_fleet_flashed_imported_publishing_refusing_foreign_and_revoked_certificates() {
    let runner = runner("mqtt");
    let op = Operator::new("Rehearsal Fleet");
    let server = op.server_tls();
    let mut broker = Mosquitto::start(
        &server,
        &BrokerOptions {
            crl_pem: Some(op.crl()),
            ..BrokerOptions::with_observer()
        },
    );
    let sub = Subscriber::start(&broker, &op.bundle(OBSERVER), "dt/#");
    let image = op.image();
    let configure = |env: &autoprov_tests::agent::AgentEnv| env.configure(Some(&broker), "");

    let mut fleet: Vec<Device> = FLEET
        .iter()
        .map(|id| Device::new(id, op.flash(id, &image), runner.clone(), configure))
        .collect();
    for d in &mut fleet {
        d.boot();
    }
    assert!(
        wait_for_readings(&sub, &FLEET, &[0; 3], 10),
        "readings per device {:?}\nbroker:\n{}\n{}",
        counts(&sub, &FLEET),
        broker.log(),
        logs(&fleet)
    );

    // A card flashed from another fleet's CA, in an image that trusts this broker: the broker
    // refuses its certificate, and nothing it reads is published.
    let other = Operator::new("Other Fleet");
    let mut foreign = Device::new(
        FOREIGN,
        other.flash(FOREIGN, &image),
        runner.clone(),
        |env| {
            // After `[mqtt]`, which `configure` writes last: the image's trust in the broker.
            env.configure(
                Some(&broker),
                &format!("ca_file = \"{}\"\n", broker.ca_file().display()),
            )
        },
    );
    foreign.boot();
    assert!(
        foreign.wait_for_log("refused this device's certificate"),
        "{}",
        foreign.log()
    );
    let foreign_log = foreign.stop();
    assert!(foreign_log.contains("UnknownCA"), "{foreign_log}");
    assert!(
        !broker.log().contains(&format!("as {FOREIGN}")),
        "{}",
        broker.log()
    );
    assert!(seqs_of(&sub, FOREIGN).is_empty());
    assert!(!foreign_log.contains("connected to"), "{foreign_log}");

    // Rotation: `autoprov inject` rewrites the card's bundle; at the next boot the import
    // switches to the new set and the agent carries on with the next seq.
    let r = FLEET.iter().position(|id| *id == ROTATED).unwrap();
    let old_serial = fleet[r].serial();
    fleet[r].stop();
    let last_before = *seqs_of(&sub, ROTATED).last().unwrap();
    let card = fleet[r].card.clone();
    let out = op.ok(&["inject", ROTATED, "--to", card.to_str().unwrap()]);
    assert!(out.contains(&format!("{old_serial} superseded")), "{out}");
    let before = counts(&sub, &FLEET);
    fleet[r].boot();
    let new_serial = fleet[r].serial();
    assert_ne!(new_serial, old_serial);
    assert!(
        fleet[r].wait_for_log(&format!("certificate serial {new_serial}")),
        "{}",
        fleet[r].log()
    );
    assert!(
        wait_for_readings(&sub, &FLEET, &before, 5),
        "after the rotation: {:?}\n{}",
        counts(&sub, &FLEET),
        fleet[r].log()
    );
    let next = next_seq(&fleet[r].log());
    assert!(
        next > 1 && next <= last_before + 1,
        "seq did not continue across the rotation: next {next}, last received {last_before}"
    );

    // Revocation of the old certificate, the broker's CRL reloaded: a copy of the card as it was
    // before the rotation (the previous set the import kept) is refused.
    op.ok(&["revoke", ROTATED, "--serial", &old_serial]);
    broker.reload_crl(&fs::read_to_string(op.path("pki/crl.pem")).unwrap());
    let mut clone = Device::new(ROTATED, card.clone(), runner.clone(), configure);
    let previous = fleet[r].env.credentials().join("previous");
    fs::create_dir_all(clone.env.card()).unwrap();
    for f in fs::read_dir(&previous).unwrap() {
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
    // OpenSSL's alert says why; Mosquitto's log only says "certificate verify failed".
    let clone_log = clone.stop();
    assert!(clone_log.contains("CertificateRevoked"), "{clone_log}");

    // Everyone reconnects after a broker restart, the rotated device with its new certificate.
    let before = counts(&sub, &FLEET);
    broker.restart();
    assert!(
        wait_for_readings(&sub, &FLEET, &before, 5),
        "after the broker restart: {:?}\nbroker:\n{}",
        counts(&sub, &FLEET),
        broker.log()
    );
    for d in &mut fleet {
        d.stop();
    }
    assert_own_identity_and_contiguous(&sub, &fleet, |id| format!("dt/{id}/telemetry"));
}
