//! autoprov, the operator side: the fleet's CA, device and server certificates, the inventory of
//! everything signed, revocation — and the `autoprov` command line built on them.
//!
//! Everything goes through [`Pki`], one PKI directory (`root.crt`, `root.key`, `issuing.crt`,
//! `issuing.key`, `inventory.db`, `crl.pem`):
//!
//! ```no_run
//! use autoprov::{DeviceId, InitOptions, IssueOptions, Pki};
//! # fn main() -> Result<(), autoprov::Error> {
//! let dir = std::path::Path::new("pki");
//! Pki::init(dir, &InitOptions::default())?;            // once; an existing CA is left alone
//! let mut pki = Pki::open(dir, None)?;                  // passphrase if the keys are encrypted
//! let id = DeviceId::new("sensor-007").unwrap();
//! let issued = pki.issue_device(&id, &IssueOptions::default())?; // in memory, recorded `pending`
//! autoprov_bundle::write_dir(&issued.bundle, "out/sensor-007".as_ref(), false).unwrap();
//! pki.activate(&issued, false)?;                        // delivered: `active`
//! // or in one call: pki.issue_to_dir(&id, &IssueOptions::default(), dir, false)?
//! let server = pki.issue_server("broker", &["localhost".into()], &[], &Default::default())?;
//! pki.activate_serial(&server.serial, false)?;
//! pki.revoke(&id, None, "key-compromise")?;            // and crl.pem is regenerated
//! # Ok(()) }
//! ```
//!
//! The device key never touches the operator's disk unless the caller writes the bundle there:
//! [`Pki::issue_device`] returns it in memory inside an [`autoprov_bundle::Bundle`], which
//! `autoprov flash` injects straight into a card image. Between signing and delivery the
//! certificate is `pending` in the inventory (see [`inventory`]); the caller marks it delivered
//! with [`Pki::activate`] or failed with [`Pki::abandon`].

pub mod ca;
pub mod cli;
pub mod cloud;
pub mod crl;
pub mod demo;
pub mod flash;
pub mod fsutil;
pub mod inventory;
pub mod keys;
pub mod profile;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use autoprov_bundle::{Bundle, DeviceId};
pub use ca::{Ca, InitOptions};
pub use inventory::{CertRow, Inventory, Kind, Status};
pub use keys::{KeyType, Passphrase};

use autoprov_bundle::{Contents, DirError, InvalidDeviceId};
use rcgen::{Issuer, KeyPair};
use zeroize::Zeroizing;

use crate::ca::CaError;
use crate::crl::CrlError;
use crate::fsutil::FsError;
use crate::inventory::{Expect, InventoryError, NewCert};
use crate::keys::KeyError;
use crate::profile::{ProfileError, Validity};

/// File name of the inventory in the PKI directory.
pub const INVENTORY: &str = "inventory.db";
/// File name of the CRL in the PKI directory.
pub const CRL: &str = "crl.pem";

