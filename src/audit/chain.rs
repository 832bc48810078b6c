//! The hash-chained JSON-lines log: records, the writer that chains them, and the verifier.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EventKind {
    /// An API call, allowed or denied.
    #[serde(rename = "api.call")]
    ApiCall,
    /// A session started.
    #[serde(rename = "session.start")]
    SessionStart,
    /// A session ended.
    #[serde(rename = "session.end")]
    SessionEnd,
    /// A forwarded TCP stream opened.
    #[serde(rename = "stream.open")]
    StreamOpen,
    /// A forwarded TCP stream closed.
    #[serde(rename = "stream.close")]
    StreamClose,
    /// A piece of a session recording was stored.
    #[serde(rename = "recording.chunk")]
    RecordingChunk,
    /// The policies were reloaded.
    #[serde(rename = "policy.reload")]
    PolicyReload,
    /// An agent's control channel opened.
    #[serde(rename = "agent.connect")]
    AgentConnect,
    /// An agent's control channel closed.
    #[serde(rename = "agent.disconnect")]
    AgentDisconnect,
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_value(self).unwrap_or_default();
        f.write_str(text.as_str().unwrap_or("?"))
    }
}

/// Why a session ended (a closed set, always filled in `session.end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EndReason {
    /// The client ended it.
    ClientExit,
    /// The shell or command exited.
    ProcessExit,
    /// No input for the idle timeout.
    IdleTimeout,
    /// The maximum duration passed.
    MaxDuration,
    /// A policy change revoked it.
    Revoked,
    /// `TerminateSession`.
    Terminated,
    /// Both ends disconnected and did not come back.
    NetworkLost,
    /// The agent stopped taking sessions.
    AgentLost,
    /// The gateway shut down.
    GatewayShutdown,
    /// The session never got going (request, spawn or handshake failure).
    HandshakeFailed,
}

/// One audit event, before it is chained. Tokens, keys and payload bytes have no field here,
/// so they cannot end up in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// What happened.
    pub event: EventKind,
    /// Who (principal name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// From where (client address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The API action, e.g. `ssm:StartSession`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The target (or KMS key ARN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The session document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    /// The session id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// `allow` or `deny`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// What decided: the statement, or the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How a session ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    /// Duration in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Bytes from the client toward the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_client_to_target: Option<u64>,
    /// Bytes from the target toward the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_target_to_client: Option<u64>,
    /// The command's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// `host:port` of a forwarded stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// smux stream id, or the recording chunk index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<u64>,
    /// The recording file, relative to the state directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
    /// SHA-256 (hex) of a recording chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_sha256: Option<String>,
    /// Bytes of a recording chunk (or of the whole recording in `session.end`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_bytes: Option<u64>,
    /// Anything else worth reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Record {
    /// A record of `event` with every other field empty.
    pub fn new(event: EventKind) -> Record {
        Record {
            event,
            principal: None,
            source: None,
            action: None,
            target: None,
            document: None,
            session_id: None,
            decision: None,
            reason: None,
            end_reason: None,
            duration_ms: None,
            bytes_client_to_target: None,
            bytes_target_to_client: None,
            exit_code: None,
            destination: None,
            stream_id: None,
            recording: None,
            chunk_sha256: None,
            chunk_bytes: None,
            detail: None,
        }
    }
}

/// The chain fields around a record, in the order they are hashed.
#[derive(Serialize)]
struct Unsealed<'a> {
    seq: u64,
    time: &'a str,
    #[serde(flatten)]
    record: &'a Record,
    prev: &'a str,
}

/// A stored line.
#[derive(Serialize, Deserialize)]
struct Sealed {
    seq: u64,
    time: String,
    #[serde(flatten)]
    record: Record,
    prev: String,
    hash: String,
}

/// The last record of a log: what the next one chains from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Its sequence number.
    pub seq: u64,
    /// Its hash (hex).
    pub hash: String,
}

/// What the first record chains from.
pub const GENESIS: &str = "ssm-session audit log v1";

fn genesis_hash() -> String {
    hex::encode(Sha256::digest(GENESIS.as_bytes()))
}

fn seal_hash(prev: &str, canonical: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(prev.as_bytes());
    hash.update(canonical);
    hex::encode(hash.finalize())
}

/// Formats Unix milliseconds as UTC RFC 3339 with milliseconds, e.g.
/// `2026-11-28T15:30:40.123Z`.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let seconds = unix_ms / 1000;
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        unix_ms % 1000
    )
}

/// Appends chained records to a log, one line each, flushed.
#[derive(Debug)]
pub struct ChainWriter<W: Write> {
    writer: W,
    next_seq: u64,
    prev: String,
}

impl<W: Write> ChainWriter<W> {
    /// A writer continuing after `head` (from [`Summary::head`] of the existing log), or
    /// starting a new chain.
    pub fn new(writer: W, head: Option<Head>) -> Self {
        let (next_seq, prev) = match head {
            Some(head) => (head.seq + 1, head.hash),
            None => (0, genesis_hash()),
        };
        ChainWriter {
            writer,
            next_seq,
            prev,
        }
    }

