//! Partition tables of disk images: MBR (what nixpkgs' sd-image and Raspberry Pi OS write) and
//! GPT.
//!
//! The image is untrusted input, so every offset and length read from it is checked before use:
//! partitions must lie after the table, must not overlap, and their ends are computed with
//! checked arithmetic. GPT headers and entry arrays are checked against their CRC32. Logical
//! sectors are 512 bytes, as in every image a `dd`-style flasher handles; a GPT written for
//! 4096-byte sectors is reported as such.

use std::fmt;
use std::io;

use super::Medium;

/// Size of a logical sector in bytes.
pub const SECTOR: u64 = 512;
/// Largest GPT partition entry array accepted (the usual one is 16 KiB).
const MAX_GPT_ENTRIES_BYTES: u64 = 1024 * 1024;

/// Why the partition table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// Reading the image failed (a truncated image ends here).
    #[error("reading the partition table: {0}")]
    Io(#[from] io::Error),
    /// Sector 0 has no boot signature.
    #[error(
        "no partition table: sector 0 lacks the 0x55AA signature (give a whole-disk image such as nixpkgs' sd-image, not a filesystem or ISO image)"
    )]
    NoSignature,
    /// The GPT header is damaged or not one this reader handles.
    #[error("unreadable GPT: {0}")]
    BadGpt(String),
    /// An entry points outside the disk or overlaps the table or another partition.
    #[error("partition {number}: {what}; the partition table is damaged")]
    BadPartition {
        /// The partition number (1-based).
        number: u32,
        /// What is wrong.
        what: String,
    },
    /// The table has no partitions.
    #[error("the partition table is empty")]
    Empty,
}

/// Which kind of table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// MS-DOS master boot record.
    Mbr,
    /// GUID partition table.
    Gpt,
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::Mbr => "MBR",
            Scheme::Gpt => "GPT",
        })
    }
}

/// A partition's type as the table records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartType {
    /// MBR type byte (0x0b/0x0c FAT32, 0x83 Linux, …).
    Mbr(u8),
    /// GPT type GUID, in its on-disk (mixed-endian) byte order.
    Gpt([u8; 16]),
}

impl fmt::Display for PartType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartType::Mbr(t) => write!(f, "type 0x{t:02x}"),
            PartType::Gpt(g) => write!(
                f,
                "type {:08x}-{:04x}-{:04x}-{}-{}",
                u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
                u16::from_le_bytes([g[4], g[5]]),
                u16::from_le_bytes([g[6], g[7]]),
                hex::encode(&g[8..10]),
                hex::encode(&g[10..16])
            ),
        }
    }
}

/// One partition, in bytes from the start of the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Its number as tools show it (`sdb1` is 1): the MBR slot or GPT entry, 1-based.
    pub number: u32,
    /// Offset of its first byte.
    pub start: u64,
    /// Its length.
    pub len: u64,
    /// Its type.
    pub kind: PartType,
}

impl Partition {
    /// Offset one past its last byte.
    pub fn end(&self) -> u64 {
        // Checked when the table was parsed.
        self.start + self.len
    }
}

/// A parsed partition table.
#[derive(Clone, Debug)]
pub struct Table {
    /// MBR or GPT.
    pub scheme: Scheme,
    /// The partitions, in table order.
    pub partitions: Vec<Partition>,
    /// The smallest disk size the table is consistent with: the end of the last partition, or
    /// for GPT the end of the backup header.
    pub min_disk_len: u64,
}

impl Table {
    /// The partition with this number.
    pub fn get(&self, number: u32) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.number == number)
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn bad(number: u32, what: impl Into<String>) -> PartitionError {
    PartitionError::BadPartition {
        number,
        what: what.into(),
    }
}

