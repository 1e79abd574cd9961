//! `autoprov-agent check`: small named checks of the device's setup, each ok, warn or fail.
//!
//! Modelled on `aziotctl check`: each check says what it looked at and, when it is not ok, what
//! to do. Later checks that depend on an earlier failed one are skipped rather than piling up
//! follow-on errors.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use crate::clock::{rfc3339, unix_now};
use crate::config::Config;
use crate::credentials::Credentials;
use crate::transport::{Endpoint, Profile, client_config};

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Fine.
    Ok,
    /// Works, but needs attention soon.
    Warn,
    /// Broken.
    Fail,
}

/// One check's outcome.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// Short name.
    pub name: &'static str,
    /// Verdict.
    pub verdict: Verdict,
    /// What was seen, and what to do if it is not ok.
    pub detail: String,
}

/// Certificates closer than this to expiry get a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 30;
const NETWORK_TIMEOUT: Duration = Duration::from_secs(5);

fn result(name: &'static str, verdict: Verdict, detail: impl Into<String>) -> CheckResult {
    CheckResult {
        name,
        verdict,
        detail: detail.into(),
    }
}

/// Runs every check against a loaded configuration.
pub fn run_checks(config: &Config) -> Vec<CheckResult> {
    use Verdict::*;
    let mut out = vec![result(
        "config",
        Ok,
        format!(
            "valid ({})",
            config
                .sources
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )];
    let device_id = match config.require_device_id() {
        Result::Ok(id) => id.to_string(),
        Err(e) => {
            out.push(result("device id", Fail, e.to_string()));
            return out;
        }
    };
    let creds = match Credentials::load(&config.state_dir) {
        Result::Ok(c) => {
            out.push(result(
                "credentials present",
                Ok,
                format!("{} and {}", c.cert_file.display(), c.key_file.display()),
            ));
            c
        }
        Err(e) => {
            out.push(result("credentials present", Fail, e.to_string()));
            return out;
        }
    };
    out.push(match creds.check_key_matches() {
        Result::Ok(()) => result("key matches certificate", Ok, "the key signs for the leaf"),
        Err(e) => result("key matches certificate", Fail, e.to_string()),
    });
    let leaf = creds.leaf_info();
    let now = unix_now();
    out.push(match creds.verify_chain(now.max(leaf.not_before)) {
        Result::Ok(()) => result(
            "chain verifies",
            Ok,
            format!(
                "{} certificate(s) up to {}",
                creds.chain.len(),
                creds.ca_file.display()
            ),
        ),
        Err(e) => result("chain verifies", Fail, e.to_string()),
    });
    let days_left = (leaf.not_after - now).div_euclid(86_400);
    out.push(if leaf.common_name.as_deref() != Some(device_id.as_str()) {
        result(
            "certificate valid",
            Fail,
            format!(
                "the certificate is for {:?} but device.id is {device_id:?}",
                leaf.common_name
            ),
        )
    } else if now > leaf.not_after {
        result(
            "certificate valid",
            Fail,
            format!(
                "expired {} (serial {}): issue a new bundle with `autoprov rotate {device_id}`",
                rfc3339(leaf.not_after),
                leaf.serial
            ),
        )
    } else if days_left < EXPIRY_WARNING_DAYS {
        result(
            "certificate valid",
            Warn,
            format!(
                "expires {} ({days_left} days): rotate soon with `autoprov rotate {device_id}`",
                rfc3339(leaf.not_after)
            ),
        )
    } else {
        result(
            "certificate valid",
            Ok,
            format!(
                "CN {device_id}, serial {}, until {} ({days_left} days)",
                leaf.serial,
                rfc3339(leaf.not_after)
            ),
        )
    });
    let clock_ok = now >= leaf.not_before;
    out.push(if clock_ok {
        result("clock plausible", Ok, rfc3339(now))
    } else {
        result(
            "clock plausible",
            Fail,
            format!(
                "the clock reads {}, before the certificate's start {}: the Pi has no RTC, wait for time sync (timedatectl) before connecting",
                rfc3339(now),
                rfc3339(leaf.not_before)
            ),
        )
    });
    match Profile::from_config(config, &creds) {
        Err(e) => out.push(result("broker reachable", Fail, e.to_string())),
        Result::Ok(profile) => out.extend(profile_checks(&profile, &creds, clock_ok)),
    }
    out
}

/// What each profile adds: where it connects, and whether that works.
fn profile_checks(profile: &Profile, creds: &Credentials, clock_ok: bool) -> Vec<CheckResult> {
    use Verdict::*;
    let reach = |name: &'static str, ep: &Endpoint| {
        if clock_ok {
            CheckResult {
                name,
                ..check_broker(ep, creds)
            }
        } else {
            result(
                name,
                Warn,
                "skipped: TLS cannot succeed with the clock before the certificate's start",
            )
        }
    };
    match profile {
        Profile::Mqtt(p) => vec![reach("broker reachable", &p.endpoint)],
        Profile::Aws(p) => {
            let ep = &p.endpoint;
            let mut v = vec![resolves("aws endpoint", &ep.host, ep.port)];
            v.push(result(
                "aws port",
                Ok,
                if ep.alpn.is_empty() {
                    format!("{} (MQTT over TLS, no ALPN)", ep.port)
                } else {
                    format!(
                        "{} with ALPN {}",
                        ep.port,
                        String::from_utf8_lossy(&ep.alpn[0])
                    )
                },
            ));
            if v[0].verdict == Ok {
                v.push(reach("aws iot reachable", ep));
            }
            v
        }
        Profile::Azure(p) => {
            let mut v = vec![match p.assignment() {
                Some(a) => {
                    let age = (unix_now() - a.registered_unix).max(0);
                    result(
                        "azure assignment",
                        Ok,
                        format!(
                            "hub {} as {}, registered {} ({} days ago); cached in {}",
                            a.assigned_hub,
                            a.device_id,
                            a.registered_at,
                            age / 86_400,
                            crate::transport::azure::ASSIGNMENT_FILE
                        ),
                    )
                }
                None => result(
                    "azure assignment",
                    Ok,
                    "none cached yet: the device registers with DPS on its next connection",
                ),
            }];
            let dps = p.dps_endpoint();
            v.push(resolves("dps endpoint", &dps.host, dps.port));
            if v[1].verdict == Ok {
                v.push(reach("dps reachable", dps));
            }
            if p.assignment().is_some() {
                v.push(reach("hub reachable", p.endpoint()));
            }
            v
        }
    }
}

