//! The one streaming write of an image to its target, the flush to stable storage, and the
//! read-back that proves the target holds what was written.
//!
//! A pipeline of threads: the decoder reads the image file and decompresses it into 1 MiB chunks
//! (a thread beside it hashes the file with SHA-256, what the inventory records); the writer
//! writes them; for a block device a syncer flushes every 32 MiB, so that the progress bar follows
//! the card rather than the page cache; and the verifier reads each written chunk back and
//! compares it byte for byte with what was written — the same buffer, kept until then (at most
//! 64 MiB in flight), so no hash is computed on either side and the check costs one read and a
//! `memcmp`.
//!
//! The read-back uses `O_DIRECT`, which bypasses the page cache: such a read first writes the
//! range's dirty pages to the device, then reads the device. Where `O_DIRECT` is refused, the
//! range is flushed, its pages dropped with `posix_fadvise(POSIX_FADV_DONTNEED)`, and it is read
//! normally; the report says which was used. Writing and reading back overlap; the final `fsync`
//! makes everything durable.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::num::NonZeroU64;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rustix::fs::Advice;

use super::source::{self, Decoded, ImageError};
use super::{Wiped, human};

/// Size of one chunk of the stream: small enough to still be in the CPU cache when the writer
/// copies it (4 MiB chunks cost five times the system time here).
pub const CHUNK: usize = 1 << 20;
/// Chunks queued between the decoder and the writer: few, so that the writer copies a chunk into
/// the page cache while it is still in the CPU cache (with 16 queued the copy of 1 GiB cost 2.3 s
/// of system time here, with 4 about 1.0 s).
const QUEUE: usize = 4;
/// Chunks written but not yet read back: the memory the verification holds.
const VERIFY_QUEUE: usize = 64;
/// Alignment of `O_DIRECT` buffers and offsets (covers 512- and 4096-byte logical blocks).
const ALIGN: usize = 4096;

/// Why writing or verifying failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Reading or decoding the image failed part-way.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Writing to the target failed.
    #[error("writing {path} at byte {at}: {source}", path = .path.display())]
    Write {
        /// The target.
        path: PathBuf,
        /// Offset of the failed write.
        at: u64,
        /// The error.
        source: io::Error,
    },
    /// fsync failed: the data may not be on the device.
    #[error("flushing {path} to stable storage: {source}", path = .path.display())]
    Sync {
        /// The target.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Reading back failed.
    #[error("reading {path} back at byte {at}: {source}", path = .path.display())]
    ReadBack {
        /// The target.
        path: PathBuf,
        /// Offset of the failed read.
        at: u64,
        /// The error.
        source: io::Error,
    },
    /// What was read back differs from what was written.
    #[error(
        "{path} does not hold what was written: byte {at} reads back differently: the card or the reader is faulty",
        path = .path.display()
    )]
    Mismatch {
        /// The target.
        path: PathBuf,
        /// Offset of the first byte that differs.
        at: u64,
    },
    /// The image is larger than the target.
    #[error(
        "the image is larger than {path} ({size} bytes): the write stopped there; use a larger card",
        path = .path.display()
    )]
    TargetFull {
        /// The target.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// A signal asked to stop.
    #[error("interrupted")]
    Interrupted,
}

/// How the read-back avoided the page cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadBack {
    /// `O_DIRECT`: straight from the device.
    Direct,
    /// `posix_fadvise(DONTNEED)` after fsync, then a normal read.
    DroppedCache,
}

impl std::fmt::Display for ReadBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReadBack::Direct => "read back with O_DIRECT (page cache bypassed) and compared byte for byte",
            ReadBack::DroppedCache => {
                "read back after posix_fadvise(DONTNEED) and compared byte for byte (O_DIRECT not supported by the target's filesystem)"
            }
        })
    }
}

/// A verification that passed.
#[derive(Clone, Debug)]
pub struct Verified {
    /// How the page cache was avoided.
    pub method: ReadBack,
    /// How long it took beyond the write and the flush it overlapped.
    pub time: Duration,
}

/// What a streaming write did.
#[derive(Clone, Debug)]
pub struct Written {
    /// Bytes written.
    pub bytes: u64,
    /// SHA-256 of the image file as given, hex.
    pub image_sha256: String,
    /// Time to write (until the last `write` returned).
    pub write_time: Duration,
    /// Time of the final fsync.
    pub sync_time: Duration,
    /// The verification, if asked for.
    pub verified: Option<Verified>,
}

