//! Writes the seed corpus of every fuzz target into `DIR/<target>/` (default `fuzz/seeds`):
//! real inputs made by the project's own code (a CA and bundles from `autoprov`, spool segments
//! written by the agent's spool, FAT filesystems formatted by `mkfs.vfat` when it is installed
//! and by `fatfs`, with a bundle injected by `autoprov`), so no binary corpus is committed.
//!
//! Usage: `seeds [DIR]`.

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;

use autoprov::flash::fat;
use autoprov::{DeviceId, InitOptions, IssueOptions, KeyType, Pki};
use autoprov_agent::config::{DEFAULT_CONFIG, FsyncPolicy};
use autoprov_agent::sensor::Pulse;
use autoprov_agent::spool::{Spool, SpoolOptions};
use autoprov_bundle::Bundle;
use autoprov_fuzz::{SpoolInput, encode_pulses, join, sample_bundle, spool_record, with_header};

// `cargo fuzz build` builds this binary with the targets' coverage instrumentation, whose
// callbacks live in libFuzzer: an empty target links it in. `main` below is this program's own,
// so the fuzzer never runs.
libfuzzer_sys::fuzz_target!(|_data: &[u8]| {});

struct Seeds {
    root: PathBuf,
    count: usize,
}

impl Seeds {
    fn put(&mut self, target: &str, name: &str, data: &[u8]) {
        let dir = self.root.join(target);
        fs::create_dir_all(&dir).expect("seed directory");
        fs::write(dir.join(format!("seed-{name}")), data).expect("seed file");
        self.count += 1;
    }
}

fn main() {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("fuzz/seeds"));
    let _ = fs::remove_dir_all(&root);
    let mut s = Seeds { root, count: 0 };
    bundles(&mut s);
    configs(&mut s);
    dht11(&mut s);
    spool(&mut s);
    images(&mut s);
    cloud(&mut s);
    println!("{} seeds in {}", s.count, s.root.display());
}

/// Bundles from real CAs: two-tier and single-tier, each key type, with and without Wi-Fi.
fn bundles(s: &mut Seeds) {
    let cases = [
        ("p256", KeyType::EcdsaP256, false),
        ("p384-single", KeyType::EcdsaP384, true),
        ("rsa", KeyType::Rsa2048, false),
    ];
    for (name, key_type, single_tier) in cases {
        let tmp = tempfile::tempdir().expect("temp dir");
        let opts = InitOptions {
            name: "fuzz".into(),
            key_type,
            single_tier,
            ..InitOptions::default()
        };
        Pki::init(tmp.path(), &opts).expect("ca init");
        let mut pki = Pki::open(tmp.path(), None).expect("open pki");
        let id = DeviceId::new(format!("sensor-{name}")).expect("id");
        let mut settings = toml::Table::new();
        let mut sensor = toml::Table::new();
        sensor.insert("interval".into(), "30s".into());
        settings.insert("sensor".into(), sensor.into());
        let issue = IssueOptions {
            key_type,
            settings,
            wifi_conf: (!single_tier).then(|| {
                b"network={\n  ssid=\"farm\"\n  psk=\"secret\"\n}\n"
                    .to_vec()
                    .into()
            }),
            ..IssueOptions::default()
        };
        let bundle = pki.issue_device(&id, &issue).expect("issue").bundle;
        s.put(
            "bundle_manifest",
            name,
            bundle.manifest().to_toml().as_bytes(),
        );
        let mut parts: Vec<&[u8]> = vec![
            id.as_str().as_bytes(),
            bundle.device_crt(),
            bundle.device_key(),
            bundle.ca_crt(),
            bundle.device_toml(),
        ];
        parts.extend(bundle.wifi_conf());
        s.put("bundle_import", name, &join(&parts));
        for (i, der) in pem_blocks(bundle.device_crt())
            .into_iter()
            .chain(pem_blocks(bundle.ca_crt()))
            .enumerate()
        {
            s.put("x509_cert", &format!("{name}-{i}"), &der);
        }
    }
    s.put(
        "bundle_manifest",
        "sample",
        sample_bundle().manifest().to_toml().as_bytes(),
    );
}

/// The DER of every PEM block in `pem` (the seeds are real certificates, decoded by the same
/// crate the agent uses).
fn pem_blocks(pem: &[u8]) -> Vec<Vec<u8>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .map(|c| c.to_vec())
        .collect()
}

