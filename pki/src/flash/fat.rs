//! The FAT boot partition: recognising it by its volume label, and replacing its `/autoprov/`
//! folder with a device bundle — in memory, on a copy of the partition's bytes, with the `fatfs`
//! crate.
//!
//! nixpkgs' sd-image labels the partition `FIRMWARE` (`mkfs.vfat -n FIRMWARE`, FAT16 at its
//! default 30 MiB), Raspberry Pi OS labels it `bootfs`. The label is read from the boot sector,
//! which is checked field by field before `fatfs` sees it, so a damaged or hostile image gives an
//! error rather than a panic or an endless loop on a nonsensical geometry. So is the structure
//! behind it ([`check_structure`]): `fatfs` follows cluster numbers as it finds them, and one
//! naming the reserved cluster 1 or a cluster past the end makes it compute a wrapped sector (an
//! overflow panic in debug builds, a read of the wrong sector in release builds), while a
//! looping chain or a directory that contains itself sends it round forever.

use std::io::{self, Cursor, Write};

use autoprov_bundle::{Bundle, CARD_FOLDER, ReadError};
use fatfs::{Date, DateTime, FileSystem, FsOptions, Time, TimeProvider};
use zeroize::Zeroizing;

/// The short names of a directory's entries for itself and its parent.
const DOT: &[u8; 11] = b".          ";
const DOTDOT: &[u8; 11] = b"..         ";

/// Volume labels that mark the boot partition (compared without case).
pub const LABELS: [&str; 2] = ["FIRMWARE", "bootfs"];

/// Why the FAT partition could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FatError {
    /// The boot sector does not describe a usable FAT filesystem.
    #[error("is not a usable FAT filesystem: {0}")]
    NotFat(String),
    /// `fatfs` refused the filesystem or failed while changing it.
    #[error("has a damaged FAT filesystem ({0}); run `fsck.fat` on the image or rebuild it")]
    Damaged(io::Error),
    /// Not enough free space for the bundle.
    #[error(
        "is too full for the bundle: {free} bytes free after removing the old /{CARD_FOLDER}/, {needed} needed; free some space on it or enlarge it"
    )]
    TooFull {
        /// Free bytes.
        free: u64,
        /// Bytes the bundle needs, in whole clusters.
        needed: u64,
    },
    /// Writing a file failed (e.g. a full FAT16 root directory).
    #[error("could not write /{CARD_FOLDER}/{file}: {source}")]
    Write {
        /// The file.
        file: String,
        /// The error.
        source: io::Error,
    },
    /// Reading the bundle back failed its checks.
    #[error("holds an invalid bundle in /{CARD_FOLDER}/: {0}")]
    Bundle(#[from] ReadError),
}

/// What the boot sector says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FatInfo {
    /// FAT12, FAT16 or FAT32 (by cluster count, as the specification defines it).
    pub fat_type: &'static str,
    /// The volume label in the boot sector, trimmed; `None` if the sector has no label field.
    pub label: Option<String>,
    /// Size of the filesystem in bytes.
    pub size: u64,
}

impl FatInfo {
    /// Whether the label is one of [`LABELS`].
    pub fn is_boot_label(&self) -> bool {
        self.label
            .as_deref()
            .is_some_and(|l| LABELS.iter().any(|b| b.eq_ignore_ascii_case(l)))
    }
}

fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

