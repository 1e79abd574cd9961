//! `autoprov-agent import` of a bundle from the card: the certificate chain, the key, the root
//! and `device.toml` are untrusted (the manifest's hashes are made consistent here, so the
//! mutations reach the checks behind them; `bundle_manifest` fuzzes the manifest itself).
//!
//! Input: NUL-separated parts: the device id, `device.crt`, `device.key`, `ca.crt`,
//! `device.toml`, and optionally `wifi.conf`.
//!
//! Invariants: a refused bundle changes nothing (no credentials set, the key stays on the card)
//! and its error names a file; an accepted one is installed whole, its key wiped from the card,
//! and importing the same card again is a no-op.

#![no_main]

use std::fs;

use autoprov_agent::import::{ImportOptions, ImportOutcome, import};
use autoprov_bundle::{Bundle, Contents, DEVICE_KEY, DeviceId, MANIFEST, Manifest, write_dir};
use autoprov_fuzz::{scratch, split};
use libfuzzer_sys::fuzz_target;
use zeroize::Zeroizing;

fuzz_target!(|data: &[u8]| {
    let parts = split(data, 6);
    let [id, crt, key, ca, toml, rest @ ..] = parts.as_slice() else {
        return;
    };
    let Ok(device_id) = DeviceId::new(String::from_utf8_lossy(id)) else {
        return;
    };
    let bundle = Bundle::new(Contents {
        device_id,
        serial: "01".into(),
        created_at: "2026-01-01T00:00:00Z".into(),
        device_crt: crt.to_vec(),
        device_key: Zeroizing::new(key.to_vec()),
        ca_crt: ca.to_vec(),
        device_toml: toml.to_vec(),
        wifi_conf: rest.first().map(|w| Zeroizing::new(w.to_vec())),
    });
    let dir = scratch("import");
    let card = dir.join("card");
    let creds = dir.join("credentials");
    write_dir(&bundle, &card, false).expect("writing the card");
    let opts = ImportOptions {
        from: card.clone(),
        to: creds.clone(),
        keep_source: false,
        owner: None,
    };
    match import(&opts) {
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&*card.to_string_lossy()),
                "the error does not name the file: {msg}"
            );
            assert!(!creds.exists(), "a refused bundle left {}", creds.display());
            assert!(
                card.join(DEVICE_KEY).exists(),
                "a refused bundle's key was wiped"
            );
        }
        Ok(ImportOutcome::Imported { serial, .. }) => {
            assert_eq!(serial, bundle.manifest().serial);
            let current = creds.join("current");
            let installed = fs::read(current.join(MANIFEST)).expect("installed manifest");
            assert_eq!(
                &Manifest::parse(&installed).expect("parses"),
                bundle.manifest()
            );
            for (name, content) in bundle.files() {
                assert_eq!(
                    fs::read(current.join(name)).expect("installed file"),
                    content.as_slice()
                );
            }
            assert!(
                !card.join(DEVICE_KEY).exists(),
                "the key was left on the card"
            );
            assert!(matches!(
                import(&opts),
                Ok(ImportOutcome::AlreadyImported { .. })
            ));
        }
        Ok(other) => panic!("a card with a bundle gave {other:?}"),
    }
    let _ = fs::remove_dir_all(&dir);
});
