//! `autoprov demo`: the whole story on one machine, with no hardware, no cloud and nothing
//! installed beyond Rust.
//!
//! A temporary fleet CA (this crate's [`Pki`]); an embedded MQTT broker with mutual TLS
//! ([`broker`]); N devices, each provisioned as a real card would be: a bundle written to its
//! card directory, imported by the agent's own `import`, and the agent's own `run` loop
//! (simulated sensor, spool, MQTT over TLS) on a thread of this process. While they publish, a
//! card from another CA tries to join and is refused; one device's certificate is rotated (new
//! bundle, import, restart: its `seq` goes on); the old certificate is revoked and a clone of the
//! old card is refused. Then everything stops cleanly and the outcome is checked, so the demo is
//! also a test of the product: [`run`] reports every check that failed.
//!
//! The working directory (`--keep DIR`, or a temporary one that is removed) holds `pki/`,
//! `broker/` (its certificate, `crl.pem`, `readings.jsonl`, `events.log`), `cards/<id>/` (each
//! card's `/autoprov` folder after import: the key is wiped), `devices/<id>/` (`agent.toml`,
//! `state/`) and `agents.log`.

pub mod broker;
mod device;
mod report;
mod screen;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autoprov_agent::import::ImportOutcome;
use autoprov_bundle::DeviceId;

use crate::{InitOptions, IssueOptions, Issued, Pki};
use broker::{Broker, BrokerError, BrokerEvent, BrokerTls};
use device::{AgentThread, Device};
pub use report::{DemoReport, DeviceReport, Rotation};
use screen::Screen;

/// What the demo does and how long.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How many devices (1 to [`MAX_DEVICES`]).
    pub devices: u16,
    /// How long the devices publish.
    pub duration: Duration,
    /// The simulated sensor's interval.
    pub interval: Duration,
    /// Work in this directory and keep it (it must be absent or empty).
    pub keep: Option<PathBuf>,
    /// Redraw a table in place (a terminal) rather than print plain lines.
    pub live: bool,
}

/// The most devices the demo runs (each is a thread with its own runtime).
pub const MAX_DEVICES: u16 = 50;
/// The shortest `--duration` that leaves room for the rogue card and the rotation.
pub const MIN_DURATION: Duration = Duration::from_secs(4);

/// Why the demo could not run (what it found wrong is in [`DemoReport::failures`]).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Bad options.
    #[error("{0}")]
    Usage(String),
    /// The PKI refused something.
    #[error("demo PKI: {0}")]
    Pki(#[source] Box<crate::Error>),
    /// The broker could not start.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// A file or directory.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// An agent's configuration or import failed.
    #[error("{device}: {why}")]
    Device {
        /// The device.
        device: String,
        /// What failed.
        why: String,
    },
    /// The output could not be written (e.g. a closed pipe).
    #[error("writing the demo's output: {0}")]
    Output(std::io::Error),
    /// Interrupted (Ctrl-C) before the end.
    #[error("interrupted; everything was stopped{}", kept.as_ref().map(|d| format!(" and kept in {}", d.display())).unwrap_or_default())]
    Interrupted {
        /// The kept directory, if any.
        kept: Option<PathBuf>,
    },
    /// Some of the demo's checks failed.
    #[error("{} of the demo's checks failed: {}", .0.len(), .0.join("; "))]
    Checks(Vec<String>),
}

impl DemoError {
    /// The process exit code: 2 for bad options, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            _ => 1,
        }
    }
}

