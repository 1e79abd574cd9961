//! `autoprov ca init | show | verification-cert`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::{Cli, output, passphrase};
use crate::ca::{CaCert, InitOptions};
use crate::cli::output::{out, outln};
use crate::{Error, InitOutcome, KeyType, Pki, Signer, fsutil, profile};

/// `autoprov ca …`
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create the root CA and an issuing CA (changes nothing if a CA exists).
    #[command(after_help = "Examples:
  autoprov ca init --name \"Acme Sensors\"
  AUTOPROV_CA_PASSPHRASE=... autoprov ca init --encrypt --key-type ecdsa-p384
  autoprov --pki-dir lab-pki ca init --single-tier

Writes root.crt, root.key, issuing.crt, issuing.key (keys 0600) and inventory.db. Back the
directory up: losing root.key means re-flashing the whole fleet.")]
    Init(InitArgs),
    /// Show each CA certificate: subject, SHA-256 fingerprint, validity, key type.
    #[command(after_help = "Example:
  autoprov ca show")]
    Show,
    /// Make a proof-of-possession certificate (CN = the code AWS or Azure gives you).
    #[command(after_help = "Examples:
  autoprov ca verification-cert --code $(aws iot get-registration-code --query registrationCode --output text) --out verification.crt
  autoprov ca verification-cert --code 1A2B3C... --signer root --out azure-verify.crt

AWS (register-ca-certificate, DEFAULT mode) wants it signed by the CA you register, usually the
issuing CA; Azure DPS wants it signed by the certificate you uploaded.")]
    VerificationCert(VerificationArgs),
}

/// `ca init` options.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Organisation name in the CA subjects.
    #[arg(long, default_value = "autoprov")]
    pub name: String,
    /// Key type of the CA keys.
    #[arg(long, default_value = "ecdsa-p256", value_parser = parse_key_type)]
    pub key_type: KeyType,
    /// No issuing CA: the root signs devices itself.
    #[arg(long)]
    pub single_tier: bool,
    /// Encrypt the CA keys with a passphrase (prompt, or AUTOPROV_CA_PASSPHRASE).
    #[arg(long)]
    pub encrypt: bool,
    /// Root validity in days.
    #[arg(long, default_value_t = profile::ROOT_DAYS)]
    pub root_days: u32,
    /// Issuing CA validity in days.
    #[arg(long, default_value_t = profile::ISSUING_DAYS)]
    pub issuing_days: u32,
}

/// Which CA signs.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SignerArg {
    /// The root CA.
    Root,
    /// The issuing CA (the root when single-tier).
    Issuing,
}

/// `ca verification-cert` options.
#[derive(Debug, Args)]
pub struct VerificationArgs {
    /// The registration (AWS) or verification (Azure) code.
    #[arg(long)]
    pub code: String,
    /// Which CA signs it.
    #[arg(long, value_enum, default_value = "issuing")]
    pub signer: SignerArg,
    /// Write it here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Parses a key type for clap.
pub fn parse_key_type(s: &str) -> Result<KeyType, String> {
    s.parse().map_err(|e: crate::keys::KeyError| e.to_string())
}

pub fn run(cli: &Cli, cmd: &CaCommand) -> Result<(), Error> {
    match cmd {
        CaCommand::Init(args) => init(cli, args),
        CaCommand::Show => show(cli),
        CaCommand::VerificationCert(args) => verification(cli, args),
    }
}

fn init(cli: &Cli, args: &InitArgs) -> Result<(), Error> {
    let dir = &cli.pki_dir;
    // Look before asking for a passphrase: an existing CA is left alone without questions.
    let existing = crate::ca::layout(dir)? != crate::ca::Layout::Empty;
    let encrypt = if args.encrypt && !existing {
        Some(passphrase::get(dir, true)?)
    } else {
        None
    };
    let opts = InitOptions {
        name: args.name.clone(),
        key_type: args.key_type,
        single_tier: args.single_tier,
        encrypt,
        root_days: args.root_days,
        issuing_days: args.issuing_days,
    };
    let outcome = Pki::init(dir, &opts)?;
    let pki = Pki::open(dir, None)?;
    let ca = pki.ca();
    match outcome {
        InitOutcome::AlreadyInitialised => {
            outln!(
                "{} already holds a CA (already initialised); nothing was changed.",
                dir.display()
            );
            print_cert("root", ca.root());
            if let Some(issuing) = ca.issuing() {
                print_cert("issuing", issuing);
            }
            return Ok(());
        }
        InitOutcome::InventoryRecreated => {
            outln!(
                "{} already holds a CA, but {} was missing: created an empty inventory (certificates issued before are not listed).",
                dir.display(),
                crate::INVENTORY
            );
            return Ok(());
        }
        InitOutcome::Created => {}
    }
    let tiers = if ca.issuing().is_some() {
        "root + issuing CA"
    } else {
        "single tier: the root signs devices"
    };
    outln!(
        "created the CA in {} ({}, {tiers})",
        dir.display(),
        args.key_type
    );
    print_cert("root", ca.root());
    if let Some(issuing) = ca.issuing() {
        print_cert("issuing", issuing);
    }
    let keys = if ca.issuing().is_some() {
        "root.key and issuing.key"
    } else {
        "root.key"
    };
    let enc = if args.encrypt {
        "encrypted with your passphrase"
    } else {
        "not encrypted"
    };
    outln!("keys: {keys} (mode 0600, {enc})");
    outln!(
        "Back up {} offline now: without root.key no new device can join this fleet.",
        dir.display()
    );
    Ok(())
}

fn print_cert(role: &str, c: &CaCert) {
    outln!("  {role:<8} {}", c.path.display());
    outln!("           subject     {}", c.subject);
    outln!("           sha256      {}", c.fingerprint);
    outln!(
        "           valid       {} .. {} ({} days left)",
        profile::rfc3339(c.validity.not_before),
        profile::rfc3339(c.validity.not_after),
        output::days_left(c.validity.not_after)
    );
    outln!("           key         {}", c.key_type);
}

fn show(cli: &Cli) -> Result<(), Error> {
    let pki = cli.open(false)?;
    let ca = pki.ca();
    print_cert("root", ca.root());
    match ca.issuing() {
        Some(issuing) => print_cert("issuing", issuing),
        None => outln!("  (single tier: the root signs device certificates)"),
    }
    Ok(())
}

fn verification(cli: &Cli, args: &VerificationArgs) -> Result<(), Error> {
    let pki = cli.open(true)?;
    let signer = match args.signer {
        SignerArg::Root => Signer::Root,
        SignerArg::Issuing => Signer::Issuing,
    };
    let pem = pki.verification_cert(&args.code, signer)?;
    match &args.out {
        Some(path) => {
            fsutil::write_replace(path, pem.as_bytes(), 0o644)?;
            eprintln!(
                "wrote {} (CN = {}, signed by the {} CA)",
                path.display(),
                args.code,
                match signer {
                    Signer::Root => "root",
                    Signer::Issuing => "issuing",
                }
            );
        }
        None => out!("{pem}"),
    }
    Ok(())
}
