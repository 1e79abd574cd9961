//! The agent's cloud profiles against the stand-ins of `autoprov_tests::jitp` (AWS IoT Core with
//! just-in-time provisioning) and `autoprov_tests::dps` (Azure DPS and IoT Hub), on real
//! Mosquitto brokers, with certificates from the project's own PKI. Server trust comes from the
//! profiles' documented `extra_ca_file` option (the fixtures' CA); verification is never relaxed.
//! Delays are configured in milliseconds where the protocol allows (`jitp_retry`, the reconnect
//! backoff, `registration_timeout`); AWS's one CONNECT per second and DPS's `retry-after` seconds
//! are protocol facts and are kept.

mod aws;
mod azure;

use autoprov_tests::agent::AgentEnv;
use autoprov_tests::pki::TestPki;

/// The device under test.
pub const DEVICE: &str = "sensor-007";

/// A device with its bundle from `pki` imported and `agent.toml` written with `extra`.
pub fn device(pki: &mut TestPki, extra: &str) -> AgentEnv {
    let env = AgentEnv::new();
    env.flash(&pki.device(DEVICE, Default::default()));
    let out = env.import(&[]);
    assert!(out.status.success(), "import: {out:?}");
    env.configure(None, extra);
    env
}

/// `run` with `extra` as configuration must exit 2 naming `field` and what to do.
pub fn refuses_config(extra: &str, field: &str, hint: &str) {
    let mut pki = TestPki::new("Test Fleet");
    let env = device(&mut pki, extra);
    let out = env.command(&["run"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(field) && err.contains(hint), "{err}");
}

#[test]
fn a_cloud_profile_without_its_endpoint_is_a_configuration_error_naming_the_key() {
    refuses_config(
        "[cloud]\nprofile = \"aws\"\n",
        "aws.endpoint",
        "aws iot describe-endpoint",
    );
    refuses_config(
        "[cloud]\nprofile = \"azure\"\n",
        "azure.id_scope",
        "az iot dps show",
    );
    refuses_config(
        "[cloud]\nprofile = \"azure\"\n[azure]\nid_scope = \"0ne00X\"\nkeep_alive = \"30m\"\n",
        "azure.keep_alive",
        "1177s",
    );
}
