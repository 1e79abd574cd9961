//! AWS IoT Core just-in-time provisioning (JITP) for the fleet CA.
//!
//! The CA that signs devices (the issuing CA, or the root of a single-tier CA) is registered with
//! auto-registration and a provisioning template: when a device first connects with a
//! certificate it signed, AWS IoT creates the thing (named after the certificate CN, which is the
//! device id), activates the certificate and attaches one shared, least-privilege policy, then
//! drops that first connection; the agent reconnects. Facts and sources: PROTOCOLS.md, "AWS IoT
//! Core"; AWS IoT developer guide pages `jit-provisioning`, `provision-template`,
//! `register-CA-cert`, `thing-policy-variables`; CloudFormation `AWS::IoT::CACertificate`,
//! `AWS::IoT::Policy`, `AWS::IAM::Role`.
//!
//! Files written (all generated from the types below, nothing secret):
//!
//! | file | what |
//! |------|------|
//! | `ca-certificate.pem` | the CA to register |
//! | `verification-certificate.pem` | DEFAULT mode with `--registration-code`: CN = the code, signed by that CA |
//! | `jitp-template.json` | the provisioning template |
//! | `registration-config.json` | `{"templateBody": <the template as an escaped string>, "roleArn": …}` |
//! | `device-policy.json` | connect only as its own thing name, publish only under `<prefix>/<thing name>/` |
//! | `jitp-role-trust.json` | the role AWS IoT assumes to provision (with `AWSIoTThingsRegistration`) |
//! | `setup.sh` | the `aws` CLI calls in order |
//! | `cloudformation.yaml` | the same as one stack |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::script::{Script, quote};
use super::{CloudError, SetupFile, absolute, check, json, name_like, yaml};
use crate::{Error, Pki, Signer};

/// The CA to register.
pub const CA_FILE: &str = "ca-certificate.pem";
/// The proof-of-possession certificate (DEFAULT mode).
pub const VERIFICATION_FILE: &str = "verification-certificate.pem";
/// The provisioning template.
pub const TEMPLATE_FILE: &str = "jitp-template.json";
/// `register-ca-certificate --registration-config`.
pub const REGISTRATION_CONFIG_FILE: &str = "registration-config.json";
/// The device policy.
pub const POLICY_FILE: &str = "device-policy.json";
/// The JITP role's trust policy.
pub const ROLE_TRUST_FILE: &str = "jitp-role-trust.json";
/// The `aws` CLI calls.
pub const SCRIPT_FILE: &str = "setup.sh";
/// The CloudFormation stack.
pub const CLOUDFORMATION_FILE: &str = "cloudformation.yaml";

/// The role created when `--role-arn` is not given.
pub const DEFAULT_ROLE_NAME: &str = "autoprov-jitp";
/// The AWS managed policy a JITP role needs (`jit-provisioning`).
pub const THINGS_REGISTRATION_POLICY: &str = "service-role/AWSIoTThingsRegistration";
/// The thing policy variable that scopes every resource of the device policy. It resolves only
/// when the MQTT client id equals the thing name, which the agent guarantees (both are the
/// device id).
pub const THING_NAME: &str = "${iot:Connection.Thing.ThingName}";
/// Template parameter: the certificate subject's CN (the device id).
pub const COMMON_NAME: &str = "AWS::IoT::Certificate::CommonName";
/// Template parameter: the certificate id AWS assigns.
pub const CERTIFICATE_ID: &str = "AWS::IoT::Certificate::Id";
/// Every parameter JITP can fill in: the certificate subject's fields and the certificate id.
/// A declared parameter the certificate lacks fails provisioning, so the template declares only
/// the two every autoprov leaf has.
pub const JITP_PARAMETERS: [&str; 8] = [
    "AWS::IoT::Certificate::Country",
    "AWS::IoT::Certificate::Organization",
    "AWS::IoT::Certificate::OrganizationalUnit",
    "AWS::IoT::Certificate::DistinguishedNameQualifier",
    "AWS::IoT::Certificate::StateName",
    COMMON_NAME,
    "AWS::IoT::Certificate::SerialNumber",
    CERTIFICATE_ID,
];