/// The documented defaults and layers like the README's examples.
fn configs(s: &mut Seeds) {
    let device = "[device]\nid = \"sensor-007\"\n";
    s.put("agent_config", "defaults", DEFAULT_CONFIG.as_bytes());
    s.put(
        "agent_config",
        "layers",
        &join(&[
            b"[mqtt]\nhost = \"broker.example.net\"\nport = 8883\nca_file = \"/etc/autoprov/broker-ca.crt\"\n",
            device.as_bytes(),
            b"[sensor]\nkind = \"gpio\"\ngpio = 4\ninterval = \"2s\"\n",
            b"[spool]\nmax_size = \"1MiB\"\nfsync = \"batch\"\nbatch_interval = \"500ms\"\n",
        ]),
    );
    s.put(
        "agent_config",
        "aws",
        &join(&[
            b"[cloud]\nprofile = \"aws\"\n[aws]\nendpoint = \"abc-ats.iot.eu-west-1.amazonaws.com\"\nport = 443\ntopic = \"dt/{device_id}/t\"\n",
            device.as_bytes(),
        ]),
    );
    s.put(
        "agent_config",
        "azure",
        &join(&[
            b"[cloud]\nprofile = \"azure\"\n[azure]\nid_scope = \"0ne00ABCDEF\"\n[reconnect]\nbase = \"1s\"\ncap = \"5m\"\n",
            device.as_bytes(),
            b"[sensor]\nkind = \"simulated\"\nseed = 7\nfailure_rate = 0.25\ninterval = \"100ms\"\n[state]\ndir = \"/tmp/state\"\n",
            b"[mqtt]\nkeep_alive = \"1h\"\nin_flight = 10\nclean_session = true\ntopic = \"x\"\n",
        ]),
    );
}

/// Clean DHT11 answers, as pulses and as edge timestamps.
fn dht11(s: &mut Seeds) {
    for (name, bytes) in [
        ("45-21", [45u8, 0, 21, 3, 69]),
        ("90-50", [90, 0, 50, 0, 140]),
        ("20-0-neg", [20, 0, 0, 0x85, 165]),
    ] {
        let mut levels = vec![(true, 30u32), (false, 80), (true, 80)];
        for bit in 0..40 {
            let one = bytes[bit / 8] & (0x80 >> (bit % 8)) != 0;
            levels.push((false, 50));
            levels.push((true, if one { 70 } else { 27 }));
        }
        levels.push((false, 50));
        let pulses: Vec<Pulse> = levels
            .iter()
            .map(|&(high, micros)| Pulse { high, micros })
            .collect();
        s.put("dht11", &format!("pulses-{name}"), &encode_pulses(&pulses));
        let mut edges = vec![1u8];
        for &(high, micros) in &levels {
            edges.push(u8::from(high));
            edges.extend_from_slice(&(micros as u16).to_le_bytes());
        }
        s.put("dht11", &format!("edges-{name}"), &edges);
    }
}

/// Spool directories written by the agent's own spool: one segment, several segments with
/// some acknowledged, and a torn tail.
fn spool(s: &mut Seeds) {
    let payload = |seq: u64| {
        format!(
            "{{\"device_id\":\"sensor-007\",\"seq\":{seq},\"ts\":\"2026-01-01T00:00:00Z\",\"temperature_c\":21.3,\"humidity_pct\":45.0}}"
        )
    };
    for (name, count, acked) in [("one", 5u64, 0u64), ("many", 120, 37)] {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("spool");
        let opts = SpoolOptions {
            max_size: 64 * 1024,
            fsync: FsyncPolicy::Always,
        };
        let mut spool = Spool::open(&dir, opts).expect("spool");
        for seq in 1..=count {
            spool.append(seq, payload(seq).as_bytes()).expect("append");
        }
        while let Some(rec) = spool.next_unsent().expect("read") {
            if rec.seq <= acked {
                spool.ack(rec.seq).expect("ack");
            }
        }
        spool.persist_acked().expect("acked");
        drop(spool);
        s.put("spool_segment", name, &spool_input(&dir).encode());
    }
    let mut torn = spool_record(1, payload(1).as_bytes());
    torn.extend_from_slice(&spool_record(2, payload(2).as_bytes())[..20]);
    let input = SpoolInput {
        fix_crcs: true,
        segments: vec![(1, torn)],
        ..SpoolInput::default()
    };
    s.put("spool_segment", "torn", &input.encode());
}

