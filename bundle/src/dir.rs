//! Bundles as directories: written whole or not at all, read with the size limit applied.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{Bundle, DEVICE_KEY, MAX_FILE_SIZE, ReadError, WIFI_CONF};

/// Why a bundle could not be written to a directory.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// The target exists and holds files, and overwriting was not asked for.
    #[error("{0} exists and is not empty (use --force to replace it)")]
    NotEmpty(PathBuf),
    /// The target exists and is not a directory.
    #[error("{0} exists and is not a directory")]
    NotADirectory(PathBuf),
    /// An I/O error, with the path it concerns.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> DirError + '_ {
    move |source| DirError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Mode of a bundle file: secrets are readable by their owner only.
pub(crate) fn file_mode(name: &str) -> u32 {
    if name == DEVICE_KEY || name == WIFI_CONF {
        0o600
    } else {
        0o644
    }
}

/// Writes `bundle` into `dir` so that `dir` is either the whole new bundle or untouched.
///
/// The files go into a hidden sibling directory first, each fsynced, which is then renamed into
/// place (an existing bundle is moved aside and removed only after the rename). With
/// `overwrite == false` an existing non-empty `dir` is refused.
pub fn write_dir(bundle: &Bundle, dir: &Path, overwrite: bool) -> Result<(), DirError> {
    let files = bundle.files();
    let entries: Vec<(&str, &[u8], u32)> = files
        .iter()
        .map(|(name, data)| (*name, data.as_slice(), file_mode(name)))
        .collect();
    write_files(&entries, dir, overwrite)
}

/// Checks, before anything is made, that [`write_files`] could write to `dir`: it is absent, an
/// empty directory, or (with `overwrite`) a directory, and its nearest existing ancestor is a
/// directory. Returns `None` if `dir` is absent, `Some(empty)` if it exists.
///
/// Callers that create something costly first (a signed certificate) use it to refuse early.
pub fn check_target(dir: &Path, overwrite: bool) -> Result<Option<bool>, DirError> {
    let existing = match fs::symlink_metadata(dir) {
        Ok(meta) if !meta.is_dir() => return Err(DirError::NotADirectory(dir.to_owned())),
        Ok(_) => {
            let empty = fs::read_dir(dir).map_err(io_at(dir))?.next().is_none();
            if !empty && !overwrite {
                return Err(DirError::NotEmpty(dir.to_owned()));
            }
            Some(empty)
        }
        // NotADirectory: some ancestor is a file, reported below by name.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            None
        }
        Err(e) => return Err(io_at(dir)(e)),
    };
    if existing.is_none() {
        let mut ancestor = parent_dir(dir);
        while !ancestor.exists() {
            match ancestor.parent() {
                Some(p) if !p.as_os_str().is_empty() => ancestor = p.to_owned(),
                _ => break,
            }
        }
        if ancestor.exists() && !ancestor.is_dir() {
            return Err(DirError::NotADirectory(ancestor));
        }
    }
    Ok(existing)
}

