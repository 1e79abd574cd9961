use std::time::Duration;

use autoprov_tests::wait_until;

use super::{DEVICE, assert_contiguous_from_one, setup};

#[test]
fn readings_arrive_as_documented_json_with_contiguous_seq() {
    let s = setup("");
    let mut agent = s.env.spawn();
    let got = wait_until(Duration::from_secs(20), || s.sub.seqs().len() >= 30);
    let status = agent.terminate(Duration::from_secs(10));
    assert!(
        got,
        "agent log:\n{}\nbroker log:\n{}",
        agent.log(),
        s.broker.log()
    );
    assert!(
        status.success(),
        "SIGTERM must exit 0: {status:?}\n{}",
        agent.log()
    );

    let msgs = s.sub.messages();
    for (topic, v) in &msgs {
        assert_eq!(topic, &format!("dt/{DEVICE}/telemetry"));
        let obj = v.as_object().expect("a JSON object");
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["device_id", "humidity_pct", "seq", "temperature_c", "ts"]
        );
        assert_eq!(v["device_id"], DEVICE);
        let ts = v["ts"].as_str().unwrap();
        assert!(
            ts.len() == 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "ts {ts:?} is not RFC 3339 UTC"
        );
        let t = v["temperature_c"].as_f64().unwrap();
        let h = v["humidity_pct"].as_f64().unwrap();
        assert!(
            (0.0..=50.0).contains(&t) && (20.0..=90.0).contains(&h),
            "{v}"
        );
    }
    assert_contiguous_from_one(&s.sub.seqs(), &agent.log());
}

#[test]
fn sigterm_waits_for_acknowledgements_and_leaves_nothing_unsent_behind() {
    let s = setup("");
    let mut agent = s.env.spawn();
    assert!(wait_until(Duration::from_secs(20), || s.sub.seqs().len() >= 10));
    let status = agent.terminate(Duration::from_secs(10));
    assert!(status.success());
    let log = agent.log();
    assert!(log.contains("stopping: waiting up to"), "{log}");
    // Everything the agent numbered is either delivered or still in the spool, never lost:
    // the next run continues from the next seq and sends the rest.
    let mut again = s.env.spawn();
    let before = *s.sub.seqs().last().unwrap();
    assert!(wait_until(Duration::from_secs(20), || s
        .sub
        .seqs()
        .last()
        .is_some_and(|m| *m > before + 5)));
    again.terminate(Duration::from_secs(10));
    assert_contiguous_from_one(&s.sub.seqs(), &again.log());
}
