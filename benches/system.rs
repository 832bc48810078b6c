//! The whole system on loopback: port-forward throughput through the gateway against a direct
//! TCP copy, session start (plain and KMS-encrypted), keystroke echo round trip (p50/p99) through client → gateway → agent → PTY and
//! back, and the gateway's memory with 1 000 idle sessions (the gateway runs as a child process
//! so that its resident set is measured alone).
//!
//! ```text
//! cargo bench --bench system
//! ```

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use ssm_session::agent::AgentSettings;
use ssm_session::aws::ApiClient;
use ssm_session::client::{self, SessionClient};
use ssm_session::gateway::{self, Gateway};
use ssm_session::net::{Connection, Incoming, TlsConfig};
use ssm_session::sigv4::Credentials;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TRANSFER: usize = 64 << 20;

fn main() {
    if std::env::var_os("SSM_BENCH_GATEWAY_CHILD").is_some() {
        return gateway_child();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let world = runtime.block_on(World::start());
    let mut criterion = Criterion::default().configure_from_args().sample_size(10);

    let mut group = criterion.benchmark_group("port_forward");
    group.throughput(Throughput::Bytes(TRANSFER as u64));
    group.bench_function("direct_tcp_copy", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let sink = sink_server().await;
                    total += push(sink).await;
                }
                total
            })
        })
    });
    group.bench_function("through_gateway", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let sink = sink_server().await;
                    let (local, session) = world.forward(sink.port()).await;
                    total += push(local).await;
                    world.sessions.terminate_session(&session).await.unwrap();
                }
                total
            })
        })
    });
    group.finish();

    // StartSession to handshake complete; the encrypted document adds GenerateDataKey (client),
    // Decrypt (agent) through the gateway's KMS, and the challenge round trip.
    let mut group = criterion.benchmark_group("session_start");
    for (document, encrypted) in [
        ("SSM-SessionManagerRunShell", false),
        (gateway::DEV_ENCRYPTED_SHELL, true),
    ] {
        group.bench_function(document, |b| {
            b.iter_custom(|iterations| {
                runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iterations {
                        let begin = Instant::now();
                        let started = world
                            .sessions
                            .start_session(&world.target, Some(document), BTreeMap::new())
                            .await
                            .unwrap();
                        let connection = world.sessions.connect(&started).await.unwrap();
                        total += begin.elapsed();
                        assert_eq!(connection.info().encrypted, encrypted);
                        world
                            .sessions
                            .terminate_session(&started.session_id)
                            .await
                            .unwrap();
                        drop(connection);
                    }
                    total
                })
            })
        });
    }
    group.finish();

    let mut shell = runtime.block_on(world.shell());
    let mut group = criterion.benchmark_group("keystroke");
    group.bench_function("echo_round_trip", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    total += keystroke(&mut shell).await;
                }
                total
            })
        })
    });
    group.finish();
    let mut samples: Vec<Duration> = runtime.block_on(async {
        let mut samples = Vec::new();
        for _ in 0..2000 {
            samples.push(keystroke(&mut shell).await);
        }
        samples
    });
    samples.sort();
    println!(
        "keystroke echo over 2000 keystrokes: p50 {:?} p99 {:?} max {:?}",
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
        samples[samples.len() - 1]
    );
    drop(world);
    runtime.block_on(idle_sessions_memory(1000));
}

struct World {
    _gateway: Gateway,
    sessions: SessionClient,
    target: String,
}

