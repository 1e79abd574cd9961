//! The image to flash: a raw `.img` or a zstd `.img.zst` (recognised by its magic number, not its
//! name), decoded as one forward stream.
//!
//! The start of the decoded stream — partition table up to the end of the boot partition — is kept
//! in memory (the *head*) so that the partition table can be read and the boot partition changed
//! before anything is written; the rest streams through once. The SHA-256 of the file as given
//! (what `sha256sum IMG` prints, and what the inventory records) is computed on the way, below
//! the decompressor, so reading the file once serves both.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use super::{Medium, Wiped};

/// The zstd frame magic number, little-endian.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// The boot partition must end within this many bytes of the image's start, because everything
/// up to its end is held in memory.
pub const MAX_HEAD: u64 = 1 << 30;

/// Why the image could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be opened or read.
    #[error("{path}: {source}", path = .0.display(), source = .1)]
    Io(PathBuf, io::Error),
    /// The zstd stream is corrupt (or the file is not what its magic number claims).
    #[error(
        "{path}: the zstd data is corrupt ({source}); download or build the image again",
        path = .0.display(),
        source = .1
    )]
    Corrupt(PathBuf, io::Error),
    /// The decoded image ends before a part that its partition table needs.
    #[error(
        "{path}: the image ends after {len} bytes, before byte {needed} that its partition table refers to: the file is truncated; download or build it again",
        path = .path.display()
    )]
    Truncated {
        /// The image.
        path: PathBuf,
        /// Bytes it has.
        len: u64,
        /// Bytes needed.
        needed: u64,
    },
    /// The boot partition lies too far into the image to be held in memory.
    #[error(
        "{path}: reading up to byte {needed} is needed to find the boot partition, more than the {MAX_HEAD} bytes held in memory; give the partition with --partition N",
        path = .path.display()
    )]
    TooFar {
        /// The image.
        path: PathBuf,
        /// Bytes that would be needed.
        needed: u64,
    },
}

/// A reader that hashes what passes through it, on a thread of its own: SHA-256 runs at a few
/// hundred MB/s here, which would otherwise be a raw image's whole streaming speed and a fifth of
/// the zstd decoder's thread.
pub struct Hashing<R> {
    inner: R,
    pieces: mpsc::SyncSender<Vec<u8>>,
    hasher: JoinHandle<Sha256>,
}

/// Pieces queued for the hashing thread (each up to one read, at most 1 MiB).
const HASH_QUEUE: usize = 8;

impl<R> Hashing<R> {
    fn new(inner: R) -> Hashing<R> {
        let (pieces, rx) = mpsc::sync_channel::<Vec<u8>>(HASH_QUEUE);
        let hasher = std::thread::spawn(move || {
            let mut hasher = Sha256::new();
            for piece in rx {
                hasher.update(&piece);
            }
            hasher
        });
        Hashing {
            inner,
            pieces,
            hasher,
        }
    }

    /// The SHA-256 of everything read, once the hashing thread has caught up.
    fn digest(self) -> io::Result<[u8; 32]> {
        let Hashing { pieces, hasher, .. } = self;
        // The end of the stream for the hashing thread.
        drop(pieces);
        let hasher = hasher
            .join()
            .map_err(|_| io::Error::other("the image's hashing thread panicked"))?;
        Ok(hasher.finalize().into())
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.pieces
                .send(buf[..n].to_vec())
                .map_err(|_| io::Error::other("the image's hashing thread stopped"))?;
        }
        Ok(n)
    }
}

/// The decoded stream.
pub enum Decoded {
    /// A raw image, read as is.
    Raw(Hashing<File>),
    /// A zstd image, decompressed on the fly.
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<Hashing<File>>>>),
}

impl Read for Decoded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoded::Raw(r) => r.read(buf),
            Decoded::Zstd(d) => d.read(buf),
        }
    }
}

impl Decoded {
    /// Reads what is left of the file and returns its SHA-256, hex. Call once the stream ended.
    pub fn finish(self) -> io::Result<String> {
        let mut hashing = match self {
            Decoded::Raw(r) => r,
            Decoded::Zstd(d) => d.finish().into_inner(),
        };
        io::copy(&mut hashing, &mut io::sink())?;
        Ok(hex::encode(hashing.digest()?))
    }
}

/// An open image: the head read so far and the rest of the stream.
pub struct Image {
    path: PathBuf,
    compressed: bool,
    file_len: u64,
    declared_len: Option<u64>,
    /// Zeroized on drop: once the bundle is injected it holds the device key.
    head: Wiped,
    decoded: Decoded,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("path", &self.path)
            .field("compressed", &self.compressed)
            .field("head", &self.head.len())
            .finish_non_exhaustive()
    }
}

