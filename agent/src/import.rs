//! `autoprov-agent import`: install the bundle from the card as the device's credentials.
//!
//! Atomic and idempotent. The bundle is read with `autoprov_bundle` (manifest, hashes, sizes),
//! then checked here: the key matches the leaf, the chain verifies to the bundled root for client
//! authentication, the leaf's CN is the manifest's device id, and `device.toml` is valid agent
//! configuration for the same device. Only then is it written, whole, into a new
//! `credentials/set-<serial>/` directory; `previous` is pointed at the old set and `current` at
//! the new one, each by renaming a fresh symlink over the old (atomic). Sets no longer referenced
//! are removed. Finally the private key on the card is overwritten and deleted, unless
//! `--keep-source`. A bundle that fails a check changes nothing.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use autoprov_bundle::{
    Bundle, DEVICE_CONFIG, DEVICE_KEY, MANIFEST, Manifest, ReadError, write_dir,
};

use crate::clock::unix_now;
use crate::config::{Config, ConfigError};
use crate::credentials::{CURRENT, Credentials, CredentialsError, PREVIOUS};

/// What to import and how.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The bundle directory (on the card).
    pub from: PathBuf,
    /// The credentials directory (`<state>/credentials`).
    pub to: PathBuf,
    /// Leave the private key on the card.
    pub keep_source: bool,
    /// Give the imported files to this user (name from /etc/passwd, or `uid[:gid]`).
    pub owner: Option<String>,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    /// No bundle at the source.
    NothingToImport,
    /// The same bundle is already the current set.
    AlreadyImported {
        /// Its certificate serial.
        serial: String,
    },
    /// A new set was installed.
    Imported {
        /// The device.
        device_id: String,
        /// The new certificate serial.
        serial: String,
        /// The set that is now `previous`, if any.
        previous: Option<String>,
    },
}

/// Why an import failed (nothing was changed).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The bundle is unreadable or inconsistent with its manifest.
    #[error("bundle {}: {source}", dir.display())]
    Bundle {
        /// The bundle directory.
        dir: PathBuf,
        /// Why.
        source: ReadError,
    },
    /// The certificates and key do not check out.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The leaf's CN is not the device id of the manifest.
    #[error("{}: the certificate is for {cn:?} but the manifest says {device_id:?}", file.display())]
    WrongDevice {
        /// The certificate file.
        file: PathBuf,
        /// The leaf's CN.
        cn: Option<String>,
        /// The manifest's device id.
        device_id: String,
    },
    /// `device.toml` is not valid configuration, or names another device.
    #[error("{0}")]
    DeviceConfig(String),
    /// `--owner` names no user.
    #[error("--owner {0:?}: no such user in /etc/passwd (give a user name or uid[:gid])")]
    Owner(String),
    /// Writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ImportError + '_ {
    move |source| ImportError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Imports the bundle at `opts.from` into `opts.to`.
pub fn import(opts: &ImportOptions) -> Result<ImportOutcome, ImportError> {
    let manifest_path = opts.from.join(MANIFEST);
    let Some(manifest_bytes) = read_if_exists(&manifest_path)? else {
        return Ok(ImportOutcome::NothingToImport);
    };
    let owner = opts.owner.as_deref().map(resolve_owner).transpose()?;
    let current = opts.to.join(CURRENT);
    // Compared parsed, not byte for byte: the card's copy may differ in formatting only.
    let on_card = Manifest::parse(&manifest_bytes).ok();
    let installed = read_if_exists(&current.join(MANIFEST))?.and_then(|b| Manifest::parse(&b).ok());
    if let (Some(card), Some(installed)) = (&on_card, &installed)
        && card == installed
    {
        let serial = card.serial.clone();
        // A crash between switching and wiping the key leaves it on the card: finish the job.
        if !opts.keep_source {
            wipe(&opts.from.join(DEVICE_KEY))?;
        }
        return Ok(ImportOutcome::AlreadyImported { serial });
    }
    let bundle = Bundle::read_dir(&opts.from).map_err(|source| ImportError::Bundle {
        dir: opts.from.clone(),
        source,
    })?;
    verify(&bundle, &opts.from)?;

    fs::create_dir_all(&opts.to).map_err(io_at(&opts.to))?;
    let serial = sanitize(&bundle.manifest().serial);
    let set_name = free_set_name(&opts.to, &serial, bundle.manifest().to_toml().as_bytes());
    let set_dir = opts.to.join(&set_name);
    write_dir(&bundle, &set_dir, false).map_err(|e| ImportError::Io {
        path: set_dir.clone(),
        source: io::Error::other(e.to_string()),
    })?;
    if let Some((uid, gid)) = owner
        && let Err(e) = chown_tree(&set_dir, uid, gid)
    {
        let _ = fs::remove_dir_all(&set_dir);
        return Err(e);
    }
    let old = fs::read_link(&current).ok();
    let old_name = old
        .as_ref()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned());
    if let Some(old_name) = &old_name {
        switch_link(&opts.to, PREVIOUS, old_name)?;
    }
    switch_link(&opts.to, CURRENT, &set_name)?;
    remove_unreferenced_sets(&opts.to)?;
    if !opts.keep_source {
        wipe(&opts.from.join(DEVICE_KEY))?;
    }
    Ok(ImportOutcome::Imported {
        device_id: bundle.device_id().to_string(),
        serial: bundle.manifest().serial.clone(),
        previous: old_name,
    })
}

