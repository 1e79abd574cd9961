//! The end-to-end rehearsal: the fleet as an operator and the devices would run it, with the
//! real binaries and nothing stood in for but the hardware and the clouds.
//!
//! The operator makes a CA and a broker certificate with `autoprov`, builds an image laid out like
//! nixpkgs' sd-image (`.img.zst`), and runs `autoprov flash` once per device into card image
//! files. Each device then does what its first boot does: its `/autoprov/` folder is read from the
//! card's FAT partition, found through the card's own partition table (`sfdisk`) and read with
//! `mcopy`; `autoprov-agent import` installs it; `autoprov-agent run` publishes readings from
//! the simulated sensor. The agents are the aarch64 build under `qemu-aarch64-static` when
//! `AUTOPROV_AARCH64_BIN_DIR` points at it (`scripts/test` sets it after
//! `scripts/build-aarch64`), the native build otherwise; the test output says which.
//!
//! One module per way of reaching the cloud: `mqtt` (Mosquitto with client certificates, ACL and
//! CRL), `aws` (the JITP front of `autoprov_tests::jitp`) and `azure` (the DPS stand-in and hub of
//! `autoprov_tests::dps`).

mod aws;
mod azure;
mod mqtt;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use autoprov_bundle::{Bundle, Manifest};
use autoprov_tests::agent::{AgentEnv, AgentProcess};
use autoprov_tests::bins::{Runner, bin};
use autoprov_tests::image::{self, Layout};
use autoprov_tests::mosquitto::Subscriber;
use autoprov_tests::pki::ServerTls;
use autoprov_tests::text;
use autoprov_tests::wait_until;

/// The fleet of every leg.
pub const FLEET: [&str; 3] = ["sensor-001", "sensor-002", "sensor-003"];
/// The device whose certificate is rotated.
pub const ROTATED: &str = "sensor-002";
/// The id on the card flashed from another CA.
pub const FOREIGN: &str = "sensor-666";
/// How long anything under emulation may take to show up.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The runner for this run, announced once per leg in the test output.
pub fn runner(leg: &str) -> Runner {
    let r = Runner::from_env();
    println!("rehearsal ({leg}): the agents are {}", r.describe());
    r
}

/// The operator's side: a directory with the PKI in `pki/`, driven through the `autoprov` CLI.
pub struct Operator {
    dir: tempfile::TempDir,
}

impl Operator {
    /// `autoprov ca init --name NAME` in a new directory.
    pub fn new(name: &str) -> Self {
        let op = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        op.ok(&["ca", "init", "--name", name]);
        op
    }

    /// A path in the operator's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `autoprov --pki-dir DIR/pki ARGS`, which must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = Command::new(bin("autoprov"))
            .arg("--pki-dir")
            .arg(self.path("pki"))
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .env_remove("AUTOPROV_PKI_DIR")
            .env_remove("AUTOPROV_CA_PASSPHRASE")
            .output()
            .unwrap();
        assert!(out.status.success(), "autoprov {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `autoprov issue-server` for localhost and 127.0.0.1, as the broker's TLS identity.
    pub fn server_tls(&self) -> ServerTls {
        self.ok(&[
            "issue-server",
            "broker",
            "--out",
            "broker",
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
        ]);
        let read = |n: &str| fs::read_to_string(self.path("broker").join(n)).unwrap();
        ServerTls {
            chain_pem: read("server.crt"),
            key_pem: read("server.key"),
            ca_pem: read("ca.crt"),
        }
    }

    /// `autoprov issue ID --out bundles/ID`, read back (the observer's and services' identities).
    pub fn bundle(&self, id: &str) -> Bundle {
        let out = format!("bundles/{id}");
        self.ok(&["issue", id, "--out", &out]);
        Bundle::read_dir(&self.path(&out)).unwrap()
    }

    /// `autoprov crl --out crl.pem`, read back.
    pub fn crl(&self) -> String {
        self.ok(&["crl", "--out", "crl.pem"]);
        fs::read_to_string(self.path("crl.pem")).unwrap()
    }

    /// The fleet's image: laid out like nixpkgs' sd-image (FIRMWARE FAT partition, ext4 root),
    /// compressed with zstd as `nix build` leaves it.
    pub fn image(&self) -> PathBuf {
        let built = image::build(self.dir.path(), "nixos-sd-image", &Layout::default());
        image::compress(&built.img)
    }

    /// `autoprov flash ID --image IMAGE --to cards/ID.img`; returns the card.
    pub fn flash(&self, id: &str, image: &Path) -> PathBuf {
        fs::create_dir_all(self.path("cards")).unwrap();
        let card = self.path(&format!("cards/{id}.img"));
        let out = self.ok(&[
            "flash",
            id,
            "--image",
            image.to_str().unwrap(),
            "--to",
            card.to_str().unwrap(),
        ]);
        assert!(out.contains(id), "{out}");
        card
    }
}

/// A device: its card, its state, its agent.
pub struct Device {
    /// The device id on its card.
    pub id: String,
    /// The card (an image file written by `autoprov flash`).
    pub card: PathBuf,
    /// State directory, configuration, and the folder the card's `/autoprov/` is copied to.
    pub env: AgentEnv,
    /// The running agent.
    pub agent: Option<AgentProcess>,
}

impl Device {
    /// A device for `card`, configured by `configure` (what the image's `agent.toml` holds).
    pub fn new(id: &str, card: PathBuf, runner: Runner, configure: impl FnOnce(&AgentEnv)) -> Self {
        let env = AgentEnv::with_runner(runner);
        configure(&env);
        // Slower than the fixtures' default under emulation, still many readings per second.
        env.dropin("10-rehearsal.toml", "[sensor]\ninterval = \"100ms\"\n");
        Self {
            id: id.to_owned(),
            card,
            env,
            agent: None,
        }
    }

