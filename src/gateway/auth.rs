//! Who is calling and what they may do: SigV4 verification against the configured principals
//! and agents, policy evaluation, the session documents and the KMS key names. One immutable
//! value per configuration, swapped whole on reload.

use std::collections::HashMap;
use std::fmt;

use super::config::{ConfigError, GatewayConfig};
use crate::document::DocumentStore;
use crate::net::http::HttpRequest;
use crate::policy::{self, Policy};
use crate::sigv4;

/// An API error in AWS terms.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: u16,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
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

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// A principal, by name.
    User(String),
    /// An agent, by id.
    Agent(String),
}

impl Caller {
    pub(crate) fn name(&self) -> &str {
        match self {
            Caller::User(name) | Caller::Agent(name) => name,
        }
    }
}

struct User {
    name: String,
    secret: String,
    policies: Vec<(String, Policy)>,
}

pub(crate) struct Auth {
    users: HashMap<String, User>,
    agents: HashMap<String, String>,
    documents: DocumentStore,
    keys: HashMap<String, String>,
}

impl Auth {
    pub(crate) fn build(config: &GatewayConfig) -> Result<Auth, ConfigError> {
        let mut policies = HashMap::new();
        for (name, document) in &config.policies {
            let policy = Policy::from_json(&document.to_string())
                .map_err(|error| ConfigError::Invalid(format!("policy {name:?}: {error}")))?;
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
            documents
                .load_dir(dir)
                .map_err(|error| ConfigError::Invalid(format!("documents: {error}")))?;
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

    /// Verifies the request's signature against principals and agents.
    pub(crate) fn verify(&self, request: &HttpRequest, now: u64) -> Result<Caller, ApiError> {
        let verified = sigv4::verify(&signed(request), |key| self.secret(key), now)
            .map_err(|error| ApiError::new(400, error.aws_code(), error.to_string()))?;
        let key = verified.access_key_id;
        match self.users.get(&key) {
            Some(user) => Ok(Caller::User(user.name.clone())),
            None => Ok(Caller::Agent(key)),
        }
    }

    /// Verifies a request signed by an agent; its id.
    pub(crate) fn verify_agent(&self, request: &HttpRequest, now: u64) -> Result<String, ApiError> {
        let verified = sigv4::verify(&signed(request), |key| self.agents.get(key).cloned(), now)
            .map_err(|error| ApiError::new(403, error.aws_code(), error.to_string()))?;
        Ok(verified.access_key_id)
    }

    fn secret(&self, access_key_id: &str) -> Option<String> {
        self.users
            .get(access_key_id)
            .map(|user| user.secret.clone())
            .or_else(|| self.agents.get(access_key_id).cloned())
    }

    /// `Ok(statement that allowed)` or `Err(why not)` for `action` on every resource.
    pub(crate) fn authorize(
        &self,
        region: &str,
        account: &str,
        name: &str,
        action: &str,
        resources: &[String],
    ) -> Result<String, String> {
        let Some(user) = self.users.values().find(|user| user.name == name) else {
            return Err(format!("principal {name} no longer exists"));
        };
        let _ = (region, account);
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
    pub(crate) fn may_start(
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
        self.authorize(region, account, name, "ssm:StartSession", &resources)
            .map(drop)
    }

    pub(crate) fn documents(&self) -> &DocumentStore {
        &self.documents
    }

    /// The key id behind a key id, alias or ARN.
    pub(crate) fn key_id(&self, name: &str) -> Option<String> {
        self.keys.get(name).cloned()
    }
}

fn signed(request: &HttpRequest) -> sigv4::Request<'_> {
    sigv4::Request {
        method: &request.method,
        path: &request.path,
        query: &request.query,
        headers: &request.headers,
        body: &request.body,
    }
}