/// How the CA is registered (`register-ca-certificate --certificate-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CertificateMode {
    /// Ownership proven with a verification certificate; devices may present the CA in their chain.
    #[default]
    Default,
    /// No proof of ownership (several accounts may register the CA); devices must send SNI.
    SniOnly,
}

impl CertificateMode {
    /// The value AWS uses.
    pub fn as_aws(self) -> &'static str {
        match self {
            Self::Default => "DEFAULT",
            Self::SniOnly => "SNI_ONLY",
        }
    }
}

/// What `autoprov aws setup` was asked for.
#[derive(Debug, Clone)]
pub struct AwsOptions {
    /// An existing role for JITP; without it the setup creates [`DEFAULT_ROLE_NAME`].
    pub role_arn: Option<String>,
    /// The AWS account (12 digits); needed when `role_arn` is not given.
    pub account_id: Option<String>,
    /// The region the fleet lives in; `None` leaves it to the CLI's configuration and the policy
    /// matches any region.
    pub region: Option<String>,
    /// The device policy's name.
    pub policy_name: String,
    /// The first topic level devices publish under (`<prefix>/<device id>/…`).
    pub topic_prefix: String,
    /// DEFAULT or SNI_ONLY.
    pub mode: CertificateMode,
    /// The code of `aws iot get-registration-code` (DEFAULT mode): the verification certificate
    /// is made now. Without it, `setup.sh` fetches the code and calls `autoprov ca verification-cert`.
    pub registration_code: Option<String>,
}

impl Default for AwsOptions {
    fn default() -> Self {
        AwsOptions {
            role_arn: None,
            account_id: None,
            region: None,
            policy_name: "autoprov-device".into(),
            topic_prefix: "dt".into(),
            mode: CertificateMode::Default,
            registration_code: None,
        }
    }
}

/// A provisioning template parameter declaration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parameter {
    /// Always `String` for JITP parameters.
    #[serde(rename = "Type")]
    pub kind: String,
}

/// `{"Ref": "<parameter>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    /// The parameter referred to.
    #[serde(rename = "Ref")]
    pub name: String,
}

impl Ref {
    fn to(name: &str) -> Self {
        Ref {
            name: name.to_owned(),
        }
    }
}

/// A resource of a provisioning template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Type", content = "Properties")]
pub enum TemplateResource {
    /// The thing, named after the certificate CN.
    #[serde(rename = "AWS::IoT::Thing", rename_all = "PascalCase")]
    Thing {
        /// `{"Ref": "AWS::IoT::Certificate::CommonName"}`.
        thing_name: Ref,
    },
    /// The device's certificate, activated.
    #[serde(rename = "AWS::IoT::Certificate", rename_all = "PascalCase")]
    Certificate {
        /// `{"Ref": "AWS::IoT::Certificate::Id"}`.
        certificate_id: Ref,
        /// `ACTIVE`.
        status: String,
    },
    /// An existing policy attached by name (one policy for the whole fleet, thanks to the
    /// thing-name policy variable).
    #[serde(rename = "AWS::IoT::Policy", rename_all = "PascalCase")]
    Policy {
        /// The device policy's name.
        policy_name: String,
    },
}

/// A JITP provisioning template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ProvisioningTemplate {
    /// Declared parameters.
    pub parameters: BTreeMap<String, Parameter>,
    /// Resources by logical name.
    pub resources: BTreeMap<String, TemplateResource>,
}

impl ProvisioningTemplate {
    /// Thing = CN, certificate ACTIVE, the named policy; declares exactly what it uses.
    pub fn jitp(policy_name: &str) -> Self {
        let string = || Parameter {
            kind: "String".into(),
        };
        ProvisioningTemplate {
            parameters: BTreeMap::from([
                (COMMON_NAME.to_owned(), string()),
                (CERTIFICATE_ID.to_owned(), string()),
            ]),
            resources: BTreeMap::from([
                (
                    "thing".to_owned(),
                    TemplateResource::Thing {
                        thing_name: Ref::to(COMMON_NAME),
                    },
                ),
                (
                    "certificate".to_owned(),
                    TemplateResource::Certificate {
                        certificate_id: Ref::to(CERTIFICATE_ID),
                        status: "ACTIVE".into(),
                    },
                ),
                (
                    "policy".to_owned(),
                    TemplateResource::Policy {
                        policy_name: policy_name.to_owned(),
                    },
                ),
            ]),
        }
    }
}

