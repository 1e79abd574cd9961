//! The device's credentials: where they live, how they are loaded and how they are checked.
//!
//! Layout under the state directory: `credentials/current` and `credentials/previous` are
//! symlinks to `credentials/set-<serial>/` directories holding an imported bundle. When systemd
//! passes `device.crt` and `device.key` through `LoadCredential=` (`$CREDENTIALS_DIRECTORY`),
//! those two are read from there instead. The checks (key matches the leaf, chain verifies to
//! the fleet root for client authentication) are rustls' own, so the agent accepts exactly what
//! a TLS server doing WebPKI client verification would accept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use autoprov_bundle::{CA_CERT, DEVICE_CERT, DEVICE_KEY};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use zeroize::Zeroizing;

use crate::x509::{self, CertInfo, DerError};

/// The credentials directory below the state directory.
pub const CREDENTIALS: &str = "credentials";
/// The symlink to the set in use.
pub const CURRENT: &str = "current";
/// The symlink to the set before it, kept for rollback.
pub const PREVIOUS: &str = "previous";

/// `<state>/credentials`.
pub fn credentials_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(CREDENTIALS)
}

/// `<state>/credentials/current`.
pub fn current_dir(state_dir: &Path) -> PathBuf {
    credentials_dir(state_dir).join(CURRENT)
}

/// The crypto provider used everywhere in the agent: ring.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why credentials could not be loaded or do not check out.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// A file could not be read.
    #[error("{}: {source}{hint}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The error.
        source: std::io::Error,
        /// What to do.
        hint: &'static str,
    },
    /// A PEM file holds no certificate.
    #[error("{}: no PEM certificate found", file.display())]
    NoCertificate {
        /// The file.
        file: PathBuf,
    },
    /// The key file holds no usable private key.
    #[error("{}: no PKCS#8, SEC1 or PKCS#1 PEM private key found", file.display())]
    NoKey {
        /// The file.
        file: PathBuf,
    },
    /// The key is of a type rustls cannot sign with.
    #[error("{}: unsupported private key: {reason}", file.display())]
    UnsupportedKey {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// A certificate is not well-formed DER.
    #[error("{}: {source}", file.display())]
    Malformed {
        /// The file.
        file: PathBuf,
        /// The error.
        source: DerError,
    },
    /// The private key does not belong to the leaf certificate.
    #[error("{} does not belong to the first certificate of {}: the bundle mixes two devices' files", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The chain does not verify to the fleet root for client authentication.
    #[error("{} does not verify against {} for TLS client authentication: {reason}", cert.display(), ca.display())]
    Chain {
        /// The certificate file.
        cert: PathBuf,
        /// The root file.
        ca: PathBuf,
        /// rustls' reason.
        reason: String,
    },
}

/// A loaded certificate chain, private key and fleet root.
pub struct Credentials {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
    /// The fleet root(s).
    pub ca: Vec<CertificateDer<'static>>,
    /// Where the chain came from.
    pub cert_file: PathBuf,
    /// Where the key came from.
    pub key_file: PathBuf,
    /// Where the root came from.
    pub ca_file: PathBuf,
}

impl Drop for Credentials {
    fn drop(&mut self) {
        // rustls keeps its own copy for the connection; this one is wiped with the struct.
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

const RUN_IMPORT: &str =
    " (no credentials imported yet? run `autoprov-agent import` from the card's bundle)";

fn read(file: &Path) -> Result<Zeroizing<Vec<u8>>, CredentialsError> {
    std::fs::read(file)
        .map(Zeroizing::new)
        .map_err(|source| CredentialsError::Read {
            file: file.to_owned(),
            hint: if source.kind() == std::io::ErrorKind::NotFound {
                RUN_IMPORT
            } else {
                ""
            },
            source,
        })
}

/// Parses every certificate of a PEM file.
pub fn parse_certs(
    pem: &[u8],
    file: &Path,
) -> Result<Vec<CertificateDer<'static>>, CredentialsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(CredentialsError::NoCertificate {
            file: file.to_owned(),
        });
    }
    Ok(certs)
}

