//! Flash-time injection: `autoprov flash` writes the fleet's one image to a card with the device's
//! bundle injected into the boot partition; `autoprov inject` rewrites only the bundle on a card
//! that was flashed before.
//!
//! One idea per file:
//!
//! | module        | what                                                                  |
//! |---------------|-----------------------------------------------------------------------|
//! | [`partition`] | MBR and GPT partition tables, every offset checked                    |
//! | [`fat`]       | the boot partition: found by label, `/autoprov/` replaced in memory  |
//! | [`source`]    | `.img` / `.img.zst` as one decoded stream, SHA-256 of the file        |
//! | [`stream`]    | the one streaming write, fsync, byte-for-byte read-back               |
//! | [`target`]    | what may be written: mounted, system and non-removable disks refused  |
//! | [`settings`]  | `--set KEY=VALUE` and Wi-Fi networks for the bundle                   |
//! | [`command`]   | `flash` and `inject` end to end, with the inventory                   |
//!
//! Order of a flash, so that a failure at any point leaves the inventory consistent: everything
//! that can be checked without writing is checked first (image, partition table, boot partition,
//! room for the bundle, target); then the certificate is issued and recorded `pending`, the flash
//! recorded `started`; then the card is written, flushed and read back; then, in one transaction,
//! the certificate becomes `active` and the flash `ok` — or, on failure, the flash `failed` and
//! the certificate revoked, because the key may be on a card nobody will use.

pub mod command;
pub mod fat;
pub mod partition;
pub mod settings;
pub mod source;
pub mod stream;
pub mod target;

use std::io;

pub use command::{FlashRequest, Identity, InjectRequest, Outcome};

/// Random access to the bytes of an image or a card, for reading its partition table.
pub trait Medium {
    /// `len` bytes at `offset`; an error if the medium ends before.
    fn bytes(&mut self, offset: u64, len: usize) -> io::Result<Vec<u8>>;
}

/// A medium held in memory.
#[derive(Debug)]
pub struct SliceMedium<'a>(pub &'a [u8]);

impl Medium for SliceMedium<'_> {
    fn bytes(&mut self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        usize::try_from(offset)
            .ok()
            .and_then(|o| Some(o..o.checked_add(len)?))
            .and_then(|r| self.0.get(r))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "beyond the end"))
    }
}

impl Medium for std::fs::File {
    fn bytes(&mut self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        std::os::unix::fs::FileExt::read_exact_at(self, &mut buf, offset)?;
        Ok(buf)
    }
}

/// A large buffer that may hold a device key (a boot partition, an image's head), cleared when
/// dropped. `zeroize` writes byte by byte through volatile stores, which costs tens of
/// milliseconds per partition; a `memset` kept alive by `black_box` does the same work at memory
/// speed.
#[derive(Default)]
pub struct Wiped(pub Vec<u8>);

impl Drop for Wiped {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&mut self.0);
    }
}

impl std::ops::Deref for Wiped {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for Wiped {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl std::fmt::Debug for Wiped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Wiped({} bytes)", self.0.len())
    }
}

/// Bytes as `1.5 GiB`, `30 MiB`, `512 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else if v.fract() < 0.05 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