/// `registration-config.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistrationConfig {
    /// The provisioning template, serialised once, as a string.
    pub template_body: String,
    /// The role AWS IoT assumes to provision.
    pub role_arn: String,
}

/// An IAM or AWS IoT policy document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PolicyDocument {
    /// `2012-10-17`.
    pub version: String,
    /// The statements.
    pub statement: Vec<Statement>,
}

/// One statement. Resources and condition values are JSON values so that the CloudFormation
/// form can use intrinsic functions where the plain form has strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Statement {
    /// `Allow`.
    pub effect: String,
    /// Who may assume the role (trust policies only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<Value>,
    /// The actions.
    pub action: Vec<String>,
    /// The resources (not in trust policies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource: Vec<Value>,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Value>,
}

const POLICY_VERSION: &str = "2012-10-17";

/// How ARNs and the account are written: literally, or with CloudFormation pseudo parameters.
enum Arns<'a> {
    Literal {
        partition: &'a str,
        region: &'a str,
        account: &'a str,
    },
    CloudFormation,
}

impl Arns<'_> {
    /// The ARN of an AWS IoT resource such as `client/<name>`.
    fn iot(&self, resource: &str) -> Value {
        match self {
            Arns::Literal {
                partition,
                region,
                account,
            } => Value::String(format!("arn:{partition}:iot:{region}:{account}:{resource}")),
            // `${!x}` is how Fn::Sub writes a literal `${x}`: the policy variable must reach AWS IoT.
            Arns::CloudFormation => json!({"Fn::Sub": format!(
                "arn:${{AWS::Partition}}:iot:${{AWS::Region}}:${{AWS::AccountId}}:{}",
                resource.replace("${", "${!")
            )}),
        }
    }

    fn account(&self) -> Value {
        match self {
            Arns::Literal { account, .. } => Value::String((*account).to_owned()),
            Arns::CloudFormation => json!({"Ref": "AWS::AccountId"}),
        }
    }
}

/// The device policy: connect only with the client id of a thing the certificate is attached
/// to, as that thing; publish only under `<prefix>/<thing name>/`. Nothing else (the original
/// project allowed `iot:*` on `*`).
fn device_policy(arns: &Arns<'_>, topic_prefix: &str) -> PolicyDocument {
    PolicyDocument {
        version: POLICY_VERSION.into(),
        statement: vec![
            Statement {
                effect: "Allow".into(),
                principal: None,
                action: vec!["iot:Connect".into()],
                resource: vec![arns.iot(&format!("client/{THING_NAME}"))],
                condition: Some(json!({"Bool": {"iot:Connection.Thing.IsAttached": "true"}})),
            },
            Statement {
                effect: "Allow".into(),
                principal: None,
                action: vec!["iot:Publish".into()],
                resource: vec![arns.iot(&format!("topic/{topic_prefix}/{THING_NAME}/*"))],
                condition: None,
            },
        ],
    }
}

/// Trust policy of the JITP role: only AWS IoT, and only on behalf of this account.
fn role_trust(arns: &Arns<'_>) -> PolicyDocument {
    PolicyDocument {
        version: POLICY_VERSION.into(),
        statement: vec![Statement {
            effect: "Allow".into(),
            principal: Some(json!({"Service": "iot.amazonaws.com"})),
            action: vec!["sts:AssumeRole".into()],
            resource: Vec::new(),
            condition: Some(json!({"StringEquals": {"aws:SourceAccount": arns.account()}})),
        }],
    }
}

