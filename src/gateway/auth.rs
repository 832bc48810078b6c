//! Who is calling and what they may do: SigV4 verification against the configured principals
//! and agents, policy evaluation, the session documents and the KMS key names (one immutable
//! [`Auth`] per configuration, swapped whole on reload), and the request, caller and error
//! types the API and the KMS endpoint share. Nothing here depends on the running service.

use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use super::config::{ConfigError, GatewayConfig};
use crate::audit::{EventKind, Record};
use crate::document::DocumentStore;
use crate::policy::{self, Policy};
use crate::sigv4;

/// An API error in AWS terms: what the caller is told.
#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) status: u16,
    pub(super) code: &'static str,
    pub(super) message: String,
}

impl ApiError {
    pub(super) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// A request as the API, the KMS endpoint and signature checks see it, whatever the HTTP
/// version: lower-case header names, `host` always present (HTTP/2 carries it as the
/// `:authority`), the whole (size-limited) body. Its `Debug` shows no credentials, signature,
/// session token or body.
pub(super) struct ApiRequest {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) query: String,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Bytes,
}

impl ApiRequest {
    pub(super) fn new(parts: &hyper::http::request::Parts, body: Bytes) -> Result<Self, ApiError> {
        let mut headers = Vec::with_capacity(parts.headers.len() + 1);
        for (name, value) in &parts.headers {
            let value = value.to_str().map_err(|_| {
                ApiError::new(
                    400,
                    "SerializationException",
                    format!("header {name} is not visible ASCII"),
                )
            })?;
            headers.push((name.as_str().to_owned(), value.to_owned()));
        }
        if !parts.headers.contains_key(hyper::header::HOST)
            && let Some(authority) = parts.uri.authority()
        {
            headers.push(("host".to_owned(), authority.as_str().to_owned()));
        }
        Ok(ApiRequest {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or("").to_owned(),
            headers,
            body,
        })
    }

    /// The first header called `name` (lower case).
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The access key id named in the `Authorization` header's credential scope, unverified.
    fn claimed_access_key_id(&self) -> Option<&str> {
        let credential = self.header("authorization")?.split("Credential=").nth(1)?;
        credential.split('/').next()
    }

    fn signed(&self) -> sigv4::Request<'_> {
        sigv4::Request {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            headers: &self.headers,
            body: &self.body,
        }
    }
}

/// Logs and panics may print a request: never its signature (a replayable credential while
/// it is fresh), session token or body (key material, commands), nor its other headers.
impl fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("operation", &self.header("x-amz-target"))
            .field("access_key_id", &self.claimed_access_key_id())
            .field("query_len", &self.query.len())
            .field("headers", &self.headers.len())
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// A verified single-use signature, for the replay cache.
pub(super) struct Once {
    pub(super) access_key_id: String,
    pub(super) signature: [u8; 32],
    pub(super) request_time: u64,
}

/// Who signed a request, and its signature when the call it makes is single-use.
pub(super) struct Signed<T> {
    pub(super) signer: T,
    pub(super) once: Option<Once>,
}

impl<T> Signed<T> {
    fn new(signer: T, verified: &sigv4::Verified, single_use: bool) -> Signed<T> {
        Signed {
            signer,
            once: single_use.then(|| Once {
                access_key_id: verified.access_key_id.clone(),
                signature: verified.signature,
                request_time: verified.request_time,
            }),
        }
    }
}

/// What the signature of a request to one of the gateway's endpoints must cover: the AWS
/// signing name of the service it stands in for, the headers that select what is done, and
/// whether one signature may be used only once (the call mints a token or opens a channel).
struct Endpoint {
    service: &'static str,
    signed_headers: &'static [&'static str],
    single_use: bool,
}

/// The agents' endpoints (the `/v1/control-channel/` upgrade, `/v1/data-channel/`):
/// `ssmmessages`, as our agent and the stock Go agent sign them; the path, signed, selects
/// the channel.
const CONTROL_CHANNEL: Endpoint = Endpoint {
    service: "ssmmessages",
    signed_headers: &[],
    single_use: true,
};

impl Endpoint {
    /// The endpoint `request` is for, by its path: `X-Amz-Target` selects an operation only on
    /// `/`, so that a header cannot turn a request for another path into one. Other paths and
    /// operations this gateway does not serve are refused.
    fn of(request: &ApiRequest) -> Result<Endpoint, ApiError> {
        served(&request.path)?;
        if request.path.starts_with(crate::net::relay::PATH_PREFIX) {
            return Ok(CONTROL_CHANNEL);
        }
        let target = request.header("x-amz-target").unwrap_or("");
        let (service, single_use) = match target {
            "AmazonSSM.StartSession" | "AmazonSSM.ResumeSession" => ("ssm", true),
            _ if target.starts_with("AmazonSSM.") => ("ssm", false),
            _ if target.starts_with("TrentService.") => ("kms", false),
            _ => {
                return Err(ApiError::new(
                    400,
                    "UnknownOperationException",
                    format!("operation {target:?} is not served by this gateway"),
                ));
            }
        };
        Ok(Endpoint {
            service,
            signed_headers: &["x-amz-target"],
            single_use,
        })
    }

