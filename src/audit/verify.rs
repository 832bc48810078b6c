//! Replaying a log: the first break in the chain, or a summary of what it holds.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, Read};

use super::record::{EndReason, Entry, EventKind, Head, MAX_LINE_BYTES, Record, genesis_hash};

/// The first place a log fails to verify.
#[derive(Debug, thiserror::Error)]
#[error("audit log line {line}: {problem}; the records before it verify")]
#[non_exhaustive]
pub struct VerifyError {
    /// 1-based line number of the first bad line.
    pub line: usize,
    /// What is wrong there.
    pub problem: Problem,
}

/// What is wrong with a line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// Reading failed.
    #[error("it cannot be read ({0}): check the file and its permissions")]
    Unreadable(io::Error),
    /// The line is longer than any record the writer produces.
    #[error("it is longer than {MAX_LINE_BYTES} bytes, so not a record the writer produced")]
    TooLong,
    /// The last line has no newline: cut off mid-record.
    #[error("the last line is incomplete: the writer stopped mid-record or the file was cut")]
    Truncated,
    /// The line is not a JSON audit record.
    #[error("it is not an audit record ({0}): the line was edited or damaged")]
    Unparseable(serde_json::Error),
    /// The line parses, but is not the exact bytes the writer produces for it (whitespace,
    /// field order, escapes or an unknown field).
    #[error("it is not byte-for-byte what the writer produces: the line was edited")]
    NotCanonical,
    /// `seq` is not the next number.
    #[error(
        "sequence number {found} where {expected} was due: records were deleted, duplicated \
         or reordered"
    )]
    SeqMismatch {
        /// The number this line should carry.
        expected: u64,
        /// The number it carries.
        found: u64,
    },
    /// `prev` is not the previous line's hash.
    #[error("`prev` is not the previous record's hash: records were removed, reordered or added")]
    PrevMismatch,
    /// `hash` does not match the line's content.
    #[error("`hash` does not match the record: it was edited after it was written")]
    HashMismatch,
}

/// What a log that verifies holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// Records in the log.
    pub records: u64,
    /// Records per event type.
    pub by_event: BTreeMap<EventKind, u64>,
    /// `session.end` records per end reason.
    pub end_reasons: BTreeMap<EndReason, u64>,
    /// `api.call` records with decision `deny`.
    pub denied_calls: u64,
    /// Bytes from clients to targets, over ended sessions.
    pub bytes_client_to_target: u64,
    /// Bytes from targets to clients, over ended sessions.
    pub bytes_target_to_client: u64,
    head: Option<Head>,
}

impl Summary {
    /// The last record, to continue the chain from (`None` for an empty log). Store it apart
    /// from the log as well: it is what shows records cut off the end.
    pub fn head(&self) -> Option<Head> {
        self.head.clone()
    }

    /// Records of `event`.
    pub fn count(&self, event: EventKind) -> u64 {
        self.by_event.get(&event).copied().unwrap_or(0)
    }

