//! The boot partition's FAT filesystem as `autoprov flash`/`inject` change it: the bundle
//! already on a card is read, then `/autoprov/` is replaced by a new bundle and read back.
//!
//! Input: a flags byte (unused), the partition length in sectors (`u32` LE, at most 64 MiB),
//! then the partition's first bytes; the rest of the partition is zeros.
//!
//! Invariants: neither reading nor injecting panics or hangs, whatever the boot sector, FATs
//! and directories say; an injection that succeeds reads back as exactly the bundle written.

#![no_main]

use std::sync::LazyLock;

use autoprov::flash::fat;
use autoprov_bundle::{Bundle, MANIFEST};
use autoprov_fuzz::{header, sample_bundle};
use libfuzzer_sys::fuzz_target;

const MAX_SECTORS: usize = 64 << 11;

static BUNDLE: LazyLock<Bundle> = LazyLock::new(sample_bundle);

fuzz_target!(|data: &[u8]| {
    let Some((_, sectors, body)) = header(data) else {
        return;
    };
    let len = (sectors as usize).min(MAX_SECTORS) * 512;
    let mut part = vec![0u8; len.max(body.len())];
    part[..body.len()].copy_from_slice(body);
    let _ = fat::read_bundle(&mut part);
    if fat::inject(&mut part, &BUNDLE).is_err() {
        return;
    }
    let back = fat::read_bundle(&mut part)
        .unwrap_or_else(|e| panic!("the injected bundle does not read back: {e}"))
        .expect("the injected bundle is missing");
    assert_eq!(back.manifest(), BUNDLE.manifest());
    for (name, content) in BUNDLE.files().into_iter().filter(|(n, _)| *n != MANIFEST) {
        assert_eq!(back.file(name), Some(content.as_slice()), "{name}");
    }
});
