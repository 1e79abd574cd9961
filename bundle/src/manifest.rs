//! `manifest.toml`: what the bundle holds and the SHA-256 of each file.
//!
//! ```toml
//! format = 1
//! device_id = "sensor-007"
//! serial = "6b1f…"
//! created_at = "2026-12-03T12:00:00Z"
//!
//! [files]
//! "ca.crt" = "<sha256 hex>"
//! "device.crt" = "<sha256 hex>"
//! "device.key" = "<sha256 hex>"
//! "device.toml" = "<sha256 hex>"
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{BundleError, DeviceId, REQUIRED_FILES, is_known_file};

/// The manifest format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version ([`FORMAT_VERSION`]).
    pub format: u32,
    /// The device the bundle belongs to.
    pub device_id: DeviceId,
    /// The leaf certificate's serial, lower-case hex.
    pub serial: String,
    /// When the bundle was made, RFC 3339 UTC.
    pub created_at: String,
    /// File name → lower-case hex SHA-256.
    pub files: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct FormatOnly {
    format: u32,
}

impl Manifest {
    /// Parses and checks a manifest: known format, every required file listed, only known files,
    /// every hash 64 hex digits.
    pub fn parse(bytes: &[u8]) -> Result<Self, BundleError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| BundleError::BadManifest("not UTF-8 text".into()))?;
        // Read the format first, so a newer manifest gets "update the agent" rather than a
        // complaint about fields this build does not know.
        let FormatOnly { format } =
            toml::from_str(text).map_err(|e| BundleError::BadManifest(e.to_string()))?;
        if format != FORMAT_VERSION {
            return Err(BundleError::UnsupportedFormat { found: format });
        }
        let manifest: Manifest =
            toml::from_str(text).map_err(|e| BundleError::BadManifest(e.to_string()))?;
        for required in REQUIRED_FILES {
            if !manifest.files.contains_key(required) {
                return Err(BundleError::NotListed(required));
            }
        }
        for (name, hash) in &manifest.files {
            if !is_known_file(name) {
                return Err(BundleError::UnknownFile(name.clone()));
            }
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(BundleError::BadManifest(format!(
                    "the SHA-256 of {name} is not 64 hex digits"
                )));
            }
        }
        Ok(manifest)
    }

    /// The manifest as TOML text.
    pub fn to_toml(&self) -> String {
        // Serializing plain strings, integers and a string map cannot fail.
        toml::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::sample;

    #[test]
    fn written_manifest_parses_back() {
        let m = sample().manifest().clone();
        assert_eq!(Manifest::parse(m.to_toml().as_bytes()).unwrap(), m);
    }

    #[test]
    fn newer_format_asks_for_an_update() {
        let err = Manifest::parse(b"format = 2\nsomething_new = true\n").unwrap_err();
        assert!(
            matches!(err, BundleError::UnsupportedFormat { found: 2 }),
            "{err}"
        );
    }

    #[test]
    fn path_like_file_names_are_refused() {
        let mut m = sample().manifest().clone();
        m.files.insert("../../etc/passwd".into(), "0".repeat(64));
        let err = Manifest::parse(m.to_toml().as_bytes()).unwrap_err();
        assert!(matches!(err, BundleError::UnknownFile(_)), "{err}");
    }

    #[test]
    fn unlisted_required_file_is_refused() {
        let mut m = sample().manifest().clone();
        m.files.remove("device.key");
        let err = Manifest::parse(m.to_toml().as_bytes()).unwrap_err();
        assert!(matches!(err, BundleError::NotListed("device.key")), "{err}");
    }

    #[test]
    fn invalid_device_id_is_refused() {
        let text = sample()
            .manifest()
            .to_toml()
            .replace("sensor-007", "Bad Id");
        assert!(matches!(
            Manifest::parse(text.as_bytes()),
            Err(BundleError::BadManifest(_))
        ));
    }
}
