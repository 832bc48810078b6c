//! Appending chained records.

use std::io::{self, BufRead, Write};

use super::record::{Entry, Head, Record, genesis_hash};
use super::time::rfc3339_ms;
use super::verify::{VerifyError, verify};

/// Why a record was not appended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// Writing the line failed. The record is not in the log and the chain did not advance;
    /// if part of the line was written, the next append starts on a fresh line, so the log
    /// shows one unparseable line there (remove it and the chain verifies again).
    #[error("could not write the audit record ({0}); it is not in the log: check the disk")]
    Write(io::Error),
    /// The line was written but flushing it failed. It counts as appended: the chain moved on.
    #[error("the audit record was written but not flushed ({0}): check the disk")]
    Flush(io::Error),
    /// The record could not be serialised (not possible with plain field values).
    #[error("could not serialise the audit record: {0}")]
    Encode(serde_json::Error),
    /// The log already holds `u64::MAX + 1` records.
    #[error("the audit log's sequence numbers are used up: start a new log")]
    SequenceExhausted,
}

/// Why an existing log cannot be continued.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to continue a broken audit log: {0}. Keep the file as evidence, move it aside \
     and restart to begin a new chain"
)]
#[non_exhaustive]
pub struct ResumeError(pub VerifyError);

/// Appends chained records to a log, one flushed line each.
///
/// The writer only appends: open files with `O_APPEND`. It does not lock; give one log one
/// writer.
///
/// # Examples
///
/// A gateway restarting continues the chain of the log it finds:
///
/// ```
/// use ssm_session::audit::{self, ChainWriter, EventKind, Record};
///
/// let mut log = Vec::new();
/// ChainWriter::new(&mut log, None).append(Record::new(EventKind::PolicyReload), 1_000)?;
///
/// // After a restart: read the log, then append to it.
/// let existing = log.clone();
/// let mut writer = ChainWriter::resume(&existing[..], &mut log)?;
/// assert_eq!(writer.append(Record::new(EventKind::PolicyReload), 2_000)?.seq, 1);
/// assert_eq!(audit::verify(&log[..])?.records, 2);
///
/// // A log edited in between is refused.
/// let edited = String::from_utf8(log)?.replace("00:00:02.000Z", "00:00:02.999Z");
/// let mut sink = Vec::new();
/// assert!(ChainWriter::resume(edited.as_bytes(), &mut sink).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ChainWriter<W: Write> {
    writer: W,
    head: Option<Head>,
    /// A failed write left part of a line behind: end it before the next one.
    partial_line: bool,
}

impl<W: Write> ChainWriter<W> {
    /// A writer continuing after `head`, or starting a new chain when `None`. Take the head
    /// from [`Summary::head`](super::Summary::head) of the verified log, or use
    /// [`ChainWriter::resume`], which does both.
    pub fn new(writer: W, head: Option<Head>) -> Self {
        ChainWriter {
            writer,
            head,
            partial_line: false,
        }
    }

    /// Verifies the log read from `existing` and returns a writer that continues its chain
    /// into `writer` (the same log opened for appending). Refuses a log that does not verify.
    pub fn resume<R: BufRead>(existing: R, writer: W) -> Result<Self, ResumeError> {
        let summary = verify(existing).map_err(ResumeError)?;
        Ok(ChainWriter::new(writer, summary.head()))
    }

    /// The last record appended (or continued from), if any.
    pub fn head(&self) -> Option<Head> {
        self.head.clone()
    }

    /// Chains `record` as written at `unix_ms` (wall clock) and writes it as one line; its
    /// place in the chain. String fields longer than
    /// [`MAX_FIELD_BYTES`](super::MAX_FIELD_BYTES) are cut first.
    pub fn append(&mut self, mut record: Record, unix_ms: u64) -> Result<Head, AppendError> {
        let seq = match &self.head {
            None => 0,
            Some(head) => head
                .seq
                .checked_add(1)
                .ok_or(AppendError::SequenceExhausted)?,
        };
        record.cut_long_fields();
        let mut entry = Entry {
            seq,
            time: rfc3339_ms(unix_ms),
            record,
            prev: self
                .head
                .as_ref()
                .map_or_else(genesis_hash, |head| head.hash.clone()),
            hash: String::new(),
        };
        entry.hash = entry.expected_hash().map_err(AppendError::Encode)?;

        let mut line = Vec::new();
        if self.partial_line {
            line.push(b'\n');
        }
        serde_json::to_writer(&mut line, &entry).map_err(AppendError::Encode)?;
        line.push(b'\n');
        self.write_line(&line).map_err(AppendError::Write)?;

        let head = Head {
            seq,
            hash: entry.hash,
        };
        self.head = Some(head.clone());
        self.writer.flush().map_err(AppendError::Flush)?;
        Ok(head)
    }

    /// `write_all`, but remembering whether a failure left part of a record in the log.
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let fresh_line_prefix = usize::from(self.partial_line);
        let mut written = 0;
        while written < line.len() {
            let error = match self.writer.write(&line[written..]) {
                Ok(0) => io::Error::from(io::ErrorKind::WriteZero),
                Ok(n) => {
                    written += n;
                    continue;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => error,
            };
            if written >= fresh_line_prefix {
                self.partial_line = written > fresh_line_prefix;
            }
            return Err(error);
        }
        self.partial_line = false;
        Ok(())
    }
}
