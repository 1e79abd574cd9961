//! `autoprov flash | inject | flashes`: writing cards, and the record of what was written.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Args;

use super::ca::parse_key_type;
use super::certs::parse_device_id;
use super::{Cli, output};
use crate::flash::command::{self, CertOutcome, Common, Outcome, Prepared};
use crate::flash::target::System;
use crate::flash::{FlashRequest, Identity, InjectRequest, human, settings, stream};
use crate::{DeviceId, Error, IssueOptions, KeyType, profile};

/// What `flash` and `inject` both take.
#[derive(Debug, Args)]
pub struct CardArgs {
    /// The device id (certificate CN, MQTT client id, AWS thing name, Azure registration id).
    #[arg(value_parser = parse_device_id)]
    pub device_id: DeviceId,
    /// The card (whole-disk block device, e.g. /dev/sdb or /dev/mmcblk0) or an image file.
    #[arg(long, value_name = "TARGET")]
    pub to: PathBuf,
    /// The boot partition's number, instead of finding the FAT partition labelled FIRMWARE
    /// (NixOS) or bootfs (Raspberry Pi OS).
    #[arg(long, value_name = "N")]
    pub partition: Option<u32>,
    /// Wi-Fi network name for the card's wifi.conf (the 3A+ has no Ethernet).
    #[arg(
        long,
        value_name = "SSID",
        requires = "wifi_psk_file",
        conflicts_with = "wifi_conf"
    )]
    pub wifi_ssid: Option<String>,
    /// File holding the Wi-Fi passphrase (8 to 63 characters) or 64-hex-digit key, never given
    /// on the command line. The card gets the derived key, not the passphrase.
    #[arg(long, value_name = "FILE", requires = "wifi_ssid")]
    pub wifi_psk_file: Option<PathBuf>,
    /// A wpa_supplicant file with network={…} blocks (several networks, WPA3, enterprise),
    /// copied as wifi.conf.
    #[arg(long, value_name = "FILE")]
    pub wifi_conf: Option<PathBuf>,
    /// A per-device agent setting for device.toml, checked against the agent's schema
    /// (repeatable), e.g. --set sensor.interval=30s --set mqtt.host=mqtt.example.net.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Write the device's current (active) certificate instead of a new one. Its private key
    /// exists only on the card it was written to and in the bundle directory that
    /// `autoprov issue --out` or `rotate --out` wrote, so that directory must be given with
    /// --bundle.
    #[arg(long, requires = "bundle")]
    pub reuse_cert: bool,
    /// The bundle directory for --reuse-cert.
    #[arg(long, value_name = "DIR", requires = "reuse_cert")]
    pub bundle: Option<PathBuf>,
    /// When the device already has an active certificate: revoke it (and regenerate crl.pem)
    /// once the new one is written, instead of marking it superseded.
    #[arg(long, conflicts_with = "reuse_cert")]
    pub revoke_previous: bool,
    /// Validity of a new certificate in days (never past the issuing CA's end).
    #[arg(long, default_value_t = profile::LEAF_DAYS)]
    pub days: u32,
    /// Type of a new key: ecdsa-p256, ecdsa-p384 or rsa-2048.
    #[arg(long, default_value = "ecdsa-p256", value_parser = parse_key_type)]
    pub key_type: KeyType,
    /// Check everything and show what would be written; write nothing, record nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask before writing to a block device.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Accept a disk the kernel does not mark removable (mounted disks and the system disk are
    /// refused regardless).
    #[arg(long)]
    pub force: bool,
}

/// `flash` options.
#[derive(Debug, Args)]
pub struct FlashArgs {
    /// What flash and inject both take.
    #[command(flatten)]
    pub card: CardArgs,
    /// The image: .img or .img.zst (nixpkgs' sd-image; MBR or GPT).
    #[arg(long, value_name = "IMG")]
    pub image: PathBuf,
    /// Replace the device's active certificate with a new one (re-flashing a device).
    #[arg(long, conflicts_with = "reuse_cert")]
    pub replace: bool,
    /// Skip reading the card back after writing (the flash is recorded as not verified).
    #[arg(long)]
    pub no_verify: bool,
}

/// `inject` options.
#[derive(Debug, Args)]
pub struct InjectArgs {
    /// What flash and inject both take.
    #[command(flatten)]
    pub card: CardArgs,
}

