//! KMS three ways: the gateway's KMS-compatible endpoint, a real KMS emulator (`moto_server`,
//! which `.ci/run` installs and starts: `SSM_SESSION_MOTO_URL`), and — built with
//! `--features aws-kms` — the AWS SDK provider against both. For each: data keys, decryption,
//! a wrong encryption context or key refused, and a whole encrypted session (gateway, agent
//! and client in this process, each end with its own key provider).

#[path = "support/external.rs"]
mod external;
#[path = "support/online.rs"]
mod online;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use ssm_session::agent::AgentSettings;
use ssm_session::aws::{ApiClient, HttpKms};
use ssm_session::client::SessionClient;
use ssm_session::gateway::{
    self, DEV_ENCRYPTED_SHELL, DEV_KEY_ALIAS, Gateway, GatewayConfig, PrincipalConfig,
};
use ssm_session::kms::{
    CONTEXT_SESSION_ID, CONTEXT_TARGET_ID, EncryptionContext, KeyProvider, KmsError,
};
use ssm_session::net::{Ending, Incoming, TlsConfig};
use ssm_session::sigv4::Credentials;
use tokio::io::AsyncWriteExt;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A gateway in this process, with an agent once [`World::start_agent`] is called.
struct World {
    gateway: Gateway,
    admin: Credentials,
    restricted: Credentials,
    agent: Credentials,
    state: PathBuf,
    agent_task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(task) = &self.agent_task {
            task.abort();
        }
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

impl World {
    /// A development gateway whose admin may also `Encrypt` and `Decrypt`, with a second key,
    /// and `documents` (name, KMS key id) as encrypted shell documents.
    async fn start(name: &str, documents: &[(&str, &str)]) -> World {
        let state = std::env::temp_dir().join(format!("ssm-kms-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let dev = gateway::prepare_dev(&state, "127.0.0.1:0".parse().unwrap(), false).unwrap();
        let mut config: GatewayConfig = dev.config.clone();
        config.policies.insert(
            "key-user".into(),
            json!({"Version": "2012-10-17", "Statement": [{"Sid": "KeyUser", "Effect": "Allow",
                "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "*"}]}),
        );
        config.principals[0].policies.push("key-user".into());
        let mut second = config.kms_keys[0].clone();
        second.key_id = "second-key".into();
        second.aliases = vec!["alias/second".into()];
        config.kms_keys.push(second);
        for (document, key_id) in documents {
            let shell = json!({
                "schemaVersion": "1.0",
                "sessionType": "Standard_Stream",
                "inputs": {"kmsKeyId": key_id, "runAsEnabled": false},
            });
            let path = state.join("documents").join(format!("{document}.json"));
            std::fs::write(path, shell.to_string()).unwrap();
        }
        let gateway = Gateway::start(config, None).await.unwrap();
        World {
            gateway,
            admin: Credentials::new(&dev.setup.access_key_id, &dev.setup.secret_access_key, None),
            restricted: Credentials::new(
                &dev.setup.restricted_access_key_id,
                &dev.setup.restricted_secret_access_key,
                None,
            ),
            agent: Credentials::new(&dev.setup.agent_id, &dev.setup.agent_secret, None),
            state,
            agent_task: None,
        }
    }

    fn target(&self) -> &str {
        &self.agent.access_key_id
    }

    fn api(&self, credentials: &Credentials) -> ApiClient {
        ApiClient::new(
            self.gateway.endpoint(),
            "us-east-1",
            credentials.clone(),
            TlsConfig::default(),
        )
        .unwrap()
    }

    /// Starts the agent, decrypting with `kms` (the gateway's KMS when `None`), and waits until
    /// it is online.
    async fn start_agent(&mut self, kms: Option<Arc<dyn KeyProvider>>) {
        let mut settings = AgentSettings::new(
            self.gateway.endpoint(),
            &self.agent.access_key_id,
            &self.agent.secret_access_key,
        )
        .unwrap();
        settings.shell = "/bin/sh".into();
        if let Some(kms) = kms {
            settings = settings.key_provider(kms);
        }
        self.agent_task = Some(tokio::spawn(run_agent(settings)));
        online::wait_online(&self.api(&self.admin), self.target()).await;
    }

    /// Runs a shell through `document` with the client's data keys from `kms`: it must be
    /// encrypted, run the command and report its exit code.
    async fn encrypted_session(&self, document: &str, kms: Arc<dyn KeyProvider>) {
        let sessions = SessionClient::new(self.api(&self.admin)).key_provider(kms);
        let started = sessions
            .start_session(self.target(), Some(document), BTreeMap::new())
            .await
            .unwrap();
        let mut connection = sessions.connect(&started).await.unwrap();
        assert!(connection.info().encrypted, "{document} is not encrypted");
        connection
            .write_all(b"echo sealed-$((6*7)); exit 4\n")
            .await
            .unwrap();
        let (mut output, mut exit_code) = (Vec::new(), None);
        let ending = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match connection.recv().await {
                    Some(Incoming::Data(bytes)) => output.extend_from_slice(&bytes),
                    Some(Incoming::ExitCode(code)) => exit_code = Some(code.0),
                    Some(Incoming::Ended(ending)) => return Some(ending),
                    Some(_) => {}
                    None => return None,
                }
            }
        })
        .await
        .expect("the encrypted session did not end");
        let output = String::from_utf8_lossy(&output);
        assert!(output.contains("sealed-42"), "output: {output:?}");
        assert_eq!(exit_code, Some(4), "output: {output:?}, ending: {ending:?}");
        assert!(
            !matches!(ending, Some(Ending::Failed(_))),
            "ending: {ending:?}"
        );
    }
}

fn context(session: &str, target: &str) -> EncryptionContext {
    EncryptionContext::from([
        (CONTEXT_SESSION_ID.to_owned(), session.to_owned()),
        (CONTEXT_TARGET_ID.to_owned(), target.to_owned()),
    ])
}

/// What every provider must do: 64-byte keys that open only under their key and context.
async fn keys_open_only_in_their_context(kms: &dyn KeyProvider, key_id: &str) {
    let bound = context("s-1", "i-1");
    let key = kms.generate_data_key(key_id, &bound).await.unwrap();
    assert_ne!(key.plaintext, [0; 64]);
    let again = kms.generate_data_key(key_id, &bound).await.unwrap();
    assert_ne!(key.plaintext, again.plaintext, "two data keys are equal");
    assert_eq!(
        kms.decrypt(key_id, &key.ciphertext_blob, &bound)
            .await
            .unwrap(),
        key.plaintext
    );
    for wrong in [
        context("s-2", "i-1"),
        context("s-1", "i-2"),
        EncryptionContext::new(),
    ] {
        let refused = kms.decrypt(key_id, &key.ciphertext_blob, &wrong).await;
        assert!(
            matches!(refused, Err(KmsError::InvalidCiphertext)),
            "decrypt under {wrong:?}: {refused:?}"
        );
    }
    let mut challenged = bound.clone();
    challenged.insert("aws:ssm:RandomChallenge".into(), "abc".into());
    assert!(
        kms.decrypt(key_id, &key.ciphertext_blob, &challenged)
            .await
            .is_err()
    );
    let mut tampered = key.ciphertext_blob.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(kms.decrypt(key_id, &tampered, &bound).await.is_err());
}

fn error_code(result: Result<Value, ssm_session::aws::ApiCallError>) -> String {
    match result {
        Ok(answer) => panic!("accepted: {answer}"),
        Err(error) => error.code().unwrap_or("no code").to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_kms_answers_like_kms_and_enforces_policy() {
    let world = World::start("gateway-api", &[]).await;
    let admin = world.api(&world.admin);
    let call = |target: &'static str, body: Value| {
        let admin = admin.clone();
        async move { admin.call("kms", target, &body).await }
    };

    // GenerateDataKey: NumberOfBytes or KeySpec, answered with the key's ARN.
    let key = call(
        "TrentService.GenerateDataKey",
        json!({"KeyId": DEV_KEY_ALIAS, "KeySpec": "AES_256"}),
    )
    .await
    .unwrap();
    assert_eq!(
        B64.decode(key["Plaintext"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
    let arn = key["KeyId"].as_str().unwrap().to_owned();
    assert!(
        arn.starts_with("arn:aws:kms:us-east-1:123456789012:key/"),
        "{arn}"
    );
    for bad in [
        json!({"KeyId": DEV_KEY_ALIAS}),
        json!({"KeyId": DEV_KEY_ALIAS, "NumberOfBytes": 0}),
        json!({"KeyId": DEV_KEY_ALIAS, "NumberOfBytes": 1025}),
        json!({"KeyId": DEV_KEY_ALIAS, "NumberOfBytes": 64, "KeySpec": "AES_256"}),
    ] {
        let code = error_code(call("TrentService.GenerateDataKey", bad.clone()).await);
        assert_eq!(code, "ValidationException", "{bad}");
    }
    let unknown = call(
        "TrentService.GenerateDataKey",
        json!({"KeyId": "alias/nope", "NumberOfBytes": 64}),
    )
    .await;
    assert_eq!(error_code(unknown), "NotFoundException");

    // Encrypt, then Decrypt without KeyId (the blob names its key), as with AWS KMS.
    let secret = B64.encode(b"attack at dawn");
    let sealed = call(
        "TrentService.Encrypt",
        json!({"KeyId": DEV_KEY_ALIAS, "Plaintext": secret, "EncryptionContext": {"a": "b"}}),
    )
    .await
    .unwrap();
    assert_eq!(sealed["KeyId"], arn.as_str());
    let blob = sealed["CiphertextBlob"].as_str().unwrap();
    let opened = call(
        "TrentService.Decrypt",
        json!({"CiphertextBlob": blob, "EncryptionContext": {"a": "b"}}),
    )
    .await
    .unwrap();
    assert_eq!(opened["Plaintext"], secret.as_str());
    assert_eq!(opened["KeyId"], arn.as_str());
    let wrong_context = call(
        "TrentService.Decrypt",
        json!({"CiphertextBlob": blob, "EncryptionContext": {"a": "c"}}),
    )
    .await;
    assert_eq!(error_code(wrong_context), "InvalidCiphertextException");
    let wrong_key = call(
        "TrentService.Decrypt",
        json!({"CiphertextBlob": blob, "KeyId": "alias/second", "EncryptionContext": {"a": "b"}}),
    )
    .await;
    assert_eq!(error_code(wrong_key), "IncorrectKeyException");
    let garbage = call(
        "TrentService.Decrypt",
        json!({"CiphertextBlob": B64.encode([7u8; 80])}),
    )
    .await;
    assert_eq!(error_code(garbage), "InvalidCiphertextException");
    let too_big = call(
        "TrentService.Encrypt",
        json!({"KeyId": DEV_KEY_ALIAS, "Plaintext": B64.encode([0u8; 4097])}),
    )
    .await;
    assert_eq!(error_code(too_big), "ValidationException");

    // DescribeKey by alias.
    let described = call("TrentService.DescribeKey", json!({"KeyId": "alias/second"}))
        .await
        .unwrap();
    assert_eq!(described["KeyMetadata"]["KeyId"], "second-key");
    assert_eq!(described["KeyMetadata"]["KeyState"], "Enabled");
    assert_eq!(described["KeyMetadata"]["KeyUsage"], "ENCRYPT_DECRYPT");

    // The restricted principal may do none of it.
    let restricted = world.api(&world.restricted);
    for (target, body) in [
        (
            "TrentService.GenerateDataKey",
            json!({"KeyId": DEV_KEY_ALIAS, "NumberOfBytes": 64}),
        ),
        (
            "TrentService.Encrypt",
            json!({"KeyId": DEV_KEY_ALIAS, "Plaintext": secret}),
        ),
        (
            "TrentService.Decrypt",
            json!({"CiphertextBlob": blob, "EncryptionContext": {"a": "b"}}),
        ),
        ("TrentService.DescribeKey", json!({"KeyId": DEV_KEY_ALIAS})),
    ] {
        let refused = restricted.call("kms", target, &body).await;
        assert_eq!(error_code(refused), "AccessDeniedException", "{target}");
    }

    // An agent may only decrypt keys of its own live sessions.
    let agent = world.api(&world.agent);
    let session_key = call(
        "TrentService.GenerateDataKey",
        json!({"KeyId": DEV_KEY_ALIAS, "NumberOfBytes": 64,
               "EncryptionContext": context("admin-0000", world.target())}),
    )
    .await
    .unwrap();
    for (target, body) in [
        (
            "TrentService.Decrypt",
            json!({"CiphertextBlob": session_key["CiphertextBlob"], "KeyId": DEV_KEY_ALIAS,
                   "EncryptionContext": context("admin-0000", world.target())}),
        ),
        (
            "TrentService.GenerateDataKey",
            json!({"KeyId": DEV_KEY_ALIAS, "NumberOfBytes": 64}),
        ),
        (
            "TrentService.Encrypt",
            json!({"KeyId": DEV_KEY_ALIAS, "Plaintext": secret}),
        ),
    ] {
        let refused = agent.call("kms", target, &body).await;
        assert_eq!(
            error_code(refused),
            "AccessDeniedException",
            "agent {target}"
        );
    }

    // Every KMS call is audited with the key's ARN.
    let audit = std::fs::read_to_string(world.gateway.audit_path()).unwrap();
    let kms_calls = audit
        .lines()
        .filter(|line| line.contains("\"kms:") && line.contains(&arn))
        .count();
    assert!(kms_calls >= 10, "{kms_calls} audited KMS calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_kms_with_the_http_provider() {
    let mut world = World::start("gateway-http", &[]).await;
    let admin_kms = HttpKms::new(world.api(&world.admin));
    keys_open_only_in_their_context(&admin_kms, DEV_KEY_ALIAS).await;
    world.start_agent(None).await;
    world
        .encrypted_session(DEV_ENCRYPTED_SHELL, Arc::new(admin_kms))
        .await;
}

/// The KMS as its own process (here: a second gateway holding only keys and principals): the
/// relay never holds the session keys. The agent is a principal there with `kms:Decrypt`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_as_a_separate_kms() {
    let mut world = World::start("separate-relay", &[]).await;
    let state = std::env::temp_dir().join(format!("ssm-kms-separate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let mut config = gateway::prepare_dev(&state, "127.0.0.1:0".parse().unwrap(), false)
        .unwrap()
        .config;
    config.agents.clear();
    config.policies.insert(
        "decrypt-only".into(),
        json!({"Version": "2012-10-17", "Statement": [{"Sid": "HostKeys", "Effect": "Allow",
            "Action": "kms:Decrypt", "Resource": "*"}]}),
    );
    let principal = |name: &str, credentials: &Credentials, policy: &str| PrincipalConfig {
        name: name.into(),
        access_key_id: credentials.access_key_id.clone(),
        secret_access_key: credentials.secret_access_key.clone(),
        policies: vec![policy.into()],
    };
    config.principals = vec![
        principal("admin", &world.admin, "all-targets"),
        principal("host", &world.agent, "decrypt-only"),
    ];
    let kms_gateway = Gateway::start(config, None).await.unwrap();
    let kms_at = |credentials: &Credentials| -> Arc<dyn KeyProvider> {
        let api = ApiClient::new(
            kms_gateway.endpoint(),
            "us-east-1",
            credentials.clone(),
            TlsConfig::default(),
        )
        .unwrap();
        Arc::new(HttpKms::new(api))
    };
    // The host may open keys but not make them; the user may make them but not open them.
    let host = kms_at(&world.agent);
    let refused = host
        .generate_data_key(DEV_KEY_ALIAS, &context("s", "t"))
        .await;
    assert!(
        matches!(refused, Err(KmsError::AccessDenied(_))),
        "{refused:?}"
    );
    let user = kms_at(&world.admin);
    let key = user
        .generate_data_key(DEV_KEY_ALIAS, &context("s", "t"))
        .await
        .unwrap();
    let refused = user
        .decrypt(DEV_KEY_ALIAS, &key.ciphertext_blob, &context("s", "t"))
        .await;
    assert!(
        matches!(refused, Err(KmsError::AccessDenied(_))),
        "{refused:?}"
    );
    world.start_agent(Some(host)).await;
    world.encrypted_session(DEV_ENCRYPTED_SHELL, user).await;
    // The relaying gateway answered no KMS call.
    let relay_audit = std::fs::read_to_string(world.gateway.audit_path()).unwrap();
    assert!(
        !relay_audit.contains("\"kms:"),
        "the relay was asked for keys"
    );
    drop(kms_gateway);
    let _ = std::fs::remove_dir_all(&state);
}

/// A moto_server endpoint and a fresh symmetric key in it.
async fn moto_key() -> (ApiClient, String) {
    let url = external::external("SSM_SESSION_MOTO_URL");
    let moto = ApiClient::new(
        &url,
        "us-east-1",
        Credentials::new("testing", "testing", None),
        TlsConfig::default(),
    )
    .unwrap();
    let created = moto
        .call(
            "kms",
            "TrentService.CreateKey",
            &json!({"Description": "ssm-session test"}),
        )
        .await
        .unwrap();
    let key_id = created["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    (moto, key_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto_server in SSM_SESSION_MOTO_URL: run with --include-ignored (.ci/run does)"]
async fn moto_kms_with_the_http_provider() {
    let (moto, key_id) = moto_key().await;
    let kms: Arc<dyn KeyProvider> = Arc::new(HttpKms::new(moto));
    keys_open_only_in_their_context(kms.as_ref(), &key_id).await;
    let unknown = kms
        .generate_data_key("7a7a7a7a-0000-4000-8000-000000000000", &context("s", "t"))
        .await;
    assert!(unknown.is_err(), "{unknown:?}");
    // Client and agent both use moto; the gateway only relays ciphertext.
    let mut world = World::start("moto-http", &[("Moto-Shell", &key_id)]).await;
    world.start_agent(Some(kms.clone())).await;
    world.encrypted_session("Moto-Shell", kms).await;
}

#[cfg(feature = "aws-kms")]
mod sdk {
    use super::*;
    use ssm_session::aws_sdk::{self, AwsKms, SdkOptions};

    async fn sdk_kms(endpoint: &str, credentials: &Credentials) -> Arc<dyn KeyProvider> {
        let options = SdkOptions::new(None, Some("us-east-1")).credentials(credentials.clone());
        let config = aws_sdk::load_config(&options).await.unwrap();
        Arc::new(AwsKms::new(&config, Some(endpoint)))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gateway_kms_with_the_sdk_provider() {
        let mut world = World::start("gateway-sdk", &[]).await;
        let endpoint = world.gateway.endpoint().to_owned();
        let admin = sdk_kms(&endpoint, &world.admin).await;
        keys_open_only_in_their_context(admin.as_ref(), DEV_KEY_ALIAS).await;
        let restricted = sdk_kms(&endpoint, &world.restricted).await;
        let refused = restricted
            .generate_data_key(DEV_KEY_ALIAS, &context("s", "t"))
            .await;
        assert!(
            matches!(refused, Err(KmsError::AccessDenied(_))),
            "{refused:?}"
        );
        // The agent signs its Decrypt with its own identity, through the SDK too.
        let agent = sdk_kms(&endpoint, &world.agent).await;
        world.start_agent(Some(agent)).await;
        world.encrypted_session(DEV_ENCRYPTED_SHELL, admin).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs moto_server in SSM_SESSION_MOTO_URL: run with --include-ignored"]
    async fn moto_kms_with_the_sdk_provider() {
        let (_, key_id) = moto_key().await;
        let url = external::external("SSM_SESSION_MOTO_URL");
        let kms = sdk_kms(&url, &Credentials::new("testing", "testing", None)).await;
        keys_open_only_in_their_context(kms.as_ref(), &key_id).await;
        let unknown = "7a7a7a7a-0000-4000-8000-000000000000";
        let refused = kms.generate_data_key(unknown, &context("s", "t")).await;
        assert!(
            matches!(&refused, Err(KmsError::KeyNotFound { key_id }) if key_id == unknown),
            "{refused:?}"
        );
        let mut world = World::start("moto-sdk", &[("Moto-Shell", &key_id)]).await;
        world.start_agent(Some(kms.clone())).await;
        world.encrypted_session("Moto-Shell", kms).await;
    }
}

/// The agent until its task is aborted.
async fn run_agent(settings: ssm_session::agent::AgentSettings) {
    if let Err(error) = ssm_session::agent::run(settings, std::future::pending()).await {
        panic!("the agent cannot run: {error}");
    }
}
