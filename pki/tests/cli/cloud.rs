//! `aws setup` and `azure setup`: the generated files parse and agree with each other, the
//! template and policy are least-privilege, and the scripts run the CLI calls in order (against
//! stand-ins for the `aws` and `az` commands that record their arguments and check every
//! `file://` they are given; the clouds themselves cannot be reached from here).

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::{Fleet, common_name, snapshot, with_leaf};

const ACCOUNT: &str = "123456789012";
const CODE: &str = "6c3a4b0e2f1d98a7c5b4e3d2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2";
const THING_NAME: &str = "${iot:Connection.Thing.ThingName}";
const EXISTING_ROLE: &str = "arn:aws:iam::123456789012:role/existing";
/// `aws setup` with an existing role and SNI-only registration.
const SNI_ONLY: [&str; 4] = ["--role-arn", EXISTING_ROLE, "--mode", "sni-only"];

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn read_yaml(p: &Path) -> Value {
    serde_norway::from_str(&std::fs::read_to_string(p).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn aws_setup(f: &Fleet, out: &str, extra: &[&str]) -> PathBuf {
    let dir = f.path(out);
    let mut args = vec!["aws", "setup", "--out", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    f.ok(&args);
    dir
}

/// `aws setup --out aws --account-id ACCOUNT` plus `extra`.
fn aws_account(f: &Fleet, extra: &[&str]) -> PathBuf {
    let mut args = vec!["--account-id", ACCOUNT];
    args.extend_from_slice(extra);
    aws_setup(f, "aws", &args)
}

/// `azure setup --dps my-dps --resource-group my-rg --out azure` plus `extra`: the output
/// directory and what the command printed.
fn azure_setup(f: &Fleet, extra: &[&str]) -> (PathBuf, String) {
    let dir = f.path("azure");
    let mut args = vec![
        "azure",
        "setup",
        "--dps",
        "my-dps",
        "--resource-group",
        "my-rg",
        "--out",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = f.ok(&args);
    (dir, out)
}

/// Single tier: the root signs devices, so the root is what the setup in `dir` registers.
fn assert_registers_the_root(f: &Fleet, dir: &Path) {
    assert_eq!(
        std::fs::read_to_string(dir.join("ca-certificate.pem")).unwrap(),
        std::fs::read_to_string(f.pki().join("root.crt")).unwrap()
    );
}

/// Every `{"Ref": X}` under `v`.
fn refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("Ref") {
                out.insert(r.clone());
            }
            m.values().for_each(|v| refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// Every string under `v`.
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Object(m) => m.values().flat_map(strings).collect(),
        Value::Array(a) => a.iter().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn aws_setup_files_parse_and_the_template_round_trips_through_the_registration_config() {
    let f = Fleet::with_ca(&[]);
    let dir = aws_account(&f, &["--region", "eu-west-1", "--registration-code", CODE]);
    let template = read_json(&dir.join("jitp-template.json"));
    let registration = read_json(&dir.join("registration-config.json"));
    let body = registration["templateBody"]
        .as_str()
        .expect("templateBody is a string");
    assert_eq!(serde_json::from_str::<Value>(body).unwrap(), template);
    assert_eq!(
        registration["roleArn"],
        format!("arn:aws:iam::{ACCOUNT}:role/autoprov-jitp")
    );
    for name in ["device-policy.json", "jitp-role-trust.json"] {
        read_json(&dir.join(name));
    }
    let cfn = read_yaml(&dir.join("cloudformation.yaml"));
    let ca = &cfn["Resources"]["FleetCa"];
    assert_eq!(ca["Type"], "AWS::IoT::CACertificate");
    let props = &ca["Properties"];
    // The stack carries the very same template string and the CA the script registers.
    assert_eq!(props["RegistrationConfig"]["TemplateBody"], body);
    let ca_pem = std::fs::read_to_string(dir.join("ca-certificate.pem")).unwrap();
    assert_eq!(
        ca_pem,
        std::fs::read_to_string(f.pki().join("issuing.crt")).unwrap()
    );
    assert_eq!(props["CACertificatePem"], ca_pem.as_str());
    assert_eq!(
        props["VerificationCertificatePem"],
        std::fs::read_to_string(dir.join("verification-certificate.pem")).unwrap()
    );
    assert_eq!(props["CertificateMode"], "DEFAULT");
    assert_eq!(props["Status"], "ACTIVE");
    assert_eq!(props["AutoRegistrationStatus"], "ENABLE");
    assert_eq!(
        props["RegistrationConfig"]["RoleArn"]["Fn::GetAtt"][0],
        "JitpRole"
    );
    assert_eq!(
        cfn["Resources"]["JitpRole"]["Properties"]["ManagedPolicyArns"][0]["Fn::Sub"],
        "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSIoTThingsRegistration"
    );
    assert_eq!(ca["DependsOn"][0], "DevicePolicy");
}

#[test]
fn aws_cloudformation_stacks_pass_cfn_lint_in_every_mode() {
    let f = Fleet::with_ca(&[]);
    let variants: [(&str, &[&str]); 3] = [
        (
            "code",
            &["--account-id", ACCOUNT, "--registration-code", CODE],
        ),
        ("param", &["--account-id", ACCOUNT]),
        ("sni", &SNI_ONLY),
    ];
    for (name, args) in variants {
        let dir = aws_setup(&f, name, args);
        // AWS's linter validates every resource and property against the published spec.
        let o = Command::new("cfn-lint")
            .args(["--regions", "eu-west-1", "--"])
            .arg(dir.join("cloudformation.yaml"))
            .output()
            .expect("cfn-lint is installed (scripts/install-deps)");
        assert!(
            o.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn aws_template_declares_only_certificate_parameters_and_uses_every_one() {
    let f = Fleet::with_ca(&[]);
    let dir = aws_account(&f, &["--policy-name", "fleet-policy"]);
    let t = read_json(&dir.join("jitp-template.json"));
    let declared: BTreeSet<String> = t["Parameters"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut used = BTreeSet::new();
    refs(&t["Resources"], &mut used);
    assert_eq!(
        declared, used,
        "declared parameters must be exactly those used"
    );
    // What JITP can fill in: the certificate subject and the id AWS assigns (jit-provisioning).
    let from_certificate = [
        "AWS::IoT::Certificate::Country",
        "AWS::IoT::Certificate::Organization",
        "AWS::IoT::Certificate::OrganizationalUnit",
        "AWS::IoT::Certificate::DistinguishedNameQualifier",
        "AWS::IoT::Certificate::StateName",
        "AWS::IoT::Certificate::CommonName",
        "AWS::IoT::Certificate::SerialNumber",
        "AWS::IoT::Certificate::Id",
    ];
    for p in &declared {
        assert!(
            from_certificate.contains(&p.as_str()),
            "{p} is not a JITP parameter"
        );
        assert_eq!(t["Parameters"][p]["Type"], "String");
    }
    // A declared subject field the leaf lacks fails provisioning: every one must be in our leaves.
    let leaf = f.issue("sensor-1").join("device.crt");
    with_leaf(&leaf, |c| {
        assert!(c.subject().iter_common_name().next().is_some());
    });
    assert!(
        declared
            .iter()
            .all(|p| p.ends_with("::CommonName") || p.ends_with("::Id")),
        "{declared:?}"
    );
    let r = &t["Resources"];
    assert_eq!(r["thing"]["Type"], "AWS::IoT::Thing");
    assert_eq!(
        r["thing"]["Properties"]["ThingName"]["Ref"],
        "AWS::IoT::Certificate::CommonName"
    );
    assert_eq!(r["certificate"]["Properties"]["Status"], "ACTIVE");
    assert_eq!(
        r["certificate"]["Properties"]["CertificateId"]["Ref"],
        "AWS::IoT::Certificate::Id"
    );
    assert_eq!(r["policy"]["Type"], "AWS::IoT::Policy");
    assert_eq!(r["policy"]["Properties"]["PolicyName"], "fleet-policy");
}

#[test]
fn aws_device_policy_resources_are_scoped_by_the_thing_name() {
    let f = Fleet::with_ca(&[]);
    let dir = aws_account(&f, &["--region", "eu-west-1", "--topic-prefix", "fleet/dt"]);
    let policy = read_json(&dir.join("device-policy.json"));
    let cfn = read_yaml(&dir.join("cloudformation.yaml"));
    let cfn_policy = &cfn["Resources"]["DevicePolicy"]["Properties"]["PolicyDocument"];
    for (doc, var) in [
        (&policy, THING_NAME.to_owned()),
        (cfn_policy, THING_NAME.replace("${", "${!")),
    ] {
        let mut actions = BTreeSet::new();
        for st in doc["Statement"].as_array().unwrap() {
            assert_eq!(st["Effect"], "Allow");
            for a in st["Action"].as_array().unwrap() {
                actions.insert(a.as_str().unwrap().to_owned());
            }
            let resources = strings(&st["Resource"]);
            assert!(!resources.is_empty());
            for r in resources {
                assert!(r.contains(&var), "{r} is not scoped by the thing name");
                assert!(!r.ends_with(":*") && !r.contains(":topic/*"), "{r}");
            }
        }
        assert_eq!(
            actions,
            BTreeSet::from(["iot:Connect".to_owned(), "iot:Publish".to_owned()])
        );
    }
    let st = policy["Statement"].as_array().unwrap();
    assert_eq!(
        st[0]["Resource"][0],
        format!("arn:aws:iot:eu-west-1:{ACCOUNT}:client/{THING_NAME}")
    );
    assert_eq!(
        st[0]["Condition"]["Bool"]["iot:Connection.Thing.IsAttached"],
        "true"
    );
    assert_eq!(
        st[1]["Resource"][0],
        format!("arn:aws:iot:eu-west-1:{ACCOUNT}:topic/fleet/dt/{THING_NAME}/*")
    );
    let trust = read_json(&dir.join("jitp-role-trust.json"));
    assert_eq!(
        trust["Statement"][0]["Principal"]["Service"],
        "iot.amazonaws.com"
    );
    assert_eq!(
        trust["Statement"][0]["Condition"]["StringEquals"]["aws:SourceAccount"],
        ACCOUNT
    );
}

#[test]
fn aws_verification_certificate_names_the_code_and_verifies_against_the_registered_ca() {
    let f = Fleet::with_ca(&[]);
    let dir = aws_account(&f, &["--registration-code", CODE]);
    let v = dir.join("verification-certificate.pem");
    assert_eq!(common_name(&v), CODE);
    let o = Command::new("openssl")
        .args(["verify", "-partial_chain", "-CAfile"])
        .arg(dir.join("ca-certificate.pem"))
        .arg(&v)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
}

#[test]
fn aws_sni_only_mode_registers_without_a_verification_certificate() {
    let f = Fleet::with_ca(&[]);
    let dir = aws_setup(&f, "aws", &SNI_ONLY);
    assert!(!dir.join("verification-certificate.pem").exists());
    let cfn = read_yaml(&dir.join("cloudformation.yaml"));
    let props = &cfn["Resources"]["FleetCa"]["Properties"];
    assert_eq!(props["CertificateMode"], "SNI_ONLY");
    assert!(props.get("VerificationCertificatePem").is_none());
    // An existing role is used as is: no role in the stack, its ARN in both configurations.
    assert!(cfn["Resources"].get("JitpRole").is_none());
    assert_eq!(props["RegistrationConfig"]["RoleArn"], EXISTING_ROLE);
    let script = std::fs::read_to_string(dir.join("setup.sh")).unwrap();
    assert!(script.contains("--certificate-mode SNI_ONLY"), "{script}");
    assert!(!script.contains("get-registration-code"), "{script}");
    assert!(!script.contains("create-role"), "{script}");
}

#[test]
fn aws_default_mode_without_a_code_leaves_the_proof_to_the_script_and_the_stack_parameter() {
    let f = Fleet::with_ca(&["--single-tier"]);
    let dir = aws_account(&f, &[]);
    assert!(!dir.join("verification-certificate.pem").exists());
    assert_registers_the_root(&f, &dir);
    let cfn = read_yaml(&dir.join("cloudformation.yaml"));
    assert_eq!(
        cfn["Parameters"]["VerificationCertificatePem"]["Type"],
        "String"
    );
    assert_eq!(
        cfn["Resources"]["FleetCa"]["Properties"]["VerificationCertificatePem"]["Ref"],
        "VerificationCertificatePem"
    );
    let script = std::fs::read_to_string(dir.join("setup.sh")).unwrap();
    let pki = std::path::absolute(f.pki()).unwrap();
    assert!(
        script.contains(&format!(
            "\"${{AUTOPROV:-autoprov}}\" --pki-dir {} ca verification-cert --code \"$code\"",
            pki.display()
        )),
        "{script}"
    );
}

#[test]
fn setup_scripts_are_bash_n_clean_executable_and_hold_no_secret() {
    let f = Fleet::with_ca(&[]);
    let aws = aws_account(&f, &[]);
    let (azure, _) = azure_setup(&f, &["--hub", "my-hub"]);
    for dir in [&aws, &azure] {
        let script = dir.join("setup.sh");
        let o = Command::new("bash")
            .arg("-n")
            .arg(&script)
            .output()
            .unwrap();
        assert!(o.status.success(), "bash -n {}: {o:?}", script.display());
        let text = std::fs::read_to_string(&script).unwrap();
        assert!(text.starts_with("#!/usr/bin/env bash\n"));
        assert!(text.contains("\nset -euo pipefail\n"));
        let mode = std::fs::metadata(&script).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
        for (path, content) in snapshot(dir) {
            let text = String::from_utf8_lossy(&content);
            assert!(!text.contains("PRIVATE KEY"), "{}", path.display());
        }
    }
}

#[test]
fn bad_options_exit_2_name_the_flag_and_write_nothing() {
    let f = Fleet::with_ca(&[]);
    // (command, arguments after `setup --out o`, what the error names)
    let cases: &[(&str, &[&str], &str)] = &[
        ("aws", &[], "--account-id"),
        ("aws", &["--role-arn", "autoprov-jitp"], "--role-arn"),
        ("aws", &["--account-id", "12345"], "--account-id"),
        (
            "aws",
            &["--account-id", ACCOUNT, "--topic-prefix", "dt/#"],
            "--topic-prefix",
        ),
        (
            "aws",
            &[
                "--account-id",
                ACCOUNT,
                "--mode",
                "sni-only",
                "--registration-code",
                CODE,
            ],
            "--registration-code",
        ),
        (
            "aws",
            &["--account-id", ACCOUNT, "--registration-code", "not a code"],
            "verification code",
        ),
        (
            "azure",
            &["--dps", "my dps", "--resource-group", "rg"],
            "--dps",
        ),
        ("azure", &["--dps", "d", "--resource-group", "rg"], "--dps"),
    ];
    for (command, rest, names) in cases {
        let mut args = vec![*command, "setup", "--out", "o"];
        args.extend_from_slice(rest);
        f.fails(&args, 2, names);
        assert!(!f.path("o").exists(), "{args:?} wrote something");
    }
    std::fs::create_dir(f.path("full")).unwrap();
    std::fs::write(f.path("full/keep"), "x").unwrap();
    f.fails(
        &["aws", "setup", "--out", "full", "--account-id", ACCOUNT],
        2,
        "not empty",
    );
    assert_eq!(std::fs::read_dir(f.path("full")).unwrap().count(), 1);
}

/// A directory with a stand-in `aws`/`az` command that appends its arguments to `calls.log`,
/// refuses `file://` arguments naming missing files, and answers from the shell snippet `body`.
fn stub_cli(f: &Fleet, name: &str, body: &str) -> PathBuf {
    let bin = f.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        "#!/usr/bin/env bash\necho \"$*\" >> {log}\nfor a in \"$@\"; do\n  case \"$a\" in file://*) [[ -f \"${{a#file://}}\" ]] || {{ echo \"missing ${{a#file://}}\" >&2; exit 2; }};; esac\ndone\n{body}\n",
        log = f.path("calls.log").display()
    );
    let path = bin.join(name);
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn run_script(f: &Fleet, script: &Path, bin: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut c = Command::new("bash");
    c.arg(script)
        .env("PATH", path)
        .env("AUTOPROV", env!("CARGO_BIN_EXE_autoprov"))
        .env_remove("AUTOPROV_PKI_DIR")
        .current_dir(f.tmp.path());
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

/// Runs the setup script in `dir` like [`run_script`], asserts it succeeded, and returns its
/// output and the [`calls`] it made.
fn run_ok(f: &Fleet, dir: &Path, bin: &Path, env: &[(&str, &str)]) -> (String, Vec<String>) {
    let (ok, out) = run_script(f, &dir.join("setup.sh"), bin, env);
    assert!(ok, "{out}");
    (out, calls(f))
}

fn calls(f: &Fleet) -> Vec<String> {
    let log = std::fs::read_to_string(f.path("calls.log")).unwrap_or_default();
    std::fs::remove_file(f.path("calls.log")).ok();
    log.lines().map(str::to_owned).collect()
}

/// Where the calls starting with each of `order` are, asserting they came in that order.
fn positions_in_order(calls: &[String], order: &[&str]) -> Vec<usize> {
    let at: Vec<usize> = order.iter().map(|p| position(calls, p)).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{calls:#?}");
    at
}

/// No call contains `needle`.
fn assert_no_call(calls: &[String], needle: &str) {
    assert!(!calls.iter().any(|l| l.contains(needle)), "{calls:#?}");
}

/// Index of the first call starting with `prefix`, panicking with the calls if there is none.
fn position(calls: &[String], prefix: &str) -> usize {
    calls
        .iter()
        .position(|c| c.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` call in {calls:#?}"))
}

const AWS_STUB: &str = r#"case "$*" in
  "iam get-role"*|"iot get-policy"*) exit 254 ;;
  "iot describe-ca-certificate"*) [[ -n "${CA_EXISTS:-}" ]] || exit 254 ;;
  "iot get-registration-code"*) echo "$REG_CODE" ;;
  "iot describe-endpoint"*) echo "a1b2c3-ats.iot.eu-west-1.amazonaws.com" ;;
esac"#;

#[test]
fn aws_setup_script_registers_the_ca_in_order_and_prints_the_endpoint() {
    let f = Fleet::with_ca(&[]);
    let dir = aws_account(&f, &["--region", "eu-west-1"]);
    let bin = stub_cli(&f, "aws", AWS_STUB);
    let (out, c) = run_ok(&f, &dir, &bin, &[("REG_CODE", CODE)]);
    let order = [
        "iam create-role --role-name autoprov-jitp --assume-role-policy-document file://jitp-role-trust.json",
        "iam attach-role-policy --role-name autoprov-jitp --policy-arn arn:aws:iam::aws:policy/service-role/AWSIoTThingsRegistration",
        "iot create-policy --policy-name autoprov-device --policy-document file://device-policy.json",
        "iot get-registration-code",
        "iot register-ca-certificate --ca-certificate file://ca-certificate.pem --verification-cert file://verification-certificate.pem --set-as-active --allow-auto-registration --registration-config file://registration-config.json",
        "iot describe-endpoint --endpoint-type iot:Data-ATS",
    ];
    positions_in_order(&c, &order);
    // Without --registration-code the script made the proof itself, with the account's code.
    assert_eq!(common_name(&dir.join("verification-certificate.pem")), CODE);
    assert!(
        out.contains("endpoint = \"a1b2c3-ats.iot.eu-west-1.amazonaws.com\""),
        "{out}"
    );
    assert!(out.contains("profile = \"aws\""), "{out}");

    // Run again with the CA registered: it is updated, not registered twice.
    let (_, c) = run_ok(&f, &dir, &bin, &[("REG_CODE", CODE), ("CA_EXISTS", "1")]);
    position(&c, "iot update-ca-certificate --certificate-id ");
    assert_no_call(&c, "register-ca-certificate");
}

#[test]
fn aws_setup_script_stops_when_the_registration_code_is_another_accounts() {
    let f = Fleet::with_ca(&[]);
    let dir = aws_account(&f, &["--registration-code", CODE]);
    let bin = stub_cli(&f, "aws", AWS_STUB);
    let other = "ffff4b0e2f1d98a7c5b4e3d2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4ffff";
    let (ok, out) = run_script(&f, &dir.join("setup.sh"), &bin, &[("REG_CODE", other)]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("--registration-code {other}")),
        "{out}"
    );
    assert_no_call(&calls(&f), "register-ca-certificate");
}

#[test]
fn azure_setup_script_enrolls_the_ca_with_proof_of_possession_and_prints_the_id_scope() {
    let f = Fleet::with_ca(&[]);
    let (dir, out) = azure_setup(&f, &["--hub", "my-hub", "--verify", "proof-of-possession"]);
    assert!(out.contains("my-hub.azure-devices.net"), "{out}");
    let bin = stub_cli(
        &f,
        "az",
        r#"case "$*" in
  "iot dps linked-hub show"*|"iot dps certificate show"*|"iot dps enrollment-group show"*) exit 3 ;;
  "iot dps certificate create"*) echo "ETAG1" ;;
  "iot dps certificate generate-verification-code"*"--etag ETAG1"*) printf 'A1B2C3D4E5F6\tETAG2\n' ;;
  "iot dps certificate generate-verification-code"*) exit 4 ;;
  "iot dps show"*) echo "0ne00ABCDEF" ;;
esac"#,
    );
    let (text, c) = run_ok(&f, &dir, &bin, &[]);
    let cert = "autoprov-";
    let order = [
        "extension add --upgrade --name azure-iot",
        "iot dps linked-hub create --dps-name my-dps --resource-group my-rg --hub-name my-hub",
        "iot dps certificate create --dps-name my-dps --resource-group my-rg --certificate-name autoprov-",
        "iot dps certificate generate-verification-code",
        "iot dps certificate verify --dps-name my-dps --resource-group my-rg --certificate-name autoprov-",
        "iot dps enrollment-group create --dps-name my-dps --resource-group my-rg --enrollment-id autoprov --ca-name autoprov-",
        "iot dps show --name my-dps --resource-group my-rg --query properties.idScope",
    ];
    let at = positions_in_order(&c, &order);
    let verify = &c[at[4]];
    assert!(
        verify.contains("--path verification-certificate.pem --etag ETAG2"),
        "{verify}"
    );
    assert!(
        c[at[5]].contains("--iot-hubs my-hub.azure-devices.net"),
        "{}",
        c[at[5]]
    );
    assert!(c[at[2]].contains(cert) && c[at[2]].contains("--path ca-certificate.pem"));
    assert_eq!(
        common_name(&dir.join("verification-certificate.pem")),
        "A1B2C3D4E5F6"
    );
    assert!(text.contains("ID scope: 0ne00ABCDEF"), "{text}");
    assert!(text.contains("id_scope = \"0ne00ABCDEF\""), "{text}");
}

#[test]
fn azure_setup_verified_on_upload_leaves_existing_resources_alone() {
    let f = Fleet::with_ca(&["--single-tier"]);
    let (dir, _) = azure_setup(&f, &[]);
    assert_registers_the_root(&f, &dir);
    let bin = stub_cli(
        &f,
        "az",
        r#"case "$*" in
  "iot dps certificate show"*) [[ -n "${EXISTS:-}" ]] || exit 3 ;;
  "iot dps enrollment-group show"*) [[ -n "${EXISTS:-}" ]] || exit 3 ;;
  "iot dps show"*) echo "0ne00ABCDEF" ;;
esac"#,
    );
    let (_, c) = run_ok(&f, &dir, &bin, &[]);
    let create = &c[position(&c, "iot dps certificate create")];
    assert!(
        create.ends_with("--path ca-certificate.pem --verified true"),
        "{create}"
    );
    let group = &c[position(&c, "iot dps enrollment-group create")];
    assert!(!group.contains("--iot-hubs"), "{group}");
    assert_no_call(&c, "linked-hub");

    let (text, c) = run_ok(&f, &dir, &bin, &[("EXISTS", "1")]);
    assert_no_call(&c, " create ");
    assert!(text.contains("left as it is"), "{text}");
}
