//! The `autoprov` command line: argument parsing (clap) and one module per command family.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error (clap's own usage
//! errors exit 2 as well). Errors are printed as `error: …` naming the file, field or device.

mod aws;
mod azure;
mod ca;
mod certs;
mod demo;
mod flash;
mod output;
mod passphrase;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::{Error, Passphrase, Pki};

/// Command-line interface.
#[derive(Debug, Parser)]
#[command(
    name = "autoprov",
    version,
    about = "The fleet's CA: issue, rotate and revoke device certificates, keep the inventory",
    after_help = "Examples:
  autoprov ca init --name \"Acme Sensors\"
  autoprov issue sensor-007 --out bundles/sensor-007
  autoprov list --expiring-within 30
  autoprov rotate sensor-007 --out bundles/sensor-007-new --revoke-previous
  autoprov revoke sensor-007 --reason key-compromise
  autoprov aws setup --out aws --account-id 123456789012
  autoprov azure setup --dps my-dps --resource-group my-rg --hub my-hub --out azure"
)]
pub struct Cli {
    /// The PKI directory: CA files, inventory.db, crl.pem.
    #[arg(long, global = true, env = "AUTOPROV_PKI_DIR", default_value = "pki")]
    pub pki_dir: PathBuf,
    /// Seconds to wait when another autoprov process holds the inventory.
    #[arg(long, global = true, default_value_t = 10, value_name = "SECS")]
    pub lock_timeout: u64,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The certificate authority: create it, show it, prove possession of it.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Issue a device certificate and write its bundle directory.
    #[command(after_help = "Examples:
  autoprov issue sensor-007 --out bundles/sensor-007
  autoprov issue sensor-008 --out bundles/sensor-008 --days 365 --key-type ecdsa-p384

The bundle holds manifest.toml, device.crt (leaf then issuing CA), device.key (0600), ca.crt
and device.toml; it is written to a temporary directory and renamed, so it is whole or absent.")]
    Issue(certs::IssueArgs),
    /// Issue a TLS server certificate for a self-hosted broker (e.g. Mosquitto).
    #[command(after_help = "Examples:
  autoprov issue-server broker --out broker-tls --dns mqtt.example.net --ip 192.0.2.10
  autoprov issue-server localhost --out /etc/mosquitto/certs --dns localhost --ip 127.0.0.1 --force

Writes server.crt (leaf then issuing CA), server.key (0600) and ca.crt (the fleet root).")]
    IssueServer(certs::IssueServerArgs),
    /// List every certificate in the inventory.
    #[command(after_help = "Examples:
  autoprov list
  autoprov list --expiring-within 30
  autoprov list --json | jq '.[] | select(.status == \"active\")'")]
    List(certs::ListArgs),
    /// Replace a device's certificate with a new key and certificate.
    #[command(after_help = "Examples:
  autoprov rotate sensor-007 --out bundles/sensor-007-2026
  autoprov rotate sensor-007 --out bundles/sensor-007-2026 --revoke-previous

Without --revoke-previous the old certificate is marked superseded and keeps working until the
card is re-flashed; with it, the old certificate is revoked and crl.pem regenerated.")]
    Rotate(certs::RotateArgs),
    /// Revoke a device's certificates and regenerate crl.pem.
    #[command(after_help = "Examples:
  autoprov revoke sensor-007 --reason key-compromise
  autoprov revoke sensor-007 --serial 4f2a0b... --reason superseded

Prints the AWS certificate id and the aws/az commands that disable the certificate or device in
the cloud; autoprov does not call the clouds itself.")]
    Revoke(certs::RevokeArgs),
    /// Regenerate the CRL (crl.pem), e.g. before its next-update date.
    #[command(after_help = "Examples:
  autoprov crl
  autoprov crl --out /etc/mosquitto/crl.pem --next-update-days 7")]
    Crl(certs::CrlArgs),
    /// AWS IoT Core: just-in-time provisioning of the fleet (setup files and script).
    #[command(subcommand)]
    Aws(aws::AwsCommand),
    /// Azure IoT Hub: Device Provisioning Service enrollment of the fleet (setup script).
    #[command(subcommand)]
    Azure(azure::AzureCommand),
    /// Write the image to a card with a new device identity injected into its boot partition.
    #[command(after_help = "Examples:
  autoprov flash sensor-007 --image result/sd-image/nixos.img.zst --to /dev/sdb \\
      --wifi-ssid FactoryFloor --wifi-psk-file wifi.psk --set sensor.interval=30s
  autoprov flash sensor-008 --image nixos.img.zst --to /dev/sdb --dry-run
  autoprov flash sensor-007 --image new.img.zst --to /dev/sdb --replace --revoke-previous
  autoprov flash sensor-009 --image nixos.img.zst --to sensor-009.img      # an image file

The certificate and key are made in memory, injected into /autoprov/ of the FAT partition
labelled FIRMWARE (or bootfs), and the whole image is written in one pass, flushed, and read back
from the card (bypassing the page cache) to verify it. The key never touches this computer's disk.
The flash is recorded in the inventory; a flash that fails revokes its certificate.

Refused: a card that is mounted or has a mounted partition, the disk holding /, a disk the kernel
does not call removable (unless --force), a card smaller than the image. Writing to a block device
asks for confirmation unless --yes.

--reuse-cert writes the device's current certificate instead of a new one. Its key exists only on
the old card and in the bundle directory `autoprov issue --out` or `rotate --out` wrote, so that
directory is required (--bundle DIR); without it, flash a new certificate (--replace).")]
    Flash(flash::FlashArgs),
    /// Rewrite only /autoprov/ on a flashed card or image file (rotation without re-flashing).
    #[command(after_help = "Examples:
  autoprov inject sensor-007 --to /dev/sdb                   # new certificate, rotated in place
  autoprov inject sensor-007 --to /dev/sdb --revoke-previous
  autoprov rotate sensor-007 --out rotated/sensor-007 && \\
      autoprov inject sensor-007 --to /dev/sdb --reuse-cert --bundle rotated/sensor-007
  autoprov inject sensor-007 --to sensor-007.img --set sensor.interval=60s

Reads the boot partition, replaces /autoprov/ in memory, writes back only the blocks that
changed, flushes and verifies them; the root partition (spool, seq) is untouched. Without
--reuse-cert a new certificate is issued: the device's active one is superseded (or revoked with
--revoke-previous) once the card is verified.")]
    Inject(flash::InjectArgs),
    /// List flashes and injects recorded in the inventory.
    #[command(after_help = "Examples:
  autoprov flashes
  autoprov flashes sensor-007 --json")]
    Flashes(flash::FlashesArgs),
    /// The whole flow on this machine: CA, broker, devices, rogue card, rotation (no hardware,
    /// no cloud).
    #[command(after_help = "Examples:
  autoprov demo
  autoprov demo --devices 5 --duration 1m --keep demo-run