fn spool_input(dir: &Path) -> SpoolInput {
    let mut input = SpoolInput::default();
    let mut names: Vec<PathBuf> = fs::read_dir(dir)
        .expect("spool dir")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    for path in names {
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if file == "acked" {
            input.write_acked = true;
            input.acked = fs::read_to_string(&path)
                .expect("acked")
                .trim()
                .parse()
                .expect("number");
        } else if let Some(stem) = file.strip_suffix(".seg") {
            let name = stem.parse().expect("segment name");
            input
                .segments
                .push((name, fs::read(&path).expect("segment")));
        }
    }
    input
}

/// FAT filesystems (FAT12, FAT16, FAT32; mkfs.vfat's and fatfs' layouts; empty and with a bundle)
/// for `fat_inject`, and MBR and GPT images around them for `partition_table`.
fn images(s: &mut Seeds) {
    let mut fats: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, mib, fat32) in [
        ("fat12", 1u64, false),
        ("fat16", 8, false),
        ("fat32", 33, true),
    ] {
        if let Some(img) = mkfs_vfat(mib, fat32) {
            fats.push((format!("mkfs-{name}"), img));
        }
        let mut img = vec![0u8; (mib << 20) as usize];
        let mut opts = fatfs::FormatVolumeOptions::new().volume_label(*b"FIRMWARE   ");
        if fat32 {
            opts = opts.fat_type(fatfs::FatType::Fat32).bytes_per_cluster(512);
        }
        fatfs::format_volume(Cursor::new(&mut img[..]), opts).expect("format");
        fats.push((format!("fatfs-{name}"), img));
    }
    let bundle: Bundle = sample_bundle();
    let mut with_bundle = Vec::new();
    for (name, img) in &fats {
        let mut img = img.clone();
        if fat::inject(&mut img, &bundle).is_ok() {
            with_bundle.push((format!("{name}-bundle"), img));
        }
    }
    fats.extend(with_bundle);
    for (name, img) in &fats {
        let sectors = (img.len() / 512) as u32;
        s.put("fat_inject", name, &with_header(0, sectors, trimmed(img)));
    }

    // Partition tables: nixpkgs' layout (FAT at 8 MiB, then Linux), and tables whose FAT boot
    // sector lies within the input so the probe of each partition is reached.
    let (fat_name, fat) = &fats[0];
    let fat_sectors = (fat.len() / 512) as u32;
    let mut nixpkgs = mbr(&[(0x0b, 16384, 61440), (0x83, 77824, 2_000_000)]);
    nixpkgs.truncate(512);
    s.put(
        "partition_table",
        "mbr-nixpkgs",
        &with_header(0, 77824 + 2_000_000, &nixpkgs),
    );
    let mut near = mbr(&[(0x0c, 1, fat_sectors), (0x83, 1 + fat_sectors, 4096)]);
    near.truncate(512);
    near.extend_from_slice(&fat[..4096]);
    s.put(
        "partition_table",
        &format!("mbr-{fat_name}"),
        &with_header(0, 1 + fat_sectors + 4096, &near),
    );
    let mut g = gpt(&[(34, 33 + u64::from(fat_sectors)), (40000, 49999)]);
    g.extend_from_slice(&fat[..4096]);
    s.put("partition_table", "gpt", &with_header(0, 60000, &g));
}

/// A FAT filesystem made by `mkfs.vfat` (what nixpkgs' sd-image uses), if it is installed.
fn mkfs_vfat(mib: u64, fat32: bool) -> Option<Vec<u8>> {
    let tmp = tempfile::tempdir().ok()?;
    let path = tmp.path().join("fat.img");
    fs::File::create(&path).ok()?.set_len(mib << 20).ok()?;
    let mut cmd = Command::new("mkfs.vfat");
    cmd.args(["-n", "FIRMWARE"]);
    if fat32 {
        cmd.args(["-F", "32", "-s", "1"]);
    }
    let ok = cmd.arg(&path).output().ok()?.status.success();
    ok.then(|| fs::read(&path).ok()).flatten()
}

/// `img` without its trailing zeros (the targets pad them back).
fn trimmed(img: &[u8]) -> &[u8] {
    let end = img.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    &img[..end]
}

fn mbr(entries: &[(u8, u32, u32)]) -> Vec<u8> {
    let mut d = vec![0u8; 512];
    for (i, (kind, first, count)) in entries.iter().enumerate() {
        let e = &mut d[446 + 16 * i..446 + 16 * (i + 1)];
        e[4] = *kind;
        e[8..12].copy_from_slice(&first.to_le_bytes());
        e[12..16].copy_from_slice(&count.to_le_bytes());
    }
    d[510] = 0x55;
    d[511] = 0xAA;
    d
}

