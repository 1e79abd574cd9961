//! The fleet's certificate authority on disk: `root.crt`/`root.key` and, unless single-tier,
//! `issuing.crt`/`issuing.key`.
//!
//! Each pair is complete or absent. A pair with one file missing is an error that names the
//! missing file and changes nothing: the original script regenerated the CA when one of its files
//! had gone, silently orphaning every device in the field. Keys are written with mode 0600 before
//! their certificates, each file atomically and never over an existing one, and are read (and
//! decrypted, when encrypted) only into memory. The root key is decrypted only when something has
//! to be signed by the root, so day-to-day issuing touches just the issuing key.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rcgen::{Issuer, KeyPair, PublicKeyData};
use x509_parser::prelude::*;

use crate::fsutil::{self, FsError};
use crate::keys::{self, KeyError, KeyType, Passphrase};
use crate::profile::{self, ProfileError, Validity};

/// File name of the root certificate.
pub const ROOT_CERT: &str = "root.crt";
/// File name of the root key.
pub const ROOT_KEY: &str = "root.key";
/// File name of the issuing CA certificate.
pub const ISSUING_CERT: &str = "issuing.crt";
/// File name of the issuing CA key.
pub const ISSUING_KEY: &str = "issuing.key";

/// Why the CA could not be created, read or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// There is no CA in the directory.
    #[error(
        "no CA in {0}: run `autoprov ca init` first (or point --pki-dir / AUTOPROV_PKI_DIR at it)"
    )]
    NotInitialised(PathBuf),
    /// One file of a pair is missing.
    #[error(
        "{missing} is missing while {present} exists: the CA is incomplete. Restore {missing} from your backup; nothing was changed (autoprov never regenerates half a CA, which would orphan every device)"
    )]
    HalfPresent {
        /// The missing file.
        missing: PathBuf,
        /// Its partner, which exists.
        present: PathBuf,
    },
    /// A certificate file does not parse.
    #[error("{0}: not a PEM X.509 certificate ({1})")]
    BadCert(PathBuf, String),
    /// A key file could not be used.
    #[error("{path}: {source}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What went wrong.
        source: KeyError,
    },
    /// The key does not belong to the certificate next to it.
    #[error("{key} does not belong to {cert}: restore the matching pair from your backup")]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// A certificate could not be made.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// rcgen refused to sign.
    #[error("signing failed: {0}")]
    Sign(String),
    /// A file could not be written or read.
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// What `ca init` makes.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// The organisation name in the CA subjects ("<name> Root CA", "<name> Issuing CA").
    pub name: String,
    /// Key type of the CA keys.
    pub key_type: KeyType,
    /// Let the root sign devices directly, without an issuing CA.
    pub single_tier: bool,
    /// Encrypt the CA keys with this passphrase.
    pub encrypt: Option<Passphrase>,
    /// Root validity in days.
    pub root_days: u32,
    /// Issuing CA validity in days.
    pub issuing_days: u32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            name: "autoprov".into(),
            key_type: KeyType::EcdsaP256,
            single_tier: false,
            encrypt: None,
            root_days: profile::ROOT_DAYS,
            issuing_days: profile::ISSUING_DAYS,
        }
    }
}

/// A CA certificate as read from disk.
#[derive(Clone, Debug)]
pub struct CaCert {
    /// The file it was read from.
    pub path: PathBuf,
    /// PEM text.
    pub pem: String,
    /// DER bytes.
    pub der: Vec<u8>,
    /// Subject, RFC 4514 style.
    pub subject: String,
    /// Validity.
    pub validity: Validity,
    /// Key type, e.g. `ecdsa-p256` (or `rsa-3072` for keys autoprov did not make).
    pub key_type: String,
    /// SHA-256 of the DER, lower-case hex (also the AWS certificate id).
    pub fingerprint: String,
    spki: Vec<u8>,
}

impl CaCert {
    fn read(path: &Path) -> Result<Self, CaError> {
        let pem = fsutil::read_string(path)?;
        Self::parse(path, pem)
    }

    fn parse(path: &Path, pem: String) -> Result<Self, CaError> {
        let bad = |e: &dyn std::fmt::Display| CaError::BadCert(path.to_owned(), e.to_string());
        let (_, block) = parse_x509_pem(pem.as_bytes()).map_err(|e| bad(&e))?;
        let der = block.contents;
        let (_, cert) = parse_x509_certificate(&der).map_err(|e| bad(&e))?;
        let validity = Validity {
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
        };
        let key_type = spki_key_type(cert.public_key());
        let subject = cert.subject().to_string();
        let spki = cert.public_key().raw.to_vec();
        Ok(CaCert {
            path: path.to_owned(),
            fingerprint: autoprov_bundle::sha256_hex(&der),
            pem,
            subject,
            validity,
            key_type,
            spki,
            der,
        })
    }
}