/// Whether `host` resolves.
fn resolves(name: &'static str, host: &str, port: u16) -> CheckResult {
    match (host, port).to_socket_addrs() {
        Ok(a) => {
            let n = a.count();
            if n == 0 {
                result(
                    name,
                    Verdict::Fail,
                    format!("{host} resolves to no address"),
                )
            } else {
                result(
                    name,
                    Verdict::Ok,
                    format!("{host} resolves ({n} address(es))"),
                )
            }
        }
        Err(e) => result(
            name,
            Verdict::Fail,
            format!("cannot resolve {host}: {e} (check the name, DNS and the network)"),
        ),
    }
}

/// TCP connect, TLS handshake with the device certificate, and a short wait for the broker to
/// refuse the certificate (with TLS 1.3 a refusal arrives just after the handshake).
fn check_broker(ep: &Endpoint, creds: &Credentials) -> CheckResult {
    let name = "broker reachable";
    let at = format!("{}:{}", ep.host, ep.port);
    let fail = |d: String| result(name, Verdict::Fail, d);
    let addrs: Vec<_> = match (ep.host.as_str(), ep.port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => return fail(format!("cannot resolve {}: {e}", ep.host)),
    };
    let Some(mut tcp) = addrs
        .iter()
        .find_map(|a| TcpStream::connect_timeout(a, NETWORK_TIMEOUT).ok())
    else {
        return fail(format!(
            "no TCP connection to {at} ({} address(es) tried): check the network and the broker",
            addrs.len()
        ));
    };
    let _ = tcp.set_read_timeout(Some(NETWORK_TIMEOUT));
    let _ = tcp.set_write_timeout(Some(NETWORK_TIMEOUT));
    let config: Arc<rustls::ClientConfig> = match client_config(ep, creds) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    let server_name = match ServerName::try_from(ep.host.clone()) {
        Ok(n) => n,
        Err(e) => return fail(format!("{:?} is not a TLS server name: {e}", ep.host)),
    };
    let mut conn = match rustls::ClientConnection::new(config, server_name) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            return fail(explain_tls(&at, ep, &e));
        }
    }
    // Give the broker a moment to send an alert about our certificate.
    let _ = tcp.set_read_timeout(Some(Duration::from_millis(700)));
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    let _ = tls.flush();
    let mut buf = [0u8; 1];
    match tls.read(&mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        Err(e) => return fail(explain_tls(&at, ep, &e)),
        Ok(_) => {}
    }
    let alpn = match (ep.alpn.first(), conn.alpn_protocol()) {
        (None, _) => String::new(),
        (Some(want), Some(got)) if want.as_slice() == got => {
            format!(", ALPN {}", String::from_utf8_lossy(got))
        }
        (Some(want), got) => {
            return result(
                name,
                Verdict::Fail,
                format!(
                    "{at} did not select ALPN {} (got {:?}): AWS IoT needs it on port 443",
                    String::from_utf8_lossy(want),
                    got.map(String::from_utf8_lossy)
                ),
            );
        }
    };
    result(
        name,
        Verdict::Ok,
        format!(
            "TLS {:?} with {at}{alpn}, server certificate trusted, our certificate not refused",
            conn.protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default()
        ),
    )
}

fn explain_tls(at: &str, ep: &Endpoint, e: &std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(alert)) => format!(
            "{at} refused this device's certificate (TLS alert {alert:?}): the broker does not trust its CA, or it is revoked"
        ),
        Some(rustls::Error::InvalidCertificate(why)) => format!(
            "{at}'s certificate does not verify against {} ({why:?})",
            ep.roots_file.display()
        ),
        _ => format!("TLS with {at} failed: {e}"),
    }
}

/// Prints the results and returns the worst verdict.
pub fn print(results: &[CheckResult], out: &mut impl Write) -> Verdict {
    for r in results {
        let tag = match r.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        let _ = writeln!(out, "{tag}  {:<24} {}", r.name, r.detail);
    }
    results
        .iter()
        .map(|r| r.verdict)
        .max()
        .unwrap_or(Verdict::Ok)
}
