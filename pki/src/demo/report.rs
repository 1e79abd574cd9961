//! What the demo saw, device by device, and the closing summary it prints.

use std::path::Path;
use std::time::Instant;

use super::short;

/// What the demo saw of one device.
#[derive(Debug, Clone, Default)]
pub struct DeviceReport {
    /// The device id.
    pub id: String,
    /// Every certificate serial it connected with, in order.
    pub serials: Vec<String>,
    /// Readings accepted by the broker (duplicates included).
    pub readings: u64,
    /// The distinct seq values received, sorted.
    pub seqs: Vec<u64>,
    /// Seqs missing between 1 and the highest received.
    pub gaps: Vec<u64>,
    /// Whether it is connected now.
    pub connected: bool,
    /// The last measurement: temperature, humidity.
    pub last: Option<(f64, f64)>,
    /// When the last reading arrived.
    pub last_at: Option<Instant>,
}

/// What the demo showed, and which of its checks failed.
#[derive(Debug, Clone, Default)]
pub struct DemoReport {
    /// Per device, in id order.
    pub devices: Vec<DeviceReport>,
    /// Why the broker refused the card from another CA, if it did.
    pub rogue_refused: Option<String>,
    /// The rotated device, its old and new serial, and the first seq under the new one.
    pub rotation: Option<Rotation>,
    /// Why the broker refused the clone of the old card after revocation, if it did.
    pub revoked_refused: Option<String>,
    /// Every check that failed, in words.
    pub failures: Vec<String>,
}

/// A rotation as the demo saw it.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The device.
    pub device: String,
    /// The certificate before.
    pub old_serial: String,
    /// The certificate after.
    pub new_serial: String,
    /// The highest seq received under the old certificate.
    pub last_old_seq: Option<u64>,
    /// The lowest seq received under the new certificate.
    pub first_new_seq: Option<u64>,
}

impl DemoReport {
    /// The closing summary: what happened, which checks failed, where the files are (`kept`).
    pub fn lines(&self, kept: Option<&Path>) -> Vec<String> {
        let mut lines = vec![String::new(), "what happened:".to_owned()];
        for r in &self.devices {
            let range = match (r.seqs.first(), r.seqs.last()) {
                (Some(a), Some(b)) => format!("seq {a}..{b}"),
                _ => "no seq".into(),
            };
            lines.push(format!(
                "  {}: {} readings, {range}, {} under its own identity, certificate(s) {}",
                r.id,
                r.readings,
                if r.gaps.is_empty() {
                    "contiguous"
                } else {
                    "WITH GAPS"
                },
                r.serials
                    .iter()
                    .map(|s| short(s))
                    .collect::<Vec<_>>()
                    .join(" -> ")
            ));
        }
        if let Some(why) = &self.rogue_refused {
            lines.push(format!("  rogue card (another CA): refused ({why})"));
        }
        if let Some(rot) = &self.rotation {
            lines.push(format!(
                "  rotation of {}: {} -> {}, last seq {} under the old certificate, first {} under the new",
                rot.device,
                short(&rot.old_serial),
                short(&rot.new_serial),
                rot.last_old_seq.map_or("-".into(), |s| s.to_string()),
                rot.first_new_seq.map_or("-".into(), |s| s.to_string()),
            ));
        }
        if let Some(why) = &self.revoked_refused {
            lines.push(format!("  clone of the revoked card: refused ({why})"));
        }
        if self.failures.is_empty() {
            lines.push("every check passed".into());
        } else {
            for f in &self.failures {
                lines.push(format!("  FAILED: {f}"));
            }
        }
        lines.push(match kept {
            Some(dir) => format!(
                "everything is kept in {}: pki/ (try `autoprov --pki-dir {} list`), cards/, devices/, broker/readings.jsonl, agents.log",
                dir.display(),
                dir.join("pki").display()
            ),
            None => "the temporary directory is removed (use --keep DIR to inspect it)".into(),
        });
        lines
    }
}
