//! Another device's certificate buys nothing beyond that device: a device publishes only under
//! its own topic, on Mosquitto (ACL by the certificate's CN) and under the AWS policy `autoprov
//! aws setup` generates (by thing name).

use std::time::Duration;

use autoprov_tests::mosquitto::{BrokerOptions, Mosquitto, OBSERVER, Subscriber};
use autoprov_tests::pki::TestPki;
use autoprov_tests::wait_until;

use super::{autoprov, publish, text};

#[test]
fn a_device_cannot_publish_under_another_devices_topic_whatever_client_id_it_claims() {
    let mut pki = TestPki::new("Test Fleet");
    let server = pki.server();
    let broker = Mosquitto::start(&server, &BrokerOptions::with_observer());
    let sub = Subscriber::start(&broker, &pki.device(OBSERVER, Default::default()), "dt/#");
    let a = pki.device("sensor-a", Default::default());
    pki.device("sensor-b", Default::default());
    let dir = tempfile::tempdir().unwrap();
    // sensor-a's card, used to write as sensor-b: under its own client id, and claiming b's.
    for (n, (client, topic)) in [
        ("sensor-a", "dt/sensor-b/telemetry"),
        ("sensor-b", "dt/sensor-b/telemetry"),
        ("sensor-a", "dt/sensor-b"),
        ("sensor-a", "devices/sensor-b/messages/events/"),
    ]
    .into_iter()
    .enumerate()
    {
        // MQTT 3.1.1 has no way to refuse a PUBLISH: the broker acknowledges and drops it (and
        // logs the denial), so what counts is what reaches the subscriber.
        publish(&broker, &dir.path().join(n.to_string()), &a, client, topic);
    }
    // And one it may send, which shows the others had their chance to arrive.
    let out = publish(
        &broker,
        &dir.path().join("own"),
        &a,
        "sensor-a",
        "dt/sensor-a/telemetry",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        wait_until(Duration::from_secs(10), || sub
            .lines()
            .iter()
            .any(|l| l.starts_with("dt/sensor-a/telemetry "))),
        "the allowed message did not arrive:\n{}",
        broker.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let lines = sub.lines();
    assert_eq!(
        lines,
        ["dt/sensor-a/telemetry {\"forged\":true}"],
        "only sensor-a's own topic may carry sensor-a's messages"
    );
    // Each forged message did reach the broker, under sensor-a's identity whatever the client id.
    let log = broker.log();
    assert_eq!(log.matches("u'sensor-a')").count(), 5, "{log}");
    assert!(log.contains("as sensor-b ("), "{log}");
}

/// IAM's wildcard match: `*` any run of characters, `?` one.
fn iam_match(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    let mut dp = vec![vec![false; v.len() + 1]; p.len() + 1];
    dp[0][0] = true;
    for i in 1..=p.len() {
        dp[i][0] = dp[i - 1][0] && p[i - 1] == '*';
        for j in 1..=v.len() {
            dp[i][j] = match p[i - 1] {
                '*' => dp[i - 1][j] || dp[i][j - 1],
                '?' => dp[i - 1][j - 1],
                c => dp[i - 1][j - 1] && c == v[j - 1],
            };
        }
    }
    dp[p.len()][v.len()]
}

/// Whether `policy` allows `action` on `resource` for a connection of thing `thing` (attached
/// to its certificate, as JITP makes it). Only Allow statements exist in the generated policy;
/// a Deny would be honoured.
fn allows(policy: &serde_json::Value, thing: &str, action: &str, resource: &str) -> bool {
    let list = |v: &serde_json::Value| -> Vec<String> {
        match v {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    };
    let mut allowed = false;
    for st in policy["Statement"].as_array().expect("statements") {
        let applies = list(&st["Action"]).iter().any(|a| iam_match(a, action))
            && list(&st["Resource"]).iter().any(|r| {
                iam_match(
                    &r.replace("${iot:Connection.Thing.ThingName}", thing),
                    resource,
                )
            });
        if !applies {
            continue;
        }
        match st["Effect"].as_str() {
            Some("Deny") => return false,
            Some("Allow") => allowed = true,
            other => panic!("unknown effect {other:?}"),
        }
    }
    allowed
}

#[test]
fn the_aws_policy_lets_a_thing_connect_and_publish_only_as_itself() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let out = autoprov(&pki, &["ca", "init", "--name", "Policy Fleet"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let aws = dir.path().join("aws");
    let out = autoprov(
        &pki,
        &[
            "aws",
            "setup",
            "--account-id",
            "123456789012",
            "--region",
            "eu-west-1",
            "--out",
            aws.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let policy: serde_json::Value =
        serde_json::from_slice(&std::fs::read(aws.join("device-policy.json")).unwrap()).unwrap();
    let arn = |r: &str| format!("arn:aws:iot:eu-west-1:123456789012:{r}");
    let a = "sensor-a";
    assert!(allows(&policy, a, "iot:Connect", &arn("client/sensor-a")));
    assert!(allows(
        &policy,
        a,
        "iot:Publish",
        &arn("topic/dt/sensor-a/telemetry")
    ));
    for (action, resource) in [
        ("iot:Connect", "client/sensor-b"),
        ("iot:Connect", "client/sensor-a2"),
        ("iot:Publish", "topic/dt/sensor-b/telemetry"),
        ("iot:Publish", "topic/dt/sensor-ab/telemetry"),
        ("iot:Publish", "topic/$aws/things/sensor-b/shadow/update"),
        ("iot:Subscribe", "topicfilter/dt/#"),
        ("iot:Receive", "topic/dt/sensor-b/telemetry"),
        ("iot:UpdateThingShadow", "thing/sensor-b"),
    ] {
        assert!(
            !allows(&policy, a, action, &arn(resource)),
            "{a} may {action} on {resource}:\n{policy:#}"
        );
    }
}

#[test]
fn the_iam_matcher_knows_its_wildcards() {
    assert!(iam_match("topic/dt/x/*", "topic/dt/x/a/b"));
    assert!(!iam_match("topic/dt/x/*", "topic/dt/xy/a"));
    assert!(iam_match("client/?", "client/a"));
    assert!(!iam_match("client/?", "client/ab"));
}
