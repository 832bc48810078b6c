//! Issue 14: the programs say what they are doing. A refused agent logs the gateway's reason
//! and backs off instead of retrying once a second; a `--dev --state-dir` gateway restarted
//! on the same directory is the same gateway to its agents.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "support/process.rs"]
mod process;

use process::collect;
use serde_json::Value;
use ssm_session::gateway::{self, Gateway};

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ssm-session-reporting-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn text(seen: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&seen.lock().unwrap()).into_owned()
}

/// Waits until `needle` appears `count` times in `seen`, up to `limit`.
async fn wait_for(seen: &Mutex<Vec<u8>>, needle: &str, count: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while text(seen).matches(needle).count() < count {
        assert!(
            Instant::now() < deadline,
            "{needle:?} did not appear {count} times in:\n{}",
            text(seen)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `ssm-agent` for `endpoint` as `agent_id`, its secret from the environment, its log kept.
fn agent(endpoint: &str, agent_id: &str, secret: &str) -> (Running, Arc<Mutex<Vec<u8>>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ssm-agent"))
        .args(["--endpoint", endpoint, "--agent-id", agent_id])
        .env("SSM_AGENT_SECRET", secret)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = collect(child.stderr.take().unwrap());
    (Running(child), log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_agent_logs_the_reason_and_backs_off() {
    let state = temp_dir("refused");
    let dev = gateway::prepare_dev(&state, "127.0.0.1:0".parse().unwrap(), false).unwrap();
    let gateway = Gateway::start(dev.config.clone(), None).await.unwrap();
    let endpoint = gateway.endpoint().to_owned();
    let setup = &dev.setup;

    let wrong_secret = "not-the-secret-not-the-secret-not-the-sec";
    let (_wrong, wrong_log) = agent(&endpoint, &setup.agent_id, wrong_secret);
    let (_unknown, unknown_log) = agent(&endpoint, "mi-0000000000000dead", wrong_secret);
    let (_right, right_log) = agent(&endpoint, &setup.agent_id, &setup.agent_secret);

    wait_for(
        &right_log,
        "connected to the gateway",
        1,
        Duration::from_secs(10),
    )
    .await;
    let refused = "the gateway refused this agent: ";
    wait_for(&wrong_log, refused, 1, Duration::from_secs(10)).await;
    wait_for(&unknown_log, refused, 1, Duration::from_secs(10)).await;
    let first = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let waited = first.elapsed();

    for (log, reason, code) in [
        (
            &wrong_log,
            "the signature does not match: check the agent's secret",
            "InvalidSignatureException",
        ),
        (
            &unknown_log,
            "the agent id \"mi-0000000000000dead\" is not registered with this gateway",
            "UnrecognizedClientException",
        ),
    ] {
        let log = text(log);
        let refusals: Vec<&str> = log.lines().filter(|line| line.contains(refused)).collect();
        assert!(
            refusals
                .iter()
                .all(|line| line.contains(reason) && line.contains(code)),
            "{reason}:\n{log}"
        );
        assert!(
            refusals.iter().all(|line| line.contains("ERROR")),
            "refusals are errors:\n{log}"
        );
        // 1 s doubling, jittered to between half and all: at most 4 dials in 5 s (at 0, 0.5,
        // 1.5 and 3.5 s), where once a second, or 200 ms doubling, would be 6 or more.
        assert!(
            (1..=4).contains(&refusals.len()),
            "{} refusals in {waited:?}:\n{log}",
            refusals.len()
        );
        assert!(!log.contains("connected to the gateway"), "{log}");
        for secret in [wrong_secret, setup.agent_secret.as_str()] {
            assert!(!log.contains(secret), "a secret in the log:\n{log}");
        }
    }
    // The agent with the right secret stayed connected.
    let right = text(&right_log);
    assert_eq!(
        right.matches("connected to the gateway").count(),
        1,
        "{right}"
    );
    assert!(!right.contains("refused"), "{right}");
    drop(gateway);
    let _ = std::fs::remove_dir_all(&state);
}

/// `ssm-gateway --dev --state-dir DIR`, and the JSON line it printed.
fn dev_gateway(state: &std::path::Path, extra: &[&str]) -> (Running, Value, Arc<Mutex<Vec<u8>>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ssm-gateway"))
        .arg("--dev")
        .arg("--state-dir")
        .arg(state)
        .args(extra)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = collect(child.stderr.take().unwrap());
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let json = serde_json::from_str(&line)
        .unwrap_or_else(|_| panic!("not a JSON line: {line:?}\n{}", text(&log)));
    (Running(child), json, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dev_gateway_restarted_on_its_state_dir_is_the_same_gateway() {
    use std::os::unix::fs::PermissionsExt;
    let state = temp_dir("restart");
    let (first, before, _) = dev_gateway(&state, &["--agents", "2"]);
    let secret_file = PathBuf::from(before["agent_secret_file"].as_str().unwrap());
    assert_eq!(secret_file, state.join("agent-secret"));
    let mode = std::fs::metadata(&secret_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        std::fs::read_to_string(&secret_file).unwrap().trim_end(),
        before["agent_secret"].as_str().unwrap()
    );
    let agents = before["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 2, "{before}");
    assert_eq!(agents[0]["agent_id"], before["agent_id"]);
    assert_ne!(agents[1]["agent_id"], before["agent_id"]);

    // An agent of the first gateway, its secret from the file.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ssm-agent"))
        .arg("--endpoint")
        .arg(before["endpoint"].as_str().unwrap())
        .arg("--agent-id")
        .arg(before["agent_id"].as_str().unwrap())
        .arg("--agent-secret-file")
        .arg(&secret_file)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("SSM_AGENT_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let agent_log = collect(child.stderr.take().unwrap());
    let _agent = Running(child);
    let connected = "connected to the gateway";
    wait_for(&agent_log, connected, 1, Duration::from_secs(10)).await;

    drop(first);
    wait_for(
        &agent_log,
        "disconnected, reconnecting in",
        1,
        Duration::from_secs(10),
    )
    .await;
    let (_second, after, second_log) = dev_gateway(&state, &[]);
    for field in [
        "endpoint",
        "agent_id",
        "agent_secret",
        "agent_secret_file",
        "agents",
        "access_key_id",
        "secret_access_key",
        "restricted_access_key_id",
        "restricted_secret_access_key",
        "kms_key_id",
        "config",
        "audit_log",
    ] {
        assert_eq!(before[field], after[field], "{field}");
    }
    // The same agent reconnects to the second gateway with the same credentials.
    wait_for(&agent_log, connected, 2, Duration::from_secs(40)).await;
    wait_for(&second_log, "agent connected", 1, Duration::from_secs(10)).await;
    assert!(
        !text(&agent_log).contains("refused"),
        "{}",
        text(&agent_log)
    );
    let _ = std::fs::remove_dir_all(&state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_saved_port_is_a_clear_error() {
    let state = temp_dir("taken");
    let (first, before, _) = dev_gateway(&state, &[]);
    let output = Command::new(env!("CARGO_BIN_EXE_ssm-gateway"))
        .arg("--dev")
        .arg("--state-dir")
        .arg(&state)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let port = before["endpoint"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap();
    assert!(
        stderr.contains("is in use") && stderr.contains(port) && stderr.contains("--listen"),
        "{stderr}"
    );
    drop(first);
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn an_agent_refuses_a_secret_file_others_may_read() {
    use std::os::unix::fs::PermissionsExt;
    let state = temp_dir("exposed");
    std::fs::create_dir_all(&state).unwrap();
    let file = state.join("secret");
    std::fs::write(&file, "s3cret-s3cret\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ssm-agent"))
        .args(["--endpoint", "http://127.0.0.1:9", "--agent-id", "mi-1"])
        .arg("--agent-secret-file")
        .arg(&file)
        .env("NO_COLOR", "1")
        .env_remove("SSM_AGENT_SECRET")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("mode 0644") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
    let _ = std::fs::remove_dir_all(&state);
}
