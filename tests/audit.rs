//! The audit log's chain and verifier, and the asciicast writer.

use std::cell::RefCell;
use std::io::{self, BufReader, Write};
use std::rc::Rc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use ssm_session::audit::cast::{CastWriter, DEFAULT_TERM, chunk_digest};
use ssm_session::audit::{
    self, AppendError, ChainWriter, EndReason, Entry, EventKind, GENESIS, Head, MAX_FIELD_BYTES,
    MAX_LINE_BYTES, Problem, Record, VerifyError, rfc3339_ms,
};

const T0: u64 = 1_795_879_840_123;

/// A record with every field filled, so that any field can be edited.
fn full_record(i: u64) -> Record {
    let mut record = Record::new(EventKind::SessionEnd);
    record.principal = Some(format!("user{i}"));
    record.source = Some("192.0.2.7:50123".into());
    record.action = Some("ssm:StartSession".into());
    record.target = Some("mi-0123456789abcdef0".into());
    record.document = Some("SSM-SessionManagerRunShell".into());
    record.session_id = Some(format!("user{i}-0abc"));
    record.decision = Some("allow".into());
    record.reason = Some("statement 0 of policy ops".into());
    record.end_reason = Some(EndReason::ProcessExit);
    record.duration_ms = Some(1000 + i);
    record.bytes_client_to_target = Some(10 * i);
    record.bytes_target_to_client = Some(20 * i);
    record.exit_code = Some(-1);
    record.destination = Some("db.internal:5432".into());
    record.stream_id = Some(i);
    record.recording = Some(format!("recordings/user{i}-0abc.cast"));
    record.chunk_sha256 = Some(chunk_digest("x"));
    record.chunk_bytes = Some(1);
    record.detail = Some("line \"one\"\nline\ttwo \u{1b}[0m é".into());
    record
}

/// A log of `records` records, alternating full and sparse ones.
fn sample_log(records: u64) -> Vec<u8> {
    let mut log = Vec::new();
    let mut writer = ChainWriter::new(&mut log, None);
    for i in 0..records {
        let record = match i % 3 {
            0 => full_record(i),
            1 => Record::new(EventKind::PolicyReload),
            _ => {
                let mut call = Record::new(EventKind::ApiCall);
                call.principal = Some(format!("user{i}"));
                call.decision = Some("deny".into());
                call
            }
        };
        writer.append(record, T0 + i).unwrap();
    }
    log
}

fn lines(log: &[u8]) -> Vec<Vec<u8>> {
    log.split_inclusive(|&byte| byte == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

fn broken(log: &[u8]) -> VerifyError {
    match audit::verify(log) {
        Ok(summary) => panic!("a damaged log verified:\n{summary}"),
        Err(error) => error,
    }
}

// ---- the chain -------------------------------------------------------------------------

#[test]
fn a_written_log_verifies_and_links_each_line_to_the_last() {
    let mut log = Vec::new();
    let mut writer = ChainWriter::new(&mut log, None);
    let mut heads = Vec::new();
    for i in 0..5 {
        heads.push(writer.append(full_record(i), T0 + i).unwrap());
    }
    let last = writer.head();
    assert_eq!(last.as_ref(), heads.last());

    let summary = audit::verify(&log[..]).unwrap();
    assert_eq!(summary.records, 5);
    assert_eq!(summary.head(), last);

    let mut prev = hex::encode(Sha256::digest(GENESIS.as_bytes()));
    for (i, line) in lines(&log).iter().enumerate() {
        assert_eq!(line.last(), Some(&b'\n'));
        let entry: Entry = serde_json::from_slice(line).unwrap();
        assert_eq!(entry.seq, i as u64);
        assert_eq!(entry.time, rfc3339_ms(T0 + i as u64));
        assert_eq!(entry.record, full_record(i as u64));
        assert_eq!(entry.prev, prev);
        assert_eq!(entry.hash, heads[i].hash);
        prev = entry.hash;
    }
}

#[test]
fn a_line_is_the_fields_in_order_and_its_hash_covers_the_rest_of_the_line() {
    let mut log = Vec::new();
    let mut call = Record::new(EventKind::ApiCall);
    call.principal = Some("alice".into());
    call.decision = Some("allow".into());
    let head = ChainWriter::new(&mut log, None).append(call, T0).unwrap();

    let genesis = hex::encode(Sha256::digest(GENESIS.as_bytes()));
    let unsealed = format!(
        r#"{{"seq":0,"time":"2026-11-28T15:30:40.123Z","event":"api.call","principal":"alice","decision":"allow","prev":"{genesis}"}}"#
    );
    let hash = hex::encode(Sha256::digest(format!("{genesis}{unsealed}").as_bytes()));
    let line = format!(
        "{},\"hash\":\"{hash}\"}}\n",
        unsealed.strip_suffix('}').unwrap()
    );
    assert_eq!(String::from_utf8(log).unwrap(), line);
    assert_eq!(head, Head { seq: 0, hash });
}

#[test]
fn enum_names_are_the_documented_strings() {
    let events: Vec<&str> = EventKind::ALL.iter().map(|e| e.as_str()).collect();
    assert_eq!(
        events,
        [
            "api.call",
            "session.start",
            "session.end",
            "session.rejected",
            "session.disconnect",
            "session.resume",
            "stream.open",
            "stream.close",
            "recording.chunk",
            "policy.reload",
            "agent.connect",
            "agent.disconnect"
        ]
    );
    let reasons: Vec<&str> = EndReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "client_exit",
            "process_exit",
            "idle_timeout",
            "max_duration",
            "revoked",
            "terminated",
            "network_lost",
            "agent_lost",
            "gateway_shutdown",
            "agent_shutdown",
            "handshake_failed"
        ]
    );
    for &event in EventKind::ALL {
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(json, format!("\"{event}\""));
        assert_eq!(serde_json::from_str::<EventKind>(&json).unwrap(), event);
    }
    for &reason in EndReason::ALL {
        let json = serde_json::to_string(&reason).unwrap();
        assert_eq!(json, format!("\"{reason}\""));
        assert_eq!(serde_json::from_str::<EndReason>(&json).unwrap(), reason);
    }
    assert!(serde_json::from_str::<EventKind>("\"session.hijack\"").is_err());
}

