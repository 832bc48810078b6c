//! `session-manager-plugin`'s own verbs and exit statuses against gateways in this process:
//! `describe-sessions`, `terminate-session`, the exit codes of local failures, and the
//! messages for a wrong scheme or an untrusted certificate.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use ssm_session::aws::ApiClient;
use ssm_session::client::{SessionClient, SessionState};
use ssm_session::gateway::{self, Gateway};
use ssm_session::net::TlsConfig;
use ssm_session::sigv4::Credentials;

#[path = "support/online.rs"]
mod online;
#[path = "support/process.rs"]
mod process;

use process::free_port;

const PLUGIN: &str = env!("CARGO_BIN_EXE_session-manager-plugin");
const AGENT: &str = env!("CARGO_BIN_EXE_ssm-agent");

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ssm-session-client-cli-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A development gateway in this process (its tasks run on `runtime`'s workers).
struct Dev {
    gateway: Gateway,
    dev: gateway::DevEnvironment,
    state: PathBuf,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

impl Dev {
    fn start(runtime: &tokio::runtime::Runtime, name: &str, tls: bool) -> Dev {
        let state = temp_dir(name);
        let dev = gateway::prepare_dev(&state, "127.0.0.1:0".parse().unwrap(), tls).unwrap();
        let gateway = runtime
            .block_on(Gateway::start(dev.config.clone(), None))
            .unwrap();
        Dev {
            gateway,
            dev,
            state,
        }
    }

    fn endpoint(&self) -> &str {
        self.gateway.endpoint()
    }

    fn ca(&self) -> &Path {
        self.dev.ca_cert.as_deref().unwrap()
    }

    fn sessions(&self) -> SessionClient {
        let tls = match &self.dev.ca_cert {
            Some(path) => TlsConfig::from_pem_file(path).unwrap(),
            None => TlsConfig::default(),
        };
        let credentials = Credentials::new(
            self.dev.setup.access_key_id.as_str(),
            self.dev.setup.secret_access_key.as_str(),
            None,
        );
        SessionClient::new(ApiClient::new(self.endpoint(), "us-east-1", credentials, tls).unwrap())
    }

    /// The plugin with `args`, this gateway's credentials and nothing else from the
    /// environment's AWS settings.
    fn plugin(&self, args: &[&str]) -> Command {
        let mut command = plugin(args);
        command
            .env("AWS_ACCESS_KEY_ID", &self.dev.setup.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.dev.setup.secret_access_key);
        command
    }
}

/// The plugin with `args`, an empty home and no AWS variables at all.
fn plugin(args: &[&str]) -> Command {
    let home = temp_dir("home");
    let mut command = Command::new(PLUGIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .env("HOME", &home)
        .env("AWS_CONFIG_FILE", home.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("credentials"))
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn run(mut command: Command) -> (Option<i32>, String, String) {
    let output = output(command.spawn().unwrap(), Duration::from_secs(60));
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn output(mut child: std::process::Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the plugin did not finish: {:?}", child.wait_with_output());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn bad_arguments_exit_64() {
    let (code, _, stderr) = run(plugin(&["start-session", "--endpoint-url", "http://x"]));
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("--target"), "{stderr}");

    let (code, _, stderr) = run(plugin(&[
        "start-session",
        "--target",
        "mi-1",
        "--endpoint-url",
        "http://127.0.0.1:1",
        "--parameters",
        "{not json",
    ]));
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("Error: --parameters is not JSON"),
        "{stderr}"
    );

    let (code, _, stderr) = run(plugin(&["describe-sessions", "--state", "Sometimes"]));
    assert_eq!(code, Some(64), "{stderr}");

    // The AWS CLI's contract, with arguments it never passes.
    let (code, _, stderr) = run(plugin(&["{}", "us-east-1"]));
    assert_eq!(code, Some(64), "{stderr}");

    let (code, stdout, _) = run(plugin(&["describe-sessions", "--help"]));
    assert_eq!(code, Some(0));
    assert!(stdout.contains("--state"), "{stdout}");
}

#[test]
fn unreachable_endpoint_exits_69() {
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let mut command = plugin(&["terminate-session", "--session-id", "s-1"]);
    command
        .args(["--endpoint-url", &endpoint])
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "secret");
    let (code, _, stderr) = run(command);
    assert_eq!(code, Some(69), "{stderr}");
    assert!(
        stderr.contains(&format!("Error: {endpoint} did not answer")),
        "{stderr}"
    );
}

#[test]
fn missing_and_rejected_credentials_exit_77_and_refusals_69() {
    let runtime = runtime();
    let dev = Dev::start(&runtime, "credentials", false);
    let (code, _, stderr) = run(plugin(&[
        "describe-sessions",
        "--endpoint-url",
        dev.endpoint(),
    ]));
    assert_eq!(code, Some(77), "{stderr}");
    assert!(
        stderr.contains("AmazonSSM.DescribeSessions needs AWS credentials")
            && stderr.contains("AWS_ACCESS_KEY_ID"),
        "{stderr}"
    );

    let mut unknown = plugin(&["describe-sessions", "--endpoint-url", dev.endpoint()]);
    unknown
        .env("AWS_ACCESS_KEY_ID", "AKIDNOBODY")
        .env("AWS_SECRET_ACCESS_KEY", "secret");
    let (code, _, stderr) = run(unknown);
    assert_eq!(code, Some(77), "{stderr}");

    // A refusal of the request itself (the restricted principal may use no target).
    let mut restricted = plugin(&[
        "start-session",
        "--target",
        &dev.dev.setup.agent_id,
        "--endpoint-url",
        dev.endpoint(),
    ]);
    restricted
        .env("AWS_ACCESS_KEY_ID", &dev.dev.setup.restricted_access_key_id)
        .env(
            "AWS_SECRET_ACCESS_KEY",
            &dev.dev.setup.restricted_secret_access_key,
        );
    let (code, _, stderr) = run(restricted);
    assert_eq!(code, Some(69), "{stderr}");
    assert!(stderr.contains("AccessDenied"), "{stderr}");
}

#[test]
fn scheme_mismatches_and_untrusted_certificates_are_explained() {
    let runtime = runtime();
    let plain = Dev::start(&runtime, "plain", false);
    let tls = Dev::start(&runtime, "tls", true);
    let other = Dev::start(&runtime, "other-ca", true);
    assert!(plain.endpoint().starts_with("http://"));
    assert!(tls.endpoint().starts_with("https://"));

    // https:// to a plain-HTTP gateway.
    let wrong = plain.endpoint().replacen("http://", "https://", 1);
    let mut command = plain.plugin(&["describe-sessions", "--endpoint-url", &wrong]);
    command.arg("--ca-cert").arg(tls.ca());
    let (code, _, stderr) = run(command);
    assert_eq!(code, Some(76), "{stderr}");
    assert!(
        stderr.contains("the endpoint speaks plain HTTP, not TLS: use http:// (not https://)"),
        "{stderr}"
    );

    // http:// to a TLS gateway.
    let wrong = tls.endpoint().replacen("https://", "http://", 1);
    let (code, _, stderr) = run(tls.plugin(&["describe-sessions", "--endpoint-url", &wrong]));
    assert_eq!(code, Some(76), "{stderr}");
    assert!(
        stderr.contains("the endpoint speaks TLS: use https:// (not http://)"),
        "{stderr}"
    );

    // https:// without the gateway's CA: the built-in roots do not sign it.
    let (code, _, stderr) =
        run(tls.plugin(&["describe-sessions", "--endpoint-url", tls.endpoint()]));
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains("the gateway's certificate is not signed by a trusted CA (UnknownIssuer)")
            && stderr.contains("pass --ca-cert FILE or set AWS_CA_BUNDLE")
            && stderr.contains("currently: the built-in Mozilla roots"),
        "{stderr}"
    );

    // AWS_CA_BUNDLE naming another CA: the message names that file.
    let mut command = tls.plugin(&["describe-sessions", "--endpoint-url", tls.endpoint()]);
    command.env("AWS_CA_BUNDLE", other.ca());
    let (code, _, stderr) = run(command);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains(&format!("currently: the CA file {}", other.ca().display())),
        "{stderr}"
    );

    // --ca-cert wins over AWS_CA_BUNDLE.
    let mut command = tls.plugin(&["describe-sessions", "--endpoint-url", tls.endpoint()]);
    command
        .env("AWS_CA_BUNDLE", other.ca())
        .arg("--ca-cert")
        .arg(tls.ca());
    let (code, stdout, stderr) = run(command);
    assert_eq!(code, Some(0), "{stderr}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["Sessions"], serde_json::json!([]), "{stdout}");

    // A CA file that is not one.
    let mut command = tls.plugin(&["describe-sessions", "--endpoint-url", tls.endpoint()]);
    command.arg("--ca-cert").arg("/nonexistent/ca.pem");
    let (code, _, stderr) = run(command);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains("cannot use the CA file /nonexistent/ca.pem"),
        "{stderr}"
    );
}