fn parent_dir(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Writes a set of `(name, content, mode)` files as the directory `dir`, whole or not at all, in
/// the given order, with the same staging, refusal and replacement rules as [`write_dir`].
///
/// For file sets that travel with a bundle but are not one, such as a broker's TLS files.
pub fn write_files(
    files: &[(&str, &[u8], u32)],
    dir: &Path,
    overwrite: bool,
) -> Result<(), DirError> {
    let existing = check_target(dir, overwrite)?;
    let parent = parent_dir(dir);
    fs::create_dir_all(&parent).map_err(io_at(&parent))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bundle".into());
    sweep_abandoned_staging(&parent);
    let tag = format!("{}-{}", std::process::id(), unique_suffix());
    let staging = parent.join(format!(".{name}.new-{tag}"));
    let result = stage_and_swap(files, dir, &parent, &staging, existing, &name, &tag);
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

/// Removes staging directories (`.NAME.new-PID-N`) that a process killed half-way left in
/// `parent`: each may hold a private key whose certificate never left `pending`, and nothing will
/// ever read it. Only directories of processes that no longer run are touched; a bundle moved
/// aside (`.NAME.old-…`) is left alone, since it may be the only copy of the previous one.
fn sweep_abandoned_staging(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.starts_with('.'))
            .and_then(|n| n.rsplit_once(".new-"))
            .and_then(|(_, tag)| tag.split_once('-'))
            .filter(|(pid, n)| {
                !pid.is_empty()
                    && pid.bytes().all(|b| b.is_ascii_digit())
                    && !n.is_empty()
                    && n.bytes().all(|b| b.is_ascii_digit())
            })
            .map(|(pid, _)| pid.to_owned())
        else {
            continue;
        };
        let gone = !Path::new("/proc").join(&pid).exists() && Path::new("/proc/self").exists();
        if gone && entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn stage_and_swap(
    files: &[(&str, &[u8], u32)],
    dir: &Path,
    parent: &Path,
    staging: &Path,
    existing: Option<bool>,
    name: &str,
    tag: &str,
) -> Result<(), DirError> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(staging)
        .map_err(io_at(staging))?;
    for (file, data, mode) in files {
        let path = staging.join(file);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(*mode)
            .open(&path)
            .map_err(io_at(&path))?;
        f.write_all(data).map_err(io_at(&path))?;
        f.sync_all().map_err(io_at(&path))?;
    }
    fs::set_permissions(staging, fs::Permissions::from_mode(0o755)).map_err(io_at(staging))?;
    sync_dir(staging)?;
    match existing {
        // rename(2) replaces an empty directory atomically.
        None | Some(true) => fs::rename(staging, dir).map_err(io_at(dir))?,
        Some(false) => {
            let aside = parent.join(format!(".{name}.old-{tag}"));
            fs::rename(dir, &aside).map_err(io_at(dir))?;
            if let Err(e) = fs::rename(staging, dir) {
                // Put the previous bundle back so the caller is left where it started.
                let _ = fs::rename(&aside, dir);
                return Err(io_at(dir)(e));
            }
            fs::remove_dir_all(&aside).map_err(io_at(&aside))?;
        }
    }
    sync_dir(parent)
}

fn sync_dir(dir: &Path) -> Result<(), DirError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// Reads one file of a bundle directory, `None` if it does not exist, at most
/// [`MAX_FILE_SIZE`]` + 1` bytes so an oversized file is reported rather than read whole.
pub(crate) fn read_limited(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let mut data = Vec::new();
    file.take(MAX_FILE_SIZE as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(Some(data))
}

impl Bundle {
    /// Reads and checks the bundle in `dir` (see [`Bundle::from_files`]).
    pub fn read_dir(dir: &Path) -> Result<Bundle, ReadError> {
        Bundle::from_files(|name| read_limited(&dir.join(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::sample;
    use crate::{BundleError, CA_CERT, MANIFEST};

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn staging_left_by_a_killed_writer_is_removed_by_the_next_write() {
        let tmp = tempfile::tempdir().unwrap();
        // What a writer killed half-way leaves: its staging directory with the key, under the
        // pid of a process that no longer exists (pids above pid_max are never alive).
        let dead = tmp.path().join(".sensor-001.new-4194305-17");
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join(DEVICE_KEY), b"-----BEGIN PRIVATE KEY-----").unwrap();
        // A live process's staging and someone's own dot-directory are left alone.
        let live = tmp
            .path()
            .join(format!(".sensor-002.new-{}-5", std::process::id()));
        fs::create_dir(&live).unwrap();
        let other = tmp.path().join(".config.new-stuff");
        fs::create_dir(&other).unwrap();
        write_dir(&sample(), &tmp.path().join("sensor-007"), false).unwrap();
        assert!(!dead.exists());
        assert!(live.exists() && other.exists());
    }

    #[test]
    fn writes_whole_bundle_with_private_key_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out/sensor-007");
        write_dir(&sample(), &dir, false).unwrap();
        assert_eq!(mode(&dir.join(DEVICE_KEY)), 0o600);
        assert_eq!(mode(&dir.join(CA_CERT)), 0o644);
        let back = Bundle::read_dir(&dir).unwrap();
        assert_eq!(back.manifest(), sample().manifest());
        // Nothing left beside it.
        let names: Vec<_> = fs::read_dir(dir.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn refuses_non_empty_dir_without_overwrite_and_keeps_it() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("keep.txt"), "mine").unwrap();
        let err = write_dir(&sample(), tmp.path(), false).unwrap_err();
        assert!(matches!(err, DirError::NotEmpty(_)), "{err}");
        assert_eq!(
            fs::read_to_string(tmp.path().join("keep.txt")).unwrap(),
            "mine"
        );
        assert!(!tmp.path().join(MANIFEST).exists());
    }

    #[test]
    fn overwrite_replaces_the_whole_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("b");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("stale.txt"), "old").unwrap();
        write_dir(&sample(), &dir, true).unwrap();
        assert!(!dir.join("stale.txt").exists());
        Bundle::read_dir(&dir).unwrap();
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn target_under_a_file_is_refused_before_writing() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("f"), "x").unwrap();
        let err = check_target(&tmp.path().join("f/a/b"), false).unwrap_err();
        assert!(
            matches!(err, DirError::NotADirectory(ref p) if p.ends_with("f")),
            "{err}"
        );
        assert_eq!(
            check_target(&tmp.path().join("new/b"), false).unwrap(),
            None
        );
    }

    #[test]
    fn empty_existing_dir_is_filled() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("empty");
        fs::create_dir(&dir).unwrap();
        write_dir(&sample(), &dir, false).unwrap();
        Bundle::read_dir(&dir).unwrap();
    }

    #[test]
    fn reading_a_plain_directory_says_it_is_not_a_bundle() {
        let tmp = tempfile::tempdir().unwrap();
        let err = Bundle::read_dir(tmp.path()).unwrap_err();
        assert!(
            matches!(err, ReadError::Invalid(BundleError::NoManifest)),
            "{err}"
        );
    }
}