    /// The card's `/autoprov/` folder as the device sees it at boot: the FAT partition found
    /// through the card's partition table, the folder read with mcopy.
    pub fn read_card(&self) {
        let parts = image::partitions(&self.card);
        let fat = image::fat_in(&self.card, &parts[0]);
        let _ = fs::remove_dir_all(self.env.card());
        let names = image::copy_folder_out(&fat, "autoprov", &self.env.card());
        assert!(
            names.iter().any(|n| n == "manifest.toml"),
            "{}: no /autoprov/manifest.toml on the card's first partition: {names:?}",
            self.card.display()
        );
    }

    /// First boot, or a boot after the card was rewritten: read the card, import, run.
    pub fn boot(&mut self) {
        assert!(self.agent.is_none(), "{} is running", self.id);
        self.read_card();
        let out = self.env.import(&[]);
        assert!(out.status.success(), "{}: import: {}", self.id, text(&out));
        self.agent = Some(self.env.spawn());
    }

    /// The serial of the imported certificate in use.
    pub fn serial(&self) -> String {
        let m = fs::read(self.env.credentials().join("current/manifest.toml")).unwrap();
        Manifest::parse(&m).unwrap().serial
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        self.agent
            .as_ref()
            .map(AgentProcess::log)
            .unwrap_or_default()
    }

    /// Waits until the agent's log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) -> bool {
        self.agent
            .as_ref()
            .is_some_and(|a| a.wait_for_log(needle, PATIENCE))
    }

    /// SIGTERM (a shutdown), which must exit 0; returns the log.
    pub fn stop(&mut self) -> String {
        let mut agent = self.agent.take().expect("running");
        let status = agent.terminate(Duration::from_secs(20));
        let log = agent.log();
        assert!(status.success(), "{}: {status:?}\n{log}", self.id);
        log
    }
}

/// Every device's agent log, for failure messages.
pub fn logs(devices: &[Device]) -> String {
    devices
        .iter()
        .map(|d| format!("--- {} agent log:\n{}", d.id, d.log()))
        .collect()
}

/// The distinct seqs `sub` received from `id` (by the payload's device id), sorted.
pub fn seqs_of(sub: &Subscriber, id: &str) -> Vec<u64> {
    let mut s: Vec<u64> = sub
        .messages()
        .iter()
        .filter(|(_, v)| v["device_id"] == id)
        .filter_map(|(_, v)| v["seq"].as_u64())
        .collect();
    s.sort_unstable();
    s.dedup();
    s
}

/// Waits until every device in `ids` has at least `n` readings more than `base` gave it.
pub fn wait_for_readings(sub: &Subscriber, ids: &[&str], base: &[usize], n: usize) -> bool {
    wait_until(PATIENCE, || {
        ids.iter()
            .zip(base)
            .all(|(id, b)| seqs_of(sub, id).len() >= b + n)
    })
}

/// How many readings each device of `ids` has now.
pub fn counts(sub: &Subscriber, ids: &[&str]) -> Vec<usize> {
    ids.iter().map(|id| seqs_of(sub, id).len()).collect()
}

