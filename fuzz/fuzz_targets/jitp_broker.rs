//! The `aws` profile facing what a broker does during just-in-time provisioning and after: the
//! first connection closed once provisioning ran, then any sequence of accepted connections,
//! drops, MQTT refusals, TLS alerts and timeouts, each explained and followed by a wait.
//!
//! Input: one event per byte pair (kind, detail).
//!
//! Invariants: explaining never panics; a closed connection is taken for JITP's at most once,
//! only before the device was ever accepted, and followed by at least `aws.jitp_retry`; every
//! explanation names the endpoint or the device; every wait is at least what was asked and at
//! most the reconnect cap or what was asked.

#![no_main]

use std::io::ErrorKind;
use std::sync::LazyLock;
use std::time::Duration;

use autoprov_agent::config::Config;
use autoprov_agent::transport::backoff::Backoff;
use autoprov_agent::transport::link::wait_after;
use autoprov_agent::transport::{AwsProfile, FailureKind, closed_by_peer};
use libfuzzer_sys::fuzz_target;
use rumqttc::{ConnectReturnCode, ConnectionError, StateError, TlsError};
use rustls::{AlertDescription, CertificateError};

const DEVICE: &str = "sensor-jitp";
const HOST: &str = "abc123-ats.iot.eu-west-1.amazonaws.com";
const JITP_RETRY: Duration = Duration::from_secs(2);

static CONFIG: LazyLock<Config> = LazyLock::new(|| {
    Config::from_texts(&[(
        "agent.toml",
        &format!(
            "[device]\nid = \"{DEVICE}\"\n[cloud]\nprofile = \"aws\"\n[aws]\nendpoint = \"{HOST}\"\njitp_retry = \"2s\"\n[reconnect]\nbase = \"1s\"\ncap = \"5m\"\n"
        ),
    )])
    .expect("the target's configuration")
});

const IO_KINDS: [ErrorKind; 8] = [
    ErrorKind::ConnectionReset,
    ErrorKind::ConnectionAborted,
    ErrorKind::UnexpectedEof,
    ErrorKind::BrokenPipe,
    ErrorKind::ConnectionRefused,
    ErrorKind::TimedOut,
    ErrorKind::NotFound,
    ErrorKind::Other,
];

fn io(detail: u8) -> std::io::Error {
    std::io::Error::from(IO_KINDS[usize::from(detail) % IO_KINDS.len()])
}

/// `None` is an accepted connection.
fn event(kind: u8, detail: u8) -> Option<ConnectionError> {
    let code = [
        ConnectReturnCode::Success,
        ConnectReturnCode::RefusedProtocolVersion,
        ConnectReturnCode::BadClientId,
        ConnectReturnCode::ServiceUnavailable,
        ConnectReturnCode::BadUserNamePassword,
        ConnectReturnCode::NotAuthorized,
    ][usize::from(detail) % 6];
    Some(match kind % 9 {
        0 => return None,
        1 => ConnectionError::ConnectionRefused(code),
        2 => ConnectionError::Io(io(detail)),
        3 => ConnectionError::MqttState(StateError::ConnectionAborted),
        4 => ConnectionError::MqttState(StateError::Io(io(detail))),
        5 => ConnectionError::Tls(TlsError::TLS(rustls::Error::AlertReceived(
            AlertDescription::from(detail),
        ))),
        6 => ConnectionError::Tls(TlsError::TLS(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ))),
        7 => ConnectionError::Tls(TlsError::Io(io(detail))),
        _ => ConnectionError::NetworkTimeout,
    })
}

fuzz_target!(|data: &[u8]| {
    let config = &*CONFIG;
    let mut aws = AwsProfile::from_config(config).expect("aws profile");
    let mut backoff = Backoff::with_seed(config.reconnect.base, config.reconnect.cap, 7);
    let mut accepted = false;
    let mut expected = 0;
    for pair in data.chunks_exact(2) {
        let Some(err) = event(pair[0], pair[1]) else {
            aws.connected();
            backoff.reset();
            accepted = true;
            continue;
        };
        let d = aws.diagnose(&err);
        assert!(
            d.message.contains(HOST) || d.message.contains(DEVICE),
            "{:?} names neither the endpoint nor the device",
            d.message
        );
        if d.kind == FailureKind::Expected {
            expected += 1;
            assert!(
                !accepted && expected == 1,
                "JITP's drop taken again: {err:?}"
            );
            assert!(closed_by_peer(&err), "{err:?} is not a closed connection");
            assert!(d.retry_after.is_some_and(|w| w >= JITP_RETRY));
        }
        let wait = wait_after(&d, &mut backoff);
        let asked = d.retry_after.unwrap_or_default();
        assert!(
            wait >= asked,
            "waits {wait:?}, less than the {asked:?} asked"
        );
        assert!(wait <= config.reconnect.cap.max(asked), "waits {wait:?}");
    }
});