    /// Chains `record` at `unix_ms` and writes it; its hash.
    pub fn append(&mut self, record: Record, unix_ms: u64) -> io::Result<String> {
        let time = rfc3339_ms(unix_ms);
        let unsealed = Unsealed {
            seq: self.next_seq,
            time: &time,
            record: &record,
            prev: &self.prev,
        };
        let canonical = serde_json::to_vec(&unsealed)?;
        let hash = seal_hash(&self.prev, &canonical);
        let sealed = Sealed {
            seq: self.next_seq,
            time,
            record,
            prev: std::mem::take(&mut self.prev),
            hash: hash.clone(),
        };
        let mut line = serde_json::to_vec(&sealed)?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        self.writer.flush()?;
        self.next_seq += 1;
        self.prev = hash.clone();
        Ok(hash)
    }
}

/// Where and how a log breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit log line {line}: {problem}")]
pub struct VerifyError {
    /// 1-based line number of the first bad record.
    pub line: usize,
    /// What is wrong there.
    pub problem: String,
}

/// `line` without its trailing `,"hash":"…"` member, as it was hashed.
fn unsealed_bytes(line: &[u8]) -> Option<Vec<u8>> {
    const MEMBER: &[u8] = b",\"hash\":\"";
    let body = line.strip_suffix(b"\"}")?;
    let at = body.len().checked_sub(64 + MEMBER.len())?;
    if &body[at..at + MEMBER.len()] != MEMBER {
        return None;
    }
    let mut canonical = body[..at].to_vec();
    canonical.push(b'}');
    Some(canonical)
}

/// What a valid log holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records.
    pub records: u64,
    /// Records per event type.
    pub by_event: BTreeMap<String, u64>,
    /// `session.end` records per end reason.
    pub end_reasons: BTreeMap<String, u64>,
    /// API calls denied.
    pub denied_calls: u64,
    /// Bytes both ways over all ended sessions.
    pub session_bytes: u64,
    head: Option<Head>,
}

impl Summary {
    /// The last record, to continue the chain from.
    pub fn head(&self) -> Option<Head> {
        self.head.clone()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} records, chain intact", self.records)?;
        for (event, count) in &self.by_event {
            writeln!(f, "  {event}: {count}")?;
        }
        if !self.end_reasons.is_empty() {
            let reasons: Vec<String> = self
                .end_reasons
                .iter()
                .map(|(reason, count)| format!("{reason} {count}"))
                .collect();
            writeln!(f, "  sessions ended: {}", reasons.join(", "))?;
        }
        writeln!(f, "  denied calls: {}", self.denied_calls)?;
        writeln!(f, "  session bytes: {}", self.session_bytes)?;
        match &self.head {
            Some(head) => write!(f, "  head: #{} {}", head.seq, head.hash),
            None => write!(f, "  head: (empty log)"),
        }
    }
}

/// Replays a log and reports the first break: an unparseable or truncated line, a sequence
/// gap, a `prev` that is not the previous hash (deleted or reordered records) or a hash that
/// does not match the record (an edited record).
pub fn verify<R: BufRead>(reader: R) -> Result<Summary, VerifyError> {
    let mut summary = Summary::default();
    let mut prev = genesis_hash();
    let mut expected_seq = 0u64;
    let mut lines = reader.split(b'\n').enumerate().peekable();
    while let Some((index, line)) = lines.next() {
        let number = index + 1;
        let fail = |problem: String| VerifyError {
            line: number,
            problem,
        };
        let line = line.map_err(|error| fail(format!("unreadable: {error}")))?;
        if line.is_empty() && lines.peek().is_none() {
            break;
        }
        let sealed: Sealed = serde_json::from_slice(&line)
            .map_err(|error| fail(format!("not a record ({error}); truncated or edited")))?;
        if sealed.seq != expected_seq {
            return Err(fail(format!(
                "sequence {} where {expected_seq} was due: records were deleted or reordered",
                sealed.seq
            )));
        }
        if sealed.prev != prev {
            return Err(fail(
                "prev is not the previous record's hash: records were deleted or reordered".into(),
            ));
        }
        // The hash covers the stored bytes themselves: the line minus its `hash` member.
        let canonical = unsealed_bytes(&line)
            .ok_or_else(|| fail("the line does not end with its hash member".into()))?;
        let hash = seal_hash(&prev, &canonical);
        if hash != sealed.hash {
            return Err(fail("the hash does not match the record: it was edited".into()));
        }
        summary.records += 1;
        *summary
            .by_event
            .entry(sealed.record.event.to_string())
            .or_default() += 1;
        if sealed.record.event == EventKind::ApiCall
            && sealed.record.decision.as_deref() == Some("deny")
        {
            summary.denied_calls += 1;
        }
        if sealed.record.event == EventKind::SessionEnd {
            if let Some(reason) = sealed.record.end_reason {
                let name = serde_json::to_value(reason).unwrap_or_default();
                *summary
                    .end_reasons
                    .entry(name.as_str().unwrap_or("?").to_owned())
                    .or_default() += 1;
            }
            summary.session_bytes += sealed.record.bytes_client_to_target.unwrap_or(0)
                + sealed.record.bytes_target_to_client.unwrap_or(0);
        }
        summary.head = Some(Head {
            seq: sealed.seq,
            hash: hash.clone(),
        });
        prev = hash;
        expected_seq += 1;
    }
    Ok(summary)
}