/// `flashes` options.
#[derive(Debug, Args)]
pub struct FlashesArgs {
    /// Only this device.
    #[arg(value_parser = parse_device_id)]
    pub device_id: Option<DeviceId>,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn common(card: &CardArgs, replace: bool) -> Result<Common, Error> {
    let wifi_conf = match (&card.wifi_ssid, &card.wifi_psk_file, &card.wifi_conf) {
        (Some(ssid), Some(psk), None) => Some(settings::wifi_psk(ssid, psk)?),
        (None, None, Some(file)) => Some(settings::wifi_conf(file)?),
        _ => None,
    };
    let identity = match (&card.bundle, card.reuse_cert) {
        (Some(dir), true) => Identity::Reuse {
            bundle_dir: dir.clone(),
        },
        _ => Identity::New {
            replace,
            revoke_previous: card.revoke_previous,
        },
    };
    Ok(Common {
        device: card.device_id.clone(),
        target: card.to.clone(),
        partition: card.partition,
        identity,
        options: IssueOptions {
            days: card.days,
            key_type: card.key_type,
            settings: settings::from_args(&card.set)?,
            wifi_conf,
        },
        dry_run: card.dry_run,
        force: card.force,
        system: System::real(),
        progress: true,
        interrupt: Arc::new(AtomicBool::new(false)),
    })
}

/// Asks on the terminal; refuses when nobody can answer.
fn confirm(question: &str) -> Result<bool, Error> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::Invalid(format!(
            "{question} — standard input is not a terminal, so nobody can confirm; add --yes"
        )));
    }
    eprint!("{question} Everything on it is lost. Type yes to continue: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::Invalid(format!("reading the answer: {e}")))?;
    Ok(answer.trim().eq_ignore_ascii_case("yes"))
}

/// Runs a prepared flash or inject: prints the plan, confirms, then writes with SIGINT, SIGTERM
/// and SIGHUP turned into a clean stop (recorded as failed) instead of a half-recorded one.
fn execute(cli: &Cli, prepared: Prepared, yes: bool) -> Result<(), Error> {
    let dry = prepared.outcome().dry_run;
    if dry {
        output::emit(&report(cli, prepared.outcome()));
        return Ok(());
    }
    if prepared.needs_confirmation() && !yes {
        let o = prepared.outcome();
        let what = match o.kind {
            crate::inventory::FlashKind::Flash => format!("Write {} to {}", o.source, o.target),
            crate::inventory::FlashKind::Inject => {
                format!("Replace /autoprov/ on {} ({})", o.target, o.boot)
            }
        };
        if !confirm(&format!("{what} for {}?", o.device))? {
            return Err(command::FlashError::NotConfirmed.into());
        }
    }
    let interrupt = prepared.interrupt();
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(signal, interrupt.clone())
            .map_err(|e| Error::Invalid(format!("installing the signal handler: {e}")))?;
    }
    let mut pki = cli.open(true)?;
    let outcome = prepared.run(&mut pki)?;
    output::emit(&report(cli, &outcome));
    Ok(())
}

/// `autoprov flash`.
pub fn flash(cli: &Cli, args: &FlashArgs) -> Result<(), Error> {
    let req = FlashRequest {
        common: common(&args.card, args.replace)?,
        image: args.image.clone(),
        verify: !args.no_verify,
    };
    let mut pki = cli.open(false)?;
    let prepared = command::prepare_flash(&mut pki, req)?;
    drop(pki);
    execute(cli, prepared, args.card.yes)
}

/// `autoprov inject`.
pub fn inject(cli: &Cli, args: &InjectArgs) -> Result<(), Error> {
    let req = InjectRequest {
        common: common(&args.card, true)?,
    };
    let mut pki = cli.open(false)?;
    let prepared = command::prepare_inject(&mut pki, req)?;
    drop(pki);
    execute(cli, prepared, args.card.yes)
}

