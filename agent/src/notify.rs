//! The systemd notify protocol (`sd_notify(3)`), spoken directly over a Unix datagram socket.
//!
//! `NOTIFY_SOCKET` names the socket (a leading `@` means the Linux abstract namespace). Without
//! it every call is a no-op, so the agent runs the same outside systemd. The watchdog interval is
//! half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3) recommends, and only if `WATCHDOG_PID` is
//! unset or ours.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// A connection to systemd's notify socket, or nothing.
#[derive(Debug, Default)]
pub struct Notifier {
    target: Option<(UnixDatagram, Target)>,
}

#[derive(Debug)]
enum Target {
    Path(PathBuf),
    #[cfg(target_os = "linux")]
    Abstract(std::os::unix::net::SocketAddr),
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`; a missing or unusable socket disables notifications with a warning.
    pub fn from_env() -> Self {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return Self::default();
        };
        let name = name.to_string_lossy().into_owned();
        let target = match name.strip_prefix('@') {
            #[cfg(target_os = "linux")]
            Some(abstract_name) => {
                use std::os::linux::net::SocketAddrExt;
                match std::os::unix::net::SocketAddr::from_abstract_name(abstract_name) {
                    Ok(addr) => Target::Abstract(addr),
                    Err(e) => {
                        tracing::warn!("NOTIFY_SOCKET {name:?} is unusable: {e}");
                        return Self::default();
                    }
                }
            }
            _ => Target::Path(PathBuf::from(&name)),
        };
        match UnixDatagram::unbound() {
            Ok(sock) => Self {
                target: Some((sock, target)),
            },
            Err(e) => {
                tracing::warn!("cannot create a socket for NOTIFY_SOCKET {name:?}: {e}");
                Self::default()
            }
        }
    }

    /// Sends one notification (e.g. `READY=1`); failures are logged, never fatal.
    pub fn notify(&self, state: &str) {
        let Some((sock, target)) = &self.target else {
            return;
        };
        let sent = match target {
            Target::Path(p) => sock.send_to(state.as_bytes(), p),
            #[cfg(target_os = "linux")]
            Target::Abstract(addr) => sock.send_to_addr(state.as_bytes(), addr),
        };
        if let Err(e) = sent {
            tracing::debug!("sd_notify {state:?}: {e}");
        }
    }

    /// Whether a notify socket is configured.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, if the watchdog is for us.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_datagrams_to_a_path_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some((UnixDatagram::unbound().unwrap(), Target::Path(path))),
        };
        n.notify("READY=1");
        n.notify("STATUS=connected");
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STATUS=connected");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_datagrams_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("autoprov-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier {
            target: Some((UnixDatagram::unbound().unwrap(), Target::Abstract(addr))),
        };
        n.notify("WATCHDOG=1");
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }

    #[test]
    fn without_socket_nothing_happens() {
        let n = Notifier::default();
        assert!(!n.enabled());
        n.notify("READY=1");
    }
}
