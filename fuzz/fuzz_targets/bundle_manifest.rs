//! `manifest.toml` as the agent reads it from a card: parsing never panics, and a manifest that
//! parses writes back (as `autoprov` writes it) to text that parses to the same manifest.

#![no_main]

use autoprov_bundle::{Manifest, REQUIRED_FILES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = Manifest::parse(data) else {
        return;
    };
    for name in REQUIRED_FILES {
        assert!(manifest.files.contains_key(name), "{name} not listed");
    }
    let text = manifest.to_toml();
    let again = Manifest::parse(text.as_bytes())
        .unwrap_or_else(|e| panic!("a parsed manifest wrote {text:?}, which does not parse: {e}"));
    assert_eq!(
        again, manifest,
        "the manifest changed on a round trip through {text:?}"
    );
});
