//! A real Mosquitto broker for tests, and a subscriber that records what it receives.
//!
//! The broker listens on a free loopback port with TLS, `require_certificate true` and
//! `use_identity_as_username true` (the client certificate's CN is the user name the ACL sees),
//! with an ACL file (`pattern write dt/%u/#` by default) and an optional CRL. It can be stopped,
//! killed with SIGKILL and restarted on the same port. Persistence is on with a one-second
//! autosave, so a persistent subscriber's session and subscription survive a SIGKILL and the
//! broker queues for it while it reconnects.
//!
//! Mosquitto started as root drops to the `mosquitto` user, so every file it reads is made
//! world-readable (it is test material) and its data directory world-writable.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;

use crate::pki::ServerTls;
use crate::wait_until;

/// The default ACL: each device may publish below `dt/<its CN>/` only.
pub const DEFAULT_ACL: &str = "pattern write dt/%u/#\n";

/// How to set the broker up.
#[derive(Clone)]
pub struct BrokerOptions {
    /// The ACL file's content.
    pub acl: String,
    /// A CRL (PEM) to check client certificates against.
    pub crl_pem: Option<String>,
    /// Extra lines for mosquitto.conf.
    pub extra_conf: String,
    /// Run inside this network namespace, listening on this address (see [`crate::netns`]);
    /// `None`: the host's 127.0.0.1.
    pub netns: Option<(String, IpAddr)>,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            acl: DEFAULT_ACL.into(),
            crl_pem: None,
            extra_conf: String::new(),
            netns: None,
        }
    }
}

impl BrokerOptions {
    /// The default ACL plus read access to `dt/#` for the user `observer` (see [`Subscriber`]).
    pub fn with_observer() -> Self {
        Self {
            acl: format!("{DEFAULT_ACL}\nuser {OBSERVER}\ntopic read dt/#\n"),
            ..Self::default()
        }
    }
}

/// A running (or stopped) Mosquitto.
pub struct Mosquitto {
    dir: TempDir,
    port: u16,
    host: String,
    netns: Option<String>,
    child: Option<Child>,
    starts: u32,
}

