//! `flash` and `inject` end to end: checks, issuance, injection, the write, and the inventory.
//!
//! Both follow the order in the [module documentation](super): nothing is issued or recorded
//! until every check that needs no write has passed — including a trial injection of a
//! placeholder bundle, so a boot partition too full for the bundle costs no certificate — and
//! every outcome after issuance ends in one inventory transaction that either activates the
//! certificate and marks the flash `ok`, or marks it `failed` and revokes the certificate.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use autoprov_bundle::{Bundle, Contents, DeviceId};
use zeroize::Zeroizing;

use super::fat::{self, FatError, FatInfo};
use super::partition::{self, Partition, PartitionError, Table};
use super::settings::SettingsError;
use super::source::{self, Image, ImageError};
use super::stream::{self, StreamError, Verified, Written};
use super::target::{self, System, Target, TargetError};
use super::{Medium, Wiped, human};
use crate::inventory::{FlashEnd, FlashKind};
use crate::{Error, IssueOptions, Issued, Pki, Status, profile};

/// Why a flash or inject did not happen or did not complete.
#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    /// The target was refused.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The image could not be read.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The partition table is unusable.
    #[error("{}: {source}", medium.display())]
    Partition {
        /// The image or card.
        medium: PathBuf,
        /// What is wrong.
        source: PartitionError,
    },
    /// No boot partition was found.
    #[error(
        "{}: no FAT partition labelled FIRMWARE or bootfs ({found}); choose one with --partition N",
        medium.display()
    )]
    NoBootPartition {
        /// The image or card.
        medium: PathBuf,
        /// What the partitions are.
        found: String,
    },
    /// The chosen partition does not exist.
    #[error("{}: there is no partition {number} ({found})", medium.display())]
    NoSuchPartition {
        /// The image or card.
        medium: PathBuf,
        /// The number asked for.
        number: u32,
        /// What the partitions are.
        found: String,
    },
    /// The boot partition is unusable.
    #[error("{}: partition {number} {source}", medium.display())]
    Fat {
        /// The image or card.
        medium: PathBuf,
        /// The partition.
        number: u32,
        /// What is wrong.
        source: FatError,
    },
    /// A setting or Wi-Fi file was refused.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The device already has an active certificate and replacing it was not asked for.
    #[error(
        "{device} already has an active certificate (serial {serial}): it was issued or flashed before. To flash it again with a new certificate add --replace (the old certificate is then superseded; add --revoke-previous to revoke it); to write its current certificate, use --reuse-cert --bundle DIR"
    )]
    DeviceActive {
        /// The device.
        device: DeviceId,
        /// Its active serial.
        serial: String,
    },
    /// `--reuse-cert` cannot be honoured.
    #[error("--reuse-cert: {0}")]
    Reuse(String),
    /// `inject` was pointed at a compressed image.
    #[error(
        "{0}: is zstd-compressed; inject changes an image in place, so decompress it first (zstd -d), or use `autoprov flash` to write it to a card"
    )]
    CompressedTarget(PathBuf),
    /// The operator declined the confirmation.
    #[error("nothing was written: not confirmed")]
    NotConfirmed,
    /// The write, flush or verification failed after the certificate was issued.
    #[error("{what} {target} failed: {source}. {aftermath}", target = .target.display())]
    Failed {
        /// `flashing` or `injecting into`.
        what: &'static str,
        /// The target.
        target: PathBuf,
        /// What failed.
        source: Box<StreamError>,
        /// What it meant for the inventory and what to do.
        aftermath: String,
    },
}

impl From<FlashError> for Error {
    fn from(e: FlashError) -> Self {
        Error::Flash(Box::new(e))
    }
}

impl From<SettingsError> for Error {
    fn from(e: SettingsError) -> Self {
        FlashError::from(e).into()
    }
}

impl FlashError {
    /// Exit code: 2 for input the operator must change, 1 for failures of the machine.
    pub fn exit_code(&self) -> u8 {
        let missing = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
        match self {
            FlashError::Target(TargetError::Io { source, .. }) if missing(source) => 2,
            FlashError::Image(ImageError::Io(_, e)) if missing(e) => 2,
            FlashError::Target(TargetError::Io { .. })
            | FlashError::Image(ImageError::Io(..))
            | FlashError::NotConfirmed
            | FlashError::Failed { .. } => 1,
            FlashError::Partition {
                source: PartitionError::Io(_),
                ..
            } => 1,
            _ => 2,
        }
    }
}

