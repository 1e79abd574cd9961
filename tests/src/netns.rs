//! Two network namespaces joined by a veth pair: a device on one side, its broker on the other,
//! and a link the test can cut (`ip link set … down`) and restore.
//!
//! Each side gets one end of the pair, named `veth0` inside its namespace, and one address of a
//! private /30 ([`DEVICE_ADDR`], [`BROKER_ADDR`]) that exists only inside these namespaces, so
//! nothing on the host's own networks is touched. Both namespaces (and with them the veth pair)
//! are deleted when the [`Link`] is dropped, also when a test fails; namespaces left behind by a
//! test process that was killed are swept by the next one. Needs root (`ip netns add`).

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The device's address inside its namespace.
pub const DEVICE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
/// The broker's address inside its namespace.
pub const BROKER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 2);
const PREFIX: &str = "autoprov-soak";
const VETH: &str = "veth0";

/// Why namespaces cannot be made here: `None` when they can (root, `ip` installed).
pub fn unavailable() -> Option<String> {
    if !crate::faults::is_root() {
        return Some("network namespaces need root (CI runs as root)".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("`ip` (iproute2) is not installed: run scripts/install-deps".into()),
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Deletes namespaces of this fixture whose test process is gone (killed before its `Drop`).
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// A device namespace and a broker namespace joined by a veth pair.
pub struct Link {
    device_ns: String,
    broker_ns: String,
}

impl Link {
    /// Creates both namespaces, the veth pair between them, addresses and loopbacks.
    pub fn create() -> Result<Self, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        sweep_stale();
        let n = N.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let link = Self {
            device_ns: format!("{PREFIX}-{pid}-{n}-dev"),
            broker_ns: format!("{PREFIX}-{pid}-{n}-brk"),
        };
        // From here on, Drop removes whatever was made, also half-way.
        ip(&["netns", "add", &link.device_ns])?;
        ip(&["netns", "add", &link.broker_ns])?;
        ip(&[
            "link",
            "add",
            VETH,
            "netns",
            &link.device_ns,
            "type",
            "veth",
            "peer",
            "name",
            VETH,
            "netns",
            &link.broker_ns,
        ])?;
        for (ns, addr) in [
            (&link.device_ns, DEVICE_ADDR),
            (&link.broker_ns, BROKER_ADDR),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/30"), "dev", VETH])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", VETH, "up"])?;
        }
        Ok(link)
    }

    /// The device's namespace.
    pub fn device_ns(&self) -> &str {
        &self.device_ns
    }

    /// The broker's namespace.
    pub fn broker_ns(&self) -> &str {
        &self.broker_ns
    }

    /// Cuts the link: the device's end goes down, so its route to the broker is gone.
    pub fn cut(&self) {
        ip(&["-n", &self.device_ns, "link", "set", VETH, "down"]).expect("cut the link");
    }

    /// Restores the link.
    pub fn restore(&self) {
        ip(&["-n", &self.device_ns, "link", "set", VETH, "up"]).expect("restore the link");
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and with it the other end.
        let _ = ip(&["netns", "del", &self.device_ns]);
        let _ = ip(&["netns", "del", &self.broker_ns]);
    }
}

/// A command running `program` inside namespace `ns` (`ip netns exec` execs it, so the child's
/// pid is the program's own and SIGKILL reaches it).
pub fn command_in(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program);
    c
}

/// `cmd` (program, arguments, environment, directory) run inside namespace `ns` instead.
pub fn wrap(ns: &str, cmd: &Command) -> Command {
    let mut c = command_in(ns, cmd.get_program());
    c.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        c.current_dir(d);
    }
    c
}
