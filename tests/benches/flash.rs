//! Flash benchmark: `autoprov flash` of a 1 GiB `.img.zst` to a file, with and without
//! verification, side by side with the baseline `zstd -dc IMG | dd of=T bs=4M conv=fsync` followed
//! by an `mcopy` of the same bundle files into the FIRMWARE partition.
//!
//! The image is built like nixpkgs' sd-image (MBR, FAT16 FIRMWARE at 8 MiB, ext4 NIXOS_SD) with
//! about 600 MiB of real files in the root partition — hard links to this machine's /usr, laid out
//! like a Nix store — and compressed with `zstd -T0` at its default level, as nixpkgs does.
//!
//! Runs are interleaved, and each round starts with a different one of the three (baseline,
//! no-verify, verify; then no-verify, verify, baseline; …), so that whatever else the machine does
//! affects all three alike; the medians are compared.
//!
//! ```sh
//! scripts/bench-flash            # builds autoprov in release, then runs this with 3 rounds
//! ```
//!
//! Environment: `AUTOPROV_BIN_DIR` (the release `autoprov`), `FLASH_BENCH_ROUNDS` (default 3),
//! `FLASH_BENCH_DIR` (where the 1 GiB image and targets go; default a temporary directory).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use autoprov_tests::bins::bin;
use autoprov_tests::image::{self, Layout, run, tool};

const MIB: u64 = 1 << 20;
const ROOT_DATA: u64 = 600 * MIB;

/// The three runs of a round.
#[derive(Clone, Copy)]
enum Run {
    /// `zstd -dc | dd` and `mcopy`.
    Baseline,
    /// `autoprov flash`, with or without `--no-verify`.
    Flash { verify: bool },
}

const RUNS: [Run; 3] = [
    Run::Baseline,
    Run::Flash { verify: false },
    Run::Flash { verify: true },
];

/// Hard-links regular files from `sources` under `dest/nix/store/` until `limit` bytes.
fn populate(dest: &Path, sources: &[&str], limit: u64) -> (u64, u64) {
    let (mut bytes, mut files) = (0u64, 0u64);
    let mut stack: Vec<(PathBuf, PathBuf)> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let name = format!(
                "{:032x}-{}",
                0x5eed_0000u64 + i as u64,
                Path::new(s).file_name().unwrap().to_string_lossy()
            );
            (PathBuf::from(s), dest.join("nix/store").join(name))
        })
        .collect();
    stack.reverse();
    while let Some((src, dst)) = stack.pop() {
        if bytes + MIB >= limit {
            break;
        }
        let Ok(meta) = fs::symlink_metadata(&src) else {
            continue;
        };
        if meta.is_dir() {
            if fs::create_dir_all(&dst).is_err() {
                continue;
            }
            let Ok(rd) = fs::read_dir(&src) else { continue };
            let mut entries: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
            entries.sort();
            for name in entries.into_iter().rev() {
                stack.push((src.join(&name), dst.join(&name)));
            }
        } else if meta.is_file() && bytes + meta.len() <= limit && fs::hard_link(&src, &dst).is_ok()
        {
            bytes += meta.len();
            files += 1;
        }
    }
    (bytes, files)
}

