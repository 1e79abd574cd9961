//! Cloud setup: the files an operator needs to let the fleet register itself with AWS IoT Core
//! (just-in-time provisioning, [`aws`]) or Azure IoT Hub through the Device Provisioning Service
//! ([`azure`]).
//!
//! autoprov never calls a cloud itself: it writes a directory of typed, generated files (JSON
//! from serde, CloudFormation YAML from the same values, a `setup.sh` with the exact CLI calls)
//! that the operator reads and then runs with their own credentials. Nothing in that directory
//! is secret: the CA's private key only signs a proof-of-possession certificate, which is public.
//! The directory is written like a bundle, whole or not at all ([`autoprov_bundle::write_files`]).

pub mod aws;
pub mod azure;
pub mod script;
pub mod yaml;

use std::path::{Path, PathBuf};

use autoprov_bundle::DirError;

/// Why a setup directory could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// An option value the cloud would refuse; says which flag and what it accepts.
    #[error("{flag} {value:?}: {why}")]
    BadOption {
        /// The flag, e.g. `--role-arn`.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        why: String,
    },
    /// Options that do not go together, or one that is missing.
    #[error("{0}")]
    Usage(String),
    /// The setup directory could not be written.
    #[error("setup directory {0}")]
    Out(#[from] DirError),
    /// A generated document could not be serialised (a bug: the types are fixed).
    #[error("could not serialise {0}: {1}")]
    Serialise(&'static str, String),
}

impl CloudError {
    /// 2 for the operator's options and an unusable `--out`, 1 for failures while writing.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::BadOption { .. } | Self::Usage(_) => 2,
            Self::Out(DirError::NotEmpty(_) | DirError::NotADirectory(_)) => 2,
            Self::Out(_) | Self::Serialise(..) => 1,
        }
    }
}

/// One generated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupFile {
    /// File name inside the setup directory.
    pub name: &'static str,
    /// Content.
    pub content: String,
    /// Mode: 0755 for scripts, 0644 for the rest.
    pub mode: u32,
}

impl SetupFile {
    fn data(name: &'static str, content: String) -> Self {
        SetupFile {
            name,
            content,
            mode: 0o644,
        }
    }

    fn script(name: &'static str, content: String) -> Self {
        SetupFile {
            name,
            content,
            mode: 0o755,
        }
    }
}

/// Writes `files` as the directory `dir`, whole or not at all (a non-empty `dir` only with
/// `force`).
pub fn write_setup(files: &[SetupFile], dir: &Path, force: bool) -> Result<(), CloudError> {
    let entries: Vec<(&str, &[u8], u32)> = files
        .iter()
        .map(|f| (f.name, f.content.as_bytes(), f.mode))
        .collect();
    autoprov_bundle::write_files(&entries, dir, force)?;
    Ok(())
}

/// Pretty JSON with a final newline, as the files are written.
fn json<T: serde::Serialize>(what: &'static str, value: &T) -> Result<String, CloudError> {
    serde_json::to_string_pretty(value)
        .map(|mut s| {
            s.push('\n');
            s
        })
        .map_err(|e| CloudError::Serialise(what, e.to_string()))
}

/// The PKI directory as an absolute path, for scripts that call `autoprov` from elsewhere.
fn absolute(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned())
}

/// Checks `value` against a predicate, naming `flag` and the rule when it fails.
fn check(
    flag: &'static str,
    value: &str,
    ok: impl Fn(&str) -> bool,
    why: &str,
) -> Result<(), CloudError> {
    if ok(value) {
        Ok(())
    } else {
        Err(CloudError::BadOption {
            flag,
            value: value.to_owned(),
            why: why.to_owned(),
        })
    }
}

/// `[A-Za-z0-9]` plus the given punctuation, between `min` and `max` characters.
fn name_like(value: &str, extra: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}