/// Reads a FAT boot sector (the first 512 bytes of a partition); `None` if it is not one.
pub fn probe(sector: &[u8]) -> Result<FatInfo, FatError> {
    let not = |why: &str| Err(FatError::NotFat(why.to_owned()));
    if sector.len() < 512 || sector[510] != 0x55 || sector[511] != 0xAA {
        return not("no boot sector signature");
    }
    let bytes_per_sector = le16(sector, 11);
    let per_cluster = u64::from(sector[13]);
    let reserved = le16(sector, 14);
    let fats = u64::from(sector[16]);
    let root_entries = le16(sector, 17);
    let total = match le16(sector, 19) {
        0 => le32(sector, 32),
        n => n,
    };
    let fat_size = match le16(sector, 22) {
        0 => le32(sector, 36),
        n => n,
    };
    if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096) {
        return not("bytes per sector is not 512, 1024, 2048 or 4096");
    }
    if !per_cluster.is_power_of_two() || per_cluster > 128 {
        return not("sectors per cluster is not a power of two up to 128");
    }
    if reserved == 0 || fats == 0 || fat_size == 0 || total == 0 {
        return not("zero reserved sectors, FATs, FAT size or total size");
    }
    let root_sectors = (root_entries * 32).div_ceil(bytes_per_sector);
    let meta = reserved + fats * fat_size + root_sectors;
    if meta >= total {
        return not("its FATs are larger than the filesystem");
    }
    let clusters = (total - meta) / per_cluster;
    let fat_type = match clusters {
        0..4085 => "FAT12",
        4085..65525 => "FAT16",
        _ => "FAT32",
    };
    let fat32_layout = le16(sector, 22) == 0;
    if fat32_layout != (fat_type == "FAT32") {
        return not("its boot sector layout contradicts its cluster count");
    }
    let bits = match fat_type {
        "FAT12" => 12,
        "FAT16" => 16,
        _ => 32,
    };
    if fat_size * bytes_per_sector * 8 / bits < clusters + 2 {
        return not("its FAT is too small for its clusters");
    }
    let label_at = if fat32_layout { 71 } else { 43 };
    let signature_at = label_at - 5;
    let label = (sector[signature_at] == 0x29).then(|| {
        String::from_utf8_lossy(&sector[label_at..label_at + 11])
            .trim_end_matches([' ', '\0'])
            .to_owned()
    });
    Ok(FatInfo {
        fat_type,
        label,
        size: total * bytes_per_sector,
    })
}

/// What [`inject`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injected {
    /// Whether an earlier `/autoprov/` was replaced.
    pub replaced: bool,
    /// Bytes of bundle files written.
    pub bytes: u64,
    /// Free bytes left on the filesystem.
    pub free_after: u64,
}

/// File timestamps in UTC (the card has no time zone; `fatfs` would use none without `chrono`).
#[derive(Debug)]
struct Utc;

impl TimeProvider for Utc {
    fn get_current_date(&self) -> Date {
        self.get_current_date_time().date
    }

    fn get_current_date_time(&self) -> DateTime {
        let now = time::OffsetDateTime::now_utc();
        // FAT dates cover 1980..=2107.
        let year = now.year().clamp(1980, 2107) as u16;
        DateTime {
            date: Date {
                year,
                month: u8::from(now.month()).into(),
                day: now.day().into(),
            },
            time: Time {
                hour: now.hour().into(),
                min: now.minute().into(),
                sec: now.second().into(),
                millis: now.millisecond(),
            },
        }
    }
}

static UTC: Utc = Utc;

fn open(fat: &mut [u8]) -> Result<FileSystem<Cursor<&mut [u8]>>, FatError> {
    let info = probe(&fat[..fat.len().min(512)])?;
    if info.size > fat.len() as u64 {
        return Err(FatError::NotFat(format!(
            "its boot sector says {} bytes, more than the partition's {}",
            info.size,
            fat.len()
        )));
    }
    check_structure(fat)?;
    FileSystem::new(Cursor::new(fat), FsOptions::new().time_provider(&UTC))
        .map_err(FatError::Damaged)
}

/// Zeroes the root directory after its end marker. FAT readers ignore whatever follows the first
/// entry that starts with 0, but `fatfs`, adding the bundle's folder there, takes it for free
/// space already zeroed: leftovers after the new entry would become entries of their own.
fn clear_root_slack(fat: &mut [u8]) -> Result<(), FatError> {
    let g = geometry(fat)?;
    let mut ended = false;
    for range in g.root_ranges(fat) {
        let Some(dir) = fat.get_mut(range) else {
            return Err(damaged(
                "the root directory lies outside the partition".into(),
            ));
        };
        for e in dir.chunks_exact_mut(32) {
            ended |= e[0] == 0;
            if ended {
                e.fill(0);
            }
        }
    }
    Ok(())
}

fn damaged(what: String) -> FatError {
    FatError::Damaged(io::Error::new(io::ErrorKind::InvalidData, what))
}