/// Which certificate goes into the bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A new certificate and key, made in memory.
    New {
        /// The device may already have an active certificate, which the new one replaces.
        replace: bool,
        /// Revoke the replaced certificate instead of marking it superseded.
        revoke_previous: bool,
    },
    /// The device's active certificate, from the bundle directory `issue --out` or
    /// `rotate --out` wrote (the only place its key exists besides the old card).
    Reuse {
        /// The bundle directory.
        bundle_dir: PathBuf,
    },
}

/// Everything common to `flash` and `inject`.
#[derive(Debug)]
pub struct Common {
    /// The device.
    pub device: DeviceId,
    /// The card or image file to write.
    pub target: PathBuf,
    /// The boot partition's number, instead of finding it by label.
    pub partition: Option<u32>,
    /// Which certificate.
    pub identity: Identity,
    /// Validity, key type, settings and Wi-Fi for a new bundle (settings and Wi-Fi also for a
    /// reused one).
    pub options: IssueOptions,
    /// Check everything, write nothing, record nothing.
    pub dry_run: bool,
    /// Accept a disk the kernel does not call removable.
    pub force: bool,
    /// Where mounts and disks are looked up.
    pub system: System,
    /// Draw progress bars (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Set by a signal handler to stop between chunks.
    pub interrupt: Arc<AtomicBool>,
}

/// `autoprov flash`.
#[derive(Debug)]
pub struct FlashRequest {
    /// What both commands take.
    pub common: Common,
    /// The `.img` or `.img.zst`.
    pub image: PathBuf,
    /// Read back and compare after writing.
    pub verify: bool,
}

/// `autoprov inject`.
#[derive(Debug)]
pub struct InjectRequest {
    /// What both commands take.
    pub common: Common,
}

/// What happened to the certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertOutcome {
    /// Dry run: a new certificate would be issued (replacing this active one, if any).
    WouldIssue {
        /// The active certificate it would replace.
        replacing: Option<String>,
    },
    /// A new certificate is active.
    Issued {
        /// Its serial.
        serial: String,
        /// Its end of validity.
        not_after: String,
        /// The certificate it replaced, and whether that one was revoked (else superseded).
        replaced: Option<(String, bool)>,
    },
    /// The active certificate was written again.
    Reused {
        /// Its serial.
        serial: String,
    },
}