/// Everything that can go wrong, by the part that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CA files.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The inventory.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// Generating or reading a key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A certificate profile (validity, names).
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The CRL.
    #[error(transparent)]
    Crl(#[from] CrlError),
    /// Writing a bundle directory.
    #[error("bundle {0}")]
    Bundle(#[from] DirError),
    /// Another file.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// An invalid device id.
    #[error(transparent)]
    DeviceId(#[from] InvalidDeviceId),
    /// Flashing or injecting a card (boxed: its variants carry paths and I/O errors).
    #[error(transparent)]
    Flash(Box<flash::command::FlashError>),
    /// Invalid input not covered above (the message says which and why).
    #[error("{0}")]
    Invalid(String),
    /// Cloud setup files (`aws setup`, `azure setup`).
    #[error(transparent)]
    Cloud(#[from] crate::cloud::CloudError),
    /// rcgen refused to sign.
    #[error("signing failed: {0}")]
    Sign(String),
    /// The CA recorded in the inventory does not match the files (e.g. issuing files deleted).
    #[error("{0}")]
    Mismatch(String),
    /// `autoprov demo`.
    #[error(transparent)]
    Demo(#[from] demo::DemoError),
}

impl Error {
    /// The process exit code for this error: 2 for usage or configuration problems the operator
    /// fixes by changing the command or the PKI directory, 1 for runtime failures.
    pub fn exit_code(&self) -> u8 {
        use InventoryError as I;
        // A CA that cannot be used is the operator's configuration, unless signing or the disk failed.
        let ca = |e: &CaError| match e {
            CaError::Sign(_) | CaError::Fs(_) => 1,
            _ => 2,
        };
        match self {
            Error::Ca(e) | Error::Crl(CrlError::Ca(e)) => ca(e),
            Error::Key(_) | Error::Profile(_) | Error::DeviceId(_) => 2,
            Error::Invalid(_) | Error::Mismatch(_) => 2,
            Error::Inventory(
                I::Missing(_)
                | I::TooNew { .. }
                | I::DeviceActive { .. }
                | I::NothingToRotate(_)
                | I::NotFound(_),
            ) => 2,
            Error::Inventory(_) => 1,
            Error::Crl(CrlError::UnknownReason(_) | CrlError::BadNextUpdate(_)) => 2,
            Error::Crl(_) => 1,
            Error::Bundle(DirError::NotEmpty(_) | DirError::NotADirectory(_)) => 2,
            Error::Bundle(_) | Error::Fs(_) | Error::Sign(_) => 1,
            Error::Cloud(e) => e.exit_code(),
            Error::Flash(e) => e.exit_code(),
            Error::Demo(e) => e.exit_code(),
        }
    }
}

/// Options for a device certificate.
#[derive(Clone, Debug)]
pub struct IssueOptions {
    /// Validity in days (cut at the issuer's end).
    pub days: u32,
    /// The device key's type.
    pub key_type: KeyType,
    /// Extra settings for `device.toml`, merged under `[device] id` (e.g. from `flash --set`).
    pub settings: toml::Table,
    /// Optional Wi-Fi configuration for the bundle.
    pub wifi_conf: Option<Zeroizing<Vec<u8>>>,
}

impl Default for IssueOptions {
    fn default() -> Self {
        IssueOptions {
            days: profile::LEAF_DAYS,
            key_type: KeyType::EcdsaP256,
            settings: toml::Table::new(),
            wifi_conf: None,
        }
    }
}

/// A device certificate issued in memory and recorded `pending`.
#[derive(Debug)]
pub struct Issued {
    /// The bundle to deliver: certificate chain, key, root, device.toml, manifest.
    pub bundle: Bundle,
    /// Serial, lower-case hex.
    pub serial: String,
    /// SHA-256 of the certificate DER, hex (the AWS certificate id).
    pub fingerprint: String,
    /// Validity end, RFC 3339.
    pub not_after: String,
    /// The leaf certificate, DER.
    pub der: Vec<u8>,
}

/// Options for a server certificate.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Validity in days.
    pub days: u32,
    /// Key type.
    pub key_type: KeyType,
    /// IP addresses to put in the SAN.
    pub ips: Vec<IpAddr>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            days: profile::LEAF_DAYS,
            key_type: KeyType::EcdsaP256,
            ips: Vec::new(),
        }
    }
}

/// A server certificate issued in memory and recorded `pending`.
pub struct IssuedServer {
    /// PEM chain, leaf first (`server.crt`).
    pub chain_pem: String,
    /// PKCS#8 PEM key (`server.key`).
    pub key_pem: Zeroizing<String>,
    /// The root, PEM (`ca.crt`).
    pub ca_pem: String,
    /// Serial, lower-case hex.
    pub serial: String,
    /// Validity end, RFC 3339.
    pub not_after: String,
}

impl std::fmt::Debug for IssuedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedServer")
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

/// Which CA signs a verification certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signer {
    /// The root.
    Root,
    /// The issuing CA (the root when single-tier).
    Issuing,
}

/// What `ca init` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitOutcome {
    /// A new CA was created.
    Created,
    /// A CA was there already; nothing changed.
    AlreadyInitialised,
    /// A CA was there but its inventory was missing; an empty one was created.
    InventoryRecreated,
}

/// A certificate signed in memory, not yet recorded.
struct Signed {
    subject: String,
    serial: String,
    der: Vec<u8>,
    pem: String,
    key_pem: Zeroizing<String>,
    validity: Validity,
    key_type: KeyType,
}

impl Signed {
    fn record(&self, kind: Kind) -> NewCert {
        NewCert {
            serial: self.serial.clone(),
            kind,
            subject: self.subject.clone(),
            fingerprint: autoprov_bundle::sha256_hex(&self.der),
            key_type: self.key_type.name().to_owned(),
            not_before: profile::rfc3339(self.validity.not_before),
            not_after: profile::rfc3339(self.validity.not_after),
            der: self.der.clone(),
        }
    }
}