    fn expected<'a>(&self, region: &'a str) -> sigv4::Expected<'a> {
        sigv4::Expected {
            region,
            service: self.service,
            signed_headers: self.signed_headers,
        }
    }
}

/// Refuses (404) a path that serves nothing to a request that is not a websocket upgrade:
/// the API is on `/`, the agents' `CreateDataChannel` under `/v1/data-channel/`.
pub(super) fn served(path: &str) -> Result<(), ApiError> {
    if path == "/" || path.starts_with(crate::net::relay::PATH_PREFIX) {
        return Ok(());
    }
    Err(ApiError::new(
        404,
        "NotFound",
        format!(
            "nothing is served at {:?}: API calls are POST /, channels are websocket upgrades",
            path.chars().take(128).collect::<String>()
        ),
    ))
}

/// What an agent whose control-channel upgrade did not verify is told (403, the type as the
/// JSON error's `__type` and the `x-amzn-ErrorType` header): what to fix on the agent's host,
/// in its terms. Nothing in it comes from the configured secret — only from the request and
/// the gateway's clock — so it tells a prober nothing a wrong guess would not.
pub(super) fn agent_refusal(error: &sigv4::SigV4Error) -> ApiError {
    use sigv4::SigV4Error;
    let (code, message) = match error {
        SigV4Error::UnknownAccessKey(id) => (
            "UnrecognizedClientException",
            format!(
                "the agent id {id} is not registered with this gateway (never added, or \
                 removed from its configuration): check the agent's --agent-id, or add it to \
                 the gateway's \"agents\""
            ),
        ),
        SigV4Error::SignatureMismatch => (
            "InvalidSignatureException",
            "the signature does not match: check the agent's secret (--agent-secret-file) \
             and its region"
                .to_owned(),
        ),
        SigV4Error::RequestExpired {
            request_time,
            server_time,
        } => {
            let skew = sigv4::parse_timestamp(request_time)
                .zip(sigv4::parse_timestamp(server_time))
                .map(|(request, server)| request - server);
            let told = match skew {
                Some(skew) => format!(
                    "the request time ({request_time}) is {} min {} the gateway's clock \
                     ({server_time}); at most {} min are allowed: correct this host's clock \
                     (NTP)",
                    skew.unsigned_abs().div_ceil(60),
                    if skew > 0 { "ahead of" } else { "behind" },
                    sigv4::MAX_CLOCK_SKEW_SECONDS / 60,
                ),
                None => error.to_string(),
            };
            ("InvalidSignatureException", told)
        }
        other => (other.aws_code(), other.to_string()),
    };
    ApiError::new(403, code, message)
}

/// An agent that signed a control-channel upgrade: its id, and the SHA-256 of its id and
/// the secret it signed with (so that registration can tell the key is still configured
/// without keeping the secret around).
pub(super) struct AgentKey {
    pub(super) id: String,
    pub(super) digest: [u8; 32],
}

