//! The whole story on loopback, with no configuration: a gateway (wss, generated certificate),
//! an agent dialling out to it, an encrypted shell session that exits non-zero, a 100 MB port
//! forward, a refused principal, a session cut by a policy change, and the audit chain
//! verified. Exits 0 only if every step behaved as it should.
//!
//! ```text
//! cargo run --release --example demo
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use ssm_session::agent::AgentSettings;
use ssm_session::aws::ApiClient;
use ssm_session::client::{self, SessionClient};
use ssm_session::gateway::{self, DEV_ENCRYPTED_SHELL, Gateway};
use ssm_session::net::{Connection, Ending, Incoming, TlsConfig};
use ssm_session::sigv4::Credentials;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const TRANSFER: usize = 100 * 1000 * 1000;

#[tokio::main]
async fn main() {
    match run().await {
        Ok(()) => println!("\ndemo: every step behaved as it should"),
        Err(error) => {
            eprintln!("\ndemo FAILED: {error}");
            std::process::exit(1);
        }
    }
}

fn step(title: &str) {
    println!("\n== {title}");
}

/// The terminal's output as a reader sees it: without the escape sequences a shell sends for
/// the terminal itself (bracketed paste `ESC[?2004h`, colours, titles) and without `\r`.
fn printable(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let mut shown = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters, then one final byte in @..~.
                Some('[') => while chars.next().is_some_and(|c| !('@'..='~').contains(&c)) {},
                // OSC: up to BEL or ESC \.
                Some(']') => while chars.next().is_some_and(|c| c != '\u{7}' && c != '\u{1b}') {},
                _ => {}
            },
            '\r' => {}
            c => shown.push(c),
        }
    }
    shown
}

fn check(ok: bool, what: impl Into<String>) -> Result<()> {
    match ok {
        true => Ok(()),
        false => Err(what.into().into()),
    }
}

async fn run() -> Result<()> {
    step("gateway (--dev --tls) on 127.0.0.1");
    let state = std::env::temp_dir().join(format!("ssm-session-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let dev = gateway::prepare_dev(&state, "127.0.0.1:0".parse()?, true)?;
    let ca = std::fs::read(dev.ca_cert.as_ref().ok_or("no CA certificate")?)?;
    let tls = TlsConfig::with_root_pem(&ca)?;
    let gateway = Gateway::start(dev.config.clone(), Some(dev.config_path.clone())).await?;
    println!("endpoint {}  state {}", gateway.endpoint(), state.display());

    step("agent dials out (it listens on no port)");
    let settings = AgentSettings::new(
        gateway.endpoint(),
        &dev.setup.agent_id,
        &dev.setup.agent_secret,
    )?
    .tls(tls.clone());
    let agent = tokio::spawn(run_agent(settings));
    let admin = ApiClient::new(
        gateway.endpoint(),
        &dev.setup.region,
        Credentials::new(&dev.setup.access_key_id, &dev.setup.secret_access_key, None),
        tls.clone(),
    )?;
    wait_online(&admin, &dev.setup.agent_id).await?;
    println!("agent {} is online", dev.setup.agent_id);
    let sessions = SessionClient::new(admin.clone());

    step("encrypted shell session (KMS data key, end to end)");
    let started = sessions
        .start_session(
            &dev.setup.agent_id,
            Some(DEV_ENCRYPTED_SHELL),
            BTreeMap::new(),
        )
        .await?;
    let connection = sessions.connect(&started).await?;
    check(
        connection.info().encrypted,
        "the shell session is not encrypted",
    )?;
    println!(
        "session {} encrypted: {}",
        started.session_id,
        connection.info().encrypted
    );
    let (output, exit_code) = shell(
        connection,
        "echo hello from $(uname -s); printf 'sum=%d\\n' $((40+2)); exit 3\n",
    )
    .await?;
    print!("{}", printable(&output));
    check(
        exit_code == Some(3),
        format!("expected exit code 3, got {exit_code:?}"),
    )?;
    check(
        String::from_utf8_lossy(&output).contains("sum=42"),
        "the command output is missing",
    )?;
    println!("remote exit code reported: 3");
    let recording = gateway.recording_path(&started.session_id);

    step("port forwarding: 100 MB through the gateway");
    let rate = port_forward(&sessions, &dev.setup.agent_id).await?;
    println!("100 MB forwarded and verified (SHA-256) at {rate:.1} MB/s");

    step("restricted principal is refused");
    let restricted = SessionClient::new(ApiClient::new(
        gateway.endpoint(),
        &dev.setup.region,
        Credentials::new(
            &dev.setup.restricted_access_key_id,
            &dev.setup.restricted_secret_access_key,
            None,
        ),
        tls.clone(),
    )?);
    match restricted
        .start_session(&dev.setup.agent_id, None, BTreeMap::new())
        .await
    {
        Ok(started) => {
            return Err(format!("restricted principal got session {}", started.session_id).into());
        }
        Err(error) => {
            check(
                error.code() == Some("AccessDeniedException"),
                format!("unexpected refusal: {error}"),
            )?;
            println!("refused: {error}");
        }
    }

    step("a live session is cut by a policy change");
    let started = sessions
        .start_session(&dev.setup.agent_id, None, BTreeMap::new())
        .await?;
    let mut connection = sessions.connect(&started).await?;
    connection.write_all(b"echo still here\n").await?;
    let mut config = dev.config.clone();
    config.policies.insert(
        "all-targets".into(),
        serde_json::json!({"Version": "2012-10-17", "Statement": [
            {"Sid": "Sessions", "Effect": "Allow", "Action": "ssm:StartSession", "Resource": "*"},
            {"Sid": "NoMoreShells", "Effect": "Deny", "Action": "ssm:StartSession",
             "Resource": "arn:aws:ssm:*::document/SSM-SessionManagerRunShell"}]}),
    );
    let edited = Instant::now();
    config.save(&dev.config_path)?;
    let ending = loop {
        match tokio::time::timeout(Duration::from_secs(5), connection.recv()).await? {
            Some(Incoming::Ended(ending)) => break ending,
            Some(_) => {}
            None => return Err("the session vanished without an ending".into()),
        }
    };
    let cut_after = edited.elapsed();
    match &ending {
        Ending::ChannelClosed { output } => println!("session cut after {cut_after:?}: {output}"),
        other => return Err(format!("expected channel_closed, got {other}").into()),
    }
    check(
        cut_after <= Duration::from_secs(1),
        format!("revocation took {cut_after:?}"),
    )?;

    step("audit chain");
    agent.abort();
    gateway.shutdown().await;
    let audit_path = state.join("audit.jsonl");
    let summary =
        ssm_session::audit::verify(std::io::BufReader::new(std::fs::File::open(&audit_path)?))?;
    println!("{} verified:\n{summary}", audit_path.display());
    let cast = std::fs::read_to_string(&recording)?;
    check(cast.lines().count() > 2, "the recording is empty")?;
    println!(
        "recording of the encrypted shell: {} ({} lines; play with `asciinema play`)",
        recording.display(),
        cast.lines().count()
    );
    Ok(())
}

async fn wait_online(api: &ApiClient, agent_id: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = api
            .call(
                "ssm",
                "AmazonSSM.DescribeInstanceInformation",
                &serde_json::json!({}),
            )
            .await?;
        let online = answer["InstanceInformationList"]
            .as_array()
            .is_some_and(|list| {
                list.iter()
                    .any(|i| i["InstanceId"] == agent_id && i["PingStatus"] == "Online")
            });
        if online {
            return Ok(());
        }
        check(
            Instant::now() < deadline,
            "the agent did not come online within 10 s",
        )?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Types `input` and collects output until the session ends; returns it and the exit code.
async fn shell(mut connection: Connection, input: &str) -> Result<(Vec<u8>, Option<i32>)> {
    connection.write_all(input.as_bytes()).await?;
    let mut output = Vec::new();
    let mut exit_code = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), connection.recv()).await? {
            Some(Incoming::Data(bytes)) => output.extend_from_slice(&bytes),
            Some(Incoming::ExitCode(code)) => exit_code = Some(code.0),
            Some(Incoming::Ended(_)) | None => return Ok((output, exit_code)),
            Some(_) => {}
        }
    }
}

