//! Issue 13, agent side, performed against a gateway, an agent and a client in this process:
//! run-as for command documents and the non-root default user, recordings of encrypted
//! sessions kept off the gateway, command sessions recorded and audited, and port
//! destinations refused (unresolvable, link-local) with the agent's reason at the client.

#[path = "support/online.rs"]
mod online;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use ssm_session::agent::{self, AgentSettings};
use ssm_session::aws::{ApiClient, HttpKms};
use ssm_session::client::SessionClient;
use ssm_session::gateway::{self, DEV_ENCRYPTED_SHELL, Gateway};
use ssm_session::net::{Ending, Incoming, TlsConfig};
use ssm_session::sigv4::Credentials;
use tokio::io::AsyncWriteExt;

/// A gateway with `documents` (name, content) and an agent configured by `configure`.
struct World {
    gateway: Gateway,
    state: PathBuf,
    admin: Credentials,
    target: String,
    recordings: PathBuf,
    agent: tokio::task::JoinHandle<Result<(), agent::AgentError>>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.agent.abort();
        let _ = std::fs::remove_dir_all(&self.state);
        let _ = std::fs::remove_dir_all(&self.recordings);
    }
}

impl World {
    async fn start(
        name: &str,
        documents: &[(&str, Value)],
        configure: impl FnOnce(&mut AgentSettings),
    ) -> World {
        let id = format!("{name}-{}", std::process::id());
        let state = std::env::temp_dir().join(format!("ssm-harden-{id}"));
        let recordings = std::env::temp_dir().join(format!("ssm-harden-agent-{id}"));
        let _ = std::fs::remove_dir_all(&state);
        let _ = std::fs::remove_dir_all(&recordings);
        let dev = gateway::prepare_dev(&state, "127.0.0.1:0".parse().unwrap(), false).unwrap();
        for (document, content) in documents {
            let path = state.join("documents").join(format!("{document}.json"));
            std::fs::write(path, content.to_string()).unwrap();
        }
        let gateway = Gateway::start(dev.config.clone(), None).await.unwrap();
        let mut settings = AgentSettings::new(
            gateway.endpoint(),
            &dev.setup.agent_id,
            &dev.setup.agent_secret,
        )
        .unwrap();
        settings.shell = "/bin/sh".into();
        settings.recordings_dir = recordings.clone();
        configure(&mut settings);
        let agent = tokio::spawn(agent::run(settings, std::future::pending()));
        let world = World {
            gateway,
            state,
            admin: Credentials::new(&dev.setup.access_key_id, &dev.setup.secret_access_key, None),
            target: dev.setup.agent_id.clone(),
            recordings,
            agent,
        };
        online::wait_online(&world.api(), &world.target).await;
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
        SessionClient::new(self.api()).key_provider(Arc::new(HttpKms::new(self.api())))
    }

    /// Runs `document` to its end, typing `input`: its id, stdout+stderr and ending.
    async fn run(
        &self,
        document: &str,
        parameters: &[(&str, &str)],
        input: &[u8],
    ) -> (String, String, Option<Ending>) {
        let parameters: BTreeMap<String, Vec<String>> = parameters
            .iter()
            .map(|(name, value)| (name.to_string(), vec![value.to_string()]))
            .collect();
        let sessions = self.sessions();
        let started = sessions
            .start_session(&self.target, Some(document), parameters)
            .await
            .unwrap();
        let mut connection = sessions.connect(&started).await.unwrap();
        if !input.is_empty() {
            connection.write_all(input).await.unwrap();
        }
        let mut output = Vec::new();
        let ending = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match connection.recv().await {
                    Some(Incoming::Data(bytes) | Incoming::Stderr(bytes)) => {
                        output.extend_from_slice(&bytes)
                    }
                    Some(Incoming::Ended(ending)) => return Some(ending),
                    Some(_) => {}
                    None => return None,
                }
            }
        })
        .await
        .expect("the session did not end");
        let output = String::from_utf8_lossy(&output).into_owned();
        (started.session_id, output, ending)
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.gateway.audit_path())
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// The audit records of `session_id`, once its `session.end` is written.
    async fn ended(&self, session_id: &str) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let records: Vec<Value> = self
                .audit()
                .into_iter()
                .filter(|record| record["session_id"] == session_id)
                .collect();
            if records
                .iter()
                .any(|record| record["event"] == "session.end")
            {
                return records;
            }
            assert!(Instant::now() < deadline, "no session.end in {records:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

/// The uid of `name` in `/etc/passwd`.
fn uid_of(name: &str) -> Option<u32> {
    std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() >= 7 && fields[0] == name)
        .map(|fields| fields[2].parse().unwrap())
}