/// Changes field `field` (0..24, in line order) of `entry` to a different value.
fn edit_field(entry: &mut Entry, field: usize) {
    fn text(value: &mut Option<String>) {
        *value = match value.take() {
            Some(text) if text.len() % 2 == 0 => None,
            Some(text) => Some(text + "!"),
            None => Some("injected".into()),
        };
    }
    fn number<T: Copy + std::ops::BitXor<Output = T> + From<u8>>(value: &mut Option<T>) {
        *value = match value.take() {
            Some(n) => Some(n ^ T::from(1)),
            None => Some(T::from(7)),
        };
    }
    fn hex_digit(hash: &mut String) {
        let flipped = if hash.starts_with('0') { "1" } else { "0" };
        hash.replace_range(0..1, flipped);
    }
    let record = &mut entry.record;
    match field {
        0 => entry.seq += 1,
        1 => entry.time = entry.time.replace(".1", ".9"),
        2 => {
            record.event = if record.event == EventKind::ApiCall {
                EventKind::SessionStart
            } else {
                EventKind::ApiCall
            }
        }
        3 => text(&mut record.principal),
        4 => text(&mut record.source),
        5 => text(&mut record.action),
        6 => text(&mut record.target),
        7 => text(&mut record.document),
        8 => text(&mut record.session_id),
        9 => text(&mut record.decision),
        10 => text(&mut record.reason),
        11 => {
            record.end_reason = match record.end_reason {
                Some(EndReason::ProcessExit) => Some(EndReason::Revoked),
                _ => Some(EndReason::ProcessExit),
            }
        }
        12 => number(&mut record.duration_ms),
        13 => number(&mut record.bytes_client_to_target),
        14 => number(&mut record.bytes_target_to_client),
        15 => {
            record.exit_code = match record.exit_code {
                Some(code) => Some(code ^ 1),
                None => Some(0),
            }
        }
        16 => text(&mut record.destination),
        17 => number(&mut record.stream_id),
        18 => text(&mut record.recording),
        19 => text(&mut record.chunk_sha256),
        20 => number(&mut record.chunk_bytes),
        21 => text(&mut record.detail),
        22 => hex_digit(&mut entry.prev),
        _ => hex_digit(&mut entry.hash),
    }
}