/// Knobs of the write.
#[derive(Clone, Debug)]
pub struct Options {
    /// Read back and compare after the flush.
    pub verify: bool,
    /// Draw progress bars on stderr (they stay hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// `fdatasync` after every 32 MiB, so that the progress of a slow card follows the card and
    /// not the page cache, and dirty memory stays bounded. For block devices.
    pub flush_windows: bool,
    /// Size of the target, when bounded (a block device).
    pub capacity: Option<u64>,
    /// Set by a signal handler to stop between chunks.
    pub interrupt: Arc<AtomicBool>,
}

/// The image as the write pass takes it: the head (boot partition already changed), the rest of
/// the decoded stream, and what the partition table says about its length.
pub struct Plan {
    /// The image file.
    pub path: PathBuf,
    /// Whether it is compressed (for error messages).
    pub compressed: bool,
    /// Decoded bytes from offset 0, with the new boot partition in place; zeroized on drop, as it
    /// holds the device key.
    pub head: Wiped,
    /// The stream after the head.
    pub rest: Decoded,
    /// The decoded length, if known in advance (for the progress bar).
    pub expected_len: Option<u64>,
    /// The stream must be at least this long (its partitions end there).
    pub min_len: u64,
}

fn bar(total: Option<u64>, prefix: &'static str, enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let target = ProgressDrawTarget::stderr_with_hz(4);
    let (pb, template) = match total {
        Some(n) => (
            ProgressBar::with_draw_target(Some(n), target),
            "{prefix:>9} [{bar:32}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
        ),
        None => (
            ProgressBar::with_draw_target(None, target),
            "{prefix:>9} {spinner} {binary_bytes} {binary_bytes_per_sec}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_prefix(prefix);
    pb
}

/// A block device is flushed, a file's writeback started, after every this many bytes.
const WINDOW: u64 = 32 << 20;

/// A written piece of the stream, kept for the verifier: part of the head, or a decoded chunk.
enum Piece {
    Head(std::ops::Range<usize>),
    Chunk(Vec<u8>),
}

impl Piece {
    fn len(&self) -> usize {
        match self {
            Piece::Head(r) => r.len(),
            Piece::Chunk(b) => b.len(),
        }
    }
}

/// Writes the whole image to `target` (opened for writing at offset 0), flushes it, and verifies
/// it if asked. `target_path` is used to reopen it for the read-back and in messages.
pub fn write_image(
    plan: Plan,
    target: &mut File,
    target_path: &Path,
    opts: &Options,
) -> Result<Written, StreamError> {
    write_image_with(plan, target, target_path, opts, true)
}

fn write_image_with(
    plan: Plan,
    target: &mut File,
    target_path: &Path,
    opts: &Options,
    try_direct: bool,
) -> Result<Written, StreamError> {
    let Plan {
        path,
        compressed,
        head,
        rest,
        expected_len,
        min_len,
    } = plan;
    let started = Instant::now();
    let pb = bar(expected_len, "writing", opts.progress);
    let file: &File = target;
    // A thread that fails sets this, so that the others stop early.
    let failed = AtomicBool::new(false);

    let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(QUEUE);
    let (recycle_tx, recycle_rx) = mpsc::channel::<Vec<u8>>();
    let (mark_tx, mark_rx) = mpsc::channel::<u64>();
    let (check_tx, check_rx) = mpsc::sync_channel::<(u64, Piece)>(VERIFY_QUEUE);
    // Syncer → verifier: everything below this offset is on its way to the device.
    let (handed_tx, handed_rx) = mpsc::channel::<u64>();
    let mut write_time = Duration::ZERO;
    let mut sync_time = Duration::ZERO;
    let mut written: u64 = 0;

    let (finished, sha, synced, verified) = std::thread::scope(|s| {
        let head = &head;
        let failed = &failed;
        let decoder = s.spawn(move || -> io::Result<String> {
            let mut rest = rest;
            loop {
                let mut buf = recycle_rx.try_recv().unwrap_or_else(|_| vec![0; CHUNK]);
                buf.resize(CHUNK, 0);
                match source::read_full(&mut rest, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.send(Ok(buf)).is_err() {
                            // The writer stopped; its error is the one to report.
                            return Ok(String::new());
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return Ok(String::new());
                    }
                }
            }
            drop(tx);
            rest.finish()
        });
        let syncer_pb = pb.clone();
        let syncer = s.spawn(move || -> Result<(), StreamError> {
            let mut from = 0;
            for mark in mark_rx {
                if !opts.flush_windows {
                    // Starts the window's writeback now (DONTNEED writes dirty pages back
                    // without waiting, then drops the clean ones), so that the disk is busy
                    // while the rest is decoded instead of all at the final fsync — and a 1 GiB
                    // image does not crowd the operator's page cache. Advice only: an error
                    // changes nothing.
                    let _ = rustix::fs::fadvise(
                        file,
                        from,
                        NonZeroU64::new(mark - from),
                        Advice::DontNeed,
                    );
                    from = mark;
                    let _ = handed_tx.send(mark);
                    continue;
                }
                if let Err(source) = file.sync_data() {
                    failed.store(true, Ordering::Relaxed);
                    return Err(StreamError::Sync {
                        path: target_path.to_owned(),
                        source,
                    });
                }
                syncer_pb.set_position(mark);
                let _ = handed_tx.send(mark);
            }
            Ok(())
        });
        let verifier_recycle = recycle_tx.clone();
        let verifier_pb = pb.clone();
        let verifier = opts.verify.then(|| {
            s.spawn(move || -> Result<ReadBack, StreamError> {
                let run = || {
                    let mut v = Verifier::open(target_path, try_direct)?;
                    let mut handed = 0;
                    for (at, piece) in check_rx {
                        if opts.interrupt.load(Ordering::Relaxed) {
                            return Err(StreamError::Interrupted);
                        }
                        // Read a piece once its window's writeback has started (or, at the
                        // end, once the final fsync is done and the syncer has stopped): a
                        // read that had to write back its own range first would turn the
                        // stream into small synchronous writes.
                        let end = at + piece.len() as u64;
                        while handed < end {
                            match handed_rx.recv() {
                                Ok(m) => handed = m,
                                Err(_) => break,
                            }
                        }
                        match piece {
                            Piece::Head(r) => v.check(at, &head[r])?,
                            Piece::Chunk(buf) => {
                                v.check(at, &buf)?;
                                let _ = verifier_recycle.send(buf);
                            }
                        }
                        verifier_pb.set_message(format!("verified {}", human(v.checked)));
                    }
                    Ok(v.method)
                };
                let result = run();
                if result.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                result
            })
        });

        let writer = (|| -> Result<(), StreamError> {
            let mut put = |piece: Piece| -> Result<(), StreamError> {
                if opts.interrupt.load(Ordering::Relaxed) || failed.load(Ordering::Relaxed) {
                    // On a failure elsewhere, that thread's error is the one reported.
                    return Err(StreamError::Interrupted);
                }
                let data = match &piece {
                    Piece::Head(r) => &head[r.clone()],
                    Piece::Chunk(buf) => &buf[..],
                };
                if let Some(cap) = opts.capacity
                    && written + data.len() as u64 > cap
                {
                    return Err(StreamError::TargetFull {
                        path: target_path.to_owned(),
                        size: cap,
                    });
                }
                let at = written;
                (&*file)
                    .write_all(data)
                    .map_err(|source| StreamError::Write {
                        path: target_path.to_owned(),
                        at,
                        source,
                    })?;
                written += data.len() as u64;
                if written / WINDOW > at / WINDOW {
                    let _ = mark_tx.send(written);
                }
                if !opts.flush_windows {
                    pb.set_position(written);
                }
                match piece {
                    Piece::Chunk(buf) if !opts.verify => {
                        let _ = recycle_tx.send(buf);
                    }
                    piece if opts.verify => {
                        // Blocks while the verifier is VERIFY_QUEUE pieces behind.
                        let _ = check_tx.send((at, piece));
                    }
                    _ => {}
                }
                Ok(())
            };
            for start in (0..head.len()).step_by(CHUNK) {
                put(Piece::Head(start..(start + CHUNK).min(head.len())))?;
            }
            for msg in rx.iter() {
                let buf = msg.map_err(|e| source::classify(&path, compressed, e))?;
                put(Piece::Chunk(buf))?;
            }
            Ok(())
        })();
        drop(rx);
        write_time = started.elapsed();
        let sha = decoder
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the decoder thread panicked")));
        let finished = writer.and_then(|()| {
            let t = Instant::now();
            file.sync_all().map_err(|source| StreamError::Sync {
                path: target_path.to_owned(),
                source,
            })?;
            sync_time = t.elapsed();
            pb.set_position(written);
            Ok(())
        });
        drop(mark_tx);
        drop(check_tx);
        let synced = syncer.join().unwrap_or(Err(StreamError::Interrupted));
        let verified = verifier.map(|v| v.join().unwrap_or(Err(StreamError::Interrupted)));
        (finished, sha, synced, verified)
    });
    drop(head);
    pb.finish_and_clear();
    // A failed flush or read-back stopped the writer: report the cause, not the stop.
    synced?;
    let method = verified.transpose()?;
    finished?;
    let image_sha256 = sha.map_err(|e| source::classify(&path, compressed, e))?;
    if written < min_len {
        return Err(ImageError::Truncated {
            path,
            len: written,
            needed: min_len,
        }
        .into());
    }
    Ok(Written {
        bytes: written,
        image_sha256,
        write_time,
        sync_time,
        verified: method.map(|method| Verified {
            method,
            time: started.elapsed().saturating_sub(write_time + sync_time),
        }),
    })
}

/// A buffer whose start is aligned for `O_DIRECT`, built without `unsafe`.
struct Aligned {
    raw: Wiped,
    off: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let raw = Wiped(vec![0u8; len + ALIGN]);
        let off = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
        Aligned { raw, off }
    }

    fn get(&mut self, len: usize) -> &mut [u8] {
        &mut self.raw[self.off..self.off + len]
    }
}

fn open_direct(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// Reads ranges of a target back from its device and compares them with what was written.
struct Verifier<'a> {
    path: &'a Path,
    file: File,
    method: ReadBack,
    buf: Aligned,
    /// Bytes compared so far.
    checked: u64,
}

impl<'a> Verifier<'a> {
    /// Opens `path`, with `O_DIRECT` if its filesystem allows it.
    fn open(path: &'a Path, try_direct: bool) -> Result<Self, StreamError> {
        let direct = if try_direct {
            open_direct(path).ok()
        } else {
            None
        };
        let (file, method) = match direct {
            Some(f) => (f, ReadBack::Direct),
            None => (
                File::open(path).map_err(|source| StreamError::ReadBack {
                    path: path.to_owned(),
                    at: 0,
                    source,
                })?,
                ReadBack::DroppedCache,
            ),
        };
        Ok(Verifier {
            path,
            file,
            method,
            buf: Aligned::new(CHUNK + ALIGN),
            checked: 0,
        })
    }

    fn err(&self, at: u64, source: io::Error) -> StreamError {
        StreamError::ReadBack {
            path: self.path.to_owned(),
            at,
            source,
        }
    }

    /// Reads `expected.len()` bytes at `at` back from the device and compares them.
    fn check(&mut self, at: u64, expected: &[u8]) -> Result<(), StreamError> {
        let end = at + expected.len() as u64;
        if self.method == ReadBack::DroppedCache {
            // Only clean pages can be dropped: flush, drop, and the read below goes to the
            // device. (An O_DIRECT read writes back the dirty pages of its range by itself.)
            let from = at - at % ALIGN as u64;
            self.file.sync_data().map_err(|e| self.err(from, e))?;
            rustix::fs::fadvise(
                &self.file,
                from,
                NonZeroU64::new(end - from),
                Advice::DontNeed,
            )
            .map_err(|e| self.err(from, e.into()))?;
        }
        let mut pos = at;
        while pos < end {
            // Direct reads start at an aligned offset and have an aligned length.
            let start = pos - pos % ALIGN as u64;
            let skip = (pos - start) as usize;
            let want = ((end - start).min(CHUNK as u64) as usize).next_multiple_of(ALIGN);
            let n = loop {
                match self.file.read_at(self.buf.get(want), start) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            let n = match n {
                Ok(n) => n,
                // Some filesystems accept O_DIRECT when opening and refuse it when reading.
                Err(e)
                    if e.raw_os_error() == Some(libc::EINVAL)
                        && self.method == ReadBack::Direct =>
                {
                    self.file = File::open(self.path).map_err(|e| self.err(start, e))?;
                    self.method = ReadBack::DroppedCache;
                    return self.check(pos, &expected[(pos - at) as usize..]);
                }
                Err(e) => return Err(self.err(start, e)),
            };
            if n <= skip {
                return Err(self.err(
                    start,
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the target ends before the data written",
                    ),
                ));
            }
            let take = (end - start).min(n as u64) as usize;
            let read = &self.buf.get(want)[skip..take];
            let want_bytes = &expected[(pos - at) as usize..(start + take as u64 - at) as usize];
            if read != want_bytes {
                let first = read
                    .iter()
                    .zip(want_bytes)
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                return Err(StreamError::Mismatch {
                    path: self.path.to_owned(),
                    at: pos + first as u64,
                });
            }
            self.checked += (take - skip) as u64;
            pos = start + take as u64;
        }
        Ok(())
    }
}

/// Reads `expected.len()` bytes at `offset` of `path` back from the device (after they were
/// written) and compares them with `expected`.
pub fn read_back(
    path: &Path,
    offset: u64,
    expected: &[u8],
    opts: &Options,
) -> Result<Verified, StreamError> {
    read_back_with(path, offset, expected, opts, true)
}

fn read_back_with(
    path: &Path,
    offset: u64,
    expected: &[u8],
    opts: &Options,
    try_direct: bool,
) -> Result<Verified, StreamError> {
    let started = Instant::now();
    let pb = bar(Some(expected.len() as u64), "verifying", opts.progress);
    let mut v = Verifier::open(path, try_direct)?;
    for (i, piece) in expected.chunks(CHUNK).enumerate() {
        if opts.interrupt.load(Ordering::Relaxed) {
            return Err(StreamError::Interrupted);
        }
        v.check(offset + (i * CHUNK) as u64, piece)?;
        pb.set_position(v.checked);
    }
    pb.finish_and_clear();
    Ok(Verified {
        method: v.method,
        time: started.elapsed(),
    })
}

/// Writes `new` over `old` at `offset` of `target`, only the 64 KiB blocks that differ, then
/// flushes. Returns the bytes written. For `inject`, which changes a few files in a partition.
pub fn write_changes(
    target: &File,
    target_path: &Path,
    offset: u64,
    old: &[u8],
    new: &[u8],
) -> Result<u64, StreamError> {
    const BLOCK: usize = 64 << 10;
    let mut written = 0;
    for (i, (o, n)) in old.chunks(BLOCK).zip(new.chunks(BLOCK)).enumerate() {
        if o != n {
            let at = offset + (i * BLOCK) as u64;
            target
                .write_all_at(n, at)
                .map_err(|source| StreamError::Write {
                    path: target_path.to_owned(),
                    at,
                    source,
                })?;
            written += n.len() as u64;
        }
    }
    target.sync_all().map_err(|source| StreamError::Sync {
        path: target_path.to_owned(),
        source,
    })?;
    Ok(written)
}

/// Human summary of a duration and a rate, e.g. `2.1 s (487 MiB/s)`.
pub fn rate(bytes: u64, t: Duration) -> String {
    let secs = t.as_secs_f64();
    if secs <= 0.0 {
        return format!("{secs:.1} s");
    }
    format!("{secs:.1} s ({}/s)", human((bytes as f64 / secs) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flash::source::Image;

    fn opts() -> Options {
        Options {
            verify: true,
            progress: false,
            flush_windows: false,
            capacity: None,
            interrupt: Arc::new(AtomicBool::new(false)),
        }
    }

    fn noise(len: usize) -> Vec<u8> {
        let mut x: u32 = 0x1234_5678;
        (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect()
    }

    /// An "image" file of `len` bytes and a plan that streams it whole (no head).
    fn plan(dir: &Path, len: usize) -> (Vec<u8>, Plan) {
        let data = noise(len);
        let img = dir.join("src.img");
        std::fs::write(&img, &data).unwrap();
        let (path, compressed, head, rest) = Image::open(&img).unwrap().into_parts();
        let plan = Plan {
            path,
            compressed,
            head,
            rest,
            expected_len: Some(len as u64),
            min_len: len as u64,
        };
        (data, plan)
    }

    #[test]
    fn an_image_larger_than_the_target_stops_at_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let (_, plan) = plan(dir.path(), 3 * CHUNK + 10);
        let target = dir.path().join("card");
        let mut f = File::create(&target).unwrap();
        let o = Options {
            capacity: Some(2 * CHUNK as u64),
            ..opts()
        };
        let err = write_image(plan, &mut f, &target, &o).unwrap_err();
        assert!(matches!(err, StreamError::TargetFull { .. }), "{err}");
        assert!(std::fs::metadata(&target).unwrap().len() <= 2 * CHUNK as u64);
    }

    #[test]
    fn a_written_stream_is_verified_and_its_sha256_is_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let (data, plan) = plan(dir.path(), 2 * CHUNK + 4097);
        let target = dir.path().join("card");
        let mut f = File::create(&target).unwrap();
        let w = write_image(plan, &mut f, &target, &opts()).unwrap();
        assert_eq!(w.bytes, data.len() as u64);
        assert_eq!(w.image_sha256, autoprov_bundle::sha256_hex(&data));
        assert_eq!(w.verified.unwrap().method, ReadBack::Direct);
        assert_eq!(std::fs::read(&target).unwrap(), data);
    }

    #[test]
    fn a_stream_of_several_windows_is_verified_with_either_method() {
        let dir = tempfile::tempdir().unwrap();
        for (direct, flush_windows) in [(true, false), (false, false), (true, true)] {
            let (data, plan) = plan(dir.path(), 2 * WINDOW as usize + 3 * CHUNK + 513);
            let target = dir.path().join("card");
            let mut f = File::create(&target).unwrap();
            let o = Options {
                flush_windows,
                ..opts()
            };
            let w = write_image_with(plan, &mut f, &target, &o, direct).unwrap();
            let method = if direct {
                ReadBack::Direct
            } else {
                ReadBack::DroppedCache
            };
            assert_eq!(w.verified.unwrap().method, method);
            assert_eq!(w.bytes, data.len() as u64);
        }
    }

    #[test]
    fn a_stream_shorter_than_its_partitions_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut plan) = plan(dir.path(), 10_000);
        plan.min_len = 20_000;
        let target = dir.path().join("card");
        let err =
            write_image(plan, &mut File::create(&target).unwrap(), &target, &opts()).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn an_interrupt_stops_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let (_, plan) = plan(dir.path(), CHUNK);
        let target = dir.path().join("card");
        let o = opts();
        o.interrupt.store(true, Ordering::Relaxed);
        let err = write_image(plan, &mut File::create(&target).unwrap(), &target, &o).unwrap_err();
        assert!(matches!(err, StreamError::Interrupted), "{err}");
    }

    #[test]
    fn read_back_finds_a_changed_byte_at_any_offset_and_either_method() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("card");
        let data = noise(3 * CHUNK);
        std::fs::write(&path, &data).unwrap();
        // Unaligned range, spanning chunks.
        let (off, len) = (1000usize, 2 * CHUNK + 77);
        let want = &data[off..off + len];
        for direct in [true, false] {
            let v = read_back_with(&path, off as u64, want, &opts(), direct).unwrap();
            let method = if direct {
                ReadBack::Direct
            } else {
                ReadBack::DroppedCache
            };
            assert_eq!(v.method, method);
        }
        let mut bad = data.clone();
        let flipped = off + CHUNK + 5;
        bad[flipped] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        for direct in [true, false] {
            let err = read_back_with(&path, off as u64, want, &opts(), direct).unwrap_err();
            assert!(
                matches!(err, StreamError::Mismatch { at, .. } if at == flipped as u64),
                "{err}"
            );
        }
    }

    #[test]
    fn only_changed_blocks_are_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("card");
        let old = noise(1 << 20);
        std::fs::write(&path, &old).unwrap();
        let mut new = old.clone();
        new[200_000] ^= 0xff;
        new[900_000] ^= 0xff;
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        let written = write_changes(&f, &path, 0, &old, &new).unwrap();
        assert_eq!(written, 2 * 64 * 1024);
        assert_eq!(std::fs::read(&path).unwrap(), new);
    }
}
