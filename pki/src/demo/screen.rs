//! What the demo shows: on a terminal a table of readings per device redrawn in place with the
//! latest events under it; otherwise (a pipe, a log, CI) plain time-stamped lines, one per event
//! and per reading, and the table once at the end.

use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{DemoError, DeviceReport};

/// How many recent events the live view keeps under the table.
const RECENT: usize = 8;
/// The live view is redrawn at most this often.
const FRAME: Duration = Duration::from_millis(200);

pub(super) struct Screen {
    live: bool,
    start: Instant,
    live_since: Option<Instant>,
    broker: Option<SocketAddr>,
    recent: VecDeque<String>,
    drawn_lines: usize,
    last_frame: Option<Instant>,
}

/// Columns and rows of the terminal on standard output.
fn terminal_size() -> Option<(usize, usize)> {
    let size = rustix::termios::tcgetwinsize(std::io::stdout()).ok()?;
    (size.ws_col > 0 && size.ws_row > 0)
        .then(|| (usize::from(size.ws_col), usize::from(size.ws_row)))
}

fn out_err(e: std::io::Error) -> DemoError {
    DemoError::Output(e)
}

impl Screen {
    pub(super) fn new(live: bool, start: Instant) -> Self {
        Self {
            live,
            start,
            live_since: None,
            broker: None,
            recent: VecDeque::new(),
            drawn_lines: 0,
            last_frame: None,
        }
    }

    fn stamp(&self) -> String {
        format!("{:6.1}s", self.start.elapsed().as_secs_f64())
    }

    /// A line of the set-up, before the devices run.
    pub(super) fn say(&mut self, out: &mut dyn Write, line: &str) -> Result<(), DemoError> {
        writeln!(out, "{}  {line}", self.stamp()).map_err(out_err)
    }

    /// From now on the table is live.
    pub(super) fn begin_live(&mut self, broker: SocketAddr) {
        self.live_since = Some(Instant::now());
        self.broker = Some(broker);
    }

    /// Something happened.
    pub(super) fn event(&mut self, out: &mut dyn Write, line: &str) -> Result<(), DemoError> {
        let line = format!("{}  {line}", self.stamp());
        if self.live && self.live_since.is_some() {
            if self.recent.len() == RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back(line);
            Ok(())
        } else {
            writeln!(out, "{line}").map_err(out_err)
        }
    }

    /// A reading arrived (a line of its own unless the table is live).
    pub(super) fn reading(
        &mut self,
        out: &mut dyn Write,
        device: &str,
        seq: u64,
        t: f64,
        h: f64,
        serial: &str,
    ) -> Result<(), DemoError> {
        if self.live {
            return Ok(());
        }
        writeln!(
            out,
            "{}  {device}  seq {seq:<4} {t:5.1} °C  {h:5.1} %   (certificate {})",
            self.stamp(),
            super::short(serial)
        )
        .map_err(out_err)
    }

    fn table(rows: &[DeviceReport]) -> Vec<String> {
        let mut lines = vec![format!(
            "{:<12} {:<11} {:<13} {:>8} {:>8} {:>8} {:>10} {:>5}",
            "DEVICE",
            "CERTIFICATE",
            "STATE",
            "READINGS",
            "LAST SEQ",
            "TEMP °C",
            "HUMIDITY %",
            "GAPS"
        )];
        for r in rows {
            let (t, h) = r.last.map_or(("-".into(), "-".into()), |(t, h)| {
                (format!("{t:.1}"), format!("{h:.1}"))
            });
            let state = match (r.connected, r.last_at) {
                (true, Some(at)) => format!("up, {:.1}s ago", at.elapsed().as_secs_f64()),
                (true, None) => "up".into(),
                (false, _) => "offline".into(),
            };
            lines.push(format!(
                "{:<12} {:<11} {:<13} {:>8} {:>8} {:>8} {:>10} {:>5}",
                r.id,
                r.serials.last().map_or("-".into(), |s| super::short(s)),
                state,
                r.readings,
                r.seqs.last().map_or("-".into(), |s| s.to_string()),
                t,
                h,
                r.gaps.len()
            ));
        }
        lines
    }

    /// Redraws the live view (at most every [`FRAME`]).
    pub(super) fn redraw(
        &mut self,
        out: &mut dyn Write,
        rows: &[DeviceReport],
        duration: Duration,
    ) -> Result<(), DemoError> {
        if !self.live || self.last_frame.is_some_and(|f| f.elapsed() < FRAME) {
            return Ok(());
        }
        self.draw(out, rows, duration)
    }

    fn draw(
        &mut self,
        out: &mut dyn Write,
        rows: &[DeviceReport],
        duration: Duration,
    ) -> Result<(), DemoError> {
        self.last_frame = Some(Instant::now());
        let running = self.live_since.map_or(0.0, |s| {
            s.elapsed().as_secs_f64().min(duration.as_secs_f64())
        });
        let mut lines = vec![format!(
            "devices publishing: {running:.1}s of {:.0}s   broker {} (mutual TLS)",
            duration.as_secs_f64(),
            self.broker.map_or("-".into(), |b| b.to_string())
        )];
        // A frame taller or wider than the terminal would scroll or wrap, and moving the cursor
        // back up by the number of lines drawn would then no longer reach its top.
        let (width, height) = terminal_size().unwrap_or((120, 50));
        let room = height.saturating_sub(3 + self.recent.len() + 1).max(2);
        let table = Self::table(rows);
        if table.len() > room {
            lines.extend(table[..room - 1].iter().cloned());
            lines.push(format!("… and {} more devices", table.len() - (room - 1)));
        } else {
            lines.extend(table);
        }
        lines.push("recent events:".into());
        lines.extend(self.recent.iter().cloned());
        for l in &mut lines {
            if let Some((cut, _)) = l.char_indices().nth(width.saturating_sub(1)) {
                l.truncate(cut);
            }
        }
        let mut frame = String::new();
        if self.drawn_lines > 0 {
            // Back to the top of the previous frame, and clear it.
            frame.push_str(&format!("\x1b[{}F\x1b[J", self.drawn_lines));
        }
        for l in &lines {
            frame.push_str(l);
            frame.push('\n');
        }
        self.drawn_lines = lines.len();
        out.write_all(frame.as_bytes()).map_err(out_err)?;
        out.flush().map_err(out_err)
    }

    /// The end of the live phase: the final table.
    pub(super) fn end_live(
        &mut self,
        out: &mut dyn Write,
        rows: &[DeviceReport],
        duration: Duration,
    ) -> Result<(), DemoError> {
        if self.live {
            self.draw(out, rows, duration)?;
            self.live = false;
            self.live_since = None;
            return Ok(());
        }
        writeln!(out).map_err(out_err)?;
        for l in Self::table(rows) {
            writeln!(out, "{l}").map_err(out_err)?;
        }
        Ok(())
    }
}