impl Image {
    /// Opens `path`, recognising zstd by its magic number.
    pub fn open(path: &Path) -> Result<Image, ImageError> {
        let io_err = |e| ImageError::Io(path.to_owned(), e);
        let mut file = File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(io_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file (give an .img or .img.zst file)",
            )));
        }
        let mut magic = [0u8; 18];
        let n = read_full(&mut file, &mut magic).map_err(io_err)?;
        let compressed = n >= 4 && magic[..4] == ZSTD_MAGIC;
        let declared_len = if compressed {
            // Only the first frame's size is in its header; a multi-frame file is longer, and the
            // partition table then bounds the size instead.
            zstd::zstd_safe::get_frame_content_size(&magic[..n])
                .ok()
                .flatten()
        } else {
            Some(meta.len())
        };
        let file = File::open(path).map_err(io_err)?;
        let hashing = Hashing::new(file);
        let decoded = if compressed {
            let reader = BufReader::with_capacity(1 << 20, hashing);
            Decoded::Zstd(Box::new(
                zstd::stream::read::Decoder::with_buffer(reader).map_err(io_err)?,
            ))
        } else {
            Decoded::Raw(hashing)
        };
        Ok(Image {
            path: path.to_owned(),
            compressed,
            file_len: meta.len(),
            declared_len,
            head: Wiped::default(),
            decoded,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it is zstd-compressed.
    pub fn compressed(&self) -> bool {
        self.compressed
    }

    /// Size of the file as given.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Size of the decoded image, when known in advance: a raw image's file size, or the size a
    /// zstd frame header declares.
    pub fn declared_len(&self) -> Option<u64> {
        self.declared_len
    }

    /// Decoded size known for certain before streaming (raw images only).
    pub fn exact_len(&self) -> Option<u64> {
        (!self.compressed).then_some(self.file_len)
    }

    /// Reads the decoded stream until the head holds at least `end` bytes.
    pub fn fill_to(&mut self, end: u64) -> Result<(), ImageError> {
        if end > MAX_HEAD {
            return Err(ImageError::TooFar {
                path: self.path.clone(),
                needed: end,
            });
        }
        if self.head.len() as u64 >= end {
            return Ok(());
        }
        let want = end - self.head.len() as u64;
        self.head.reserve(want as usize);
        // read_to_end grows the buffer without zeroing it byte by byte first.
        let got = loop {
            match (&mut self.decoded).take(want).read_to_end(&mut self.head) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match got {
            Ok(_) if self.head.len() as u64 >= end => Ok(()),
            Ok(_) => Err(ImageError::Truncated {
                path: self.path.clone(),
                len: self.head.len() as u64,
                needed: end,
            }),
            Err(e) => Err(self.read_error(e)),
        }
    }

    /// Classifies an error of the decoded stream: the file's own I/O, or corrupt zstd data.
    pub fn read_error(&self, e: io::Error) -> ImageError {
        classify(&self.path, self.compressed, e)
    }

    /// The head read so far.
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// The head, to change the boot partition in place before the write pass.
    pub fn head_mut(&mut self) -> &mut [u8] {
        &mut self.head
    }

    /// Splits into the head and the rest of the stream, for the write pass.
    pub fn into_parts(self) -> (PathBuf, bool, Wiped, Decoded) {
        (self.path, self.compressed, self.head, self.decoded)
    }
}

/// Turns a read error of the decoded stream into an [`ImageError`].
pub fn classify(path: &Path, compressed: bool, e: io::Error) -> ImageError {
    // zstd reports corrupt data and a premature end (UnexpectedEof) as I/O errors of the reader.
    if compressed
        && matches!(
            e.kind(),
            io::ErrorKind::Other | io::ErrorKind::UnexpectedEof
        )
    {
        ImageError::Corrupt(path.to_owned(), e)
    } else {
        ImageError::Io(path.to_owned(), e)
    }
}

impl Medium for Image {
    fn bytes(&mut self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let end = offset
            .checked_add(len as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset overflow"))?;
        self.fill_to(end).map_err(io::Error::other)?;
        Ok(self.head[offset as usize..end as usize].to_vec())
    }
}

/// Reads until `buf` is full or the reader ends; returns how much was read.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut at = 0;
    while at < buf.len() {
        match r.read(&mut buf[at..]) {
            Ok(0) => break,
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}
