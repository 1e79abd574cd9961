//! `autoprov aws setup`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::Cli;
use crate::Error;
use crate::cli::output::outln;
use crate::cloud::aws::{self, AwsOptions, CertificateMode};
use crate::cloud::{SetupFile, write_setup};

/// `autoprov aws …`
#[derive(Debug, Subcommand)]
pub enum AwsCommand {
    /// Write what AWS IoT Core needs for just-in-time provisioning of the fleet.
    #[command(after_help = "Examples:
  autoprov aws setup --out aws --account-id 123456789012 --region eu-west-1 \\
      --registration-code $(aws iot get-registration-code --query registrationCode --output text)
  autoprov aws setup --out aws --role-arn arn:aws:iam::123456789012:role/my-jitp-role --mode sni-only

Writes ca-certificate.pem (the CA that signs devices), verification-certificate.pem (DEFAULT mode
with --registration-code), jitp-template.json, registration-config.json, device-policy.json,
jitp-role-trust.json, setup.sh (the aws CLI calls, in order) and cloudformation.yaml (the same as
one stack). Nothing in it is secret. Read setup.sh, then run it with your AWS credentials; it
prints the endpoint for the agent's [aws] section. autoprov itself never calls AWS.")]
    Setup(SetupArgs),
}

/// How the CA is registered.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// Prove ownership with a verification certificate (CN = the account's registration code).
    Default,
    /// No proof; devices must send SNI (rustls always does). Several accounts may register the CA.
    SniOnly,
}

/// `aws setup` options.
#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Directory to write the files into (must not exist or be empty, unless --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Your AWS account id: setup.sh creates the role autoprov-jitp that JITP assumes.
    #[arg(long, value_name = "ID", conflicts_with = "role_arn")]
    pub account_id: Option<String>,
    /// An existing role for JITP (trusting iot.amazonaws.com, with AWSIoTThingsRegistration).
    #[arg(long, value_name = "ARN")]
    pub role_arn: Option<String>,
    /// The region; default: the aws CLI's, and the policy matches any region.
    #[arg(long)]
    pub region: Option<String>,
    /// Name of the device policy the template attaches.
    #[arg(long, value_name = "N", default_value = "autoprov-device")]
    pub policy_name: String,
    /// First topic level devices may publish under: <prefix>/<device id>/…
    #[arg(long, value_name = "PREFIX", default_value = "dt")]
    pub topic_prefix: String,
    /// CA registration mode.
    #[arg(long, value_enum, default_value = "default")]
    pub mode: ModeArg,
    /// `aws iot get-registration-code`: make the verification certificate now (DEFAULT mode);
    /// without it setup.sh makes it with `autoprov ca verification-cert`.
    #[arg(long, value_name = "CODE")]
    pub registration_code: Option<String>,
    /// Replace a non-empty --out directory.
    #[arg(long)]
    pub force: bool,
}

pub fn run(cli: &Cli, cmd: &AwsCommand) -> Result<(), Error> {
    match cmd {
        AwsCommand::Setup(args) => setup(cli, args),
    }
}

fn setup(cli: &Cli, args: &SetupArgs) -> Result<(), Error> {
    autoprov_bundle::check_target(&args.out, args.force).map_err(crate::cloud::CloudError::Out)?;
    let opts = AwsOptions {
        role_arn: args.role_arn.clone(),
        account_id: args.account_id.clone(),
        region: args.region.clone(),
        policy_name: args.policy_name.clone(),
        topic_prefix: args.topic_prefix.clone(),
        mode: match args.mode {
            ModeArg::Default => CertificateMode::Default,
            ModeArg::SniOnly => CertificateMode::SniOnly,
        },
        registration_code: args.registration_code.clone(),
    };
    // Signing is needed only for the verification certificate made now.
    let pki = cli.open(opts.registration_code.is_some())?;
    let setup = aws::setup(&pki, &opts)?;
    write_setup(&setup.files, &args.out, args.force)?;
    outln!(
        "wrote the AWS IoT Core JITP setup for {} to {}",
        setup.ca_subject,
        args.out.display()
    );
    outln!(
        "  CA certificate id (SHA-256) {} ({} mode)",
        setup.ca_fingerprint,
        opts.mode.as_aws()
    );
    outln!(
        "  JITP role  {}{}",
        setup.role_arn,
        if setup.creates_role {
            " (created by setup.sh)"
        } else {
            ""
        }
    );
    outln!(
        "  policy     {}: connect as its own thing name, publish to {}/<device id>/*",
        opts.policy_name,
        opts.topic_prefix
    );
    list_files(&setup.files);
    outln!(
        "Next: read {0}/setup.sh, then run it (or deploy {0}/cloudformation.yaml).",
        args.out.display()
    );
    Ok(())
}

/// Prints the files written, one per line.
pub(super) fn list_files(files: &[SetupFile]) {
    for f in files {
        outln!("  {}", f.name);
    }
}