/// Every message is on `topic(id)` of the device named in its payload, and every device's seqs
/// run from 1 without a gap.
pub fn assert_own_identity_and_contiguous(
    sub: &Subscriber,
    devices: &[Device],
    topic: impl Fn(&str) -> String,
) {
    let logs: String = devices
        .iter()
        .map(|d| d.env.path().display().to_string() + "\n")
        .collect();
    for (t, v) in sub.messages() {
        let id = v["device_id"].as_str().unwrap_or_default();
        assert!(
            devices.iter().any(|d| d.id == id),
            "a reading from {id:?} on {t}"
        );
        assert!(
            t.starts_with(&topic(id)),
            "{id}'s reading on another topic: {t}"
        );
    }
    for d in devices {
        let seqs = seqs_of(sub, &d.id);
        assert!(!seqs.is_empty(), "{}: no reading", d.id);
        autoprov_tests::assert_contiguous_from_one(&seqs, &format!("{}; {logs}", d.id));
    }
}

/// The seq the agent's log says its spool continues from at start.
pub fn next_seq(log: &str) -> u64 {
    log.lines()
        .find_map(|l| l.split("next seq ").nth(1)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `next seq` in the log:\n{log}"))
}

/// The fleet flashed from `image` and booted; returns once every device has 10 readings at
/// `sub` (`cloud` describes the other side for the failure message).
pub fn boot_fleet(
    op: &Operator,
    image: &Path,
    runner: &Runner,
    configure: impl Fn(&AgentEnv),
    sub: &Subscriber,
    cloud: impl Fn() -> String,
) -> Vec<Device> {
    let mut fleet: Vec<Device> = FLEET
        .iter()
        .map(|id| Device::new(id, op.flash(id, image), runner.clone(), &configure))
        .collect();
    for d in &mut fleet {
        d.boot();
    }
    assert!(
        wait_for_readings(sub, &FLEET, &[0; 3], 10),
        "readings per device {:?}\n{}\n{}",
        counts(sub, &FLEET),
        cloud(),
        logs(&fleet)
    );
    fleet
}

/// A card flashed with [`FOREIGN`] by another fleet's CA, in this fleet's image, booted.
pub fn foreign_card(image: &Path, runner: &Runner, configure: impl FnOnce(&AgentEnv)) -> Device {
    let other = Operator::new("Other Fleet");
    let mut d = Device::new(
        FOREIGN,
        other.flash(FOREIGN, image),
        runner.clone(),
        configure,
    );
    d.boot();
    d
}

/// Rotation as the operator does it: the device shut down, `autoprov inject` of a new bundle
/// onto its card, the next boot's import; returns once everyone has 5 more readings, having
/// checked that the device runs the new certificate and its seq went on. Returns the old and
/// the new serial.
pub fn rotate(op: &Operator, fleet: &mut [Device], sub: &Subscriber) -> (String, String) {
    let d = fleet.iter_mut().find(|d| d.id == ROTATED).unwrap();
    let old_serial = d.serial();
    d.stop();
    let last_before = *seqs_of(sub, ROTATED).last().unwrap();
    let out = op.ok(&["inject", ROTATED, "--to", d.card.to_str().unwrap()]);
    assert!(out.contains(&format!("{old_serial} superseded")), "{out}");
    let before = counts(sub, &FLEET);
    d.boot();
    let new_serial = d.serial();
    assert_ne!(new_serial, old_serial);
    assert!(
        d.wait_for_log(&format!("certificate serial {new_serial}")),
        "{}",
        d.log()
    );
    assert!(
        wait_for_readings(sub, &FLEET, &before, 5),
        "after the rotation: {:?}\n{}",
        counts(sub, &FLEET),
        d.log()
    );
    let log = d.log();
    let next = next_seq(&log);
    assert!(
        next > 1 && next <= last_before + 1,
        "seq did not continue across the rotation: next {next}, last received {last_before}"
    );
    (old_serial, new_serial)
}

/// Shuts every device down (exit 0), then checks identities and seqs (see
/// [`assert_own_identity_and_contiguous`]).
pub fn finish(fleet: &mut [Device], sub: &Subscriber, topic: impl Fn(&str) -> String) {
    for d in fleet.iter_mut() {
        d.stop();
    }
    assert_own_identity_and_contiguous(sub, fleet, topic);
}
