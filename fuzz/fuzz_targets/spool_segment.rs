//! The spool opened on a damaged directory, as the agent starts: segment files with torn,
//! corrupt, reordered or misnamed records, a wrong `acked` file and a wrong `seq` file, as a
//! power cut, a failing SD card or a hand-cleaned directory leaves them.
//!
//! Invariants: opening never fails or panics on damage (only real I/O errors may stop it); what
//! it hands out is in strictly increasing sequence above `acked`; unless the `seq` file is
//! refused, or the spool ends at the largest sequence number, with a clear error, the agent can
//! then take the next sequence number and spool a new reading; and the repair is complete, so reopening finds no further damage and hands out that
//! new reading.

#![no_main]

use std::fs;

use autoprov_agent::config::FsyncPolicy;
use autoprov_agent::seq::{MAX_SEQ, SEQ_FILE, SeqAllocator, SeqError};
use autoprov_agent::spool::{Spool, SpoolOptions};
use autoprov_fuzz::{SpoolInput, fix_spool_crcs, scratch};
use libfuzzer_sys::fuzz_target;

const OPTS: SpoolOptions = SpoolOptions {
    max_size: 64 * 1024,
    fsync: FsyncPolicy::Always,
};

fuzz_target!(|data: &[u8]| {
    let Some(input) = SpoolInput::decode(data) else {
        return;
    };
    let state = scratch("spool");
    let dir = state.join("spool");
    fs::create_dir_all(&dir).expect("spool dir");
    for (name, bytes) in &input.segments {
        let mut bytes = bytes.clone();
        if input.fix_crcs {
            fix_spool_crcs(&mut bytes);
        }
        fs::write(dir.join(format!("{name:020}.seg")), bytes).expect("segment");
    }
    if input.write_acked {
        fs::write(dir.join("acked"), format!("{}\n", input.acked)).expect("acked");
    }
    if let Some(n) = input.seq {
        fs::write(state.join(SEQ_FILE), format!("{n}\n")).expect("seq");
    }

    let mut spool = Spool::open(&dir, OPTS).unwrap_or_else(|e| panic!("open: {e}"));
    let acked = spool.acked();
    let mut last = acked;
    while let Some(rec) = spool.next_unsent().expect("reading a repaired spool") {
        assert!(rec.seq > last, "seq {} handed out after {last}", rec.seq);
        assert!(rec.seq <= spool.last_seq());
        last = rec.seq;
    }
    let mut seq = match SeqAllocator::open(&state, spool.last_seq()) {
        Ok(seq) => seq,
        Err(e @ SeqError::Garbled { .. }) => {
            assert!(input.seq.is_some(), "{e}");
            return;
        }
        Err(SeqError::Exhausted { last, .. }) => {
            assert_eq!(last, MAX_SEQ);
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let next = seq.take();
    assert!(next > spool.last_seq());
    spool
        .append(next, b"{\"fuzz\":true}")
        .unwrap_or_else(|e| panic!("appending seq {next} after repair: {e}"));
    drop(spool);

    let mut spool = Spool::open(&dir, OPTS).expect("reopen");
    assert_eq!(spool.stats.corrupt, 0, "the repair left damage behind");
    assert_eq!(spool.last_seq(), next);
    let mut got = None;
    while let Some(rec) = spool.next_unsent().expect("reading") {
        got = Some(rec.seq);
    }
    assert_eq!(
        got,
        Some(next),
        "the reading spooled after repair is not handed out"
    );
    let _ = fs::remove_dir_all(&state);
});