/// An error page that is not AWS JSON is summed up in its status and first line.
#[test]
fn html_error_pages_are_summed_up() {
    let runtime = runtime();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = [0; 4096];
            let _ = stream.read(&mut request).await;
            let page = format!(
                "<!DOCTYPE html>\n<html><head><title>501 Not Implemented</title></head><body>{}</body></html>",
                "<p>filler</p>".repeat(200)
            );
            let answer = format!(
                "HTTP/1.1 501 Not Implemented\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    let mut command = plugin(&["describe-sessions", "--endpoint-url", &endpoint]);
    command
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "secret");
    let (code, _, stderr) = run(command);
    assert_eq!(code, Some(69), "{stderr}");
    assert!(
        stderr.contains("HTTP 501: not an AWS JSON error")
            && stderr.contains("The answer begins: 501 Not Implemented"),
        "{stderr}"
    );
    assert!(!stderr.contains("filler"), "{stderr}");
}

/// A shell through the plugin, listed by `describe-sessions` (library and program) while it
/// runs, ended by `exit` without alarm; another ended by `terminate-session`.
#[test]
fn sessions_are_described_and_terminated() {
    let runtime = runtime();
    let dev = Dev::start(&runtime, "describe", false);
    let _agent = Agent::start(&dev);
    let sessions = dev.sessions();
    runtime.block_on(online::wait_online(
        &ApiClient::new(
            dev.endpoint(),
            "us-east-1",
            Credentials::new(
                dev.dev.setup.access_key_id.as_str(),
                dev.dev.setup.secret_access_key.as_str(),
                None,
            ),
            TlsConfig::default(),
        )
        .unwrap(),
        &dev.dev.setup.agent_id,
    ));

    // Started (not yet connected): listed as active, with the AWS fields.
    let started = runtime
        .block_on(sessions.start_session(&dev.dev.setup.agent_id, None, BTreeMap::new()))
        .unwrap();
    let active = runtime
        .block_on(sessions.describe_sessions(SessionState::Active, &[]))
        .unwrap();
    let listed = active
        .iter()
        .find(|session| session.session_id == started.session_id)
        .unwrap_or_else(|| panic!("{active:?}"));
    assert_eq!(
        listed.target.as_deref(),
        Some(dev.dev.setup.agent_id.as_str())
    );
    assert!(listed.start_date.is_some() && listed.end_date.is_none());
    assert!(listed.owner.is_some() && listed.document_name.is_some());

    let (code, stdout, stderr) =
        run(dev.plugin(&["describe-sessions", "--endpoint-url", dev.endpoint()]));
    assert_eq!(code, Some(0), "{stderr}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        answer["Sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(
                |session| session["SessionId"] == started.session_id.as_str()
                    && session["Target"] == dev.dev.setup.agent_id.as_str()
            ),
        "{stdout}"
    );

    let (code, stdout, stderr) = run(dev.plugin(&[
        "terminate-session",
        "--session-id",
        &started.session_id,
        "--endpoint-url",
        dev.endpoint(),
    ]));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(&started.session_id), "{stdout}");
    let history = runtime
        .block_on(sessions.describe_sessions(SessionState::History, &[]))
        .unwrap();
    let ended = history
        .iter()
        .find(|session| session.session_id == started.session_id)
        .unwrap_or_else(|| panic!("{history:?}"));
    assert!(ended.end_date.is_some(), "{ended:?}");
    let (code, stdout, stderr) = run(dev.plugin(&[
        "describe-sessions",
        "--state",
        "History",
        "--endpoint-url",
        dev.endpoint(),
    ]));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(&started.session_id), "{stdout}");

    // A shell ended by `exit 3`: the remote code, and the ordinary goodbye.
    let mut shell = dev.plugin(&[
        "start-session",
        "--target",
        &dev.dev.setup.agent_id,
        "--endpoint-url",
        dev.endpoint(),
    ]);
    shell.stdin(Stdio::piped());
    let mut child = shell.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo hi-$((6*7))\nexit 3\n")
        .unwrap();
    let output = output(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("hi-42"));
    assert!(
        stderr.contains("Exiting session with sessionId: "),
        "{stderr}"
    );
    assert!(
        !stderr.contains("closed the channel") && !stderr.contains("ended before"),
        "{stderr}"
    );
}

