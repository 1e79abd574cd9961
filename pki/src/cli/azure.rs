//! `autoprov azure setup`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::Cli;
use super::aws::list_files;
use crate::Error;
use crate::cli::output::outln;
use crate::cloud::azure::{self, AzureOptions, Verification};
use crate::cloud::write_setup;

/// `autoprov azure …`
#[derive(Debug, Subcommand)]
pub enum AzureCommand {
    /// Write the az CLI calls that enroll the fleet CA in a Device Provisioning Service.
    #[command(after_help = "Examples:
  autoprov azure setup --dps my-dps --resource-group my-rg --hub my-hub --out azure
  autoprov azure setup --dps my-dps --resource-group my-rg --verify proof-of-possession --out azure

Writes ca-certificate.pem (the CA that signs devices) and setup.sh: the azure-iot extension, the
hub linked to the DPS (with --hub), the CA uploaded and verified, an X.509 enrollment group on it,
and the ID scope printed for the agent's [azure] section. Nothing in it is secret. Read setup.sh,
then run it after `az login`. autoprov itself never calls Azure.")]
    Setup(SetupArgs),
}

/// How DPS verifies the CA.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum VerifyArg {
    /// Mark it verified as it is uploaded.
    Upload,
    /// Prove possession: setup.sh signs DPS's verification code with `autoprov ca verification-cert`.
    ProofOfPossession,
}

/// `azure setup` options.
#[derive(Debug, Args)]
pub struct SetupArgs {
    /// The Device Provisioning Service instance.
    #[arg(long, value_name = "NAME")]
    pub dps: String,
    /// Its resource group.
    #[arg(long, value_name = "RG")]
    pub resource_group: String,
    /// The IoT hub to link and assign devices to (default: the hubs already linked).
    #[arg(long, value_name = "NAME")]
    pub hub: Option<String>,
    /// The enrollment group's id.
    #[arg(long, value_name = "ID", default_value = "autoprov")]
    pub enrollment_id: String,
    /// How DPS verifies the CA.
    #[arg(long, value_enum, default_value = "upload")]
    pub verify: VerifyArg,
    /// Directory to write the files into (must not exist or be empty, unless --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace a non-empty --out directory.
    #[arg(long)]
    pub force: bool,
}

pub fn run(cli: &Cli, cmd: &AzureCommand) -> Result<(), Error> {
    match cmd {
        AzureCommand::Setup(args) => setup(cli, args),
    }
}

fn setup(cli: &Cli, args: &SetupArgs) -> Result<(), Error> {
    autoprov_bundle::check_target(&args.out, args.force).map_err(crate::cloud::CloudError::Out)?;
    let mut opts = AzureOptions::new(&args.dps, &args.resource_group);
    opts.hub = args.hub.clone();
    opts.enrollment_id = args.enrollment_id.clone();
    opts.verification = match args.verify {
        VerifyArg::Upload => Verification::OnUpload,
        VerifyArg::ProofOfPossession => Verification::ProofOfPossession,
    };
    let pki = cli.open(false)?;
    let setup = azure::setup(&pki, &opts)?;
    write_setup(&setup.files, &args.out, args.force)?;
    outln!(
        "wrote the Azure DPS setup for {} to {}",
        setup.ca_subject,
        args.out.display()
    );
    outln!(
        "  CA certificate {} in DPS {} (SHA-256 {})",
        setup.certificate_name,
        opts.dps,
        setup.ca_fingerprint
    );
    outln!(
        "  enrollment group {} -> {}",
        opts.enrollment_id,
        opts.hub
            .as_deref()
            .map(|h| format!("{h}.azure-devices.net"))
            .unwrap_or_else(|| "the DPS's linked hubs".into())
    );
    list_files(&setup.files);
    outln!(
        "Next: read {}/setup.sh, then run it after `az login`; it prints the ID scope.",
        args.out.display()
    );
    Ok(())
}
