//! SD card images made the way nixpkgs' `sd-image.nix` makes them, with the real tools: a file
//! truncated to size, a partition table written by `sfdisk` (MBR like nixpkgs, or GPT), a FAT
//! partition made by `mkfs.vfat -n FIRMWARE` and filled with `mcopy`, an ext4 root made by
//! `mkfs.ext4 -L NIXOS_SD [-d DIR]`, both copied into place, and optionally `zstd`.
//!
//! Also the third-party readers the tests check results with: `fsck.fat -n`, `mcopy` out of a
//! partition.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Partition table kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// `label: dos`, as nixpkgs writes.
    Mbr,
    /// `label: gpt`.
    Gpt,
}

/// What to build.
#[derive(Clone, Debug)]
pub struct Layout {
    /// MBR or GPT.
    pub table: Table,
    /// Gap before the boot partition, MiB (nixpkgs: 8).
    pub offset_mib: u64,
    /// Boot partition size, MiB (nixpkgs: 30).
    pub boot_mib: u64,
    /// The boot partition's volume label (nixpkgs: FIRMWARE).
    pub boot_label: String,
    /// Format the boot partition as FAT32 (`mkfs.vfat -F 32`, as Raspberry Pi OS does) instead of
    /// letting mkfs.vfat choose (FAT16 at nixpkgs' 30 MiB).
    pub boot_fat32: bool,
    /// Files put on the boot partition (path in the partition, content).
    pub boot_files: Vec<(String, Vec<u8>)>,
    /// Fill the boot partition with a file named `filler` until only this many bytes are free.
    pub boot_free: Option<u64>,
    /// Root partition size, MiB.
    pub root_mib: u64,
    /// The root filesystem's label (nixpkgs: NIXOS_SD).
    pub root_label: String,
    /// A directory copied into the root filesystem (`mkfs.ext4 -d`).
    pub root_dir: Option<PathBuf>,
}

impl Default for Layout {
    /// nixpkgs' defaults, with a small root and a few firmware files.
    fn default() -> Self {
        Layout {
            table: Table::Mbr,
            offset_mib: 8,
            boot_mib: 30,
            boot_label: "FIRMWARE".into(),
            boot_fat32: false,
            boot_files: vec![
                (
                    "config.txt".into(),
                    b"[pi3]\nkernel=u-boot-rpi3.bin\n".to_vec(),
                ),
                ("start.elf".into(), vec![0x5a; 300_000]),
                ("overlays/dht11.dtbo".into(), vec![0xd0; 1500]),
            ],
            boot_free: None,
            root_mib: 24,
            root_label: "NIXOS_SD".into(),
            root_dir: None,
        }
    }
}

/// A built image.
#[derive(Clone, Debug)]
pub struct Built {
    /// The raw image.
    pub img: PathBuf,
    /// Byte range of the boot partition.
    pub boot: Range<u64>,
    /// Byte range of the root partition.
    pub root: Range<u64>,
}

const MIB: u64 = 1 << 20;

/// Runs a tool; panics with its output if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (scripts/install-deps installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tool by name, also from the sbin directories a non-root PATH may lack.
pub fn tool(name: &str) -> Command {
    for dir in ["/usr/sbin", "/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() && which(name).is_none() {
            return Command::new(p);
        }
    }
    Command::new(name)
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.exists())
    })
}

/// Copies `src` into `dst` at `offset` without truncating `dst`.
pub fn write_at(dst: &Path, offset: u64, src: &Path) {
    let mut out = OpenOptions::new().write(true).open(dst).unwrap();
    out.seek(SeekFrom::Start(offset)).unwrap();
    let mut input = File::open(src).unwrap();
    std::io::copy(&mut input, &mut out).unwrap();
    out.sync_all().unwrap();
}

/// Reads `range` of `file`.
pub fn read_range(file: &Path, range: &Range<u64>) -> Vec<u8> {
    let mut f = File::open(file).unwrap();
    f.seek(SeekFrom::Start(range.start)).unwrap();
    let mut buf = vec![0u8; (range.end - range.start) as usize];
    f.read_exact(&mut buf).unwrap();
    buf
}

