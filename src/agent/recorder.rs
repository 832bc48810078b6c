//! Live asciicast v2 recording of a terminal session, shipped to the gateway in chunks so that
//! the host cannot rewrite it afterwards.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::audit::cast::CastWriter;
use crate::control::{ControlMessage, RecordingChunk};

/// A chunk is sent when this much is buffered, or at the next flush tick.
const CHUNK: usize = 32 * 1024;
/// How often buffered lines are shipped.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(500);

pub(crate) struct Recorder {
    session_id: String,
    cast: CastWriter,
    started: Instant,
    buffer: String,
    index: u64,
    outbox: mpsc::Sender<ControlMessage>,
    dropped_chunks: u64,
}

impl Recorder {
    pub(crate) fn start(
        session_id: &str,
        cols: u32,
        rows: u32,
        identity: serde_json::Value,
        outbox: mpsc::Sender<ControlMessage>,
    ) -> Recorder {
        let unix = crate::aws::unix_seconds();
        let (cast, header) = CastWriter::new(cols, rows, unix, identity);
        let mut recorder = Recorder {
            session_id: session_id.to_owned(),
            cast,
            started: Instant::now(),
            buffer: String::new(),
            index: 0,
            outbox,
            dropped_chunks: 0,
        };
        recorder.push(header);
        recorder
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
        let Some(chunk) = self.take_chunk() else {
            return;
        };
        if self.outbox.try_send(chunk).is_err() {
            self.dropped_chunks += 1;
        } else if let Some(gap) = self.gap_marker() {
            self.push(gap);
        }
    }

    /// Writes the exit event and ships everything, waiting for room in the outbox: the end of
    /// the recording is never dropped.
    pub(crate) async fn finish(mut self, exit_code: Option<i32>) {
        let elapsed = self.started.elapsed();
        let mut tail: Vec<String> = self.cast.finish(elapsed).into_iter().collect();
        tail.extend(self.gap_marker());
        tail.extend(exit_code.map(|code| self.cast.exit(elapsed, code)));
        for line in tail {
            self.buffer.push_str(&line);
            self.buffer.push('\n');
        }
        if let Some(chunk) = self.take_chunk() {
            let _ = self.outbox.send(chunk).await;
        }
    }

    /// The buffered lines as the next chunk, if any.
    fn take_chunk(&mut self) -> Option<ControlMessage> {
        if self.buffer.is_empty() {
            return None;
        }
        let chunk = RecordingChunk {
            session_id: self.session_id.clone(),
            index: self.index,
            lines: std::mem::take(&mut self.buffer),
        };
        self.index += 1;
        Some(ControlMessage::Recording(chunk))
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
