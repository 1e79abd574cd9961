//! Azure IoT Hub Device Provisioning Service (DPS): an X.509 enrollment group on the fleet CA.
//!
//! The CA that signs devices (the issuing CA, or the root of a single-tier CA) is uploaded to the
//! DPS instance and verified, either on upload or by proof of possession (a certificate whose CN
//! is the verification code DPS hands out, signed by that CA: `autoprov ca verification-cert`).
//! An enrollment group on that certificate, linked to the hub, lets every device whose chain
//! leads to it register with its CN (the device id) as registration id and device id. Facts and
//! sources: PROTOCOLS.md, "Azure IoT Hub Device Provisioning Service"; learn.microsoft.com
//! `iot-dps/concepts-x509-attestation`, `iot-dps/how-to-verify-certificates`, the Azure CLI
//! references `az iot dps certificate`, `az iot dps linked-hub`, `az iot dps enrollment-group`.
//!
//! Files written: `ca-certificate.pem` (the CA to upload) and `setup.sh` (the `az` calls, which
//! end by printing the ID scope the agent's `[azure] id_scope` needs).

use std::path::Path;

use super::script::{Script, quote};
use super::{CloudError, SetupFile, absolute, check, name_like};
use crate::{Error, Pki};

/// The CA to upload.
pub const CA_FILE: &str = "ca-certificate.pem";
/// Where the proof-of-possession certificate is written when the script makes it.
pub const VERIFICATION_FILE: &str = "verification-certificate.pem";
/// The `az` CLI calls.
pub const SCRIPT_FILE: &str = "setup.sh";

/// How DPS learns that the operator holds the CA's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verification {
    /// The CA is marked verified as it is uploaded (`--verified true`).
    #[default]
    OnUpload,
    /// DPS issues a code; a certificate with that CN, signed by the CA, proves possession.
    ProofOfPossession,
}

/// What `autoprov azure setup` was asked for.
#[derive(Debug, Clone)]
pub struct AzureOptions {
    /// The DPS instance.
    pub dps: String,
    /// Its resource group.
    pub resource_group: String,
    /// The IoT hub devices are assigned to; linked to the DPS by the script. Without it the
    /// enrollment group uses the hubs already linked and the DPS allocation policy.
    pub hub: Option<String>,
    /// The enrollment group's id.
    pub enrollment_id: String,
    /// How the CA is verified.
    pub verification: Verification,
}

impl AzureOptions {
    /// Options with the defaults for everything but the DPS and its resource group.
    pub fn new(dps: &str, resource_group: &str) -> Self {
        AzureOptions {
            dps: dps.to_owned(),
            resource_group: resource_group.to_owned(),
            hub: None,
            enrollment_id: "autoprov".into(),
            verification: Verification::OnUpload,
        }
    }
}

/// What `azure setup` produced.
#[derive(Debug)]
pub struct AzureSetup {
    /// The files.
    pub files: Vec<SetupFile>,
    /// The name the CA certificate gets in DPS.
    pub certificate_name: String,
    /// The CA's SHA-256.
    pub ca_fingerprint: String,
    /// The CA's subject.
    pub ca_subject: String,
}

fn validate(opts: &AzureOptions) -> Result<(), CloudError> {
    check(
        "--dps",
        &opts.dps,
        |s| name_like(s, "-", 3, 64),
        "a DPS name is 3 to 64 letters, digits or '-'",
    )?;
    check(
        "--resource-group",
        &opts.resource_group,
        |s| name_like(s, "-_.()", 1, 90) && !s.ends_with('.'),
        "a resource group name is 1 to 90 letters, digits or -_.() and does not end with '.'",
    )?;
    if let Some(hub) = &opts.hub {
        check(
            "--hub",
            hub,
            |s| name_like(s, "-", 3, 50),
            "an IoT hub name is 3 to 50 letters, digits or '-' (the name, not the host name)",
        )?;
    }
    check(
        "--enrollment-id",
        &opts.enrollment_id,
        |s| name_like(s, "-._:", 1, 128) && s.chars().all(|c| !c.is_ascii_uppercase()),
        "an enrollment group id is 1 to 128 lower-case letters, digits or -._:",
    )?;
    Ok(())
}

/// Generates the Azure setup for the CA in `pki`.
pub fn setup(pki: &Pki, opts: &AzureOptions) -> Result<AzureSetup, Error> {
    validate(opts)?;
    let ca = pki.ca().signer();
    // Named after the CA, so that a later CA is uploaded beside it rather than over it.
    let certificate_name = format!("autoprov-{}", &ca.fingerprint[..12]);
    let script = setup_script(
        opts,
        &certificate_name,
        &ca.fingerprint,
        &ca.subject,
        pki.dir(),
    );
    Ok(AzureSetup {
        files: vec![
            SetupFile::data(CA_FILE, ca.pem.clone()),
            SetupFile::script(SCRIPT_FILE, script),
        ],
        certificate_name,
        ca_fingerprint: ca.fingerprint.clone(),
        ca_subject: ca.subject.clone(),
    })
}