/// Builds `name.img` in `dir`.
pub fn build(dir: &Path, name: &str, layout: &Layout) -> Built {
    let img = dir.join(format!("{name}.img"));
    let boot = layout.offset_mib * MIB..(layout.offset_mib + layout.boot_mib) * MIB;
    // GPT keeps its backup table in the last 33 sectors.
    let tail = if layout.table == Table::Gpt { MIB } else { 0 };
    let root = boot.end..boot.end + layout.root_mib * MIB;
    let total = root.end + tail;
    File::create(&img).unwrap().set_len(total).unwrap();

    let script = match layout.table {
        Table::Mbr => format!(
            "label: dos\nlabel-id: 0x2178694e\n\nstart={}M, size={}, type=b, bootable\nstart={}M, type=83\n",
            layout.offset_mib,
            layout.boot_mib * MIB / 512,
            layout.offset_mib + layout.boot_mib
        ),
        Table::Gpt => format!(
            "label: gpt\n\nstart={}M, size={}, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=FIRMWARE\nstart={}M, size={}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=NIXOS_SD\n",
            layout.offset_mib,
            layout.boot_mib * MIB / 512,
            layout.offset_mib + layout.boot_mib,
            layout.root_mib * MIB / 512
        ),
    };
    let mut sfdisk = tool("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(&img)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sfdisk (fdisk package)");
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = sfdisk.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sfdisk: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let fat = dir.join(format!("{name}.fat"));
    File::create(&fat)
        .unwrap()
        .set_len(boot.end - boot.start)
        .unwrap();
    let mut mkfs = tool("mkfs.vfat");
    mkfs.args(["--invariant", "-i", "2178694e", "-n", &layout.boot_label]);
    if layout.boot_fat32 {
        mkfs.args(["-F", "32", "-s", "1"]);
    }
    run(mkfs.arg(&fat));
    let mut dirs: Vec<String> = layout
        .boot_files
        .iter()
        .filter_map(|(p, _)| p.rsplit_once('/').map(|(d, _)| d.to_owned()))
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        run(tool("mmd").arg("-i").arg(&fat).arg(format!("::/{d}")));
    }
    for (path, data) in &layout.boot_files {
        let src = dir.join(format!("{name}.src"));
        fs::write(&src, data).unwrap();
        run(tool("mcopy")
            .arg("-i")
            .arg(&fat)
            .arg(&src)
            .arg(format!("::/{path}")));
        fs::remove_file(&src).unwrap();
    }
    if let Some(leave) = layout.boot_free {
        let free = free_bytes(&fat);
        assert!(
            free > leave,
            "the boot partition has only {free} bytes free"
        );
        let src = dir.join(format!("{name}.filler"));
        fs::write(&src, vec![0xf1; (free - leave) as usize]).unwrap();
        run(tool("mcopy").arg("-i").arg(&fat).arg(&src).arg("::/filler"));
        fs::remove_file(&src).unwrap();
    }
    write_at(&img, boot.start, &fat);
    fs::remove_file(&fat).unwrap();

    let ext4 = dir.join(format!("{name}.ext4"));
    let mut mkfs = tool("mkfs.ext4");
    mkfs.args(["-q", "-F", "-L", &layout.root_label, "-E", "root_owner=0:0"]);
    if let Some(d) = &layout.root_dir {
        mkfs.arg("-d").arg(d);
    }
    mkfs.arg(&ext4).arg(format!("{}M", layout.root_mib));
    run(&mut mkfs);
    write_at(&img, root.start, &ext4);
    fs::remove_file(&ext4).unwrap();
    Built { img, boot, root }
}

/// Free bytes of a FAT image, as `mdir` reports them.
pub fn free_bytes(fat: &Path) -> u64 {
    let out = run(tool("mdir").arg("-i").arg(fat).arg("::/"));
    out.lines()
        .find(|l| l.contains("bytes free"))
        .map(|l| l.chars().filter(char::is_ascii_digit).collect::<String>())
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no free space in mdir's output: {out}"))
}