A temporary CA, an embedded MQTT broker with mutual TLS on 127.0.0.1, and N simulated devices
provisioned through real bundles and running the agent's own code; a card from another CA is
refused, one certificate is rotated and the old one revoked. Exit 0 when every check passed.")]
    Demo(demo::DemoArgs),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs one parsed command.
pub fn run(cli: &Cli) -> Result<(), Error> {
    match &cli.command {
        Command::Ca(cmd) => ca::run(cli, cmd),
        Command::Issue(args) => certs::issue(cli, args),
        Command::IssueServer(args) => certs::issue_server(cli, args),
        Command::List(args) => certs::list(cli, args),
        Command::Rotate(args) => certs::rotate(cli, args),
        Command::Revoke(args) => certs::revoke(cli, args),
        Command::Crl(args) => certs::crl(cli, args),
        Command::Aws(cmd) => aws::run(cli, cmd),
        Command::Azure(cmd) => azure::run(cli, cmd),
        Command::Flash(args) => flash::flash(cli, args),
        Command::Inject(args) => flash::inject(cli, args),
        Command::Flashes(args) => flash::flashes(cli, args),
        Command::Demo(args) => demo::demo(args),
    }
}

impl Cli {
    /// Opens the PKI, asking for the passphrase only if a CA key is encrypted and `signing`.
    pub(crate) fn open(&self, signing: bool) -> Result<Pki, Error> {
        let pass: Option<Passphrase> = if signing && crate::Ca::keys_encrypted(&self.pki_dir) {
            Some(passphrase::get(&self.pki_dir, false)?)
        } else {
            None
        };
        Pki::open_with(&self.pki_dir, pass, Duration::from_secs(self.lock_timeout))
    }
}