/// Whether `word` was printed as a word of its own (a shell prompt may precede it on its line;
/// `uid=1` must not match `uid=10`).
fn said(output: &str, word: &str) -> bool {
    output.split_whitespace().any(|token| token == word)
}

fn command_document(inputs: Value, command: &str) -> Value {
    json!({
        "schemaVersion": "1.0",
        "sessionType": "NonInteractiveCommands",
        "inputs": inputs,
        "properties": {"linux": {"commands": command}},
    })
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        match path.is_dir() {
            true => found.extend(files(&path)),
            false => found.push(path),
        }
    }
    found
}

/// Finding 7: a command document with run-as runs as its user, not as the agent (root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_documents_run_as_their_run_as_user() {
    let inputs = json!({"runAsEnabled": true, "runAsDefaultUser": "daemon"});
    let document = command_document(inputs, "id -u");
    let world = World::start("run-as", &[("Print-Uid", document)], |_| {}).await;
    let (id, output, _) = world.run("Print-Uid", &[], b"").await;
    let daemon = uid_of("daemon").expect("daemon exists");
    match euid() {
        0 => assert_eq!(output.trim(), daemon.to_string(), "{id}: {output:?}"),
        // Only root may switch users: the session is refused, not run as the agent.
        _ => assert!(
            output.contains("needs the agent to run as root"),
            "{output:?}"
        ),
    }
}

/// Finding 7: run-as in the account's preferences (`SSM-SessionManagerRunShell`) applies to
/// the built-in command documents too, not only to shells.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferences_run_as_applies_to_command_documents() {
    let preferences = json!({
        "schemaVersion": "1.0",
        "sessionType": "Standard_Stream",
        "inputs": {"runAsEnabled": true, "runAsDefaultUser": "daemon"},
    });
    let documents = [("SSM-SessionManagerRunShell", preferences)];
    let world = World::start("preferences", &documents, |_| {}).await;
    let daemon = uid_of("daemon").expect("daemon exists");
    let command = [("command", "echo uid=$(id -u)")];
    for document in [
        "AWS-StartNonInteractiveCommand",
        "AWS-StartInteractiveCommand",
    ] {
        let (_, output, _) = world.run(document, &command, b"").await;
        match euid() {
            0 => assert!(
                said(&output, &format!("uid={daemon}")),
                "{document}: {output:?}"
            ),
            _ => assert!(
                output.contains("needs the agent to run as root"),
                "{output:?}"
            ),
        }
    }
    let (_, output, _) = world
        .run(
            "SSM-SessionManagerRunShell",
            &[],
            b"echo uid=$(id -u); exit\n",
        )
        .await;
    if euid() == 0 {
        assert!(said(&output, &format!("uid={daemon}")), "shell: {output:?}");
    }
}

/// Finding 7: without run-as, a root agent runs commands as its non-root default user; the
/// explicit opt-out runs them as the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_agent_runs_commands_as_its_default_user() {
    let world = World::start("default-user", &[], |settings| {
        settings.default_run_as = Some("nobody".into());
    })
    .await;
    let command = [("command", "id -u")];
    let (_, output, _) = world
        .run("AWS-StartNonInteractiveCommand", &command, b"")
        .await;
    let expected = match euid() {
        0 => uid_of("nobody").expect("nobody exists"),
        mine => mine,
    };
    assert_eq!(output.trim(), expected.to_string(), "{output:?}");
    drop(world);

    let world = World::start("agent-user", &[], |settings| {
        settings.default_run_as = None;
    })
    .await;
    let (_, output, _) = world
        .run("AWS-StartNonInteractiveCommand", &command, b"")
        .await;
    assert_eq!(output.trim(), euid().to_string(), "{output:?}");
}

/// Finding 7: a root agent creates its missing default user (as AWS creates `ssm-user`);
/// an unprivileged one runs sessions as itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_default_user_is_created_by_a_root_agent() {
    let user = format!("ssmt{}", std::process::id());
    assert_eq!(uid_of(&user), None);
    let name = user.clone();
    let world = World::start("create-user", &[], move |settings| {
        settings.default_run_as = Some(name);
    })
    .await;
    let (_, output, _) = world
        .run(
            "AWS-StartNonInteractiveCommand",
            &[("command", "id -un")],
            b"",
        )
        .await;
    let created = uid_of(&user);
    if euid() == 0 {
        let _ = std::process::Command::new("userdel")
            .args(["--remove", &user])
            .status();
        assert!(created.is_some(), "{user} was not created: {output:?}");
        assert_eq!(output.trim(), user, "{output:?}");
    } else {
        assert_eq!(created, None);
        assert_ne!(output.trim(), user, "{output:?}");
    }
}

