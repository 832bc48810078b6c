//! asciicast v2 recordings (play with `asciinema play`): a header line, then one
//! `[time, code, data]` array per event, `time` in seconds since the start.
//!
//! The writer returns lines instead of writing them, because the agent ships them to the
//! gateway in chunks while the session runs; the gateway logs each chunk's
//! [`chunk_digest`] in the audit chain.

use std::time::Duration;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The terminal type the agent gives its shells, and what [`CastWriter::new`] records.
pub const DEFAULT_TERM: &str = "xterm-256color";

/// The file name, `<id>.cast`, of session `session_id`'s recording, the same on the gateway
/// and on the agent. Bytes other than ASCII letters, digits and `-_.=+,@` (principals are
/// often e-mail addresses), and a leading dot, are written `%XX` (`%` itself too), so that any
/// id names one file inside the recordings directory, and different ids different files.
///
/// # Examples
///
/// ```
/// use ssm_session::audit::cast::recording_file_name;
///
/// assert_eq!(recording_file_name("a@b.c+d-0f1e"), "a@b.c+d-0f1e.cast");
/// assert_eq!(recording_file_name("../x"), "%2E.%2Fx.cast");
/// ```
pub fn recording_file_name(session_id: &str) -> String {
    let mut name = String::with_capacity(session_id.len() + 5);
    for (at, byte) in session_id.bytes().enumerate() {
        let plain = byte.is_ascii_alphanumeric() || b"-_.=+,@".contains(&byte);
        match plain && !(at == 0 && byte == b'.') {
            true => name.push(char::from(byte)),
            false => name.push_str(&format!("%{byte:02X}")),
        }
    }
    name.push_str(".cast");
    name
}

/// Turns terminal output and events into asciicast v2 lines.
///
/// Output must be valid UTF-8 in the file, but reads split characters anywhere: an
/// incomplete sequence at the end of one read is held back until the next completes it, and
/// bytes that can never be UTF-8 become U+FFFD and are counted.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ssm_session::audit::cast::CastWriter;
///
/// let identity = serde_json::json!({"session_id": "alice-0abc", "target": "mi-1"});
/// let (mut cast, header) = CastWriter::new(80, 24, 1_795_879_840, identity);
/// assert!(header.starts_with(r#"{"version":2,"width":80,"height":24,"#));
///
/// // "é" (C3 A9) split across two reads is written whole, with the second read.
/// let first = cast.output(Duration::from_millis(1), b"caf\xc3");
/// assert_eq!(first.as_deref(), Some(r#"[0.001000,"o","caf"]"#));
/// let second = cast.output(Duration::from_micros(2_500_117), b"\xa9");
/// assert_eq!(second.as_deref(), Some(r#"[2.500117,"o","é"]"#));
/// assert_eq!(cast.exit(Duration::from_secs(3), 0), r#"[3.000000,"x","0"]"#);
/// ```
#[derive(Debug, Default)]
pub struct CastWriter {
    /// An incomplete UTF-8 sequence (at most 3 bytes) waiting for the rest.
    pending: Vec<u8>,
    invalid_bytes: u64,
}

impl CastWriter {
    /// A recording of a `cols`×`rows` terminal started at `start_unix` (seconds), with
    /// `TERM` = [`DEFAULT_TERM`]; see [`CastWriter::with_env`]. Returns the header line.
    #[must_use = "the line belongs in the recording"]
    pub fn new(cols: u32, rows: u32, start_unix: u64, identity: Value) -> (CastWriter, String) {
        CastWriter::with_env(cols, rows, start_unix, identity, DEFAULT_TERM, None)
    }