/// A CloudFormation template.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct CfnTemplate {
    #[serde(rename = "AWSTemplateFormatVersion")]
    format_version: &'static str,
    description: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    parameters: BTreeMap<&'static str, CfnParameter>,
    resources: BTreeMap<&'static str, CfnResource>,
    outputs: BTreeMap<&'static str, CfnOutput>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct CfnParameter {
    #[serde(rename = "Type")]
    kind: &'static str,
    description: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct CfnResource {
    #[serde(rename = "Type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    depends_on: Vec<&'static str>,
    properties: CfnProperties,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum CfnProperties {
    Role {
        #[serde(rename = "AssumeRolePolicyDocument")]
        trust: PolicyDocument,
        #[serde(rename = "ManagedPolicyArns")]
        managed: Vec<Value>,
    },
    Policy {
        #[serde(rename = "PolicyName")]
        name: String,
        #[serde(rename = "PolicyDocument")]
        document: PolicyDocument,
    },
    CaCertificate {
        #[serde(rename = "CACertificatePem")]
        pem: String,
        #[serde(rename = "CertificateMode")]
        mode: &'static str,
        #[serde(
            rename = "VerificationCertificatePem",
            skip_serializing_if = "Option::is_none"
        )]
        verification: Option<Value>,
        #[serde(rename = "Status")]
        status: &'static str,
        #[serde(rename = "AutoRegistrationStatus")]
        auto_registration: &'static str,
        #[serde(rename = "RegistrationConfig")]
        registration: CfnRegistrationConfig,
    },
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct CfnRegistrationConfig {
    template_body: String,
    role_arn: Value,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct CfnOutput {
    description: &'static str,
    value: Value,
}

/// What `aws setup` produced.
#[derive(Debug)]
pub struct AwsSetup {
    /// The files, in the order they are listed to the operator.
    pub files: Vec<SetupFile>,
    /// The registered CA's SHA-256, which is also its AWS certificate id.
    pub ca_fingerprint: String,
    /// The CA's subject.
    pub ca_subject: String,
    /// The role JITP assumes.
    pub role_arn: String,
    /// Whether `setup.sh` creates that role.
    pub creates_role: bool,
}

struct Account {
    partition: String,
    id: String,
    role_arn: String,
    creates_role: bool,
}

fn account(opts: &AwsOptions) -> Result<Account, CloudError> {
    match (&opts.role_arn, &opts.account_id) {
        (Some(_), Some(_)) => Err(CloudError::Usage(
            "give --role-arn or --account-id, not both (the role ARN names its account)".into(),
        )),
        (Some(arn), None) => {
            let parsed = parse_role_arn(arn).ok_or_else(|| CloudError::BadOption {
                flag: "--role-arn",
                value: arn.clone(),
                why: "expected arn:aws:iam::<12-digit account>:role/<name>, as `aws iam get-role --query Role.Arn` prints it".into(),
            })?;
            Ok(Account {
                partition: parsed.0,
                id: parsed.1,
                role_arn: arn.clone(),
                creates_role: false,
            })
        }
        (None, Some(id)) => {
            check(
                "--account-id",
                id,
                |s| s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()),
                "an AWS account id is 12 digits (`aws sts get-caller-identity --query Account`)",
            )?;
            Ok(Account {
                partition: "aws".into(),
                id: id.clone(),
                role_arn: format!("arn:aws:iam::{id}:role/{DEFAULT_ROLE_NAME}"),
                creates_role: true,
            })
        }
        (None, None) => Err(CloudError::Usage(
            "give --account-id ID (setup.sh then creates the role autoprov-jitp that JITP assumes) or --role-arn ARN of an existing role with AWSIoTThingsRegistration; `aws sts get-caller-identity --query Account --output text` prints the account id".into(),
        )),
    }
}

/// `(partition, account)` of `arn:<partition>:iam::<account>:role/<path/name>`.
fn parse_role_arn(arn: &str) -> Option<(String, String)> {
    let rest = arn.strip_prefix("arn:")?;
    let (partition, rest) = rest.split_once(':')?;
    let rest = rest.strip_prefix("iam::")?;
    let (account, rest) = rest.split_once(':')?;
    let name = rest.strip_prefix("role/")?;
    let ok = partition.starts_with("aws")
        && name_like(partition, "-", 3, 20)
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && name_like(name, "+=,.@_-/", 1, 512);
    ok.then(|| (partition.to_owned(), account.to_owned()))
}