proptest! {
    /// The edit is re-serialised canonically, so only the chain can notice it.
    #[test]
    fn editing_any_field_of_any_record_is_caught_at_its_line(which in 0usize..9, field in 0usize..24) {
        let log = sample_log(9);
        let mut lines = lines(&log);
        let mut entry: Entry = serde_json::from_slice(&lines[which]).unwrap();
        edit_field(&mut entry, field);
        let mut edited = serde_json::to_vec(&entry).unwrap();
        edited.push(b'\n');
        prop_assert_ne!(&edited, &lines[which]);
        lines[which] = edited;

        let error = broken(&lines.concat());
        prop_assert_eq!(error.line, which + 1);
        match field {
            0 => prop_assert!(matches!(error.problem, Problem::SeqMismatch { .. }), "{}", error),
            22 => prop_assert!(matches!(error.problem, Problem::PrevMismatch), "{}", error),
            _ => prop_assert!(matches!(error.problem, Problem::HashMismatch), "{}", error),
        }
    }

    #[test]
    fn changing_any_byte_is_caught_at_its_line(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut log = sample_log(6);
        let at = at.index(log.len());
        prop_assume!(log[at] != byte);
        let line = log[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        log[at] = byte;
        prop_assert_eq!(broken(&log).line, line);
    }

    #[test]
    fn cutting_the_last_line_anywhere_is_reported_as_truncation(cut in 1usize..400) {
        let log = sample_log(4);
        let last = lines(&log).pop().unwrap();
        let cut = cut % last.len(); // keeps 0..len-1 bytes of the last line, never its newline
        let truncated = &log[..log.len() - last.len() + cut];
        if cut == 0 {
            prop_assert_eq!(audit::verify(truncated).unwrap().records, 3);
        } else {
            let error = broken(truncated);
            prop_assert_eq!(error.line, 4);
            prop_assert!(matches!(error.problem, Problem::Truncated));
        }
    }

    #[test]
    fn deleting_any_record_but_the_last_is_caught_at_the_gap(which in 0usize..5) {
        let mut lines = lines(&sample_log(6));
        lines.remove(which);
        let error = broken(&lines.concat());
        prop_assert_eq!(error.line, which + 1);
        let expected = which as u64;
        prop_assert!(matches!(error.problem, Problem::SeqMismatch { expected: e, found } if e == expected && found == expected + 1), "{}", error);
    }

    #[test]
    fn swapping_two_records_is_caught_at_the_first(a in 0usize..6, b in 0usize..6) {
        prop_assume!(a != b);
        let mut lines = lines(&sample_log(6));
        lines.swap(a, b);
        prop_assert_eq!(broken(&lines.concat()).line, a.min(b) + 1);
    }

    #[test]
    fn verify_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = audit::verify(&bytes[..]);
    }

    #[test]
    fn verify_never_panics_on_a_spliced_log(at in any::<prop::sample::Index>(), len in 0usize..80, junk in proptest::collection::vec(any::<u8>(), 0..80)) {
        let log = sample_log(4);
        let at = at.index(log.len());
        let end = (at + len).min(log.len());
        let _ = audit::verify(&[&log[..at], &junk[..], &log[end..]].concat()[..]);
    }
}

#[test]
fn the_last_record_deleted_is_seen_only_against_a_kept_head() {
    let log = sample_log(4);
    let kept = audit::verify(&log[..]).unwrap().head();
    let mut lines = lines(&log);
    lines.pop();
    let shorter = audit::verify(&lines.concat()[..]).unwrap();
    assert_eq!(shorter.records, 3);
    assert_ne!(shorter.head(), kept);
}

#[test]
fn a_duplicated_record_is_caught() {
    let mut lines = lines(&sample_log(4));
    lines.insert(2, lines[1].clone());
    let error = broken(&lines.concat());
    assert_eq!(error.line, 3);
    assert!(matches!(
        error.problem,
        Problem::SeqMismatch {
            expected: 2,
            found: 1
        }
    ));
}

#[test]
fn a_record_from_another_log_is_caught_by_prev() {
    let ours = lines(&sample_log(4));
    let mut other_log = Vec::new();
    let mut other = ChainWriter::new(&mut other_log, None);
    for i in 0..4 {
        other
            .append(Record::new(EventKind::AgentConnect), i)
            .unwrap();
    }
    let mut mixed = ours.clone();
    mixed[2] = lines(&other_log)[2].clone();
    let error = broken(&mixed.concat());
    assert_eq!(error.line, 3);
    assert!(matches!(error.problem, Problem::PrevMismatch));
}

#[test]
fn a_forged_record_with_a_recomputed_hash_breaks_the_next_link() {
    let mut lines = lines(&sample_log(4));
    let mut entry: Entry = serde_json::from_slice(&lines[1]).unwrap();
    entry.record.detail = Some("nothing happened".into());
    entry.hash = entry.expected_hash().unwrap();
    lines[1] = [serde_json::to_vec(&entry).unwrap(), b"\n".to_vec()].concat();
    let error = broken(&lines.concat());
    assert_eq!(error.line, 3);
    assert!(matches!(error.problem, Problem::PrevMismatch));
}

