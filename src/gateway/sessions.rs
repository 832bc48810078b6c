//! Live sessions: who started what where, how each one ends (exactly once), revocation after a
//! policy change, and sessions left behind: a side gone longer than the resume window, or no
//! traffic for the idle timeout.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::auth::Auth;
use super::service::Service;
use super::{lock, wall_ms};
use crate::audit::{EndReason, EventKind, Record};
use crate::control::{
    ControlMessage, RecordingChunk, RecordingSummary, SessionReport, StreamReport,
};
use crate::document::SessionType;
use crate::net::relay::ChannelStats;
use crate::net::runtime::random_uuid;

/// How often absent sides and idle sessions are checked.
const CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// Ended sessions kept for `DescribeSessions --state History`.
const HISTORY: usize = 1000;
/// Largest recording kept per session; the agent is told nothing, the rest is dropped and
/// the end record says so.
const MAX_RECORDING: u64 = 256 << 20;

/// One running session.
#[derive(Debug)]
struct LiveSession {
    owner: String,
    target: String,
    document: String,
    source: SocketAddr,
    reason: Option<String>,
    started_ms: u64,
    started: Instant,
    /// Every event of the session is logged in this span.
    span: tracing::Span,
    stats: Arc<ChannelStats>,
    /// Since when the client's data channel has been gone (from the start until it opens).
    client_absent_since: Option<Instant>,
    /// Since when the agent's data channel has been gone.
    agent_absent_since: Option<Instant>,
    /// The document's (or the account's) `idleSessionTimeout`.
    idle_timeout: Duration,
    /// Bytes relayed both ways when last checked, and since when that total stood still.
    relayed: u64,
    still_since: Instant,
    recording: Option<std::fs::File>,
    recording_bytes: u64,
    recording_chunks: u64,
    recording_truncated: bool,
    /// KMS-encrypted: its recording is the agent's; plaintext chunks are refused.
    encrypted: bool,
    /// An agent sent plaintext chunks of this encrypted session anyway.
    plaintext_refused: bool,
}

/// What a new session is, as StartSession decided it.
pub(super) struct NewSession<'a> {
    pub(super) id: &'a str,
    pub(super) owner: &'a str,
    pub(super) target: &'a str,
    pub(super) document: &'a str,
    pub(super) session_type: SessionType,
    /// KMS-encrypted: the gateway never stores its recording in plaintext.
    pub(super) encrypted: bool,
    /// Ended after this long without a message either way, whatever the session type.
    pub(super) idle_timeout: Duration,
    pub(super) source: SocketAddr,
    pub(super) reason: Option<String>,
    pub(super) stats: Arc<ChannelStats>,
}

/// What DescribeSessions reports of a session.
#[derive(Debug, Clone)]
pub(super) struct SessionSummary {
    pub(super) id: String,
    pub(super) owner: String,
    pub(super) target: String,
    pub(super) document: String,
    pub(super) reason: Option<String>,
    pub(super) started_ms: u64,
    pub(super) ended_ms: Option<u64>,
    pub(super) status: &'static str,
}

#[derive(Default)]
pub(super) struct Sessions {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    live: HashMap<String, LiveSession>,
    history: VecDeque<SessionSummary>,
}

impl Sessions {
    /// Adds a live session and returns its span, unless its owner already has `max` live
    /// sessions (counted under the same lock, so concurrent starts cannot overshoot).
    pub(super) fn insert(&self, new: NewSession<'_>, max: usize) -> Option<tracing::Span> {
        let mut table = lock(&self.table);
        let owned = table
            .live
            .values()
            .filter(|session| session.owner == new.owner)
            .count();
        if owned >= max {
            return None;
        }
        let span = tracing::info_span!(
            "session",
            session_id = %new.id,
            target = %new.target,
            principal = %new.owner,
            session_type = %new.session_type,
        );
        table.live.insert(
            new.id.to_owned(),
            LiveSession {
                owner: new.owner.to_owned(),
                target: new.target.to_owned(),
                document: new.document.to_owned(),
                source: new.source,
                reason: new.reason,
                started_ms: wall_ms(),
                started: Instant::now(),
                span: span.clone(),
                stats: new.stats,
                client_absent_since: Some(Instant::now()),
                agent_absent_since: Some(Instant::now()),
                idle_timeout: new.idle_timeout,
                relayed: 0,
                still_since: Instant::now(),
                recording: None,
                recording_bytes: 0,
                recording_chunks: 0,
                recording_truncated: false,
                encrypted: new.encrypted,
                plaintext_refused: false,
            },
        );
        Some(span)
    }