fn validate(opts: &AwsOptions) -> Result<(), CloudError> {
    check(
        "--policy-name",
        &opts.policy_name,
        |s| name_like(s, "_+=,.@-", 1, 128),
        "AWS IoT policy names are 1 to 128 letters, digits or _+=,.@-",
    )?;
    check(
        "--topic-prefix",
        &opts.topic_prefix,
        |s| {
            s.split('/')
                .all(|level| name_like(level, "_-", 1, 64) && !level.starts_with('$'))
        },
        "one or more topic levels of letters, digits, '_' or '-', separated by '/' (no wildcards, no leading '$' or '/')",
    )?;
    if let Some(region) = &opts.region {
        check(
            "--region",
            region,
            |s| {
                name_like(s, "-", 6, 30)
                    && s.contains('-')
                    && s.ends_with(|c: char| c.is_ascii_digit())
            },
            "an AWS region such as eu-west-1",
        )?;
    }
    if opts.mode == CertificateMode::SniOnly && opts.registration_code.is_some() {
        return Err(CloudError::Usage(
            "--registration-code is for --mode default: SNI_ONLY registers the CA without a verification certificate".into(),
        ));
    }
    Ok(())
}

/// Generates every file of the AWS setup for the CA in `pki`.
pub fn setup(pki: &Pki, opts: &AwsOptions) -> Result<AwsSetup, Error> {
    validate(opts)?;
    let account = account(opts)?;
    let ca = pki.ca().signer();
    let verification = match &opts.registration_code {
        Some(code) => Some(pki.verification_cert(code, Signer::Issuing)?),
        None => None,
    };
    let region = opts.region.as_deref().unwrap_or("*");
    let literal = Arns::Literal {
        partition: &account.partition,
        region,
        account: &account.id,
    };
    let template = ProvisioningTemplate::jitp(&opts.policy_name);
    // Serialised once: the same string goes into registration-config.json and the stack.
    let template_body = serde_json::to_string(&template)
        .map_err(|e| CloudError::Serialise(TEMPLATE_FILE, e.to_string()))?;
    let registration = RegistrationConfig {
        template_body: template_body.clone(),
        role_arn: account.role_arn.clone(),
    };
    let cfn = cloudformation(
        opts,
        &ca.pem,
        verification.as_deref(),
        &template_body,
        &account,
    );
    let cfn_value = serde_json::to_value(&cfn)
        .map_err(|e| CloudError::Serialise(CLOUDFORMATION_FILE, e.to_string()))?;
    let script = setup_script(
        opts,
        &account,
        &ca.fingerprint,
        &ca.subject,
        pki.dir(),
        verification.is_some(),
    );

    let mut files = vec![SetupFile::data(CA_FILE, ca.pem.clone())];
    if let Some(v) = verification {
        files.push(SetupFile::data(VERIFICATION_FILE, v));
    }
    files.extend([
        SetupFile::data(TEMPLATE_FILE, json(TEMPLATE_FILE, &template)?),
        SetupFile::data(
            REGISTRATION_CONFIG_FILE,
            json(REGISTRATION_CONFIG_FILE, &registration)?,
        ),
        SetupFile::data(
            POLICY_FILE,
            json(POLICY_FILE, &device_policy(&literal, &opts.topic_prefix))?,
        ),
        SetupFile::data(
            ROLE_TRUST_FILE,
            json(ROLE_TRUST_FILE, &role_trust(&literal))?,
        ),
        SetupFile::data(CLOUDFORMATION_FILE, yaml::to_string(&cfn_value)),
        SetupFile::script(SCRIPT_FILE, script),
    ]);
    Ok(AwsSetup {
        files,
        ca_fingerprint: ca.fingerprint.clone(),
        ca_subject: ca.subject.clone(),
        role_arn: account.role_arn,
        creates_role: account.creates_role,
    })
}