/// The PKI directory opened: CA plus inventory.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    ca: Ca,
    inventory: Inventory,
}

const META_TIERS: &str = "ca_tiers";
const META_ROOT: &str = "root_fingerprint";

impl Pki {
    /// Creates the CA and the inventory in `dir`, or leaves an existing CA alone.
    pub fn init(dir: &Path, opts: &InitOptions) -> Result<InitOutcome, Error> {
        let created = Ca::init(dir, opts)?;
        let db = dir.join(INVENTORY);
        let had_inventory = db.exists();
        if !created && had_inventory {
            return Ok(InitOutcome::AlreadyInitialised);
        }
        let mut inventory = Inventory::open(&db, true, inventory::DEFAULT_LOCK_TIMEOUT)?;
        let ca = Ca::open(dir, None)?;
        let tiers = if ca.issuing().is_some() { "2" } else { "1" };
        inventory.set_meta(META_TIERS, tiers)?;
        inventory.set_meta(META_ROOT, &ca.root().fingerprint)?;
        Ok(if created {
            InitOutcome::Created
        } else {
            InitOutcome::InventoryRecreated
        })
    }

    /// Opens the PKI in `dir`. `passphrase` is used only if the CA keys are encrypted.
    pub fn open(dir: &Path, passphrase: Option<Passphrase>) -> Result<Pki, Error> {
        Self::open_with(dir, passphrase, inventory::DEFAULT_LOCK_TIMEOUT)
    }

    /// [`Pki::open`] with the time to wait for another process holding the inventory.
    pub fn open_with(
        dir: &Path,
        passphrase: Option<Passphrase>,
        lock_timeout: Duration,
    ) -> Result<Pki, Error> {
        let ca = Ca::open(dir, passphrase)?;
        let inventory = Inventory::open(&dir.join(INVENTORY), false, lock_timeout)?;
        if let Some(root) = inventory.meta(META_ROOT)?
            && root != ca.root().fingerprint
        {
            return Err(Error::Mismatch(format!(
                "{} is not the root this inventory was made for (SHA-256 {root}); restore the original root.crt or use the matching --pki-dir",
                ca.root().path.display()
            )));
        }
        if inventory.meta(META_TIERS)?.as_deref() == Some("2") && ca.issuing().is_none() {
            return Err(Error::Mismatch(format!(
                "{} and {} are missing: this CA was created with an issuing CA; restore both from your backup",
                dir.join(ca::ISSUING_CERT).display(),
                dir.join(ca::ISSUING_KEY).display()
            )));
        }
        Ok(Pki {
            dir: dir.to_owned(),
            ca,
            inventory,
        })
    }

    /// The PKI directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// The inventory (e.g. to record flashes).
    pub fn inventory(&mut self) -> &mut Inventory {
        &mut self.inventory
    }

    fn signer(&self) -> Result<(Issuer<'static, &KeyPair>, Validity), Error> {
        Ok((self.ca.signer_issuer()?, self.ca.signer().validity))
    }

    fn sign_one(
        issuer: &Issuer<'_, &KeyPair>,
        issuer_validity: &Validity,
        subject: &str,
        key_type: KeyType,
        days: u32,
        make: impl FnOnce(Validity, rcgen::SerialNumber) -> Result<rcgen::CertificateParams, Error>,
    ) -> Result<Signed, Error> {
        let validity = Validity::for_leaf(profile::now(), days, issuer_validity)?;
        let serial = profile::random_serial()?;
        let serial_hex = profile::serial_hex(&serial);
        let key = key_type.generate()?;
        let cert = make(validity, serial)?
            .signed_by(&*key, issuer)
            .map_err(|e| Error::Sign(e.to_string()))?;
        Ok(Signed {
            subject: subject.to_owned(),
            serial: serial_hex,
            der: cert.der().to_vec(),
            pem: cert.pem(),
            key_pem: keys::to_pem(&key),
            validity,
            key_type,
        })
    }

