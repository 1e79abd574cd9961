//! Network partitions: the agent in one namespace, Mosquitto in another, the veth link between
//! them cut and restored while the device keeps measuring.

use std::time::Duration;

use autoprov_tests::faults::{self, Figures, Form, Rng};
use autoprov_tests::netns;

use super::{device, finish, progresses, tail};

const KEEP_ALIVE: Duration = Duration::from_secs(5);
const BASE: Duration = Duration::from_millis(200);
const CAP: Duration = Duration::from_secs(2);

#[test]
fn every_seq_arrives_across_link_cuts_and_reconnects_follow_the_backoff() {
    let scenario = "partition";
    if let Some(why) = netns::unavailable() {
        faults::skip(scenario, &why);
        return;
    }
    let form = Form::from_env();
    let (cuts, shortest, longest) = form.pick(
        (2, Duration::from_secs(5), Duration::from_secs(5)),
        (5, Duration::from_secs(10), Duration::from_secs(60)),
    );
    let mut rng = Rng::from_env(scenario);
    let link = netns::Link::create().unwrap_or_else(|e| panic!("network namespaces: {e}"));
    let dev = device(
        Some(&link),
        &format!("keep_alive = \"{}s\"\n", KEEP_ALIVE.as_secs()),
    );
    dev.env.dropin(
        "50-backoff.toml",
        &format!(
            "[reconnect]\nbase = \"{}ms\"\ncap = \"{}s\"\n",
            BASE.as_millis(),
            CAP.as_secs()
        ),
    );
    let mut agent = dev.env.spawn();
    let mut outages = Vec::new();
    for cut in 0..cuts {
        assert!(
            progresses(&dev.sub, 20, Duration::from_secs(60)),
            "no readings before cut {cut}:\n{}\nbroker:\n{}",
            tail(&agent.log(), 60),
            dev.broker.log()
        );
        let down = rng.between(shortest, longest);
        link.cut();
        std::thread::sleep(down);
        link.restore();
        outages.push(down);
    }
    assert!(
        progresses(&dev.sub, 20, Duration::from_secs(60)),
        "no readings after the last cut:\n{}",
        tail(&agent.log(), 60)
    );
    let log = agent.log();
    assert!(agent.is_running(), "the agent died:\n{log}");

    let attempts = faults::attempts(&log);
    let violations = faults::backoff_violations(&attempts, BASE, CAP);
    assert!(
        violations.is_empty(),
        "reconnects did not follow the backoff ({BASE:?} doubling to {CAP:?}):\n{}\n{}",
        violations.join("\n"),
        tail(&log, 80)
    );
    // A cut longer than two keep-alives is noticed (the broker's PINGRESP stops), so the agent
    // reconnects at least once per such cut; while the link is down every attempt fails fast
    // (no route), so a long cut shows many attempts, each spaced by the backoff.
    let noticeable = outages.iter().filter(|d| **d > 2 * KEEP_ALIVE).count();
    let lost_links = log.matches("connection lost").count();
    assert!(
        lost_links >= noticeable,
        "{noticeable} cuts longer than 2×keep-alive but {lost_links} lost connections:\n{}",
        tail(&log, 80)
    );
    let mut fig = Figures {
        scenario: scenario.into(),
        faults: format!(
            "{cuts} link cuts of {}–{} s",
            shortest.as_secs(),
            longest.as_secs()
        ),
        injected: cuts,
        notes: format!(
            "cuts {:?} s; {lost_links} connections lost, {} failed reconnect attempts, all within the backoff",
            outages.iter().map(Duration::as_secs).collect::<Vec<_>>(),
            attempts.len()
        ),
        ..Figures::default()
    };
    finish(&dev, &mut agent, &mut fig);
}