/// Compresses `img` with the zstd command-line tool, as nixpkgs does; returns `img.zst`.
pub fn compress(img: &Path) -> PathBuf {
    let out = PathBuf::from(format!("{}.zst", img.display()));
    run(tool("zstd")
        .args(["-q", "-f", "-T0"])
        .arg(img)
        .arg("-o")
        .arg(&out));
    out
}

/// Copies the boot partition of `img` out to a file of its own, for `fsck.fat` and `mcopy`.
pub fn extract(img: &Path, range: &Range<u64>, out: &Path) -> PathBuf {
    fs::write(out, read_range(img, range)).unwrap();
    out.to_owned()
}

/// `fsck.fat -n` on a FAT image: whether it is clean, and what it said.
pub fn fsck_fat(fat: &Path) -> (bool, String) {
    let out = tool("fsck.fat")
        .arg("-n")
        .arg(fat)
        .output()
        .expect("fsck.fat");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `mcopy` of `::/path` out of a FAT image; `None` if it is not there.
pub fn mcopy_out(fat: &Path, path: &str) -> Option<Vec<u8>> {
    let out = tool("mcopy")
        .arg("-n")
        .arg("-i")
        .arg(fat)
        .arg(format!("::/{path}"))
        .arg("-")
        .output()
        .expect("mcopy");
    out.status.success().then_some(out.stdout)
}

/// `mdir -b` of a folder of a FAT image (names, one per line), empty if it does not exist.
pub fn mdir(fat: &Path, path: &str) -> Vec<String> {
    let out = tool("mdir")
        .arg("-b")
        .arg("-i")
        .arg(fat)
        .arg(format!("::/{path}"))
        .output()
        .expect("mdir");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or(l)
                .to_owned()
        })
        .collect()
}

/// The byte ranges of `img`'s partitions, in table order, as `sfdisk --json` reads its
/// partition table (what the kernel would find on the card).
pub fn partitions(img: &Path) -> Vec<Range<u64>> {
    let out = run(tool("sfdisk").arg("--json").arg(img));
    let table: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("sfdisk --json {}: {e}\n{out}", img.display()));
    let table = &table["partitiontable"];
    let sector = table["sectorsize"].as_u64().unwrap_or(512);
    table["partitions"]
        .as_array()
        .unwrap_or_else(|| panic!("no partitions in {}: {out}", img.display()))
        .iter()
        .map(|p| {
            let start = p["start"].as_u64().expect("start") * sector;
            start..start + p["size"].as_u64().expect("size") * sector
        })
        .collect()
}

/// The FAT file system of the partition at `range` of `img`, named for mtools
/// (`img@@offset`) so that `mdir`, `mcopy_out` read it in place.
pub fn fat_in(img: &Path, range: &Range<u64>) -> PathBuf {
    PathBuf::from(format!("{}@@{}", img.display(), range.start))
}

/// Copies every file of folder `path` of a FAT file system into `dest` with `mcopy`, as the
/// device sees them once it has mounted the partition; returns their names.
pub fn copy_folder_out(fat: &Path, path: &str, dest: &Path) -> Vec<String> {
    fs::create_dir_all(dest).unwrap();
    let names = mdir(fat, path);
    for name in &names {
        let data = mcopy_out(fat, &format!("{path}/{name}"))
            .unwrap_or_else(|| panic!("mcopy ::/{path}/{name} out of {}", fat.display()));
        fs::write(dest.join(name), data).unwrap();
    }
    names
}

/// The bundle in `/autoprov/` of the boot partition at `range` of `card`, read in place with
/// `mcopy` and checked by the bundle crate (manifest hashes, sizes); `Err` says what is missing
/// or wrong.
pub fn card_bundle(card: &Path, range: &Range<u64>) -> Result<autoprov_bundle::Bundle, String> {
    let fat = fat_in(card, range);
    let names = mdir(&fat, "autoprov");
    autoprov_bundle::Bundle::from_files(|name| {
        Ok(names
            .iter()
            .any(|n| n == name)
            .then(|| mcopy_out(&fat, &format!("autoprov/{name}")))
            .flatten())
    })
    .map_err(|e| format!("{}: {e} (files {names:?})", card.display()))
}
