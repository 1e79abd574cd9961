//! Integration tests of `autoprov-agent` against a real Mosquitto, with certificates from the
//! project's own PKI. One module per area; each test has its own broker and directories.
//!
//! The broker is started as whatever user runs the tests; as root (as in CI) it drops to the
//! `mosquitto` user, which the fixture allows for.

mod check;
mod config;
mod import;
mod publish;
mod resilience;
mod spool;

use autoprov_tests::agent::AgentEnv;
use autoprov_tests::mosquitto::{BrokerOptions, Mosquitto, OBSERVER, Subscriber};
use autoprov_tests::pki::TestPki;

/// A fleet CA, a broker trusting it, a subscriber to `dt/#`, and a device with its bundle
/// imported and `agent.toml` written (with `extra` appended).
pub struct Setup {
    pub pki: TestPki,
    pub broker: Mosquitto,
    pub sub: Subscriber,
    pub env: AgentEnv,
}

pub const DEVICE: &str = "sensor-007";

pub fn setup(extra: &str) -> Setup {
    let mut pki = TestPki::new("Test Fleet");
    let server = pki.server();
    let broker = Mosquitto::start(&server, &BrokerOptions::with_observer());
    let observer = pki.device(OBSERVER, Default::default());
    let sub = Subscriber::start(&broker, &observer, "dt/#");
    let env = AgentEnv::new();
    env.flash(&pki.device(DEVICE, Default::default()));
    let out = env.import(&[]);
    assert!(out.status.success(), "import: {out:?}");
    env.configure(Some(&broker), extra);
    Setup {
        pki,
        broker,
        sub,
        env,
    }
}

pub use autoprov_tests::assert_contiguous_from_one;
