//! Bad input gets a clear error and changes nothing; a failure after issuance is recorded and
//! revokes the certificate.

use std::fs;

use autoprov_tests::image::{self, Layout};

use crate::{DEVICE, Fixture, s};

/// Nothing recorded and no target created.
fn assert_untouched(f: &Fixture, card: &std::path::Path) {
    assert!(!card.exists(), "{} was created", card.display());
    assert!(f.certs().is_empty(), "{:?}", f.certs());
    assert!(f.flashes().is_empty(), "{:?}", f.flashes());
}

#[test]
fn an_image_without_a_firmware_partition_needs_partition_n() {
    let f = Fixture::new();
    let built = f.image(
        "other",
        &Layout {
            boot_label: "BOOT".into(),
            ..Layout::default()
        },
    );
    let card = f.path("card.img");
    let err = f.fails(
        &["flash", DEVICE, "--image", s(&built.img), "--to", s(&card)],
        2,
    );
    assert!(
        err.contains("no FAT partition labelled FIRMWARE or bootfs"),
        "{err}"
    );
    assert!(err.contains("FAT16 labelled \"BOOT\""), "{err}");
    assert!(err.contains("--partition N"), "{err}");
    assert_untouched(&f, &card);

    let err = f.fails(
        &[
            "flash",
            DEVICE,
            "--image",
            s(&built.img),
            "--to",
            s(&card),
            "--partition",
            "2",
        ],
        2,
    );
    assert!(
        err.contains("partition 2 is not a usable FAT filesystem"),
        "{err}"
    );
    assert_untouched(&f, &card);

    f.ok(&[
        "flash",
        DEVICE,
        "--image",
        s(&built.img),
        "--to",
        s(&card),
        "--partition",
        "1",
    ]);
    crate::read_card(&card, &built);
}

#[test]
fn a_file_that_is_not_a_disk_image_is_refused() {
    let f = Fixture::new();
    let junk = f.path("junk.img");
    fs::write(&junk, vec![7u8; 1 << 20]).unwrap();
    let card = f.path("card.img");
    let err = f.fails(&["flash", DEVICE, "--image", s(&junk), "--to", s(&card)], 2);
    assert!(err.contains("no partition table"), "{err}");
    assert_untouched(&f, &card);
}

#[test]
fn a_boot_partition_too_full_for_the_bundle_costs_no_certificate() {
    let f = Fixture::new();
    let built = f.image(
        "full",
        &Layout {
            boot_mib: 2,
            boot_free: Some(2048),
            ..Layout::default()
        },
    );
    let card = f.path("card.img");
    let err = f.fails(
        &["flash", DEVICE, "--image", s(&built.img), "--to", s(&card)],
        2,
    );
    assert!(err.contains("too full for the bundle"), "{err}");
    assert_untouched(&f, &card);
}

#[test]
fn zstd_truncated_before_the_boot_partition_is_refused_before_issuing() {
    let f = Fixture::new();
    let built = f.image("nixos", &Layout::default());
    let zst = image::compress(&built.img);
    let data = fs::read(&zst).unwrap();
    fs::write(&zst, &data[..200]).unwrap();
    let card = f.path("card.img");
    let err = f.fails(&["flash", DEVICE, "--image", s(&zst), "--to", s(&card)], 2);
    assert!(
        err.contains("corrupt") || err.contains("truncated"),
        "{err}"
    );
    assert_untouched(&f, &card);
}

