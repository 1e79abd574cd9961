//! Files written whole or not at all, with the mode they need from the first byte.
//!
//! Content goes to a temporary file in the same directory (created with its final mode, so a key is
//! never readable by others even for a moment), is fsynced, and then appears under its name in one
//! step: `rename` to replace, `link` to create without ever clobbering what is there.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A file operation failed; the path says which file.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The file exists and must not be replaced.
    #[error("{0} already exists; it was left as it is")]
    Exists(PathBuf),
    /// Any other I/O error.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Attaches `path` to an I/O error.
pub fn at(path: &Path) -> impl FnOnce(io::Error) -> FsError + '_ {
    move |source| FsError::Io {
        path: path.to_owned(),
        source,
    }
}

fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}-{nanos}", std::process::id()))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn write_temp(path: &Path, data: &[u8], mode: u32) -> Result<PathBuf, FsError> {
    let tmp = temp_beside(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(at(path)(e));
    }
    Ok(tmp)
}

/// Syncs a directory so that a rename or link in it survives power loss.
pub fn sync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))
}

/// Writes `data` to `path` atomically, replacing any existing file.
pub fn write_replace(path: &Path, data: &[u8], mode: u32) -> Result<(), FsError> {
    let tmp = write_temp(path, data, mode)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(at(path)(e));
    }
    sync_dir(parent_of(path))
}

/// Writes `data` to a new file `path` atomically; fails with [`FsError::Exists`] if it exists.
pub fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), FsError> {
    let tmp = write_temp(path, data, mode)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => sync_dir(parent_of(path)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(FsError::Exists(path.to_owned())),
        Err(e) => Err(at(path)(e)),
    }
}

/// Reads a file to a string, naming the file in the error.
pub fn read_string(path: &Path) -> Result<String, FsError> {
    fs::read_to_string(path).map_err(at(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn new_file_gets_its_mode_and_never_clobbers() {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("root.key");
        write_new(&key, b"secret", 0o600).unwrap();
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let err = write_new(&key, b"other", 0o600).unwrap_err();
        assert!(matches!(err, FsError::Exists(_)), "{err}");
        assert_eq!(fs::read(&key).unwrap(), b"secret");
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn replace_swaps_the_content() {
        let tmp = tempfile::tempdir().unwrap();
        let crl = tmp.path().join("crl.pem");
        write_replace(&crl, b"one", 0o644).unwrap();
        write_replace(&crl, b"two", 0o644).unwrap();
        assert_eq!(fs::read(&crl).unwrap(), b"two");
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn unwritable_directory_names_the_file() {
        let err = write_replace(Path::new("/nonexistent/dir/crl.pem"), b"x", 0o644).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/dir/crl.pem"),
            "{err}"
        );
    }
}
