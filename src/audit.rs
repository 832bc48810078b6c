//! The audit trail: a tamper-evident JSON-lines log and asciicast v2 recordings.
//!
//! Each log line is one [`Record`] with `seq`, `time` (UTC, milliseconds), `prev` and `hash`
//! added: `hash` is the SHA-256 of `prev` followed by the line's canonical JSON without `hash`
//! (fixed field order, no whitespace), and `prev` is the previous line's hash (the first line
//! chains from the SHA-256 of [`GENESIS`]). Editing, deleting, reordering or truncating any
//! record breaks the chain at that line, which [`verify`] reports. A restarted gateway
//! continues the chain from [`Summary::head`], and refuses to continue a broken log.
//!
//! Records have no field for tokens, keys or session data: they cannot be logged.
//!
//! # Examples
//!
//! ```
//! use ssm_session::audit::{self, ChainWriter, EventKind, Record};
//!
//! let mut log = Vec::new();
//! let mut writer = ChainWriter::new(&mut log, None);
//! let mut call = Record::new(EventKind::ApiCall);
//! call.principal = Some("alice".into());
//! call.decision = Some("allow".into());
//! writer.append(call, 1_764_343_840_123)?;
//! writer.append(Record::new(EventKind::PolicyReload), 1_764_343_841_000)?;
//! assert_eq!(audit::verify(&log[..])?.records, 2);
//!
//! let edited = String::from_utf8(log)?.replace("alice", "mallory");
//! let broken = audit::verify(edited.as_bytes()).unwrap_err();
//! assert_eq!(broken.line, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cast;
mod chain;

pub use chain::{
    ChainWriter, EndReason, EventKind, GENESIS, Head, Record, Summary, VerifyError, rfc3339_ms,
    verify,
};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_log(records: usize) -> String {
        let mut log = Vec::new();
        let mut writer = ChainWriter::new(&mut log, None);
        for i in 0..records {
            let mut record = Record::new(match i % 3 {
                0 => EventKind::ApiCall,
                1 => EventKind::SessionStart,
                _ => EventKind::SessionEnd,
            });
            record.principal = Some(format!("user{i}"));
            record.decision = Some(if i % 2 == 0 { "allow" } else { "deny" }.into());
            record.end_reason = (i % 3 == 2).then_some(EndReason::ProcessExit);
            record.bytes_client_to_target = Some(i as u64);
            writer.append(record, 1_700_000_000_000 + i as u64).unwrap();
        }
        String::from_utf8(log).unwrap()
    }

    #[test]
    fn times_are_rfc3339_with_milliseconds() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_796_484_640_123), "2026-12-05T15:30:40.123Z");
        assert_eq!(rfc3339_ms(1_709_164_800_999), "2024-02-29T00:00:00.999Z");
    }

    #[test]
    fn deletion_reordering_and_truncation_are_detected() {
        let log = sample_log(6);
        let lines: Vec<&str> = log.lines().collect();
        let summary = verify(log.as_bytes()).unwrap();
        assert_eq!(summary.records, 6);
        assert_eq!(summary.denied_calls, 1);
        assert_eq!(summary.end_reasons.get("process_exit"), Some(&2));

        let mut deleted = lines.clone();
        deleted.remove(2);
        assert_eq!(verify(deleted.join("\n").as_bytes()).unwrap_err().line, 3);
        let mut swapped = lines.clone();
        swapped.swap(3, 4);
        assert_eq!(verify(swapped.join("\n").as_bytes()).unwrap_err().line, 4);
        let truncated = &log[..log.len() - 10];
        assert_eq!(verify(truncated.as_bytes()).unwrap_err().line, 6);
        let extra_field = log.replacen("\"seq\":1,", "\"seq\":1,\"x\":1,", 1);
        assert_eq!(verify(extra_field.as_bytes()).unwrap_err().line, 2);
    }

    #[test]
    fn a_continued_log_stays_one_chain() {
        let log = sample_log(3);
        let head = verify(log.as_bytes()).unwrap().head();
        let mut more = log.clone().into_bytes();
        let mut writer = ChainWriter::new(&mut more, head);
        writer.append(Record::new(EventKind::PolicyReload), 1).unwrap();
        assert_eq!(verify(&more[..]).unwrap().records, 4);
        // Continuing from a wrong head is visible at the new record.
        let mut forked = log.into_bytes();
        let mut writer = ChainWriter::new(&mut forked, None);
        writer.append(Record::new(EventKind::PolicyReload), 1).unwrap();
        assert_eq!(verify(&forked[..]).unwrap_err().line, 4);
    }

    proptest! {
        #[test]
        fn editing_any_field_of_any_record_is_caught_at_that_line(which in 0usize..8, field in 0usize..4) {
            let log = sample_log(8);
            let mut lines: Vec<String> = log.lines().map(str::to_owned).collect();
            let (from, to) = [
                (format!("user{which}"), format!("user{which}x")),
                ("\"seq\":".to_owned(), "\"seq\": ".to_owned()),
                (":00.0".to_owned(), ":00.1".to_owned()),
                ("\"bytes_client_to_target\":".to_owned(), "\"bytes_client_to_target\":1".to_owned()),
            ][field].clone();
            let edited = lines[which].replacen(&from, &to, 1);
            prop_assume!(edited != lines[which]);
            lines[which] = edited;
            let error = verify(lines.join("\n").as_bytes()).unwrap_err();
            prop_assert_eq!(error.line, which + 1);
        }

        #[test]
        fn verify_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = verify(&bytes[..]);
        }
    }
}
