//! What `flash` and `inject` may write to, checked before a byte is written.
//!
//! A target is a regular file (an image for a VM, a test, or `dd` later) or a whole-disk block
//! device. A block device is refused when it or one of its partitions is mounted, used as swap or
//! held by another device (LVM, LUKS, RAID), when it holds the running system's `/`, when it is a
//! partition rather than a disk, and — unless forced — when the kernel does not call it removable.
//!
//! Everything is read from `/proc/self/mountinfo`, `/proc/swaps` and `/sys`, whose paths come in a
//! [`System`] value: tests give fake trees and so exercise every refusal without a real disk.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::human;

/// Where the kernel's view of disks and mounts is read from.
#[derive(Clone, Debug)]
pub struct System {
    /// `/proc/self/mountinfo`.
    pub mountinfo: PathBuf,
    /// `/proc/swaps`.
    pub swaps: PathBuf,
    /// `/sys`.
    pub sysfs: PathBuf,
}

impl System {
    /// The running system.
    pub fn real() -> Self {
        System {
            mountinfo: "/proc/self/mountinfo".into(),
            swaps: "/proc/swaps".into(),
            sysfs: "/sys".into(),
        }
    }
}

/// Why a target is refused.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The target could not be examined.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Neither a regular file nor a block device.
    #[error("{0}: not a regular file or a block device")]
    Unsupported(PathBuf),
    /// A partition was given instead of its disk.
    #[error(
        "{path} is partition {name} of /dev/{disk}; give the whole disk (/dev/{disk}) — the image brings its own partition table",
        path = .path.display()
    )]
    Partition {
        /// The path given.
        path: PathBuf,
        /// The partition's name.
        name: String,
        /// Its disk.
        disk: String,
    },
    /// The disk holds the running system.
    #[error("{device} holds the running system (/ is on {root}): refusing to overwrite it")]
    HoldsRoot {
        /// The disk, as given and as the kernel names it.
        device: String,
        /// The device mounted as `/`.
        root: String,
    },
    /// The disk or a partition of it is mounted.
    #[error(
        "{device} is in use: {uses}; unmount it first (e.g. `umount {first}`), then run this again",
        uses = .uses.join(", "),
        first = .unmount.first().map(String::as_str).unwrap_or("…")
    )]
    InUse {
        /// The disk, as given and as the kernel names it.
        device: String,
        /// What uses it, e.g. `/dev/sdb1 mounted on /media/FIRMWARE`.
        uses: Vec<String>,
        /// What to unmount.
        unmount: Vec<String>,
    },
    /// The kernel does not mark the disk removable.
    #[error(
        "{device} ({description}) is not a removable disk ({flag} is 0): it looks like an internal or external hard disk. If it really is the card (some USB adapters do not say they are removable), add --force",
        flag = .flag.display()
    )]
    NotRemovable {
        /// The disk, as given and as the kernel names it.
        device: String,
        /// Model and size.
        description: String,
        /// The sysfs file read.
        flag: PathBuf,
    },
    /// The disk is smaller than the image.
    #[error(
        "{path} is {have} ({have_bytes} bytes) but the image needs {need} ({need_bytes} bytes); use a larger card",
        path = .path.display(),
        have = human(*.have_bytes),
        need = human(*.need_bytes)
    )]
    TooSmall {
        /// The target.
        path: PathBuf,
        /// Its size.
        have_bytes: u64,
        /// The image's size.
        need_bytes: u64,
    },
    /// The target is the image itself.
    #[error("{0} is the image itself; give another target")]
    IsTheImage(PathBuf),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> TargetError + '_ {
    move |source| TargetError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A checked whole-disk block device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    /// Kernel name, e.g. `sdb`, `mmcblk0`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Vendor and model, as far as sysfs says.
    pub model: String,
    /// Why it counts as removable (or that `--force` overrode it).
    pub removable: String,
}

/// What a target path is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file, or a path where one will be created.
    File {
        /// Whether it exists (and will be overwritten).
        exists: bool,
    },
    /// A whole-disk block device.
    Block(Disk),
}

/// A target that passed the checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The path given.
    pub path: PathBuf,
    /// File or disk.
    pub kind: Kind,
}

