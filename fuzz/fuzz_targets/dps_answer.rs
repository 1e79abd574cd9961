//! What the `azure` profile makes of a message on DPS's response topics while it waits for the
//! answer to its request (`$rid` 7, after a number of status polls): the topic and the JSON body
//! are DPS's, untrusted.
//!
//! Input: the number of polls so far (one byte), then the topic and the payload, NUL-separated.
//!
//! Invariants: interpreting never panics; anything but an answer to request 7 is ignored; no
//! answer makes the device wait longer than `MAX_RETRY_AFTER`; an assignment names a hub that
//! is a DNS host name and a device id; a status request asks about exactly the operation DPS
//! named; a failure explains itself.

#![no_main]

use std::time::Duration;

use autoprov_agent::transport::azure::{DpsStep, MAX_RETRY_AFTER, dps_step, status_topic};
use autoprov_fuzz::split;
use libfuzzer_sys::fuzz_target;
use rustls_pki_types::DnsName;

const RID: u64 = 7;
const MAX_WAIT: Duration = MAX_RETRY_AFTER;

fuzz_target!(|data: &[u8]| {
    let Some((&polls, rest)) = data.split_first() else {
        return;
    };
    let [topic, payload] = split(rest, 2)[..] else {
        return;
    };
    let Ok(topic) = std::str::from_utf8(topic) else {
        return;
    };
    let step = dps_step(topic, payload, RID, u32::from(polls));
    if !topic.starts_with("$dps/registrations/res/") || !topic.contains("$rid=7") {
        assert_eq!(step, DpsStep::Ignore, "{topic}");
    }
    match step {
        DpsStep::Ignore => {}
        DpsStep::Assigned { hub, device_id } => {
            assert!(
                DnsName::try_from(hub.as_str()).is_ok(),
                "assigned hub {hub:?}"
            );
            assert!(!device_id.is_empty());
        }
        DpsStep::Poll {
            operation_id, wait, ..
        } => {
            assert!(wait <= MAX_WAIT, "polls again after {wait:?}");
            // The status request asks about exactly this operation, as request 8.
            let request = status_topic(RID + 1, &operation_id);
            assert!(!request.contains(['#', '+', '\0']), "{request:?}");
            let query = request.split_once('?').map(|(_, q)| q).unwrap_or_default();
            assert_eq!(
                query.split('&').collect::<Vec<_>>(),
                ["$rid=8".to_owned(), format!("operationId={operation_id}")],
                "{request:?}"
            );
        }
        DpsStep::Fail {
            message,
            retry_after,
            ..
        } => {
            assert!(!message.is_empty());
            assert!(
                retry_after.is_none_or(|w| w <= MAX_WAIT),
                "backs off {retry_after:?}"
            );
        }
    }
});
