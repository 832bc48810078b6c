//! asciicast v2 recording of a shell or command session, written as it runs.
//!
//! Where it goes is the trust model:
//!
//! * A plaintext session is readable by the gateway anyway: its recording is shipped to the
//!   gateway in chunks while it runs, so that the host cannot rewrite it afterwards.
//! * A KMS-encrypted session is opaque to the gateway (only the client and the agent hold the
//!   data key), and so is its recording: it stays on the agent's disk, in
//!   [`AgentSettings::recordings_dir`](super::AgentSettings::recordings_dir) (directory 0700,
//!   file 0600), and the gateway receives only its summary in the session's report (SHA-256,
//!   size, chunk count, path on the agent), which it writes to the audit chain. The host can
//!   then delete or rewrite the file, but not without the audited digest telling.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::Context;
use super::account::Account;
use crate::audit::cast::{CastWriter, recording_file_name};
use crate::control::{ControlMessage, RecordingChunk, RecordingSummary};
use crate::document::AgentSessionRequest;

/// A chunk is sent when this much is buffered, or at the next flush tick.
const CHUNK: usize = 32 * 1024;
/// Largest recording kept on the agent (as the gateway bounds the ones it stores); the rest
/// is dropped and the summary says so.
const MAX_LOCAL: u64 = 256 << 20;
/// How often buffered lines are shipped.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// Where the lines go.
enum Sink {
    Gateway(mpsc::Sender<ControlMessage>),
    Agent(Local),
}

/// A recording kept on the agent, with what its summary says.
struct Local {
    file: std::fs::File,
    path: PathBuf,
    digest: Sha256,
    bytes: u64,
    limit: u64,
    failed: Option<String>,
}

pub(crate) struct Recorder {
    session_id: String,
    cast: CastWriter,
    started: Instant,
    buffer: String,
    index: u64,
    sink: Sink,
    dropped_chunks: u64,
}

/// The header's `ssm_session` identity: who ran what, where, as whom.
fn identity(
    context: &Context,
    request: &AgentSessionRequest,
    account: Option<&Account>,
) -> serde_json::Value {
    serde_json::json!({
        "session_id": request.session_id,
        "document": request.document_name,
        "target": context.settings.agent_id,
        "owner": request.session_owner,
        "run_as": account.map(|account| account.name.clone()),
        "command": request.session.command,
    })
}

/// Creates `dir` (0700) and, in it, the new file named for the session
/// ([`recording_file_name`], as the gateway names its recordings; 0600).
fn create_local(dir: &Path, session_id: &str) -> Result<Local, String> {
    if session_id.is_empty() {
        return Err("a session without an id cannot be recorded".into());
    }
    let cannot = |what: &str, error: std::io::Error| {
        format!(
            "cannot {what} for the recording of this encrypted session in {} ({error}): set recordings_dir in the agent's configuration to a writable directory",
            dir.display()
        )
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| cannot("create the directory", error))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|error| cannot("restrict the directory", error))?;
    // The id comes from the gateway: its file name cannot point outside `dir`.
    let path = dir.join(recording_file_name(session_id));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|error| cannot("create the file", error))?;
    Ok(Local {
        file,
        path,
        digest: Sha256::new(),
        bytes: 0,
        limit: MAX_LOCAL,
        failed: None,
    })
}

impl Recorder {
    /// The recording of a shell or command session on `connection`, where its encryption
    /// says (see [`Recorder::start`]), starting at 80×24.
    pub(crate) fn for_session(
        context: &Context,
        request: &AgentSessionRequest,
        account: Option<&Account>,
        connection: &crate::net::Connection,
    ) -> Result<Recorder, String> {
        let encrypted = connection.info().encrypted;
        Recorder::start(
            &request.session_id,
            (80, 24),
            identity(context, request, account),
            context.outbox.clone(),
            encrypted.then_some(context.settings.recordings_dir.as_path()),
        )
    }

