//! The gateway's configuration file: who may sign requests (principals and their policies),
//! which agents may connect, the KMS keys, where state goes and the limits on peers. Everything
//! but the listening address, TLS, the state directory, the limits and the quotas is re-read on
//! reload.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::entropy::{Entropy, SystemEntropy};

/// The whole configuration, as stored in `gateway.json`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The region the gateway claims (SigV4 scope, ARNs).
    pub region: String,
    /// The account id in ARNs.
    pub account: String,
    /// Serve https/wss with this certificate chain and key (PEM files).
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Audit log, recordings and the KMS master key live here.
    pub state_dir: PathBuf,
    /// Custom session documents (`<Name>.json`), besides the built-ins.
    #[serde(default)]
    pub documents_dir: Option<PathBuf>,
    /// Named IAM-style policy documents.
    #[serde(default)]
    pub policies: BTreeMap<String, serde_json::Value>,
    /// Users and roles that call the API.
    #[serde(default)]
    pub principals: Vec<PrincipalConfig>,
    /// Hosts whose agents may connect.
    #[serde(default)]
    pub agents: Vec<AgentIdentity>,
    /// KMS keys of the built-in key service.
    #[serde(default)]
    pub kms_keys: Vec<KmsKeyConfig>,
    /// How long a data-channel token may wait before it is used.
    #[serde(default = "default_token_lifetime")]
    pub token_lifetime_secs: u64,
    /// Time and size limits on what clients send.
    #[serde(default)]
    pub limits: Limits,
    /// Fail closed (`"refuse"`, the default) or open (`"continue"`) when the audit log
    /// cannot be written.
    #[serde(default)]
    pub audit_failure: AuditFailure,
    /// How much each principal may use, and the relay's memory budget.
    #[serde(default)]
    pub quotas: Quotas,
}

/// What one principal may hold or start, and the memory all sessions' relay queues may use
/// together, so that one principal cannot take the gateway from the others. Read at start
/// only (a reload does not change them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Quotas {
    /// Live sessions one principal may have at once.
    pub max_sessions_per_principal: usize,
    /// StartSession calls one principal may make in a burst (a token bucket's size)…
    pub start_session_burst: u32,
    /// …refilled at this many per minute.
    pub start_sessions_per_minute: u32,
    /// Bytes the relay may queue across all sessions; past it, senders are no longer read
    /// (back-pressure, nothing is dropped) beyond one message per session.
    pub relay_memory_bytes: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            max_sessions_per_principal: 32,
            start_session_burst: 20,
            start_sessions_per_minute: 60,
            relay_memory_bytes: 256 << 20,
        }
    }
}

