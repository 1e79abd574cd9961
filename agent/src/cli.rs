//! The command line: parsing, logging set-up, dispatch and exit codes.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};

use crate::check;
use crate::clock::{rfc3339, unix_now};
use crate::config::{Config, DEFAULT_CONFIG, DEFAULT_CONFIG_PATH};
use crate::import::{self, ImportOptions, ImportOutcome};
use crate::run;
use crate::sensor::{self, Sampler};

/// The device agent of autoprov: DHT11 readings over MQTT with mutual TLS, through a durable spool.
#[derive(Debug, Parser)]
#[command(
    name = "autoprov-agent",
    version,
    about,
    after_help = "\
Examples:
  autoprov-agent                                   # run with /etc/autoprov/agent.toml
  autoprov-agent import --from /boot/firmware/autoprov --to /var/lib/autoprov/credentials
  autoprov-agent check
  autoprov-agent read-sensor --count 5
  autoprov-agent print-default-config > agent.toml"
)]
pub struct Cli {
    /// The configuration file (conf.d/*.toml beside it are read too).
    #[arg(long, global = true, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read the sensor, spool and publish readings until SIGTERM (the default).
    Run,
    /// Install a device bundle as the device's credentials (atomic, idempotent).
    Import {
        /// The bundle directory, e.g. /boot/firmware/autoprov.
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// The credentials directory, e.g. /var/lib/autoprov/credentials.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Leave the private key on the card (it is overwritten and deleted otherwise).
        #[arg(long)]
        keep_source: bool,
        /// Give the imported files to this user (the agent's service user).
        #[arg(long, value_name = "USER")]
        owner: Option<String>,
    },
    /// Check configuration, credentials, certificate expiry, clock and broker.
    Check,
    /// Print readings as JSON lines (for bringing up hardware).
    ReadSensor {
        /// How many readings.
        #[arg(long, default_value_t = 1)]
        count: u64,
    },
    /// Print the documented default configuration.
    PrintDefaultConfig,
}

fn init_logging() {
    use tracing_subscriber::filter::LevelFilter;
    let level = match std::env::var("AUTOPROV_LOG").as_deref() {
        Ok("error") => LevelFilter::ERROR,
        Ok("warn") => LevelFilter::WARN,
        Ok("debug") => LevelFilter::DEBUG,
        Ok("trace") => LevelFilter::TRACE,
        _ => LevelFilter::INFO,
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false);
    // Under systemd the journal adds its own timestamps.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().with_ansi(false).init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

/// Parses the command line, runs the command and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command.unwrap_or(Command::Run) {
        Command::PrintDefaultConfig => {
            print!("{DEFAULT_CONFIG}");
            ExitCode::SUCCESS
        }
        Command::Run => {
            let config = match Config::load(&cli.config) {
                Ok(c) => c,
                Err(e) => return usage_error(&e),
            };
            match run::run(&config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.is_config() => usage_error(&e),
                Err(e) => failure(&e),
            }
        }
        Command::Import {
            from,
            to,
            keep_source,
            owner,
        } => import_cmd(ImportOptions {
            from,
            to,
            keep_source,
            owner,
        }),
        Command::Check => {
            let config = match Config::load(&cli.config) {
                Ok(c) => c,
                Err(e) => {
                    println!("FAIL  {:<24} {e}", "config");
                    return ExitCode::from(2);
                }
            };
            let results = check::run_checks(&config);
            match check::print(&results, &mut std::io::stdout()) {
                check::Verdict::Fail => ExitCode::from(1),
                _ => ExitCode::SUCCESS,
            }
        }
        Command::ReadSensor { count } => {
            let config = match Config::load(&cli.config) {
                Ok(c) => c,
                Err(e) => return usage_error(&e),
            };
            read_sensor(&config, count)
        }
    }
}

fn usage_error(e: &dyn std::fmt::Display) -> ExitCode {
    tracing::error!("{e}");
    ExitCode::from(2)
}

fn failure(e: &dyn std::fmt::Display) -> ExitCode {
    tracing::error!("{e}");
    ExitCode::from(1)
}

fn import_cmd(opts: ImportOptions) -> ExitCode {
    match import::import(&opts) {
        Ok(ImportOutcome::NothingToImport) => {
            tracing::info!("no bundle in {}: nothing to import", opts.from.display());
            ExitCode::SUCCESS
        }
        Ok(ImportOutcome::AlreadyImported { serial }) => {
            tracing::info!(
                "the bundle in {} (serial {serial}) is already imported",
                opts.from.display()
            );
            ExitCode::SUCCESS
        }
        Ok(ImportOutcome::Imported {
            device_id,
            serial,
            previous,
        }) => {
            tracing::info!(
                "imported {device_id} (serial {serial}) into {}{}{}",
                opts.to.display(),
                previous
                    .map(|p| format!("; previous set {p} kept for rollback"))
                    .unwrap_or_default(),
                if opts.keep_source {
                    "; the key stays on the card (--keep-source)"
                } else {
                    "; the key on the card was overwritten and deleted"
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("import refused, nothing changed: {e}");
            ExitCode::from(1)
        }
    }
}

fn read_sensor(config: &Config, count: u64) -> ExitCode {
    let sensor = match sensor::open(&config.sensor) {
        Ok(s) => s,
        Err(e) => return failure(&e),
    };
    let mut sampler = Sampler::new(sensor);
    let mut out = std::io::stdout().lock();
    let mut good = 0;
    for i in 0..count {
        let started = Instant::now();
        let deadline = started + config.sensor.interval;
        if let Some(m) = sampler.sample(deadline, &|| false) {
            good += 1;
            let line = serde_json::json!({
                "ts": rfc3339(unix_now()),
                "temperature_c": m.temperature_c,
                "humidity_pct": m.humidity_pct,
            });
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        if i + 1 < count {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        }
    }
    let s = sampler.stats;
    if s.failed_reads + s.out_of_range > 0 {
        tracing::warn!(
            "{} failed and {} impossible reads were retried",
            s.failed_reads,
            s.out_of_range
        );
    }
    if good == count {
        ExitCode::SUCCESS
    } else {
        tracing::error!("{} of {count} readings failed", count - good);
        ExitCode::from(1)
    }
}
