//! `inject`: only `/autoprov/` changes, in place; the rest of the card — the root partition with
//! the device's spool and seq — is kept.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use autoprov_tests::image::{self, Built, Layout};

use crate::{DEVICE, Fixture, read_card, s};

/// The default image flashed, with `extra` flash arguments, to `card.img`: the card `inject`
/// then works on.
fn flashed_card(f: &Fixture, extra: &[&str]) -> (Built, PathBuf) {
    let built = f.image("nixos", &Layout::default());
    let card = f.path("card.img");
    f.flash(&built.img, &card, extra);
    (built, card)
}

#[test]
fn inject_twice_replaces_the_bundle_in_place_and_keeps_the_data_partition() {
    let f = Fixture::new();
    let (built, card) = flashed_card(&f, &[]);
    let first = read_card(&card, &built).bundle.manifest().serial.clone();

    // The device ran: its root partition now holds data that must survive a rotation.
    let data_at = built.root.start + (1 << 20);
    OpenOptions::new()
        .write(true)
        .open(&card)
        .unwrap()
        .write_all_at(b"spool: 42 readings, seq 1042", data_at)
        .unwrap();
    let before = fs::read(&card).unwrap();

    let out = f.inject(&card, &[]);
    assert!(out.contains("rewritten in place"), "{out}");
    assert!(out.contains(&format!("{first} superseded")), "{out}");
    let c = read_card(&card, &built);
    let second = c.bundle.manifest().serial.clone();
    assert_ne!(second, first);
    let after = fs::read(&card).unwrap();
    let boot = built.boot.start as usize..built.boot.end as usize;
    assert_eq!(after[..boot.start], before[..boot.start]);
    assert_eq!(
        after[boot.end..],
        before[boot.end..],
        "inject changed bytes outside the boot partition"
    );
    assert_eq!(
        image::mcopy_out(&c.fat, "config.txt").unwrap(),
        b"[pi3]\nkernel=u-boot-rpi3.bin\n"
    );

    let out = f.inject(&card, &["--revoke-previous"]);
    assert!(out.contains(&format!("{second} revoked")), "{out}");
    let c = read_card(&card, &built);
    let third = c.bundle.manifest().serial.clone();
    // One /autoprov/ folder, holding only the newest bundle.
    let root: Vec<String> = image::mdir(&c.fat, "")
        .into_iter()
        .filter(|n| n.eq_ignore_ascii_case("autoprov"))
        .collect();
    assert_eq!(root.len(), 1, "{root:?}");
    assert_eq!(
        image::mdir(&c.fat, "autoprov").len(),
        5,
        "{:?}",
        image::mdir(&c.fat, "autoprov")
    );
    let after2 = fs::read(&card).unwrap();
    assert_eq!(after2[boot.end..], before[boot.end..]);

    assert_eq!(
        f.certs(),
        [
            (first, "superseded".to_owned()),
            (second.clone(), "revoked".to_owned()),
            (third.clone(), "active".to_owned())
        ]
    );
    assert!(crate::crl_lists(&f, &second));
    let kinds: Vec<(String, String)> = f
        .flashes()
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_owned(),
                r["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [("flash", "ok"), ("inject", "ok"), ("inject", "ok")]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
}

#[test]
fn inject_after_rotate_writes_the_rotated_bundle() {
    let f = Fixture::new();
    let (built, card) = flashed_card(&f, &[]);
    let rotated = f.path("rotated");
    f.ok(&["rotate", DEVICE, "--out", s(&rotated)]);
    let active = f
        .certs()
        .into_iter()
        .find(|(_, st)| st == "active")
        .unwrap()
        .0;
    f.inject(
        &card,
        &[
            "--reuse-cert",
            "--bundle",
            s(&rotated),
            "--set",
            "sensor.interval=1m",
        ],
    );
    let c = read_card(&card, &built);
    assert_eq!(c.bundle.manifest().serial, active);
    assert!(
        std::str::from_utf8(c.bundle.device_toml())
            .unwrap()
            .contains("interval = \"1m\"")
    );
    assert_eq!(f.certs().iter().filter(|(_, st)| st == "active").count(), 1);
}

#[test]
fn inject_dry_run_and_compressed_targets_change_nothing() {
    let f = Fixture::new();
    let (_, card) = flashed_card(&f, &[]);
    let before = fs::read(&card).unwrap();
    let certs = f.certs();
    let out = f.inject(&card, &["--dry-run"]);
    assert!(
        out.contains("replacing the /autoprov/ already there"),
        "{out}"
    );
    assert_eq!(fs::read(&card).unwrap(), before);
    assert_eq!(f.certs(), certs);
    assert_eq!(f.flashes().len(), 1);

    let zst = image::compress(&card);
    let err = f.inject_fails(&zst, &[], 2);
    assert!(err.contains("zstd-compressed"), "{err}");
    let err = f.inject_fails(&f.path("missing.img"), &[], 2);
    assert!(err.contains("missing.img"), "{err}");
    assert_eq!(f.certs(), certs);
}

#[test]
fn inject_keeps_the_cards_settings_and_wifi_unless_new_ones_are_given() {
    let f = Fixture::new();
    let psk = f.psk_file();
    let (built, card) = flashed_card(
        &f,
        &[
            "--wifi-ssid",
            "FactoryFloor",
            "--wifi-psk-file",
            s(&psk),
            "--set",
            "mqtt.host=mqtt.example.net",
        ],
    );
    let first = read_card(&card, &built).bundle;
    // The device booted: the agent imported the bundle and erased the key from the card.
    let c = read_card(&card, &built);
    let fat = c.fat.clone();
    image::run(
        std::process::Command::new("mdel")
            .arg("-i")
            .arg(&fat)
            .arg("::/autoprov/device.key"),
    );
    image::write_at(&card, built.boot.start, &fat);

    let out = f.inject(&card, &[]);
    assert!(
        out.contains("kept:         device.toml and wifi.conf"),
        "{out}"
    );
    let second = read_card(&card, &built).bundle;
    assert_ne!(second.manifest().serial, first.manifest().serial);
    assert_eq!(second.device_toml(), first.device_toml());
    assert_eq!(second.wifi_conf(), first.wifi_conf());

    f.inject(&card, &["--set", "sensor.interval=1m"]);
    let third = read_card(&card, &built).bundle;
    let toml = std::str::from_utf8(third.device_toml()).unwrap();
    assert!(
        toml.contains("interval = \"1m\"") && !toml.contains("mqtt.example.net"),
        "{toml}"
    );
    assert_eq!(third.wifi_conf(), first.wifi_conf());
}