#[test]
fn lines_not_written_by_the_writer_are_refused() {
    let log = String::from_utf8(sample_log(3)).unwrap();
    let cases = [
        // Same values, different bytes.
        (log.replacen("\"seq\":1,", "\"seq\": 1,", 1), 2),
        (
            log.replacen("\"seq\":1,", "\"seq\":1,\"token\":\"x\",", 1),
            2,
        ),
        (log.replacen("\"user0\"", "\"\\u0075ser0\"", 1), 1),
        // Not records at all.
        (
            log.replacen("\"event\":\"policy.reload\"", "\"event\":\"policy.x\"", 1),
            2,
        ),
        (format!("\n{log}"), 1),
        (log.replace('\n', "\r\n"), 1),
        (format!("{log}\n"), 4),
    ];
    for (edited, line) in cases {
        assert_eq!(broken(edited.as_bytes()).line, line, "{edited}");
    }
}

#[test]
fn an_endless_line_is_refused_without_reading_it_all() {
    let error = broken_reader(BufReader::new(io::repeat(b'{')));
    assert_eq!(error.line, 1);
    assert!(matches!(error.problem, Problem::TooLong));
}

fn broken_reader(reader: impl io::BufRead) -> VerifyError {
    audit::verify(reader).expect_err("verified")
}

#[test]
fn a_read_error_is_reported_at_its_line() {
    struct FailsAfter(Vec<u8>);
    impl io::Read for FailsAfter {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::other("disk gone"));
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0.drain(..n);
            Ok(n)
        }
    }
    let error = broken_reader(BufReader::new(FailsAfter(sample_log(2))));
    assert_eq!(error.line, 3);
    assert!(matches!(error.problem, Problem::Unreadable(_)));
    assert!(error.to_string().contains("disk gone"), "{error}");
}

#[test]
fn oversized_fields_are_cut_so_the_record_still_fits_a_line() {
    let mut record = full_record(1);
    let huge = "\u{1}".repeat(100_000);
    for field in [
        &mut record.principal,
        &mut record.source,
        &mut record.action,
        &mut record.target,
        &mut record.document,
        &mut record.session_id,
        &mut record.decision,
        &mut record.reason,
        &mut record.destination,
        &mut record.recording,
        &mut record.chunk_sha256,
    ] {
        *field = Some(huge.clone());
    }
    record.detail = Some("é".repeat(MAX_FIELD_BYTES)); // 2 bytes each: cut mid-way
    let mut log = Vec::new();
    ChainWriter::new(&mut log, None).append(record, T0).unwrap();
    assert!(log.len() <= MAX_LINE_BYTES + 1, "{} bytes", log.len());

    audit::verify(&log[..]).unwrap();
    let entry: Entry = serde_json::from_slice(&log).unwrap();
    let detail = entry.record.detail.unwrap();
    assert!(detail.starts_with("éé"));
    assert!(detail.ends_with(&format!("…[{} more bytes cut]", MAX_FIELD_BYTES)));
    let principal = entry.record.principal.unwrap();
    assert!(principal.ends_with(&format!("…[{} more bytes cut]", 100_000 - MAX_FIELD_BYTES)));
}

#[test]
fn an_empty_log_verifies_with_no_head() {
    let summary = audit::verify(&b""[..]).unwrap();
    assert_eq!(summary.records, 0);
    assert_eq!(summary.head(), None);
    assert_eq!(summary.to_string(), "empty audit log: no records");
}

// ---- continuing a log ------------------------------------------------------------------

#[test]
fn a_log_continued_after_a_restart_stays_one_chain() {
    let mut log = sample_log(3);
    let first_head = audit::verify(&log[..]).unwrap().head();

    let existing = log.clone();
    let mut writer = ChainWriter::resume(&existing[..], &mut log).unwrap();
    assert_eq!(writer.head(), first_head);
    writer.append(full_record(3), T0 + 3).unwrap();
    let head = writer
        .append(Record::new(EventKind::PolicyReload), T0 + 4)
        .unwrap();
    assert_eq!(head.seq, 4);

    let summary = audit::verify(&log[..]).unwrap();
    assert_eq!(summary.records, 5);
    assert_eq!(summary.head(), Some(head));

    // The same through `new` with the verified head.
    let existing = log.clone();
    let head = audit::verify(&existing[..]).unwrap().head();
    ChainWriter::new(&mut log, head)
        .append(Record::new(EventKind::AgentConnect), T0 + 5)
        .unwrap();
    assert_eq!(audit::verify(&log[..]).unwrap().records, 6);
}