    /// The span of a live session.
    pub(super) fn span(&self, id: &str) -> Option<tracing::Span> {
        lock(&self.table)
            .live
            .get(id)
            .map(|session| session.span.clone())
    }

    pub(super) fn live_ids(&self) -> Vec<String> {
        lock(&self.table).live.keys().cloned().collect()
    }

    /// Owner and target of a live session.
    pub(super) fn owner_and_target(&self, id: &str) -> Option<(String, String)> {
        lock(&self.table)
            .live
            .get(id)
            .map(|session| (session.owner.clone(), session.target.clone()))
    }

    /// Owner and target of a live or recently ended session (late reports still count).
    pub(super) fn owner_and_target_any(&self, id: &str) -> Option<(String, String)> {
        let table = lock(&self.table);
        if let Some(session) = table.live.get(id) {
            return Some((session.owner.clone(), session.target.clone()));
        }
        table
            .history
            .iter()
            .rev()
            .find(|summary| summary.id == id)
            .map(|summary| (summary.owner.clone(), summary.target.clone()))
    }

    /// Live sessions first, then ended ones, newest first.
    pub(super) fn describe(&self, active: bool) -> Vec<SessionSummary> {
        let table = lock(&self.table);
        match active {
            true => table
                .live
                .iter()
                .map(|(id, session)| summary(id, session, None, "Connected"))
                .collect(),
            false => table.history.iter().rev().cloned().collect(),
        }
    }
}

/// Where `session_id`'s recording is, relative to the state directory: `recordings/<id>.cast`,
/// with every byte outside `A-Z a-z 0-9 - _ . = + , @` (and a leading dot) written as `%XX`,
/// so that no id can name a path outside the recordings directory, and two ids never share a
/// file. Session ids the gateway makes are unchanged by it.
pub(super) fn recording_name(session_id: &str) -> String {
    format!(
        "recordings/{}",
        crate::audit::cast::recording_file_name(session_id)
    )
}

fn summary(
    id: &str,
    session: &LiveSession,
    ended_ms: Option<u64>,
    status: &'static str,
) -> SessionSummary {
    SessionSummary {
        id: id.to_owned(),
        owner: session.owner.clone(),
        target: session.target.clone(),
        document: session.document.clone(),
        reason: session.reason.clone(),
        started_ms: session.started_ms,
        ended_ms,
        status,
    }
}

impl Service {
    /// Drops a session StartSession refused after inserting it, before its `session.start`
    /// record and before the agent heard of it: there is nothing to audit or tell.
    pub(super) fn discard(&self, id: &str) {
        lock(&self.sessions.table).live.remove(id);
        self.hub.end(id, "");
    }