/// Checks what `fatfs` will follow: every FAT entry of the file system is free, bad, end of
/// chain or a cluster of the file system; every chain reachable from the root directory ends,
/// uses no cluster the FAT marks free or bad (`fatfs` would allocate it to the bundle, over the
/// file), and no cluster belongs to two of them (which also rules out a directory that contains
/// itself); every directory entry names such a chain. What `fsck.fat` would call damaged is
/// refused here, before `fatfs` sees it.
fn check_structure(fat: &[u8]) -> Result<(), FatError> {
    let g = geometry(fat)?;
    let last = g.clusters + 1;
    for cluster in 2..=last {
        match g.fat_entry(fat, cluster as u32) {
            Some(Link::Next(n)) if !(2..=last).contains(&u64::from(n)) => {
                return Err(damaged(format!(
                    "the FAT links cluster {cluster} to {n}, outside clusters 2..={last}"
                )));
            }
            Some(_) => {}
            None => {
                return Err(damaged(format!(
                    "the FAT has no entry for cluster {cluster}"
                )));
            }
        }
    }
    let mut owned = vec![false; last as usize + 1];
    let mut dirs = vec![match g.fat32_root {
        Some(root) => g.chain_ranges(fat, root, &mut owned, "the root directory")?,
        None => g.root_ranges(fat),
    }];
    while let Some(ranges) = dirs.pop() {
        'entries: for range in ranges {
            for e in fat[range].chunks_exact(32) {
                match e[0] {
                    0x00 => break 'entries,
                    0xE5 => continue,
                    _ => {}
                }
                // `.` and `..` name this directory and its parent; `remove_tree` skips exactly
                // these two, by the same short names.
                if &e[..11] == DOT || &e[..11] == DOTDOT {
                    continue;
                }
                // Long-name parts and the volume label name no clusters.
                if e[11] & 0x0f == 0x0f || e[11] & 0x08 != 0 {
                    continue;
                }
                let hi = if g.fat32_root.is_some() {
                    le16(e, 20)
                } else {
                    0
                };
                let first = ((hi << 16) | le16(e, 26)) as u32;
                let name = String::from_utf8_lossy(&e[..11]).trim_end().to_owned();
                let is_dir = e[11] & 0x10 != 0;
                match (first, is_dir) {
                    // An empty file.
                    (0, false) => continue,
                    // Only `..` may say 0 (the root); `fatfs` opens the root for any other.
                    (0, true) => {
                        return Err(damaged(format!(
                            "the directory {name} has no cluster (it would be the root again: a loop)"
                        )));
                    }
                    _ => {}
                }
                let chain = g.chain_ranges(fat, first, &mut owned, &name)?;
                if is_dir {
                    dirs.push(chain);
                }
            }
        }
    }
    Ok(())
}

/// Replaces the `/autoprov/` folder of the FAT filesystem in `fat` (a whole partition's bytes) with
/// `bundle`, manifest last. On error `fat` may be half-changed: callers work on a copy they drop.
pub fn inject(fat: &mut [u8], bundle: &Bundle) -> Result<Injected, FatError> {
    clear_root_slack(fat)?;
    let fs = open(fat)?;
    let root = fs.root_dir();
    let replaced = remove_tree(&root, CARD_FOLDER)?;
    let stats = fs.stats().map_err(FatError::Damaged)?;
    let cluster = u64::from(stats.cluster_size());
    let files = bundle.files();
    // One cluster for the folder itself, then each file rounded up to whole clusters.
    let needed = cluster
        + files
            .iter()
            .map(|(_, d)| (d.len() as u64).div_ceil(cluster) * cluster)
            .sum::<u64>();
    let free = u64::from(stats.free_clusters()) * cluster;
    if needed > free {
        return Err(FatError::TooFull { free, needed });
    }
    let dir = root
        .create_dir(CARD_FOLDER)
        .map_err(|source| FatError::Write {
            file: String::new(),
            source,
        })?;
    let mut bytes = 0;
    for (name, data) in files {
        let data = Zeroizing::new(data);
        let write = |name: &str| -> io::Result<()> {
            let mut f = dir.create_file(name)?;
            f.truncate()?;
            f.write_all(&data)?;
            f.flush()
        };
        write(name).map_err(|source| FatError::Write {
            file: name.to_owned(),
            source,
        })?;
        bytes += data.len() as u64;
    }
    let free_after = fs
        .stats()
        .map(|s| u64::from(s.free_clusters()) * cluster)
        .map_err(FatError::Damaged)?;
    drop(dir);
    drop(root);
    fs.unmount().map_err(FatError::Damaged)?;
    fix_dot_entries(fat)?;
    Ok(Injected {
        replaced,
        bytes,
        free_after,
    })
}