fn cloudformation(
    opts: &AwsOptions,
    ca_pem: &str,
    verification: Option<&str>,
    template_body: &str,
    account: &Account,
) -> CfnTemplate {
    let cfn = Arns::CloudFormation;
    let mut parameters = BTreeMap::new();
    let verification = match (opts.mode, verification) {
        (CertificateMode::SniOnly, _) => None,
        (CertificateMode::Default, Some(pem)) => Some(Value::String(pem.to_owned())),
        (CertificateMode::Default, None) => {
            parameters.insert(
                "VerificationCertificatePem",
                CfnParameter {
                    kind: "String",
                    description: "PEM of `autoprov ca verification-cert --code $(aws iot get-registration-code --query registrationCode --output text)`",
                },
            );
            Some(json!({"Ref": "VerificationCertificatePem"}))
        }
    };
    let mut resources = BTreeMap::new();
    let role_arn = if account.creates_role {
        resources.insert(
            "JitpRole",
            CfnResource {
                kind: "AWS::IAM::Role",
                depends_on: Vec::new(),
                properties: CfnProperties::Role {
                    trust: role_trust(&cfn),
                    managed: vec![json!({"Fn::Sub": format!(
                        "arn:${{AWS::Partition}}:iam::aws:policy/{THINGS_REGISTRATION_POLICY}"
                    )})],
                },
            },
        );
        json!({"Fn::GetAtt": ["JitpRole", "Arn"]})
    } else {
        Value::String(account.role_arn.clone())
    };
    resources.insert(
        "DevicePolicy",
        CfnResource {
            kind: "AWS::IoT::Policy",
            depends_on: Vec::new(),
            properties: CfnProperties::Policy {
                name: opts.policy_name.clone(),
                document: device_policy(&cfn, &opts.topic_prefix),
            },
        },
    );
    resources.insert(
        "FleetCa",
        CfnResource {
            kind: "AWS::IoT::CACertificate",
            // The template attaches the policy by name: it must exist before a device connects.
            depends_on: vec!["DevicePolicy"],
            properties: CfnProperties::CaCertificate {
                pem: ca_pem.to_owned(),
                mode: opts.mode.as_aws(),
                verification,
                status: "ACTIVE",
                auto_registration: "ENABLE",
                registration: CfnRegistrationConfig {
                    template_body: template_body.to_owned(),
                    role_arn,
                },
            },
        },
    );
    CfnTemplate {
        format_version: "2010-09-09",
        description: format!(
            "autoprov: just-in-time provisioning for the fleet CA (policy {}, topics {}/<device id>/...)",
            opts.policy_name, opts.topic_prefix
        ),
        parameters,
        resources,
        outputs: BTreeMap::from([(
            "CaCertificateId",
            CfnOutput {
                description: "The registered CA's certificate id",
                value: json!({"Ref": "FleetCa"}),
            },
        )]),
    }
}

