use std::fs;

use autoprov_tests::agent::AgentEnv;

#[test]
fn configuration_errors_name_file_line_and_field_and_exit_2() {
    let env = AgentEnv::new();
    env.configure(None, "[spool]\nmax_size = \"64 megabytes\"\n");
    let out = env.command(&["run"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let line = fs::read_to_string(env.config())
        .unwrap()
        .lines()
        .position(|l| l.starts_with("max_size"))
        .unwrap()
        + 1;
    assert!(
        stderr.contains(&env.config().display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("line {line}")), "{stderr}");
    assert!(stderr.contains("max_size"), "{stderr}");
}

#[test]
fn semantic_error_in_a_drop_in_names_the_drop_in() {
    let env = AgentEnv::new();
    env.configure(None, "");
    env.dropin(
        "10-gpio.toml",
        "[sensor]\nkind = \"gpio\"\ninterval = \"1s\"\n",
    );
    let out = env.command(&["check"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("conf.d/10-gpio.toml, line 3: sensor.interval"),
        "{stdout}"
    );
}

#[test]
fn run_without_credentials_says_to_import_first() {
    let env = AgentEnv::new();
    env.configure(
        None,
        "[device]\nid = \"sensor-007\"\n[mqtt]\nhost = \"localhost\"\n",
    );
    let out = env.command(&["run"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("autoprov-agent import"), "{stderr}");
}

#[test]
fn printed_default_config_is_the_documented_file() {
    let env = AgentEnv::new();
    let out = env.command(&["print-default-config"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text,
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../agent/agent.toml")).unwrap()
    );
    // Usable as a config file as printed.
    fs::write(env.config(), &text).unwrap();
    let out = env.command(&["check"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("ok    config"), "{stdout}");
    // It has no device id (that comes from the bundle), which check reports as a failure.
    assert_eq!(out.status.code(), Some(1), "{stdout}");
}

#[test]
fn read_sensor_prints_json_lines() {
    let env = AgentEnv::new();
    env.configure(None, "");
    let out = env
        .command(&["read-sensor", "--count", "3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines
            .iter()
            .all(|v| v["temperature_c"].is_f64() && v["ts"].is_string())
    );
}