/// The geometry of a FAT filesystem, from its boot sector (already checked by [`probe`]).
struct Geometry {
    cluster_bytes: u64,
    fat_offset: u64,
    root_offset: u64,
    root_bytes: u64,
    data_offset: u64,
    clusters: u64,
    fat32_root: Option<u32>,
    bits: u8,
}

/// What a FAT entry says about the cluster after this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Not in use.
    Free,
    /// Marked bad.
    Bad,
    /// The chain ends here.
    End,
    /// The chain goes on at this cluster.
    Next(u32),
}

fn geometry(fat: &[u8]) -> Result<Geometry, FatError> {
    let info = probe(&fat[..fat.len().min(512)])?;
    let s = &fat[..512];
    let bps = le16(s, 11);
    let reserved = le16(s, 14);
    let fats = u64::from(s[16]);
    let root_entries = le16(s, 17);
    let fat_size = match le16(s, 22) {
        0 => le32(s, 36),
        n => n,
    };
    let root_sectors = (root_entries * 32).div_ceil(bps);
    let data_sectors = reserved + fats * fat_size + root_sectors;
    let cluster_bytes = bps * u64::from(s[13]);
    Ok(Geometry {
        cluster_bytes,
        fat_offset: reserved * bps,
        root_offset: (reserved + fats * fat_size) * bps,
        root_bytes: root_entries * 32,
        data_offset: data_sectors * bps,
        clusters: info.size.saturating_sub(data_sectors * bps) / cluster_bytes,
        fat32_root: (info.fat_type == "FAT32").then(|| le32(s, 44) as u32),
        bits: match info.fat_type {
            "FAT12" => 12,
            "FAT16" => 16,
            _ => 32,
        },
    })
}

impl Geometry {
    fn cluster_range(&self, cluster: u32, len: usize) -> Option<std::ops::Range<usize>> {
        let c = u64::from(cluster);
        if c < 2 || c - 2 >= self.clusters {
            return None;
        }
        let start = self.data_offset + (c - 2) * self.cluster_bytes;
        let end = start + self.cluster_bytes;
        (end <= len as u64).then_some(start as usize..end as usize)
    }

    /// The first FAT's entry for `cluster`; `None` if the FAT ends before it.
    fn fat_entry(&self, fat: &[u8], cluster: u32) -> Option<Link> {
        let n = u64::from(cluster);
        let (raw, bad, end) = match self.bits {
            12 => {
                let at = (self.fat_offset + n * 3 / 2) as usize;
                let v = u32::from(u16::from_le_bytes([*fat.get(at)?, *fat.get(at + 1)?]));
                let v = if n % 2 == 1 { v >> 4 } else { v & 0xfff };
                (v, 0xff7, 0xff8)
            }
            16 => {
                let at = (self.fat_offset + n * 2) as usize;
                let v = u32::from(u16::from_le_bytes([*fat.get(at)?, *fat.get(at + 1)?]));
                (v, 0xfff7, 0xfff8)
            }
            _ => {
                let at = (self.fat_offset + n * 4) as usize;
                let b = fat.get(at..at + 4)?;
                let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x0fff_ffff;
                (v, 0x0fff_fff7, 0x0fff_fff8)
            }
        };
        Some(match raw {
            0 => Link::Free,
            v if v == bad => Link::Bad,
            v if v >= end => Link::End,
            v => Link::Next(v),
        })
    }