    /// Ends `id` once: tells both data channels (`channel_closed` with `output`) and the agent's
    /// control channel, and writes `session.end`. Later calls for the same id do nothing.
    pub(super) fn end(
        &self,
        id: &str,
        reason: EndReason,
        exit_code: Option<i32>,
        output: &str,
    ) -> bool {
        let session = {
            let mut table = lock(&self.sessions.table);
            let Some(session) = table.live.remove(id) else {
                return false;
            };
            table
                .history
                .push_back(summary(id, &session, Some(wall_ms()), "Terminated"));
            if table.history.len() > HISTORY {
                table.history.pop_front();
            }
            session
        };
        let mut record = Record::new(EventKind::SessionEnd);
        record.principal = Some(session.owner.clone());
        record.source = Some(session.source.to_string());
        record.target = Some(session.target.clone());
        record.document = Some(session.document.clone());
        record.session_id = Some(id.to_owned());
        record.end_reason = Some(reason);
        record.exit_code = exit_code;
        record.duration_ms = Some(session.started.elapsed().as_millis() as u64);
        record.bytes_client_to_target = Some(session.stats.client_to_agent.load(Ordering::Relaxed));
        record.bytes_target_to_client = Some(session.stats.agent_to_client.load(Ordering::Relaxed));
        if session.recording_chunks > 0 {
            record.recording = Some(recording_name(id));
            record.chunk_bytes = Some(session.recording_bytes);
        }
        let mut detail = output.to_owned();
        if session.recording_truncated {
            detail.push_str(" (recording truncated at the size limit)");
        }
        if session.plaintext_refused {
            detail.push_str(" (plaintext recording of an encrypted session refused)");
        }
        if !detail.is_empty() {
            record.detail = Some(detail);
        }
        tracing::info!(
            parent: &session.span,
            reason = reason.as_str(),
            exit_code,
            duration_ms = record.duration_ms,
            output,
            "session ended"
        );
        // Written before either end hears of it, so the log never lags what users saw.
        self.audit(record);
        self.hub.end(id, output);
        let closed = crate::relay::channel_closed(id, output, random_uuid(), wall_ms());
        self.agents
            .send(&session.target, ControlMessage::ChannelClosed(closed));
        true
    }

    /// The agent finished a session.
    pub(super) fn agent_report(&self, agent_id: &str, report: SessionReport) {
        let owned = self
            .sessions
            .owner_and_target(&report.task_id)
            .is_some_and(|(_, target)| target == agent_id);
        if !owned {
            return; // not this agent's session, or already ended by the gateway
        }
        if let Some(kept) = &report.recording {
            self.agent_recording(agent_id, &report.task_id, kept);
        }
        let reason = report.end_reason;
        self.end(&report.task_id, reason, report.exit_code, &report.output);
    }

    /// The agent kept the recording of an encrypted session on its own disk: its digest joins
    /// the audit chain (before the session's end), its content never reaches the gateway.
    fn agent_recording(&self, agent_id: &str, session_id: &str, kept: &RecordingSummary) {
        let mut record = Record::new(EventKind::RecordingChunk);
        if let Some((owner, _)) = self.sessions.owner_and_target(session_id) {
            record.principal = Some(owner);
        }
        record.target = Some(agent_id.to_owned());
        record.session_id = Some(session_id.to_owned());
        record.recording = Some(format!("agent:{}", kept.path));
        record.chunk_sha256 = Some(kept.sha256.clone());
        record.chunk_bytes = Some(kept.bytes);
        let mut detail = format!(
            "the whole recording, kept on the agent (KMS-encrypted session), {} writes",
            kept.chunks
        );
        if !kept.error.is_empty() {
            detail.push_str(&format!("; incomplete: {}", kept.error));
        }
        record.detail = Some(detail);
        self.audit(record);
    }