impl Target {
    /// Whether it is a block device.
    pub fn is_block(&self) -> bool {
        matches!(self.kind, Kind::Block(_))
    }

    /// A one-line description for confirmations and reports.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::File { exists: true } => format!("{} (existing file)", self.path.display()),
            Kind::File { exists: false } => format!("{} (new file)", self.path.display()),
            Kind::Block(d) => format!(
                "{} ({}, {}, {})",
                self.path.display(),
                d.model,
                human(d.size),
                d.removable
            ),
        }
    }

    /// Refuses a target smaller than `need` bytes (files grow, so only disks are checked).
    pub fn check_size(&self, need: u64) -> Result<(), TargetError> {
        match &self.kind {
            Kind::Block(d) if d.size < need => Err(TargetError::TooSmall {
                path: self.path.clone(),
                have_bytes: d.size,
                need_bytes: need,
            }),
            _ => Ok(()),
        }
    }
}

/// Examines `path` and applies every check. `image` is the file being flashed (never a valid
/// target); `must_exist` is set for `inject`, which changes a card or image in place.
pub fn examine(
    sys: &System,
    path: &Path,
    image: Option<&Path>,
    must_exist: bool,
    force: bool,
) -> Result<Target, TargetError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !must_exist => {
            return Ok(Target {
                path: path.to_owned(),
                kind: Kind::File { exists: false },
            });
        }
        Err(e) => return Err(io_at(path)(e)),
    };
    if let Some(image) = image
        && let Ok(im) = fs::metadata(image)
        && im.dev() == meta.dev()
        && im.ino() == meta.ino()
    {
        return Err(TargetError::IsTheImage(path.to_owned()));
    }
    let kind = if meta.is_file() {
        Kind::File { exists: true }
    } else if meta.file_type().is_block_device() {
        let rdev = meta.rdev();
        let devnum = (major(rdev), minor(rdev));
        Kind::Block(check_disk(sys, path, devnum, force)?)
    } else {
        return Err(TargetError::Unsupported(path.to_owned()));
    };
    Ok(Target {
        path: path.to_owned(),
        kind,
    })
}

