//! Attacks on the gateway from issue 13, each replayed against an in-process gateway (with an
//! agent and clients) or the relay core: taking over another principal's session through a
//! name prefix, duplicate and unsafe names, a removed agent that stays connected, readable
//! state files, one principal exhausting sessions or relay memory, reloads that leave no trace
//! or are missed, and a revoked client that exits 0.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde_json::{Value, json};
use ssm_session::agent::{self, AgentSettings};
use ssm_session::aws::{ApiCallError, ApiClient};
use ssm_session::client::{SessionClient, SessionSummary, StartedSession};
use ssm_session::gateway::{self, Gateway, GatewayConfig, GatewayError, PrincipalConfig};
use ssm_session::net::{Connection, Ending, Incoming, TlsConfig};
use ssm_session::sigv4::Credentials;
use tokio::io::AsyncWriteExt;

#[path = "support/online.rs"]
mod online;

/// A gateway watching its configuration file, and one agent (a `/bin/sh` shell). Principals:
/// `dev-admin` and `dev` (both with the generated all-targets policy, whose Resume/Terminate
/// statement is `session/${aws:username}-*`) and `dev-restricted`.
struct World {
    gateway: Gateway,
    state: PathBuf,
    config: GatewayConfig,
    config_path: PathBuf,
    target: String,
    agent: tokio::task::JoinHandle<Result<(), agent::AgentError>>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.agent.abort();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

impl World {
    async fn start(name: &str, setup: impl FnOnce(&Path, &mut GatewayConfig)) -> World {
        let state = std::env::temp_dir().join(format!("ssm-harden-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let dev = gateway::prepare_dev(&state, "127.0.0.1:0".parse().unwrap(), false).unwrap();
        let mut config = dev.config.clone();
        config.principals.push(PrincipalConfig {
            name: "dev".into(),
            access_key_id: "AKIADEVPREFIXATTACK1".into(),
            secret_access_key: "dev-secret-dev-secret-dev-secret-dev-sec".into(),
            policies: vec!["all-targets".into()],
        });
        setup(&state, &mut config);
        config.save(&dev.config_path).unwrap();
        let gateway = Gateway::start(config.clone(), Some(dev.config_path.clone()))
            .await
            .unwrap();
        let mut settings = AgentSettings::new(
            gateway.endpoint(),
            &dev.setup.agent_id,
            &dev.setup.agent_secret,
        )
        .unwrap();
        settings.shell = "/bin/sh".into();
        let agent = tokio::spawn(agent::run(settings, std::future::pending::<()>()));
        let world = World {
            gateway,
            state,
            config,
            config_path: dev.config_path,
            target: dev.setup.agent_id,
            agent,
        };
        online::wait_online(&world.api("dev-admin"), &world.target).await;
        world
    }

    fn api(&self, principal: &str) -> ApiClient {
        let principal = self
            .config
            .principals
            .iter()
            .find(|p| p.name == principal)
            .unwrap();
        let credentials =
            Credentials::new(&principal.access_key_id, &principal.secret_access_key, None);
        ApiClient::new(
            self.gateway.endpoint(),
            "us-east-1",
            credentials,
            TlsConfig::default(),
        )
        .unwrap()
    }

    fn sessions(&self, principal: &str) -> SessionClient {
        SessionClient::new(self.api(principal))
    }

    async fn shell(&self, principal: &str) -> (StartedSession, Connection) {
        let sessions = self.sessions(principal);
        let started = sessions
            .start_session(&self.target, None, BTreeMap::new())
            .await
            .unwrap();
        let connection = sessions.connect(&started).await.unwrap();
        (started, connection)
    }

    /// Writes `config` as the configuration file and reloads it.
    fn reload_with(&self, config: &GatewayConfig) -> Vec<String> {
        config.save(&self.config_path).unwrap();
        self.gateway.reload().unwrap()
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.gateway.audit_path())
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    fn reloads(&self) -> Vec<Value> {
        self.audit()
            .into_iter()
            .filter(|record| record["event"] == "policy.reload")
            .collect()
    }

    async fn ping_status(&self) -> String {
        let answer = self
            .api("dev-admin")
            .call("ssm", "AmazonSSM.DescribeInstanceInformation", &json!({}))
            .await
            .unwrap();
        answer["InstanceInformationList"]
            .as_array()
            .unwrap()
            .iter()
            .find(|instance| instance["InstanceId"] == self.target)
            .map(|instance| instance["PingStatus"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    }
}

/// Runs `command` in the shell and reads until `marker` appears.
async fn run_until(connection: &mut Connection, command: &str, marker: &str) {
    connection.write_all(command.as_bytes()).await.unwrap();
    let mut output = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(incoming) = connection.recv().await {
            if let Incoming::Data(bytes) = incoming {
                output.extend_from_slice(&bytes);
                if String::from_utf8_lossy(&output).contains(marker) {
                    return;
                }
            }
        }
    })
    .await;
    let output = String::from_utf8_lossy(&output);
    assert!(
        read.is_ok() && output.contains(marker),
        "no {marker:?} in {output:?}"
    );
}

/// Reads the connection to its end, as the client's terminal loop does: the summary it makes.
async fn summary(mut connection: Connection, within: Duration) -> SessionSummary {
    let started = Instant::now();
    let (mut exit_code, mut ending) = (None, None);
    tokio::time::timeout(within, async {
        while let Some(incoming) = connection.recv().await {
            match incoming {
                Incoming::ExitCode(code) => exit_code = Some(code.0),
                Incoming::Ended(end) => ending = Some(end),
                _ => {}
            }
        }
    })
    .await
    .expect("the client's session did not end in time");
    SessionSummary {
        exit_code,
        ending: ending.expect("the session ended without an ending"),
        bytes_sent: 0,
        bytes_received: 0,
        duration: started.elapsed(),
    }
}

fn refusal(result: Result<impl std::fmt::Debug, ApiCallError>) -> (u16, String, String) {
    match result {
        Err(ApiCallError::Service {
            status,
            code,
            message,
        }) => (status, code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

// Finding 1: `dev`'s policy allows session/dev-* ; dev-admin's sessions match that pattern.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_prefix_does_not_give_another_principals_session() {
    let world = World::start("owner", |_, _| {}).await;
    let (admin, mut connection) = world.shell("dev-admin").await;
    assert!(admin.session_id.starts_with("dev-admin-"));
    run_until(&mut connection, "echo before-$((6*7))\n", "before-42").await;

    let attacker = world.sessions("dev");
    let (_, code, message) = refusal(
        attacker
            .resume_session(&admin.session_id, &world.target)
            .await,
    );
    assert_eq!(code, "AccessDeniedException", "{message}");
    assert!(
        message.contains("only the principal who started"),
        "{message}"
    );
    let (_, code, _) = refusal(attacker.terminate_session(&admin.session_id).await);
    assert_eq!(code, "AccessDeniedException");
    let listed = world
        .api("dev")
        .call(
            "ssm",
            "AmazonSSM.DescribeSessions",
            &json!({"State": "Active"}),
        )
        .await
        .unwrap();
    assert_eq!(
        listed["Sessions"],
        json!([]),
        "dev sees dev-admin's session"
    );

    // The admin's live connection is untouched and still the one attached.
    run_until(&mut connection, "echo after-$((6*7))\n", "after-42").await;
    assert!(world.gateway.live_sessions().contains(&admin.session_id));
    let listed = world
        .api("dev-admin")
        .call(
            "ssm",
            "AmazonSSM.DescribeSessions",
            &json!({"State": "Active"}),
        )
        .await
        .unwrap();
    assert_eq!(listed["Sessions"][0]["SessionId"], admin.session_id);
    // The owner still may.
    world
        .sessions("dev-admin")
        .terminate_session(&admin.session_id)
        .await
        .unwrap();
    let denied = world.audit().into_iter().filter(|record| {
        record["principal"] == "dev"
            && record["session_id"] == admin.session_id
            && record["decision"] == "deny"
    });
    assert_eq!(denied.count(), 2);
}

fn invalid(config: &GatewayConfig) -> String {
    match config.check() {
        Err(error) => error.to_string(),
        Ok(()) => panic!("accepted: {config:?}"),
    }
}

// Finding 5 and the path part of 14.
#[tokio::test]
async fn duplicate_or_unsafe_names_and_keys_are_refused() {
    let state = std::env::temp_dir().join(format!("ssm-harden-names-{}", std::process::id()));
    let (base, _) = GatewayConfig::dev("127.0.0.1:0".parse().unwrap(), &state);
    base.check().unwrap();
    let restricted = base.principals[1].clone();
    assert_eq!(restricted.name, "dev-restricted");

    // A second key named like the restricted principal, with the other's policy.
    let mut twin = base.clone();
    twin.principals.push(PrincipalConfig {
        access_key_id: "AKIATWINOFRESTRICTED".into(),
        policies: vec!["all-targets".into()],
        ..restricted.clone()
    });
    assert!(invalid(&twin).contains("principal name dev-restricted is used twice"));
    let started = Gateway::start(twin, None).await;
    assert!(
        matches!(started, Err(GatewayError::Config(_))),
        "{started:?}"
    );

    let mut same_key = base.clone();
    same_key.principals[1].access_key_id = same_key.principals[0].access_key_id.clone();
    assert!(invalid(&same_key).contains("used twice"));

    let mut key_is_agent = base.clone();
    key_is_agent.principals[1].access_key_id = key_is_agent.agents[0].id.clone();
    assert!(invalid(&key_is_agent).contains("also as an access key"));

    let mut two_agents = base.clone();
    two_agents.agents.push(two_agents.agents[0].clone());
    assert!(invalid(&two_agents).contains("used twice"));

    let long = "a".repeat(65);
    for name in [
        "ops/alice",
        "../x",
        "..",
        ".",
        "",
        "a b",
        "é",
        long.as_str(),
    ] {
        let mut config = base.clone();
        config.principals[1].name = name.into();
        assert!(invalid(&config).contains("principal name"), "{name:?}");
    }
    for name in ["alice", "a+b=c,d.e@f_g-h", &"a".repeat(64)] {
        let mut config = base.clone();
        config.principals[1].name = name.into();
        config.check().unwrap();
    }
    for id in [".hidden", "a/b", "../x", "mi 1", "", "i-1:2"] {
        let mut config = base.clone();
        config.agents[0].id = id.into();
        assert!(invalid(&config).contains("agent id"), "{id:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_paths_stay_in_the_recordings_directory_and_bad_reloads_are_refused() {
    let world = World::start("paths", |_, _| {}).await;
    let recordings = world.state.join("recordings");
    for id in ["../../etc/cron.d/x", "ops/alice-1", "..", "/abs"] {
        let path = world.gateway.recording_path(id);
        assert_eq!(path.parent(), Some(recordings.as_path()), "{id}: {path:?}");
        assert!(!path.file_name().unwrap().to_string_lossy().starts_with('.'));
    }
    // A reload naming a principal with a path in it changes nothing, and says so.
    let mut config = world.config.clone();
    config.principals[1].name = "ops/alice".into();
    config.save(&world.config_path).unwrap();
    let refused = world.gateway.reload().unwrap_err();
    assert!(refused.to_string().contains("principal name"), "{refused}");
    world
        .sessions("dev-admin")
        .start_session(&world.target, None, BTreeMap::new())
        .await
        .unwrap();
}

// Finding 9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_agent_is_cut_off_with_its_sessions_within_a_second() {
    let world = World::start("removed", |_, _| {}).await;
    let (started, mut connection) = world.shell("dev-admin").await;
    run_until(&mut connection, "echo live-$((6*7))\n", "live-42").await;
    let mut config = world.config.clone();
    config.agents.clear();
    let reloaded = Instant::now();
    let revoked = world.reload_with(&config);
    assert_eq!(revoked, std::slice::from_ref(&started.session_id));

    let ended = summary(connection, Duration::from_secs(1)).await;
    let Ending::ChannelClosed { output } = &ended.ending else {
        panic!("{:?}", ended.ending)
    };
    assert!(
        output.contains("removed from the configuration"),
        "{output}"
    );
    assert!(world.gateway.live_sessions().is_empty());
    loop {
        if world.ping_status().await != "Online" {
            break;
        }
        assert!(
            reloaded.elapsed() < Duration::from_secs(1),
            "still Online a second after the reload"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, code, message) = refusal(
        world
            .sessions("dev-admin")
            .start_session(&world.target, None, BTreeMap::new())
            .await,
    );
    assert_eq!(code, "TargetNotConnected", "{message}");
    // Its reconnections are refused: it stays offline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_ne!(world.ping_status().await, "Online");
    let end = world
        .audit()
        .into_iter()
        .find(|record| {
            record["event"] == "session.end" && record["session_id"] == started.session_id
        })
        .unwrap();
    assert_eq!(end["end_reason"], "revoked", "{end}");
    assert!(
        world
            .audit()
            .iter()
            .any(|record| record["event"] == "agent.disconnect")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_secret_changed_is_cut_off_with_its_sessions() {
    let world = World::start("rekeyed", |_, _| {}).await;
    let (started, mut connection) = world.shell("dev-admin").await;
    run_until(&mut connection, "echo live-$((6*7))\n", "live-42").await;
    let mut config = world.config.clone();
    config.agents[0].secret = "a-new-secret-the-old-agent-does-not-know".into();
    assert_eq!(
        world.reload_with(&config),
        std::slice::from_ref(&started.session_id)
    );
    let ended = summary(connection, Duration::from_secs(1)).await;
    assert!(
        ended.interrupted().unwrap().contains("has a new secret"),
        "{ended}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_ne!(world.ping_status().await, "Online");
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

// Finding 11.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_files_are_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let loose = std::fs::Permissions::from_mode;
    let world = World::start("modes", |state, _| {
        // What an older gateway left: world-readable files in world-readable directories.
        std::fs::create_dir_all(state.join("recordings")).unwrap();
        let old = state.join("recordings").join("old-1.cast");
        std::fs::write(&old, "{}\n").unwrap();
        std::fs::write(state.join("audit.jsonl"), "").unwrap();
        for (path, bits) in [
            (state.to_owned(), 0o755),
            (state.join("recordings"), 0o755),
            (old, 0o644),
            (state.join("audit.jsonl"), 0o644),
        ] {
            std::fs::set_permissions(path, loose(bits)).unwrap();
        }
    })
    .await;
    let (started, mut connection) = world.shell("dev-admin").await;
    run_until(&mut connection, "echo typed-$((6*7))\n", "typed-42").await;
    connection.write_all(b"exit 0\n").await.unwrap();
    summary(connection, Duration::from_secs(10)).await;
    let recording = world.gateway.recording_path(&started.session_id);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !recording.exists() {
        assert!(Instant::now() < deadline, "no recording at {recording:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let state = &world.state;
    assert_eq!(mode(state), 0o700);
    assert_eq!(mode(&state.join("recordings")), 0o700);
    assert_eq!(mode(&state.join("audit.jsonl")), 0o600);
    assert_eq!(mode(&state.join("recordings").join("old-1.cast")), 0o600);
    assert_eq!(mode(&recording), 0o600);
    assert_eq!(mode(&state.join("kms-master.key")), 0o600);
}

// Finding 12: concurrent sessions and the StartSession rate of one principal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_principal_cannot_hold_every_session_or_start_without_limit() {
    let world = World::start("quota", |_, config| {
        config.quotas.max_sessions_per_principal = 2;
        config.quotas.start_session_burst = 3;
        config.quotas.start_sessions_per_minute = 1;
    })
    .await;
    let dev = world.sessions("dev");
    let start = || dev.start_session(&world.target, None, BTreeMap::new());
    start().await.unwrap();
    let second = start().await.unwrap();
    let (status, code, message) = refusal(start().await);
    assert_eq!(
        (status, code.as_str()),
        (400, "ThrottlingException"),
        "{message}"
    );
    assert!(message.contains("already has 2 live sessions"), "{message}");
    // Another principal still starts.
    world
        .sessions("dev-admin")
        .start_session(&world.target, None, BTreeMap::new())
        .await
        .unwrap();
    // Ending one makes room, but the burst of 3 is spent: the rate refuses the fourth start.
    dev.terminate_session(&second.session_id).await.unwrap();
    let (status, code, message) = refusal(start().await);
    assert_eq!(
        (status, code.as_str()),
        (400, "ThrottlingException"),
        "{message}"
    );
    assert!(message.contains("in a burst"), "{message}");
    let throttled = world
        .audit()
        .into_iter()
        .filter(|record| {
            record["principal"] == "dev"
                && record["decision"] == "deny"
                && record["reason"]
                    .as_str()
                    .is_some_and(|reason| reason.starts_with("ThrottlingException"))
        })
        .count();
    assert_eq!(throttled, 2);
}

// Review of finding 13: the replay cache holds a bounded share per access key, and only
// signatures of calls that were served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_cannot_fill_the_replay_cache_for_everyone() {
    /// Single-use signatures one access key may hold within the skew window (SECURITY.md).
    const KEY_SHARE: usize = 2048;
    let world = World::start("replay-share", |_, _| {}).await;
    let dev = world.api("dev");
    let (started, _connection) = world.shell("dev").await;
    let resume = async |session_id: &str| {
        dev.call(
            "ssm",
            "AmazonSSM.ResumeSession",
            &json!({"SessionId": session_id}),
        )
        .await
    };
    // Refused calls take no room: not found, and another principal's session.
    let (others, _) = world.shell("dev-admin").await;
    for session_id in ["dev-no-such-session", others.session_id.as_str()] {
        for _ in 0..10 {
            let (_, code, message) = refusal(resume(session_id).await);
            assert_ne!(code, "ThrottlingException", "{message}");
        }
    }
    // The StartSession above, then resumes up to the share: all served.
    for n in 1..KEY_SHARE {
        let resumed = resume(&started.session_id).await;
        assert!(resumed.is_ok(), "resume {n}: {resumed:?}");
    }
    let (status, code, message) = refusal(resume(&started.session_id).await);
    assert_eq!(
        (status, code.as_str()),
        (400, "ThrottlingException"),
        "{message}"
    );
    assert!(message.contains("this access key"), "{message}");
    // Another key still gets in, and so does the agent's CreateDataChannel.
    let (_, mut connection) = world.shell("dev-admin").await;
    run_until(&mut connection, "echo other-$((6*7))\n", "other-42").await;
}

// Review of finding 9: an agent removed, or re-keyed, after its control-channel upgrade was
// authenticated but before it registered (it sends its opening message late) is not
// registered: the reload cut off only the agents that were online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_removed_while_its_channel_opens_is_not_registered() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::ClientRequestBuilder;

    let late = [
        ("mi-removed-late", "removed-late-secret-removed-late-secret"),
        ("mi-rekeyed-late", "rekeyed-late-secret-rekeyed-late-secret"),
    ];
    let world = World::start("opening", |_, config| {
        for (id, secret) in late {
            config.agents.push(gateway::AgentIdentity {
                id: id.into(),
                secret: secret.into(),
            });
        }
    })
    .await;
    let authority = world.gateway.local_addr().to_string();
    let mut channels = Vec::new();
    for (id, secret) in late {
        let path = format!("/v1/control-channel/{id}");
        let query = "role=subscribe&stream=input";
        let headers = vec![("host".to_owned(), authority.clone())];
        let request = ssm_session::sigv4::Request {
            method: "GET",
            path: &path,
            query,
            headers: &headers,
            body: b"",
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let credentials = Credentials::new(id, secret, None);
        let signature =
            ssm_session::sigv4::sign(&request, &credentials, "us-east-1", "ssmmessages", now);
        let uri = format!("ws://{authority}{path}?{query}").parse().unwrap();
        let mut builder = ClientRequestBuilder::new(uri);
        for (name, value) in signature {
            builder = builder.with_header(name, value);
        }
        // Upgraded: the signature was accepted.
        let (ws, _) = tokio_tungstenite::connect_async(builder).await.unwrap();
        channels.push((id, ws));
    }
    let mut config = world.config.clone();
    config.agents.retain(|agent| agent.id != late[0].0);
    let rekeyed = config
        .agents
        .iter_mut()
        .find(|agent| agent.id == late[1].0)
        .unwrap();
    rekeyed.secret = "a-new-secret-the-late-agent-does-not-know".into();
    world.reload_with(&config);

    for (id, mut ws) in channels {
        let opening = ssm_session::control::OpenControlChannelInput {
            message_schema_version: "1.0".into(),
            request_id: "00000000-0000-4000-8000-000000000000".into(),
            agent_version: "3.3.0.0".into(),
            platform_type: "linux".into(),
            extensions: Vec::new(),
        };
        ws.send(Message::text(serde_json::to_string(&opening).unwrap()))
            .await
            .unwrap();
        // The gateway closes the channel instead of registering it.
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match ws.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "{id}: the channel stayed open");
        let listed = world
            .api("dev-admin")
            .call("ssm", "AmazonSSM.DescribeInstanceInformation", &json!({}))
            .await
            .unwrap();
        let online = listed["InstanceInformationList"]
            .as_array()
            .unwrap()
            .iter()
            .any(|instance| instance["InstanceId"] == id && instance["PingStatus"] == "Online");
        assert!(!online, "{id} is online: {listed}");
        let audit = world.audit();
        assert!(
            !audit
                .iter()
                .any(|record| record["event"] == "agent.connect" && record["target"] == id),
            "{id} was registered"
        );
        assert!(
            audit.iter().any(|record| {
                record["action"] == "ssmmessages:OpenControlChannel"
                    && record["target"] == id
                    && record["decision"] == "deny"
            }),
            "no refusal of {id} audited"
        );
    }
    // The agent that stayed configured is still online.
    assert_eq!(world.ping_status().await, "Online");
}

// Finding 12: relay memory across sessions, at the relay core.
#[test]
fn many_flooding_sessions_stay_within_the_relay_memory_budget_and_lose_nothing() {
    use ssm_session::SeededEntropy;
    use ssm_session::relay::{Config, Event, Refused, Relay};
    use ssm_session::session::Role;

    const SESSIONS: usize = 20;
    const MESSAGE: usize = 1024;
    const BUDGET: usize = 1 << 20;
    let mut config = Config::default();
    config.total_limit = BUDGET;
    let now = Instant::now();
    let mut relay = Relay::new(
        config,
        now,
        1_700_000_000_000,
        Box::new(SeededEntropy::new(9)),
    );
    let mut ends = Vec::new();
    for n in 0..SESSIONS {
        let id = format!("flood-{n}");
        let agent = relay.attach(now, &id, Role::Agent).unwrap();
        let client = relay.attach(now, &id, Role::Client).unwrap();
        ends.push((client, agent));
    }
    while relay.poll_event().is_some() {}
    // Every client floods; no agent reads (as a stalled agent or a slow network would).
    let mut accepted = vec![0usize; SESSIONS];
    for _round in 0..(32 << 20) / MESSAGE / SESSIONS {
        for (n, (client, _)) in ends.iter().enumerate() {
            match relay.receive(now, *client, Bytes::from(vec![n as u8; MESSAGE])) {
                Ok(()) => accepted[n] += 1,
                Err(Refused::Full) => {}
                Err(other) => panic!("{other}"),
            }
        }
    }
    // Within the budget plus one message per session (16 MiB each without the budget).
    assert!(
        relay.queued_bytes() <= BUDGET + SESSIONS * MESSAGE,
        "{} bytes queued",
        relay.queued_bytes()
    );
    assert!(
        accepted.iter().all(|&n| n > 0),
        "a session was starved: {accepted:?}"
    );
    // Draining one session lets its sender on again; nothing was dropped anywhere.
    let (client, agent) = ends[0];
    let mut delivered = 0;
    while let Some(message) = relay.poll_transmit(now, agent) {
        delivered += usize::from(message.len() == MESSAGE);
    }
    assert_eq!(delivered, accepted[0]);
    let events: Vec<Event> = std::iter::from_fn(|| relay.poll_event()).collect();
    assert!(events.contains(&Event::Readable(client)), "{events:?}");
    relay
        .receive(now, client, Bytes::from(vec![0; MESSAGE]))
        .unwrap();
    for (n, (_, agent)) in ends.iter().enumerate().skip(1) {
        let count = std::iter::from_fn(|| relay.poll_transmit(now, *agent))
            .filter(|message| message.len() == MESSAGE)
            .count();
        assert_eq!(count, accepted[n], "session {n}");
    }
}

// Finding 14: a refused reload leaves a record, which says where the file is wrong but
// quotes nothing from it (serde's messages can quote a value, and the file holds secrets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reload_is_audited() {
    let world = World::start("refused", |_, _| {}).await;
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY";
    let syntax = format!("{{\n  \"region\": \"{SECRET}\" {SECRET}\n}}");
    // A value of the wrong type, which serde quotes in its message.
    let mut data = serde_json::to_value(&world.config).unwrap();
    data["token_lifetime_secs"] = json!(SECRET);
    let data = serde_json::to_string_pretty(&data).unwrap();
    for (text, category) in [(syntax, "JSON syntax"), (data, "configuration data")] {
        std::fs::write(&world.config_path, text).unwrap();
        world.gateway.reload().unwrap_err();
        let refused = world
            .reloads()
            .into_iter()
            .rfind(|record| record["decision"] == "deny")
            .expect("no policy.reload deny record");
        let reason = refused["reason"].as_str().unwrap();
        assert!(reason.contains(category), "{refused}");
        assert!(reason.contains(" at line "), "{refused}");
        assert!(refused["detail"].as_str().unwrap().contains("refused"));
    }
    let audit = std::fs::read_to_string(world.gateway.audit_path()).unwrap();
    assert!(!audit.contains(SECRET), "{audit}");
}

fn set_mtime(path: &Path, at: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(at)
        .unwrap();
}

// Finding 14: the watcher goes by content, not by modification time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_reloads_on_content_not_on_mtime() {
    let world = World::start("watch", |_, _| {}).await;
    let before = world.reloads().len();
    // A touch that changes nothing is no reload.
    set_mtime(
        &world.config_path,
        SystemTime::now() + Duration::from_secs(60),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(world.reloads().len(), before, "a touch reloaded");

    // An edit that keeps the mtime is one: dev loses its policy, and its session.
    let (started, connection) = world.shell("dev").await;
    let kept = std::fs::metadata(&world.config_path)
        .unwrap()
        .modified()
        .unwrap();
    let mut config = world.config.clone();
    config.principals.last_mut().unwrap().policies.clear();
    // Written aside with the old mtime and renamed over: the watcher never sees a new mtime.
    let aside = world.config_path.with_extension("edit");
    std::fs::write(&aside, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    set_mtime(&aside, kept);
    std::fs::rename(&aside, &world.config_path).unwrap();
    assert_eq!(
        std::fs::metadata(&world.config_path)
            .unwrap()
            .modified()
            .unwrap(),
        kept
    );
    let ended = summary(connection, Duration::from_secs(3)).await;
    assert_eq!(world.reloads().len(), before + 1);
    assert!(!world.gateway.live_sessions().contains(&started.session_id));
    assert!(ended.interrupted().unwrap().contains("Access revoked"));
}

// Finding 14: a revoked session's client exits non-zero; an orderly `exit` keeps its code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_client_exits_non_zero_and_an_orderly_exit_keeps_its_code() {
    let world = World::start("exit", |_, _| {}).await;
    let (_, mut connection) = world.shell("dev").await;
    run_until(&mut connection, "echo ready-$((6*7))\n", "ready-42").await;
    connection.write_all(b"exit 0\n").await.unwrap();
    let orderly = summary(connection, Duration::from_secs(10)).await;
    assert_eq!(
        (orderly.exit_code, orderly.exit_status()),
        (Some(0), 0),
        "{orderly}"
    );
    assert_eq!(orderly.interrupted(), None);

    let (_, mut connection) = world.shell("dev").await;
    run_until(&mut connection, "echo ready-$((6*7))\n", "ready-42").await;
    connection.write_all(b"exit 3\n").await.unwrap();
    assert_eq!(
        summary(connection, Duration::from_secs(10))
            .await
            .exit_status(),
        3
    );

    let (_, mut connection) = world.shell("dev").await;
    run_until(&mut connection, "echo ready-$((6*7))\n", "ready-42").await;
    let mut config = world.config.clone();
    config.principals.last_mut().unwrap().policies.clear();
    world.reload_with(&config);
    let revoked = summary(connection, Duration::from_secs(3)).await;
    assert_eq!(revoked.exit_status(), 1, "{revoked}");
    let why = revoked.interrupted().unwrap();
    assert!(why.contains("Access revoked"), "{why}");
}

/// Finding 8, defence in depth: an agent from before the fix streams the recording of a
/// KMS-encrypted session in plaintext over its control channel; the gateway writes none of it
/// and the end record says it was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_recordings_of_encrypted_sessions_from_an_old_agent_are_refused() {
    use futures_util::{SinkExt, StreamExt};
    use ssm_session::control::{ControlMessage, RecordingChunk};
    use tokio_tungstenite::tungstenite::{ClientRequestBuilder, Message};

    let state = std::env::temp_dir().join(format!("ssm-harden-old-agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let dev = gateway::prepare_dev(&state, "127.0.0.1:0".parse().unwrap(), false).unwrap();
    let gateway = Gateway::start(dev.config.clone(), None).await.unwrap();
    let endpoint = gateway.endpoint().to_owned();
    let authority = endpoint.trim_start_matches("http://").to_owned();

    // The old agent's control channel: a signed upgrade, as every agent sends it.
    let agent_id = &dev.setup.agent_id;
    let path = format!("/v1/control-channel/{agent_id}");
    let query = "role=subscribe&stream=input";
    let headers = vec![("host".to_owned(), authority.clone())];
    let request = ssm_session::sigv4::Request {
        method: "GET",
        path: &path,
        query,
        headers: &headers,
        body: b"",
    };
    let credentials = Credentials::new(agent_id, &dev.setup.agent_secret, None);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signature =
        ssm_session::sigv4::sign(&request, &credentials, "us-east-1", "ssmmessages", now);
    let mut builder =
        ClientRequestBuilder::new(format!("ws://{authority}{path}?{query}").parse().unwrap());
    for (name, value) in signature {
        builder = builder.with_header(name, value);
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(builder).await.unwrap();
    let opening = ssm_session::control::OpenControlChannelInput {
        message_schema_version: "1.0".into(),
        request_id: "00000000-0000-4000-8000-000000000001".into(),
        agent_version: "3.3.0.0".into(),
        platform_type: "linux".into(),
        extensions: Vec::new(),
    };
    let opening = serde_json::to_string(&opening).unwrap();
    ws.send(Message::Text(opening.into())).await.unwrap();

    let admin = dev.config.principals.iter().find(|p| p.name == "dev-admin");
    let admin = admin.unwrap();
    let api = ApiClient::new(
        &endpoint,
        "us-east-1",
        Credentials::new(&admin.access_key_id, &admin.secret_access_key, None),
        TlsConfig::default(),
    )
    .unwrap();
    online::wait_online(&api, agent_id).await;
    let started = api
        .call(
            "ssm",
            "AmazonSSM.StartSession",
            &json!({"Target": agent_id, "DocumentName": gateway::DEV_ENCRYPTED_SHELL}),
        )
        .await
        .unwrap();
    let session_id = started["SessionId"].as_str().unwrap().to_owned();
    let start = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Binary(data) = message
            && let Ok(ControlMessage::StartSession(start)) = ControlMessage::decode(data)
        {
            break start;
        }
    };
    assert_eq!(start.task_id, session_id);

    let marker = "typed-secret-4711";
    for (index, lines) in [
        "{\"version\":2,\"width\":80,\"height\":24}\n".to_owned(),
        format!("[0.1,\"o\",\"{marker}\"]\n"),
    ]
    .into_iter()
    .enumerate()
    {
        let chunk = ControlMessage::Recording(RecordingChunk {
            session_id: session_id.clone(),
            index: index as u64,
            lines,
        });
        let wire = chunk.encode(uuid::Uuid::from_u128(index as u128 + 1), now * 1000);
        ws.send(Message::Binary(wire)).await.unwrap();
    }
    // A round trip through the gateway after the chunks: TerminateSession ends the session
    // once they have been read (the control channel is read in order).
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.call(
        "ssm",
        "AmazonSSM.TerminateSession",
        &json!({"SessionId": session_id}),
    )
    .await
    .unwrap();

    let mut holders = Vec::new();
    let mut dirs = vec![state.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if std::fs::read(&path)
                .unwrap()
                .windows(marker.len())
                .any(|window| window == marker.as_bytes())
            {
                holders.push(path);
            }
        }
    }
    assert!(
        holders.is_empty(),
        "plaintext on the gateway's disk: {holders:?}"
    );
    let audit = std::fs::read_to_string(gateway.audit_path()).unwrap();
    let end: Value = audit
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|record| record["event"] == "session.end" && record["session_id"] == session_id)
        .expect("the session's end record");
    assert!(
        end["detail"]
            .as_str()
            .unwrap_or("")
            .contains("plaintext recording of an encrypted session refused"),
        "{end}"
    );
    assert!(end.get("recording").is_none_or(Value::is_null), "{end}");
    drop(gateway);
    let _ = std::fs::remove_dir_all(&state);
}