/// Reads the partition table at the start of `medium`. `disk_len` is the medium's size when
/// known (a raw image or a device); every partition must then end within it.
pub fn read(medium: &mut dyn Medium, disk_len: Option<u64>) -> Result<Table, PartitionError> {
    let mbr = medium.bytes(0, SECTOR as usize)?;
    if mbr[510] != 0x55 || mbr[511] != 0xAA {
        return Err(PartitionError::NoSignature);
    }
    let entries: Vec<(u8, u32, u32)> = (0..4)
        .map(|i| {
            let e = &mbr[446 + 16 * i..446 + 16 * (i + 1)];
            (e[4], le32(e, 8), le32(e, 12))
        })
        .collect();
    let table = if entries.iter().any(|(t, _, _)| *t == 0xEE) {
        read_gpt(medium)?
    } else {
        read_mbr(&entries)?
    };
    check_layout(&table, disk_len)?;
    Ok(table)
}

fn read_mbr(entries: &[(u8, u32, u32)]) -> Result<Table, PartitionError> {
    let mut partitions = Vec::new();
    for (i, &(kind, first, count)) in entries.iter().enumerate() {
        let number = i as u32 + 1;
        if kind == 0 {
            continue;
        }
        if count == 0 {
            return Err(bad(number, "has no sectors"));
        }
        if first == 0 {
            return Err(bad(number, "starts in sector 0, over the partition table"));
        }
        partitions.push(Partition {
            number,
            start: u64::from(first) * SECTOR,
            len: u64::from(count) * SECTOR,
            kind: PartType::Mbr(kind),
        });
    }
    let min_disk_len = partitions.iter().map(Partition::end).max().unwrap_or(0);
    Ok(Table {
        scheme: Scheme::Mbr,
        partitions,
        min_disk_len,
    })
}

fn read_gpt(medium: &mut dyn Medium) -> Result<Table, PartitionError> {
    let header = medium.bytes(SECTOR, SECTOR as usize)?;
    if &header[0..8] != b"EFI PART" {
        let at_4k = medium.bytes(4096, 8).unwrap_or_default();
        if at_4k == b"EFI PART" {
            return Err(PartitionError::BadGpt(
                "this GPT is laid out for 4096-byte sectors; only 512-byte-sector images are supported".into(),
            ));
        }
        return Err(PartitionError::BadGpt(
            "a protective MBR but no GPT header in sector 1".into(),
        ));
    }
    let header_size = le32(&header, 12) as usize;
    if !(92..=SECTOR as usize).contains(&header_size) {
        return Err(PartitionError::BadGpt(format!(
            "header size {header_size} is not between 92 and 512"
        )));
    }
    let mut crc_input = header[..header_size].to_vec();
    crc_input[16..20].fill(0);
    if crc32fast::hash(&crc_input) != le32(&header, 16) {
        return Err(PartitionError::BadGpt(
            "the header checksum (CRC32) does not match".into(),
        ));
    }
    let my_lba = le64(&header, 24);
    let alternate_lba = le64(&header, 32);
    let first_usable = le64(&header, 40);
    let last_usable = le64(&header, 48);
    let entries_lba = le64(&header, 72);
    let count = u64::from(le32(&header, 80));
    let entry_size = u64::from(le32(&header, 84));
    let entries_crc = le32(&header, 88);
    if my_lba != 1 {
        return Err(PartitionError::BadGpt(format!(
            "the primary header says it is at sector {my_lba}, not 1"
        )));
    }
    if entry_size < 128 || !entry_size.is_power_of_two() {
        return Err(PartitionError::BadGpt(format!(
            "entry size {entry_size} is not a power of two of at least 128"
        )));
    }
    let array_len = count
        .checked_mul(entry_size)
        .filter(|n| *n <= MAX_GPT_ENTRIES_BYTES)
        .ok_or_else(|| {
            PartitionError::BadGpt(format!(
                "{count} entries of {entry_size} bytes is more than the {MAX_GPT_ENTRIES_BYTES} bytes accepted"
            ))
        })?;
    if entries_lba < 2 || first_usable <= entries_lba || last_usable < first_usable {
        return Err(PartitionError::BadGpt(format!(
            "inconsistent layout (entries at sector {entries_lba}, usable sectors {first_usable}..={last_usable})"
        )));
    }
    let array_end = entries_lba
        .checked_mul(SECTOR)
        .and_then(|s| s.checked_add(array_len))
        .ok_or_else(|| PartitionError::BadGpt("entry array beyond any disk".into()))?;
    if array_end > first_usable.saturating_mul(SECTOR) {
        return Err(PartitionError::BadGpt(
            "the entry array overlaps the first usable sector".into(),
        ));
    }
    let array = medium.bytes(entries_lba * SECTOR, array_len as usize)?;
    if crc32fast::hash(&array) != entries_crc {
        return Err(PartitionError::BadGpt(
            "the partition entries' checksum (CRC32) does not match".into(),
        ));
    }
    let mut partitions = Vec::new();
    for (i, e) in array.chunks_exact(entry_size as usize).enumerate() {
        let mut kind = [0u8; 16];
        kind.copy_from_slice(&e[0..16]);
        if kind == [0u8; 16] {
            continue;
        }
        let number = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let (first, last) = (le64(e, 32), le64(e, 40));
        if first < first_usable || last > last_usable || last < first {
            return Err(bad(
                number,
                format!(
                    "sectors {first}..={last} lie outside the usable {first_usable}..={last_usable}"
                ),
            ));
        }
        // Sector numbers are 64-bit and unchecked so far: in bytes they may not fit (a wrapped
        // start would name a place the table does not).
        let beyond = || {
            bad(
                number,
                format!("sectors {first}..={last} lie beyond any disk"),
            )
        };
        partitions.push(Partition {
            number,
            start: first.checked_mul(SECTOR).ok_or_else(beyond)?,
            // first >= first_usable > entries_lba >= 2, so (last - first + 1) cannot overflow.
            len: (last - first + 1).checked_mul(SECTOR).ok_or_else(beyond)?,
            kind: PartType::Gpt(kind),
        });
    }
    let backup_end = alternate_lba
        .checked_add(1)
        .and_then(|n| n.checked_mul(SECTOR))
        .ok_or_else(|| PartitionError::BadGpt("backup header beyond any disk".into()))?;
    let last_end = partitions.iter().map(Partition::end).max().unwrap_or(0);
    Ok(Table {
        scheme: Scheme::Gpt,
        partitions,
        min_disk_len: backup_end.max(last_end),
    })
}

