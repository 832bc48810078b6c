//! Issue 13, under resource limits set on this process (as non-root): a gateway that cannot
//! write its audit log (`RLIMIT_FSIZE`) refuses new sessions, tells the operator once and
//! recovers by itself (`"audit_failure": "continue"` keeps serving); a gateway out of file
//! descriptors (`RLIMIT_NOFILE`) sheds unauthenticated connections to serve callers, and does
//! not spin. Limits apply to the whole process: hence this binary, and [`PROCESS_LIMITS`].

use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ssm_session::agent::AgentSettings;
use ssm_session::aws::{ApiCallError, ApiClient};
use ssm_session::gateway::{self, AuditFailure, Gateway};
use ssm_session::net::TlsConfig;
use ssm_session::sigv4::{self, Credentials};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "support/online.rs"]
mod online;

/// Held by each test while it changes this process's limits.
static PROCESS_LIMITS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// A development gateway failing as told, a client of its admin, its state directory and
/// its agent's settings.
async fn start(name: &str, failure: AuditFailure) -> (Gateway, ApiClient, PathBuf, AgentSettings) {
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
    let mut agent = AgentSettings::new(
        gateway.endpoint(),
        &dev.setup.agent_id,
        &dev.setup.agent_secret,
    )
    .unwrap();
    agent.shell = "/bin/sh".into();
    (gateway, api, state, agent)
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
    let _limits = PROCESS_LIMITS.lock().await;
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let (refusing, refusing_api, refusing_state, agent) =
        start("refuse", AuditFailure::Refuse).await;
    let (continuing, continuing_api, continuing_state, _) =
        start("continue", AuditFailure::Continue).await;
    let target = agent.agent_id.clone();
    let agent = tokio::spawn(async move {
        let _ = ssm_session::agent::run(agent, std::future::pending()).await;
    });
    online::wait_online(&refusing_api, &target).await;
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

    // The first call whose record cannot be written is not answered with success, and the
    // agent never hears of the session: its `session.start` record comes first.
    let started = refusing_api
        .call("ssm", "AmazonSSM.StartSession", &json!({"Target": target}))
        .await;
    assert_eq!(code(&started), Some("ServiceUnavailable"), "{started:?}");
    assert!(
        refusing.live_sessions().is_empty(),
        "{:?}",
        refusing.live_sessions()
    );
    let key = refusing_api
        .call(
            "kms",
            "TrentService.GenerateDataKey",
            &json!({"KeyId": gateway::DEV_KEY_ALIAS, "NumberOfBytes": 32}),
        )
        .await;
    assert_eq!(code(&key), Some("ServiceUnavailable"), "{key:?}");
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
    for sent in ["session started", "session starting"] {
        assert!(
            !text.contains(sent),
            "a session without a record reached the agent:\n{text}"
        );
    }

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
    // The session's start and refused call, GenerateDataKey, three refused StartSession
    // calls and a DescribeSessions; the agent's own calls may add some.
    assert!(lost >= 7, "{reason}");

    agent.abort();
    drop(refusing);
    drop(continuing);
    let _ = std::fs::remove_dir_all(refusing_state);
    let _ = std::fs::remove_dir_all(continuing_state);
}