/// How long and how much a peer may take, so that no connection holds the gateway's memory
/// or a task without bound. The defaults suit clients across the internet; a timeout of 0
/// counts as 1 second (there is no "unlimited").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Limits {
    /// A connection must complete its TLS handshake within this.
    pub tls_handshake_timeout_secs: u64,
    /// A request head must arrive within this (the first one counted from the connection).
    pub header_read_timeout_secs: u64,
    /// A request, body included, must be read and answered within this.
    pub request_timeout_secs: u64,
    /// Largest request body of any operation. Each operation, named by the path and
    /// `X-Amz-Target` before the body is read, allows at most: `StartSession` 64 KiB (document
    /// parameters), `DescribeSessions` and `DescribeInstanceInformation` 16 KiB, KMS `Encrypt`
    /// and `Decrypt` 16 KiB (a 4 KiB plaintext or its blob, base64), `ResumeSession`,
    /// `TerminateSession`, `GenerateDataKey` and `DescribeKey` 4 KiB, `CreateDataChannel` and
    /// anything else 1 KiB; larger bodies are refused (413) unread.
    pub max_body_bytes: usize,
    /// Connections served at once, websockets included; more wait in the kernel's accept
    /// queue, and the oldest unauthenticated connection is closed to make room. The gateway
    /// uses at most two thirds of its file-descriptor limit for connections, whatever this says.
    pub max_connections: usize,
    /// Connections one source (an IPv4 address, an IPv6 /64) may hold open at once before any
    /// of them has authenticated; more are closed on accept. Loopback is not exempt.
    pub max_unauthenticated_per_source: usize,
    /// New connections a source may open per second, sustained (a token bucket); a
    /// connection that authenticates gives its token back, so only junk is limited.
    pub connection_rate_per_source: u32,
    /// New connections a source may open in a burst above that rate.
    pub connection_burst_per_source: u32,
    /// Request-body bytes buffered at once, over all connections, before their signatures are
    /// checked; a request that would go over is answered 503 at once. One source may hold an
    /// eighth of it (but always one body of the largest operation), so that a few hosts
    /// cannot take it all.
    pub max_unauthenticated_body_bytes: usize,
    /// Refusals of unauthenticated requests from one source written to the audit log one by
    /// one per [`Limits::refusal_audit_interval_secs`]; the rest are counted in one summary
    /// record per interval.
    pub refusal_records_per_source: u32,
    /// Refusals of unauthenticated requests written one by one per interval over all sources
    /// together; the rest are counted in one summary record, so that a scan from many
    /// addresses cannot fill the audit log either.
    pub refusal_records_total: u32,
    /// The interval of [`Limits::refusal_records_per_source`] and
    /// [`Limits::refusal_records_total`].
    pub refusal_audit_interval_secs: u64,
    /// How long a session waits for a side whose data channel is gone (a client on a
    /// network that dropped, an agent that restarts) before it ends — `network_lost` for the
    /// client, `agent_lost` for the agent — and its processes with it. A side that never
    /// connects counts from the session's start. Long enough for a laptop to change networks
    /// and resume; short enough that a killed client's shell does not run on for long.
    pub resume_window_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            tls_handshake_timeout_secs: 10,
            header_read_timeout_secs: 15,
            request_timeout_secs: 30,
            max_body_bytes: 1 << 20,
            max_connections: 10_000,
            max_unauthenticated_per_source: 64,
            connection_rate_per_source: 50,
            connection_burst_per_source: 200,
            max_unauthenticated_body_bytes: 16 << 20,
            refusal_records_per_source: 10,
            refusal_records_total: 1000,
            refusal_audit_interval_secs: 60,
            resume_window_secs: 180,
        }
    }
}

const KIB: usize = 1024;
/// The largest body any operation allows ([`Limits::body_limit`]'s `StartSession`).
const LARGEST_OPERATION_BODY: usize = 64 * KIB;

impl Limits {
    /// What one source may buffer of bodies not yet authenticated: an eighth of the global
    /// budget, but at least one body of the largest operation.
    pub(super) fn unauthenticated_body_bytes_per_source(&self) -> usize {
        (self.max_unauthenticated_body_bytes / 8)
            .max(LARGEST_OPERATION_BODY.min(self.max_body_bytes))
            .min(self.max_unauthenticated_body_bytes)
    }

    /// The largest body the operation a request names (by path and `X-Amz-Target`) may have,
    /// known before the body is read or the signature checked, so that an unauthenticated
    /// peer cannot make the gateway buffer more than the operation needs (the table is in
    /// [`Limits::max_body_bytes`]'s documentation).
    pub(super) fn body_limit(&self, path: &str, target: Option<&str>) -> usize {
        let limit = if path != "/" {
            // CreateDataChannel: the session id is in the path; the body is `{}` or so. Other
            // paths serve nothing, whatever their `X-Amz-Target` says.
            KIB
        } else {
            match target.unwrap_or("") {
                // Document parameters (a command) may be long.
                "AmazonSSM.StartSession" => LARGEST_OPERATION_BODY,
                "AmazonSSM.ResumeSession" | "AmazonSSM.TerminateSession" => 4 * KIB,
                "AmazonSSM.DescribeSessions" | "AmazonSSM.DescribeInstanceInformation" => 16 * KIB,
                // A 4 KiB plaintext or its ciphertext blob, base64, and a context.
                "TrentService.Encrypt" | "TrentService.Decrypt" => 16 * KIB,
                "TrentService.GenerateDataKey" | "TrentService.DescribeKey" => 4 * KIB,
                // Refused without reading.
                _ => KIB,
            }
        };
        limit.min(self.max_body_bytes)
    }
}

