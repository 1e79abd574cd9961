//! `autoprov demo`: the whole flow on this machine (see [`crate::demo`]).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use autoprov_agent::units::HumanDuration;
use clap::Args;

use crate::Error;
use crate::demo::{self, DemoError, DemoOptions};

/// Arguments of `autoprov demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many simulated devices.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub devices: u16,
    /// How long the devices publish, e.g. 20s or 1m.
    #[arg(long, default_value = "20s", value_name = "DURATION")]
    pub duration: HumanDuration,
    /// The simulated sensor's reading interval.
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    pub interval: HumanDuration,
    /// Work in DIR (new or empty) and keep everything there: CA, cards, device state, logs.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// Plain lines even on a terminal (no table redrawn in place).
    #[arg(long)]
    pub plain: bool,
}

/// Runs the demo; its checks failing is a runtime failure (exit 1).
pub fn demo(args: &DemoArgs) -> Result<(), Error> {
    let stdout = std::io::stdout();
    let live =
        !args.plain && stdout.is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb");
    let opts = DemoOptions {
        devices: args.devices,
        duration: args.duration.0,
        interval: args.interval.0,
        keep: args.keep.clone(),
        live,
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    demo::watch_ctrl_c(interrupted.clone());
    let report = demo::run(&opts, &mut stdout.lock(), &interrupted)?;
    if report.failures.is_empty() {
        Ok(())
    } else {
        Err(DemoError::Checks(report.failures).into())
    }
}
