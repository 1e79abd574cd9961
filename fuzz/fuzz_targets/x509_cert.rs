//! The agent's certificate field reader (`autoprov_agent::x509`), on DER from the card: it never
//! panics, and what it reads from a certificate a full X.509 parser (`x509-parser`) accepts is
//! what that parser reads: the serial, the validity and the subject CN.

#![no_main]

use autoprov_agent::x509;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(info) = x509::parse(data) else {
        return;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(data) else {
        return;
    };
    let serial = cert.raw_serial();
    let trimmed = &serial[serial
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(serial.len().saturating_sub(1))..];
    let hex: String = trimmed.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(info.serial, hex, "serial");
    let validity = cert.validity();
    assert_eq!(
        info.not_before,
        validity.not_before.timestamp(),
        "notBefore"
    );
    assert_eq!(info.not_after, validity.not_after.timestamp(), "notAfter");
    if let Some(Ok(cn)) = cert.subject().iter_common_name().next().map(|a| a.as_str()) {
        assert_eq!(info.common_name.as_deref(), Some(cn), "subject CN");
    }
});
