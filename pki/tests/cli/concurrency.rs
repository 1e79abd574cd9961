//! Two `autoprov` processes issuing at once serialise on the inventory: nothing lost, nothing
//! duplicated.

use std::collections::HashSet;
use std::process::Command;

use crate::util::Fleet;

#[test]
fn two_processes_issuing_200_devices_each_record_400_distinct_certificates() {
    let f = Fleet::in_memory();
    f.ok(&["ca", "init"]);
    // Each worker is one shell process issuing its 200 devices one `autoprov issue` after another.
    let workers: Vec<_> = ["a", "b"]
        .iter()
        .map(|w| {
            let script = format!(
                "set -e; for i in $(seq 1 200); do \"$0\" --pki-dir \"$1\" issue {w}-$i --out \"$2/{w}-$i\" >/dev/null; done"
            );
            Command::new("sh")
                .arg("-c")
                .arg(script)
                .arg(env!("CARGO_BIN_EXE_autoprov"))
                .arg(f.pki())
                .arg(f.path("bundles"))
                .env_remove("AUTOPROV_CA_PASSPHRASE")
                .spawn()
                .unwrap()
        })
        .collect();
    for mut w in workers {
        assert!(w.wait().unwrap().success());
    }
    let rows = f.list();
    assert_eq!(rows.len(), 400);
    assert!(rows.iter().all(|r| r["status"] == "active"));
    let serials: HashSet<_> = rows.iter().map(|r| r["serial"].as_str().unwrap()).collect();
    assert_eq!(serials.len(), 400);
    let ids: HashSet<_> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 400);
    assert_eq!(std::fs::read_dir(f.path("bundles")).unwrap().count(), 400);
}