impl From<crate::Error> for DemoError {
    fn from(e: crate::Error) -> Self {
        Self::Pki(Box::new(e))
    }
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The working directory: kept, or removed at the end.
enum WorkDir {
    Kept(PathBuf),
    Temporary(tempfile::TempDir),
}

impl WorkDir {
    fn path(&self) -> &Path {
        match self {
            Self::Kept(p) => p,
            Self::Temporary(t) => t.path(),
        }
    }
}

fn device_id(s: &str) -> Result<DeviceId, DemoError> {
    DeviceId::new(s).map_err(|e| DemoError::Usage(e.to_string()))
}

/// Runs the demo, writing its progress to `out`.
pub fn run(
    opts: &DemoOptions,
    out: &mut dyn Write,
    interrupted: &AtomicBool,
) -> Result<DemoReport, DemoError> {
    if opts.devices == 0 || opts.devices > MAX_DEVICES {
        return Err(DemoError::Usage(format!(
            "--devices {}: give 1 to {MAX_DEVICES}",
            opts.devices
        )));
    }
    if opts.duration < MIN_DURATION {
        return Err(DemoError::Usage(format!(
            "--duration {}ms is too short: give at least {}s for the rogue card and the rotation",
            opts.duration.as_millis(),
            MIN_DURATION.as_secs()
        )));
    }
    if opts.interval < Duration::from_millis(50) || opts.interval > opts.duration / 4 {
        return Err(DemoError::Usage(format!(
            "--interval {}ms: give 50ms to a quarter of --duration",
            opts.interval.as_millis()
        )));
    }
    let work = match &opts.keep {
        Some(dir) => {
            autoprov_bundle::check_target(dir, false).map_err(|e| {
                DemoError::Usage(format!("--keep: {e}; give a new or empty directory"))
            })?;
            fs::create_dir_all(dir).map_err(io_at(dir))?;
            // The agents' state.dir must be absolute.
            WorkDir::Kept(fs::canonicalize(dir).map_err(io_at(dir))?)
        }
        None => WorkDir::Temporary(
            tempfile::Builder::new()
                .prefix("autoprov-demo-")
                .tempdir()
                .map_err(|e| DemoError::Io {
                    path: std::env::temp_dir(),
                    source: e,
                })?,
        ),
    };
    let opts = &DemoOptions {
        keep: match &work {
            WorkDir::Kept(dir) => Some(dir.clone()),
            WorkDir::Temporary(_) => None,
        },
        ..opts.clone()
    };
    let result = Demo::new(opts, work.path(), out)?.play(interrupted);
    match (&result, &work) {
        (Err(DemoError::Interrupted { .. }), WorkDir::Kept(dir)) => Err(DemoError::Interrupted {
            kept: Some(dir.clone()),
        }),
        _ => result,
    }
}

/// Timeline of the story, as fractions of the duration.
const ROGUE_AT: f64 = 0.25;
const ROTATE_AT: f64 = 0.45;
/// How long the rogue card and the clone get to be refused.
const ATTEMPT_WINDOW: Duration = Duration::from_secs(5);

struct Demo<'a> {
    opts: &'a DemoOptions,
    work: &'a Path,
    out: &'a mut dyn Write,
    screen: Screen,
    log: tracing::Dispatch,
    pki: Pki,
    broker: Broker,
    events: mpsc::Receiver<BrokerEvent>,
    devices: Vec<Device>,
    agents: BTreeMap<String, AgentThread>,
    issued: BTreeMap<String, Issued>,
    readings_log: fs::File,
    events_log: fs::File,
    report: BTreeMap<String, DeviceReport>,
    /// Seqs received under each serial.
    by_serial: BTreeMap<String, Vec<u64>>,
    refusals: Vec<(Instant, String)>,
    start: Instant,
}