    /// The byte ranges of the chain starting at `first`, marking its clusters in `owned`;
    /// damage if it starts outside the data clusters, reaches a cluster already owned (a loop,
    /// or clusters shared by two files), or one the FAT marks free or bad.
    fn chain_ranges(
        &self,
        fat: &[u8],
        first: u32,
        owned: &mut [bool],
        what: &str,
    ) -> Result<Vec<std::ops::Range<usize>>, FatError> {
        let mut out = Vec::new();
        let mut cluster = first;
        loop {
            let range = self.cluster_range(cluster, fat.len()).ok_or_else(|| {
                damaged(format!(
                    "{what} starts at cluster {cluster}, outside clusters 2..={}",
                    self.clusters + 1
                ))
            })?;
            let slot = &mut owned[cluster as usize];
            if *slot {
                return Err(damaged(format!(
                    "{what} reaches cluster {cluster} again, or shares it with another file (a loop)"
                )));
            }
            *slot = true;
            out.push(range);
            match self.fat_entry(fat, cluster) {
                Some(Link::Next(n)) => cluster = n,
                Some(Link::End) => return Ok(out),
                // In use but free in the FAT: `fatfs` would hand it out again and write a
                // new file over this one.
                _ => {
                    return Err(damaged(format!(
                        "{what} uses cluster {cluster}, which the FAT marks free or bad"
                    )));
                }
            }
        }
    }

    /// Byte ranges of the root directory: the fixed region (FAT12/16) or its cluster chain
    /// (FAT32), which [`check_structure`] found sound.
    fn root_ranges(&self, fat: &[u8]) -> Vec<std::ops::Range<usize>> {
        let Some(root) = self.fat32_root else {
            let start = self.root_offset as usize;
            let fixed = start..start + self.root_bytes as usize;
            return vec![fixed];
        };
        let mut owned = vec![false; self.clusters as usize + 2];
        self.chain_ranges(fat, root, &mut owned, "the root directory")
            .unwrap_or_default()
    }
}

/// fatfs 0.3 writes the `.` and `..` entries of a new directory with long-name entries in front
/// of them, which FAT forbids (`fsck.fat` reports the directory as damaged, and the Linux vfat
/// driver may read it wrong). This puts `.` and `..` in the first two slots where they belong,
/// marks the two slots after them free, and points `..` at cluster 0 as the specification wants
/// for a parent that is the root directory.
fn fix_dot_entries(fat: &mut [u8]) -> Result<(), FatError> {
    let name = {
        let mut n = [b' '; 11];
        let upper = CARD_FOLDER.to_ascii_uppercase();
        n[..upper.len()].copy_from_slice(upper.as_bytes());
        n
    };
    let g = geometry(fat)?;
    let mut cluster = None;
    'scan: for range in g.root_ranges(fat) {
        for e in fat[range].chunks_exact(32) {
            match e[0] {
                0x00 => break 'scan,
                0xE5 => continue,
                _ => {}
            }
            if e[11] & 0x0f != 0x0f && e[11] & 0x10 != 0 && e[..11] == name {
                let hi = if g.fat32_root.is_some() {
                    le16(e, 20)
                } else {
                    0
                };
                cluster = Some(((hi << 16) | le16(e, 26)) as u32);
                break 'scan;
            }
        }
    }
    let Some(cluster) = cluster else {
        return Err(FatError::NotFat(format!(
            "/{CARD_FOLDER} was not found in the root directory after writing it"
        )));
    };
    let range = g
        .cluster_range(cluster, fat.len())
        .ok_or_else(|| FatError::NotFat(format!("/{CARD_FOLDER} points outside the filesystem")))?;
    let dir = &mut fat[range];
    if dir.len() < 128 {
        return Ok(());
    }
    let lfn = |e: &[u8]| e[11] == 0x0f;
    let buggy =
        lfn(&dir[0..32]) && &dir[32..43] == DOT && lfn(&dir[64..96]) && &dir[96..107] == DOTDOT;
    if buggy {
        let dot: Vec<u8> = dir[32..64].to_vec();
        let mut dotdot: Vec<u8> = dir[96..128].to_vec();
        dotdot[20..22].fill(0);
        dotdot[26..28].fill(0);
        dir[0..32].copy_from_slice(&dot);
        dir[32..64].copy_from_slice(&dotdot);
        dir[64] = 0xE5;
        dir[96] = 0xE5;
    }
    Ok(())
}

type Dir<'a, 'b> = fatfs::Dir<'a, Cursor<&'b mut [u8]>>;