fn write_readable(path: &Path, content: &str) {
    fs::write(path, content).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).expect("chmod");
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Mosquitto {
    /// Writes the configuration and starts the broker; panics with its log if it does not come up.
    pub fn start(tls: &ServerTls, opts: &BrokerOptions) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let p = |n: &str| dir.path().join(n);
        write_readable(&p("ca.crt"), &tls.ca_pem);
        write_readable(&p("server.crt"), &tls.chain_pem);
        write_readable(&p("server.key"), &tls.key_pem);
        write_readable(&p("acl"), &opts.acl);
        let data = p("data");
        fs::create_dir(&data).expect("data dir");
        fs::set_permissions(&data, fs::Permissions::from_mode(0o777)).expect("chmod");
        let port = free_port();
        let listen = opts
            .netns
            .as_ref()
            .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |(_, a)| *a);
        let mut conf = format!(
            "per_listener_settings false\n\
             listener {port} {listen}\n\
             cafile {ca}\n\
             certfile {crt}\n\
             keyfile {key}\n\
             require_certificate true\n\
             use_identity_as_username true\n\
             allow_anonymous false\n\
             acl_file {acl}\n\
             persistence true\n\
             persistence_location {data}/\n\
             autosave_interval 1\n\
             max_queued_messages 1000000\n\
             log_dest stderr\n\
             log_type error\n\
             log_type warning\n\
             log_type notice\n\
             log_type information\n\
             log_type subscribe\n\
             connection_messages true\n",
            ca = p("ca.crt").display(),
            crt = p("server.crt").display(),
            key = p("server.key").display(),
            acl = p("acl").display(),
            data = data.display(),
        );
        if let Some(crl) = &opts.crl_pem {
            write_readable(&p("crl.pem"), crl);
            conf.push_str(&format!("crlfile {}\n", p("crl.pem").display()));
        }
        conf.push_str(&opts.extra_conf);
        write_readable(&p("mosquitto.conf"), &conf);
        let mut m = Self {
            dir,
            port,
            // A namespace has no `localhost` in the broker's certificate sense: clients there
            // connect to the address, which the certificate must name.
            host: opts
                .netns
                .as_ref()
                .map_or("localhost".into(), |(_, a)| a.to_string()),
            netns: opts.netns.as_ref().map(|(ns, _)| ns.clone()),
            child: None,
            starts: 0,
        };
        m.launch();
        m
    }

    fn launch(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        self.starts += 1;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("broker log");
        let listening_before = self.log().matches("listen socket on port").count();
        let child = self
            .command("mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("mosquitto is installed (scripts/install-deps)");
        self.child = Some(child);
        let port = self.port;
        // In another namespace the test cannot connect to it: the broker's log says when it
        // listens instead.
        let up = wait_until(Duration::from_secs(10), || match &self.netns {
            None => TcpStream::connect(("127.0.0.1", port)).is_ok(),
            Some(_) => self.log().matches("listen socket on port").count() > listening_before,
        });
        if !up {
            self.kill();
            panic!("mosquitto did not start on port {port}:\n{}", self.log());
        }
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host name (or, in a network namespace, the address) clients use; the server
    /// certificate names it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The network namespace it runs in, if not the host's.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// A command for `program`, run in the broker's network namespace if it has one.
    pub fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(ns) => crate::netns::command_in(ns, program),
            None => Command::new(program),
        }
    }

    /// The broker's CA file (the fleet root).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The persistence file (written by each autosave).
    pub fn database(&self) -> PathBuf {
        self.dir.path().join("data").join("mosquitto.db")
    }

    /// Where the broker's log goes.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    /// Everything the broker logged, across restarts.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    /// How many times the broker was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Stops with SIGTERM (persisting its state) and waits.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    /// Kills with SIGKILL (nothing is saved beyond the last autosave) and waits.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Writes a new CRL and sends SIGHUP, on which Mosquitto reads its `crlfile` again (what
    /// `systemctl reload mosquitto` does); returns once it has logged the reload. Connections
    /// already open are kept; the CRL applies to new ones. The broker must have been started
    /// with a CRL ([`BrokerOptions::crl_pem`]).
    pub fn reload_crl(&self, crl_pem: &str) {
        let path = self.dir.path().join("crl.pem");
        assert!(
            path.exists(),
            "the broker was started without a crlfile (set BrokerOptions::crl_pem)"
        );
        write_readable(&path, crl_pem);
        let before = self.log().matches("Reloading config").count();
        let pid = self.child.as_ref().expect("broker running").id();
        let _ = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status();
        let reloaded = wait_until(Duration::from_secs(10), || {
            self.log().matches("Reloading config").count() > before
        });
        assert!(
            reloaded,
            "mosquitto did not reload on SIGHUP:
{}",
            self.log()
        );
    }

    /// Starts again after [`Mosquitto::kill`] or [`Mosquitto::stop`].
    pub fn start_again(&mut self) {
        self.launch();
    }

    /// Whether the broker process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
        crate::leaks::keep_log(&self.log_path(), "mosquitto.log");
    }
}

/// The CN of the subscriber's certificate.
pub const OBSERVER: &str = "observer";

