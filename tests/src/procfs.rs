//! A process's memory and CPU time from `/proc`, for the benchmarks' figures.

use std::fs;

/// A `kB` field of `/proc/PID/status` (e.g. `VmRSS:`, `VmHWM:`), in KiB; 0 once it is gone.
pub fn proc_status(pid: u32, key: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, in seconds (USER_HZ = 100 on Linux).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

/// A process's resident memory by mapping, from `/proc/PID/smaps`, in KiB, largest first:
/// file-backed mappings by file name, `[heap]` (the main malloc arena), `[stack]` (the main
/// thread's), and `[anon]` for the other anonymous mappings (thread stacks, other malloc arenas,
/// the runtime's own allocations).
pub fn rss_by_mapping(pid: u32) -> Vec<(String, u64)> {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut sums: std::collections::BTreeMap<String, u64> = Default::default();
    let mut current = String::from("[anon]");
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if first == "Rss:" {
            let kib: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            *sums.entry(current.clone()).or_default() += kib;
        } else if !first.ends_with(':') && first.contains('-') {
            // A mapping's header: range, permissions, offset, device, inode, then the path.
            current = match fields.nth(4) {
                Some(p) if p.starts_with('[') => p.to_owned(),
                Some(p) => p.rsplit('/').next().unwrap_or(p).to_owned(),
                None => "[anon]".to_owned(),
            };
        }
    }
    let mut v: Vec<(String, u64)> = sums.into_iter().filter(|(_, k)| *k > 0).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}
