//! The audit trail: a tamper-evident JSON-lines log, and asciicast v2 session recordings.
//!
//! # The log
//!
//! The gateway writes one [`Record`] per line through a [`ChainWriter`], which adds the chain
//! fields and makes the line an [`Entry`]:
//!
//! ```text
//! {"seq":0,"time":"2026-11-28T15:30:40.123Z","event":"api.call","principal":"alice","decision":"allow","prev":"5c1f…","hash":"9a0e…"}
//! ```
//!
//! * `seq` counts lines from 0, and `time` is UTC RFC 3339 with milliseconds ([`rfc3339_ms`]).
//! * `prev` is the previous line's `hash`; the first line's is the SHA-256 of [`GENESIS`].
//! * `hash` is the SHA-256 of `prev` (its hex text) followed by the line's canonical JSON
//!   without `hash`: the fields in their declared order, absent ones left out, no whitespace.
//!
//! [`verify`] replays a log and names the first line that breaks the chain: an edited,
//! deleted, duplicated or reordered record, a truncated last line, or a line that is not
//! byte-for-byte what the writer produces. A restarted gateway continues the chain with
//! [`ChainWriter::resume`], which refuses a broken log rather than extend it.
//!
//! The chain proves the order and content of what is there. Cutting whole records off the
//! *end* leaves a shorter valid chain, so keep [`Summary::head`] somewhere else (a checkpoint)
//! to detect that.
//!
//! # What is never logged
//!
//! [`Record`] has no field for tokens, credentials, key material or session data, so none can
//! reach the log; free-text fields (`reason`, `detail`) are for decisions and error messages,
//! and callers must not put secrets there either.
//!
//! # Recordings
//!
//! [`cast::CastWriter`] turns terminal output into asciicast v2 lines, which the agent ships
//! in chunks; the gateway stores each chunk and logs its [`cast::chunk_digest`] in a
//! `recording.chunk` record, so the recording is covered by the chain too.
//!
//! # Examples
//!
//! ```
//! use ssm_session::audit::{self, ChainWriter, EventKind, Problem, Record};
//!
//! let mut log = Vec::new();
//! let mut writer = ChainWriter::new(&mut log, None);
//! let mut call = Record::new(EventKind::ApiCall);
//! call.principal = Some("alice".into());
//! call.action = Some("ssm:StartSession".into());
//! call.decision = Some("allow".into());
//! writer.append(call, 1_795_879_840_123)?;
//! writer.append(Record::new(EventKind::PolicyReload), 1_795_879_841_000)?;
//!
//! let summary = audit::verify(&log[..])?;
//! assert_eq!(summary.records, 2);
//!
//! // Change one byte of the first record: "alice" becomes "alicf".
//! let at = log.windows(5).position(|w| w == b"alice").unwrap() + 4;
//! log[at] = b'f';
//! let error = audit::verify(&log[..]).unwrap_err();
//! assert_eq!(error.line, 1);
//! assert!(matches!(error.problem, Problem::HashMismatch));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cast;
mod record;
mod time;
mod verify;
mod writer;

pub use record::{
    EndReason, Entry, EventKind, GENESIS, Head, MAX_FIELD_BYTES, MAX_LINE_BYTES, Record,
};
pub use time::rfc3339_ms;
pub use verify::{Problem, Summary, VerifyError, verify};
pub use writer::{AppendError, ChainWriter, ResumeError};