/// A persistent QoS 1 subscriber (`mosquitto_sub -c`) appending `topic payload` lines to a file.
///
/// `mosquitto_sub` exits when its broker dies, so a supervisor thread starts it again (same
/// client id, so the broker's persisted session delivers what was queued meanwhile).
pub struct Subscriber {
    dir: TempDir,
    child: Arc<Mutex<Option<Child>>>,
    stop: Arc<AtomicBool>,
    supervisor: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    /// Subscribes to `topic` with the given client certificate (its CN must be allowed to read
    /// by the broker's ACL, e.g. [`OBSERVER`] with [`BrokerOptions::with_observer`]).
    pub fn start(broker: &Mosquitto, bundle: &autoprov_bundle::Bundle, topic: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = |n: &str| dir.path().join(n);
        fs::write(p("client.crt"), bundle.device_crt()).expect("write");
        fs::write(p("client.key"), bundle.device_key()).expect("write");
        fs::write(p("ca.crt"), bundle.ca_crt()).expect("write");
        let id = bundle.device_id().to_string();
        let mut cmd = broker.command("mosquitto_sub");
        cmd.args(["-h", broker.host(), "-p", &broker.port().to_string()])
            .arg("--cafile")
            .arg(p("ca.crt"))
            .arg("--cert")
            .arg(p("client.crt"))
            .arg("--key")
            .arg(p("client.key"))
            .args(["-i", &id, "-c", "-q", "1", "-v", "-t", topic])
            .stdin(Stdio::null());
        let out_path = p("messages");
        let err_path = p("stderr");
        let child: Arc<Mutex<Option<Child>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (c, st) = (child.clone(), stop.clone());
        let supervisor = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let open = |path: &Path| {
                    fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .expect("subscriber output")
                };
                cmd.stdout(open(&out_path)).stderr(open(&err_path));
                let spawned = cmd
                    .spawn()
                    .expect("mosquitto_sub is installed (scripts/install-deps)");
                *c.lock().unwrap_or_else(|e| e.into_inner()) = Some(spawned);
                loop {
                    std::thread::sleep(Duration::from_millis(50));
                    let mut guard = c.lock().unwrap_or_else(|e| e.into_inner());
                    match guard.as_mut().map(|ch| ch.try_wait()) {
                        Some(Ok(None)) if !st.load(Ordering::Relaxed) => continue,
                        _ => {
                            if let Some(mut ch) = guard.take() {
                                let _ = ch.kill();
                                let _ = ch.wait();
                            }
                            break;
                        }
                    }
                }
            }
        });
        let sub = Self {
            dir,
            child,
            stop,
            supervisor: Some(supervisor),
        };
        // Subscribed once the broker logs the subscription (`log_type subscribe`: "ID QOS
        // TOPIC"); then wait until the saved database holds it (mosquitto writes the file anew
        // and renames it, and a subscription record names its client and topic), so that the
        // session and its subscription outlive a SIGKILL of the broker. Events, not a time: a
        // loaded machine may take seconds to get there, and a save can fall in the same
        // instant as the subscription.
        let subscribed = format!("{id} 1 {topic}");
        let seen = wait_until(Duration::from_secs(30), || {
            broker.log().contains(&subscribed)
        });
        assert!(seen, "subscriber did not subscribe:\n{}", broker.log());
        let holds = |db: &[u8], text: &str| db.windows(text.len()).any(|w| w == text.as_bytes());
        let saved = wait_until(Duration::from_secs(30), || {
            fs::read(broker.database()).is_ok_and(|db| holds(&db, &id) && holds(&db, topic))
        });
        assert!(
            saved,
            "the broker's saved database never held the subscription:\n{}",
            broker.log()
        );
        sub
    }

    /// Every `topic payload` line received so far.
    pub fn lines(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("messages"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The payloads received so far, parsed as JSON, with their topics.
    pub fn messages(&self) -> Vec<(String, serde_json::Value)> {
        self.lines()
            .iter()
            .filter_map(|l| {
                let (topic, payload) = l.split_once(' ')?;
                Some((topic.to_owned(), serde_json::from_str(payload).ok()?))
            })
            .collect()
    }

    /// The distinct `seq` values received so far, sorted.
    pub fn seqs(&self) -> Vec<u64> {
        let mut s: Vec<u64> = self
            .messages()
            .iter()
            .filter_map(|(_, v)| v["seq"].as_u64())
            .collect();
        s.sort_unstable();
        s.dedup();
        s
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.supervisor.take() {
            let _ = h.join();
        }
        if let Some(mut ch) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = ch.kill();
            let _ = ch.wait();
        }
    }
}