    fn bundle(&self, signed: Signed, id: &DeviceId, opts: &IssueOptions) -> Result<Issued, Error> {
        let mut settings = opts.settings.clone();
        let device = settings
            .entry("device")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(device) = device.as_table_mut() else {
            return Err(Error::Invalid(
                "device settings: `device` must be a table".into(),
            ));
        };
        if let Some(other) = device.get("id").and_then(|v| v.as_str())
            && other != id.as_str()
        {
            return Err(Error::Invalid(format!(
                "device settings set device.id = {other:?}, but the certificate is for {id}"
            )));
        }
        device.insert("id".into(), toml::Value::String(id.to_string()));
        let device_toml = toml::to_string(&settings)
            .map_err(|e| Error::Invalid(format!("device settings: {e}")))?;
        let fingerprint = autoprov_bundle::sha256_hex(&signed.der);
        let not_after = profile::rfc3339(signed.validity.not_after);
        let device_crt = format!("{}{}", signed.pem, self.ca.chain_pem()).into_bytes();
        let bundle = Bundle::new(Contents {
            device_id: id.clone(),
            serial: signed.serial.clone(),
            created_at: profile::rfc3339(profile::now()),
            device_crt,
            device_key: Zeroizing::new(signed.key_pem.as_bytes().to_vec()),
            ca_crt: self.ca.root().pem.clone().into_bytes(),
            device_toml: device_toml.into_bytes(),
            wifi_conf: opts.wifi_conf.clone(),
        });
        Ok(Issued {
            bundle,
            serial: signed.serial,
            fingerprint,
            not_after,
            der: signed.der,
        })
    }

