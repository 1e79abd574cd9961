//! What the fuzz targets share: how a fuzzer's byte string is cut into the several inputs a parser
//! reads (files of a bundle, layers of the configuration, segments of the spool, an image with a
//! long zero tail), and the inverse encoders the seed generator (`src/bin/seeds.rs`) uses to
//! write real inputs in those formats.
//!
//! Every format here is a thin framing around bytes the production code reads unchanged: the
//! targets call the same public functions `autoprov` and `autoprov-agent` call on a card, a
//! config file or a spool directory.

use std::io;
use std::path::{Path, PathBuf};

use autoprov::flash::Medium;
use autoprov_bundle::{Bundle, Contents, DeviceId};
use zeroize::Zeroizing;

/// Separates the parts of a multi-file input. A NUL byte: none of the texts a part holds (PEM,
/// TOML) contains one, so a seed splits where it was joined.
pub const SEP: u8 = 0;

/// Cuts `data` at every [`SEP`] into at most `max` parts (the last keeps any further separators).
pub fn split(data: &[u8], max: usize) -> Vec<&[u8]> {
    data.splitn(max, |b| *b == SEP).collect()
}

/// Joins parts with [`SEP`]: the inverse of [`split`] for parts without NUL bytes.
pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&SEP)
}

/// A directory for targets that exercise file-system code, on tmpfs when there is one (the
/// fuzzer runs thousands of times a second), emptied before each use.
pub fn scratch(name: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("autoprov-fuzz-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// A small bundle with placeholder contents, for targets that need something to inject (the FAT
/// code does not look inside the files).
pub fn sample_bundle() -> Bundle {
    Bundle::new(Contents {
        device_id: DeviceId::new("sensor-007").expect("valid id"),
        serial: "4f2a".into(),
        created_at: "2026-12-03T12:00:00Z".into(),
        device_crt: b"-----BEGIN CERTIFICATE-----\nleaf\n-----END CERTIFICATE-----\n".to_vec(),
        device_key: Zeroizing::new(
            b"-----BEGIN PRIVATE KEY-----\nkey\n-----END PRIVATE KEY-----\n".to_vec(),
        ),
        ca_crt: b"-----BEGIN CERTIFICATE-----\nroot\n-----END CERTIFICATE-----\n".to_vec(),
        device_toml: b"[device]\nid = \"sensor-007\"\n".to_vec(),
        wifi_conf: Some(Zeroizing::new(b"network={\n ssid=\"x\"\n}\n".to_vec())),
    })
}

/// A disk image given by its first bytes, followed by zeros up to `len` (an image is mostly
/// empty space; the fuzzer should spend its mutations on the tables, not on the zeros).
#[derive(Debug)]
pub struct PaddedMedium<'a> {
    /// The image's first bytes.
    pub head: &'a [u8],
    /// The whole image's length.
    pub len: u64,
}

impl Medium for PaddedMedium<'_> {
    fn bytes(&mut self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let end = offset
            .checked_add(len as u64)
            .filter(|end| *end <= self.len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "beyond the end"))?;
        let mut out = vec![0u8; len];
        let head_len = self.head.len() as u64;
        if offset < head_len {
            let from = &self.head[offset as usize..end.min(head_len) as usize];
            out[..from.len()].copy_from_slice(from);
        }
        Ok(out)
    }
}

/// Header of the image and FAT inputs: a flags byte and a little-endian `u32` (a length in
/// sectors), then the bytes.
pub fn header(data: &[u8]) -> Option<(u8, u32, &[u8])> {
    let (&flags, rest) = data.split_first()?;
    let (len, body) = rest.split_first_chunk::<4>()?;
    Some((flags, u32::from_le_bytes(*len), body))
}