/// The checks the bundle format leaves to the device: key, chain, identity, settings.
fn verify(bundle: &Bundle, from: &Path) -> Result<(), ImportError> {
    let creds = Credentials::from_pem(
        bundle.device_crt(),
        &from.join(autoprov_bundle::DEVICE_CERT),
        bundle.device_key(),
        &from.join(DEVICE_KEY),
        bundle.ca_crt(),
        &from.join(autoprov_bundle::CA_CERT),
    )?;
    creds.check_key_matches()?;
    let leaf = creds.leaf_info();
    // The Pi has no RTC: before time sync the clock may read 1970, so a clock earlier than the
    // certificate is taken as the certificate's start rather than failing the import.
    creds.verify_chain(unix_now().max(leaf.not_before))?;
    let device_id = bundle.device_id().as_str();
    if leaf.common_name.as_deref() != Some(device_id) {
        return Err(ImportError::WrongDevice {
            file: creds.cert_file.clone(),
            cn: leaf.common_name,
            device_id: device_id.to_owned(),
        });
    }
    let config_file = from.join(DEVICE_CONFIG);
    let text = std::str::from_utf8(bundle.device_toml()).map_err(|_| {
        ImportError::DeviceConfig(format!("{}: not UTF-8 text", config_file.display()))
    })?;
    let name = config_file.display().to_string();
    let config = Config::from_texts(&[(&name, text)])
        .map_err(|e: ConfigError| ImportError::DeviceConfig(e.to_string()))?;
    match &config.device_id {
        Some(id) if id.as_str() == device_id => Ok(()),
        other => Err(ImportError::DeviceConfig(format!(
            "{name}: [device] id is {:?} but the bundle is for {device_id:?}",
            other.as_ref().map(|i| i.as_str())
        ))),
    }
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, ImportError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(path)(e)),
    }
}

fn sanitize(serial: &str) -> String {
    let s: String = serial
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(40)
        .collect();
    if s.is_empty() { "unknown".into() } else { s }
}

/// `set-<serial>`, or with a manifest-hash suffix when a different set already has that name
/// (the same certificate re-issued with other settings).
fn free_set_name(to: &Path, serial: &str, manifest: &[u8]) -> String {
    let plain = format!("set-{serial}");
    if !to.join(&plain).exists() {
        return plain;
    }
    let hash = autoprov_bundle::sha256_hex(manifest);
    let named = format!("set-{serial}-{}", &hash[..12]);
    // An earlier failed attempt with the same content may have left it: replace it.
    let _ = fs::remove_dir_all(to.join(&named));
    named
}

fn switch_link(dir: &Path, name: &str, target: &str) -> Result<(), ImportError> {
    let tmp = dir.join(format!(".{name}.new"));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(io_at(&tmp))?;
    let link = dir.join(name);
    fs::rename(&tmp, &link).map_err(io_at(&link))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

fn remove_unreferenced_sets(to: &Path) -> Result<(), ImportError> {
    let keep: Vec<_> = [CURRENT, PREVIOUS]
        .iter()
        .filter_map(|l| fs::read_link(to.join(l)).ok())
        .filter_map(|p| p.file_name().map(|n| n.to_owned()))
        .collect();
    for entry in fs::read_dir(to).map_err(io_at(to))? {
        let entry = entry.map_err(io_at(to))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("set-") && !keep.contains(&name) {
            fs::remove_dir_all(entry.path()).map_err(io_at(&entry.path()))?;
        }
    }
    Ok(())
}

/// Overwrites a file with zeros, syncs, and deletes it (no-op if it does not exist).
///
/// On FAT and SD cards this is a best effort (wear levelling may keep old blocks), which is why
/// the key on the card exists only between flashing and first boot.
fn wipe(path: &Path) -> Result<(), ImportError> {
    let len = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_at(path)(e)),
    };
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_at(path))?;
    f.write_all(&vec![0u8; len as usize]).map_err(io_at(path))?;
    f.sync_all().map_err(io_at(path))?;
    drop(f);
    fs::remove_file(path).map_err(io_at(path))
}

/// Resolves `--owner`: a user name from /etc/passwd, or `uid` / `uid:gid`.
fn resolve_owner(owner: &str) -> Result<(u32, u32), ImportError> {
    let numeric = |s: &str| s.parse::<u32>().ok();
    if let Some((u, g)) = owner.split_once(':')
        && let (Some(u), Some(g)) = (numeric(u), numeric(g))
    {
        return Ok((u, g));
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 4
            && (fields[0] == owner || numeric(owner).is_some() && fields[2] == owner)
            && let (Some(u), Some(g)) = (numeric(fields[2]), numeric(fields[3]))
        {
            return Ok((u, g));
        }
    }
    match numeric(owner) {
        Some(u) => Ok((u, u)),
        None => Err(ImportError::Owner(owner.to_owned())),
    }
}

fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<(), ImportError> {
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(io_at(dir))?;
    for entry in fs::read_dir(dir).map_err(io_at(dir))? {
        let path = entry.map_err(io_at(dir))?.path();
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(io_at(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_accepts_names_and_numbers() {
        assert_eq!(resolve_owner("root").unwrap(), (0, 0));
        assert_eq!(resolve_owner("0").unwrap(), (0, 0));
        assert_eq!(resolve_owner("1234:99").unwrap(), (1234, 99));
        assert!(matches!(
            resolve_owner("no-such-user-here"),
            Err(ImportError::Owner(_))
        ));
    }

    #[test]
    fn nothing_to_import_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = ImportOptions {
            from: tmp.path().join("card"),
            to: tmp.path().join("creds"),
            keep_source: false,
            owner: None,
        };
        assert_eq!(import(&opts).unwrap(), ImportOutcome::NothingToImport);
        assert!(!opts.to.exists());
    }

    #[test]
    fn wipe_overwrites_then_deletes() {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("device.key");
        fs::write(&key, "secret").unwrap();
        wipe(&key).unwrap();
        assert!(!key.exists());
        wipe(&key).unwrap();
    }
}
