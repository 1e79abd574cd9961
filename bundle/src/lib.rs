//! The device bundle: what makes one card one device.
//!
//! `autoprov` (operator side) writes a bundle into a directory or into the `/autoprov/` folder of a
//! card's FIRMWARE partition; `autoprov-agent import` (device side) reads it back. This crate is the
//! one contract both sides share, so it owns the file names, the manifest format and the integrity
//! check. It does no cryptography beyond SHA-256: whether the key matches the certificate and the
//! chain verifies is the importer's job (the agent has the X.509 code).
//!
//! | file            | content                                                         |
//! |-----------------|-----------------------------------------------------------------|
//! | `manifest.toml` | format version, device id, serial, created-at, SHA-256 of files |
//! | `device.crt`    | PEM chain, leaf first                                           |
//! | `device.key`    | PKCS#8 PEM private key (0600 where the filesystem has modes)    |
//! | `ca.crt`        | the fleet root                                                  |
//! | `device.toml`   | per-device agent settings (at least `[device] id`)              |
//! | `wifi.conf`     | optional Wi-Fi networks (wpa_supplicant syntax)                 |

mod device_id;
mod dir;
mod manifest;

pub use device_id::{DeviceId, InvalidDeviceId, MAX_LEN as DEVICE_ID_MAX_LEN};
pub use dir::{DirError, check_target, write_dir, write_files};
pub use manifest::{FORMAT_VERSION, Manifest};

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Name of the manifest file.
pub const MANIFEST: &str = "manifest.toml";
/// Name of the certificate chain file (leaf first).
pub const DEVICE_CERT: &str = "device.crt";
/// Name of the private key file.
pub const DEVICE_KEY: &str = "device.key";
/// Name of the fleet root certificate file.
pub const CA_CERT: &str = "ca.crt";
/// Name of the per-device settings file.
pub const DEVICE_CONFIG: &str = "device.toml";
/// Name of the optional Wi-Fi settings file.
pub const WIFI_CONF: &str = "wifi.conf";
/// The folder on the FIRMWARE partition that holds the bundle.
pub const CARD_FOLDER: &str = "autoprov";

/// Files every bundle has besides the manifest.
pub const REQUIRED_FILES: [&str; 4] = [DEVICE_CERT, DEVICE_KEY, CA_CERT, DEVICE_CONFIG];
/// Files a bundle may have besides the required ones.
pub const OPTIONAL_FILES: [&str; 1] = [WIFI_CONF];
/// Largest file accepted when reading a bundle: it comes from a card, which is untrusted input.
pub const MAX_FILE_SIZE: usize = 256 * 1024;

/// A complete bundle in memory: manifest plus file contents, hashes consistent by construction.
///
/// File contents are zeroized on drop because one of them is a private key.
#[derive(Clone)]
pub struct Bundle {
    manifest: Manifest,
    files: BTreeMap<String, Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for Bundle {
    // Never print file contents: one of them is the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("manifest", &self.manifest)
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What goes into a new bundle.
pub struct Contents {
    /// The device the bundle belongs to.
    pub device_id: DeviceId,
    /// The leaf certificate's serial number, lower-case hex.
    pub serial: String,
    /// When the bundle was made, RFC 3339 UTC.
    pub created_at: String,
    /// PEM chain, leaf first.
    pub device_crt: Vec<u8>,
    /// PKCS#8 PEM private key.
    pub device_key: Zeroizing<Vec<u8>>,
    /// The fleet root certificate, PEM.
    pub ca_crt: Vec<u8>,
    /// Per-device agent settings, TOML.
    pub device_toml: Vec<u8>,
    /// Optional Wi-Fi networks.
    pub wifi_conf: Option<Zeroizing<Vec<u8>>>,
}

/// Why a set of files is not a valid bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The manifest is missing.
    #[error("no {MANIFEST}: this is not an autoprov bundle")]
    NoManifest,
    /// The manifest does not parse.
    #[error("{MANIFEST}: {0}")]
    BadManifest(String),
    /// The manifest has a format this build does not read.
    #[error(
        "{MANIFEST} has format {found}; this build reads format {FORMAT_VERSION} (update autoprov-agent)"
    )]
    UnsupportedFormat {
        /// The format found.
        found: u32,
    },
    /// A required file is not listed in the manifest.
    #[error("{MANIFEST} does not list {0}, which every bundle must have")]
    NotListed(&'static str),
    /// The manifest lists a file name this format does not know.
    #[error("{MANIFEST} lists {0:?}, which is not a bundle file")]
    UnknownFile(String),
    /// A listed file is absent.
    #[error("{0} is listed in {MANIFEST} but missing")]
    Missing(String),
    /// A file is larger than [`MAX_FILE_SIZE`].
    #[error("{0} is {1} bytes, more than a bundle file can be ({MAX_FILE_SIZE})")]
    TooLarge(String, usize),
    /// A file's SHA-256 differs from the manifest's.
    #[error(
        "{file} does not match {MANIFEST} (SHA-256 {actual}, expected {expected}): the card was altered or damaged"
    )]
    HashMismatch {
        /// The file.
        file: String,
        /// Hash in the manifest.
        expected: String,
        /// Hash of the content.
        actual: String,
    },
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn is_known_file(name: &str) -> bool {
    REQUIRED_FILES.contains(&name) || OPTIONAL_FILES.contains(&name)
}

