//! The partition table of an image or card as `autoprov flash`/`inject` read it (MBR or GPT),
//! and the FAT boot sector of each partition found.
//!
//! Input: flags (bit 0: recompute the GPT checksums so mutations reach the checks behind them;
//! bit 1: the image length is unknown, as for a compressed image), the image length in sectors
//! (`u32` LE), then the image's first bytes; the rest of the image is zeros.
//!
//! Invariants: reading never panics; every partition found lies inside the image (when its
//! length is known) and after the table, none overlaps another, their numbers are distinct, and
//! the table's minimal disk length covers them all.

#![no_main]

use autoprov::flash::partition::{self, SECTOR, Scheme};
use autoprov::flash::{Medium, fat};
use autoprov_fuzz::{PaddedMedium, fix_gpt_crcs, header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((flags, sectors, body)) = header(data) else {
        return;
    };
    let mut head = body.to_vec();
    if flags & 1 != 0 {
        fix_gpt_crcs(&mut head);
    }
    let len = (u64::from(sectors) * SECTOR).max(head.len() as u64);
    let known = (flags & 2 == 0).then_some(len);
    let mut medium = PaddedMedium { head: &head, len };
    let Ok(table) = partition::read(&mut medium, known) else {
        return;
    };
    assert!(!table.partitions.is_empty());
    let mut numbers: Vec<u32> = table.partitions.iter().map(|p| p.number).collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), table.partitions.len(), "duplicate numbers");
    let mut sorted: Vec<_> = table.partitions.iter().collect();
    sorted.sort_by_key(|p| p.start);
    for p in &sorted {
        assert!(p.len > 0, "partition {} is empty", p.number);
        let end = p.start.checked_add(p.len).expect("end overflows");
        let first = match table.scheme {
            Scheme::Mbr => SECTOR,
            Scheme::Gpt => 3 * SECTOR,
        };
        assert!(
            p.start >= first,
            "partition {} starts over the table",
            p.number
        );
        if let Some(len) = known {
            assert!(
                end <= len,
                "partition {} ends at {end}, beyond {len}",
                p.number
            );
        }
        assert!(
            end <= table.min_disk_len,
            "min_disk_len misses partition {}",
            p.number
        );
        let _ = p.kind.to_string();
        if let Ok(sector) = medium.bytes(p.start, 512)
            && let Ok(info) = fat::probe(&sector)
        {
            assert!(info.size > 0);
            let _ = info.is_boot_label();
        }
    }
    for w in sorted.windows(2) {
        assert!(
            w[0].end() <= w[1].start,
            "{} overlaps {}",
            w[0].number,
            w[1].number
        );
    }
});