impl World {
    async fn start() -> World {
        let state = std::env::temp_dir().join(format!("ssm-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let dev = gateway::prepare_dev(&state, "127.0.0.1:0".parse().unwrap(), false).unwrap();
        let gateway = Gateway::start(dev.config.clone(), None).await.unwrap();
        let settings = AgentSettings::new(
            gateway.endpoint(),
            &dev.setup.agent_id,
            &dev.setup.agent_secret,
        )
        .unwrap();
        tokio::spawn(run_agent(settings));
        let api = ApiClient::new(
            gateway.endpoint(),
            "us-east-1",
            Credentials::new(&dev.setup.access_key_id, &dev.setup.secret_access_key, None),
            TlsConfig::default(),
        )
        .unwrap();
        let target = dev.setup.agent_id.clone();
        wait_online(&api, &target).await;
        let sessions = SessionClient::new(api);
        World {
            _gateway: gateway,
            sessions,
            target,
        }
    }

    /// A port-forwarding session to `port`; the local address to connect to and its id.
    async fn forward(&self, port: u16) -> (std::net::SocketAddr, String) {
        let parameters = BTreeMap::from([("portNumber".to_owned(), vec![port.to_string()])]);
        let started = self
            .sessions
            .start_session(
                &self.target,
                Some("AWS-StartPortForwardingSession"),
                parameters,
            )
            .await
            .unwrap();
        let connection = self.sessions.connect(&started).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        tokio::spawn(client::run_port_forwarding(
            connection,
            listener,
            std::future::pending(),
            |_| {},
        ));
        (local, started.session_id)
    }

    async fn shell(&self) -> Connection {
        let started = self
            .sessions
            .start_session(&self.target, None, BTreeMap::new())
            .await
            .unwrap();
        let mut connection = self.sessions.connect(&started).await.unwrap();
        // Raw, silent terminal so that one byte in is one byte echoed by `cat`.
        connection
            .write_all(b"stty raw -echo; cat\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(200), connection.recv()).await
        {}
        connection
    }
}

async fn wait_online(api: &ApiClient, target: &str) {
    for _ in 0..200 {
        let answer = api
            .call(
                "ssm",
                "AmazonSSM.DescribeInstanceInformation",
                &serde_json::json!({}),
            )
            .await
            .unwrap();
        let online = answer["InstanceInformationList"]
            .as_array()
            .is_some_and(|list| {
                list.iter()
                    .any(|i| i["InstanceId"] == target && i["PingStatus"] == "Online")
            });
        if online {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the agent did not come online");
}

/// One byte to `cat` in the PTY and back.
async fn keystroke(shell: &mut Connection) -> Duration {
    let begin = Instant::now();
    shell.write_all(b"x").await.unwrap();
    loop {
        match shell.recv().await {
            Some(Incoming::Data(bytes)) if bytes.contains(&b'x') => return begin.elapsed(),
            Some(Incoming::Ended(ending)) => panic!("shell ended: {ending}"),
            _ => {}
        }
    }
}

/// A TCP service that reads [`TRANSFER`] bytes and answers one byte.
async fn sink_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buffer = vec![0; 256 * 1024];
        let mut left = TRANSFER;
        while left > 0 {
            let n = socket.read(&mut buffer).await.unwrap();
            assert!(n > 0);
            left -= n;
        }
        socket.write_all(b"k").await.unwrap();
    });
    addr
}

/// Writes [`TRANSFER`] bytes to `addr` and waits for the answer.
async fn push(addr: std::net::SocketAddr) -> Duration {
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let block = vec![7u8; 256 * 1024];
    let begin = Instant::now();
    let mut sent = 0;
    while sent < TRANSFER {
        socket.write_all(&block).await.unwrap();
        sent += block.len();
    }
    let mut answer = [0u8; 1];
    socket.read_exact(&mut answer).await.unwrap();
    begin.elapsed()
}

/// The child process: a dev gateway printing its JSON line.
fn gateway_child() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let state = std::env::temp_dir().join(format!("ssm-bench-gw-{}", std::process::id()));
        let dev = gateway::prepare_dev(&state, "127.0.0.1:0".parse().unwrap(), false).unwrap();
        let gateway = Gateway::start(dev.config.clone(), None).await.unwrap();
        let mut line = serde_json::to_value(&dev.setup).unwrap();
        line["endpoint"] = gateway.endpoint().into();
        println!("{line}");
        std::future::pending::<()>().await;
    });
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Opens `count` idle port sessions (both data channels connected) through a gateway process
/// and reports its resident memory before and after.
async fn idle_sessions_memory(count: usize) {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env("SSM_BENCH_GATEWAY_CHILD", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let dev: serde_json::Value = serde_json::from_str(&line).unwrap();
    let field = |name: &str| dev[name].as_str().unwrap().to_owned();
    let settings = AgentSettings::new(
        &field("endpoint"),
        &field("agent_id"),
        &field("agent_secret"),
    )
    .unwrap();
    let agent_task = tokio::spawn(run_agent(settings));
    let api = ApiClient::new(
        &field("endpoint"),
        "us-east-1",
        Credentials::new(field("access_key_id"), field("secret_access_key"), None),
        TlsConfig::default(),
    )
    .unwrap();
    let target = field("agent_id");
    wait_online(&api, &target).await;
    let sessions = SessionClient::new(api);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(child.id());
    let mut connections = Vec::with_capacity(count);
    for _ in 0..count {
        let parameters = BTreeMap::from([("portNumber".to_owned(), vec!["9".to_owned()])]);
        let started = sessions
            .start_session(&target, Some("AWS-StartPortForwardingSession"), parameters)
            .await
            .unwrap();
        connections.push(sessions.connect(&started).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(child.id());
    println!(
        "gateway resident memory: {} KiB idle, {} KiB with {count} idle sessions: {:.1} KiB per session",
        before,
        after,
        (after.saturating_sub(before)) as f64 / count as f64
    );
    drop(connections);
    agent_task.abort();
    let _ = child.kill();
    let _ = child.wait();
}

/// The agent until its task is aborted.
async fn run_agent(settings: ssm_session::agent::AgentSettings) {
    if let Err(error) = ssm_session::agent::run(settings, std::future::pending()).await {
        panic!("the agent cannot run: {error}");
    }
}