/// Builds a header-framed input (the inverse of [`header`]).
pub fn with_header(flags: u8, sectors: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend_from_slice(&sectors.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Recomputes the CRC32s of a GPT (entry array, then header) in `head`, so that mutations of the
/// fields behind them reach the checks that follow instead of all failing at the checksum.
/// Leaves `head` alone where it has no plausible GPT header.
pub fn fix_gpt_crcs(head: &mut [u8]) {
    let le32 = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    if head.len() < 1024 || &head[512..520] != b"EFI PART" {
        return;
    }
    let h = 512;
    let header_size = le32(head, h + 12) as usize;
    if !(92..=512).contains(&header_size) {
        return;
    }
    let entries_lba = u64::from_le_bytes(head[h + 72..h + 80].try_into().unwrap_or_default());
    let count = u64::from(le32(head, h + 80));
    let size = u64::from(le32(head, h + 84));
    let start = entries_lba.saturating_mul(512);
    let end = count
        .checked_mul(size)
        .and_then(|n| n.checked_add(start))
        .unwrap_or(u64::MAX);
    if end <= head.len() as u64 {
        let crc = crc32fast::hash(&head[start as usize..end as usize]);
        head[h + 88..h + 92].copy_from_slice(&crc.to_le_bytes());
    }
    head[h + 16..h + 20].fill(0);
    let crc = crc32fast::hash(&head[h..h + header_size]);
    head[h + 16..h + 20].copy_from_slice(&crc.to_le_bytes());
}

/// The spool target's input: an `acked` file, the state directory's `seq` file and segment
/// files.
///
/// Layout: flags (bit 0: write `acked`; bit 1: fix record CRCs; bit 2: write `seq`),
/// `acked: u64 LE`, `seq: u64 LE`, then segments, each `name: u64 LE | len: u32 LE | bytes`. A
/// segment's name is the number its file is named after, which damage may make disagree with
/// its first record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SpoolInput {
    /// Whether an `acked` file exists.
    pub write_acked: bool,
    /// Recompute every record's CRC before writing (reaches the checks behind the CRC).
    pub fix_crcs: bool,
    /// The `acked` file's number.
    pub acked: u64,
    /// The `seq` file's number, if it exists.
    pub seq: Option<u64>,
    /// (file name number, file content).
    pub segments: Vec<(u64, Vec<u8>)>,
}

impl SpoolInput {
    /// Decodes an input; a truncated last segment keeps what is there.
    pub fn decode(data: &[u8]) -> Option<Self> {
        let (&flags, rest) = data.split_first()?;
        let (acked, rest) = rest.split_first_chunk::<8>()?;
        let (seq, mut rest) = rest.split_first_chunk::<8>()?;
        let mut segments = Vec::new();
        while let Some((name, r)) = rest.split_first_chunk::<8>() {
            let Some((len, r)) = r.split_first_chunk::<4>() else {
                break;
            };
            let len = (u32::from_le_bytes(*len) as usize).min(r.len());
            segments.push((u64::from_le_bytes(*name), r[..len].to_vec()));
            rest = &r[len..];
            if segments.len() == 8 {
                break;
            }
        }
        Some(Self {
            write_acked: flags & 1 != 0,
            fix_crcs: flags & 2 != 0,
            acked: u64::from_le_bytes(*acked),
            seq: (flags & 4 != 0).then(|| u64::from_le_bytes(*seq)),
            segments,
        })
    }

    /// Encodes an input (the inverse of [`SpoolInput::decode`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![
            u8::from(self.write_acked)
                | (u8::from(self.fix_crcs) << 1)
                | (u8::from(self.seq.is_some()) << 2),
        ];
        out.extend_from_slice(&self.acked.to_le_bytes());
        out.extend_from_slice(&self.seq.unwrap_or_default().to_le_bytes());
        for (name, bytes) in &self.segments {
            out.extend_from_slice(&name.to_le_bytes());
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        out
    }
}

/// One spool record as the spool writes it: `len | crc32(body) | seq | payload`.
pub fn spool_record(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut body = seq.to_le_bytes().to_vec();
    body.extend_from_slice(payload);
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Rewrites the CRC of every record whose length field fits the segment, walking the records
/// as the spool's reader does.
pub fn fix_spool_crcs(segment: &mut [u8]) {
    let mut at = 0;
    while at + 8 <= segment.len() {
        let len = u32::from_le_bytes(segment[at..at + 4].try_into().unwrap_or_default()) as usize;
        let Some(end) = (at + 8).checked_add(len).filter(|e| *e <= segment.len()) else {
            return;
        };
        let crc = crc32fast::hash(&segment[at + 8..end]);
        segment[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        at = end;
    }
}

/// DHT11 target input, mode 0: one pulse per 3 bytes, `flags | micros: u16 LE` (flags bit 0:
/// high level; bit 1: micros × 256, for the long pulses of a stuck line).
pub fn encode_pulses(pulses: &[autoprov_agent::sensor::Pulse]) -> Vec<u8> {
    let mut out = vec![0u8];
    for p in pulses {
        let (scaled, micros) = if p.micros > u32::from(u16::MAX) {
            (2, (p.micros >> 8).min(u32::from(u16::MAX)) as u16)
        } else {
            (0, p.micros as u16)
        };
        out.push(u8::from(p.high) | scaled);
        out.extend_from_slice(&micros.to_le_bytes());
    }
    out
}