/// The key type of a certificate's public key, named like [`KeyType`].
pub fn spki_key_type(spki: &SubjectPublicKeyInfo<'_>) -> String {
    match spki.parsed() {
        Ok(x509_parser::public_key::PublicKey::EC(point)) => {
            // An uncompressed point holds two coordinates after a one-byte prefix.
            format!("ecdsa-p{}", (point.data().len().saturating_sub(1)) * 4)
        }
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => format!("rsa-{}", rsa.key_size()),
        _ => spki.algorithm.algorithm.to_id_string(),
    }
}

/// A key file, read but decrypted only when first needed.
struct LazyKey {
    path: PathBuf,
    pem: zeroize::Zeroizing<String>,
    key: std::sync::OnceLock<zeroize::Zeroizing<KeyPair>>,
}

impl LazyKey {
    fn read(path: PathBuf) -> Result<Self, CaError> {
        let pem = zeroize::Zeroizing::new(fsutil::read_string(&path)?);
        Ok(LazyKey {
            path,
            pem,
            key: std::sync::OnceLock::new(),
        })
    }

    fn get(&self, cert: &CaCert, passphrase: Option<&Passphrase>) -> Result<&KeyPair, CaError> {
        if let Some(key) = self.key.get() {
            return Ok(key);
        }
        let key = keys::from_pem(&self.pem, passphrase).map_err(|source| CaError::Key {
            path: self.path.clone(),
            source,
        })?;
        if key.subject_public_key_info() != cert.spki {
            return Err(CaError::KeyMismatch {
                key: self.path.clone(),
                cert: cert.path.clone(),
            });
        }
        Ok(self.key.get_or_init(|| key))
    }
}

/// An opened CA: certificates parsed, keys decrypted on first use.
pub struct Ca {
    dir: PathBuf,
    root: CaCert,
    root_key: LazyKey,
    issuing: Option<(CaCert, LazyKey)>,
    passphrase: Option<Passphrase>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("dir", &self.dir)
            .field("root", &self.root.subject)
            .field("issuing", &self.issuing.as_ref().map(|(c, _)| &c.subject))
            .finish()
    }
}

/// What is on disk: which pairs exist.
#[derive(Debug, PartialEq, Eq)]
pub enum Layout {
    /// No CA file at all.
    Empty,
    /// Root and issuing pairs.
    TwoTier,
    /// Root pair only.
    SingleTier,
}

/// Looks at which CA files exist; a pair with one file missing is an error naming it.
pub fn layout(dir: &Path) -> Result<Layout, CaError> {
    let pair = |cert: &str, key: &str| -> Result<bool, CaError> {
        let (c, k) = (dir.join(cert), dir.join(key));
        match (c.exists(), k.exists()) {
            (true, true) => Ok(true),
            (false, false) => Ok(false),
            (true, false) => Err(CaError::HalfPresent {
                missing: k,
                present: c,
            }),
            (false, true) => Err(CaError::HalfPresent {
                missing: c,
                present: k,
            }),
        }
    };
    let root = pair(ROOT_CERT, ROOT_KEY)?;
    let issuing = pair(ISSUING_CERT, ISSUING_KEY)?;
    match (root, issuing) {
        (false, false) => Ok(Layout::Empty),
        (true, true) => Ok(Layout::TwoTier),
        (true, false) => Ok(Layout::SingleTier),
        (false, true) => Err(CaError::HalfPresent {
            missing: dir.join(ROOT_CERT),
            present: dir.join(ISSUING_CERT),
        }),
    }
}

fn sign_err(e: rcgen::Error) -> CaError {
    CaError::Sign(e.to_string())
}

fn key_pem(
    key: &KeyPair,
    encrypt: Option<&Passphrase>,
) -> Result<zeroize::Zeroizing<String>, CaError> {
    match encrypt {
        None => Ok(keys::to_pem(key)),
        Some(p) => keys::to_encrypted_pem(key, p)
            .map(zeroize::Zeroizing::new)
            .map_err(|source| CaError::Key {
                path: PathBuf::from(ROOT_KEY),
                source,
            }),
    }
}

