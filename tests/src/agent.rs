//! `autoprov-agent` under test: a card folder, a state directory, a configuration file, and the
//! real binary run as a child process with its log kept in a file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use autoprov_bundle::Bundle;
use tempfile::TempDir;

use crate::bins::Runner;
use crate::mosquitto::Mosquitto;
use crate::pki::write_bundle;
use crate::wait_until;

/// A device's directories: `card/` (the bundle as flashed), `state/`, `agent.toml`; and how its
/// agent binary is run.
pub struct AgentEnv {
    dir: TempDir,
    runner: Runner,
    netns: Option<String>,
}

impl Default for AgentEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentEnv {
    /// An empty device running the native agent.
    pub fn new() -> Self {
        Self::with_runner(Runner::Native)
    }

    /// An empty device whose agent runs with `runner` (e.g. the aarch64 build under qemu).
    pub fn with_runner(runner: Runner) -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            runner,
            netns: None,
        }
    }

    /// The base directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where the flashed bundle is.
    pub fn card(&self) -> PathBuf {
        self.dir.path().join("card")
    }

    /// The state directory.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The credentials directory.
    pub fn credentials(&self) -> PathBuf {
        self.state().join("credentials")
    }

    /// The config file.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("agent.toml")
    }

    /// Puts a bundle on the "card".
    pub fn flash(&self, bundle: &Bundle) {
        write_bundle(bundle, &self.card());
    }

    /// Runs `autoprov-agent import` from the card into the state directory.
    pub fn import(&self, extra: &[&str]) -> Output {
        self.runner
            .command("autoprov-agent")
            .arg("import")
            .arg("--from")
            .arg(self.card())
            .arg("--to")
            .arg(self.credentials())
            .args(extra)
            .output()
            .expect("run autoprov-agent import")
    }

    /// Writes `agent.toml` for a simulated sensor and `broker`, followed by `extra` TOML.
    ///
    /// Defaults chosen for tests: 50 ms interval, reconnect base 50 ms and cap 1 s.
    pub fn configure(&self, broker: Option<&Mosquitto>, extra: &str) {
        let mqtt = broker
            .map(|b| format!("[mqtt]\nhost = \"{}\"\nport = {}\n", b.host(), b.port()))
            .unwrap_or_default();
        let text = format!(
            "[state]\ndir = \"{}\"\n\n[sensor]\nkind = \"simulated\"\ninterval = \"50ms\"\n\n[reconnect]\nbase = \"50ms\"\ncap = \"1s\"\n\n{mqtt}\n{extra}",
            self.state().display()
        );
        fs::write(self.config(), text).expect("write agent.toml");
    }

    /// Writes `conf.d/<name>` beside the config file (merged last, in name order).
    pub fn dropin(&self, name: &str, text: &str) {
        let dir = self.dir.path().join("conf.d");
        fs::create_dir_all(&dir).expect("conf.d");
        fs::write(dir.join(name), text).expect("write drop-in");
    }

    /// Runs the agent's commands inside network namespace `ns` (see [`crate::netns`]).
    pub fn set_netns(&mut self, ns: &str) {
        self.netns = Some(ns.to_owned());
    }

    /// A command for `autoprov-agent --config agent.toml ARGS`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = self.runner.command("autoprov-agent");
        c.arg("--config").arg(self.config()).args(args);
        c.env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("JOURNAL_STREAM");
        match &self.netns {
            Some(ns) => crate::netns::wrap(ns, &c),
            None => c,
        }
    }

    /// Runs `autoprov-agent check`, asserts it succeeds with an `ok` line naming each of
    /// `names`, and returns its output.
    pub fn check_ok(&self, names: &[&str]) -> String {
        let out = self.command(&["check"]).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}\n{out:?}");
        for name in names {
            assert!(
                stdout
                    .lines()
                    .any(|l| l.starts_with("ok") && l.contains(name)),
                "{name} not ok:\n{stdout}"
            );
        }
        stdout
    }

    /// Starts `autoprov-agent run`, logging to `agent-<n>.log`.
    pub fn spawn(&self) -> AgentProcess {
        self.spawn_with(|_| {})
    }

    /// Like [`AgentEnv::spawn`], with a chance to adjust the command (environment).
    pub fn spawn_with(&self, adjust: impl FnOnce(&mut Command)) -> AgentProcess {
        let n = fs::read_dir(self.path())
            .map(|d| d.count())
            .unwrap_or_default();
        let log = self.path().join(format!("agent-{n}.log"));
        let file = fs::File::create(&log).expect("agent log");
        let mut cmd = self.command(&["run"]);
        cmd.env("AUTOPROV_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log fd"))
            .stderr(file);
        adjust(&mut cmd);
        AgentProcess {
            child: Some(cmd.spawn().expect("spawn autoprov-agent")),
            log,
        }
    }
}

/// A running agent.
pub struct AgentProcess {
    child: Option<Child>,
    log: PathBuf,
}

impl AgentProcess {
    /// Its log so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// SIGKILL, and wait.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait for the exit status (at most `timeout`, then SIGKILL and panic).
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let mut c = self.child.take().expect("agent running");
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let mut status = None;
        wait_until(timeout, || {
            status = c.try_wait().ok().flatten();
            status.is_some()
        });
        match status {
            Some(s) => s,
            None => {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "agent did not exit within {timeout:?} of SIGTERM:\n{}",
                    self.log()
                );
            }
        }
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill9();
        crate::leaks::keep_log(&self.log, "agent.log");
    }
}