    /// The agent sent the next piece of a recording: append it and chain its digest.
    pub(super) fn recording_chunk(&self, agent_id: &str, chunk: RecordingChunk) {
        let digest = hex::encode(Sha256::digest(chunk.lines.as_bytes()));
        let written = {
            let mut table = lock(&self.sessions.table);
            let Some(session) = table.live.get_mut(&chunk.session_id) else {
                return;
            };
            if session.target != agent_id {
                return;
            }
            if session.encrypted {
                if !session.plaintext_refused {
                    tracing::warn!(parent: &session.span, "the agent streams the recording of an encrypted session in plaintext; refused (upgrade the agent: it keeps such recordings itself)");
                }
                session.plaintext_refused = true;
                return;
            }
            if session.recording_bytes + chunk.lines.len() as u64 > MAX_RECORDING {
                if !session.recording_truncated {
                    tracing::warn!(parent: &session.span, limit = MAX_RECORDING, "recording truncated at the size limit");
                }
                session.recording_truncated = true;
                return;
            }
            if session.recording.is_none() {
                let path = self.recording_path(&chunk.session_id);
                match super::config::append_private(&path) {
                    Ok(file) => session.recording = Some(file),
                    Err(error) => {
                        tracing::error!(parent: &session.span, path = %path.display(), %error, "cannot open the recording");
                        return;
                    }
                }
            }
            let Some(file) = session.recording.as_mut() else {
                return;
            };
            if let Err(error) = file.write_all(chunk.lines.as_bytes()) {
                tracing::error!(parent: &session.span, %error, "recording write failed");
                return;
            }
            session.recording_bytes += chunk.lines.len() as u64;
            session.recording_chunks += 1;
            (session.owner.clone(), session.target.clone())
        };
        let mut record = Record::new(EventKind::RecordingChunk);
        record.principal = Some(written.0);
        record.target = Some(written.1);
        record.session_id = Some(chunk.session_id.clone());
        record.recording = Some(format!("recordings/{}.cast", chunk.session_id));
        record.chunk_sha256 = Some(digest);
        record.chunk_bytes = Some(chunk.lines.len() as u64);
        record.stream_id = Some(chunk.index);
        self.audit(record);
    }

    /// The agent opened or closed a forwarded TCP stream.
    pub(super) fn stream_report(&self, agent_id: &str, report: StreamReport) {
        let Some((owner, target)) = self.sessions.owner_and_target_any(&report.session_id) else {
            return;
        };
        if target != agent_id {
            return;
        }
        let kind = match report.closed {
            false => EventKind::StreamOpen,
            true => EventKind::StreamClose,
        };
        let mut record = Record::new(kind);
        record.principal = Some(owner);
        record.target = Some(target);
        record.session_id = Some(report.session_id);
        record.stream_id = Some(report.stream_id);
        record.destination = Some(report.destination);
        if report.closed {
            record.bytes_client_to_target = Some(report.bytes_to_destination);
            record.bytes_target_to_client = Some(report.bytes_from_destination);
            record.duration_ms = Some(report.duration_ms);
        }
        if !report.detail.is_empty() {
            record.detail = Some(report.detail);
        }
        self.audit(record);
    }

    /// Cuts off every agent `previous` knew that `current` does not know by the same secret:
    /// its live sessions end (`revoked`, which also revokes their data-channel tokens), then its
    /// control channel closes, so it is no longer online and takes no new session. Returns
    /// the sessions ended.
    pub(super) fn revoke_agents(&self, previous: &Auth, current: &Auth) -> Vec<String> {
        let mut revoked = Vec::new();
        for (agent_id, _) in self.agents.all() {
            let why = match (
                previous.agent_secret(&agent_id),
                current.agent_secret(&agent_id),
            ) {
                (_, None) => "was removed from the configuration",
                (Some(old), Some(new)) if old != new => "has a new secret",
                _ => continue,
            };
            let output = format!("Access revoked: agent {agent_id} {why}");
            let live: Vec<String> = lock(&self.sessions.table)
                .live
                .iter()
                .filter(|(_, session)| session.target == agent_id)
                .map(|(id, _)| id.clone())
                .collect();
            for id in live {
                if self.end(&id, EndReason::Revoked, None, &output) {
                    revoked.push(id);
                }
            }
            if self.agents.disconnect(&agent_id) {
                tracing::info!(%agent_id, reason = why, "agent's control channel closed");
            }
        }
        revoked
    }

