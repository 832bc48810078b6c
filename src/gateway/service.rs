//! The gateway's state and the operations on it, shared by every connection: one [`Service`]
//! per running gateway. The API, KMS, agent and session operations are its methods, in the
//! files named after them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::admission::{Admission, RefusalAudit, Source};
use super::agents::Registry;
use super::auth::{ApiError, ApiRequest, Auth, Call, Caller, Signed};
use super::config::{AuditFailure, ConfigError, GatewayConfig, Limits, Quotas};
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
    audit: Mutex<AuditLog>,
    /// The same file as `audit`'s, for fsync.
    audit_file: std::fs::File,
    /// Whether the last audit write or fsync failed (see [`AuditFailure`]).
    audit_failed: AtomicBool,
    audit_failure: AuditFailure,
    /// What unauthenticated peers may cost.
    pub(super) admission: Arc<Admission>,
    refusals: RefusalAudit,
    /// Cancelled when the gateway starts shutting down: stop accepting, start no session.
    pub(super) stopping: CancellationToken,
    /// Cancelled once sessions have ended: close the agents' control channels.
    pub(super) closing_agents: CancellationToken,
}

/// The audit chain and how many records could not be appended since it last failed.
struct AuditLog {
    writer: ChainWriter<std::fs::File>,
    lost: u64,
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
            audit: Mutex::new(AuditLog {
                writer: parts.audit,
                lost: 0,
            }),
            audit_file: parts.audit_file,
            audit_failed: AtomicBool::new(false),
            audit_failure: config.audit_failure,
            admission: Arc::new(Admission::new(config.limits)),
            refusals: RefusalAudit::new(&config.limits),
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
    /// a token is refused here if it was served before; the call [`Service::claim`]s it once
    /// it is allowed. The API and the KMS endpoint both authenticate here.
    pub(super) fn authenticate(&self, request: &ApiRequest) -> Result<Signed<Caller>, ApiError> {
        let now = wall_ms() / 1000;
        let signed = self.auth().verify(request, &self.region, now)?;
        if let Some(once) = &signed.once {
            self.replay
                .check(&once.access_key_id, &once.signature, now)
                .map_err(replay_refusal)?;
        }
        Ok(signed)
    }

    /// Marks a single-use signature used, once its call passed every check and just before it
    /// mints a token or starts a session: a refused call takes no room in the replay cache.
    pub(super) fn claim<T>(&self, signed: &Signed<T>) -> Result<(), ApiError> {
        let Some(once) = &signed.once else {
            return Ok(());
        };
        self.replay
            .claim(
                &once.access_key_id,
                once.signature,
                once.request_time,
                wall_ms() / 1000,
            )
            .map_err(replay_refusal)
    }

    /// Verifies a control-channel upgrade signed by `agent_id`, once; refusals are audited.
    /// Returns the digest of the secret it verified with, for [`Service::serve_agent`] to
    /// register the agent only if the configuration still holds that secret.
    pub(super) fn authenticate_agent(
        &self,
        request: &ApiRequest,
        agent_id: &str,
        peer: SocketAddr,
    ) -> Result<[u8; 32], ApiError> {
        let now = wall_ms() / 1000;
        let auth = self.auth();
        // Refusals of a signature that did not verify, or was replayed (which proves nothing
        // about the sender), are audited rate-limited; an agent that signed for another's
        // channel, one by one.
        // The audit record keeps the verifier's words; the agent is told what to fix (see
        // `agent_refusal`), with the error's type.
        let (refusal, authenticated, told) = match auth.verify_agent(request, &self.region, now) {
            Ok(signed) if signed.signer.id == agent_id => match self.claim(&signed) {
                Ok(()) => return Ok(signed.signer.digest),
                Err(error) => {
                    let told = ApiError::new(403, error.code, error.message.clone());
                    (error.to_string(), false, told)
                }
            },
            Ok(signed) => {
                let why = format!(
                    "agent {} may not open the control channel of {agent_id}",
                    signed.signer.id
                );
                (
                    why.clone(),
                    true,
                    ApiError::new(403, "AccessDeniedException", why),
                )
            }
            Err(error) => (
                format!("{}: {error}", error.aws_code()),
                false,
                super::auth::agent_refusal(&error),
            ),
        };
        self.control_channel_refused(agent_id, peer, &refusal, authenticated);
        Err(told)
    }