/// An image whose root partition holds incompressible data, so that its zstd stream goes on well
/// past the boot partition.
fn image_with_data(f: &Fixture) -> image::Built {
    let root = f.path("rootfs");
    fs::create_dir_all(root.join("nix/store")).unwrap();
    let mut noise = vec![0u8; 6 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    fs::write(root.join("nix/store/blob"), &noise).unwrap();
    f.image(
        "data",
        &Layout {
            root_dir: Some(root),
            ..Layout::default()
        },
    )
}

/// The failure happened while writing: recorded as failed, its certificate revoked and in the
/// CRL, and the operator told what to do.
fn assert_failed_and_revoked(f: &Fixture, err: &str) {
    assert!(
        err.contains("flash the device again from an intact image"),
        "{err}"
    );
    let certs = f.certs();
    assert_eq!(certs.len(), 1, "{certs:?}");
    assert_eq!(certs[0].1, "revoked", "{certs:?}");
    assert!(
        err.contains(&format!("certificate {} is revoked", certs[0].0)),
        "{err}"
    );
    let flashes = f.flashes();
    assert_eq!(flashes.len(), 1);
    assert_eq!(flashes[0]["result"], "failed");
    assert_eq!(flashes[0]["serial"], certs[0].0.as_str());
    assert!(crate::crl_lists(f, &certs[0].0));
}

#[test]
fn zstd_truncated_after_the_boot_partition_fails_the_flash_and_revokes_its_certificate() {
    let f = Fixture::new();
    let built = image_with_data(&f);
    let zst = image::compress(&built.img);
    let data = fs::read(&zst).unwrap();
    fs::write(&zst, &data[..data.len() * 3 / 4]).unwrap();
    let card = f.path("card.img");
    let err = f.fails(&["flash", DEVICE, "--image", s(&zst), "--to", s(&card)], 1);
    assert!(err.contains("zstd data is corrupt"), "{err}");
    assert_failed_and_revoked(&f, &err);
}

#[test]
fn corrupt_zstd_fails_the_flash_and_revokes_its_certificate() {
    let f = Fixture::new();
    let built = image_with_data(&f);
    let zst = image::compress(&built.img);
    let mut data = fs::read(&zst).unwrap();
    let at = data.len() * 3 / 4;
    for b in &mut data[at..at + 64] {
        *b ^= 0x5a;
    }
    fs::write(&zst, &data).unwrap();
    let card = f.path("card.img");
    let err = f.fails(&["flash", DEVICE, "--image", s(&zst), "--to", s(&card)], 1);
    assert!(err.contains("zstd data is corrupt"), "{err}");
    assert_failed_and_revoked(&f, &err);
}

#[test]
fn bad_settings_and_wifi_arguments_are_refused_before_anything_happens() {
    let f = Fixture::new();
    let built = f.image("nixos", &Layout::default());
    let card = f.path("card.img");
    let flash = ["flash", DEVICE, "--image", s(&built.img), "--to", s(&card)];
    let with = |extra: &[&'static str]| -> Vec<String> {
        flash.iter().chain(extra).map(|a| (*a).to_owned()).collect()
    };

    let err = f.fails(&with(&["--set", "sensor.intervall=30s"]), 2);
    assert!(err.contains("unknown field `intervall`"), "{err}");
    let err = f.fails(&with(&["--set", "mqtt.port=http"]), 2);
    assert!(err.contains("expected u16"), "{err}");
    // A PSK is never taken from the command line.
    f.fails(&with(&["--wifi-ssid", "Net", "--wifi-psk", "secret123"]), 2);
    f.fails(&with(&["--wifi-ssid", "Net"]), 2);
    let short = f.path("short.psk");
    fs::write(&short, "abc\n").unwrap();
    let mut args = with(&["--wifi-ssid", "Net", "--wifi-psk-file"]);
    args.push(s(&short).to_owned());
    let err = f.fails(&args, 2);
    assert!(err.contains("short.psk"), "{err}");
    assert_untouched(&f, &card);
}

#[test]
fn the_image_itself_and_non_files_are_not_targets() {
    let f = Fixture::new();
    let built = f.image("nixos", &Layout::default());
    let before = fs::read(&built.img).unwrap();
    let err = f.fails(
        &[
            "flash",
            DEVICE,
            "--image",
            s(&built.img),
            "--to",
            s(&built.img),
        ],
        2,
    );
    assert!(err.contains("is the image itself"), "{err}");
    assert_eq!(fs::read(&built.img).unwrap(), before);
    let err = f.fails(
        &[
            "flash",
            DEVICE,
            "--image",
            s(&built.img),
            "--to",
            "/dev/null",
        ],
        2,
    );
    assert!(
        err.contains("not a regular file or a block device"),
        "{err}"
    );
    assert!(f.certs().is_empty());
}