/// What a flash or inject did (or, dry, would do).
#[derive(Debug)]
pub struct Outcome {
    /// Flash or inject.
    pub kind: FlashKind,
    /// Nothing was written.
    pub dry_run: bool,
    /// The device.
    pub device: DeviceId,
    /// The target, described.
    pub target: String,
    /// The image or card read, described.
    pub source: String,
    /// The boot partition, described.
    pub boot: String,
    /// Bundle files and their sizes.
    pub files: Vec<(String, usize)>,
    /// Whether an earlier `/autoprov/` was replaced.
    pub replaced_bundle: bool,
    /// Files of the earlier bundle whose settings were carried over (inject).
    pub kept: Vec<&'static str>,
    /// Free space left on the boot partition.
    pub free_after: u64,
    /// The certificate.
    pub cert: CertOutcome,
    /// For a flash: the write. For an inject: bytes changed on the card.
    pub written: Option<Written>,
    /// For an inject: bytes written (only the changed blocks).
    pub changed: Option<u64>,
    /// For an inject: the verification.
    pub verified: Option<Verified>,
    /// The inventory's flash record.
    pub record: Option<i64>,
    /// Named durations of the steps, in order.
    pub timings: Vec<(&'static str, Duration)>,
}

/// The partitions of a table, for messages.
fn describe_partitions(medium: &mut dyn Medium, table: &Table) -> String {
    table
        .partitions
        .iter()
        .map(|p| {
            let fs = match medium.bytes(p.start, 512).map(|s| fat::probe(&s)) {
                Ok(Ok(info)) => format!(
                    "{} labelled {:?}",
                    info.fat_type,
                    info.label.unwrap_or_default()
                ),
                _ => "not FAT".to_owned(),
            };
            format!(
                "{} {}: {}, {} at {}",
                p.number,
                p.kind,
                fs,
                human(p.len),
                human(p.start)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn describe_boot(table: &Table, p: &Partition, info: &FatInfo) -> String {
    format!(
        "{} partition {} ({}, label {}, {} at {})",
        table.scheme,
        p.number,
        info.fat_type,
        info.label.as_deref().unwrap_or("none"),
        human(p.len),
        human(p.start)
    )
}

/// Finds the boot partition: `number` if given, else the first FAT partition (by position on
/// disk) whose label is FIRMWARE or bootfs.
fn find_boot(
    medium: &mut dyn Medium,
    name: &Path,
    table: &Table,
    number: Option<u32>,
) -> Result<(Partition, FatInfo), Error> {
    let fat_err = |number, source| FlashError::Fat {
        medium: name.to_owned(),
        number,
        source,
    };
    if let Some(n) = number {
        let Some(p) = table.get(n) else {
            return Err(FlashError::NoSuchPartition {
                medium: name.to_owned(),
                number: n,
                found: describe_partitions(medium, table),
            }
            .into());
        };
        let sector = medium
            .bytes(p.start, 512)
            .map_err(|e| read_error(name, e))?;
        let info = fat::probe(&sector).map_err(|e| fat_err(n, e))?;
        return Ok((p.clone(), info));
    }
    let mut by_start: Vec<&Partition> = table.partitions.iter().collect();
    by_start.sort_by_key(|p| p.start);
    for p in by_start {
        let sector = medium
            .bytes(p.start, 512)
            .map_err(|e| read_error(name, e))?;
        if let Ok(info) = fat::probe(&sector)
            && info.is_boot_label()
        {
            return Ok((p.clone(), info));
        }
    }
    Err(FlashError::NoBootPartition {
        medium: name.to_owned(),
        found: describe_partitions(medium, table),
    }
    .into())
}

/// A read error of a medium: an [`ImageError`] passed through `io::Error`, or plain I/O.
fn read_error(name: &Path, e: std::io::Error) -> FlashError {
    if e.get_ref().is_some_and(|i| i.is::<ImageError>()) {
        if let Some(Ok(image)) = e.into_inner().map(|i| i.downcast::<ImageError>()) {
            return FlashError::Image(*image);
        }
        return FlashError::Partition {
            medium: name.to_owned(),
            source: PartitionError::Io(std::io::Error::other("unreadable image")),
        };
    }
    FlashError::Partition {
        medium: name.to_owned(),
        source: PartitionError::Io(e),
    }
}

fn partition_error(name: &Path, e: PartitionError) -> FlashError {
    match e {
        PartitionError::Io(io) => read_error(name, io),
        source => FlashError::Partition {
            medium: name.to_owned(),
            source,
        },
    }
}

/// The device's active certificate serial, if any.
fn active_serial(pki: &Pki, device: &DeviceId) -> Result<Option<String>, Error> {
    Ok(pki
        .list()?
        .into_iter()
        .find(|r| r.id == device.as_str() && r.status == Status::Active)
        .map(|r| r.serial))
}

/// The bundle of `--reuse-cert --bundle DIR`, checked against the inventory, with new settings
/// or Wi-Fi if given.
fn reused_bundle(
    pki: &mut Pki,
    device: &DeviceId,
    dir: &Path,
    opts: &IssueOptions,
) -> Result<Bundle, Error> {
    let reuse = |m: String| Error::from(FlashError::Reuse(m));
    let active = active_serial(pki, device)?.ok_or_else(|| {
        reuse(format!(
            "{device} has no active certificate to reuse; flash without --reuse-cert to issue one"
        ))
    })?;
    let bundle = Bundle::read_dir(dir).map_err(|e| reuse(format!("{}: {e}", dir.display())))?;
    if bundle.device_id() != device {
        return Err(reuse(format!(
            "{} holds the bundle of {}, not {device}",
            dir.display(),
            bundle.device_id()
        )));
    }
    if crate::normalize_serial(&bundle.manifest().serial) != active {
        return Err(reuse(format!(
            "{} holds certificate {}, but {device}'s active certificate is {active}; give the directory of the active one, or flash with a new certificate (--replace)",
            dir.display(),
            bundle.manifest().serial
        )));
    }
    let leaf = pem::parse(bundle.device_crt())
        .map_err(|e| reuse(format!("{}: device.crt: {e}", dir.display())))?;
    let recorded = pki.inventory().certificate_der(&active)?;
    if recorded.as_deref() != Some(leaf.contents()) {
        return Err(reuse(format!(
            "{}: device.crt is not the certificate the inventory recorded for serial {active}",
            dir.display()
        )));
    }
    if opts.settings.is_empty() && opts.wifi_conf.is_none() {
        return Ok(bundle);
    }
    let mut settings = opts.settings.clone();
    let mut device_table = toml::Table::new();
    device_table.insert("id".into(), toml::Value::String(device.to_string()));
    settings.insert("device".into(), toml::Value::Table(device_table));
    let device_toml =
        toml::to_string(&settings).map_err(|e| Error::Invalid(format!("device settings: {e}")))?;
    Ok(Bundle::new(Contents {
        device_id: device.clone(),
        serial: bundle.manifest().serial.clone(),
        created_at: profile::rfc3339(profile::now()),
        device_crt: bundle.device_crt().to_vec(),
        device_key: Zeroizing::new(bundle.device_key().to_vec()),
        ca_crt: bundle.ca_crt().to_vec(),
        device_toml: device_toml.into_bytes(),
        wifi_conf: opts
            .wifi_conf
            .clone()
            .or_else(|| bundle.wifi_conf().map(|w| Zeroizing::new(w.to_vec()))),
    }))
}

/// The certificate side of a run, decided before anything is written.
struct Plan {
    /// The bundle that is written (a placeholder until issued).
    bundle: Bundle,
    /// The active certificate a new one replaces.
    replacing: Option<String>,
}

fn plan_identity(pki: &mut Pki, common: &Common, kind: FlashKind) -> Result<Plan, Error> {
    let active = active_serial(pki, &common.device)?;
    match &common.identity {
        Identity::Reuse { bundle_dir } => Ok(Plan {
            bundle: reused_bundle(pki, &common.device, bundle_dir, &common.options)?,
            replacing: None,
        }),
        Identity::New { replace, .. } => {
            // inject exists to replace what a card holds; flash of an active device is more
            // often a typo in the device id than a re-flash, so it must be asked for.
            if let Some(serial) = &active
                && kind == FlashKind::Flash
                && !replace
            {
                return Err(FlashError::DeviceActive {
                    device: common.device.clone(),
                    serial: serial.clone(),
                }
                .into());
            }
            Ok(Plan {
                bundle: pki.preview_device(&common.device, &common.options)?,
                replacing: active,
            })
        }
    }
}

fn file_list(bundle: &Bundle) -> Vec<(String, usize)> {
    bundle
        .files()
        .into_iter()
        .map(|(n, d)| (n.to_owned(), d.len()))
        .collect()
}

/// Issues the certificate the plan calls for (recorded `pending`), or returns `None` for a reused
/// one.
fn issue(pki: &mut Pki, common: &Common, plan: &Plan) -> Result<Option<Issued>, Error> {
    match common.identity {
        Identity::Reuse { .. } => Ok(None),
        Identity::New { .. } if plan.replacing.is_some() => {
            Ok(Some(pki.rotate_device(&common.device, &common.options)?))
        }
        Identity::New { .. } => Ok(Some(pki.issue_device(&common.device, &common.options)?)),
    }
}

/// Injects `bundle` into `fat` (a whole partition's bytes, changed in place) and reads it back.
fn inject_checked(
    fat: &mut [u8],
    bundle: &Bundle,
    name: &Path,
    number: u32,
) -> Result<fat::Injected, FlashError> {
    let fat_err = |source| FlashError::Fat {
        medium: name.to_owned(),
        number,
        source,
    };
    let injected = fat::inject(fat, bundle).map_err(fat_err)?;
    // fatfs is trusted only as far as it can be checked: the bundle must read back whole.
    let back = fat::read_bundle(fat).map_err(fat_err)?;
    if back.as_ref().map(Bundle::manifest) != Some(bundle.manifest()) {
        return Err(fat_err(FatError::NotFat(
            "did not read back the bundle just written".into(),
        )));
    }
    Ok(injected)
}

/// Checks that a bundle like `bundle` fits into the FAT partition `fat`, on a copy.
fn trial(
    fat: &[u8],
    bundle: &Bundle,
    name: &Path,
    number: u32,
) -> Result<fat::Injected, FlashError> {
    // The placeholder bundle holds a throwaway key, so the copy needs no zeroizing.
    inject_checked(&mut fat.to_vec(), bundle, name, number)
}

fn now() -> String {
    profile::rfc3339(profile::now())
}

/// What the inventory records when a run fails after issuance, and what the operator reads.
fn record_failure(
    pki: &mut Pki,
    record: i64,
    issued: Option<&Issued>,
    image_sha256: &str,
    cause: &StreamError,
) -> String {
    let detail = cause.to_string();
    let why = format!("card not written: {detail}");
    let end = FlashEnd {
        ok: false,
        image_sha256,
        detail: Some(&detail),
        activate: None,
        abandon: issued.map(|i| (i.serial.as_str(), why.as_str())),
    };
    let recorded = pki.inventory().flash_finished(record, &end, &now());
    let crl = match &recorded {
        Ok(revoked) if !revoked.is_empty() => pki.write_crl(crate::crl::NEXT_UPDATE_DAYS).err(),
        _ => None,
    };
    let mut text = match (&recorded, issued) {
        (Ok(_), Some(i)) => format!(
            "Recorded as failed in the inventory (flash #{record}); certificate {} is revoked, since its key may be on the card",
            i.serial
        ),
        (Ok(_), None) => format!("Recorded as failed in the inventory (flash #{record})"),
        (Err(e), _) => format!(
            "Recording the failure in the inventory failed too ({e}); `autoprov list` shows the certificate pending"
        ),
    };
    if let Some(e) = crl {
        text.push_str(&format!(
            " (regenerating crl.pem failed: {e}; run `autoprov crl`)"
        ));
    }
    text.push_str(match cause {
        StreamError::Mismatch { .. } | StreamError::ReadBack { .. } => {
            ". Do not use this card; flash the device again, preferably to another card"
        }
        StreamError::Interrupted => ". The card is incomplete; flash the device again",
        StreamError::Image(_) => {
            ". The card is incomplete; flash the device again from an intact image"
        }
        _ => ". Flash the device again once the cause is fixed",
    });
    text
}

/// A flash or inject whose checks passed, ready to run: [`Prepared::outcome`] says what it will
/// do (what a dry run prints), [`Prepared::run`] does it.
#[derive(Debug)]
pub struct Prepared {
    common: Common,
    outcome: Outcome,
    target: Target,
    plan: Plan,
    boot: Partition,
    work: Work,
}

#[derive(Debug)]
enum Work {
    Flash {
        image: Image,
        image_len: u64,
        min_len: u64,
        verify: bool,
    },
    Inject {
        old: Wiped,
        new: Wiped,
    },
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("bundle", &self.bundle)
            .field("replacing", &self.replacing)
            .finish()
    }
}

impl Outcome {
    /// What a run will do, as far as it is known before anything is issued or written.
    #[allow(clippy::too_many_arguments)]
    fn planned(
        kind: FlashKind,
        common: &Common,
        target: &Target,
        source: String,
        boot: String,
        plan: &Plan,
        trial: &fat::Injected,
        inspect: Duration,
    ) -> Outcome {
        Outcome {
            kind,
            dry_run: common.dry_run,
            device: common.device.clone(),
            target: target.describe(),
            source,
            boot,
            files: file_list(&plan.bundle),
            replaced_bundle: trial.replaced,
            kept: Vec::new(),
            free_after: trial.free_after,
            cert: match &common.identity {
                Identity::Reuse { .. } => CertOutcome::Reused {
                    serial: plan.bundle.manifest().serial.clone(),
                },
                Identity::New { .. } => CertOutcome::WouldIssue {
                    replacing: plan.replacing.clone(),
                },
            },
            written: None,
            changed: None,
            verified: None,
            record: None,
            timings: vec![("inspect", inspect)],
        }
    }
}

/// Checks everything `flash` needs without writing or recording anything: the target, the
/// image, its partition table, the boot partition, the device's certificates, and that the
/// bundle fits.
pub fn prepare_flash(pki: &mut Pki, req: FlashRequest) -> Result<Prepared, Error> {
    let FlashRequest {
        common,
        image: image_path,
        verify,
    } = req;
    let t = Instant::now();
    let target = target::examine(
        &common.system,
        &common.target,
        Some(&image_path),
        false,
        common.force,
    )
    .map_err(FlashError::from)?;
    let mut image = Image::open(&image_path).map_err(FlashError::from)?;
    let exact_len = image.exact_len();
    let table =
        partition::read(&mut image, exact_len).map_err(|e| partition_error(&image_path, e))?;
    let (boot, info) = find_boot(&mut image, &image_path, &table, common.partition)?;
    image.fill_to(boot.end()).map_err(FlashError::from)?;
    let image_len = match image.declared_len() {
        Some(n) if n >= table.min_disk_len => n,
        _ => table.min_disk_len,
    };
    target.check_size(image_len).map_err(FlashError::from)?;
    let source = format!(
        "{} ({}{})",
        image_path.display(),
        if image.compressed() {
            format!("zstd, {} → ", human(image.file_len()))
        } else {
            String::new()
        },
        human(image_len)
    );
    let inspect = t.elapsed();
    let plan = plan_identity(pki, &common, FlashKind::Flash)?;
    let fat = &image.head()[boot.start as usize..boot.end() as usize];
    let trial = trial(fat, &plan.bundle, &image_path, boot.number)?;
    let outcome = Outcome::planned(
        FlashKind::Flash,
        &common,
        &target,
        source,
        describe_boot(&table, &boot, &info),
        &plan,
        &trial,
        inspect,
    );
    Ok(Prepared {
        common,
        outcome,
        target,
        plan,
        boot,
        work: Work::Flash {
            image,
            image_len,
            min_len: table.min_disk_len,
            verify,
        },
    })
}

/// Checks everything `inject` needs without writing or recording anything.
pub fn prepare_inject(pki: &mut Pki, req: InjectRequest) -> Result<Prepared, Error> {
    let InjectRequest { common } = req;
    let t = Instant::now();
    let target = target::examine(&common.system, &common.target, None, true, common.force)
        .map_err(FlashError::from)?;
    let name = target.path.clone();
    let io_err = |e| FlashError::Partition {
        medium: name.clone(),
        source: PartitionError::Io(e),
    };
    let mut file = File::open(&name).map_err(io_err)?;
    let len = file.seek(SeekFrom::End(0)).map_err(io_err)?;
    if file.bytes(0, 4).ok().as_deref() == Some(&source::ZSTD_MAGIC[..]) {
        return Err(FlashError::CompressedTarget(name).into());
    }
    let table = partition::read(&mut file, Some(len)).map_err(|e| partition_error(&name, e))?;
    let (boot, info) = find_boot(&mut file, &name, &table, common.partition)?;
    if boot.len > source::MAX_HEAD {
        return Err(FlashError::Fat {
            medium: name,
            number: boot.number,
            source: FatError::NotFat(format!(
                "is {}, more than the {} autoprov holds in memory",
                human(boot.len),
                human(source::MAX_HEAD)
            )),
        }
        .into());
    }
    let mut old = Wiped(file.bytes(boot.start, boot.len as usize).map_err(io_err)?);
    // A rotation must not lose what the card was set up with: without new --set or Wi-Fi
    // options, the card's device.toml settings and wifi.conf go into the new bundle.
    let mut common = common;
    let mut kept = Vec::new();
    let on_card = fat::read_files(&mut old).map_err(|source| FlashError::Fat {
        medium: name.clone(),
        number: boot.number,
        source,
    })?;
    if common.options.settings.is_empty()
        && let Some(text) = on_card.get(autoprov_bundle::DEVICE_CONFIG)
    {
        common.options.settings = super::settings::from_card(text)?;
        if !common.options.settings.is_empty() {
            kept.push(autoprov_bundle::DEVICE_CONFIG);
        }
    }
    if common.options.wifi_conf.is_none()
        && let Some(wifi) = on_card.get(autoprov_bundle::WIFI_CONF)
    {
        common.options.wifi_conf = Some(Zeroizing::new(wifi.clone()));
        kept.push(autoprov_bundle::WIFI_CONF);
    }
    drop(on_card);
    let inspect = t.elapsed();
    let plan = plan_identity(pki, &common, FlashKind::Inject)?;
    let trial = trial(&old, &plan.bundle, &name, boot.number)?;
    let mut outcome = Outcome::planned(
        FlashKind::Inject,
        &common,
        &target,
        format!("{} ({})", name.display(), human(len)),
        describe_boot(&table, &boot, &info),
        &plan,
        &trial,
        inspect,
    );
    outcome.kept = kept;
    Ok(Prepared {
        common,
        outcome,
        target,
        plan,
        boot,
        work: Work::Inject {
            old,
            new: Wiped::default(),
        },
    })
}

impl Prepared {
    /// What the run will do; after a dry run, what it would have done.
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    /// The flag that stops the write between chunks (for the caller's signal handler).
    pub fn interrupt(&self) -> Arc<AtomicBool> {
        self.common.interrupt.clone()
    }

    /// Whether the target is a block device, which the operator confirms unless `--yes`.
    pub fn needs_confirmation(&self) -> bool {
        self.target.is_block()
    }

    /// Issues the certificate, injects the bundle, writes, verifies and records the result.
    pub fn run(self, pki: &mut Pki) -> Result<Outcome, Error> {
        let Prepared {
            common,
            mut outcome,
            target,
            plan,
            boot,
            work,
        } = self;
        if common.dry_run {
            return Ok(outcome);
        }
        let kind = outcome.kind;
        let t = Instant::now();
        let issued = issue(pki, &common, &plan)?;
        outcome.timings.push(("issue", t.elapsed()));
        let bundle = issued.as_ref().map_or(&plan.bundle, |i| &i.bundle);
        let serial = bundle.manifest().serial.clone();
        let abandon = |pki: &mut Pki, why: String| {
            if let Some(i) = &issued {
                let _ = pki.abandon(&i.serial, &why);
            }
        };
        let medium = match &work {
            Work::Flash { image, .. } => image.path().to_owned(),
            Work::Inject { .. } => target.path.clone(),
        };
        // The bundle goes straight into the bytes that will be written: the image's head for a
        // flash, a copy of the partition for an inject (whose original is needed to find what
        // changed). Both are zeroized when dropped, as they then hold the key.
        let mut work = work;
        let t = Instant::now();
        let injected = match &mut work {
            Work::Flash { image, .. } => inject_checked(
                &mut image.head_mut()[boot.start as usize..boot.end() as usize],
                bundle,
                &medium,
                boot.number,
            ),
            Work::Inject { old, new } => {
                *new = Wiped(old.to_vec());
                inject_checked(new, bundle, &medium, boot.number)
            }
        };
        let injected = match injected {
            Ok(v) => v,
            Err(e) => {
                abandon(pki, format!("card not written: {e}"));
                return Err(e.into());
            }
        };
        outcome.timings.push(("inject", t.elapsed()));
        outcome.files = file_list(bundle);
        outcome.replaced_bundle = injected.replaced;
        outcome.free_after = injected.free_after;

        let record = match pki.inventory().flash_started(
            &common.device,
            Some(&serial),
            kind,
            &outcome.target,
            &now(),
        ) {
            Ok(r) => r,
            Err(e) => {
                abandon(
                    pki,
                    "card not written: the flash could not be recorded".into(),
                );
                return Err(e.into());
            }
        };
        outcome.record = Some(record);
        let capacity = match &target.kind {
            target::Kind::Block(d) => Some(d.size),
            target::Kind::File { .. } => None,
        };
        let mut opts = stream::Options {
            verify: true,
            progress: common.progress,
            flush_windows: capacity.is_some(),
            capacity,
            interrupt: common.interrupt.clone(),
        };
        let (result, digest, what) = match work {
            Work::Flash {
                image,
                image_len,
                min_len,
                verify,
            } => {
                opts.verify = verify;
                let (path, compressed, head, rest) = image.into_parts();
                let plan = stream::Plan {
                    path,
                    compressed,
                    head,
                    rest,
                    expected_len: Some(image_len),
                    min_len,
                };
                let result = open_for_flash(&target)
                    .and_then(|mut f| stream::write_image(plan, &mut f, &target.path, &opts))
                    .map(Done::Flash);
                (result, None, "flashing")
            }
            Work::Inject { old, new } => {
                let digest = autoprov_bundle::sha256_hex(&new);
                let result = inject_in_place(&target, &boot, &old, &new, &opts);
                (result, Some(digest), "injecting into")
            }
        };
        let done = match result {
            Ok(d) => d,
            Err(cause) => {
                let aftermath = record_failure(
                    pki,
                    record,
                    issued.as_ref(),
                    digest.as_deref().unwrap_or(""),
                    &cause,
                );
                return Err(FlashError::Failed {
                    what,
                    target: target.path.clone(),
                    source: Box::new(cause),
                    aftermath,
                }
                .into());
            }
        };
        let (digest, detail) = match done {
            Done::Flash(written) => {
                outcome.timings.push(("write", written.write_time));
                outcome.timings.push(("flush", written.sync_time));
                let detail = match &written.verified {
                    Some(v) => {
                        outcome.timings.push(("verify", v.time));
                        format!("{} bytes written and verified, {}", written.bytes, v.method)
                    }
                    None => format!(
                        "{} bytes written, not verified (--no-verify)",
                        written.bytes
                    ),
                };
                let digest = written.image_sha256.clone();
                outcome.written = Some(written);
                (digest, detail)
            }
            Done::Inject {
                changed,
                write_time,
                verified,
            } => {
                outcome.timings.push(("write+flush", write_time));
                outcome.timings.push(("verify", verified.time));
                let detail = format!(
                    "{changed} bytes of partition {} rewritten and verified, {}",
                    boot.number, verified.method
                );
                outcome.changed = Some(changed);
                outcome.verified = Some(verified);
                (digest.unwrap_or_default(), detail)
            }
        };
        finish_ok(
            pki,
            record,
            &common,
            issued.as_ref(),
            &digest,
            &detail,
            &mut outcome,
        )?;
        Ok(outcome)
    }
}

enum Done {
    Flash(Written),
    Inject {
        changed: u64,
        write_time: Duration,
        verified: Verified,
    },
}

fn inject_in_place(
    target: &Target,
    boot: &Partition,
    old: &[u8],
    new: &[u8],
    opts: &stream::Options,
) -> Result<Done, StreamError> {
    let t = Instant::now();
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(if target.is_block() { libc::O_EXCL } else { 0 })
        .open(&target.path)
        .map_err(|source| StreamError::Write {
            path: target.path.clone(),
            at: boot.start,
            source,
        })?;
    let changed = stream::write_changes(&file, &target.path, boot.start, old, new)?;
    let write_time = t.elapsed();
    let verified = stream::read_back(&target.path, boot.start, new, opts)?;
    Ok(Done::Inject {
        changed,
        write_time,
        verified,
    })
}

/// Records success: the flash `ok` and the new certificate active, in one transaction.
fn finish_ok(
    pki: &mut Pki,
    record: i64,
    common: &Common,
    issued: Option<&Issued>,
    image_sha256: &str,
    detail: &str,
    outcome: &mut Outcome,
) -> Result<(), Error> {
    let revoke_previous = matches!(
        common.identity,
        Identity::New {
            revoke_previous: true,
            ..
        }
    );
    let end = FlashEnd {
        ok: true,
        image_sha256,
        detail: Some(detail),
        activate: issued.map(|i| (i.serial.as_str(), revoke_previous)),
        abandon: None,
    };
    let revoked = pki.inventory().flash_finished(record, &end, &now())?;
    if !revoked.is_empty() {
        pki.write_crl(crate::crl::NEXT_UPDATE_DAYS)?;
    }
    if let (Some(i), CertOutcome::WouldIssue { replacing }) = (issued, &outcome.cert) {
        outcome.cert = CertOutcome::Issued {
            serial: i.serial.clone(),
            not_after: i.not_after.clone(),
            replaced: replacing.clone().map(|s| (s, revoke_previous)),
        };
    }
    Ok(())
}

fn open_for_flash(target: &Target) -> Result<File, StreamError> {
    let err = |source| StreamError::Write {
        path: target.path.clone(),
        at: 0,
        source,
    };
    match &target.kind {
        // O_EXCL on a block device fails with EBUSY if the kernel has it in use (mounted
        // meanwhile), closing the gap between the checks and the write.
        target::Kind::Block(_) => OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_EXCL)
            .open(&target.path)
            .map_err(err),
        target::Kind::File { .. } => {
            // The image will hold a private key: owner-only, also when the file existed.
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&target.path)
                .map_err(err)?;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(err)?;
            Ok(f)
        }
    }
}