    /// A recording with the header's `env` holding `TERM` and, if given, `SHELL` (nothing
    /// else from the environment, which may hold secrets). `identity` (session id,
    /// principal, target, document, run-as user…) goes under the one namespaced key
    /// `ssm_session`, which players ignore and future asciicast keys cannot clash with; it
    /// is left out when `Null`. Returns the header line.
    #[must_use = "the line belongs in the recording"]
    pub fn with_env(
        cols: u32,
        rows: u32,
        start_unix: u64,
        identity: Value,
        term: &str,
        shell: Option<&str>,
    ) -> (CastWriter, String) {
        let mut env = Map::new();
        env.insert("TERM".into(), term.into());
        if let Some(shell) = shell {
            env.insert("SHELL".into(), shell.into());
        }
        // Written by hand to keep `version` first, whatever order serde_json's maps use.
        let mut header = format!(
            r#"{{"version":2,"width":{cols},"height":{rows},"timestamp":{start_unix},"env":{}"#,
            Value::Object(env)
        );
        if !identity.is_null() {
            header.push_str(&format!(r#","ssm_session":{identity}"#));
        }
        header.push('}');
        (CastWriter::default(), header)
    }

    /// An output event for `bytes` read `elapsed` after the start, or `None` if nothing is
    /// complete yet.
    #[must_use = "the line belongs in the recording"]
    pub fn output(&mut self, elapsed: Duration, bytes: &[u8]) -> Option<String> {
        self.pending.extend_from_slice(bytes);
        let text = self.decode(false);
        (!text.is_empty()).then(|| event(elapsed, "o", text))
    }

    /// Ends the output: a sequence still held back can no longer complete, so it is written
    /// as U+FFFD (and counted). `None` if nothing was held back.
    #[must_use = "the line belongs in the recording"]
    pub fn finish(&mut self, elapsed: Duration) -> Option<String> {
        let text = self.decode(true);
        (!text.is_empty()).then(|| event(elapsed, "o", text))
    }

    /// A resize event, data `COLSxROWS`.
    #[must_use = "the line belongs in the recording"]
    pub fn resize(&self, elapsed: Duration, cols: u32, rows: u32) -> String {
        event(elapsed, "r", format!("{cols}x{rows}"))
    }

    /// A marker an auditor should see on the timeline: a reconnect, an idle or duration
    /// warning, a recording gap.
    #[must_use = "the line belongs in the recording"]
    pub fn marker(&self, elapsed: Duration, label: &str) -> String {
        event(elapsed, "m", label.to_owned())
    }

    /// The exit status: asciicast v3's `x` event, which v2 players skip.
    #[must_use = "the line belongs in the recording"]
    pub fn exit(&self, elapsed: Duration, code: i32) -> String {
        event(elapsed, "x", code.to_string())
    }

    /// Bytes replaced by U+FFFD so far, because they were not UTF-8.
    pub fn invalid_bytes(&self) -> u64 {
        self.invalid_bytes
    }

    /// Takes the text out of `pending`, leaving an incomplete sequence at its end unless
    /// `at_end`.
    fn decode(&mut self, at_end: bool) -> String {
        let mut text = String::with_capacity(self.pending.len());
        let mut held = 0;
        let mut chunks = self.pending.utf8_chunks().peekable();
        while let Some(chunk) = chunks.next() {
            text.push_str(chunk.valid());
            let invalid = chunk.invalid();
            if invalid.is_empty() {
                continue;
            }
            // Only the input's end can hold a sequence that is incomplete rather than wrong.
            let incomplete = chunks.peek().is_none()
                && std::str::from_utf8(invalid).is_err_and(|error| error.error_len().is_none());
            if incomplete && !at_end {
                held = invalid.len();
            } else {
                text.push(char::REPLACEMENT_CHARACTER);
                self.invalid_bytes += invalid.len() as u64;
            }
        }
        self.pending.drain(..self.pending.len() - held);
        text
    }
}

/// `[time,"code",data]`, time in seconds with exactly six decimals.
fn event(elapsed: Duration, code: &str, data: String) -> String {
    format!(
        r#"[{}.{:06},"{code}",{}]"#,
        elapsed.as_secs(),
        elapsed.subsec_micros(),
        Value::String(data)
    )
}

/// SHA-256 (hex) of a chunk of recording lines, exactly as shipped: what the gateway puts in
/// the chunk's `recording.chunk` record, so the stored recording can be checked against the
/// chain.
///
/// # Examples
///
/// ```
/// use ssm_session::audit::cast::chunk_digest;
///
/// assert_eq!(
///     chunk_digest(""),
///     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
/// );
/// ```
pub fn chunk_digest(lines: &str) -> String {
    hex::encode(Sha256::digest(lines.as_bytes()))
}
