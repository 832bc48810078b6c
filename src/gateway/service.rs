//! The gateway's state and the operations on it, shared by every connection: one [`Service`]
//! per running gateway. The API, KMS, agent and session operations are its methods, in the
//! files named after them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::agents::Registry;
use super::auth::{ApiError, ApiRequest, Auth, Call, Caller, Signed};
use super::config::{ConfigError, GatewayConfig, Limits, Quotas};
use super::quota::StartRate;
use super::replay::{self, ReplayCache};
use super::sessions::Sessions;
use super::{lock, wall_ms};
use crate::audit::{ChainWriter, EndReason, EventKind, Record};
use crate::kms::LocalKms;
use crate::net::relay::{Hub, OpenRefused, TokenTable};

/// How often shutdown looks whether the relay has flushed the ended sessions.
const FLUSH_POLL: Duration = Duration::from_millis(20);

pub(super) struct Service {
    pub(super) region: String,
    pub(super) account: String,
    pub(super) state_dir: PathBuf,
    pub(super) tls: bool,
    pub(super) limits: Limits,
    pub(super) quotas: Quotas,
    pub(super) start_rate: StartRate,
    pub(super) config_path: Option<PathBuf>,
    auth: RwLock<Arc<Auth>>,
    pub(super) hub: Hub,
    pub(super) tokens: Arc<TokenTable>,
    pub(super) kms: LocalKms,
    pub(super) sessions: Sessions,
    pub(super) agents: Registry,
    /// Signatures of single-use calls seen within the clock skew.
    replay: ReplayCache,
    audit: Mutex<ChainWriter<std::fs::File>>,
    /// The same file as `audit`'s, for fsync.
    audit_file: std::fs::File,
    /// Cancelled when the gateway starts shutting down: stop accepting, start no session.
    pub(super) stopping: CancellationToken,
    /// Cancelled once sessions have ended: close the agents' control channels.
    pub(super) closing_agents: CancellationToken,
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
            quotas: config.quotas,
            start_rate: StartRate::new(
                config.quotas.start_session_burst,
                config.quotas.start_sessions_per_minute,
            ),
            config_path: parts.config_path,
            auth: RwLock::new(Arc::new(parts.auth)),
            hub: parts.hub,
            tokens: parts.tokens,
            kms: parts.kms,
            sessions: Sessions::default(),
            agents: Registry::default(),
            replay: ReplayCache::default(),
            audit: Mutex::new(parts.audit),
            audit_file: parts.audit_file,
            stopping: CancellationToken::new(),
            closing_agents: CancellationToken::new(),
        }
    }

    /// The configuration in force now.
    pub(super) fn auth(&self) -> Arc<Auth> {
        self.auth
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Verifies the request's signature against principals and agents for this gateway's
    /// region and the operation's service: who is calling. The signature of a call that mints
    /// a token is accepted once. The API and the KMS endpoint both authenticate here.
    pub(super) fn authenticate(&self, request: &ApiRequest) -> Result<Caller, ApiError> {
        let now = wall_ms() / 1000;
        let signed = self.auth().verify(request, &self.region, now)?;
        self.first_use(&signed, now)?;
        Ok(signed.signer)
    }

    /// Verifies a control-channel upgrade signed by `agent_id`, once; refusals are audited.
    pub(super) fn authenticate_agent(
        &self,
        request: &ApiRequest,
        agent_id: &str,
        peer: SocketAddr,
    ) -> Result<(), ApiError> {
        let now = wall_ms() / 1000;
        let refusal = match self.auth().verify_agent(request, &self.region, now) {
            Ok(signed) if signed.signer == agent_id => match self.first_use(&signed, now) {
                Ok(()) => return Ok(()),
                Err(error) => error.to_string(),
            },
            Ok(signed) => format!(
                "agent {} may not open the control channel of {agent_id}",
                signed.signer
            ),
            Err(why) => why,
        };
        tracing::info!(%agent_id, %peer, reason = %refusal, "control channel refused");
        let mut record = Record::new(EventKind::ApiCall);
        record.action = Some("ssmmessages:OpenControlChannel".into());
        record.source = Some(peer.to_string());
        record.target = Some(agent_id.to_owned());
        record.decision = Some("deny".into());
        record.reason = Some(refusal.clone());
        self.audit(record);
        Err(ApiError::new(403, "AccessDeniedException", refusal))
    }

    /// Refuses a single-use signature seen before, and any when too many are remembered.
    fn first_use<T>(&self, signed: &Signed<T>, now: u64) -> Result<(), ApiError> {
        let Some((signature, request_time)) = signed.once else {
            return Ok(());
        };
        match self.replay.first_use(signature, request_time, now) {
            Ok(()) => Ok(()),
            Err(replay::Refused::Replayed) => Err(ApiError::new(
                400,
                "InvalidSignatureException",
                "this signed request was already served: a request that mints a token or \
                 opens a channel is good once; sign a new one",
            )),
            Err(replay::Refused::Full) => Err(ApiError::new(
                400,
                "ThrottlingException",
                format!(
                    "more than {} token-minting requests within the last {} seconds: retry later",
                    replay::CAPACITY,
                    crate::sigv4::MAX_CLOCK_SKEW_SECONDS
                ),
            )),
        }
    }

    /// Audits a data-channel open the relay refused (bad, expired or reused token, wrong
    /// side, no opening): one record each, like the control channel's refusals.
    pub(super) fn data_channel_refused(
        &self,
        session_id: &str,
        peer: SocketAddr,
        refused: &OpenRefused,
    ) {
        tracing::info!(%session_id, %peer, reason = %refused, "data channel refused");
        let mut record = Record::new(EventKind::ApiCall);
        record.action = Some("ssmmessages:OpenDataChannel".into());
        record.source = Some(peer.to_string());
        record.session_id = Some(session_id.to_owned());
        record.decision = Some("deny".into());
        record.reason = Some(refused.to_string());
        self.audit(record);
    }

    /// Checks that `name`'s policies allow `action` on `resources`, noting the allowing
    /// statement in the call's audit record. The API and the KMS endpoint both authorise here.
    pub(super) fn authorize(
        &self,
        name: &str,
        action: &str,
        resources: &[String],
        call: &mut Call,
    ) -> Result<(), ApiError> {
        match self.auth().authorize(name, action, resources) {
            Ok(statement) => {
                call.record.reason = Some(statement);
                Ok(())
            }
            Err(why) => Err(ApiError::new(
                400,
                "AccessDeniedException",
                format!(
                    "User: arn:aws:iam::{}:user/{name} is not authorized to perform: {action}: {why}",
                    self.account
                ),
            )),
        }
    }

    /// Swaps in the configuration file's principals, policies, agents and documents, cuts off
    /// the agents it removed (or whose secret changed) with their sessions, and ends the live
    /// sessions it no longer allows. A refusal is audited (`policy.reload`, decision deny).
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
                let mut record = Record::new(EventKind::PolicyReload);
                record.decision = Some("deny".into());
                record.reason = Some(error.to_string());
                record.detail = Some(format!(
                    "{} refused; the previous configuration stays in force",
                    path.display()
                ));
                self.audit(record);
                return Err(error);
            }
        };
        let previous = std::mem::replace(
            &mut *self
                .auth
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            config.clone(),
        );
        let mut record = Record::new(EventKind::PolicyReload);
        record.detail = Some(format!("{} reloaded", path.display()));
        self.audit(record);
        let mut revoked = self.revoke_agents(&previous, &config);
        revoked.extend(self.revoke_disallowed(&config));
        tracing::info!(path = %path.display(), revoked = revoked.len(), "configuration reloaded");
        Ok(revoked)
    }

    pub(super) fn recording_path(&self, session_id: &str) -> PathBuf {
        self.state_dir
            .join(super::sessions::recording_name(session_id))
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

    /// Ends every live session (`gateway_shutdown`), waits up to `flush` for the relay to
    /// deliver what it had queued toward both ends (`channel_closed` last), then closes the
    /// agents' control channels (waiting up to `flush` again for their last records).
    pub(super) async fn end_all(&self, flush: Duration) {
        let end_live = || {
            self.sessions
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
                .collect::<Vec<_>>()
        };
        let ended = end_live();
        wait_until(flush, || {
            ended
                .iter()
                .all(|id| self.hub.connected(id) == (false, false))
        })
        .await;
        // A StartSession that was already past its check when shutdown began.
        end_live();
        self.closing_agents.cancel();
        wait_until(flush, || !self.agents.any_online()).await;
    }
}

/// Polls `done` until it holds or `limit` has passed.
async fn wait_until(limit: Duration, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(FLUSH_POLL).await;
    }
}
