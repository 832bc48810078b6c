//! The gateway's state and the operations on it, shared by every connection: one [`Service`]
//! per running gateway. The API, KMS, agent and session operations are its methods, in the
//! files named after them.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::agents::Registry;
use super::auth::Auth;
use super::config::{ConfigError, GatewayConfig, Limits};
use super::sessions::Sessions;
use super::{lock, wall_ms};
use crate::audit::{ChainWriter, EndReason, EventKind, Record};
use crate::kms::LocalKms;
use crate::net::relay::{Hub, TokenTable};

/// How often shutdown looks whether the relay has flushed the ended sessions.
const FLUSH_POLL: Duration = Duration::from_millis(20);

pub(super) struct Service {
    pub(super) region: String,
    pub(super) account: String,
    pub(super) state_dir: PathBuf,
    pub(super) tls: bool,
    pub(super) limits: Limits,
    pub(super) config_path: Option<PathBuf>,
    auth: RwLock<Arc<Auth>>,
    pub(super) hub: Hub,
    pub(super) tokens: Arc<TokenTable>,
    pub(super) kms: LocalKms,
    pub(super) sessions: Sessions,
    pub(super) agents: Registry,
    audit: Mutex<ChainWriter<std::fs::File>>,
    /// The same file as `audit`'s, for fsync.
    audit_file: std::fs::File,
    /// Cancelled when the gateway shuts down: stop accepting, close control channels.
    pub(super) stopping: CancellationToken,
}

/// What [`Service::new`] needs besides the configuration.
pub(super) struct Parts {
    pub(super) config_path: Option<PathBuf>,
    pub(super) tls: bool,
    pub(super) auth: Auth,
    pub(super) hub: Hub,
    pub(super) tokens: Arc<TokenTable>,
    pub(super) kms: LocalKms,
    pub(super) audit: ChainWriter<std::fs::File>,
    pub(super) audit_file: std::fs::File,
}

impl Service {
    pub(super) fn new(config: &GatewayConfig, parts: Parts) -> Service {
        Service {
            region: config.region.clone(),
            account: config.account.clone(),
            state_dir: config.state_dir.clone(),
            tls: parts.tls,
            limits: config.limits,
            config_path: parts.config_path,
            auth: RwLock::new(Arc::new(parts.auth)),
            hub: parts.hub,
            tokens: parts.tokens,
            kms: parts.kms,
            sessions: Sessions::default(),
            agents: Registry::default(),
            audit: Mutex::new(parts.audit),
            audit_file: parts.audit_file,
            stopping: CancellationToken::new(),
        }
    }

    /// The configuration in force now.
    pub(super) fn auth(&self) -> Arc<Auth> {
        self.auth
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Swaps in the configuration file's principals, policies, agents and documents, and ends
    /// the live sessions it no longer allows.
    pub(super) fn reload(&self) -> Result<Vec<String>, ConfigError> {
        let Some(path) = &self.config_path else {
            return Err(ConfigError::Invalid(
                "the gateway was started without a configuration file".into(),
            ));
        };
        let config = match GatewayConfig::load(path).and_then(|config| Auth::build(&config)) {
            Ok(auth) => Arc::new(auth),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "reload refused, keeping the old configuration");
                return Err(error);
            }
        };
        *self
            .auth
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = config.clone();
        let mut record = Record::new(EventKind::PolicyReload);
        record.detail = Some(format!("{} reloaded", path.display()));
        self.audit(record);
        let revoked = self.revoke_disallowed(&config);
        tracing::info!(path = %path.display(), revoked = revoked.len(), "configuration reloaded");
        Ok(revoked)
    }

    pub(super) fn recording_path(&self, session_id: &str) -> PathBuf {
        self.state_dir
            .join("recordings")
            .join(format!("{session_id}.cast"))
    }

    /// Appends to the audit chain. A failing audit log is logged at error level; the gateway
    /// keeps serving (fail-open), and the chain shows no gap because nothing was appended.
    pub(super) fn audit(&self, record: Record) {
        let event = record.event;
        let mut log = lock(&self.audit);
        if let Err(error) = log.append(record, wall_ms()) {
            tracing::error!(event = event.as_str(), %error, "audit log write failed");
        }
    }

    /// Pushes the audit log to stable storage.
    pub(super) fn sync_audit(&self) {
        let _log = lock(&self.audit);
        if let Err(error) = self.audit_file.sync_all() {
            tracing::error!(%error, "audit log fsync failed");
        }
    }

    /// Ends every live session (`gateway_shutdown`), then waits up to `flush` for the relay to
    /// deliver what it had queued toward both ends, `channel_closed` last.
    pub(super) async fn end_all(&self, flush: Duration) {
        let ended: Vec<String> = self
            .sessions
            .live_ids()
            .into_iter()
            .filter(|id| {
                self.end(
                    id,
                    EndReason::GatewayShutdown,
                    None,
                    "the gateway is shutting down",
                )
            })
            .collect();
        let deadline = tokio::time::Instant::now() + flush;
        while ended
            .iter()
            .any(|id| self.hub.connected(id) != (false, false))
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(FLUSH_POLL).await;
        }
    }
}
