//! Process faults: the agent and the broker killed with SIGKILL at random moments, in a random
//! order, while the device keeps measuring.

use std::time::Duration;

use autoprov_tests::faults::{Figures, Form, Rng};
use autoprov_tests::wait_until;

use super::{agent_logs, device, finish, progresses, tail};

#[derive(Debug, Clone, Copy)]
enum Kill {
    Agent,
    Broker,
}

#[test]
fn every_seq_arrives_across_agent_and_broker_sigkills_at_random_moments() {
    let scenario = "process";
    let form = Form::from_env();
    let (agent_kills, broker_kills) = form.pick((5, 2), (20, 5));
    let mut rng = Rng::from_env(scenario);
    let mut dev = device(None, "");
    // The kills in a random order.
    let mut plan: Vec<Kill> = std::iter::repeat_n(Kill::Agent, agent_kills)
        .chain(std::iter::repeat_n(Kill::Broker, broker_kills))
        .collect();
    for i in (1..plan.len()).rev() {
        plan.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let mut agent = dev.env.spawn();
    assert!(
        progresses(&dev.sub, 10, Duration::from_secs(30)),
        "no readings at the start:\n{}",
        agent.log()
    );
    for (i, kill) in plan.iter().enumerate() {
        // A random moment: readings being taken, published, acknowledged, segments rolling.
        std::thread::sleep(rng.between(
            Duration::from_millis(100),
            form.pick(Duration::from_millis(1500), Duration::from_secs(6)),
        ));
        match kill {
            Kill::Agent => {
                agent.kill9();
                std::thread::sleep(rng.between(Duration::ZERO, Duration::from_millis(500)));
                agent = dev.env.spawn();
            }
            Kill::Broker => {
                let subscribed = dev.broker.log().matches("as observer").count();
                dev.broker.kill();
                std::thread::sleep(rng.between(
                    Duration::from_millis(200),
                    form.pick(Duration::from_secs(2), Duration::from_secs(10)),
                ));
                dev.broker.start_again();
                // The subscriber comes back on its own; the next fault waits for it, so that
                // what the broker acknowledged is also what the subscriber gets.
                assert!(
                    wait_until(Duration::from_secs(20), || {
                        dev.broker.log().matches("as observer").count() > subscribed
                    }),
                    "the subscriber did not reconnect after broker kill {i}"
                );
            }
        }
    }
    assert!(
        progresses(&dev.sub, 20, Duration::from_secs(60)),
        "no readings after the last kill:\n{}",
        tail(&agent_logs(&dev.env), 80)
    );
    let logs = agent_logs(&dev.env);
    // A SIGKILL cannot tear a record (a write completes or does not start), but a power cut
    // can: the spool's open reports what it cut. Anything else would be corruption.
    let torn: u64 = logs
        .lines()
        .filter_map(|l| {
            let (n, _) = l.split_once(" torn or corrupt tail(s) truncated")?;
            n.rsplit(' ').next()?.parse::<u64>().ok()
        })
        .sum();
    assert!(
        !logs.contains("corrupt record while reading"),
        "the spool was damaged while running:\n{}",
        tail(&logs, 80)
    );
    let mut fig = Figures {
        scenario: scenario.into(),
        faults: format!("{agent_kills} agent SIGKILLs + {broker_kills} Mosquitto SIGKILLs"),
        injected: (agent_kills + broker_kills) as u64,
        notes: format!("{torn} torn spool tails found and counted on restart"),
        ..Figures::default()
    };
    finish(&dev, &mut agent, &mut fig);
    assert_eq!(dev.broker.starts(), broker_kills as u32 + 1);
}