    /// Logs and audits a refused control channel: one by one when the agent proved who it is,
    /// rate-limited otherwise.
    pub(super) fn control_channel_refused(
        &self,
        agent_id: &str,
        peer: SocketAddr,
        refusal: &str,
        authenticated: bool,
    ) {
        match authenticated {
            true => tracing::info!(%agent_id, %peer, reason = %refusal, "control channel refused"),
            false => {
                tracing::debug!(%agent_id, %peer, reason = %refusal, "control channel refused")
            }
        }
        let mut record = Record::new(EventKind::ApiCall);
        record.action = Some("ssmmessages:OpenControlChannel".into());
        record.source = Some(peer.to_string());
        record.target = Some(agent_id.to_owned());
        record.decision = Some("deny".into());
        record.reason = Some(refusal.to_owned());
        match authenticated {
            true => self.audit(record),
            false => self.audit_unauthenticated(record, peer),
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
        let mut record = Record::new(EventKind::ApiCall);
        record.action = Some("ssmmessages:OpenDataChannel".into());
        record.source = Some(peer.to_string());
        record.session_id = Some(session_id.to_owned());
        record.decision = Some("deny".into());
        record.reason = Some(refused.to_string());
        // Without a token the gateway issued, nothing is proven: audited rate-limited.
        match refused {
            OpenRefused::NoOpening | OpenRefused::BadOpening | OpenRefused::UnknownToken => {
                tracing::debug!(%session_id, %peer, reason = %refused, "data channel refused");
                self.audit_unauthenticated(record, peer)
            }
            _ => {
                tracing::info!(%session_id, %peer, reason = %refused, "data channel refused");
                self.audit(record)
            }
        }
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
                let reason = error.redacted();
                tracing::warn!(path = %path.display(), error = %reason, "reload refused, keeping the old configuration");
                let mut record = Record::new(EventKind::PolicyReload);
                record.decision = Some("deny".into());
                record.reason = Some(reason);
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

    /// Appends to the audit chain. A failed write puts the gateway in the audit-failed state
    /// (see [`AuditFailure`]), told to the operator once; the next write that succeeds ends
    /// it, after a `gateway:AuditLogRecovered` record that counts the records lost (the
    /// chain itself stays whole: nothing was appended in between).
    pub(super) fn audit(&self, record: Record) {
        self.try_audit(record);
    }

    /// [`Service::audit`], saying whether the record was written.
    pub(super) fn try_audit(&self, record: Record) -> bool {
        let event = record.event;
        let mut log = lock(&self.audit);
        let result = match log.lost {
            0 => log.writer.append(record, wall_ms()).map(drop),
            _ => Self::append_gap(&mut log)
                .and_then(|()| log.writer.append(record, wall_ms()).map(drop)),
        };
        match result {
            Ok(()) => {
                drop(log);
                self.audit_recovered();
                true
            }
            Err(error) => {
                log.lost += 1;
                drop(log);
                self.audit_broke(event.as_str(), &error);
                false
            }
        }
    }

    /// Marks where records are missing from the chain: how many could not be written.
    fn append_gap(log: &mut AuditLog) -> Result<(), crate::audit::AppendError> {
        let mut gap = Record::new(EventKind::ApiCall);
        gap.action = Some("gateway:AuditLogRecovered".into());
        gap.reason = Some(format!(
            "{} records could not be written before this one: the audit log was failing",
            log.lost
        ));
        log.writer.append(gap, wall_ms())?;
        log.lost = 0;
        Ok(())
    }

    fn audit_broke(&self, what: &str, error: &dyn std::fmt::Display) {
        if !self.audit_failed.swap(true, Ordering::SeqCst) {
            let consequence = match self.audit_failure {
                AuditFailure::Refuse => {
                    "refusing new sessions, tokens and key use until it can be written"
                }
                _ => "serving on without an audit trail (audit_failure = continue)",
            };
            tracing::error!(
                path = %self.state_dir.join("audit.jsonl").display(),
                what,
                %error,
                "audit log write failed: {consequence}; free space or fix the file system"
            );
        }
    }

    fn audit_recovered(&self) {
        if self.audit_failed.swap(false, Ordering::SeqCst) {
            tracing::warn!(
                "audit log writable again; a gateway:AuditLogRecovered record counts what is missing"
            );
        }
    }

    /// With [`AuditFailure::Refuse`], refuses a call that would start or resume a session,
    /// mint a token or use a key while the audit log cannot be written. The log is retried
    /// first (the record counting what is missing, then an fsync), so that the first call
    /// after the disk recovers is served.
    pub(super) fn refuse_if_unaudited(&self) -> Result<(), ApiError> {
        if self.audit_failure == AuditFailure::Continue || !self.audit_failed.load(Ordering::SeqCst)
        {
            return Ok(());
        }
        let mut log = lock(&self.audit);
        let probe = Self::append_gap(&mut log);
        drop(log);
        match probe {
            Ok(()) => self.audit_recovered(),
            Err(error) => self.audit_broke("probe", &error),
        }
        self.sync_audit();
        match self.audit_failed.load(Ordering::SeqCst) {
            false => Ok(()),
            true => Err(Self::unaudited()),
        }
    }

    /// Whether a call that needs the audit log must fail when its record cannot be written
    /// ([`AuditFailure::Refuse`]).
    pub(super) fn audit_fails_closed(&self) -> bool {
        self.audit_failure == AuditFailure::Refuse
    }

    /// The refusal of a call that needs the audit log while it cannot be written.
    pub(super) fn unaudited() -> ApiError {
        ApiError::new(
            503,
            "ServiceUnavailable",
            "the gateway cannot write its audit log, so it starts no sessions, mints no tokens \
             and uses no keys; retry once the operator has freed space or fixed the log",
        )
    }

    /// Audits the refusal of a request whose signature did not verify (or that had none):
    /// rate-limited per source (see [`RefusalAudit`]), with summaries of what was not
    /// recorded one by one.
    pub(super) fn audit_unauthenticated(&self, record: Record, peer: SocketAddr) {
        let (write, summary) = self.refusals.refusal(Source::of(peer.ip()));
        if let Some(summary) = summary {
            self.audit_summary(summary);
        }
        if write {
            self.audit(record);
        }
    }

    fn audit_summary(&self, summary: super::admission::Suppressed) {
        let mut record = Record::new(EventKind::ApiCall);
        record.source = summary.source.map(|source| source.to_string());
        record.decision = Some("deny".into());
        let from = summary.source.map_or_else(
            || "sources over the total".to_owned(),
            |source| source.to_string(),
        );
        record.reason = Some(format!(
            "{} more refusals of unauthenticated requests from {from} in the last {} s (not recorded one by one)",
            summary.count, summary.secs
        ));
        self.audit(record);
    }

    /// Writes the summaries of refusal intervals that ended; `all` at shutdown.
    pub(super) fn flush_refusal_summaries(&self, all: bool) {
        for summary in self.refusals.sweep(all) {
            self.audit_summary(summary);
        }
    }

    /// Writes refusal summaries every interval, so that a flood that stops is counted too.
    pub(super) async fn summarise_refusals(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(self.refusals.interval());
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.flush_refusal_summaries(false);
        }
    }

    /// Pushes the audit log to stable storage; a failure counts as a failed write.
    pub(super) fn sync_audit(&self) {
        let _log = lock(&self.audit);
        if let Err(error) = self.audit_file.sync_all() {
            drop(_log);
            self.audit_broke("fsync", &error);
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

/// What a caller is told of a single-use signature the replay cache refused.
fn replay_refusal(refused: replay::Refused) -> ApiError {
    let window = crate::sigv4::MAX_CLOCK_SKEW_SECONDS;
    match refused {
        replay::Refused::Replayed => ApiError::new(
            400,
            "InvalidSignatureException",
            "this signed request was already served: a request that mints a token or \
             opens a channel is good once; sign a new one",
        ),
        replay::Refused::KeyShare => ApiError::new(
            400,
            "ThrottlingException",
            format!(
                "this access key made more than {} token-minting requests within the last \
                 {window} seconds: retry later",
                replay::KEY_SHARE
            ),
        ),
        replay::Refused::Full => ApiError::new(
            400,
            "ThrottlingException",
            format!(
                "more than {} token-minting requests within the last {window} seconds: retry \
                 later",
                replay::CAPACITY
            ),
        ),
    }
}

/// Polls `done` until it holds or `limit` has passed.
async fn wait_until(limit: Duration, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(FLUSH_POLL).await;
    }
}