/// Removes `name` under `dir`, a file or a whole directory tree; `false` if it was not there.
/// The tree is finite: [`check_structure`] refused any directory that contains itself.
fn remove_tree(dir: &Dir<'_, '_>, name: &str) -> Result<bool, FatError> {
    // By long or short name, as `fatfs` looks names up: an entry `create_dir` would take for
    // `name` must go, or the bundle would be written into the old folder, leftovers and all.
    let entry = dir.iter().filter_map(Result::ok).find(|e| {
        e.file_name().eq_ignore_ascii_case(name) || e.short_file_name().eq_ignore_ascii_case(name)
    });
    let Some(entry) = entry else {
        return Ok(false);
    };
    if entry.is_dir() {
        let sub = entry.to_dir();
        // `.` and `..` by their short names, as `check_structure` skips them: anything else is
        // a child it checked, so the recursion ends.
        let names: Vec<String> = sub
            .iter()
            .filter(|e| {
                e.as_ref().map_or(true, |e| {
                    !matches!(e.short_file_name().as_str(), "." | "..")
                })
            })
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(FatError::Damaged)?;
        for child in &names {
            remove_tree(&sub, child)?;
        }
    }
    dir.remove(&entry.file_name()).map_err(FatError::Damaged)?;
    Ok(true)
}

/// Reads and checks the bundle in `/autoprov/` of the FAT filesystem in `fat`; `None` if there is
/// no such folder. fatfs wants a writable medium even to read, but changes nothing: access dates
/// are not updated and the dirty flag is written only if it changed.
pub fn read_bundle(fat: &mut [u8]) -> Result<Option<Bundle>, FatError> {
    let mut files = read_files(fat)?;
    if files.is_empty() {
        return Ok(None);
    }
    Ok(Some(Bundle::from_files(|name| Ok(files.remove(name)))?))
}

