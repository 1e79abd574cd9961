//! One simulated device of the demo: its card folder, its state directory and `agent.toml`,
//! and the agent's own `run_until` on a thread of its own, logging into the shared log with a
//! span naming the device.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use autoprov_agent::config::Config;
use autoprov_agent::import::{ImportOptions, ImportOutcome, import};
use autoprov_agent::run::{RunError, run_until};
use autoprov_bundle::DeviceId;
use tokio::sync::oneshot;

use super::{DemoError, io_at};

/// A device agent running `run_until` on its own thread.
pub(super) struct AgentThread {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), RunError>>>,
}

impl AgentThread {
    pub(super) fn start(
        name: &str,
        config: Config,
        log: &tracing::Dispatch,
    ) -> Result<Self, DemoError> {
        let (tx, rx) = oneshot::channel::<()>();
        let log = log.clone();
        let span_name = name.to_owned();
        let thread = std::thread::Builder::new()
            .name(format!("agent {name}"))
            .spawn(move || {
                tracing::dispatcher::with_default(&log, || {
                    tracing::info_span!("agent", device = %span_name).in_scope(|| {
                        run_until(&config, async move {
                            let _ = rx.await;
                        })
                    })
                })
            })
            .map_err(|e| DemoError::Device {
                device: name.to_owned(),
                why: format!("cannot start its thread: {e}"),
            })?;
        Ok(Self {
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// Tells it to stop, without waiting.
    pub(super) fn signal(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Stops it as SIGTERM would (acknowledgements awaited, spool and seq persisted) and
    /// returns the error it stopped with, if any.
    pub(super) fn stop(&mut self) -> Option<String> {
        self.signal();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => Some(e.to_string()),
            Some(Err(_)) => Some("its thread panicked".into()),
            _ => None,
        }
    }
}

impl Drop for AgentThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One simulated device: its card, its state, its configuration.
pub(super) struct Device {
    pub(super) id: DeviceId,
    pub(super) card: PathBuf,
    pub(super) dir: PathBuf,
}

impl Device {
    pub(super) fn new(work: &Path, id: DeviceId) -> Self {
        Self {
            card: work.join("cards").join(id.as_str()),
            dir: work.join("devices").join(id.as_str()),
            id,
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn config_file(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }

    /// Writes `agent.toml` (what the image would ship) for the broker at `port`; the broker's
    /// certificate is checked against `broker_ca` if given, else the bundle's `ca.crt`.
    pub(super) fn configure(
        &self,
        port: u16,
        interval: Duration,
        seed: u64,
        broker_ca: Option<&Path>,
    ) -> Result<(), DemoError> {
        fs::create_dir_all(&self.dir).map_err(io_at(&self.dir))?;
        let mut table = toml::toml! {
                [state]
                dir = (self.state().display().to_string())

                [sensor]
                kind = "simulated"
                interval = (format!("{}ms", interval.as_millis()))
                seed = (seed as i64)

                [mqtt]
                host = "127.0.0.1"
                port = (i64::from(port))

                [reconnect]
                base = "200ms"
                cap = "2s"
        };
        if let (Some(ca), Some(toml::Value::Table(mqtt))) = (broker_ca, table.get_mut("mqtt")) {
            mqtt.insert("ca_file".into(), ca.display().to_string().into());
        }
        let text = format!(
            "# The image's agent.toml for this simulated device (device.id comes from the bundle).\n{}",
            toml::to_string(&table).map_err(|e| DemoError::Device {
                device: self.id.to_string(),
                why: format!("agent.toml: {e}"),
            })?
        );
        let path = self.config_file();
        fs::write(&path, text).map_err(io_at(&path))
    }

    /// `autoprov-agent import --from card --to state/credentials`, through the agent's library.
    pub(super) fn import(&self) -> Result<ImportOutcome, DemoError> {
        import(&ImportOptions {
            from: self.card.clone(),
            to: self.state().join("credentials"),
            keep_source: false,
            owner: None,
        })
        .map_err(|e| DemoError::Device {
            device: self.id.to_string(),
            why: format!("import: {e}"),
        })
    }

    pub(super) fn start(
        &self,
        log: &tracing::Dispatch,
        label: &str,
    ) -> Result<AgentThread, DemoError> {
        let config = Config::load(&self.config_file()).map_err(|e| DemoError::Device {
            device: self.id.to_string(),
            why: e.to_string(),
        })?;
        AgentThread::start(label, config, log)
    }
}
