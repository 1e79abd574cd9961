//! `autoprov issue | issue-server | list | rotate | revoke | crl`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::ca::parse_key_type;
use super::{Cli, output};
use crate::cli::output::outln;
use crate::inventory::{CertRow, Kind, Status};
use crate::{DeviceId, Error, IssueOptions, Issued, KeyType, ServerOptions, fsutil, profile};

/// Parses a device id for clap, with the rule in the error.
pub(super) fn parse_device_id(s: &str) -> Result<DeviceId, String> {
    DeviceId::new(s).map_err(|e| {
        format!("{e}. Device ids match ^[a-z0-9][a-z0-9_:-]{{0,63}}$: the id is the certificate CN, the MQTT client id, the AWS thing name and the Azure registration id at once")
    })
}

/// Options every command that signs a leaf certificate takes.
#[derive(Debug, Args)]
pub struct LeafArgs {
    /// Certificate validity in days (never past the issuing CA's end).
    #[arg(long, default_value_t = profile::LEAF_DAYS)]
    pub days: u32,
    /// Type of the fresh key: ecdsa-p256, ecdsa-p384 or rsa-2048.
    #[arg(long, default_value = "ecdsa-p256", value_parser = parse_key_type)]
    pub key_type: KeyType,
    /// Replace a non-empty --out directory.
    #[arg(long)]
    pub force: bool,
}

/// `issue` options.
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The device id (certificate CN, MQTT client id, AWS thing name, Azure registration id).
    #[arg(value_parser = parse_device_id)]
    pub device_id: DeviceId,
    /// The bundle directory to write (must not exist or be empty, unless --force).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub leaf: LeafArgs,
}

/// `issue-server` options.
#[derive(Debug, Args)]
pub struct IssueServerArgs {
    /// The server's name (certificate CN), e.g. broker or mqtt.example.net.
    pub name: String,
    /// Directory to write server.crt, server.key and ca.crt into.
    #[arg(long)]
    pub out: PathBuf,
    /// A DNS name clients connect to (repeatable).
    #[arg(long = "dns", value_name = "NAME")]
    pub dns: Vec<String>,
    /// An IP address clients connect to (repeatable).
    #[arg(long = "ip", value_name = "ADDR")]
    pub ip: Vec<IpAddr>,
    #[command(flatten)]
    pub leaf: LeafArgs,
}

/// `list` options.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only active certificates that expire within this many days.
    #[arg(long, value_name = "DAYS")]
    pub expiring_within: Option<i64>,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `rotate` options.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The device id.
    #[arg(value_parser = parse_device_id)]
    pub device_id: DeviceId,
    /// The new bundle directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Revoke the previous certificate instead of marking it superseded.
    #[arg(long)]
    pub revoke_previous: bool,
    #[command(flatten)]
    pub leaf: LeafArgs,
}

/// `revoke` options.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The device id.
    #[arg(value_parser = parse_device_id)]
    pub device_id: DeviceId,
    /// Only this certificate (hex, colons allowed); default: all of the device's certificates.
    #[arg(long)]
    pub serial: Option<String>,
    /// Why: unspecified, key-compromise, affiliation-changed, superseded, cessation-of-operation,
    /// privilege-withdrawn.
    #[arg(long, default_value = "unspecified")]
    pub reason: String,
}

/// `crl` options.
#[derive(Debug, Args)]
pub struct CrlArgs {
    /// Also copy the CRL here (e.g. where Mosquitto's crlfile points).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Days until verifiers stop accepting this CRL.
    #[arg(long, default_value_t = crate::crl::NEXT_UPDATE_DAYS)]
    pub next_update_days: u32,
}

fn opts(days: u32, key_type: KeyType) -> IssueOptions {
    IssueOptions {
        days,
        key_type,
        ..IssueOptions::default()
    }
}

fn report_issued(verb: &str, id: &DeviceId, issued: &Issued, out: &std::path::Path) {
    outln!(
        "{verb} {id}: serial {}, valid until {}",
        issued.serial,
        issued.not_after
    );
    outln!(
        "bundle written to {} ({})",
        out.display(),
        issued
            .bundle
            .files()
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    );
}

pub fn issue(cli: &Cli, args: &IssueArgs) -> Result<(), Error> {
    let mut pki = cli.open(true)?;
    let issued = pki.issue_to_dir(
        &args.device_id,
        &opts(args.leaf.days, args.leaf.key_type),
        &args.out,
        args.leaf.force,
    )?;
    report_issued("issued", &args.device_id, &issued, &args.out);
    Ok(())
}

pub fn rotate(cli: &Cli, args: &RotateArgs) -> Result<(), Error> {
    let mut pki = cli.open(true)?;
    let issued = pki.rotate_to_dir(
        &args.device_id,
        &opts(args.leaf.days, args.leaf.key_type),
        &args.out,
        args.leaf.force,
        args.revoke_previous,
    )?;
    report_issued("rotated", &args.device_id, &issued, &args.out);
    if args.revoke_previous {
        outln!("the previous certificate is revoked and crl.pem regenerated");
    } else {
        outln!(
            "the previous certificate is superseded: it keeps working until the card is re-flashed (revoke it later with `autoprov revoke {} --serial …`)",
            args.device_id
        );
    }
    Ok(())
}