    fn issue_checked(
        &mut self,
        ids: &[DeviceId],
        opts: &IssueOptions,
        expect: Expect,
    ) -> Result<Vec<Issued>, Error> {
        let (issuer, issuer_validity) = self.signer()?;
        let sign = |id: &DeviceId| {
            Self::sign_one(
                &issuer,
                &issuer_validity,
                id.as_str(),
                opts.key_type,
                opts.days,
                |v, s| Ok(profile::device(id.as_str(), v, s)),
            )
        };
        // Key generation and signing dominate bulk issuance; spread them over the cores.
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(ids.len().max(1));
        let chunk = ids.len().div_ceil(threads).max(1);
        let signed: Vec<Signed> = std::thread::scope(|s| {
            let handles: Vec<_> = ids
                .chunks(chunk)
                .map(|part| s.spawn(move || part.iter().map(sign).collect::<Result<Vec<_>, _>>()))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Sign("signing thread panicked".into())))
                })
                .collect::<Result<Vec<_>, _>>()
        })?
        .into_iter()
        .flatten()
        .collect();
        drop(issuer);
        let rows: Vec<NewCert> = signed.iter().map(|s| s.record(Kind::Device)).collect();
        let now = profile::rfc3339(profile::now());
        self.inventory.record_pending(&rows, expect, &now)?;
        signed
            .into_iter()
            .zip(ids)
            .map(|(s, id)| self.bundle(s, id, opts))
            .collect()
    }

    /// A bundle shaped like the one [`Pki::issue_device`] would make — same profile, key type,
    /// chain, root and settings — around a self-signed placeholder certificate that the CA never
    /// signed and the inventory never sees. For dry runs, and to check that a bundle fits on a
    /// card before a real certificate is issued for it. Needs no CA key.
    pub fn preview_device(&self, id: &DeviceId, opts: &IssueOptions) -> Result<Bundle, Error> {
        let validity = Validity::for_leaf(profile::now(), opts.days, &self.ca.signer().validity)?;
        let serial = profile::random_serial()?;
        let serial_hex = profile::serial_hex(&serial);
        let key = opts.key_type.generate()?;
        let cert = profile::device(id.as_str(), validity, serial)
            .self_signed(&*key)
            .map_err(|e| Error::Sign(e.to_string()))?;
        let signed = Signed {
            subject: id.to_string(),
            serial: serial_hex,
            der: cert.der().to_vec(),
            pem: cert.pem(),
            key_pem: keys::to_pem(&key),
            validity,
            key_type: opts.key_type,
        };
        Ok(self.bundle(signed, id, opts)?.bundle)
    }

    /// Issues a device certificate in memory and records it `pending`. A device that already has
    /// an active certificate is refused (use [`Pki::rotate_device`]).
    pub fn issue_device(&mut self, id: &DeviceId, opts: &IssueOptions) -> Result<Issued, Error> {
        let mut v = self.issue_checked(std::slice::from_ref(id), opts, Expect::NoActive)?;
        v.pop().ok_or_else(|| Error::Sign("nothing issued".into()))
    }

    /// Issues many device certificates at once: signed in parallel, recorded in one transaction
    /// (all or none). The fast path for bulk issuance and tests.
    pub fn issue_devices(
        &mut self,
        ids: &[DeviceId],
        opts: &IssueOptions,
    ) -> Result<Vec<Issued>, Error> {
        self.issue_checked(ids, opts, Expect::NoActive)
    }

    /// Issues a replacement certificate for a device that has an active one, recorded `pending`;
    /// the old one is superseded (or revoked) when the new one is activated.
    pub fn rotate_device(&mut self, id: &DeviceId, opts: &IssueOptions) -> Result<Issued, Error> {
        let mut v = self.issue_checked(std::slice::from_ref(id), opts, Expect::Active)?;
        v.pop().ok_or_else(|| Error::Sign("nothing issued".into()))
    }

    /// Marks an issued certificate delivered. The subject's previous certificate becomes
    /// superseded, or revoked if `revoke_previous`; `crl.pem` is regenerated if anything was
    /// revoked on the way.
    pub fn activate(&mut self, issued: &Issued, revoke_previous: bool) -> Result<(), Error> {
        self.activate_serials(&[&issued.serial], revoke_previous)
    }

    /// [`Pki::activate`] by serial (for server certificates).
    pub fn activate_serial(&mut self, serial: &str, revoke_previous: bool) -> Result<(), Error> {
        self.activate_serials(&[serial], revoke_previous)
    }

    /// Marks many issued certificates delivered in one transaction.
    pub fn activate_all(&mut self, issued: &[Issued]) -> Result<(), Error> {
        let serials: Vec<&str> = issued.iter().map(|i| i.serial.as_str()).collect();
        self.activate_serials(&serials, false)
    }

    fn activate_serials(&mut self, serials: &[&str], revoke_previous: bool) -> Result<(), Error> {
        let now = profile::rfc3339(profile::now());
        let revoked = self.inventory.activate(serials, revoke_previous, &now)?;
        if !revoked.is_empty() {
            self.write_crl(crl::NEXT_UPDATE_DAYS)?;
        }
        Ok(())
    }

    /// Marks an issued certificate undelivered: it is revoked (its bundle may exist in part) and
    /// `crl.pem` regenerated.
    pub fn abandon(&mut self, serial: &str, why: &str) -> Result<(), Error> {
        let now = profile::rfc3339(profile::now());
        self.inventory.abandon(serial, why, &now)?;
        self.write_crl(crl::NEXT_UPDATE_DAYS)?;
        Ok(())
    }

    /// Issues a device certificate and writes its bundle to `dir` atomically; activates it once
    /// written, abandons it if writing failed. A `dir` that cannot be written to is refused
    /// before anything is signed.
    pub fn issue_to_dir(
        &mut self,
        id: &DeviceId,
        opts: &IssueOptions,
        dir: &Path,
        force: bool,
    ) -> Result<Issued, Error> {
        autoprov_bundle::check_target(dir, force)?;
        let issued = self.issue_device(id, opts)?;
        self.deliver(issued, dir, force, false)
    }

    /// Rotates a device's certificate into a bundle in `dir` (see [`Pki::rotate_device`]).
    pub fn rotate_to_dir(
        &mut self,
        id: &DeviceId,
        opts: &IssueOptions,
        dir: &Path,
        force: bool,
        revoke_previous: bool,
    ) -> Result<Issued, Error> {
        autoprov_bundle::check_target(dir, force)?;
        let issued = self.rotate_device(id, opts)?;
        self.deliver(issued, dir, force, revoke_previous)
    }

    fn deliver(
        &mut self,
        issued: Issued,
        dir: &Path,
        force: bool,
        revoke_previous: bool,
    ) -> Result<Issued, Error> {
        if let Err(e) = autoprov_bundle::write_dir(&issued.bundle, dir, force) {
            // The write is all-or-nothing, but revoking is right even if it was not.
            let why = format!("bundle not written to {}: {e}", dir.display());
            let _ = self.abandon(&issued.serial, &why);
            return Err(e.into());
        }
        self.activate(&issued, revoke_previous)?;
        Ok(issued)
    }

    /// Issues a TLS server certificate (serverAuth, SANs) in memory, recorded `pending`.
    pub fn issue_server(
        &mut self,
        name: &str,
        dns: &[String],
        ips: &[IpAddr],
        opts: &ServerOptions,
    ) -> Result<IssuedServer, Error> {
        validate_server_name(name)?;
        let (issuer, issuer_validity) = self.signer()?;
        let mut all_ips = opts.ips.clone();
        all_ips.extend_from_slice(ips);
        let signed = Self::sign_one(
            &issuer,
            &issuer_validity,
            name,
            opts.key_type,
            opts.days,
            |v, s| Ok(profile::server(name, dns, &all_ips, v, s)?),
        )?;
        drop(issuer);
        let now = profile::rfc3339(profile::now());
        self.inventory
            .record_pending(&[signed.record(Kind::Server)], Expect::Any, &now)?;
        Ok(IssuedServer {
            chain_pem: format!("{}{}", signed.pem, self.ca.chain_pem()),
            key_pem: signed.key_pem,
            ca_pem: self.ca.root().pem.clone(),
            not_after: profile::rfc3339(signed.validity.not_after),
            serial: signed.serial,
        })
    }

    /// Revokes a device's certificates that are not yet revoked (or only `serial`), regenerates
    /// `crl.pem`, and returns what was revoked.
    pub fn revoke(
        &mut self,
        id: &DeviceId,
        serial: Option<&str>,
        reason: &str,
    ) -> Result<(Vec<CertRow>, crl::Crl), Error> {
        crl::reason(reason)?;
        let serial = serial.map(normalize_serial);
        let now = profile::rfc3339(profile::now());
        let rows =
            self.inventory
                .revoke(Kind::Device, id.as_str(), serial.as_deref(), reason, &now)?;
        let crl = self.write_crl(crl::NEXT_UPDATE_DAYS)?;
        Ok((rows, crl))
    }

    /// Signs a CRL of every revoked certificate and writes it to `crl.pem`.
    pub fn write_crl(&mut self, next_update_days: u32) -> Result<crl::Crl, Error> {
        let rows = self.inventory.revoked()?;
        let number = self.inventory.next_crl_number()?;
        let crl = crl::build(&self.ca, &rows, number, next_update_days)?;
        fsutil::write_replace(&self.dir.join(CRL), crl.pem.as_bytes(), 0o644)?;
        Ok(crl)
    }

    /// Every certificate in the inventory.
    pub fn list(&self) -> Result<Vec<CertRow>, Error> {
        Ok(self.inventory.list()?)
    }

    /// A proof-of-possession certificate with CN = `code`, signed by the chosen CA, PEM. Its own
    /// key is thrown away: only the signature matters.
    pub fn verification_cert(&self, code: &str, signer: Signer) -> Result<String, Error> {
        if code.is_empty()
            || code.len() > 64
            || !code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(Error::Invalid(format!(
                "verification code {code:?} must be 1 to 64 letters, digits or '-' (paste the code AWS or Azure shows)"
            )));
        }
        let (issuer, cert) = match signer {
            Signer::Root => (self.ca.root_issuer()?, self.ca.root()),
            Signer::Issuing => (self.ca.signer_issuer()?, self.ca.signer()),
        };
        let validity =
            Validity::for_leaf(profile::now(), profile::VERIFICATION_DAYS, &cert.validity)?;
        let key = KeyType::EcdsaP256.generate()?;
        let cert = profile::verification(code, validity)?
            .signed_by(&*key, &issuer)
            .map_err(|e| Error::Sign(e.to_string()))?;
        Ok(cert.pem())
    }
}

/// Accepts a serial as printed by autoprov, OpenSSL (`4F:2A:…`) or AWS, and returns lower-case hex.
pub fn normalize_serial(s: &str) -> String {
    s.chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase()
}

fn validate_server_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && !name.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "server name {name:?} must be 1 to 64 letters, digits, '.', '-' or '_' (it becomes the certificate CN)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_accepted_in_openssl_notation() {
        assert_eq!(normalize_serial("4F:2A:0b"), "4f2a0b");
    }

    #[test]
    fn server_names_are_checked() {
        validate_server_name("mqtt.example.net").unwrap();
        assert!(validate_server_name("a/b").is_err());
        assert!(validate_server_name("").is_err());
    }
}
