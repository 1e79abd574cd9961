//! Bad input gets a clear error and changes nothing; a failure after issuance is recorded and
//! revokes the certificate.

use std::fs;
use std::path::{Path, PathBuf};

use autoprov_tests::image::{self, Built, Layout};

use crate::{Fixture, s};

/// Nothing recorded and no target created.
fn assert_untouched(f: &Fixture, card: &Path) {
    assert!(!card.exists(), "{} was created", card.display());
    assert!(f.certs().is_empty(), "{:?}", f.certs());
    assert!(f.flashes().is_empty(), "{:?}", f.flashes());
}

/// Flashes `image` to `card.img` with `extra`, which must fail with exit code 2 and leave
/// everything untouched; returns the error.
fn refused(f: &Fixture, image: &Path, extra: &[&str]) -> String {
    let card = f.path("card.img");
    let err = f.flash_fails(image, &card, extra, 2);
    assert_untouched(f, &card);
    err
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
    let err = refused(&f, &built.img, &[]);
    assert!(
        err.contains("no FAT partition labelled FIRMWARE or bootfs"),
        "{err}"
    );
    assert!(err.contains("FAT16 labelled \"BOOT\""), "{err}");
    assert!(err.contains("--partition N"), "{err}");

    let err = refused(&f, &built.img, &["--partition", "2"]);
    assert!(
        err.contains("partition 2 is not a usable FAT filesystem"),
        "{err}"
    );

    let card = f.path("card.img");
    f.flash(&built.img, &card, &["--partition", "1"]);
    crate::read_card(&card, &built);
}

#[test]
fn a_file_that_is_not_a_disk_image_is_refused() {
    let f = Fixture::new();
    let junk = f.path("junk.img");
    fs::write(&junk, vec![7u8; 1 << 20]).unwrap();
    let err = refused(&f, &junk, &[]);
    assert!(err.contains("no partition table"), "{err}");
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
    let err = refused(&f, &built.img, &[]);
    assert!(err.contains("too full for the bundle"), "{err}");
}

#[test]
fn zstd_truncated_before_the_boot_partition_is_refused_before_issuing() {
    let f = Fixture::new();
    let built = f.image("nixos", &Layout::default());
    let zst = damaged_zstd(&built, |data| data.truncate(200));
    let err = refused(&f, &zst, &[]);
    assert!(
        err.contains("corrupt") || err.contains("truncated"),
        "{err}"
    );
}

/// `built`'s image compressed with zstd, the stream then changed by `damage`.
fn damaged_zstd(built: &Built, damage: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let zst = image::compress(&built.img);
    let mut data = fs::read(&zst).unwrap();
    damage(&mut data);
    fs::write(&zst, &data).unwrap();
    zst
}

/// An image whose root partition holds incompressible data, so that its zstd stream goes on well
/// past the boot partition.
fn image_with_data(f: &Fixture) -> Built {
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

/// Flashes `image_with_data`'s zstd stream after `damage` to it past the boot partition: the
/// flash fails while writing (exit code 1) on corrupt zstd data, and is recorded and revoked.
fn assert_damaged_stream_fails_the_flash_and_revokes(damage: impl FnOnce(&mut Vec<u8>)) {
    let f = Fixture::new();
    let built = image_with_data(&f);
    let zst = damaged_zstd(&built, damage);
    let card = f.path("card.img");
    let err = f.flash_fails(&zst, &card, &[], 1);
    assert!(err.contains("zstd data is corrupt"), "{err}");
    assert_failed_and_revoked(&f, &err);
}

#[test]
fn zstd_truncated_after_the_boot_partition_fails_the_flash_and_revokes_its_certificate() {
    assert_damaged_stream_fails_the_flash_and_revokes(|data| data.truncate(data.len() * 3 / 4));
}

#[test]
fn corrupt_zstd_fails_the_flash_and_revokes_its_certificate() {
    assert_damaged_stream_fails_the_flash_and_revokes(|data| {
        let at = data.len() * 3 / 4;
        for b in &mut data[at..at + 64] {
            *b ^= 0x5a;
        }
    });
}

#[test]
fn bad_settings_and_wifi_arguments_are_refused_before_anything_happens() {
    let f = Fixture::new();
    let built = f.image("nixos", &Layout::default());
    let card = f.path("card.img");
    let fails = |extra: &[&str]| f.flash_fails(&built.img, &card, extra, 2);

    let err = fails(&["--set", "sensor.intervall=30s"]);
    assert!(err.contains("unknown field `intervall`"), "{err}");
    let err = fails(&["--set", "mqtt.port=http"]);
    assert!(err.contains("expected u16"), "{err}");
    // A PSK is never taken from the command line.
    fails(&["--wifi-ssid", "Net", "--wifi-psk", "secret123"]);
    fails(&["--wifi-ssid", "Net"]);
    let short = f.path("short.psk");
    fs::write(&short, "abc\n").unwrap();
    let err = fails(&["--wifi-ssid", "Net", "--wifi-psk-file", s(&short)]);
    assert!(err.contains("short.psk"), "{err}");
    assert_untouched(&f, &card);
}

#[test]
fn the_image_itself_and_non_files_are_not_targets() {
    let f = Fixture::new();
    let built = f.image("nixos", &Layout::default());
    let before = fs::read(&built.img).unwrap();
    let err = f.flash_fails(&built.img, &built.img, &[], 2);
    assert!(err.contains("is the image itself"), "{err}");
    assert_eq!(fs::read(&built.img).unwrap(), before);
    let err = f.flash_fails(&built.img, Path::new("/dev/null"), &[], 2);
    assert!(
        err.contains("not a regular file or a block device"),
        "{err}"
    );
    assert!(f.certs().is_empty());
}