pub fn issue_server(cli: &Cli, args: &IssueServerArgs) -> Result<(), Error> {
    autoprov_bundle::check_target(&args.out, args.leaf.force)?;
    let mut pki = cli.open(true)?;
    let server = pki.issue_server(
        &args.name,
        &args.dns,
        &args.ip,
        &ServerOptions {
            days: args.leaf.days,
            key_type: args.leaf.key_type,
            ips: Vec::new(),
        },
    )?;
    let files: [(&str, &[u8], u32); 3] = [
        ("server.crt", server.chain_pem.as_bytes(), 0o644),
        ("server.key", server.key_pem.as_bytes(), 0o600),
        ("ca.crt", server.ca_pem.as_bytes(), 0o644),
    ];
    if let Err(e) = autoprov_bundle::write_files(&files, &args.out, args.leaf.force) {
        let why = format!("not written to {}: {e}", args.out.display());
        let _ = pki.abandon(&server.serial, &why);
        return Err(e.into());
    }
    pki.activate_serial(&server.serial, false)?;
    outln!(
        "issued server certificate {}: serial {}, valid until {}",
        args.name,
        server.serial,
        server.not_after
    );
    outln!(
        "written to {} (server.crt, server.key, ca.crt)",
        args.out.display()
    );
    Ok(())
}

/// A `list` row as printed in JSON.
#[derive(Serialize)]
struct JsonRow<'a> {
    #[serde(flatten)]
    row: &'a CertRow,
    days_left: Option<i64>,
}

pub fn list(cli: &Cli, args: &ListArgs) -> Result<(), Error> {
    let pki = cli.open(false)?;
    let mut rows = pki.list()?;
    if let Some(within) = args.expiring_within {
        rows.retain(|r| {
            r.status == Status::Active
                && output::days_left_rfc3339(&r.not_after).is_some_and(|d| d <= within)
        });
    }
    if args.json {
        let json: Vec<JsonRow> = rows
            .iter()
            .map(|row| JsonRow {
                row,
                days_left: output::days_left_rfc3339(&row.not_after),
            })
            .collect();
        let text = serde_json::to_string_pretty(&json)
            .map_err(|e| Error::Invalid(format!("JSON output: {e}")))?;
        output::emit(&format!("{text}\n"));
        return Ok(());
    }
    use std::fmt::Write;
    let mut text = String::new();
    let width = rows.iter().map(|r| r.id.len()).max().unwrap_or(2).max(2);
    let _ = writeln!(
        text,
        "{:<width$}  {:<6}  {:<32}  {:<10}  {:<20}  DAYS LEFT",
        "ID", "KIND", "SERIAL", "STATUS", "NOT AFTER"
    );
    for r in &rows {
        let kind = match r.kind {
            Kind::Device => "device",
            Kind::Server => "server",
        };
        let days = output::days_left_rfc3339(&r.not_after)
            .map(|d| d.to_string())
            .unwrap_or_default();
        let _ = writeln!(
            text,
            "{:<width$}  {:<6}  {:<32}  {:<10}  {:<20}  {days}",
            r.id,
            kind,
            r.serial,
            r.status.name(),
            r.not_after
        );
    }
    let pending = rows.iter().filter(|r| r.status == Status::Pending).count();
    if pending > 0 {
        let _ = writeln!(
            text,
            "\n{pending} pending: an issue, rotate or flash was interrupted before its bundle was confirmed written. Issuing that device again revokes the pending certificate; or revoke it now with `autoprov revoke ID --serial SERIAL`."
        );
    }
    output::emit(&text);
    Ok(())
}

pub fn revoke(cli: &Cli, args: &RevokeArgs) -> Result<(), Error> {
    let mut pki = cli.open(true)?;
    let (rows, crl) = pki.revoke(&args.device_id, args.serial.as_deref(), &args.reason)?;
    let id = &args.device_id;
    if rows.is_empty() {
        outln!("{id}: nothing to revoke, every certificate is already revoked");
    }
    let revoked_dir = cli.pki_dir.join("revoked");
    for r in &rows {
        outln!(
            "revoked {id} serial {} (was {}, reason {})",
            r.serial,
            r.status.name(),
            args.reason
        );
        outln!("  AWS certificate id: {}", r.fingerprint);
        outln!(
            "  AWS:   aws iot update-certificate --certificate-id {} --new-status REVOKED",
            r.fingerprint
        );
        // Azure needs the certificate itself to block one device of a group enrollment.
        if let Some(der) = pki.inventory().certificate_der(&r.serial)? {
            let pem = pem_cert(&der);
            std::fs::create_dir_all(&revoked_dir).map_err(fsutil::at(&revoked_dir))?;
            let path = revoked_dir.join(format!("{id}-{}.crt", r.serial));
            fsutil::write_replace(&path, pem.as_bytes(), 0o644)?;
            outln!(
                "  Azure: az iot dps enrollment create --dps-name DPS --resource-group RG --enrollment-id {id} --attestation-type x509 --certificate-path {} --provisioning-status disabled",
                path.display()
            );
        }
    }
    if !rows.is_empty() {
        outln!(
            "  Azure: az iot hub device-identity update --hub-name HUB --device-id {id} --set status=disabled"
        );
    }
    outln!(
        "{} regenerated: {} revoked certificate(s), CRL number {}, next update {}",
        cli.pki_dir.join(crate::CRL).display(),
        crl.entries,
        crl.number,
        crl.next_update
    );
    Ok(())
}

fn pem_cert(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der))
}

pub fn crl(cli: &Cli, args: &CrlArgs) -> Result<(), Error> {
    let mut pki = cli.open(true)?;
    let crl = pki.write_crl(args.next_update_days)?;
    outln!(
        "{} regenerated: {} revoked certificate(s), CRL number {}, next update {}",
        cli.pki_dir.join(crate::CRL).display(),
        crl.entries,
        crl.number,
        crl.next_update
    );
    if let Some(out) = &args.out {
        fsutil::write_replace(out, crl.pem.as_bytes(), 0o644)?;
        outln!("copied to {}", out.display());
    }
    Ok(())
}