/// The agent program, killed when dropped.
struct Agent(std::process::Child);

impl Agent {
    fn start(dev: &Dev) -> Agent {
        let child = Command::new(AGENT)
            .env("SSM_AGENT_ENDPOINT", dev.endpoint())
            .env("SSM_AGENT_ID", &dev.dev.setup.agent_id)
            .env("SSM_AGENT_SECRET", &dev.dev.setup.agent_secret)
            .env("SHELL", "/bin/sh")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Agent(child)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The websocket dialer explains the same mismatches as the API client.
#[test]
fn data_channel_dials_explain_tls_mismatches() {
    use ssm_session::net::{self, NetError, Options, TlsMismatch};
    use ssm_session::session::ClientConfig;
    let runtime = runtime();
    let plain = Dev::start(&runtime, "ws-plain", false);
    let tls = Dev::start(&runtime, "ws-tls", true);
    let dial = |endpoint: &str| {
        let url = ssm_session::net::http::Endpoint::parse(endpoint)
            .unwrap()
            .websocket_url("/v1/data-channel/s-1");
        let config = ClientConfig::new("s-1", "mi-1");
        runtime.block_on(net::connect(&url, "token", config, Options::default()))
    };
    let mismatch = |result: Result<net::Connection, NetError>| match result {
        Err(NetError::Connect(cause)) => cause
            .downcast_ref::<TlsMismatch>()
            .cloned()
            .unwrap_or_else(|| panic!("not a TLS mismatch: {cause}")),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("connected"),
    };
    let untrusted = mismatch(dial(tls.endpoint()));
    assert!(
        matches!(&untrusted, TlsMismatch::UntrustedCertificate { reason, .. } if reason == "UnknownIssuer"),
        "{untrusted}"
    );
    let wrong = plain.endpoint().replacen("http://", "https://", 1);
    assert_eq!(mismatch(dial(&wrong)), TlsMismatch::PlainText);
}