fn key_digest(id: &str, secret: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(id.as_bytes());
    hash.update([0]);
    hash.update(secret.as_bytes());
    hash.finalize().into()
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Caller {
    /// A principal, by name.
    User(String),
    /// An agent, by id.
    Agent(String),
}

impl Caller {
    pub(super) fn name(&self) -> &str {
        match self {
            Caller::User(name) | Caller::Agent(name) => name,
        }
    }

    /// The principal's name; agents may not call user operations.
    pub(super) fn user(&self) -> Result<&str, ApiError> {
        match self {
            Caller::User(name) => Ok(name),
            Caller::Agent(id) => Err(ApiError::new(
                400,
                "AccessDeniedException",
                format!("agent identity {id} may not call session APIs"),
            )),
        }
    }
}

/// The audit record of the call being answered, filled in as facts become known.
pub(super) struct Call {
    pub(super) record: Record,
}

impl Call {
    pub(super) fn new(source: std::net::SocketAddr) -> Call {
        let mut record = Record::new(EventKind::ApiCall);
        record.source = Some(source.to_string());
        Call { record }
    }
}

/// Reads an operation's input from its JSON body.
pub(super) fn parse<T: for<'de> Deserialize<'de>>(body: Value) -> Result<T, ApiError> {
    serde_json::from_value(body)
        .map_err(|error| ApiError::new(400, "ValidationException", error.to_string()))
}

struct User {
    name: String,
    secret: String,
    policies: Vec<(String, Policy)>,
}

/// One configuration's view of identities, policies, documents and key names.
pub(super) struct Auth {
    users: HashMap<String, User>,
    agents: HashMap<String, String>,
    documents: DocumentStore,
    keys: HashMap<String, String>,
}

impl Auth {
    pub(super) fn build(config: &GatewayConfig) -> Result<Auth, ConfigError> {
        let mut policies = HashMap::new();
        for (name, document) in &config.policies {
            let policy =
                Policy::from_json(&document.to_string()).map_err(|source| ConfigError::Policy {
                    name: name.clone(),
                    source,
                })?;
            policies.insert(name.clone(), policy);
        }
        let users = config
            .principals
            .iter()
            .map(|principal| {
                let attached = principal
                    .policies
                    .iter()
                    .filter_map(|name| Some((name.clone(), policies.get(name)?.clone())))
                    .collect();
                let user = User {
                    name: principal.name.clone(),
                    secret: principal.secret_access_key.clone(),
                    policies: attached,
                };
                (principal.access_key_id.clone(), user)
            })
            .collect();
        let agents = config
            .agents
            .iter()
            .map(|agent| (agent.id.clone(), agent.secret.clone()))
            .collect();
        let mut documents = DocumentStore::builtin();
        if let Some(dir) = &config.documents_dir
            && dir.is_dir()
        {
            documents.load_dir(dir).map_err(ConfigError::Documents)?;
        }
        let mut keys = HashMap::new();
        for key in &config.kms_keys {
            keys.insert(key.key_id.clone(), key.key_id.clone());
            keys.insert(
                policy::kms_key_arn(&config.region, &config.account, &key.key_id),
                key.key_id.clone(),
            );
            for alias in &key.aliases {
                keys.insert(alias.clone(), key.key_id.clone());
                keys.insert(
                    format!("arn:aws:kms:{}:{}:{alias}", config.region, config.account),
                    key.key_id.clone(),
                );
            }
        }
        Ok(Auth {
            users,
            agents,
            documents,
            keys,
        })
    }

    /// Who signed API `request` for `region` at `now` (Unix seconds): a principal, or else an
    /// agent; with the signature when the call may use it only once.
    pub(super) fn verify(
        &self,
        request: &ApiRequest,
        region: &str,
        now: u64,
    ) -> Result<Signed<Caller>, ApiError> {
        let endpoint = Endpoint::of(request)?;
        let verified = sigv4::verify(
            &request.signed(),
            &endpoint.expected(region),
            |key| self.secret(key),
            now,
        )
        .map_err(|error| ApiError::new(400, error.aws_code(), error.to_string()))?;
        let caller = match self.users.get(&verified.access_key_id) {
            Some(user) => Caller::User(user.name.clone()),
            None => Caller::Agent(verified.access_key_id.clone()),
        };
        Ok(Signed::new(caller, &verified, endpoint.single_use))
    }

    /// Which agent signed the control-channel upgrade `request` for `region` at `now`, and
    /// the digest of the key it signed with; principals' keys are not accepted. An upgrade's
    /// signature is good once.
    pub(super) fn verify_agent(
        &self,
        request: &ApiRequest,
        region: &str,
        now: u64,
    ) -> Result<Signed<AgentKey>, sigv4::SigV4Error> {
        let expected = CONTROL_CHANNEL.expected(region);
        let mut digest = None;
        let lookup = |id: &str| {
            let secret = self.agents.get(id)?;
            digest = Some(key_digest(id, secret));
            Some(secret.clone())
        };
        sigv4::verify(&request.signed(), &expected, lookup, now).map(|verified| {
            let key = AgentKey {
                id: verified.access_key_id.clone(),
                // Set whenever the signature verified; all zeros would match no key.
                digest: digest.unwrap_or_default(),
            };
            Signed::new(key, &verified, true)
        })
    }

    /// Whether agent `id` is configured now with the key of `digest` (compared in constant
    /// time): a channel authenticated under a key that a reload removed is not registered.
    pub(super) fn agent_key_is(&self, id: &str, digest: &[u8; 32]) -> bool {
        let Some(secret) = self.agents.get(id) else {
            return false;
        };
        let current = key_digest(id, secret);
        let differing = current
            .iter()
            .zip(digest)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(differing) == 0
    }

    /// The configured secret of agent `id`, to tell whether a reload changed it.
    pub(super) fn agent_secret(&self, id: &str) -> Option<&str> {
        self.agents.get(id).map(String::as_str)
    }

    fn secret(&self, access_key_id: &str) -> Option<String> {
        self.users
            .get(access_key_id)
            .map(|user| user.secret.clone())
            .or_else(|| self.agents.get(access_key_id).cloned())
    }

    /// `Ok(statement that allowed)` or `Err(why not)` for `action` on every resource.
    pub(super) fn authorize(
        &self,
        name: &str,
        action: &str,
        resources: &[String],
    ) -> Result<String, String> {
        let Some(user) = self.users.values().find(|user| user.name == name) else {
            return Err(format!("principal {name} no longer exists"));
        };
        let resources: Vec<&str> = resources.iter().map(String::as_str).collect();
        let decision = policy::evaluate(
            &user.policies,
            &policy::AuthzRequest {
                action,
                resources: &resources,
                username: name,
            },
        );
        match decision.allowed() {
            true => Ok(decision.to_string()),
            false => Err(decision.to_string()),
        }
    }

    /// Whether `name` may start a session on `target` with `document` now.
    pub(super) fn may_start(
        &self,
        region: &str,
        account: &str,
        name: &str,
        target: &str,
        document: &str,
    ) -> Result<(), String> {
        let resources = [
            policy::target_arn(region, account, target),
            policy::document_arn(region, account, document),
        ];
        self.authorize(name, "ssm:StartSession", &resources)
            .map(drop)
    }

    pub(super) fn documents(&self) -> &DocumentStore {
        &self.documents
    }

    /// The key id behind a key id, alias or ARN.
    pub(super) fn key_id(&self, name: &str) -> Option<String> {
        self.keys.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_credentials_or_body() {
        let signature = "f".repeat(64);
        let request = ApiRequest {
            method: "POST".into(),
            path: "/".into(),
            query: "X-Amz-Signature=presigned-secret".into(),
            headers: vec![
                ("host".into(), "gateway".into()),
                ("x-amz-target".into(), "TrentService.Decrypt".into()),
                (
                    "authorization".into(),
                    format!(
                        "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20300101/us-east-1/kms/aws4_request, SignedHeaders=host;x-amz-target, Signature={signature}"
                    ),
                ),
                ("x-amz-security-token".into(), "session-token-secret".into()),
            ],
            body: Bytes::from_static(br#"{"CiphertextBlob":"body-secret"}"#),
        };
        let shown = format!("{request:?}");
        for secret in [
            signature.as_str(),
            "session-token-secret",
            "body-secret",
            "presigned-secret",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        for shown_part in ["TrentService.Decrypt", "AKIAEXAMPLE", "body_len: 32"] {
            assert!(shown.contains(shown_part), "no {shown_part} in {shown}");
        }
    }

    #[test]
    fn a_refused_agent_is_told_what_to_fix() {
        use sigv4::SigV4Error;
        let unknown = agent_refusal(&SigV4Error::UnknownAccessKey("\"mi-1\"".into()));
        assert_eq!(
            (unknown.status, unknown.code),
            (403, "UnrecognizedClientException")
        );
        assert!(
            unknown
                .message
                .contains("the agent id \"mi-1\" is not registered with this gateway"),
            "{unknown}"
        );
        let mismatch = agent_refusal(&SigV4Error::SignatureMismatch);
        assert_eq!(mismatch.code, "InvalidSignatureException");
        assert!(
            mismatch.message.contains("check the agent's secret"),
            "{mismatch}"
        );
        let late = agent_refusal(&SigV4Error::RequestExpired {
            request_time: "20300101T000000Z".into(),
            server_time: "20300101T002000Z".into(),
        });
        assert_eq!(late.code, "InvalidSignatureException");
        assert!(
            late.message
                .contains("is 20 min behind the gateway's clock"),
            "{late}"
        );
        let ahead = agent_refusal(&SigV4Error::RequestExpired {
            request_time: "20300101T010630Z".into(),
            server_time: "20300101T000000Z".into(),
        });
        assert!(ahead.message.contains("67 min ahead of"), "{ahead}");
    }

    #[test]
    fn an_agent_key_matches_only_while_that_secret_is_configured() {
        let (mut config, dev) = GatewayConfig::dev(
            "127.0.0.1:0".parse().unwrap(),
            std::path::Path::new("/nonexistent"),
        );
        let auth = Auth::build(&config).unwrap();
        let digest = key_digest(&dev.agent_id, &dev.agent_secret);
        assert!(auth.agent_key_is(&dev.agent_id, &digest));
        assert!(!auth.agent_key_is(&dev.agent_id, &[0; 32]));
        assert!(!auth.agent_key_is("mi-other", &digest));
        config.agents[0].secret = "another-secret-another-secret-another-se".into();
        assert!(
            !Auth::build(&config)
                .unwrap()
                .agent_key_is(&dev.agent_id, &digest)
        );
        config.agents.clear();
        assert!(
            !Auth::build(&config)
                .unwrap()
                .agent_key_is(&dev.agent_id, &digest)
        );
    }
}