impl Bundle {
    /// Builds a bundle and its manifest from its contents.
    pub fn new(contents: Contents) -> Self {
        let Contents {
            device_id,
            serial,
            created_at,
            device_crt,
            device_key,
            ca_crt,
            device_toml,
            wifi_conf,
        } = contents;
        let mut files = BTreeMap::new();
        files.insert(DEVICE_CERT.to_owned(), Zeroizing::new(device_crt));
        files.insert(DEVICE_KEY.to_owned(), device_key);
        files.insert(CA_CERT.to_owned(), Zeroizing::new(ca_crt));
        files.insert(DEVICE_CONFIG.to_owned(), Zeroizing::new(device_toml));
        if let Some(wifi) = wifi_conf {
            files.insert(WIFI_CONF.to_owned(), wifi);
        }
        let hashes = files
            .iter()
            .map(|(name, data)| (name.clone(), sha256_hex(data)))
            .collect();
        Self {
            manifest: Manifest {
                format: FORMAT_VERSION,
                device_id,
                serial,
                created_at,
                files: hashes,
            },
            files,
        }
    }

    /// Checks a set of files read from a directory or a card and returns the bundle they form.
    ///
    /// The manifest must be there, in a known format, list every required file and only known
    /// files, and every listed file must be present, of sane size, with the listed SHA-256. Files
    /// not listed in the manifest are ignored.
    pub fn from_files(
        mut read: impl FnMut(&str) -> std::io::Result<Option<Vec<u8>>>,
    ) -> Result<Self, ReadError> {
        let manifest_bytes = read(MANIFEST)?.ok_or(BundleError::NoManifest)?;
        check_size(MANIFEST, manifest_bytes.len())?;
        let manifest = Manifest::parse(&manifest_bytes)?;
        let mut files = BTreeMap::new();
        for (name, expected) in &manifest.files {
            let data =
                Zeroizing::new(read(name)?.ok_or_else(|| BundleError::Missing(name.clone()))?);
            check_size(name, data.len())?;
            let actual = sha256_hex(&data);
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(BundleError::HashMismatch {
                    file: name.clone(),
                    expected: expected.clone(),
                    actual,
                }
                .into());
            }
            files.insert(name.clone(), data);
        }
        Ok(Self { manifest, files })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The device this bundle belongs to.
    pub fn device_id(&self) -> &DeviceId {
        &self.manifest.device_id
    }