impl<'a> Demo<'a> {
    /// Creates the CA, the broker and the provisioned devices (not yet running).
    fn new(
        opts: &'a DemoOptions,
        work: &'a Path,
        out: &'a mut dyn Write,
    ) -> Result<Self, DemoError> {
        let start = Instant::now();
        let mut screen = Screen::new(opts.live, start);
        let pki_dir = work.join("pki");
        Pki::init(
            &pki_dir,
            &InitOptions {
                name: "autoprov demo fleet".into(),
                ..InitOptions::default()
            },
        )?;
        let mut pki = Pki::open(&pki_dir, None)?;
        screen.say(
            out,
            &format!(
                "fleet CA created in {} (ECDSA P-256 root and issuing CA)",
                pki_dir.display()
            ),
        )?;

        let server = pki.issue_server(
            "demo-broker",
            &["localhost".into()],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            &Default::default(),
        )?;
        pki.activate_serial(&server.serial, false)?;
        let broker_dir = work.join("broker");
        fs::create_dir_all(&broker_dir).map_err(io_at(&broker_dir))?;
        for (name, text) in [
            ("server.crt", server.chain_pem.as_str()),
            ("ca.crt", server.ca_pem.as_str()),
        ] {
            let p = broker_dir.join(name);
            fs::write(&p, text).map_err(io_at(&p))?;
        }
        let (tx, events) = mpsc::channel();
        let broker = Broker::start(
            BrokerTls {
                chain_pem: server.chain_pem.clone(),
                key_pem: server.key_pem.clone(),
                ca_pem: server.ca_pem.clone(),
            },
            tx,
        )?;
        screen.say(out, &format!(
            "MQTT broker on {}: TLS requiring a client certificate from the fleet CA, client id = certificate CN, each device may publish below dt/<its id>/ only",
            broker.addr()
        ))?;

        let log_path = work.join("agents.log");
        let log_file = fs::File::create(&log_path).map_err(io_at(&log_path))?;
        let log = tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .with_writer(Mutex::new(log_file))
                .with_ansi(false)
                .with_target(false)
                .with_max_level(tracing::Level::DEBUG)
                .finish(),
        );
        let open = |name: &str| {
            let p = broker_dir.join(name);
            fs::File::create(&p).map_err(io_at(&p))
        };
        let mut demo = Self {
            opts,
            work,
            screen,
            log,
            broker,
            events,
            devices: Vec::new(),
            agents: BTreeMap::new(),
            issued: BTreeMap::new(),
            readings_log: open("readings.jsonl")?,
            events_log: open("events.log")?,
            report: BTreeMap::new(),
            by_serial: BTreeMap::new(),
            refusals: Vec::new(),
            start,
            pki,
            out,
        };
        for n in 1..=opts.devices {
            demo.provision(n)?;
        }
        Ok(demo)
    }

    fn say(&mut self, line: &str) -> Result<(), DemoError> {
        self.screen.say(self.out, line)
    }

    /// Issues a device's bundle onto its card, imports it, writes its `agent.toml`.
    fn provision(&mut self, n: u16) -> Result<(), DemoError> {
        let dev = Device::new(self.work, device_id(&format!("sensor-{n:03}"))?);
        let issued = self
            .pki
            .issue_to_dir(&dev.id, &IssueOptions::default(), &dev.card, false)?;
        let outcome = dev.import()?;
        dev.configure(
            self.broker.addr().port(),
            self.opts.interval,
            u64::from(n),
            None,
        )?;
        let wiped = !dev.card.join(autoprov_bundle::DEVICE_KEY).exists();
        self.say(&format!(
            "{}: certificate {} issued; bundle written to {}; {}{}",
            dev.id,
            short(&issued.serial),
            dev.card.display(),
            match outcome {
                ImportOutcome::Imported { .. } => "imported by the agent",
                _ => "NOT imported",
            },
            if wiped {
                ", key wiped from the card"
            } else {
                ""
            }
        ))?;
        self.report.insert(
            dev.id.to_string(),
            DeviceReport {
                id: dev.id.to_string(),
                ..DeviceReport::default()
            },
        );
        self.issued.insert(dev.id.to_string(), issued);
        self.devices.push(dev);
        Ok(())
    }

    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The whole story: publish, rogue card, rotation and revocation, stop, check.
    fn play(mut self, interrupted: &AtomicBool) -> Result<DemoReport, DemoError> {
        let mut story = Story::default();
        let live_start = Instant::now();
        for i in 0..self.devices.len() {
            let id = self.devices[i].id.to_string();
            let agent = self.devices[i].start(&self.log, &id)?;
            self.agents.insert(id, agent);
        }
        self.say(&format!(
            "{} agents started (simulated DHT11 every {} ms, readings spooled, then published with QoS 1) for {} s",
            self.devices.len(),
            self.opts.interval.as_millis(),
            self.opts.duration.as_secs_f64()
        ))?;
        self.screen.begin_live(self.broker.addr());
        let d = self.opts.duration.as_secs_f64();
        let mut result = Ok(());
        while live_start.elapsed() < self.opts.duration {
            if interrupted.load(Ordering::Relaxed) {
                result = Err(DemoError::Interrupted { kept: None });
                break;
            }
            self.drain_events()?;
            let t = live_start.elapsed().as_secs_f64();
            if let Err(e) = self.step(&mut story, t / d) {
                result = Err(e);
                break;
            }
            self.redraw()?;
            std::thread::sleep(Duration::from_millis(50));
        }
        self.drain_events()?;
        if let Some(r) = &mut story.rogue {
            self.settle(r, "rogue card", true)?;
        }
        if let Some(clone) = story.rotation.as_mut().and_then(|r| r.clone.as_mut()) {
            self.settle(clone, "clone of the old card", true)?;
        }
        // Stop the agents, all at once: each waits for its last acknowledgements.
        for a in self.agents.values_mut() {
            a.signal();
        }
        for (name, mut a) in std::mem::take(&mut self.agents) {
            if let Some(why) = a.stop() {
                self.screen.event(
                    self.out,
                    &format!("{name}: agent stopped with an error: {why}"),
                )?;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        self.drain_events()?;
        self.broker.stop();
        self.drain_events()?;
        let rows = self.rows();
        self.screen.end_live(self.out, &rows, self.opts.duration)?;
        result?;
        let report = self.check(story);
        self.summary(&report)?;
        Ok(report)
    }

    /// Advances the story to fraction `at` of the duration.
    fn step(&mut self, story: &mut Story, at: f64) -> Result<(), DemoError> {
        if at >= ROGUE_AT && story.rogue.is_none() {
            story.rogue = Some(self.start_rogue()?);
        }
        if let Some(r) = &mut story.rogue {
            self.settle(r, "rogue card", false)?;
        }
        if at >= ROTATE_AT && story.rotation.is_none() {
            story.rotation = Some(self.rotate()?);
        }
        if let Some(rot) = &mut story.rotation
            && rot.clone.is_none()
            && self.report[&rot.device].serials.last() == Some(&rot.new_serial)
        {
            rot.clone = Some(self.revoke_and_clone(rot)?);
        }
        if let Some(clone) = story.rotation.as_mut().and_then(|r| r.clone.as_mut()) {
            self.settle(clone, "clone of the old card", false)?;
        }
        Ok(())
    }

    /// Ends an attempt that should be refused once the broker refused a connection after it
    /// started, or its time is up, or `now`.
    fn settle(&mut self, a: &mut Attempt, what: &str, now: bool) -> Result<(), DemoError> {
        if a.agent.is_none()
            || (!now
                && self.refused_since(a.since).is_none()
                && a.since.elapsed() <= ATTEMPT_WINDOW)
        {
            return Ok(());
        }
        a.agent = None;
        a.refused = self.refused_since(a.since);
        let line = match &a.refused {
            Some(why) if why.starts_with("invalid peer certificate") => {
                format!("{what} refused by the broker: {why}")
            }
            Some(why) => format!("{what} failed to connect: {why}"),
            None => format!("{what}: no refusal seen"),
        };
        self.screen.event(self.out, &line)
    }

    fn refused_since(&self, since: Instant) -> Option<String> {
        self.refusals
            .iter()
            .find(|(at, _)| *at >= since)
            .map(|(_, why)| why.clone())
    }

    /// A card from another fleet's CA, claiming to be the first device.
    fn start_rogue(&mut self) -> Result<Attempt, DemoError> {
        let rogue_pki = self.work.join("rogue").join("pki");
        Pki::init(
            &rogue_pki,
            &InitOptions {
                name: "Rogue Fleet".into(),
                ..InitOptions::default()
            },
        )?;
        let mut other = Pki::open(&rogue_pki, None)?;
        let target = self.devices[0].id.clone();
        let mut dev = Device::new(self.work, target.clone());
        dev.card = self.work.join("cards").join("rogue");
        dev.dir = self.work.join("devices").join("rogue");
        let issued = other.issue_to_dir(&target, &IssueOptions::default(), &dev.card, false)?;
        dev.import()?;
        // It trusts the real broker (whose CA is no secret): the broker must be the one refusing.
        let broker_ca = self.work.join("broker").join("ca.crt");
        dev.configure(
            self.broker.addr().port(),
            self.opts.interval,
            666,
            Some(&broker_ca),
        )?;
        self.screen.event(self.out, &format!(
            "rogue card: a certificate for {target} from another CA (\"Rogue Fleet\", serial {}) tries to connect",
            short(&issued.serial)
        ))?;
        let since = Instant::now();
        let agent = dev.start(&self.log, "rogue")?;
        Ok(Attempt {
            agent: Some(agent),
            since,
            serial: issued.serial,
            refused: None,
        })
    }

    /// `autoprov rotate` for the last device: new bundle onto its card, import, restart.
    fn rotate(&mut self) -> Result<RotationStep, DemoError> {
        let i = self.devices.len() - 1;
        let id = self.devices[i].id.clone();
        let name = id.to_string();
        let old = self.issued.remove(&name).ok_or_else(|| DemoError::Device {
            device: name.clone(),
            why: "no certificate was issued to rotate".into(),
        })?;
        if let Some(mut a) = self.agents.remove(&name)
            && let Some(why) = a.stop()
        {
            return Err(DemoError::Device {
                device: name,
                why: format!("agent stopped with an error: {why}"),
            });
        }
        let card = self.devices[i].card.clone();
        let new = self
            .pki
            .rotate_to_dir(&id, &IssueOptions::default(), &card, true, false)?;
        self.devices[i].import()?;
        let agent = self.devices[i].start(&self.log, &name)?;
        self.agents.insert(name.clone(), agent);
        self.screen.event(self.out, &format!(
            "{name}: certificate rotated {} -> {}: new bundle on the card, imported, agent restarted",
            short(&old.serial),
            short(&new.serial)
        ))?;
        let step = RotationStep {
            device: name.clone(),
            new_serial: new.serial.clone(),
            old,
            clone: None,
        };
        self.issued.insert(name, new);
        Ok(step)
    }

    /// `autoprov revoke` of the old certificate, the broker's CRL reloaded, then a clone of
    /// the old card (kept before the rotation) tries to connect.
    fn revoke_and_clone(&mut self, rot: &RotationStep) -> Result<Attempt, DemoError> {
        let id = device_id(&rot.device)?;
        let (_, crl) = self.pki.revoke(&id, Some(&rot.old.serial), "superseded")?;
        let crl_file = self.work.join("broker").join("crl.pem");
        fs::write(&crl_file, &crl.pem).map_err(io_at(&crl_file))?;
        self.broker.set_crl(&crl.pem)?;
        let mut clone = Device::new(self.work, id.clone());
        clone.card = self
            .work
            .join("cards")
            .join(format!("{}-old-clone", rot.device));
        clone.dir = self
            .work
            .join("devices")
            .join(format!("{}-old-clone", rot.device));
        autoprov_bundle::write_dir(&rot.old.bundle, &clone.card, false).map_err(|e| {
            DemoError::Device {
                device: rot.device.clone(),
                why: format!("clone card: {e}"),
            }
        })?;
        clone.import()?;
        clone.configure(self.broker.addr().port(), self.opts.interval, 667, None)?;
        self.screen.event(self.out, &format!(
            "{}: old certificate {} revoked, broker CRL reloaded; a clone of the old card tries to connect",
            rot.device,
            short(&rot.old.serial)
        ))?;
        let since = Instant::now();
        let agent = clone.start(&self.log, &format!("{}-old-clone", rot.device))?;
        Ok(Attempt {
            agent: Some(agent),
            since,
            serial: rot.old.serial.clone(),
            refused: None,
        })
    }

    fn drain_events(&mut self) -> Result<(), DemoError> {
        while let Ok(ev) = self.events.try_recv() {
            let t = self.elapsed().as_secs_f64();
            let _ = writeln!(self.events_log, "{t:8.3}s {ev:?}");
            match ev {
                BrokerEvent::Connected { device, serial } => {
                    if let Some(r) = self.report.get_mut(&device) {
                        r.connected = true;
                        if r.serials.last() != Some(&serial) {
                            r.serials.push(serial.clone());
                        }
                    }
                    self.by_serial.entry(serial.clone()).or_default();
                    self.screen.event(
                        self.out,
                        &format!("{device}: connected with certificate {}", short(&serial)),
                    )?;
                }
                BrokerEvent::Disconnected {
                    device,
                    serial,
                    why,
                } => {
                    if let Some(r) = self.report.get_mut(&device)
                        && r.serials.last() == Some(&serial)
                    {
                        r.connected = false;
                    }
                    self.screen
                        .event(self.out, &format!("{device}: disconnected ({why})"))?;
                }
                BrokerEvent::Refused { peer, why } => {
                    self.refusals.push((Instant::now(), why.clone()));
                    self.screen.event(
                        self.out,
                        &format!("broker: TLS handshake with {peer} failed: {why}"),
                    )?;
                }
                BrokerEvent::Denied { device, why } => {
                    self.screen
                        .event(self.out, &format!("{device}: denied: {why}"))?;
                }
                BrokerEvent::Reading {
                    device,
                    serial,
                    topic,
                    payload,
                    at,
                } => self.reading(&device, &serial, &topic, &payload, at)?,
            }
        }
        Ok(())
    }

    fn reading(
        &mut self,
        device: &str,
        serial: &str,
        topic: &str,
        payload: &[u8],
        at: Instant,
    ) -> Result<(), DemoError> {
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
        let _ = writeln!(
            self.readings_log,
            "{}",
            serde_json::json!({"connection_cn": device, "serial": serial, "topic": topic, "payload": v})
        );
        let seq = v["seq"].as_u64();
        let claimed = v["device_id"].as_str().unwrap_or_default();
        let (t, h) = (v["temperature_c"].as_f64(), v["humidity_pct"].as_f64());
        let Some(r) = self.report.get_mut(device) else {
            return Ok(());
        };
        r.readings += 1;
        r.last_at = Some(at);
        if let (Some(t), Some(h)) = (t, h) {
            r.last = Some((t, h));
        }
        if let Some(seq) = seq
            && claimed == device
            && let Err(pos) = r.seqs.binary_search(&seq)
        {
            r.seqs.insert(pos, seq);
        }
        if let Some(seq) = seq {
            self.by_serial
                .entry(serial.to_owned())
                .or_default()
                .push(seq);
        }
        if claimed != device {
            self.screen.event(
                self.out,
                &format!("{device}: a reading claims device_id {claimed:?} (not counted)"),
            )?;
        }
        if let (Some(seq), Some(t), Some(h)) = (seq, t, h) {
            self.screen.reading(self.out, device, seq, t, h, serial)?;
        }
        Ok(())
    }

    fn rows(&self) -> Vec<DeviceReport> {
        self.report
            .values()
            .cloned()
            .map(|mut r| {
                let max = r.seqs.last().copied().unwrap_or(0);
                r.gaps = (1..=max)
                    .filter(|s| r.seqs.binary_search(s).is_err())
                    .collect();
                r
            })
            .collect()
    }

    fn redraw(&mut self) -> Result<(), DemoError> {
        let rows = self.rows();
        self.screen.redraw(self.out, &rows, self.opts.duration)
    }

    /// Checks what the story promised.
    fn check(&self, story: Story) -> DemoReport {
        let mut failures = Vec::new();
        let devices = self.rows();
        for r in &devices {
            if r.seqs.is_empty() {
                failures.push(format!("{}: no reading arrived", r.id));
            } else if !r.gaps.is_empty() {
                failures.push(format!("{}: seq gaps {:?}", r.id, r.gaps));
            }
        }
        let mut report = DemoReport {
            devices,
            ..DemoReport::default()
        };
        match story.rogue {
            Some(r) => {
                if self.by_serial.contains_key(&r.serial) {
                    failures.push("the rogue card's certificate was accepted".into());
                }
                match r.refused {
                    Some(why) if why.contains("UnknownIssuer") => report.rogue_refused = Some(why),
                    Some(why) => failures.push(format!(
                        "the rogue card's connection failed, but not because the broker refused its certificate: {why}"
                    )),
                    None => failures.push("the broker never refused the rogue card".into()),
                }
            }
            None => failures.push("the rogue card never ran".into()),
        }
        match story.rotation {
            Some(rot) => {
                let last_old = self
                    .by_serial
                    .get(&rot.old.serial)
                    .and_then(|s| s.iter().max().copied());
                let first_new = self
                    .by_serial
                    .get(&rot.new_serial)
                    .and_then(|s| s.iter().min().copied());
                match (last_old, first_new) {
                    (_, None) => failures.push(format!(
                        "{}: no reading arrived with the rotated certificate",
                        rot.device
                    )),
                    (Some(old), Some(new)) if new > old + 1 || new <= 1 => failures.push(format!(
                        "{}: seq did not continue across the rotation (last {old} under the old certificate, first {new} under the new)",
                        rot.device
                    )),
                    _ => {}
                }
                match rot.clone.as_ref().map(|c| &c.refused) {
                    Some(Some(why)) if why.contains("Revoked") => {
                        report.revoked_refused = Some(why.clone())
                    }
                    Some(Some(why)) => failures.push(format!(
                        "the clone of the revoked card failed to connect, but not for revocation: {why}"
                    )),
                    None => failures.push(format!(
                        "{}: the rotated certificate never connected, so the old one was not revoked",
                        rot.device
                    )),
                    Some(None) => failures.push(
                        "the broker never refused the clone of the revoked card".into(),
                    ),
                }
                report.rotation = Some(Rotation {
                    device: rot.device,
                    old_serial: rot.old.serial.clone(),
                    new_serial: rot.new_serial,
                    last_old_seq: last_old,
                    first_new_seq: first_new,
                });
            }
            None => failures.push("the rotation never ran".into()),
        }
        report.failures = failures;
        report
    }

    fn summary(&mut self, report: &DemoReport) -> Result<(), DemoError> {
        for l in report.lines(self.opts.keep.as_deref()) {
            writeln!(self.out, "{l}").map_err(DemoError::Output)?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Story {
    rogue: Option<Attempt>,
    rotation: Option<RotationStep>,
}

/// A card that should be refused, while it tries.
struct Attempt {
    agent: Option<AgentThread>,
    since: Instant,
    serial: String,
    refused: Option<String>,
}

struct RotationStep {
    device: String,
    old: Issued,
    new_serial: String,
    /// Started once the new certificate has connected and the old one is revoked.
    clone: Option<Attempt>,
}

/// The first 8 hex digits of a serial, enough to tell certificates apart on screen.
fn short(serial: &str) -> String {
    serial.chars().take(8).collect()
}

/// Sets `flag` on Ctrl-C, from a thread of its own, for as long as the process runs.
pub fn watch_ctrl_c(flag: Arc<AtomicBool>) {
    let _ = std::thread::Builder::new()
        .name("ctrl-c".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    flag.store(true, Ordering::Relaxed);
                }
            });
        });
}