/// Forwards 100 MB to a local service that answers with their SHA-256; MB/s.
async fn port_forward(sessions: &SessionClient, target: &str) -> Result<f64> {
    let service = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = service.local_addr()?.port();
    tokio::spawn(async move {
        if let Ok((mut socket, _)) = service.accept().await {
            // smux v1 has no half-close: the length is agreed instead of signalled.
            let mut hash = Sha256::new();
            let mut buffer = vec![0; 64 * 1024];
            let mut left = TRANSFER;
            while left > 0 {
                let want = buffer.len().min(left);
                match socket.read(&mut buffer[..want]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        hash.update(&buffer[..n]);
                        left -= n;
                    }
                }
            }
            let _ = socket.write_all(&hash.finalize()).await;
        }
    });
    let parameters = BTreeMap::from([("portNumber".to_owned(), vec![port.to_string()])]);
    let started = sessions
        .start_session(target, Some("AWS-StartPortForwardingSession"), parameters)
        .await?;
    let connection = sessions.connect(&started).await?;
    let local = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let local_addr = local.local_addr()?;
    let forwarding = tokio::spawn(client::run_port_forwarding(
        connection,
        local,
        std::future::pending(),
        |_| {},
    ));

    let mut socket = tokio::net::TcpStream::connect(local_addr).await?;
    let block: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let mut expected = Sha256::new();
    let begin = Instant::now();
    let mut sent = 0;
    while sent < TRANSFER {
        let n = block.len().min(TRANSFER - sent);
        socket.write_all(&block[..n]).await?;
        expected.update(&block[..n]);
        sent += n;
    }
    let mut digest = [0u8; 32];
    socket.read_exact(&mut digest).await?;
    let seconds = begin.elapsed().as_secs_f64();
    check(
        digest[..] == expected.finalize()[..],
        "the forwarded bytes differ (SHA-256)",
    )?;
    sessions.terminate_session(&started.session_id).await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), forwarding).await;
    Ok(TRANSFER as f64 / 1e6 / seconds)
}

/// The agent until its task is aborted.
async fn run_agent(settings: ssm_session::agent::AgentSettings) {
    if let Err(error) = ssm_session::agent::run(settings, std::future::pending()).await {
        panic!("the agent cannot run: {error}");
    }
}