#[test]
fn resuming_an_empty_log_starts_the_chain() {
    let mut log = Vec::new();
    let mut writer = ChainWriter::resume(&b""[..], &mut log).unwrap();
    assert_eq!(writer.head(), None);
    let head = writer
        .append(Record::new(EventKind::PolicyReload), T0)
        .unwrap();
    assert_eq!(head.seq, 0);
    audit::verify(&log[..]).unwrap();
}

#[test]
fn a_broken_log_is_not_continued() {
    let log = String::from_utf8(sample_log(3)).unwrap();
    let edited = log.replacen("user0", "user9", 1);
    let mut sink = Vec::new();
    let refused = ChainWriter::resume(edited.as_bytes(), &mut sink).unwrap_err();
    assert_eq!(refused.0.line, 1);
    let message = refused.to_string();
    assert!(message.contains("line 1"), "{message}");
    assert!(message.contains("move it aside"), "{message}");

    let truncated = &log.as_bytes()[..log.len() - 5];
    let refused = ChainWriter::resume(truncated, &mut sink).unwrap_err();
    assert!(matches!(refused.0.problem, Problem::Truncated));
    assert!(sink.is_empty(), "nothing may be written to a refused log");
}

#[test]
fn a_writer_started_afresh_on_an_existing_log_is_caught() {
    let mut log = sample_log(3);
    ChainWriter::new(&mut log, None)
        .append(Record::new(EventKind::PolicyReload), T0)
        .unwrap();
    let error = broken(&log);
    assert_eq!(error.line, 4);
}

/// A sink that writes until `budget` bytes have gone, then fails once; flush fails while
/// `bad_flush`. Shared, so the test can change it while the writer owns it.
#[derive(Clone, Default)]
struct Flaky(Rc<RefCell<FlakyState>>);

#[derive(Default)]
struct FlakyState {
    log: Vec<u8>,
    budget: Option<usize>,
    bad_flush: bool,
}

impl Flaky {
    fn log(&self) -> Vec<u8> {
        self.0.borrow().log.clone()
    }
}