impl Ca {
    /// Creates a CA in `dir`. Returns `Ok(false)` and changes nothing if a complete CA is there;
    /// a half-present one is an error.
    pub fn init(dir: &Path, opts: &InitOptions) -> Result<bool, CaError> {
        if layout(dir)? != Layout::Empty {
            return Ok(false);
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(fsutil::at(dir))?;
        let now = profile::now();
        let root_key = opts.key_type.generate().map_err(|source| CaError::Key {
            path: dir.join(ROOT_KEY),
            source,
        })?;
        let root_params = profile::root(
            &opts.name,
            Validity::for_ca(now, opts.root_days)?,
            opts.single_tier,
        )?;
        let root_cert = root_params.self_signed(&*root_key).map_err(sign_err)?;
        let mut files = vec![
            (ROOT_KEY, key_pem(&root_key, opts.encrypt.as_ref())?, 0o600),
            (ROOT_CERT, zeroize::Zeroizing::new(root_cert.pem()), 0o644),
        ];
        if !opts.single_tier {
            let issuing_key = opts.key_type.generate().map_err(|source| CaError::Key {
                path: dir.join(ISSUING_KEY),
                source,
            })?;
            let validity = Validity::for_ca(now, opts.issuing_days)?;
            // An issuing CA that outlives its root would fail to verify at the end of its life.
            let validity = Validity {
                not_after: validity.not_after.min(root_params.not_after),
                ..validity
            };
            let root_issuer = Issuer::new(root_params, &*root_key);
            let cert = profile::issuing(&opts.name, validity)?
                .signed_by(&*issuing_key, &root_issuer)
                .map_err(sign_err)?;
            files.insert(
                1,
                (
                    ISSUING_KEY,
                    key_pem(&issuing_key, opts.encrypt.as_ref())?,
                    0o600,
                ),
            );
            files.push((ISSUING_CERT, zeroize::Zeroizing::new(cert.pem()), 0o644));
        }
        // Keys first: a crash in between leaves a key without its certificate, which `layout`
        // reports, never a certificate whose key was lost.
        for (name, data, mode) in &files {
            fsutil::write_new(&dir.join(name), data.as_bytes(), *mode)?;
        }
        Ok(true)
    }

    /// Opens the CA in `dir`. `passphrase` is needed only if the keys are encrypted; it is kept in
    /// memory (zeroized on drop) to decrypt a key when it is first used.
    pub fn open(dir: &Path, passphrase: Option<Passphrase>) -> Result<Self, CaError> {
        let layout = layout(dir)?;
        if layout == Layout::Empty {
            return Err(CaError::NotInitialised(dir.to_owned()));
        }
        let root = CaCert::read(&dir.join(ROOT_CERT))?;
        let root_key = LazyKey::read(dir.join(ROOT_KEY))?;
        let issuing = if layout == Layout::TwoTier {
            Some((
                CaCert::read(&dir.join(ISSUING_CERT))?,
                LazyKey::read(dir.join(ISSUING_KEY))?,
            ))
        } else {
            None
        };
        Ok(Ca {
            dir: dir.to_owned(),
            root,
            root_key,
            issuing,
            passphrase,
        })
    }

    /// Whether any CA key file is encrypted (so a passphrase will be needed to sign).
    pub fn keys_encrypted(dir: &Path) -> bool {
        [ROOT_KEY, ISSUING_KEY].iter().any(|name| {
            fs::read_to_string(dir.join(name)).is_ok_and(|pem| keys::is_encrypted(&pem))
        })
    }

    /// The directory the CA lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The root certificate.
    pub fn root(&self) -> &CaCert {
        &self.root
    }

    /// The issuing CA certificate, `None` for a single-tier CA.
    pub fn issuing(&self) -> Option<&CaCert> {
        self.issuing.as_ref().map(|(c, _)| c)
    }

    /// The certificate that signs devices: the issuing CA, or the root when single-tier.
    pub fn signer(&self) -> &CaCert {
        self.issuing().unwrap_or(&self.root)
    }

    /// The chain a leaf presents after itself (PEM): the issuing CA, nothing when single-tier.
    pub fn chain_pem(&self) -> &str {
        self.issuing().map(|c| c.pem.as_str()).unwrap_or("")
    }

    /// Decrypts (once) the key of the certificate that signs devices and checks it matches.
    pub fn signer_key(&self) -> Result<&KeyPair, CaError> {
        match &self.issuing {
            Some((cert, key)) => key.get(cert, self.passphrase.as_ref()),
            None => self.root_key.get(&self.root, self.passphrase.as_ref()),
        }
    }

    /// Decrypts (once) the root key and checks it matches.
    pub fn root_key(&self) -> Result<&KeyPair, CaError> {
        self.root_key.get(&self.root, self.passphrase.as_ref())
    }

    /// An rcgen issuer for the certificate that signs devices.
    pub fn signer_issuer(&self) -> Result<Issuer<'static, &KeyPair>, CaError> {
        let cert = self.signer();
        issuer_from(cert, self.signer_key()?)
    }

    /// An rcgen issuer for the root.
    pub fn root_issuer(&self) -> Result<Issuer<'static, &KeyPair>, CaError> {
        issuer_from(&self.root, self.root_key()?)
    }
}

fn issuer_from<'k>(
    cert: &CaCert,
    key: &'k KeyPair,
) -> Result<Issuer<'static, &'k KeyPair>, CaError> {
    let der = rustls_pki_types::CertificateDer::from(cert.der.as_slice());
    Issuer::from_ca_cert_der(&der, key)
        .map_err(|e| CaError::BadCert(cert.path.clone(), e.to_string()))
}