    /// A recording of session `session_id`: to the gateway through `outbox`, or — for an
    /// `encrypted` session — into `dir` on this host. Err (the session must not run
    /// unrecorded) when the local file cannot be created.
    pub(crate) fn start(
        session_id: &str,
        (cols, rows): (u32, u32),
        identity: serde_json::Value,
        outbox: mpsc::Sender<ControlMessage>,
        encrypted: Option<&Path>,
    ) -> Result<Recorder, String> {
        let sink = match encrypted {
            Some(dir) => Sink::Agent(create_local(dir, session_id)?),
            None => Sink::Gateway(outbox),
        };
        let unix = crate::aws::unix_seconds();
        let (cast, header) = CastWriter::new(cols, rows, unix, identity);
        let mut recorder = Recorder {
            session_id: session_id.to_owned(),
            cast,
            started: Instant::now(),
            buffer: String::new(),
            index: 0,
            sink,
            dropped_chunks: 0,
        };
        recorder.push(header);
        Ok(recorder)
    }

    fn push(&mut self, line: String) {
        self.buffer.push_str(&line);
        self.buffer.push('\n');
        if self.buffer.len() >= CHUNK {
            self.flush();
        }
    }

    pub(crate) fn output(&mut self, bytes: &[u8]) {
        if let Some(line) = self.cast.output(self.started.elapsed(), bytes) {
            self.push(line);
        }
    }

    pub(crate) fn resize(&mut self, cols: u32, rows: u32) {
        let line = self.cast.resize(self.started.elapsed(), cols, rows);
        self.push(line);
    }

    pub(crate) fn marker(&mut self, label: &str) {
        let line = self.cast.marker(self.started.elapsed(), label);
        self.push(line);
    }

    /// Ships what is buffered. A full outbox (control channel down for long) drops the chunk
    /// and the next marker says how many were lost.
    pub(crate) fn flush(&mut self) {
        let Some(lines) = self.take_lines() else {
            return;
        };
        match &mut self.sink {
            Sink::Agent(local) => local.write(&lines),
            Sink::Gateway(outbox) => {
                let chunk = RecordingChunk {
                    session_id: self.session_id.clone(),
                    index: self.index - 1,
                    lines,
                };
                if outbox.try_send(ControlMessage::Recording(chunk)).is_err() {
                    self.dropped_chunks += 1;
                } else if let Some(gap) = self.gap_marker() {
                    self.push(gap);
                }
            }
        }
    }

    /// Writes the exit event and ships everything, waiting for room in the outbox: the end of
    /// the recording is never dropped. The summary of a recording kept on the agent.
    pub(crate) async fn finish(mut self, exit_code: Option<i32>) -> Option<RecordingSummary> {
        let elapsed = self.started.elapsed();
        let mut tail: Vec<String> = self.cast.finish(elapsed).into_iter().collect();
        tail.extend(self.gap_marker());
        tail.extend(exit_code.map(|code| self.cast.exit(elapsed, code)));
        for line in tail {
            self.buffer.push_str(&line);
            self.buffer.push('\n');
        }
        let lines = self.take_lines();
        match self.sink {
            Sink::Gateway(outbox) => {
                if let Some(lines) = lines {
                    let chunk = RecordingChunk {
                        session_id: self.session_id,
                        index: self.index - 1,
                        lines,
                    };
                    let _ = outbox.send(ControlMessage::Recording(chunk)).await;
                }
                None
            }
            Sink::Agent(mut local) => {
                if let Some(lines) = lines {
                    local.write(&lines);
                }
                if local.failed.is_none()
                    && let Err(error) = local.file.sync_all()
                {
                    local.failed = Some(error.to_string());
                }
                Some(RecordingSummary {
                    path: local.path.display().to_string(),
                    sha256: hex::encode(local.digest.finalize()),
                    bytes: local.bytes,
                    chunks: self.index,
                    error: local.failed.unwrap_or_default(),
                })
            }
        }
    }