impl Credentials {
    /// Loads the current set from the state directory, the chain and key from
    /// `$CREDENTIALS_DIRECTORY` when systemd set it.
    pub fn load(state_dir: &Path) -> Result<Self, CredentialsError> {
        let current = current_dir(state_dir);
        let secrets = std::env::var_os("CREDENTIALS_DIRECTORY")
            .map(PathBuf::from)
            .unwrap_or_else(|| current.clone());
        Self::load_files(
            &secrets.join(DEVICE_CERT),
            &secrets.join(DEVICE_KEY),
            &current.join(CA_CERT),
        )
    }

    /// Loads the three files from explicit paths.
    pub fn load_files(cert: &Path, key: &Path, ca: &Path) -> Result<Self, CredentialsError> {
        Self::from_pem(&read(cert)?, cert, &read(key)?, key, &read(ca)?, ca)
    }

    /// Parses PEM contents; the paths only name them in errors.
    pub fn from_pem(
        chain_pem: &[u8],
        cert_file: &Path,
        key_pem: &[u8],
        key_file: &Path,
        ca_pem: &[u8],
        ca_file: &Path,
    ) -> Result<Self, CredentialsError> {
        let chain = parse_certs(chain_pem, cert_file)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| CredentialsError::NoKey {
            file: key_file.to_owned(),
        })?;
        let ca = parse_certs(ca_pem, ca_file)?;
        for (cert, file) in chain
            .iter()
            .map(|c| (c, cert_file))
            .chain(ca.iter().map(|c| (c, ca_file)))
        {
            x509::parse(cert).map_err(|source| CredentialsError::Malformed {
                file: file.to_owned(),
                source,
            })?;
        }
        Ok(Self {
            chain,
            key,
            ca,
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            ca_file: ca_file.to_owned(),
        })
    }

    /// The leaf certificate's fields.
    pub fn leaf_info(&self) -> CertInfo {
        // Every certificate was parsed once in `from_pem`.
        x509::parse(&self.chain[0]).unwrap_or_else(|_| CertInfo {
            common_name: None,
            serial: String::new(),
            not_before: 0,
            not_after: 0,
        })
    }

    /// The signing key and chain as rustls uses them for client authentication.
    pub fn certified_key(&self) -> Result<CertifiedKey, CredentialsError> {
        let signer = provider()
            .key_provider
            .load_private_key(self.key.clone_key())
            .map_err(|e| CredentialsError::UnsupportedKey {
                file: self.key_file.clone(),
                reason: e.to_string(),
            })?;
        Ok(CertifiedKey::new(self.chain.clone(), signer))
    }

    /// Checks that the private key belongs to the leaf certificate.
    pub fn check_key_matches(&self) -> Result<(), CredentialsError> {
        self.certified_key()?
            .keys_match()
            .map_err(|_| CredentialsError::KeyMismatch {
                cert: self.cert_file.clone(),
                key: self.key_file.clone(),
            })
    }

    /// Checks that the chain verifies to the fleet root for client authentication at `unix`.
    pub fn verify_chain(&self, unix: i64) -> Result<(), CredentialsError> {
        let chain_err = |reason: String| CredentialsError::Chain {
            cert: self.cert_file.clone(),
            ca: self.ca_file.clone(),
            reason,
        };
        let mut roots = RootCertStore::empty();
        for ca in &self.ca {
            roots
                .add(ca.clone())
                .map_err(|e| chain_err(format!("the root is unusable: {e}")))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| chain_err(e.to_string()))?;
        let at = UnixTime::since_unix_epoch(Duration::from_secs(unix.max(0) as u64));
        verifier
            .verify_client_cert(&self.chain[0], &self.chain[1..], at)
            .map(|_| ())
            .map_err(|e| chain_err(e.to_string()))
    }
}