fn time(mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn main() {
    let rounds: usize = std::env::var("FLASH_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let tmp = tempfile::tempdir().unwrap();
    let work = std::env::var_os("FLASH_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_owned());
    fs::create_dir_all(&work).unwrap();
    let autoprov = bin("autoprov");

    // The image: 8 MiB gap + 30 MiB FIRMWARE + 986 MiB root = 1 GiB.
    let t = Instant::now();
    let rootfs = work.join("rootfs");
    let _ = fs::remove_dir_all(&rootfs);
    let (data, files) = populate(
        &rootfs,
        &[
            "/usr/lib/x86_64-linux-gnu",
            "/usr/bin",
            "/usr/share",
            "/usr/lib",
        ],
        ROOT_DATA,
    );
    let built = image::build(
        &work,
        "bench",
        &Layout {
            root_mib: 986,
            root_dir: Some(rootfs.clone()),
            ..Layout::default()
        },
    );
    fs::remove_dir_all(&rootfs).unwrap();
    let zst = image::compress(&built.img);
    let img_len = fs::metadata(&built.img).unwrap().len();
    let zst_len = fs::metadata(&zst).unwrap().len();
    fs::remove_file(&built.img).unwrap();
    println!(
        "image: {} MiB raw ({} files, {} MiB of data in the root partition), {} MiB as .img.zst; built in {}",
        img_len / MIB,
        files,
        data / MIB,
        zst_len / MIB,
        secs(t.elapsed())
    );

    let pki = work.join("pki");
    let _ = fs::remove_dir_all(&pki);
    let autoprov_cmd = || {
        let mut c = Command::new(&autoprov);
        c.arg("--pki-dir").arg(&pki);
        c
    };
    run(autoprov_cmd().args(["ca", "init", "--name", "Bench"]));
    // The same bundle files for the baseline's mcopy.
    let bundle = work.join("bundle");
    let _ = fs::remove_dir_all(&bundle);
    run(autoprov_cmd()
        .args(["issue", "bench-mcopy", "--out"])
        .arg(&bundle));

    let target = work.join("card.img");
    let boot_at = format!("{}@@{}", target.display(), built.boot.start);
    let (mut base, mut base_dd, mut plain, mut verified) = (vec![], vec![], vec![], vec![]);
    let mut injects: Vec<String> = vec![];
    for round in 0..rounds {
        // The three runs take turns at going first: on a virtual disk a run can pay for the
        // writeback of the gigabyte written before it, and a fixed order would hand that cost
        // to the same contestant every round.
        for turn in 0..RUNS.len() {
            let _ = fs::remove_file(&target);
            match RUNS[(round + turn) % RUNS.len()] {
                Run::Baseline => {
                    let mut dd = Duration::ZERO;
                    base.push(time(|| {
                        dd = time(|| {
                            run(Command::new("sh").arg("-c").arg(format!(
                                "zstd -dc '{}' | dd of='{}' bs=4M conv=fsync status=none",
                                zst.display(),
                                target.display()
                            )));
                        });
                        run(tool("mmd").arg("-i").arg(&boot_at).arg("::/autoprov"));
                        let mut mcopy = tool("mcopy");
                        mcopy.arg("-i").arg(&boot_at);
                        for f in fs::read_dir(&bundle).unwrap().flatten() {
                            mcopy.arg(f.path());
                        }
                        run(mcopy.arg("::/autoprov/"));
                    }));
                    base_dd.push(dd);
                }
                Run::Flash { verify } => {
                    let device = format!("bench-{round}-{}", if verify { "v" } else { "n" });
                    let mut cmd = autoprov_cmd();
                    cmd.args(["flash", &device, "--image"])
                        .arg(&zst)
                        .arg("--to")
                        .arg(&target);
                    if !verify {
                        cmd.arg("--no-verify");
                    }
                    let mut report = String::new();
                    let took = time(|| report = run(&mut cmd));
                    if verify {
                        verified.push(took);
                    } else {
                        plain.push(took);
                    }
                    if let Some(line) = report.lines().find(|l| l.contains("timings:")) {
                        injects.push(line.trim().to_owned());
                    }
                }
            }
        }
        println!(
            "round {}: baseline {} (dd {}), flash --no-verify {}, flash {}",
            round + 1,
            secs(base[round]),
            secs(base_dd[round]),
            secs(plain[round]),
            secs(verified[round])
        );
    }
    let _ = fs::remove_file(&target);

    let (b, p, v) = (median(&base), median(&plain), median(&verified));
    println!();
    println!("median of {rounds} rounds, 1 GiB .img.zst to a file on this machine's disk:");
    println!(
        "  baseline  zstd -dc | dd bs=4M conv=fsync + mcopy   {:>8}   (dd alone {})",
        secs(b),
        secs(median(&base_dd))
    );
    println!(
        "  autoprov flash --no-verify                         {:>8}   {:.2}x baseline (target <= 1.05x)",
        secs(p),
        p.as_secs_f64() / b.as_secs_f64()
    );
    println!(
        "  autoprov flash (read back with O_DIRECT)           {:>8}   {:.2}x baseline (target <= 1.3x)",
        secs(v),
        v.as_secs_f64() / b.as_secs_f64()
    );
    println!("autoprov's own step timings (inject is the in-memory injection, target < 200 ms):");
    for line in injects {
        println!("  {line}");
    }
}