fn check_layout(table: &Table, disk_len: Option<u64>) -> Result<(), PartitionError> {
    if table.partitions.is_empty() {
        return Err(PartitionError::Empty);
    }
    for p in &table.partitions {
        let end = p
            .start
            .checked_add(p.len)
            .ok_or_else(|| bad(p.number, "ends beyond any disk"))?;
        if let Some(len) = disk_len
            && end > len
        {
            return Err(bad(
                p.number,
                format!(
                    "ends at byte {end}, beyond the end of the image ({len} bytes): the image is truncated"
                ),
            ));
        }
    }
    let mut sorted: Vec<&Partition> = table.partitions.iter().collect();
    sorted.sort_by_key(|p| p.start);
    for pair in sorted.windows(2) {
        if pair[1].start < pair[0].end() {
            return Err(bad(
                pair[1].number,
                format!("overlaps partition {}", pair[0].number),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flash::SliceMedium;

    fn mbr(entries: &[(u8, u32, u32)]) -> Vec<u8> {
        let mut d = vec![0u8; 4096];
        for (i, (kind, first, count)) in entries.iter().enumerate() {
            let e = &mut d[446 + 16 * i..446 + 16 * (i + 1)];
            e[4] = *kind;
            e[8..12].copy_from_slice(&first.to_le_bytes());
            e[12..16].copy_from_slice(&count.to_le_bytes());
        }
        d[510] = 0x55;
        d[511] = 0xAA;
        d
    }

    fn parse(d: &[u8], len: Option<u64>) -> Result<Table, PartitionError> {
        read(&mut SliceMedium(d), len)
    }

    #[test]
    fn sd_image_layout_is_read() {
        // nixpkgs: FAT at 8 MiB for 30 MiB, then Linux to the end.
        let d = mbr(&[(0x0b, 16384, 61440), (0x83, 77824, 100000)]);
        let t = parse(&d, Some((77824 + 100000) * 512)).unwrap();
        assert_eq!(t.scheme, Scheme::Mbr);
        assert_eq!(t.partitions[0].start, 8 << 20);
        assert_eq!(t.partitions[0].len, 30 << 20);
        assert_eq!(t.min_disk_len, (77824 + 100000) * 512);
    }

    #[test]
    fn missing_signature_is_not_a_disk_image() {
        let mut d = mbr(&[(0x0b, 2048, 100)]);
        d[510] = 0;
        assert!(matches!(parse(&d, None), Err(PartitionError::NoSignature)));
    }

    #[test]
    fn partition_past_the_end_of_the_image_is_reported_as_truncation() {
        let d = mbr(&[(0x0b, 2048, 100)]);
        let err = parse(&d, Some(2048 * 512)).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn overlapping_partitions_are_refused() {
        let d = mbr(&[(0x0b, 2048, 100), (0x83, 2100, 100)]);
        let err = parse(&d, None).unwrap_err();
        assert!(err.to_string().contains("overlaps partition 1"), "{err}");
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let d = mbr(&[(0x0b, u32::MAX, u32::MAX)]);
        let t = parse(&d, None).unwrap();
        assert_eq!(t.partitions[0].end(), 2 * (u64::from(u32::MAX) * 512));
        assert!(parse(&d, Some(1 << 30)).is_err());
    }

    #[test]
    fn short_image_is_an_io_error_not_a_panic() {
        assert!(matches!(
            parse(&[0u8; 100], None),
            Err(PartitionError::Io(_))
        ));
    }

    fn gpt(entries: &[([u8; 16], u64, u64)]) -> Vec<u8> {
        let mut d = mbr(&[(0xEE, 1, 0xFFFF_FFFF)]);
        d.resize(64 * 512, 0);
        let mut array = vec![0u8; 128 * 128];
        for (i, (kind, first, last)) in entries.iter().enumerate() {
            let e = &mut array[128 * i..128 * (i + 1)];
            e[0..16].copy_from_slice(kind);
            e[16] = 1;
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
        }
        d[1024..1024 + array.len()].copy_from_slice(&array);
        let h = &mut d[512..1024];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        h[32..40].copy_from_slice(&9999u64.to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&9966u64.to_le_bytes());
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32fast::hash(&array).to_le_bytes());
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        d
    }

    const BASIC_DATA: [u8; 16] = [
        0xa2, 0xa0, 0xd0, 0xeb, 0xe5, 0xb9, 0x33, 0x44, 0x87, 0xc0, 0x68, 0xb6, 0xb7, 0x26, 0x99,
        0xc7,
    ];

    #[test]
    fn gpt_entries_are_read_and_the_backup_header_bounds_the_disk() {
        let d = gpt(&[(BASIC_DATA, 2048, 4095), (BASIC_DATA, 4096, 9966)]);
        let t = parse(&d, None).unwrap();
        assert_eq!(t.scheme, Scheme::Gpt);
        assert_eq!(t.partitions.len(), 2);
        assert_eq!(t.partitions[0].start, 2048 * 512);
        assert_eq!(t.partitions[0].len, 2048 * 512);
        assert_eq!(t.min_disk_len, 10000 * 512);
        assert_eq!(
            t.partitions[0].kind.to_string(),
            "type ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"
        );
    }

    #[test]
    fn gpt_sector_numbers_beyond_64_bit_bytes_are_refused() {
        // Found by fuzzing (partition_table): a start sector whose byte offset overflows u64
        // wrapped to a small offset in release builds, a partition the table does not describe.
        let mut d = gpt(&[(BASIC_DATA, (1 << 55) + 4, (1 << 55) + 4)]);
        let h = &mut d[512..1024];
        h[48..56].copy_from_slice(&u64::MAX.to_le_bytes());
        h[16..20].fill(0);
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        let err = parse(&d, None).unwrap_err();
        assert!(err.to_string().contains("beyond any disk"), "{err}");
    }

    #[test]
    fn gpt_with_a_bad_checksum_is_refused() {
        let mut d = gpt(&[(BASIC_DATA, 2048, 4095)]);
        d[1024 + 32] ^= 1;
        let err = parse(&d, None).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }
}
