//! Issue 13: a gateway that cannot write its audit log refuses new sessions (fail-closed), tells
//! the operator once, and recovers by itself; `"audit_failure": "continue"` keeps serving.
//! Writes are made to fail with `RLIMIT_FSIZE` (as non-root), which applies to the whole
//! process: hence this test's own binary, and a single test.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use ssm_session::aws::{ApiCallError, ApiClient};
use ssm_session::gateway::{self, AuditFailure, Gateway};
use ssm_session::net::TlsConfig;
use ssm_session::sigv4::Credentials;

/// Log output kept for the test to count.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn start(name: &str, failure: AuditFailure) -> (Gateway, ApiClient, PathBuf) {
    let state = std::env::temp_dir().join(format!("ssm-edge-audit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let mut dev = gateway::prepare_dev(&state, "127.0.0.1:0".parse().unwrap(), false).unwrap();
    dev.config.audit_failure = failure;
    let gateway = Gateway::start(dev.config.clone(), None).await.unwrap();
    let credentials =
        Credentials::new(&dev.setup.access_key_id, &dev.setup.secret_access_key, None);
    let api = ApiClient::new(
        gateway.endpoint(),
        "us-east-1",
        credentials,
        TlsConfig::default(),
    )
    .unwrap();
    (gateway, api, state)
}

async fn start_session(api: &ApiClient) -> Result<Value, ApiCallError> {
    api.call(
        "ssm",
        "AmazonSSM.StartSession",
        &json!({"Target": "mi-00000000000000000"}),
    )
    .await
}

fn code(result: &Result<Value, ApiCallError>) -> Option<&str> {
    result.as_ref().err().and_then(ApiCallError::code)
}

async fn describe(api: &ApiClient) -> Result<Value, ApiCallError> {
    api.call(
        "ssm",
        "AmazonSSM.DescribeSessions",
        &json!({"State": "Active"}),
    )
    .await
}

#[tokio::test]
async fn an_unwritable_audit_log_refuses_new_sessions_until_it_can_be_written() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let (refusing, refusing_api, refusing_state) = start("refuse", AuditFailure::Refuse).await;
    let (continuing, continuing_api, continuing_state) =
        start("continue", AuditFailure::Continue).await;
    describe(&refusing_api).await.unwrap();
    describe(&continuing_api).await.unwrap();

    // Writing past RLIMIT_FSIZE raises SIGXFSZ, which would end the process: catch it, and
    // the write fails with EFBIG instead, as on a full disk.
    use rustix::process::{Resource, Rlimit, Signal, getrlimit, setrlimit};
    let _caught = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(
        Signal::XFSZ.as_raw(),
    ))
    .unwrap();
    let size = |gateway: &Gateway| std::fs::metadata(gateway.audit_path()).unwrap().len();
    let original = getrlimit(Resource::Fsize);
    let full = size(&refusing).min(size(&continuing));
    setrlimit(
        Resource::Fsize,
        Rlimit {
            current: Some(full),
            maximum: original.maximum,
        },
    )
    .unwrap();

    // The first record that cannot be written (a read-only call's, served) puts the gateway
    // in the audit-failed state.
    describe(&refusing_api).await.unwrap();
    for _ in 0..3 {
        let refused = start_session(&refusing_api).await;
        assert_eq!(code(&refused), Some("ServiceUnavailable"), "{refused:?}");
        let message = refused.unwrap_err().to_string();
        assert!(message.contains("cannot write its audit log"), "{message}");
    }
    // Read-only calls are still answered.
    describe(&refusing_api).await.unwrap();
    describe(&continuing_api).await.unwrap();
    // Fail-open, as configured: the call goes on (to the missing target).
    let served = start_session(&continuing_api).await;
    assert_eq!(code(&served), Some("TargetNotConnected"), "{served:?}");

    setrlimit(Resource::Fsize, original).unwrap();
    // The first call after the disk recovers is served.
    let served = start_session(&refusing_api).await;
    assert_eq!(code(&served), Some("TargetNotConnected"), "{served:?}");

    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let path = refusing.audit_path().display().to_string();
    let told = text
        .lines()
        .filter(|line| line.contains("ERROR") && line.contains("audit log write failed"))
        .filter(|line| line.contains(&path))
        .count();
    assert_eq!(told, 1, "the operator is told once:\n{text}");

    // The chain is whole, and says how many records are missing.
    let file = std::fs::File::open(refusing.audit_path()).unwrap();
    ssm_session::audit::verify(std::io::BufReader::new(file)).unwrap();
    let gap = std::fs::read_to_string(refusing.audit_path())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|record| record["action"] == "gateway:AuditLogRecovered")
        .expect("no record of the gap");
    let reason = gap["reason"].as_str().unwrap();
    let lost: u64 = reason.split(' ').next().unwrap().parse().unwrap();
    // Three refused StartSession calls and two DescribeSessions.
    assert_eq!(lost, 5, "{reason}");

    drop(refusing);
    drop(continuing);
    let _ = std::fs::remove_dir_all(refusing_state);
    let _ = std::fs::remove_dir_all(continuing_state);
}