    fn add(&mut self, record: &Record) {
        self.records += 1;
        *self.by_event.entry(record.event).or_default() += 1;
        match record.event {
            EventKind::ApiCall if record.decision.as_deref() == Some("deny") => {
                self.denied_calls += 1;
            }
            EventKind::SessionEnd => {
                if let Some(reason) = record.end_reason {
                    *self.end_reasons.entry(reason).or_default() += 1;
                }
                // Saturating: a hostile log must not overflow the totals.
                self.bytes_client_to_target = self
                    .bytes_client_to_target
                    .saturating_add(record.bytes_client_to_target.unwrap_or(0));
                self.bytes_target_to_client = self
                    .bytes_target_to_client
                    .saturating_add(record.bytes_target_to_client.unwrap_or(0));
            }
            _ => {}
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(head) = &self.head else {
            return write!(f, "empty audit log: no records");
        };
        writeln!(
            f,
            "{} records, chain intact; head #{} {}",
            self.records, head.seq, head.hash
        )?;
        write!(
            f,
            "sessions: {} started, {} ended",
            self.count(EventKind::SessionStart),
            self.count(EventKind::SessionEnd)
        )?;
        if !self.end_reasons.is_empty() {
            let reasons: Vec<String> = self
                .end_reasons
                .iter()
                .map(|(reason, count)| format!("{reason} {count}"))
                .collect();
            write!(f, " ({})", reasons.join(", "))?;
        }
        writeln!(f)?;
        writeln!(f, "denied API calls: {}", self.denied_calls)?;
        writeln!(
            f,
            "session bytes: {} client to target, {} target to client",
            self.bytes_client_to_target, self.bytes_target_to_client
        )?;
        let events: Vec<String> = self
            .by_event
            .iter()
            .map(|(event, count)| format!("{event} {count}"))
            .collect();
        write!(f, "events: {}", events.join(", "))
    }
}

/// Replays a log and reports the first line that breaks it, or a [`Summary`].
///
/// Every line must be exactly what [`ChainWriter`](super::ChainWriter) wrote, newline
/// included: an edited field fails its hash, an edit that keeps the values (spacing, key
/// order, escapes) fails the byte comparison, a deleted, duplicated or moved record fails the
/// sequence or `prev` check, and a cut-off last line is reported as truncated. Reads hostile
/// input without panicking, at most [`MAX_LINE_BYTES`] per line.
///
/// # Examples
///
/// ```
/// use ssm_session::audit::{self, ChainWriter, EventKind, Problem, Record};
///
/// let mut log = Vec::new();
/// let mut writer = ChainWriter::new(&mut log, None);
/// for at in 0..3 {
///     writer.append(Record::new(EventKind::AgentConnect), at)?;
/// }
/// let summary = audit::verify(&log[..])?;
/// assert_eq!(summary.count(EventKind::AgentConnect), 3);
///
/// // Drop the second line: the third no longer follows the first.
/// let text = String::from_utf8(log)?;
/// let lines: Vec<&str> = text.split_inclusive('\n').collect();
/// let shortened = [lines[0], lines[2]].concat();
/// let error = audit::verify(shortened.as_bytes()).unwrap_err();
/// assert_eq!(error.line, 2);
/// assert!(matches!(error.problem, Problem::SeqMismatch { expected: 1, found: 2 }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn verify<R: BufRead>(mut reader: R) -> Result<Summary, VerifyError> {
    let mut summary = Summary::default();
    let mut prev = genesis_hash();
    let mut expected_seq = 0u64;
    let mut line = Vec::new();
    let mut number = 0usize;
    loop {
        number += 1;
        let fail = |problem| VerifyError {
            line: number,
            problem,
        };
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|error| fail(Problem::Unreadable(error)))?;
        if read == 0 {
            return Ok(summary);
        }
        let Some(text) = line.strip_suffix(b"\n") else {
            return Err(fail(if line.len() > MAX_LINE_BYTES {
                Problem::TooLong
            } else {
                Problem::Truncated
            }));
        };
        let entry: Entry =
            serde_json::from_slice(text).map_err(|error| fail(Problem::Unparseable(error)))?;
        // Parsing forgives spacing, order and escapes; the chain must not.
        if serde_json::to_vec(&entry).ok().as_deref() != Some(text) {
            return Err(fail(Problem::NotCanonical));
        }
        if entry.seq != expected_seq {
            return Err(fail(Problem::SeqMismatch {
                expected: expected_seq,
                found: entry.seq,
            }));
        }
        if entry.prev != prev {
            return Err(fail(Problem::PrevMismatch));
        }
        if entry.expected_hash().ok().as_ref() != Some(&entry.hash) {
            return Err(fail(Problem::HashMismatch));
        }
        summary.add(&entry.record);
        expected_seq = entry.seq.saturating_add(1);
        summary.head = Some(Head {
            seq: entry.seq,
            hash: entry.hash.clone(),
        });
        prev = entry.hash;
    }
}