    /// A file's content, if the bundle has it.
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(|d| d.as_slice())
    }

    /// The certificate chain, PEM, leaf first.
    pub fn device_crt(&self) -> &[u8] {
        self.required(DEVICE_CERT)
    }

    /// The private key, PKCS#8 PEM.
    pub fn device_key(&self) -> &[u8] {
        self.required(DEVICE_KEY)
    }

    /// The fleet root certificate, PEM.
    pub fn ca_crt(&self) -> &[u8] {
        self.required(CA_CERT)
    }

    /// The per-device agent settings, TOML.
    pub fn device_toml(&self) -> &[u8] {
        self.required(DEVICE_CONFIG)
    }

    /// The Wi-Fi settings, if any.
    pub fn wifi_conf(&self) -> Option<&[u8]> {
        self.file(WIFI_CONF)
    }

    fn required(&self, name: &str) -> &[u8] {
        // Both constructors guarantee the required files: `new` inserts them and `from_files`
        // refuses a manifest that does not list them.
        self.file(name).unwrap_or_default()
    }

    /// Every file to write, manifest last, as (name, content) pairs; the copies are wiped when
    /// dropped, as one of them is the private key.
    ///
    /// Writers should write the manifest last so that a torn write leaves a bundle that fails its
    /// check rather than one that passes with stale files.
    pub fn files(&self) -> Vec<(&str, Zeroizing<Vec<u8>>)> {
        let mut out: Vec<(&str, Zeroizing<Vec<u8>>)> = self
            .files
            .iter()
            .map(|(name, data)| (name.as_str(), data.clone()))
            .collect();
        out.push((
            MANIFEST,
            Zeroizing::new(self.manifest.to_toml().into_bytes()),
        ));
        out
    }

    /// Total size in bytes of every file, manifest included.
    pub fn total_size(&self) -> usize {
        self.files.values().map(|d| d.len()).sum::<usize>() + self.manifest.to_toml().len()
    }
}

fn check_size(name: &str, len: usize) -> Result<(), BundleError> {
    if len > MAX_FILE_SIZE {
        return Err(BundleError::TooLarge(name.to_owned(), len));
    }
    Ok(())
}

/// Reading a bundle failed: the files could not be read, or they are not a valid bundle.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// An I/O error while reading.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The files are not a valid bundle.
    #[error(transparent)]
    Invalid(#[from] BundleError),
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Bundle {
        Bundle::new(Contents {
            device_id: DeviceId::new("sensor-007").unwrap(),
            serial: "4f2a".into(),
            created_at: "2026-12-03T12:00:00Z".into(),
            device_crt: b"-----BEGIN CERTIFICATE-----\nleaf\n".to_vec(),
            device_key: Zeroizing::new(b"-----BEGIN PRIVATE KEY-----\nkey\n".to_vec()),
            ca_crt: b"root".to_vec(),
            device_toml: b"[device]\nid = \"sensor-007\"\n".to_vec(),
            wifi_conf: None,
        })
    }

    fn reader(b: &Bundle) -> impl FnMut(&str) -> std::io::Result<Option<Vec<u8>>> + '_ {
        let files: BTreeMap<String, Vec<u8>> = b
            .files()
            .into_iter()
            .map(|(n, d)| (n.to_owned(), d.to_vec()))
            .collect();
        move |name| Ok(files.get(name).cloned())
    }

    #[test]
    fn round_trips_through_its_files() {
        let b = sample();
        let back = Bundle::from_files(reader(&b)).unwrap();
        assert_eq!(back.manifest(), b.manifest());
        assert_eq!(back.device_key(), b.device_key());
        assert_eq!(back.wifi_conf(), None);
    }

    #[test]
    fn manifest_is_written_last() {
        assert_eq!(sample().files().last().unwrap().0, MANIFEST);
    }

    fn owned_files(b: &Bundle) -> BTreeMap<String, Vec<u8>> {
        b.files()
            .into_iter()
            .map(|(n, d)| (n.to_owned(), d.to_vec()))
            .collect()
    }

    #[test]
    fn tampered_file_is_named() {
        let b = sample();
        let mut files = owned_files(&b);
        files.get_mut(CA_CERT).unwrap().push(b'!');
        let err = Bundle::from_files(|n| Ok(files.get(n).cloned())).unwrap_err();
        assert!(
            matches!(&err, ReadError::Invalid(BundleError::HashMismatch { file, .. }) if file == CA_CERT),
            "{err}"
        );
    }

    #[test]
    fn missing_listed_file_is_named() {
        let b = sample();
        let mut files = owned_files(&b);
        files.remove(DEVICE_KEY);
        let err = Bundle::from_files(|n| Ok(files.get(n).cloned())).unwrap_err();
        assert!(err.to_string().contains("device.key is listed"), "{err}");
    }

    #[test]
    fn oversized_file_is_refused_before_hashing() {
        let err = Bundle::from_files(|_| Ok(Some(vec![b'#'; MAX_FILE_SIZE + 1]))).unwrap_err();
        assert!(
            matches!(err, ReadError::Invalid(BundleError::TooLarge(..))),
            "{err}"
        );
    }

    #[test]
    fn debug_never_shows_the_key() {
        let shown = format!("{:?}", sample());
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    }
}