fn major(rdev: u64) -> u32 {
    (((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff)) as u32
}

fn minor(rdev: u64) -> u32 {
    (((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff)) as u32
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// One line of mountinfo, as far as the checks need it.
struct Mount {
    devnum: String,
    mount_point: String,
    source: String,
}

fn mounts(sys: &System) -> Result<Vec<Mount>, TargetError> {
    let text = fs::read_to_string(&sys.mountinfo).map_err(io_at(&sys.mountinfo))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some(Mount {
                devnum: (*fields.get(2)?).to_owned(),
                mount_point: unescape(fields.get(4)?),
                source: unescape(fields.get(sep + 2)?),
            })
        })
        .collect())
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Names of the block devices below `name` in the device stack (`slaves/`), `name` included.
fn underlying(sys: &System, name: &str, depth: u32) -> Vec<String> {
    let mut out = vec![name.to_owned()];
    if depth > 8 {
        return out;
    }
    if let Ok(rd) = fs::read_dir(sys.sysfs.join("class/block").join(name).join("slaves")) {
        for e in rd.flatten() {
            out.extend(underlying(sys, &e.file_name().to_string_lossy(), depth + 1));
        }
    }
    out
}

/// The kernel name of a device number, via `/sys/dev/block/MAJ:MIN`.
fn name_of(sys: &System, devnum: &str) -> Option<String> {
    let link = sys.sysfs.join("dev/block").join(devnum);
    let target = fs::canonicalize(&link).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// `/dev/sdb`, or `/dev/disk/by-id/usb-… (/dev/sdb)` when the path given is another name.
fn shown(path: &Path, name: &str) -> String {
    let dev = format!("/dev/{name}");
    if path == Path::new(&dev) {
        dev
    } else {
        format!("{} ({dev})", path.display())
    }
}

fn check_disk(
    sys: &System,
    path: &Path,
    devnum: (u32, u32),
    force: bool,
) -> Result<Disk, TargetError> {
    let link = sys
        .sysfs
        .join("dev/block")
        .join(format!("{}:{}", devnum.0, devnum.1));
    let dir = fs::canonicalize(&link).map_err(io_at(&link))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if dir.join("partition").exists() {
        let disk = dir
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Err(TargetError::Partition {
            path: path.to_owned(),
            name,
            disk,
        });
    }
    // The disk and its partitions, by name.
    let mut names = vec![name.clone()];
    if let Ok(rd) = fs::read_dir(&dir) {
        for e in rd.flatten() {
            if e.path().join("partition").exists() {
                names.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    let ours = |n: &str| names.iter().any(|m| m == n);
    let dev_name = |source: &str, devnum: &str| -> Option<String> {
        // Prefer the device number (what the kernel says); fall back on the source path for
        // filesystems with anonymous device numbers (btrfs).
        name_of(sys, devnum).or_else(|| {
            source
                .strip_prefix("/dev/")
                .map(|s| s.rsplit('/').next().unwrap_or(s).to_owned())
        })
    };

    let mounts = mounts(sys)?;
    if let Some(root) = mounts.iter().rev().find(|m| m.mount_point == "/")
        && let Some(root_name) = dev_name(&root.source, &root.devnum)
        && underlying(sys, &root_name, 0).iter().any(|n| ours(n))
    {
        return Err(TargetError::HoldsRoot {
            device: shown(path, &name),
            root: root.source.clone(),
        });
    }
    let mut uses = Vec::new();
    let mut unmount = Vec::new();
    for m in &mounts {
        if let Some(n) = dev_name(&m.source, &m.devnum)
            && underlying(sys, &n, 0).iter().any(|n| ours(n))
        {
            uses.push(format!("{} mounted on {}", m.source, m.mount_point));
            unmount.push(m.mount_point.clone());
        }
    }
    if let Ok(swaps) = fs::read_to_string(&sys.swaps) {
        for line in swaps.lines().skip(1) {
            let Some(dev) = line.split_whitespace().next() else {
                continue;
            };
            if let Some(n) = dev.strip_prefix("/dev/")
                && ours(n)
            {
                uses.push(format!("{dev} is in use as swap (swapoff {dev})"));
            }
        }
    }
    for n in &names {
        let holders = sys.sysfs.join("class/block").join(n).join("holders");
        if let Ok(rd) = fs::read_dir(&holders) {
            for h in rd.flatten() {
                uses.push(format!(
                    "/dev/{n} is held by {} (LVM, LUKS or RAID)",
                    h.file_name().to_string_lossy()
                ));
            }
        }
    }
    if !uses.is_empty() {
        return Err(TargetError::InUse {
            device: shown(path, &name),
            uses,
            unmount,
        });
    }

    let sectors: u64 = read_trimmed(&dir.join("size"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let size = sectors.saturating_mul(512);
    let model = [
        read_trimmed(&dir.join("device/vendor")),
        read_trimmed(&dir.join("device/model")),
        read_trimmed(&dir.join("device/name")),
    ]
    .into_iter()
    .flatten()
    .filter(|s| !s.is_empty())
    .collect::<Vec<_>>()
    .join(" ");
    let model = if model.is_empty() {
        "unknown model".to_owned()
    } else {
        model
    };
    let flag = dir.join("removable");
    let removable = if read_trimmed(&flag).as_deref() == Some("1") {
        "removable".to_owned()
    } else if name.starts_with("mmcblk")
        && read_trimmed(&dir.join("device/type")).as_deref() == Some("SD")
    {
        // Built-in SD slots often report removable = 0; the card itself says it is SD (eMMC
        // says MMC).
        "SD card slot".to_owned()
    } else if force {
        "not removable, --force given".to_owned()
    } else {
        return Err(TargetError::NotRemovable {
            device: shown(path, &name),
            description: format!("{model}, {}", human(size)),
            flag,
        });
    };
    Ok(Disk {
        name,
        size,
        model,
        removable,
    })
}

/// The check of a disk by device number, for tests of the refusals with a fake [`System`].
pub fn check_devnum(
    sys: &System,
    path: &Path,
    devnum: (u32, u32),
    force: bool,
) -> Result<Disk, TargetError> {
    check_disk(sys, path, devnum, force)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake /sys with a removable `sdb` (8:16, partitions sdb1 8:17 and sdb2 8:18) and a
    /// non-removable `sda` (8:0, partitions sda1 8:1, sda2 8:2).
    struct Fake {
        dir: tempfile::TempDir,
        sys: System,
    }

    impl Fake {
        fn new(mountinfo: &str) -> Fake {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            let sysfs = root.join("sys");
            for (disk, maj_min, removable, size) in [
                ("sda", (8, 0), "0", "1000215216"),
                ("sdb", (8, 16), "1", "62333952"),
            ] {
                let d = sysfs.join("devices/pci0000:00/host0/block").join(disk);
                fs::create_dir_all(d.join("device")).unwrap();
                fs::write(d.join("removable"), format!("{removable}\n")).unwrap();
                fs::write(d.join("size"), format!("{size}\n")).unwrap();
                fs::write(d.join("device/model"), "Card Reader\n").unwrap();
                fs::create_dir_all(d.join("holders")).unwrap();
                fs::create_dir_all(sysfs.join("dev/block")).unwrap();
                fs::create_dir_all(sysfs.join("class/block")).unwrap();
                symlink(
                    &d,
                    sysfs.join(format!("dev/block/{}:{}", maj_min.0, maj_min.1)),
                )
                .unwrap();
                symlink(&d, sysfs.join("class/block").join(disk)).unwrap();
                for p in 1..=2 {
                    let pn = format!("{disk}{p}");
                    let pd = d.join(&pn);
                    fs::create_dir_all(pd.join("holders")).unwrap();
                    fs::write(pd.join("partition"), format!("{p}\n")).unwrap();
                    symlink(
                        &pd,
                        sysfs.join(format!("dev/block/{}:{}", maj_min.0, maj_min.1 + p)),
                    )
                    .unwrap();
                    symlink(&pd, sysfs.join("class/block").join(&pn)).unwrap();
                }
            }
            fs::write(root.join("mountinfo"), mountinfo).unwrap();
            fs::write(root.join("swaps"), "Filename\tType\tSize\tUsed\tPriority\n").unwrap();
            let sys = System {
                mountinfo: root.join("mountinfo"),
                swaps: root.join("swaps"),
                sysfs,
            };
            Fake { dir, sys }
        }
    }

    const ROOT_ON_SDA2: &str = "\
22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw
23 22 0:21 / /proc rw - proc proc rw
24 22 8:1 / /boot rw - vfat /dev/sda1 rw
";

    fn check(fake: &Fake, devnum: (u32, u32), force: bool) -> Result<Disk, TargetError> {
        check_devnum(&fake.sys, Path::new("/dev/sdX"), devnum, force)
    }

    #[test]
    fn an_unmounted_removable_card_passes() {
        let fake = Fake::new(ROOT_ON_SDA2);
        let disk = check(&fake, (8, 16), false).unwrap();
        assert_eq!(disk.name, "sdb");
        assert_eq!(disk.size, 62333952 * 512);
        assert_eq!(disk.removable, "removable");
    }

    #[test]
    fn the_disk_holding_root_is_refused_even_with_force() {
        let fake = Fake::new(ROOT_ON_SDA2);
        let err = check(&fake, (8, 0), true).unwrap_err();
        assert!(matches!(err, TargetError::HoldsRoot { .. }), "{err}");
        assert!(err.to_string().contains("running system"), "{err}");
    }

    #[test]
    fn root_on_lvm_over_the_disk_is_found_through_slaves() {
        let fake = Fake::new("30 1 253:0 / / rw - ext4 /dev/mapper/vg-root rw\n");
        let dm = fake.sys.sysfs.join("devices/virtual/block/dm-0");
        fs::create_dir_all(dm.join("slaves")).unwrap();
        symlink(&dm, fake.sys.sysfs.join("dev/block/253:0")).unwrap();
        symlink(&dm, fake.sys.sysfs.join("class/block/dm-0")).unwrap();
        fs::write(dm.join("slaves/sdb2"), "").unwrap();
        let err = check(&fake, (8, 16), true).unwrap_err();
        assert!(matches!(err, TargetError::HoldsRoot { .. }), "{err}");
    }

    #[test]
    fn a_card_with_a_mounted_partition_is_refused_and_named() {
        let fake = Fake::new(&format!(
            "{ROOT_ON_SDA2}40 22 8:17 / /media/op/FIRMWARE rw,nosuid - vfat /dev/sdb1 rw\n"
        ));
        let err = check(&fake, (8, 16), true).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, TargetError::InUse { .. }), "{msg}");
        assert!(
            msg.contains("/dev/sdb1 mounted on /media/op/FIRMWARE"),
            "{msg}"
        );
        assert!(msg.contains("umount /media/op/FIRMWARE"), "{msg}");
    }

    #[test]
    fn mount_points_with_spaces_are_unescaped() {
        let fake = Fake::new(&format!(
            "{ROOT_ON_SDA2}40 22 8:18 / /media/My\\040Card rw - ext4 /dev/sdb2 rw\n"
        ));
        let err = check(&fake, (8, 16), false).unwrap_err();
        assert!(err.to_string().contains("/media/My Card"), "{err}");
    }

    #[test]
    fn a_partition_held_by_device_mapper_is_in_use() {
        let fake = Fake::new(ROOT_ON_SDA2);
        let holders = fake.sys.sysfs.join("class/block/sdb2/holders");
        fs::write(holders.join("dm-3"), "").unwrap();
        let err = check(&fake, (8, 16), false).unwrap_err();
        assert!(err.to_string().contains("held by dm-3"), "{err}");
    }

    #[test]
    fn swap_on_the_card_is_in_use() {
        let fake = Fake::new(ROOT_ON_SDA2);
        fs::write(
            &fake.sys.swaps,
            "Filename\tType\tSize\tUsed\tPriority\n/dev/sdb2 partition 1024 0 -2\n",
        )
        .unwrap();
        let err = check(&fake, (8, 16), false).unwrap_err();
        assert!(err.to_string().contains("swap"), "{err}");
    }

    #[test]
    fn a_non_removable_disk_needs_force() {
        // sda without the root mount: an unused internal disk.
        let fake = Fake::new("22 1 259:2 / / rw - ext4 /dev/nvme0n1p2 rw\n");
        let err = check(&fake, (8, 0), false).unwrap_err();
        assert!(matches!(err, TargetError::NotRemovable { .. }), "{err}");
        assert!(err.to_string().contains("--force"), "{err}");
        let disk = check(&fake, (8, 0), true).unwrap();
        assert!(disk.removable.contains("--force"), "{}", disk.removable);
    }

    #[test]
    fn a_partition_is_refused_with_its_disk_named() {
        let fake = Fake::new(ROOT_ON_SDA2);
        let err = check(&fake, (8, 17), false).unwrap_err();
        assert!(
            err.to_string().contains("give the whole disk (/dev/sdb)"),
            "{err}"
        );
    }

    #[test]
    fn a_disk_smaller_than_the_image_is_refused() {
        let fake = Fake::new(ROOT_ON_SDA2);
        let target = Target {
            path: "/dev/sdX".into(),
            kind: Kind::Block(check(&fake, (8, 16), false).unwrap()),
        };
        target.check_size(62333952 * 512).unwrap();
        let err = target.check_size(62333952 * 512 + 1).unwrap_err();
        assert!(err.to_string().contains("use a larger card"), "{err}");
        drop(fake.dir);
    }

    #[test]
    fn the_image_itself_is_not_a_target() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.img");
        fs::write(&img, b"x").unwrap();
        let err = examine(&System::real(), &img, Some(&img), false, false).unwrap_err();
        assert!(matches!(err, TargetError::IsTheImage(_)), "{err}");
    }

    #[test]
    fn a_missing_file_is_a_new_target_for_flash_but_not_for_inject() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("card.img");
        let target = examine(&System::real(), &t, None, false, false).unwrap();
        assert_eq!(target.kind, Kind::File { exists: false });
        assert!(examine(&System::real(), &t, None, true, false).is_err());
    }

    #[test]
    fn device_numbers_decode_like_glibc() {
        // makedev(8, 17) and makedev(259, 1048577)
        assert_eq!((major(0x811), minor(0x811)), (8, 17));
        // 259 fits in the low 12 bits of the major.
        let big: u64 = (259u64 << 8) | (1048577u64 & 0xff) | ((1048577u64 & !0xff) << 12);
        assert_eq!((major(big), minor(big)), (259, 1048577));
    }
}
