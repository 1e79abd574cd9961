//! Sequence numbers: per device, strictly increasing across restarts, `kill -9` and power cuts.
//!
//! The next number is the larger of two floors: one above the highest number in the spool (the
//! spool never deletes its newest segment, and in batch mode a number leaves the device only once
//! its record is synced, so every number ever published is covered), and the `seq` file in the
//! state directory, written atomically now and then, which keeps the floor if the spool
//! directory is wiped. No block of numbers is reserved ahead, so a crash leaves no gap.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// File name in the state directory.
pub const SEQ_FILE: &str = "seq";

/// The largest sequence number: the largest integer every JSON consumer reads exactly (2^53 - 1;
/// JavaScript and most JSON libraries hold numbers as doubles). At one reading a second it lasts
/// for hundreds of millions of years, so a stored number above it is damage.
pub const MAX_SEQ: u64 = (1 << 53) - 1;

/// Why the seq file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SeqError {
    /// An I/O error.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file holds something else than a number.
    #[error("{}: {text:?} is not a sequence number (delete the file to derive it from the spool)", path.display())]
    Garbled {
        /// The file.
        path: PathBuf,
        /// What it holds.
        text: String,
    },
    /// The spool's newest record already has [`MAX_SEQ`]: there is no number left for the next
    /// reading. Only a damaged spool gets here.
    #[error("the spool {}/spool holds sequence number {last}, the largest there can be (2^53 - 1): it is damaged; move it aside to start again", state_dir.display())]
    Exhausted {
        /// The state directory.
        state_dir: PathBuf,
        /// The spool's newest sequence number.
        last: u64,
    },
}

impl SeqError {
    /// Whether the file system is out of space (or of the user's quota).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Self::Io { source, .. }
            if matches!(source.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded))
    }
}

/// Hands out sequence numbers.
#[derive(Debug)]
pub struct SeqAllocator {
    path: PathBuf,
    next: u64,
}

impl SeqAllocator {
    /// Opens the allocator for `state_dir`, given the highest number in the spool.
    pub fn open(state_dir: &Path, spool_last: u64) -> Result<Self, SeqError> {
        if spool_last >= MAX_SEQ {
            return Err(SeqError::Exhausted {
                state_dir: state_dir.to_owned(),
                last: spool_last,
            });
        }
        let path = state_dir.join(SEQ_FILE);
        let stored = match fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= MAX_SEQ)
                .ok_or_else(|| SeqError::Garbled {
                    path: path.clone(),
                    text: text.trim().chars().take(40).collect(),
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => return Err(SeqError::Io { path, source }),
        };
        let mut alloc = Self {
            path,
            next: stored.max(spool_last + 1).max(1),
        };
        // The floor is safe in the spool's newest segment too: a full disk must not keep the
        // agent from starting, which would leave the sensor unread until someone frees space.
        if let Err(e) = alloc.persist() {
            if !e.is_disk_full() {
                return Err(e);
            }
            tracing::warn!("{e}: the seq floor is not saved this time (the spool holds it)");
        }
        Ok(alloc)
    }

    /// The next number, without taking it.
    pub fn peek(&self) -> u64 {
        self.next
    }

    /// Takes the next number.
    pub fn take(&mut self) -> u64 {
        let n = self.next;
        self.next += 1;
        n
    }

    /// Writes the floor to the `seq` file (atomically: temp file, fsync, rename).
    pub fn persist(&mut self) -> Result<(), SeqError> {
        let io = |source| SeqError::Io {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("tmp");
        let mut f = fs::File::create(&tmp).map_err(io)?;
        writeln!(f, "{}", self.next).map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, &self.path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_one_then_continues_above_file_and_spool() {
        let tmp = tempfile::tempdir().unwrap();
        let mut a = SeqAllocator::open(tmp.path(), 0).unwrap();
        assert_eq!(a.take(), 1);
        assert_eq!(a.take(), 2);
        a.persist().unwrap();
        // The spool is ahead of the file (the usual case after a crash).
        let mut b = SeqAllocator::open(tmp.path(), 7).unwrap();
        assert_eq!(b.take(), 8);
        // The spool was wiped: the file still holds the floor.
        let mut c = SeqAllocator::open(tmp.path(), 0).unwrap();
        assert_eq!(c.take(), 8);
    }

    #[test]
    fn garbled_file_is_reported_not_reset() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(SEQ_FILE), "banana").unwrap();
        let err = SeqAllocator::open(tmp.path(), 0).unwrap_err().to_string();
        assert!(err.contains("banana") && err.contains("seq"), "{err}");
    }

    #[test]
    fn a_spool_at_max_seq_is_reported_not_overrun() {
        // Found by fuzzing (spool_segment): a spool whose newest record had MAX_SEQ got the
        // number after it, which the spool then read back as damage.
        let tmp = tempfile::tempdir().unwrap();
        let err = SeqAllocator::open(tmp.path(), MAX_SEQ).unwrap_err();
        assert!(
            matches!(err, SeqError::Exhausted { last: MAX_SEQ, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("move"), "{err}");
        assert_eq!(
            SeqAllocator::open(tmp.path(), MAX_SEQ - 1).unwrap().take(),
            MAX_SEQ
        );
    }

    #[test]
    fn stored_number_past_max_seq_is_garbled() {
        // A damaged file with u64::MAX used to overflow on the first `take`.
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(SEQ_FILE), format!("{}\n", u64::MAX)).unwrap();
        let err = SeqAllocator::open(tmp.path(), 0).unwrap_err();
        assert!(matches!(err, SeqError::Garbled { .. }), "{err}");
        fs::write(tmp.path().join(SEQ_FILE), format!("{MAX_SEQ}\n")).unwrap();
        assert_eq!(SeqAllocator::open(tmp.path(), 0).unwrap().take(), MAX_SEQ);
    }
}