    /// Ends every live session that `auth` no longer allows its owner to start.
    pub(super) fn revoke_disallowed(&self, auth: &Auth) -> Vec<String> {
        let live: Vec<(String, String, String, String)> = {
            let table = lock(&self.sessions.table);
            table
                .live
                .iter()
                .map(|(id, session)| {
                    (
                        id.clone(),
                        session.owner.clone(),
                        session.target.clone(),
                        session.document.clone(),
                    )
                })
                .collect()
        };
        let mut revoked = Vec::new();
        for (id, owner, target, document) in live {
            let decision = auth.may_start(&self.region, &self.account, &owner, &target, &document);
            if let Err(why) = decision {
                if let Some(span) = self.sessions.span(&id) {
                    tracing::info!(parent: &span, reason = %why, "access revoked");
                }
                let output = format!("Access revoked: {why}");
                if self.end(&id, EndReason::Revoked, None, &output) {
                    revoked.push(id);
                }
            }
        }
        revoked
    }

    /// Ends sessions left behind: a side whose data channel has been gone longer than
    /// [`Limits::resume_window_secs`](super::Limits::resume_window_secs), or no message
    /// relayed either way for the session's idle timeout (for every session type: the
    /// agent's own shell timeout counts client input only).
    pub(super) async fn watch_left_behind(self: Arc<Self>) {
        let window = Duration::from_secs(self.limits.resume_window_secs.max(1));
        loop {
            tokio::time::sleep(CHECK_INTERVAL).await;
            for (id, reason, why) in self.left_behind(Instant::now(), window) {
                self.end(&id, reason, None, &why);
            }
        }
    }

    fn left_behind(&self, now: Instant, window: Duration) -> Vec<(String, EndReason, String)> {
        let mut table = lock(&self.sessions.table);
        let mut over = Vec::new();
        for (id, session) in table.live.iter_mut() {
            let (client, agent) = self.hub.connected(id);
            let gone_for = |absent_since: &mut Option<Instant>, connected: bool| {
                match connected {
                    true => *absent_since = None,
                    false => _ = absent_since.get_or_insert(now),
                }
                absent_since.map(|since| now.duration_since(since))
            };
            let client_gone = gone_for(&mut session.client_absent_since, client);
            let agent_gone = gone_for(&mut session.agent_absent_since, agent);
            let relayed = session.stats.client_to_agent.load(Ordering::Relaxed)
                + session.stats.agent_to_client.load(Ordering::Relaxed);
            if relayed != session.relayed {
                session.relayed = relayed;
                session.still_since = now;
            }
            let window_secs = window.as_secs();
            let ended = if agent_gone.is_some_and(|gone| gone >= window) {
                Some((
                    EndReason::AgentLost,
                    format!(
                        "the agent did not reconnect within the resume window ({window_secs} s)"
                    ),
                ))
            } else if client_gone.is_some_and(|gone| gone >= window) {
                Some((
                    EndReason::NetworkLost,
                    format!(
                        "the client did not reconnect within the resume window ({window_secs} s)"
                    ),
                ))
            } else if now.duration_since(session.still_since) >= session.idle_timeout {
                Some((
                    EndReason::IdleTimeout,
                    format!(
                        "no traffic for the idle timeout ({} s)",
                        session.idle_timeout.as_secs()
                    ),
                ))
            } else {
                None
            };
            if let Some((reason, why)) = ended {
                over.push((id.clone(), reason, why));
            }
        }
        over
    }
}

#[cfg(test)]
mod tests {
    use super::recording_name;

    #[test]
    fn recording_names_stay_in_the_recordings_directory() {
        assert_eq!(recording_name("dev-0a1b"), "recordings/dev-0a1b.cast");
        assert_eq!(
            recording_name("ops/alice-1"),
            "recordings/ops%2Falice-1.cast"
        );
        assert_eq!(
            recording_name("../../etc/x"),
            "recordings/%2E.%2F..%2Fetc%2Fx.cast"
        );
        assert_eq!(recording_name("a%2Fb"), "recordings/a%252Fb.cast");
        for id in ["..", "/", "a/../../b", "\\x", ".hidden"] {
            let name = recording_name(id);
            let rest = name.strip_prefix("recordings/").unwrap();
            assert!(
                !rest.contains('/') && !rest.starts_with('.'),
                "{id} -> {name}"
            );
        }
    }
}