/// Finding 8: the recording of a KMS-encrypted shell never reaches the gateway; it is on the
/// agent, owner-only, and its digest is in the audit chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_recordings_stay_on_the_agent() {
    let world = World::start("encrypted", &[], |_| {}).await;
    let (id, output, _) = world
        .run(DEV_ENCRYPTED_SHELL, &[], b"echo zq-$((6*7))-marker; exit\n")
        .await;
    assert!(output.contains("zq-42-marker"), "{output:?}");
    let records = world.ended(&id).await;
    for file in files(&world.state) {
        let bytes = std::fs::read(&file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("zq-42-marker") && !text.contains("zq-$((6*7))"),
            "{} holds the encrypted session's plaintext",
            file.display()
        );
    }
    let kept = world.recordings.join(format!("{id}.cast"));
    let bytes = std::fs::read(&kept).expect("the agent kept the recording");
    assert!(String::from_utf8_lossy(&bytes).contains("zq-42-marker"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let summary = records
        .iter()
        .find(|record| record["event"] == "recording.chunk")
        .expect("the recording is audited");
    assert_eq!(
        summary["recording"],
        format!("agent:{}", kept.display()),
        "{summary}"
    );
    assert_eq!(summary["chunk_sha256"], hex::encode(Sha256::digest(&bytes)));
    assert_eq!(summary["chunk_bytes"], bytes.len() as u64);
    assert_eq!(records.last().unwrap()["event"], "session.end");
}

/// Finding 10: a command session's command and output are recorded, and the command audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_sessions_record_their_command_and_output() {
    let world = World::start("command", &[], |_| {}).await;
    let command = "echo out-$((2*3)); echo err-$((3*3)) >&2";
    let (id, output, _) = world
        .run(
            "AWS-StartNonInteractiveCommand",
            &[("command", command)],
            b"",
        )
        .await;
    assert!(
        output.contains("out-6") && output.contains("err-9"),
        "{output:?}"
    );
    let records = world.ended(&id).await;
    let start = records
        .iter()
        .find(|record| record["event"] == "session.start")
        .unwrap();
    let detail = start["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(&format!("command: {command}")), "{start}");
    let recording = std::fs::read_to_string(world.gateway.recording_path(&id))
        .expect("the command session was recorded");
    let header: Value = serde_json::from_str(recording.lines().next().unwrap()).unwrap();
    assert_eq!(header["ssm_session"]["command"], command, "{header}");
    assert!(
        recording.contains("out-6") && recording.contains("err-9"),
        "{recording}"
    );
    assert!(
        recording.contains(r#""x","0""#),
        "no exit event: {recording}"
    );
}

/// Findings 6 and 14: a destination the agent refuses ends the session with the agent's
/// reason at the client (not a smux error), and a name that cannot be resolved is refused
/// rather than dialled by name later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_destinations_reach_the_client_with_the_agents_reason() {
    let world = World::start("port", &[], |_| {}).await;
    for (host, reason) in [
        ("169.254.169.254", "link-local or metadata address"),
        ("64:ff9b::a9fe:a9fe", "link-local or metadata address"),
        ("nowhere.invalid", "cannot resolve nowhere.invalid"),
    ] {
        let sessions = world.sessions();
        let parameters = BTreeMap::from([
            ("host".to_owned(), vec![host.to_owned()]),
            ("portNumber".to_owned(), vec!["80".to_owned()]),
            ("localPortNumber".to_owned(), vec!["0".to_owned()]),
        ]);
        let started = sessions
            .start_session(
                &world.target,
                Some("AWS-StartPortForwardingSessionToRemoteHost"),
                parameters,
            )
            .await
            .unwrap();
        let summary = tokio::time::timeout(
            Duration::from_secs(20),
            sessions.run_session(&started, std::future::pending(), |_| {}),
        )
        .await
        .unwrap_or_else(|_| panic!("the session to {host} was not refused"))
        .unwrap();
        match &summary.ending {
            Ending::ChannelClosed { output } => {
                assert!(output.contains(reason), "{host}: {output:?}");
            }
            other => panic!("{host}: the client saw {other:?}"),
        }
        let records = world.ended(&started.session_id).await;
        let end = records.last().unwrap();
        assert_eq!(end["end_reason"], "handshake_failed", "{end}");
        assert!(
            records
                .iter()
                .all(|record| record["event"] != "stream.open"),
            "{host} was dialled: {records:#?}"
        );
    }
}