    /// The buffered lines as the next chunk, if any.
    fn take_lines(&mut self) -> Option<String> {
        if self.buffer.is_empty() {
            return None;
        }
        self.index += 1;
        Some(std::mem::take(&mut self.buffer))
    }

    /// The marker line for chunks lost since the last one, if any were.
    fn gap_marker(&mut self) -> Option<String> {
        let lost = std::mem::take(&mut self.dropped_chunks);
        (lost > 0).then(|| {
            let label = format!("recording gap: {lost} chunks lost");
            self.cast.marker(self.started.elapsed(), &label)
        })
    }
}

impl Local {
    /// Appends `lines`; the digest covers exactly what reached the file, and the first
    /// failure is kept for the summary.
    fn write(&mut self, lines: &str) {
        if self.failed.is_some() {
            return;
        }
        if self.bytes + lines.len() as u64 > self.limit {
            tracing::warn!(path = %self.path.display(), limit = self.limit, "recording truncated at the size limit");
            self.failed = Some(format!(
                "truncated at the size limit ({} bytes)",
                self.limit
            ));
            return;
        }
        match self.file.write_all(lines.as_bytes()) {
            Ok(()) => {
                self.digest.update(lines.as_bytes());
                self.bytes += lines.len() as u64;
            }
            Err(error) => {
                tracing::error!(path = %self.path.display(), %error, "recording write failed");
                self.failed = Some(error.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn encrypted_recordings_stay_on_the_agent_owner_only() {
        let dir = std::env::temp_dir().join(format!("ssm-rec-{}/deep", std::process::id()));
        let (outbox, mut shipped) = mpsc::channel(8);
        let identity = serde_json::json!({"session_id": "alice-01"});
        let mut recorder =
            Recorder::start("alice-01", (80, 24), identity, outbox, Some(&dir)).unwrap();
        recorder.output(b"secret-marker\r\n");
        recorder.flush();
        let summary = recorder.finish(Some(0)).await.unwrap();
        assert!(shipped.try_recv().is_err(), "a chunk reached the outbox");
        let text = std::fs::read(&summary.path).unwrap();
        assert!(String::from_utf8_lossy(&text).contains("secret-marker"));
        assert_eq!(summary.sha256, hex::encode(Sha256::digest(&text)));
        assert_eq!((summary.bytes, summary.chunks), (text.len() as u64, 2));
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(Path::new(&summary.path)), 0o600);
        assert_eq!(mode(&dir), 0o700);
        // Beyond the size limit, nothing more is written and the summary says so.
        let (outbox, _) = mpsc::channel(1);
        let mut recorder = Recorder::start(
            "alice-02",
            (80, 24),
            serde_json::Value::Null,
            outbox,
            Some(&dir),
        )
        .unwrap();
        if let Sink::Agent(local) = &mut recorder.sink {
            local.limit = 200;
        }
        recorder.flush();
        recorder.output(&[b'y'; 300]);
        let summary = recorder.finish(None).await.unwrap();
        assert!(summary.error.contains("size limit"), "{summary:?}");
        assert!(summary.bytes <= 200);
        assert_eq!(
            std::fs::metadata(&summary.path).unwrap().len(),
            summary.bytes
        );
        // A session id is never a path: any id is recorded in `dir`, under the gateway's name.
        let (outbox, _) = mpsc::channel(1);
        for id in ["../escape", ".hidden", "a/b", "a@b.c+d-0f1e"] {
            let recorder = Recorder::start(
                id,
                (80, 24),
                serde_json::Value::Null,
                outbox.clone(),
                Some(&dir),
            )
            .unwrap();
            let summary = recorder.finish(None).await.unwrap();
            let path = std::path::PathBuf::from(&summary.path);
            assert_eq!(path.parent(), Some(dir.as_path()), "{id:?}");
            assert_eq!(
                path.file_name().unwrap().to_str(),
                Some(crate::audit::cast::recording_file_name(id).as_str())
            );
        }
        let refused = Recorder::start("", (80, 24), serde_json::Value::Null, outbox, Some(&dir));
        assert!(refused.is_err());
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }
}