fn setup_script(
    opts: &AwsOptions,
    account: &Account,
    ca_fingerprint: &str,
    ca_subject: &str,
    pki_dir: &Path,
    have_verification: bool,
) -> String {
    let mode = opts.mode.as_aws();
    let pki_dir: PathBuf = absolute(pki_dir);
    let mut s = Script::new(&format!(
        "AWS IoT Core just-in-time provisioning for the fleet CA\n  {ca_subject}\n  (SHA-256 {ca_fingerprint}, also its AWS certificate id)\nWritten by `autoprov aws setup`. Read it before you run it: it only calls the aws CLI\n(with your credentials and region) on the files beside it, none of which is secret.\nRunning it again is safe: what exists is left as it is or updated.\n\nSteps: the JITP role, the device policy, {mode} registration of the CA with auto-registration\nand the provisioning template, then the ATS data endpoint for the agent's configuration."
    ));
    if let Some(region) = &opts.region {
        s.line(&format!("export AWS_REGION={}", quote(region)));
    }
    s.line(&format!("policy={}", quote(&opts.policy_name)));
    s.line(&format!("ca_id={ca_fingerprint}"));

    if account.creates_role {
        s.step(&format!(
            "the role AWS IoT assumes to provision devices ({DEFAULT_ROLE_NAME})"
        ));
        s.line(&format!(
            "if ! aws iam get-role --role-name {DEFAULT_ROLE_NAME} >/dev/null 2>&1; then"
        ))
        .line(&format!(
            "  aws iam create-role --role-name {DEFAULT_ROLE_NAME} --assume-role-policy-document file://{ROLE_TRUST_FILE} >/dev/null"
        ))
        .line("fi")
        .line(&format!(
            "aws iam attach-role-policy --role-name {DEFAULT_ROLE_NAME} --policy-arn arn:{}:iam::aws:policy/{THINGS_REGISTRATION_POLICY}",
            account.partition
        ));
    } else {
        s.comment(&format!(
            "The role {} is yours: it must trust iot.amazonaws.com ({ROLE_TRUST_FILE}) and have AWSIoTThingsRegistration.",
            account.role_arn
        ));
    }

    s.step("the device policy: connect as its own thing, publish under its own topics");
    s.line("if aws iot get-policy --policy-name \"$policy\" >/dev/null 2>&1; then")
        .line(&format!(
            "  echo \"policy $policy exists; left as it is (compare with {POLICY_FILE}; aws iot create-policy-version --set-as-default updates it)\""
        ))
        .line("else")
        .line(&format!(
            "  aws iot create-policy --policy-name \"$policy\" --policy-document file://{POLICY_FILE} >/dev/null"
        ))
        .line("fi");

    let verification_arg = match opts.mode {
        CertificateMode::Default => {
            s.step(
                "proof of possession: a certificate whose CN is this account's registration code",
            );
            s.line("code=$(aws iot get-registration-code --query registrationCode --output text)");
            if let (true, Some(code)) = (have_verification, &opts.registration_code) {
                s.line(&format!("if [[ \"$code\" != {} ]]; then", quote(code)))
                    .line(&format!(
                        "  echo \"{VERIFICATION_FILE} was made for registration code {code}, but this account's code is $code:\" >&2"
                    ))
                    .line("  echo \"run autoprov aws setup again with --registration-code $code, or delete it and rerun this script\" >&2")
                    .line("  exit 1")
                    .line("fi");
            } else {
                s.comment("Signed by the fleet CA's key, which stays in the PKI directory (AUTOPROV overrides the binary).")
                    .line(&format!(
                        "\"${{AUTOPROV:-autoprov}}\" --pki-dir {} ca verification-cert --code \"$code\" --signer issuing --out {VERIFICATION_FILE}",
                        quote(&pki_dir.to_string_lossy())
                    ));
            }
            format!(" --verification-cert file://{VERIFICATION_FILE}")
        }
        CertificateMode::SniOnly => format!(" --certificate-mode {mode}"),
    };

    s.step("the fleet CA: active, auto-registration on, the JITP template attached");
    s.comment("AWS identifies a CA certificate by the SHA-256 of its DER, as autoprov prints it.");
    s.line("if aws iot describe-ca-certificate --certificate-id \"$ca_id\" >/dev/null 2>&1; then")
        .line(&format!(
            "  aws iot update-ca-certificate --certificate-id \"$ca_id\" --new-status ACTIVE --new-auto-registration-status ENABLE --registration-config file://{REGISTRATION_CONFIG_FILE}"
        ))
        .line("else")
        .line(&format!(
            "  aws iot register-ca-certificate --ca-certificate file://{CA_FILE}{verification_arg} --set-as-active --allow-auto-registration --registration-config file://{REGISTRATION_CONFIG_FILE} >/dev/null"
        ))
        .line("fi");

    s.step("the endpoint devices connect to");
    s.line("endpoint=$(aws iot describe-endpoint --endpoint-type iot:Data-ATS --query endpointAddress --output text)")
        .line("echo")
        .line("echo \"Done. Put this in the fleet's agent configuration (fleet.nix settings, or autoprov flash --set):\"")
        .line("echo '  [cloud]'")
        .line("echo '  profile = \"aws\"'")
        .line("echo '  [aws]'")
        .line("echo \"  endpoint = \\\"$endpoint\\\"\"")
        .line("echo \"Each device becomes the thing named by its id on its first connection (that connection is dropped once; the agent reconnects).\"");
    s.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_are_parsed_strictly() {
        assert_eq!(
            parse_role_arn("arn:aws:iam::123456789012:role/autoprov-jitp"),
            Some(("aws".into(), "123456789012".into()))
        );
        assert_eq!(
            parse_role_arn("arn:aws-cn:iam::123456789012:role/path/r"),
            Some(("aws-cn".into(), "123456789012".into()))
        );
        for bad in [
            "arn:aws:iam::12345:role/r",
            "arn:aws:iam::123456789012:user/r",
            "arn:aws:s3:::bucket",
            "autoprov-jitp",
            "arn:aws:iam::123456789012:role/a b",
        ] {
            assert_eq!(parse_role_arn(bad), None, "{bad}");
        }
    }

    #[test]
    fn cloudformation_keeps_the_policy_variable_literal() {
        let Value::Object(sub) =
            Arns::CloudFormation.iot("client/${iot:Connection.Thing.ThingName}")
        else {
            panic!("not an object");
        };
        assert_eq!(
            sub["Fn::Sub"],
            "arn:${AWS::Partition}:iot:${AWS::Region}:${AWS::AccountId}:client/${!iot:Connection.Thing.ThingName}"
        );
    }
}