impl Write for Flaky {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut state = self.0.borrow_mut();
        match state.budget {
            Some(0) => {
                state.budget = None;
                Err(io::Error::other("no space left"))
            }
            Some(budget) => {
                let n = budget.min(buf.len());
                state.budget = Some(budget - n);
                state.log.extend_from_slice(&buf[..n]);
                Ok(n)
            }
            None => {
                state.log.extend_from_slice(buf);
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.0.borrow().bad_flush {
            true => Err(io::Error::other("flush failed")),
            false => Ok(()),
        }
    }
}

#[test]
fn a_write_that_fails_midway_leaves_one_removable_line() {
    let sink = Flaky::default();
    let mut writer = ChainWriter::new(sink.clone(), None);
    writer.append(full_record(0), T0).unwrap();
    sink.0.borrow_mut().budget = Some(30);
    let failed = writer.append(full_record(1), T0 + 1).unwrap_err();
    assert!(matches!(failed, AppendError::Write(_)), "{failed}");
    assert!(failed.to_string().contains("no space left"), "{failed}");
    assert_eq!(writer.head().unwrap().seq, 0, "the chain did not advance");
    writer.append(full_record(2), T0 + 2).unwrap();

    let log = sink.log();
    let error = broken(&log);
    assert_eq!(error.line, 2);
    assert!(matches!(error.problem, Problem::Unparseable(_)));
    let mut lines = lines(&log);
    lines.remove(1);
    assert_eq!(audit::verify(&lines.concat()[..]).unwrap().records, 2);
}

#[test]
fn a_write_that_fails_again_before_ending_the_partial_line_still_ends_it() {
    let sink = Flaky::default();
    let mut writer = ChainWriter::new(sink.clone(), None);
    sink.0.borrow_mut().budget = Some(10);
    assert!(writer.append(full_record(0), T0).is_err());
    sink.0.borrow_mut().budget = Some(0);
    assert!(writer.append(full_record(1), T0).is_err());
    writer.append(full_record(2), T0).unwrap();
    let mut lines = lines(&sink.log());
    assert_eq!(lines.len(), 2);
    lines.remove(0);
    assert_eq!(audit::verify(&lines.concat()[..]).unwrap().records, 1);
}

#[test]
fn a_write_that_fails_before_any_byte_leaves_the_log_intact() {
    let sink = Flaky::default();
    let mut writer = ChainWriter::new(sink.clone(), None);
    sink.0.borrow_mut().budget = Some(0);
    assert!(writer.append(full_record(0), T0).is_err());
    writer.append(full_record(1), T0 + 1).unwrap();
    assert_eq!(audit::verify(&sink.log()[..]).unwrap().records, 1);
}

#[test]
fn a_failed_flush_still_counts_the_record() {
    let sink = Flaky::default();
    sink.0.borrow_mut().bad_flush = true;
    let mut writer = ChainWriter::new(sink.clone(), None);
    let failed = writer.append(full_record(0), T0).unwrap_err();
    assert!(matches!(failed, AppendError::Flush(_)), "{failed}");
    assert_eq!(writer.head().unwrap().seq, 0);
    assert!(writer.append(full_record(1), T0 + 1).is_err());
    assert_eq!(audit::verify(&sink.log()[..]).unwrap().records, 2);
}

#[test]
fn sequence_numbers_do_not_overflow() {
    let last = Head {
        seq: u64::MAX,
        hash: "0".repeat(64),
    };
    let mut writer = ChainWriter::new(Vec::new(), Some(last));
    let error = writer
        .append(Record::new(EventKind::PolicyReload), T0)
        .unwrap_err();
    assert!(matches!(error, AppendError::SequenceExhausted));
}

// ---- summary ---------------------------------------------------------------------------

#[test]
fn the_summary_counts_what_happened() {
    let mut log = Vec::new();
    let mut writer = ChainWriter::new(&mut log, None);
    let mut append = |record: Record| writer.append(record, T0).unwrap();
    for decision in ["allow", "deny", "allow", "deny", "deny"] {
        let mut call = Record::new(EventKind::ApiCall);
        call.decision = Some(decision.into());
        append(call);
    }
    let mut rejected = Record::new(EventKind::SessionRejected);
    rejected.decision = Some("deny".into());
    append(rejected);
    for _ in 0..3 {
        append(Record::new(EventKind::SessionStart));
    }
    for (reason, bytes) in [
        (EndReason::ProcessExit, 100),
        (EndReason::Revoked, 20),
        (EndReason::ProcessExit, 3),
    ] {
        let mut end = Record::new(EventKind::SessionEnd);
        end.end_reason = Some(reason);
        end.bytes_client_to_target = Some(bytes);
        end.bytes_target_to_client = Some(bytes * 10);
        append(end);
    }
    let mut stream = Record::new(EventKind::StreamClose);
    stream.bytes_client_to_target = Some(5000); // already in its session's totals
    append(stream);

    let summary = audit::verify(&log[..]).unwrap();
    assert_eq!(summary.records, 13);
    assert_eq!(summary.count(EventKind::ApiCall), 5);
    assert_eq!(summary.count(EventKind::SessionStart), 3);
    assert_eq!(summary.count(EventKind::SessionEnd), 3);
    assert_eq!(summary.count(EventKind::AgentConnect), 0);
    assert_eq!(summary.denied_calls, 3);
    assert_eq!(summary.end_reasons.get(&EndReason::ProcessExit), Some(&2));
    assert_eq!(summary.end_reasons.get(&EndReason::Revoked), Some(&1));
    assert_eq!(summary.bytes_client_to_target, 123);
    assert_eq!(summary.bytes_target_to_client, 1230);
    assert_eq!(summary.head().unwrap().seq, 12);

    let text = summary.to_string();
    for expected in [
        "13 records, chain intact; head #12 ",
        "sessions: 3 started, 3 ended (process_exit 2, revoked 1)",
        "denied API calls: 3",
        "session bytes: 123 client to target, 1230 target to client",
        "events: api.call 5, session.start 3, session.end 3, session.rejected 1, stream.close 1",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from\n{text}");
    }
}

#[test]
fn totals_saturate_instead_of_overflowing() {
    let mut log = Vec::new();
    let mut writer = ChainWriter::new(&mut log, None);
    for _ in 0..2 {
        let mut end = Record::new(EventKind::SessionEnd);
        end.bytes_client_to_target = Some(u64::MAX);
        writer.append(end, T0).unwrap();
    }
    assert_eq!(
        audit::verify(&log[..]).unwrap().bytes_client_to_target,
        u64::MAX
    );
}

// ---- time ------------------------------------------------------------------------------

#[test]
fn times_are_rfc3339_utc_with_milliseconds() {
    for (unix_ms, text) in [
        (0, "1970-01-01T00:00:00.000Z"),
        (94_694_399_000, "1972-12-31T23:59:59.000Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        (1_709_251_199_999, "2024-02-29T23:59:59.999Z"),
        (1_795_879_840_123, "2026-11-28T15:30:40.123Z"),
        (2_147_483_648_000, "2038-01-19T03:14:08.000Z"),
        (4_107_542_399_000, "2100-02-28T23:59:59.000Z"),
        (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),
        (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
    ] {
        assert_eq!(rfc3339_ms(unix_ms), text, "{unix_ms}");
    }
    // No panic at the far end, even though RFC 3339 stops at year 9999.
    assert!(rfc3339_ms(u64::MAX).ends_with(".615Z"));
}

/// Days from 1970-01-01 to `year-month-day`, counted the slow, obvious way.
fn days_since_epoch(year: u64, month: u64, day: u64) -> u64 {
    let leap = |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let years: u64 = (1970..year).map(|y| if leap(y) { 366 } else { 365 }).sum();
    let february = if leap(year) { 29 } else { 28 };
    let lengths = [31, february, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let months: u64 = lengths[..month as usize - 1].iter().sum();
    years + months + day - 1
}

proptest! {
    #[test]
    fn formatted_times_read_back_to_the_same_instant(unix_ms in 0u64..253_402_300_800_000) {
        let text = rfc3339_ms(unix_ms);
        prop_assert_eq!(text.len(), 24);
        let field = |range: std::ops::Range<usize>| text[range].parse::<u64>().unwrap();
        let days = days_since_epoch(field(0..4), field(5..7), field(8..10));
        let seconds = days * 86_400 + field(11..13) * 3600 + field(14..16) * 60 + field(17..19);
        prop_assert_eq!(seconds * 1000 + field(20..23), unix_ms);
    }
}

// ---- asciicast -------------------------------------------------------------------------

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|error| panic!("{line}: {error}"))
}

#[test]
fn the_header_is_asciicast_v2_with_identity_under_one_key() {
    let identity = json!({
        "session_id": "alice-0abc",
        "principal": "alice",
        "target": "mi-1",
        "document": "SSM-SessionManagerRunShell",
        "run_as": "ssm-user",
    });
    let (_, header) = CastWriter::new(120, 40, 1_767_225_600, identity.clone());
    assert!(header.starts_with(r#"{"version":2,"#), "{header}");
    let header = parse(&header);
    assert_eq!(header["version"], 2);
    assert_eq!(header["width"], 120);
    assert_eq!(header["height"], 40);
    assert_eq!(header["timestamp"], 1_767_225_600);
    assert_eq!(header["env"], json!({"TERM": DEFAULT_TERM}));
    assert_eq!(header["ssm_session"], identity);
    assert_eq!(header.as_object().unwrap().len(), 6);

    let (_, header) = CastWriter::with_env(80, 24, 0, Value::Null, "screen", Some("/bin/bash"));
    let header = parse(&header);
    assert_eq!(
        header["env"],
        json!({"TERM": "screen", "SHELL": "/bin/bash"})
    );
    assert!(header.get("ssm_session").is_none());
}

#[test]
fn events_are_json_arrays_of_time_code_and_data() {
    let (mut cast, _) = CastWriter::new(80, 24, 0, Value::Null);
    let at = Duration::from_micros(9_020_551);
    let tricky = "quote \" backslash \\ escape \u{1b}[1;31m tab\t nul\0 é 🦀\r\n";
    for (line, code, data) in [
        (cast.output(at, tricky.as_bytes()).unwrap(), "o", tricky),
        (cast.resize(at, 132, 43), "r", "132x43"),
        (
            cast.marker(at, "reconnect \"gap\""),
            "m",
            "reconnect \"gap\"",
        ),
        (cast.exit(at, -15), "x", "-15"),
    ] {
        assert!(line.starts_with("[9.020551,"), "{line}");
        let event = parse(&line);
        let event = event.as_array().unwrap();
        assert_eq!(event.len(), 3);
        assert_eq!(event[0].as_f64(), Some(9.020551));
        assert_eq!(event[1], code);
        assert_eq!(event[2], data);
    }
}

#[test]
fn times_have_exactly_six_decimals() {
    let cast = CastWriter::default();
    for (elapsed, time) in [
        (Duration::ZERO, "0.000000"),
        (Duration::from_micros(1), "0.000001"),
        (Duration::from_nanos(1_000_000_999), "1.000000"),
        (Duration::from_millis(3_661_500), "3661.500000"),
    ] {
        assert_eq!(cast.marker(elapsed, ""), format!(r#"[{time},"m",""]"#));
    }
}

#[test]
fn invalid_bytes_become_replacement_characters_and_are_counted() {
    for (input, text, invalid) in [
        (&b"ok\xff\xfeok"[..], "ok\u{fffd}\u{fffd}ok", 2),
        (b"\xc0\x80", "\u{fffd}\u{fffd}", 2), // overlong NUL
        (b"\xed\xa0\x80", "\u{fffd}\u{fffd}\u{fffd}", 3), // surrogate
        (b"a\x80b", "a\u{fffd}b", 1),         // lone continuation
        (b"\xe2\x82a", "\u{fffd}a", 2),       // cut short by an ASCII byte
        ("already \u{fffd}".as_bytes(), "already \u{fffd}", 0),
    ] {
        let (mut cast, _) = CastWriter::new(80, 24, 0, Value::Null);
        let line = cast.output(Duration::ZERO, input).unwrap();
        assert_eq!(parse(&line)[2], text, "{input:?}");
        assert_eq!(cast.invalid_bytes(), invalid, "{input:?}");
        assert_eq!(cast.finish(Duration::ZERO), None);
    }
}

#[test]
fn an_incomplete_sequence_waits_for_the_next_read_or_the_end() {
    let (mut cast, _) = CastWriter::new(80, 24, 0, Value::Null);
    assert_eq!(cast.output(Duration::ZERO, b"\xe2"), None);
    assert_eq!(cast.output(Duration::ZERO, b"\x82"), None);
    let euro = cast.output(Duration::ZERO, b"\xac!").unwrap();
    assert_eq!(parse(&euro)[2], "€!");

    assert_eq!(cast.output(Duration::ZERO, b"\xf0\x9f\xa6"), None);
    let wrong = cast.output(Duration::ZERO, b"x").unwrap();
    assert_eq!(parse(&wrong)[2], "\u{fffd}x");
    assert_eq!(cast.invalid_bytes(), 3);

    assert_eq!(cast.output(Duration::ZERO, b"\xc3"), None);
    let last = cast.finish(Duration::from_secs(1)).unwrap();
    assert_eq!(last, r#"[1.000000,"o","�"]"#);
    assert_eq!(cast.invalid_bytes(), 4);
    assert_eq!(cast.finish(Duration::from_secs(1)), None);
}

/// Feeds `bytes` split at `cuts`, then finishes; the text written.
fn replay(bytes: &[u8], cuts: &[usize]) -> (String, u64) {
    let mut points: Vec<usize> = cuts.iter().map(|cut| cut % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let (mut cast, _) = CastWriter::new(80, 24, 0, Value::Null);
    let mut text = String::new();
    let mut start = 0;
    let mut lines: Vec<String> = Vec::new();
    for point in points.into_iter().chain([bytes.len()]) {
        lines.extend(cast.output(Duration::ZERO, &bytes[start..point]));
        start = point;
    }
    lines.extend(cast.finish(Duration::ZERO));
    for line in lines {
        let event = parse(&line);
        assert_eq!(event[1], "o");
        text.push_str(event[2].as_str().unwrap());
    }
    (text, cast.invalid_bytes())
}

proptest! {
    #[test]
    fn valid_utf8_split_anywhere_is_written_exactly(text in "\\PC{0,60}", cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let (written, invalid) = replay(text.as_bytes(), &cuts);
        prop_assert_eq!(written, text);
        prop_assert_eq!(invalid, 0);
    }

    #[test]
    fn any_bytes_split_anywhere_read_as_if_whole(bytes in proptest::collection::vec(any::<u8>(), 0..80), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let (written, invalid) = replay(&bytes, &cuts);
        prop_assert_eq!(written, String::from_utf8_lossy(&bytes));
        let expected: usize = bytes.utf8_chunks().map(|chunk| chunk.invalid().len()).sum();
        prop_assert_eq!(invalid, expected as u64);
    }
}

#[test]
fn a_chunk_digest_is_the_sha256_of_its_lines() {
    let (mut cast, header) = CastWriter::new(80, 24, 0, Value::Null);
    let lines = format!(
        "{header}\n{}\n",
        cast.output(Duration::ZERO, b"$ ").unwrap()
    );
    assert_eq!(
        chunk_digest(&lines),
        hex::encode(Sha256::digest(lines.as_bytes()))
    );
    assert_eq!(
        chunk_digest("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