fn ms(d: std::time::Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// The report printed after a flash or inject, or a dry run of one.
fn report(cli: &Cli, o: &Outcome) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let verb = match o.kind {
        crate::inventory::FlashKind::Flash => "flash",
        crate::inventory::FlashKind::Inject => "inject",
    };
    if o.dry_run {
        let _ = writeln!(
            t,
            "dry run of {verb} {}: nothing was written or recorded",
            o.device
        );
    } else {
        let _ = writeln!(t, "{verb} {}: done", o.device);
    }
    let _ = writeln!(t, "  target:       {}", o.target);
    let _ = writeln!(t, "  image:        {}", o.source);
    let _ = writeln!(t, "  boot:         {}", o.boot);
    let files = o
        .files
        .iter()
        .map(|(n, len)| format!("{n} ({})", human(*len as u64)))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        t,
        "  bundle:       /autoprov/ {files}{}; {} free after",
        if o.replaced_bundle {
            ", replacing the /autoprov/ already there"
        } else {
            ""
        },
        human(o.free_after)
    );
    if !o.kept.is_empty() {
        let _ = writeln!(
            t,
            "  kept:         {} from the card (no --set or Wi-Fi option given)",
            o.kept.join(" and ")
        );
    }
    let cert = match &o.cert {
        CertOutcome::WouldIssue { replacing: None } => {
            "a new certificate and key would be issued (in memory; the dry run used a placeholder)"
                .to_owned()
        }
        CertOutcome::WouldIssue { replacing: Some(s) } => format!(
            "a new certificate and key would be issued, replacing active certificate {s} (the dry run used a placeholder)"
        ),
        CertOutcome::Issued {
            serial,
            not_after,
            replaced,
        } => {
            let mut c = format!("issued {serial}, valid until {not_after}, now active");
            match replaced {
                Some((old, true)) => {
                    let _ = write!(c, "; {old} revoked and crl.pem regenerated");
                }
                Some((old, false)) => {
                    let _ = write!(
                        c,
                        "; {old} superseded (it keeps working until it expires; `autoprov revoke {} --serial {old}` to revoke it)",
                        o.device
                    );
                }
                None => {}
            }
            c
        }
        CertOutcome::Reused { serial } => format!("reused active certificate {serial}"),
    };
    let _ = writeln!(t, "  certificate:  {cert}");
    if let Some(w) = &o.written {
        let _ = writeln!(
            t,
            "  written:      {} in {}, flushed in {}",
            human(w.bytes),
            stream::rate(w.bytes, w.write_time),
            ms(w.sync_time)
        );
        match &w.verified {
            Some(v) => {
                let _ = writeln!(t, "  verified:     {}", v.method);
            }
            None => {
                let _ = writeln!(t, "  verified:     no (--no-verify)");
            }
        }
        let _ = writeln!(t, "  image SHA-256: {}", w.image_sha256);
    }
    if let (Some(changed), Some(v)) = (o.changed, &o.verified) {
        let _ = writeln!(
            t,
            "  written:      {} of the boot partition changed and rewritten in place",
            human(changed)
        );
        let _ = writeln!(t, "  verified:     {}", v.method);
    }
    if let Some(id) = o.record {
        let _ = writeln!(
            t,
            "  recorded:     #{id} in {} (`autoprov flashes {}`)",
            cli.pki_dir.join(crate::INVENTORY).display(),
            o.device
        );
    }
    let timings = o
        .timings
        .iter()
        .map(|(n, d)| format!("{n} {}", ms(*d)))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(t, "  timings:      {timings}");
    if !o.dry_run && o.kind == crate::inventory::FlashKind::Flash {
        let _ = writeln!(
            t,
            "On first boot the card imports the bundle and erases the key from its boot partition."
        );
    }
    t
}

/// `autoprov flashes`.
pub fn flashes(cli: &Cli, args: &FlashesArgs) -> Result<(), Error> {
    let mut pki = cli.open(false)?;
    let rows = pki.inventory().flashes(args.device_id.as_ref())?;
    if args.json {
        let text = serde_json::to_string_pretty(&rows)
            .map_err(|e| Error::Invalid(format!("JSON output: {e}")))?;
        output::emit(&format!("{text}\n"));
        return Ok(());
    }
    use std::fmt::Write as _;
    let mut t = String::new();
    let width = rows
        .iter()
        .map(|r| r.device.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(
        t,
        "{:>4}  {:<width$}  {:<6}  {:<7}  {:<20}  {:<32}  TARGET",
        "#", "DEVICE", "KIND", "RESULT", "STARTED", "SERIAL"
    );
    for r in &rows {
        let _ = writeln!(
            t,
            "{:>4}  {:<width$}  {:<6}  {:<7}  {:<20}  {:<32}  {}",
            r.id,
            r.device,
            r.kind,
            r.result,
            r.started_at,
            r.serial.as_deref().unwrap_or("-"),
            r.target
        );
        if r.result != "ok"
            && let Some(d) = &r.detail
        {
            let _ = writeln!(t, "      {d}");
        }
    }
    output::emit(&t);
    Ok(())
}