fn setup_script(
    opts: &AzureOptions,
    certificate_name: &str,
    ca_fingerprint: &str,
    ca_subject: &str,
    pki_dir: &Path,
) -> String {
    let verified = match opts.verification {
        Verification::OnUpload => "verified on upload",
        Verification::ProofOfPossession => {
            "verified by proof of possession (autoprov ca verification-cert)"
        }
    };
    let hub_step = if opts.hub.is_some() {
        " the hub linked to the DPS,"
    } else {
        ""
    };
    let mut s = Script::new(&format!(
        "Azure IoT Hub Device Provisioning Service: X.509 enrollment group for the fleet CA\n  {ca_subject}\n  (SHA-256 {ca_fingerprint})\nWritten by `autoprov azure setup`. Read it before you run it: it only calls the az CLI (logged\nin with `az login`) on the files beside it, none of which is secret.\nRunning it again is safe: what exists is left as it is.\n\nSteps: the azure-iot CLI extension,{hub_step} the CA certificate\n({verified}), the enrollment group, then the ID scope for the agent's configuration."
    ));
    s.line(&format!("dps={}", quote(&opts.dps)))
        .line(&format!("rg={}", quote(&opts.resource_group)))
        .line(&format!("cert={}", quote(certificate_name)))
        .line(&format!("enrollment={}", quote(&opts.enrollment_id)));
    if let Some(hub) = &opts.hub {
        s.line(&format!("hub={}", quote(hub)));
    }

    s.step("the azure-iot extension of the az CLI (enrollment groups live there)");
    s.line("az extension add --upgrade --name azure-iot --only-show-errors");

    if opts.hub.is_some() {
        s.step("the IoT hub, linked to the DPS");
        s.line("if ! az iot dps linked-hub show --dps-name \"$dps\" --resource-group \"$rg\" --linked-hub \"$hub.azure-devices.net\" >/dev/null 2>&1; then")
            .line("  az iot dps linked-hub create --dps-name \"$dps\" --resource-group \"$rg\" --hub-name \"$hub\" >/dev/null")
            .line("fi");
    }

    s.step("the fleet CA certificate");
    s.line("if az iot dps certificate show --dps-name \"$dps\" --resource-group \"$rg\" --certificate-name \"$cert\" >/dev/null 2>&1; then")
        .line("  echo \"certificate $cert is already in $dps; left as it is\"")
        .line("else");
    match opts.verification {
        Verification::OnUpload => {
            s.line(&format!(
                "  az iot dps certificate create --dps-name \"$dps\" --resource-group \"$rg\" --certificate-name \"$cert\" --path {CA_FILE} --verified true >/dev/null"
            ));
        }
        Verification::ProofOfPossession => {
            s.line(&format!(
                "  etag=$(az iot dps certificate create --dps-name \"$dps\" --resource-group \"$rg\" --certificate-name \"$cert\" --path {CA_FILE} --query etag --output tsv)"
            ))
            .line("  out=$(az iot dps certificate generate-verification-code --dps-name \"$dps\" --resource-group \"$rg\" --certificate-name \"$cert\" --etag \"$etag\" --query '[properties.verificationCode, etag]' --output tsv)")
            .line("  read -r -d '' code etag <<<\"$out\" || true")
            .line("  # Signed by the fleet CA's key, which stays in the PKI directory (AUTOPROV overrides the binary).")
            .line(&format!(
                "  \"${{AUTOPROV:-autoprov}}\" --pki-dir {} ca verification-cert --code \"$code\" --signer issuing --out {VERIFICATION_FILE}",
                quote(&absolute(pki_dir).to_string_lossy())
            ))
            .line(&format!(
                "  az iot dps certificate verify --dps-name \"$dps\" --resource-group \"$rg\" --certificate-name \"$cert\" --path {VERIFICATION_FILE} --etag \"$etag\" >/dev/null"
            ));
        }
    }
    s.line("fi");

    s.step(
        "the enrollment group: every device whose chain leads to the CA, registered under its CN",
    );
    let hubs = if opts.hub.is_some() {
        " --iot-hubs \"$hub.azure-devices.net\""
    } else {
        ""
    };
    s.line("if az iot dps enrollment-group show --dps-name \"$dps\" --resource-group \"$rg\" --enrollment-id \"$enrollment\" >/dev/null 2>&1; then")
        .line("  echo \"enrollment group $enrollment exists; left as it is\"")
        .line("else")
        .line(&format!(
            "  az iot dps enrollment-group create --dps-name \"$dps\" --resource-group \"$rg\" --enrollment-id \"$enrollment\" --ca-name \"$cert\"{hubs} --provisioning-status enabled >/dev/null"
        ))
        .line("fi");

    s.step("the ID scope devices register under");
    s.line("scope=$(az iot dps show --name \"$dps\" --resource-group \"$rg\" --query properties.idScope --output tsv)")
        .line("echo")
        .line("echo \"ID scope: $scope\"")
        .line("echo \"Done. Put this in the fleet's agent configuration (fleet.nix settings, or autoprov flash --set):\"")
        .line("echo '  [cloud]'")
        .line("echo '  profile = \"azure\"'")
        .line("echo '  [azure]'")
        .line("echo \"  id_scope = \\\"$scope\\\"\"")
        .line("echo \"Each device registers with DPS on first boot as its device id, then talks to the hub DPS assigns.\"");
    s.finish()
}
