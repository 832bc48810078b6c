//! A stopping agent delivers what its sessions have before they end: a port session closes
//! its TCP streams (each reported) and then its data channel, a shell's last output reaches
//! the client and the recording. Gateway, agent and client run in this process.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use ssm_session::agent::{self, AgentSettings};
use ssm_session::aws::ApiClient;
use ssm_session::client::SessionClient;
use ssm_session::gateway::{self, Gateway};
use ssm_session::net::{Ending, Incoming, TlsConfig};
use ssm_session::sigv4::Credentials;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

#[path = "support/online.rs"]
mod online;

/// A gateway and an agent in this process; [`World::stop_agent`] stops the agent as SIGTERM
/// would.
struct World {
    gateway: Gateway,
    state: PathBuf,
    admin: Credentials,
    target: String,
    stop: Option<oneshot::Sender<()>>,
    agent: tokio::task::JoinHandle<Result<(), agent::AgentError>>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.agent.abort();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

impl World {
    async fn start(name: &str) -> World {
        let state = std::env::temp_dir().join(format!("ssm-cancel-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let dev = gateway::prepare_dev(&state, "127.0.0.1:0".parse().unwrap(), false).unwrap();
        let gateway = Gateway::start(dev.config.clone(), None).await.unwrap();
        let mut settings = AgentSettings::new(
            gateway.endpoint(),
            &dev.setup.agent_id,
            &dev.setup.agent_secret,
        )
        .unwrap();
        settings.shell = "/bin/sh".into();
        let (stop, stopped) = oneshot::channel::<()>();
        let agent = tokio::spawn(agent::run(settings, async {
            let _ = stopped.await;
        }));
        let world = World {
            gateway,
            state,
            admin: Credentials::new(&dev.setup.access_key_id, &dev.setup.secret_access_key, None),
            target: dev.setup.agent_id.clone(),
            stop: Some(stop),
            agent,
        };
        world.wait_online().await;
        world
    }

    fn api(&self) -> ApiClient {
        ApiClient::new(
            self.gateway.endpoint(),
            "us-east-1",
            self.admin.clone(),
            TlsConfig::default(),
        )
        .unwrap()
    }

    fn sessions(&self) -> SessionClient {
        SessionClient::new(self.api())
    }

    async fn wait_online(&self) {
        online::wait_online(&self.api(), &self.target).await;
    }

    /// Stops the agent and waits until `run` returned (within its grace period).
    async fn stop_agent(&mut self) {
        let _ = self.stop.take().expect("stopped once").send(());
        let ran = tokio::time::timeout(
            agent::SHUTDOWN_GRACE + Duration::from_secs(5),
            &mut self.agent,
        )
        .await
        .expect("the agent did not stop within its grace period");
        ran.unwrap().unwrap();
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.gateway.audit_path())
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// The audit records of `session_id`, once one says `event` (the gateway writes the
    /// agent's reports as they arrive).
    async fn audited(&self, session_id: &str, event: &str) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let records: Vec<Value> = self
                .audit()
                .into_iter()
                .filter(|record| record["session_id"] == session_id)
                .collect();
            if records.iter().any(|record| record["event"] == event) {
                return records;
            }
            assert!(
                Instant::now() < deadline,
                "no {event} for {session_id} in {records:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A TCP echo service on loopback; its port.
async fn echo_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = socket.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    port
}

fn agent_shutdown(records: &[Value]) -> bool {
    records
        .iter()
        .any(|record| record["event"] == "session.end" && record["end_reason"] == "agent_shutdown")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_agent_closes_port_streams_and_reports_them() {
    let mut world = World::start("port").await;
    let sessions = world.sessions();
    let echo = echo_server().await;
    let parameters = BTreeMap::from([("portNumber".to_owned(), vec![echo.to_string()])]);
    let started = sessions
        .start_session(
            &world.target,
            Some("AWS-StartPortForwardingSession"),
            parameters,
        )
        .await
        .unwrap();
    let connection = sessions.connect(&started).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let forwarding = tokio::spawn(ssm_session::client::run_port_forwarding(
        connection,
        listener,
        std::future::pending(),
        |_| {},
    ));
    let mut socket = tokio::net::TcpStream::connect(local).await.unwrap();
    socket.write_all(b"ping").await.unwrap();
    let mut echoed = [0; 4];
    socket.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");

    world.stop_agent().await;
    let summary = tokio::time::timeout(Duration::from_secs(5), forwarding)
        .await
        .expect("the client's session did not end")
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            summary.ending,
            Ending::ChannelClosed { .. } | Ending::Closed
        ),
        "{}",
        summary.ending
    );
    // The agent closed the stream: the local connection sees its end.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the local connection stayed open");

    let records = world.audited(&started.session_id, "session.end").await;
    let closed: Vec<&Value> = records
        .iter()
        .filter(|record| record["event"] == "stream.close")
        .collect();
    assert_eq!(closed.len(), 1, "{records:#?}");
    assert_eq!(closed[0]["bytes_client_to_target"], 4, "{records:#?}");
    assert!(agent_shutdown(&records), "{records:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_agent_delivers_the_last_shell_output() {
    let mut world = World::start("shell").await;
    let sessions = world.sessions();
    let started = sessions
        .start_session(&world.target, None, BTreeMap::new())
        .await
        .unwrap();
    let mut connection = sessions.connect(&started).await.unwrap();
    connection
        .write_all(b"echo last-$((6*7)); sleep 30\n")
        .await
        .unwrap();
    // The output is written, but the client reads nothing before the agent stops.
    tokio::time::sleep(Duration::from_millis(500)).await;
    world.stop_agent().await;
    let (mut output, mut ending) = (Vec::new(), None);
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(incoming) = connection.recv().await {
            match incoming {
                Incoming::Data(bytes) => output.extend_from_slice(&bytes),
                Incoming::Ended(end) => ending = Some(end),
                _ => {}
            }
        }
    })
    .await
    .expect("the client's session did not end");
    let output = String::from_utf8_lossy(&output);
    assert!(output.contains("last-42"), "output: {output:?}");
    assert!(
        matches!(ending, Some(Ending::ChannelClosed { .. } | Ending::Closed)),
        "{ending:?}"
    );

    let records = world.audited(&started.session_id, "session.end").await;
    assert!(agent_shutdown(&records), "{records:#?}");
    // The recording ends with the output and the marker: its last chunk was not dropped.
    let cast = world
        .state
        .join("recordings")
        .join(format!("{}.cast", started.session_id));
    let cast = std::fs::read_to_string(&cast).unwrap();
    assert!(cast.contains("last-42"), "{cast}");
    let last = cast.lines().last().unwrap_or_default();
    assert!(last.contains("session cancelled"), "{cast}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_agent_delivers_a_commands_output() {
    let mut world = World::start("exec").await;
    let sessions = world.sessions();
    let command = "echo out-$((6*7)); echo err-$((6*7)) >&2; sleep 30";
    let parameters = BTreeMap::from([("command".to_owned(), vec![command.to_owned()])]);
    let started = sessions
        .start_session(
            &world.target,
            Some("AWS-StartNonInteractiveCommand"),
            parameters,
        )
        .await
        .unwrap();
    let mut connection = sessions.connect(&started).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    world.stop_agent().await;
    let (mut stdout, mut stderr, mut exit_code, mut ending) = (Vec::new(), Vec::new(), None, None);
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(incoming) = connection.recv().await {
            match incoming {
                Incoming::Data(bytes) => stdout.extend_from_slice(&bytes),
                Incoming::Stderr(bytes) => stderr.extend_from_slice(&bytes),
                Incoming::ExitCode(code) => exit_code = Some(code.0),
                Incoming::Ended(end) => ending = Some(end),
                _ => {}
            }
        }
    })
    .await
    .expect("the client's session did not end");
    assert!(
        String::from_utf8_lossy(&stdout).contains("out-42"),
        "{stdout:?}"
    );
    assert!(
        String::from_utf8_lossy(&stderr).contains("err-42"),
        "{stderr:?}"
    );
    assert_eq!(exit_code, None, "the command was stopped, it did not exit");
    assert!(
        matches!(ending, Some(Ending::ChannelClosed { .. } | Ending::Closed)),
        "{ending:?}"
    );
    let records = world.audited(&started.session_id, "session.end").await;
    assert!(agent_shutdown(&records), "{records:#?}");
}