/// What the gateway does when it cannot write its audit log (a full disk, an I/O error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AuditFailure {
    /// Refuse calls that start or resume sessions, mint tokens or use keys (503) until a
    /// write succeeds again; read-only calls and `TerminateSession` are still served.
    #[default]
    Refuse,
    /// Keep serving without an audit trail (the error is logged).
    Continue,
}

fn default_token_lifetime() -> u64 {
    60
}

/// PEM files of the gateway's certificate chain and private key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8).
    pub key: PathBuf,
}

/// One API caller.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    /// User name (`${aws:username}`, session id prefix).
    pub name: String,
    /// SigV4 access key id.
    pub access_key_id: String,
    /// SigV4 secret (never logged).
    pub secret_access_key: String,
    /// Names of the policies in [`GatewayConfig::policies`] attached to it.
    #[serde(default)]
    pub policies: Vec<String>,
}

/// One host's agent identity (the analogue of an instance role).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentIdentity {
    /// The target id users name (`mi-…` or `i-…`).
    pub id: String,
    /// Its secret; the agent signs with the id as access key id.
    pub secret: String,
}

/// A key of the built-in KMS.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsKeyConfig {
    /// The key id (a UUID in AWS).
    pub key_id: String,
    /// Aliases such as `alias/ssm-dev`.
    #[serde(default)]
    pub aliases: Vec<String>,
}

impl fmt::Debug for PrincipalConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrincipalConfig")
            .field("name", &self.name)
            .field("access_key_id", &self.access_key_id)
            .field("policies", &self.policies)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for AgentIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentIdentity")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("listen", &self.listen)
            .field("region", &self.region)
            .field("state_dir", &self.state_dir)
            .field("principals", &self.principals)
            .field("agents", &self.agents)
            .finish_non_exhaustive()
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// The JSON does not describe a configuration.
    #[error("{path}: {error}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What serde said, with line and column.
        error: serde_json::Error,
    },
    /// The configuration contradicts itself.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A policy document is refused.
    #[error("policy {name:?}: {source}")]
    Policy {
        /// Its name in `policies`.
        name: String,
        /// What is wrong with it.
        source: crate::policy::PolicyError,
    },
    /// A session document in `documents_dir` is refused.
    #[error("documents: {0}")]
    Documents(#[source] crate::document::DocumentError),
}

impl ConfigError {
    /// The error as the audit log and the log output tell it: for a file serde could not
    /// read, only the kind of error and where (serde's message can quote a value from the
    /// file, and the file holds secrets).
    pub(super) fn redacted(&self) -> String {
        match self {
            ConfigError::Parse { path, error } => format!(
                "{}: {} error at line {}, column {} (details withheld: the file holds secrets)",
                path.display(),
                match error.classify() {
                    serde_json::error::Category::Io => "I/O",
                    serde_json::error::Category::Syntax => "JSON syntax",
                    serde_json::error::Category::Data => "configuration data",
                    serde_json::error::Category::Eof => "unexpected end of file",
                },
                error.line(),
                error.column()
            ),
            other => other.to_string(),
        }
    }
}