/// A signed raw HTTP/1.1 `DescribeSessions` (a raw socket needs no descriptor to send it).
fn signed_describe(authority: &str, credentials: &Credentials) -> Vec<u8> {
    let body = r#"{"State":"Active"}"#;
    let mut headers = vec![
        ("host".to_owned(), authority.to_owned()),
        (
            "x-amz-target".to_owned(),
            "AmazonSSM.DescribeSessions".to_owned(),
        ),
    ];
    let request = sigv4::Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body: body.as_bytes(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    headers.extend(sigv4::sign(&request, credentials, "us-east-1", "ssm", now));
    let mut wire = String::from("POST / HTTP/1.1\r\n");
    for (name, value) in &headers {
        wire.push_str(&format!("{name}: {value}\r\n"));
    }
    wire.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    wire.into_bytes()
}

/// The status line of the answer on `socket`, if one comes within `limit`.
async fn status(socket: &mut tokio::net::TcpStream, limit: Duration) -> Option<String> {
    let mut buffer = [0u8; 4096];
    match tokio::time::timeout(limit, socket.read(&mut buffer)).await {
        Ok(Ok(n)) if n > 0 => {
            let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
            text.lines().next().map(str::to_owned)
        }
        _ => None,
    }
}

/// User plus system CPU time of this process so far, from an already open `/proc/self/stat`.
fn cpu_time(stat: &mut std::fs::File) -> Duration {
    let mut text = String::new();
    stat.rewind().unwrap();
    stat.read_to_string(&mut text).unwrap();
    let fields: Vec<&str> = text
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of stat(5), the 12th and 13th after `comm`.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[tokio::test]
async fn out_of_descriptors_the_gateway_sheds_junk_serves_callers_and_does_not_spin() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let _limits = PROCESS_LIMITS.lock().await;
    let state = std::env::temp_dir().join(format!("ssm-edge-fds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let mut dev = gateway::prepare_dev(&state, "127.0.0.1:0".parse().unwrap(), false).unwrap();
    dev.config.limits.header_read_timeout_secs = 30;
    let gateway = Gateway::start(dev.config.clone(), None).await.unwrap();
    let address = gateway.local_addr();
    let authority = address.to_string();
    let credentials =
        Credentials::new(&dev.setup.access_key_id, &dev.setup.secret_access_key, None);

    let mut junk = Vec::new();
    for _ in 0..2 {
        junk.push(tokio::net::TcpStream::connect(address).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sockets: Vec<_> = (0..2)
        .map(|_| tokio::net::TcpSocket::new_v4().unwrap())
        .collect();
    let mut stat = std::fs::File::open("/proc/self/stat").unwrap();

    // Use up every descriptor below a new soft limit.
    let original = getrlimit(Resource::Nofile);
    let highest = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(highest + 1),
            maximum: original.maximum,
        },
    )
    .unwrap();
    let mut filler = Vec::new();
    while let Ok(file) = std::fs::File::open("/dev/null") {
        filler.push(file);
    }

    // A caller arrives: the oldest junk connection is closed to make room for it.
    let mut sockets = sockets.into_iter();
    let mut caller = sockets.next().unwrap().connect(address).await.unwrap();
    caller
        .write_all(&signed_describe(&authority, &credentials))
        .await
        .unwrap();
    let answer = status(&mut caller, Duration::from_secs(3)).await;
    assert_eq!(
        answer.as_deref(),
        Some("HTTP/1.1 200 OK"),
        "the caller was locked out"
    );
    let mut buffer = [0u8; 16];
    let shed = tokio::time::timeout(Duration::from_secs(1), junk[0].read(&mut buffer)).await;
    assert!(
        matches!(shed, Ok(Ok(0)) | Ok(Err(_))),
        "the oldest junk connection was kept"
    );

    // With nothing left to shed that the gateway may close, accepting fails; it backs off.
    drop(junk);
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(file) = std::fs::File::open("/dev/null") {
        filler.push(file);
    }
    let waiting = sockets.next().unwrap().connect(address).await.unwrap();
    let cpu = cpu_time(&mut stat);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_time(&mut stat) - cpu;
    assert!(
        used < Duration::from_millis(500),
        "{used:?} of CPU in {:?}",
        started.elapsed()
    );

    // Descriptors back: the waiting connection is served.
    drop(filler);
    setrlimit(Resource::Nofile, original).unwrap();
    let mut waiting = waiting;
    waiting
        .write_all(&signed_describe(&authority, &credentials))
        .await
        .unwrap();
    let answer = status(&mut waiting, Duration::from_secs(5)).await;
    assert_eq!(answer.as_deref(), Some("HTTP/1.1 200 OK"));
    drop(gateway);
    let _ = std::fs::remove_dir_all(state);
}

/// The soft and hard "Max open files" of process `pid`.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_owned(), fields[4].to_owned())
}

#[tokio::test]
async fn ssm_gateway_raises_its_descriptor_soft_limit_to_the_hard_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    use std::io::BufRead;
    let _limits = PROCESS_LIMITS.lock().await;
    let original = getrlimit(Resource::Nofile);
    let hard = original.maximum.expect("a finite hard limit on open files");
    let low = 256.min(hard);
    let state = std::env::temp_dir().join(format!("ssm-edge-nofile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    // The child inherits systemd's kind of default: a soft limit far below the hard one.
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(low),
            maximum: original.maximum,
        },
    )
    .unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ssm-gateway"))
        .args(["--dev", "--state-dir"])
        .arg(&state)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    setrlimit(Resource::Nofile, original).unwrap();
    let mut child = child.unwrap();
    // Serving once it prints its line: the limit was raised before that.
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let limits = open_files_limits(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert_eq!(limits, (hard.to_string(), hard.to_string()), "{log}");
    if low < hard {
        let raised = log
            .lines()
            .find(|line| line.contains("file-descriptor soft limit raised"))
            .unwrap_or_else(|| panic!("not logged:\n{log}"));
        assert!(raised.contains(&format!("was={low}")), "{raised}");
        assert!(raised.contains(&format!("hard={hard}")), "{raised}");
    }
    let _ = std::fs::remove_dir_all(state);
}
