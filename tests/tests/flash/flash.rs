//! Flashing to an image file: what lands on the card, and what the inventory says.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use autoprov_tests::image::{self, Layout, Table};

use crate::{DEVICE, Fixture, read_card, s};

fn sha256_hex(data: &[u8]) -> String {
    autoprov_bundle::sha256_hex(data)
}

#[test]
fn flash_of_a_zstd_image_writes_a_bundle_that_third_party_tools_accept() {
    let f = Fixture::new();
    let built = f.image("nixos", &Layout::default());
    let zst = image::compress(&built.img);
    let card = f.path("card.img");
    let psk = f.psk_file();
    let out = f.flash(
        &zst,
        &card,
        &[
            "--wifi-ssid",
            "FactoryFloor",
            "--wifi-psk-file",
            s(&psk),
            "--set",
            "sensor.interval=30s",
            "--set",
            "mqtt.host=mqtt.example.net",
        ],
    );
    assert!(
        out.contains("verified:     read back with O_DIRECT"),
        "{out}"
    );

    let c = read_card(&card, &built);
    assert_eq!(c.bundle.device_id().as_str(), DEVICE);
    let toml: toml::Table =
        toml::from_str(std::str::from_utf8(c.bundle.device_toml()).unwrap()).unwrap();
    assert_eq!(toml["device"]["id"].as_str(), Some(DEVICE));
    assert_eq!(toml["sensor"]["interval"].as_str(), Some("30s"));
    assert_eq!(toml["mqtt"]["host"].as_str(), Some("mqtt.example.net"));
    let wifi = String::from_utf8(c.bundle.wifi_conf().unwrap().to_vec()).unwrap();
    assert!(wifi.contains("ssid=\"FactoryFloor\""), "{wifi}");
    let card_bytes = fs::read(&card).unwrap();
    assert!(
        !card_bytes
            .windows(b"correct horse".len())
            .any(|w| w == b"correct horse"),
        "the passphrase itself is on the card"
    );

    // The rest of the image is untouched: firmware files and the root partition.
    assert_eq!(
        image::mcopy_out(&c.fat, "config.txt").unwrap(),
        b"[pi3]\nkernel=u-boot-rpi3.bin\n"
    );
    assert_eq!(
        image::read_range(&card, &built.root),
        image::read_range(&built.img, &built.root),
        "the ext4 partition differs from the image's"
    );
    assert_eq!(
        card_bytes.len() as u64,
        fs::metadata(&built.img).unwrap().len()
    );
    assert_eq!(
        &card_bytes[..built.boot.start as usize],
        &fs::read(&built.img).unwrap()[..built.boot.start as usize]
    );
    // It holds a private key.
    assert_eq!(
        fs::metadata(&card).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Recorded: the certificate is active and the flash ok, with the image file's digest.
    let serial = c.bundle.manifest().serial.clone();
    assert_eq!(f.certs(), [(serial.clone(), "active".to_owned())]);
    let flashes = f.flashes();
    assert_eq!(flashes.len(), 1, "{flashes:?}");
    assert_eq!(flashes[0]["result"], "ok");
    assert_eq!(flashes[0]["kind"], "flash");
    assert_eq!(flashes[0]["serial"], serial.as_str());
    assert_eq!(flashes[0]["device"], DEVICE);
    assert_eq!(
        flashes[0]["image_sha256"],
        sha256_hex(&fs::read(&zst).unwrap()).as_str()
    );
    assert!(flashes[0]["target"].as_str().unwrap().contains("card.img"));
}

#[test]
fn raw_gpt_image_is_flashed_the_same_way() {
    let f = Fixture::new();
    let built = f.image(
        "gpt",
        &Layout {
            table: Table::Gpt,
            ..Layout::default()
        },
    );
    let card = f.path("card.img");
    f.flash(&built.img, &card, &[]);
    let c = read_card(&card, &built);
    assert_eq!(c.bundle.device_id().as_str(), DEVICE);
    assert_eq!(
        image::read_range(&card, &built.root),
        image::read_range(&built.img, &built.root)
    );
    // The backup GPT at the end of the image came along.
    assert_eq!(fs::read(&card).unwrap(), {
        let mut want = fs::read(&built.img).unwrap();
        let boot = built.boot.start as usize..built.boot.end as usize;
        want[boot.clone()].copy_from_slice(&fs::read(&c.fat).unwrap());
        want
    });
}

#[test]
fn a_raspberry_pi_os_bootfs_fat32_partition_is_found_by_its_label() {
    let f = Fixture::new();
    let built = f.image(
        "rpios",
        &Layout {
            offset_mib: 4,
            boot_mib: 64,
            boot_label: "bootfs".into(),
            boot_fat32: true,
            ..Layout::default()
        },
    );
    let card = f.path("card.img");
    let out = f.flash(&built.img, &card, &[]);
    assert!(out.contains("FAT32, label bootfs"), "{out}");
    read_card(&card, &built);
}

#[test]
fn dry_run_writes_and_records_nothing() {
    let f = Fixture::new();
    let built = f.image("nixos", &Layout::default());
    let zst = image::compress(&built.img);
    let card = f.path("card.img");
    let out = f.flash(&zst, &card, &["--dry-run"]);
    assert!(out.contains("nothing was written or recorded"), "{out}");
    assert!(
        out.contains("MBR partition 1 (FAT16, label FIRMWARE, 30 MiB at 8 MiB)"),
        "{out}"
    );
    assert!(out.contains("device.key"), "{out}");
    assert!(!card.exists(), "the dry run created the target");
    assert!(f.certs().is_empty());
    assert!(f.flashes().is_empty());

    // An existing target is left byte for byte as it was.
    fs::write(&card, b"previous content").unwrap();
    f.flash(&zst, &card, &["--dry-run"]);
    assert_eq!(fs::read(&card).unwrap(), b"previous content");
    assert!(f.certs().is_empty());
}

#[test]
fn re_flashing_an_active_device_needs_replace_and_supersedes_the_old_certificate() {
    let f = Fixture::new();
    let built = f.image("nixos", &Layout::default());
    let card = f.path("card.img");
    f.flash(&built.img, &card, &[]);
    let first = f.certs()[0].0.clone();
    let before = fs::read(&card).unwrap();

    let err = f.flash_fails(&built.img, &card, &[], 2);
    assert!(err.contains("--replace"), "{err}");
    assert_eq!(
        fs::read(&card).unwrap(),
        before,
        "a refused flash changed the card"
    );
    assert_eq!(f.certs().len(), 1);

    f.flash(&built.img, &card, &["--replace"]);
    let certs = f.certs();
    assert_eq!(certs[0], (first, "superseded".to_owned()));
    assert_eq!(certs[1].1, "active");
    assert_eq!(
        read_card(&card, &built).bundle.manifest().serial,
        certs[1].0
    );
}

#[test]
fn reuse_cert_writes_the_active_certificate_from_its_bundle_directory() {
    let f = Fixture::new();
    let built = f.image("nixos", &Layout::default());
    let bundle_dir = f.path("bundles/sensor-007");
    f.ok(&["issue", DEVICE, "--out", s(&bundle_dir)]);
    let serial = f.certs()[0].0.clone();
    let card = f.path("card.img");

    // Without the directory there is no key to write.
    let err = f.flash_fails(&built.img, &card, &["--reuse-cert"], 2);
    assert!(err.contains("--bundle"), "{err}");

    f.flash(
        &built.img,
        &card,
        &["--reuse-cert", "--bundle", s(&bundle_dir)],
    );
    let c = read_card(&card, &built);
    assert_eq!(c.bundle.manifest().serial, serial);
    assert_eq!(
        c.bundle.device_key(),
        fs::read(bundle_dir.join("device.key")).unwrap()
    );
    assert_eq!(f.certs(), [(serial.clone(), "active".to_owned())]);
    assert_eq!(f.flashes()[0]["serial"], serial.as_str());
}
