//! `autoprov demo`: a short run, judged by what it left behind (`--keep`), not by what it says.

use std::collections::BTreeMap;
use std::path::Path;

use crate::util::{Fleet, snapshot};

/// `list --json` of a PKI directory the demo made.
fn list(f: &Fleet, pki: &Path) -> Vec<serde_json::Value> {
    let out = f
        .cmd(&["list", "--json"])
        .arg("--pki-dir")
        .arg(pki)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn serials(rows: &[serde_json::Value], id: &str, status: &str) -> Vec<String> {
    rows.iter()
        .filter(|r| r["id"] == id && r["status"] == status)
        .map(|r| r["serial"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn demo_publishes_refuses_the_rogue_rotates_and_refuses_the_revoked_clone() {
    let f = Fleet::new();
    let kept = f.path("run");
    let r = f.run(&[
        "demo",
        "--devices",
        "2",
        "--duration",
        "5s",
        "--interval",
        "200ms",
        "--plain",
        "--keep",
        kept.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{r:#?}");

    // Every reading the broker accepted, with the certificate it came in under.
    let text = std::fs::read_to_string(kept.join("broker/readings.jsonl")).unwrap();
    let readings: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut by_device: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for v in &readings {
        let cn = v["connection_cn"].as_str().unwrap();
        assert_eq!(v["payload"]["device_id"], cn, "own identity: {v}");
        assert_eq!(v["topic"], format!("dt/{cn}/telemetry"), "{v}");
        by_device.entry(cn.to_owned()).or_default().push((
            v["payload"]["seq"].as_u64().unwrap(),
            v["serial"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(
        by_device.keys().collect::<Vec<_>>(),
        ["sensor-001", "sensor-002"]
    );
    for (id, got) in &by_device {
        let mut seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        seqs.sort_unstable();
        seqs.dedup();
        let max = *seqs.last().unwrap();
        assert!(max >= 10, "{id}: only {max} readings in 5 s at 200 ms");
        assert_eq!(
            seqs,
            (1..=max).collect::<Vec<_>>(),
            "{id}: seq not contiguous"
        );
    }

    // The last device was rotated: the old certificate is revoked in the inventory, the new one
    // active, and its seq went on under the new certificate instead of starting again.
    let rows = list(&f, &kept.join("pki"));
    let revoked = serials(&rows, "sensor-002", "revoked");
    let active = serials(&rows, "sensor-002", "active");
    assert_eq!((revoked.len(), active.len()), (1, 1), "{rows:#?}");
    let under = |serial: &str| -> Vec<u64> {
        by_device["sensor-002"]
            .iter()
            .filter(|(_, s)| s == serial)
            .map(|(q, _)| *q)
            .collect()
    };
    let (old, new) = (under(&revoked[0]), under(&active[0]));
    assert!(!old.is_empty() && !new.is_empty(), "{old:?} {new:?}");
    assert!(
        new.iter().min() > Some(&1) && new.iter().min() <= Some(&(old.iter().max().unwrap() + 1)),
        "seq restarted or jumped at the rotation: old {old:?}, new {new:?}"
    );
    assert_eq!(serials(&rows, "sensor-001", "active").len(), 1);

    // The rogue's certificate (another CA) never got a reading in; the broker logged why.
    let rogue = serials(&list(&f, &kept.join("rogue/pki")), "sensor-001", "active");
    assert_eq!(rogue.len(), 1);
    assert!(readings.iter().all(|v| v["serial"] != rogue[0].as_str()));
    let events = std::fs::read_to_string(kept.join("broker/events.log")).unwrap();
    assert!(events.contains("UnknownIssuer"), "{events}");
    assert!(events.contains("Revoked"), "{events}");

    // Import wiped every key from the cards.
    for card in std::fs::read_dir(kept.join("cards")).unwrap() {
        let card = card.unwrap().path();
        assert!(card.join("manifest.toml").exists(), "{}", card.display());
        assert!(!card.join("device.key").exists(), "{}", card.display());
    }
}

#[test]
fn demo_refuses_bad_options_with_exit_2_and_makes_nothing() {
    let f = Fleet::new();
    std::fs::create_dir_all(f.path("busy")).unwrap();
    std::fs::write(f.path("busy/file"), "x").unwrap();
    let before = snapshot(f.tmp.path());
    for (args, says) in [
        (vec!["--devices", "0"], "--devices 0"),
        (vec!["--duration", "1s"], "too short"),
        (vec!["--duration", "soon"], "not a duration"),
        (vec!["--keep", "busy"], "not empty"),
    ] {
        let mut all = vec!["demo"];
        all.extend(args);
        f.fails(&all, 2, says);
    }
    assert_eq!(snapshot(f.tmp.path()), before);
}