/// A GPT with 128 entries of 128 bytes at sector 2, usable sectors 34..=59966, backup header at
/// the last of 60000 sectors.
fn gpt(entries: &[(u64, u64)]) -> Vec<u8> {
    const BASIC_DATA: [u8; 16] = [
        0xa2, 0xa0, 0xd0, 0xeb, 0xe5, 0xb9, 0x33, 0x44, 0x87, 0xc0, 0x68, 0xb6, 0xb7, 0x26, 0x99,
        0xc7,
    ];
    let mut d = mbr(&[(0xEE, 1, 59999)]);
    d.resize(34 * 512, 0);
    for (i, (first, last)) in entries.iter().enumerate() {
        let e = &mut d[1024 + 128 * i..1024 + 128 * (i + 1)];
        e[0..16].copy_from_slice(&BASIC_DATA);
        e[16] = 1;
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&last.to_le_bytes());
    }
    let h = &mut d[512..1024];
    h[0..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&1u64.to_le_bytes());
    h[32..40].copy_from_slice(&59999u64.to_le_bytes());
    h[40..48].copy_from_slice(&34u64.to_le_bytes());
    h[48..56].copy_from_slice(&59966u64.to_le_bytes());
    h[72..80].copy_from_slice(&2u64.to_le_bytes());
    h[80..84].copy_from_slice(&128u32.to_le_bytes());
    h[84..88].copy_from_slice(&128u32.to_le_bytes());
    autoprov_fuzz::fix_gpt_crcs(&mut d);
    d
}

/// DPS answers as documented (iot-dps-mqtt-support, the REST reference's registration states),
/// and broker behaviour around AWS JITP.
fn cloud(s: &mut Seeds) {
    let state = r#""registrationState":{"registrationId":"sensor-7","createdDateTimeUtc":"2026-12-03T12:00:00.1Z","assignedHub":"fleet-hub.azure-devices.net","deviceId":"sensor-7","status":"assigned","substatus":"initialAssignment","lastUpdatedDateTimeUtc":"2026-12-03T12:00:01.2Z","etag":"IjA0MDAi"}"#;
    let answers: [(&str, u8, &str, String); 6] = [
        (
            "assigning",
            0,
            "$dps/registrations/res/202/?$rid=7&retry-after=3",
            r#"{"operationId":"4.d0a671905ea5b2c8.42d78160-4c78-479e-8be7-61d5e55dac0d","status":"assigning"}"#.into(),
        ),
        (
            "assigned",
            1,
            "$dps/registrations/res/200/?$rid=7",
            format!(r#"{{"operationId":"4.d0a671905ea5b2c8.42d78160","status":"assigned",{state}}}"#),
        ),
        (
            "failed",
            2,
            "$dps/registrations/res/200/?$rid=7",
            r#"{"operationId":"4.x","status":"failed","registrationState":{"registrationId":"sensor-7","status":"failed","errorCode":400209,"errorMessage":"Custom allocation failed"}}"#.into(),
        ),
        (
            "throttled",
            0,
            "$dps/registrations/res/429/?$rid=7&retry-after=5",
            r#"{"errorCode":429001,"trackingId":"7a2f","message":"Operations are being throttled for this tenant.","timestampUtc":"2026-12-03T12:00:00.1Z"}"#.into(),
        ),
        (
            "unauthorized",
            0,
            "$dps/registrations/res/401/?$rid=7",
            r#"{"errorCode":401002,"trackingId":"7a2f","message":"The device certificate is not trusted.","timestampUtc":"2026-12-03T12:00:00.1Z"}"#.into(),
        ),
        (
            "last-poll",
            99,
            "$dps/registrations/res/202/?$rid=7",
            r#"{"operationId":"4.x","status":"assigning"}"#.into(),
        ),
    ];
    for (name, polls, topic, body) in answers {
        let mut input = vec![polls];
        input.extend_from_slice(&join(&[topic.as_bytes(), body.as_bytes()]));
        s.put("dps_answer", name, &input);
    }
    // (kind, detail) pairs, see jitp_broker.rs: 2/3 closed by the peer, 0 accepted, 1 CONNACK
    // refusal, 5 TLS alert, 6 untrusted server, 7 TLS I/O, 8 timeout.
    for (name, events) in [
        ("jitp-then-accepted", &[3u8, 0, 0, 0, 2, 0, 8, 0][..]),
        ("jitp-twice", &[2, 1, 4, 2, 7, 0]),
        ("refusals", &[1, 5, 1, 4, 5, 42, 5, 48, 6, 0, 1, 3]),
    ] {
        s.put("jitp_broker", name, events);
    }
}