impl GatewayConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
        let text = std::fs::read(path).map_err(|error| ConfigError::Io {
            path: path.to_owned(),
            error,
        })?;
        let config: GatewayConfig =
            serde_json::from_slice(&text).map_err(|error| ConfigError::Parse {
                path: path.to_owned(),
                error,
            })?;
        config.check()?;
        Ok(config)
    }

    /// Writes the configuration to `path` (mode 0600: it holds secrets).
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let text = serde_json::to_vec_pretty(self).expect("configuration serialises");
        write_private(path, &text).map_err(|error| ConfigError::Io {
            path: path.to_owned(),
            error,
        })
    }

    /// Refuses duplicate or unsafe names, duplicate keys and policies that do not exist: a
    /// name identifies one principal (policies are found by it, session ids begin with it) and
    /// names and ids end up in paths and URLs.
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut keys = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for principal in &self.principals {
            check_principal_name(&principal.name)?;
            if !names.insert(principal.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "principal name {} is used twice: give each principal its own name",
                    principal.name
                )));
            }
            if !keys.insert(principal.access_key_id.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "access key {} is used twice",
                    principal.access_key_id
                )));
            }
            if let Some(missing) = principal
                .policies
                .iter()
                .find(|name| !self.policies.contains_key(*name))
            {
                return Err(ConfigError::Invalid(format!(
                    "principal {} names policy {missing:?}, which is not defined",
                    principal.name
                )));
            }
        }
        for agent in &self.agents {
            check_agent_id(&agent.id)?;
            if !keys.insert(agent.id.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "agent id {} is used twice or also as an access key",
                    agent.id
                )));
            }
        }
        Ok(())
    }

    /// Adds generated agent identities until there are `count` (development: `--agents N`);
    /// returns whether any was added.
    pub fn add_dev_agents(&mut self, count: usize) -> bool {
        let before = self.agents.len();
        while self.agents.len() < count {
            self.agents.push(AgentIdentity {
                id: format!("mi-{}", random_hex(17)),
                secret: random_text(40),
            });
        }
        self.agents.len() != before
    }

    /// A development configuration in `state_dir` (see [`DevSetup`]).
    pub fn dev(listen: SocketAddr, state_dir: &Path) -> (GatewayConfig, DevSetup) {
        let setup = DevSetup {
            region: "us-east-1".into(),
            access_key_id: format!("AKIA{}", random_upper(16)),
            secret_access_key: random_text(40),
            restricted_access_key_id: format!("AKIA{}", random_upper(16)),
            restricted_secret_access_key: random_text(40),
            agent_id: format!("mi-{}", random_hex(17)),
            agent_secret: random_text(40),
            kms_key_id: DEV_KEY_ALIAS.into(),
        };
        let policies = BTreeMap::from([
            (
                "all-targets".to_owned(),
                serde_json::json!({
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Sid": "Sessions", "Effect": "Allow",
                         "Action": ["ssm:StartSession", "ssm:DescribeSessions",
                                    "ssm:DescribeInstanceInformation"],
                         "Resource": "*"},
                        {"Sid": "OwnSessions", "Effect": "Allow",
                         "Action": ["ssm:ResumeSession", "ssm:TerminateSession"],
                         "Resource": "arn:aws:ssm:*:*:session/${aws:username}-*"},
                        {"Sid": "SessionKeys", "Effect": "Allow",
                         "Action": ["kms:GenerateDataKey", "kms:DescribeKey"], "Resource": "*"}
                    ]
                }),
            ),
            (
                "no-targets".to_owned(),
                serde_json::json!({
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Sid": "ListOnly", "Effect": "Allow",
                         "Action": ["ssm:DescribeSessions", "ssm:DescribeInstanceInformation"],
                         "Resource": "*"}
                    ]
                }),
            ),
        ]);
        let config = GatewayConfig {
            listen,
            region: setup.region.clone(),
            account: "123456789012".into(),
            tls: None,
            state_dir: state_dir.to_owned(),
            documents_dir: Some(state_dir.join("documents")),
            policies,
            principals: vec![
                PrincipalConfig {
                    name: "dev-admin".into(),
                    access_key_id: setup.access_key_id.clone(),
                    secret_access_key: setup.secret_access_key.clone(),
                    policies: vec!["all-targets".into()],
                },
                PrincipalConfig {
                    name: "dev-restricted".into(),
                    access_key_id: setup.restricted_access_key_id.clone(),
                    secret_access_key: setup.restricted_secret_access_key.clone(),
                    policies: vec!["no-targets".into()],
                },
            ],
            agents: vec![AgentIdentity {
                id: setup.agent_id.clone(),
                secret: setup.agent_secret.clone(),
            }],
            kms_keys: vec![KmsKeyConfig {
                key_id: uuid::Builder::from_random_bytes(random_bytes())
                    .into_uuid()
                    .to_string(),
                aliases: vec![DEV_KEY_ALIAS.into()],
            }],
            token_lifetime_secs: default_token_lifetime(),
            limits: Limits::default(),
            audit_failure: AuditFailure::default(),
            quotas: Quotas::default(),
        };
        (config, setup)
    }
}