/// The files in `/autoprov/` of the FAT filesystem in `fat`, by name, each read up to the bundle
/// size limit (one byte more, so that an oversized file is reported as such); empty if there is
/// no such folder. Unlike [`read_bundle`] this checks nothing, for a card whose agent already
/// imported the bundle and erased its key.
pub fn read_files(fat: &mut [u8]) -> Result<std::collections::BTreeMap<String, Vec<u8>>, FatError> {
    let fs = open(fat)?;
    let root = fs.root_dir();
    let dir = match root.open_dir(CARD_FOLDER) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(FatError::Damaged(e)),
    };
    let mut out = std::collections::BTreeMap::new();
    for entry in dir.iter() {
        let entry = entry.map_err(FatError::Damaged)?;
        if !entry.is_file() {
            continue;
        }
        let mut data = Vec::new();
        io::Read::read_to_end(
            &mut io::Read::take(
                &mut entry.to_file(),
                autoprov_bundle::MAX_FILE_SIZE as u64 + 1,
            ),
            &mut data,
        )
        .map_err(FatError::Damaged)?;
        out.insert(entry.file_name(), data);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_fat() {
        let mut s = vec![0xffu8; 512];
        s[510] = 0x55;
        s[511] = 0xAA;
        assert!(matches!(probe(&s), Err(FatError::NotFat(_))));
        assert!(probe(&[0u8; 12]).is_err());
    }

    /// A bundle with placeholder contents: the FAT code does not look inside the files.
    fn bundle() -> Bundle {
        Bundle::new(autoprov_bundle::Contents {
            device_id: autoprov_bundle::DeviceId::new("sensor-1").unwrap(),
            serial: "01".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            device_crt: b"crt".to_vec(),
            device_key: Zeroizing::new(b"key".to_vec()),
            ca_crt: b"ca".to_vec(),
            device_toml: b"[device]\nid = \"sensor-1\"\n".to_vec(),
            wifi_conf: None,
        })
    }

    /// A 1 MiB FAT12 file system made by fatfs with `/autoprov/sub/`, and its geometry.
    fn with_subdirectory() -> (Vec<u8>, Geometry) {
        let mut img = vec![0u8; 1 << 20];
        fatfs::format_volume(Cursor::new(&mut img[..]), fatfs::FormatVolumeOptions::new()).unwrap();
        {
            let fs = FileSystem::new(Cursor::new(&mut img[..]), FsOptions::new()).unwrap();
            fs.root_dir().create_dir("autoprov").unwrap();
            fs.root_dir().create_dir("autoprov/sub").unwrap();
            fs.unmount().unwrap();
        }
        let g = geometry(&img).unwrap();
        (img, g)
    }

    /// Where the directory entry `name` (8.3, padded) within `area` of `img` is, and the first
    /// cluster it names.
    fn entry(img: &[u8], area: std::ops::Range<usize>, name: &[u8; 11]) -> (usize, u32) {
        let at = area.start
            + img[area]
                .chunks_exact(32)
                .position(|e| &e[..11] == name)
                .expect("entry")
                * 32;
        (
            at,
            u32::from(u16::from_le_bytes([img[at + 26], img[at + 27]])),
        )
    }

    fn point(img: &mut [u8], entry_at: usize, cluster: u32) {
        img[entry_at + 26..entry_at + 28].copy_from_slice(&(cluster as u16).to_le_bytes());
    }

    #[test]
    fn a_directory_that_contains_itself_is_damage_not_a_stack_overflow() {
        // Found by fuzzing (fat_inject): removing the old /autoprov/ recursed into a
        // subdirectory whose entry points back at /autoprov/ until the stack overflowed.
        let (mut img, g) = with_subdirectory();
        let (_, autoprov) = entry(&img, g.root_ranges(&img)[0].clone(), b"AUTOPROV   ");
        let dir = g.cluster_range(autoprov, img.len()).unwrap();
        let (sub, _) = entry(&img, dir, b"SUB        ");
        point(&mut img, sub, autoprov);
        let err = inject(&mut img, &bundle()).unwrap_err();
        assert!(err.to_string().contains("(a loop)"), "{err}");
        assert!(read_bundle(&mut img).is_err());
    }

    #[test]
    fn a_directory_named_like_a_dot_entry_is_checked_too() {
        // Found by fuzzing (fat_inject): the structure check skipped every entry whose name
        // starts with '.', the removal only `.` and `..`: a loop through `.SUB` went unseen.
        let (mut img, g) = with_subdirectory();
        let (_, autoprov) = entry(&img, g.root_ranges(&img)[0].clone(), b"AUTOPROV   ");
        let dir = g.cluster_range(autoprov, img.len()).unwrap();
        let (sub, _) = entry(&img, dir, b"SUB        ");
        img[sub..sub + 11].copy_from_slice(b".SUB       ");
        point(&mut img, sub, autoprov);
        let err = inject(&mut img, &bundle()).unwrap_err();
        assert!(err.to_string().contains("(a loop)"), "{err}");
    }

    #[test]
    fn a_directory_without_a_cluster_is_a_loop_to_the_root() {
        // Found by fuzzing (fat_inject): fatfs opens the root for a directory whose entry
        // names cluster 0, so /autoprov/sub/ pointing there held /autoprov/ again, and so on
        // until the stack overflowed.
        let (mut img, g) = with_subdirectory();
        let (_, autoprov) = entry(&img, g.root_ranges(&img)[0].clone(), b"AUTOPROV   ");
        let dir = g.cluster_range(autoprov, img.len()).unwrap();
        let (sub, _) = entry(&img, dir, b"SUB        ");
        point(&mut img, sub, 0);
        let err = inject(&mut img, &bundle()).unwrap_err();
        assert!(err.to_string().contains("a loop"), "{err}");
    }

    #[test]
    fn a_reserved_or_outside_cluster_is_damage_before_fatfs_follows_it() {
        // Found by fuzzing (fat_inject): fatfs computed the sector of cluster 1 as
        // `cluster - 2` (an overflow panic in debug builds, a wrapped sector in release).
        for cluster in [1, 0xff0] {
            let (mut img, g) = with_subdirectory();
            let (at, _) = entry(&img, g.root_ranges(&img)[0].clone(), b"AUTOPROV   ");
            point(&mut img, at, cluster);
            let err = inject(&mut img, &bundle()).unwrap_err();
            assert!(
                err.to_string().contains("outside clusters"),
                "{cluster}: {err}"
            );
            assert!(read_bundle(&mut img).is_err());
        }
        // The same through the FAT: /autoprov/'s chain goes on to cluster 1.
        let (mut img, g) = with_subdirectory();
        let (_, autoprov) = entry(&img, g.root_ranges(&img)[0].clone(), b"AUTOPROV   ");
        let at = (g.fat_offset + u64::from(autoprov) * 3 / 2) as usize;
        let v = u16::from_le_bytes([img[at], img[at + 1]]);
        let v = if autoprov % 2 == 1 {
            (v & 0x000f) | (1 << 4)
        } else {
            (v & 0xf000) | 1
        };
        img[at..at + 2].copy_from_slice(&v.to_le_bytes());
        let err = read_bundle(&mut img).unwrap_err();
        assert!(err.to_string().contains("links cluster"), "{err}");
    }

    #[test]
    fn a_file_in_clusters_the_fat_calls_free_is_damage() {
        // fatfs would hand those clusters to the bundle and write it over the file.
        let (mut img, g) = with_subdirectory();
        let (at, _) = entry(&img, g.root_ranges(&img)[0].clone(), b"AUTOPROV   ");
        point(&mut img, at, 1500);
        let err = read_bundle(&mut img).unwrap_err();
        assert!(err.to_string().contains("marks free"), "{err}");
    }

    /// A directory entry that is not one: a file `JUNK.BIN` in cluster 1500 (free in the FAT),
    /// as leftovers after a directory's end marker look to a reader that goes past it.
    fn junk_entry() -> [u8; 32] {
        let mut e = [0u8; 32];
        e[..11].copy_from_slice(b"JUNK    BIN");
        e[11] = 0x20;
        e[26..28].copy_from_slice(&1500u16.to_le_bytes());
        e[28..32].copy_from_slice(&100u32.to_le_bytes());
        e
    }

    fn assert_reads_back(img: &mut [u8]) {
        let b = bundle();
        inject(img, &b).unwrap();
        let back = read_bundle(img).unwrap().expect("bundle");
        assert_eq!(back.manifest(), b.manifest());
    }

    #[test]
    fn an_old_folder_known_by_its_short_name_is_replaced_not_written_into() {
        // Found by fuzzing (fat_inject): /autoprov/ with a damaged long name was not found by
        // its long name, so it was not removed; fatfs found it by its short name and wrote the
        // bundle into it, and the leftovers after its end marker became entries.
        let (mut img, g) = with_subdirectory();
        let root = g.root_ranges(&img)[0].clone();
        let (at, autoprov) = entry(&img, root, b"AUTOPROV   ");
        // The long-name part before the short entry: its first character becomes '@'.
        assert_eq!(img[at - 32 + 11], 0x0f);
        img[at - 32 + 1] = b'@';
        let dir = g.cluster_range(autoprov, img.len()).unwrap();
        img[dir.clone()].fill(0);
        for e in img[dir.start + 5 * 32..dir.end].chunks_exact_mut(32) {
            e.copy_from_slice(&junk_entry());
        }
        assert_reads_back(&mut img);
    }

    #[test]
    fn leftovers_after_the_root_directory_end_stay_ignored() {
        // The new folder's entries take the first free slots of the root; before, what followed
        // the end marker there was read as entries once the marker was overwritten.
        let mut img = vec![0u8; 1 << 20];
        fatfs::format_volume(Cursor::new(&mut img[..]), fatfs::FormatVolumeOptions::new()).unwrap();
        let g = geometry(&img).unwrap();
        let root = g.root_ranges(&img)[0].clone();
        for e in img[root.start + 2 * 32..root.start + 8 * 32].chunks_exact_mut(32) {
            e.copy_from_slice(&junk_entry());
        }
        assert_reads_back(&mut img);
    }

    #[test]
    fn geometry_larger_than_the_partition_is_refused_before_fatfs() {
        let mut s = vec![0u8; 512];
        s[11..13].copy_from_slice(&512u16.to_le_bytes());
        s[13] = 4;
        s[14..16].copy_from_slice(&1u16.to_le_bytes());
        s[16] = 2;
        s[17..19].copy_from_slice(&512u16.to_le_bytes());
        s[22..24].copy_from_slice(&200u16.to_le_bytes());
        s[32..36].copy_from_slice(&200_000u32.to_le_bytes());
        s[38] = 0x29;
        s[43..54].copy_from_slice(b"FIRMWARE   ");
        s[510] = 0x55;
        s[511] = 0xAA;
        let info = probe(&s).unwrap();
        assert_eq!(info.fat_type, "FAT16");
        assert!(info.is_boot_label());
        let err = open(&mut s).err().unwrap();
        assert!(err.to_string().contains("more than the partition"), "{err}");
    }
}