/// IAM's user-name alphabet, 1 to 64 characters; `.` and `..` are refused too, so that a name
/// is never a path component of its own.
fn check_principal_name(name: &str) -> Result<(), ConfigError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(allowed)
        || name == "."
        || name == ".."
    {
        return Err(ConfigError::Invalid(format!(
            "principal name {name:?} is not 1 to 64 of A-Z a-z 0-9 + = , . @ _ -"
        )));
    }
    Ok(())
}

/// Letters, digits, `.`, `_` and `-`, 1 to 64, not starting with a dot (instance ids such as
/// `mi-…` and `i-…` fit).
fn check_agent_id(id: &str) -> Result<(), ConfigError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    if id.is_empty() || id.len() > 64 || !id.chars().all(allowed) || id.starts_with('.') {
        return Err(ConfigError::Invalid(format!(
            "agent id {id:?} is not 1 to 64 of A-Z a-z 0-9 . _ - (not starting with a dot)"
        )));
    }
    Ok(())
}

/// The alias of the key a `--dev` gateway creates.
pub const DEV_KEY_ALIAS: &str = "alias/ssm-session-dev";
/// The encrypted shell document a `--dev` gateway adds.
pub const DEV_ENCRYPTED_SHELL: &str = "Dev-EncryptedShell";

/// The credentials of a generated development configuration, printed as one JSON line (and
/// kept, 0600, in `dev-setup.json` of a `--dev --state-dir`, for the next start).
#[derive(Clone, Serialize, Deserialize)]
pub struct DevSetup {
    /// Region to sign for.
    pub region: String,
    /// The all-targets principal.
    pub access_key_id: String,
    /// Its secret.
    pub secret_access_key: String,
    /// The principal that may use no target.
    pub restricted_access_key_id: String,
    /// Its secret.
    pub restricted_secret_access_key: String,
    /// The one agent identity.
    pub agent_id: String,
    /// Its secret.
    pub agent_secret: String,
    /// The KMS key the encrypted shell document names.
    pub kms_key_id: String,
}

impl fmt::Debug for DevSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevSetup")
            .field("access_key_id", &self.access_key_id)
            .field("agent_id", &self.agent_id)
            .finish_non_exhaustive()
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    SystemEntropy::new().fill(&mut bytes);
    bytes
}

/// `n` random hexadecimal digits.
pub(crate) fn random_hex(n: usize) -> String {
    let bytes: [u8; 32] = random_bytes();
    hex::encode(bytes)[..n.min(64)].to_owned()
}

fn random_upper(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let bytes: [u8; 32] = random_bytes();
    bytes[..n.min(32)]
        .iter()
        .map(|byte| ALPHABET[usize::from(byte % 32)] as char)
        .collect()
}

fn random_text(n: usize) -> String {
    use base64::Engine;
    let bytes: [u8; 48] = random_bytes();
    base64::engine::general_purpose::STANDARD.encode(bytes)[..n.min(64)].to_owned()
}

/// Opens `path` for appending, created readable by the owner only (the audit log, recordings).
pub(crate) fn append_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Makes `path` the owner's alone (0700 directories, 0600 files), for state written before
/// this was enforced; a missing path is fine.
pub(crate) fn tighten(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = match std::fs::symlink_metadata(path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            other => other?,
        };
        let mode = match meta.is_dir() {
            true => 0o700,
            false => 0o600,
        };
        if meta.permissions().mode() & 0o777 != mode && !meta.file_type().is_symlink() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` readable by the owner only.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let temporary = path.with_extension("tmp");
    let mut file = options.open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_configuration_is_valid() {
        let text = include_str!("../../dist/gateway.example.json");
        let config: GatewayConfig = serde_json::from_str(text).unwrap();
        config.check().unwrap();
        super::super::auth::Auth::build(&config).unwrap();
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.quotas, Quotas::default());
        assert_eq!(config.audit_failure, AuditFailure::Refuse);
        assert_eq!(config.state_dir, Path::new("/var/lib/ssm-gateway"));
    }
}
