//! asciicast v2 lines for terminal recordings (plays in asciinema): a header line, then one
//! `[time, code, data]` array per event, times in seconds since the start.

use std::time::Duration;

use serde_json::{Value, json};

/// Writes asciicast v2 lines; the caller ships or stores them.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ssm_session::audit::cast::CastWriter;
///
/// let (mut cast, header) = CastWriter::new(80, 24, 1_767_225_600, serde_json::json!({"session_id": "s-1"}));
/// assert!(header.starts_with(r#"{"version":2"#));
/// // "é" split across two reads is held back, then written whole.
/// assert_eq!(cast.output(Duration::from_millis(1), b"caf\xc3"), Some(r#"[0.001000,"o","caf"]"#.to_owned()));
/// assert_eq!(cast.output(Duration::from_millis(2), b"\xa9"), Some(r#"[0.002000,"o","é"]"#.to_owned()));
/// ```
#[derive(Debug)]
pub struct CastWriter {
    pending: Vec<u8>,
    invalid_bytes: u64,
}

impl CastWriter {
    /// A recording of a `cols`×`rows` terminal started at `start_unix` (seconds); `identity`
    /// goes under the header's one namespaced key, `ssm_session`. Returns the header line.
    pub fn new(cols: u32, rows: u32, start_unix: u64, identity: Value) -> (CastWriter, String) {
        let header = json!({
            "version": 2,
            "width": cols,
            "height": rows,
            "timestamp": start_unix,
            "env": {"TERM": "xterm-256color", "SHELL": "/bin/sh"},
            "ssm_session": identity,
        });
        (
            CastWriter {
                pending: Vec::new(),
                invalid_bytes: 0,
            },
            header.to_string(),
        )
    }

    /// An output event for `bytes`, holding back an incomplete UTF-8 sequence at the end until
    /// the next call completes it; invalid bytes become U+FFFD (and are counted).
    pub fn output(&mut self, elapsed: Duration, bytes: &[u8]) -> Option<String> {
        self.pending.extend_from_slice(bytes);
        let keep = incomplete_tail(&self.pending);
        let complete: Vec<u8> = self.pending.drain(..self.pending.len() - keep).collect();
        self.event(elapsed, "o", &complete)
    }

    /// Flushes a held-back partial sequence (as U+FFFD) at the end of a recording.
    pub fn finish(&mut self, elapsed: Duration) -> Option<String> {
        let rest = std::mem::take(&mut self.pending);
        self.event(elapsed, "o", &rest)
    }

    fn event(&mut self, elapsed: Duration, code: &str, bytes: &[u8]) -> Option<String> {
        if bytes.is_empty() {
            return None;
        }
        let text = String::from_utf8_lossy(bytes);
        if let std::borrow::Cow::Owned(_) = text {
            self.invalid_bytes += text.matches('\u{fffd}').count() as u64;
        }
        Some(line(elapsed, code, &text))
    }

    /// A resize event, data `COLSxROWS`.
    pub fn resize(&self, elapsed: Duration, cols: u32, rows: u32) -> String {
        line(elapsed, "r", &format!("{cols}x{rows}"))
    }

    /// A marker an auditor should see on the timeline.
    pub fn marker(&self, elapsed: Duration, label: &str) -> String {
        line(elapsed, "m", label)
    }

    /// The exit status (asciicast v3's `x`, skipped by v2 players).
    pub fn exit(&self, elapsed: Duration, code: i32) -> String {
        line(elapsed, "x", &code.to_string())
    }

    /// Replacement characters written for invalid UTF-8 so far.
    pub fn invalid_bytes(&self) -> u64 {
        self.invalid_bytes
    }
}

fn line(elapsed: Duration, code: &str, data: &str) -> String {
    format!(
        "[{}.{:06},{},{}]",
        elapsed.as_secs(),
        elapsed.subsec_micros(),
        Value::from(code),
        Value::from(data)
    )
}

/// How many bytes at the end of `bytes` start a UTF-8 sequence that is not complete yet.
fn incomplete_tail(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let byte = bytes[bytes.len() - back];
        if byte & 0xC0 == 0x80 {
            continue; // continuation: look further back for the lead byte
        }
        let needed = match byte {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return 0,
        };
        return if needed > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_and_events_are_json() {
        let (mut cast, header) = CastWriter::new(120, 40, 1, json!({"session_id": "s"}));
        let header: Value = serde_json::from_str(&header).unwrap();
        assert_eq!((header["version"].as_u64(), header["width"].as_u64()), (Some(2), Some(120)));
        assert_eq!(header["ssm_session"]["session_id"], "s");
        let elapsed = Duration::from_micros(2_500_117);
        for text in [
            cast.output(elapsed, b"a\"b\x1b[0m").unwrap(),
            cast.resize(elapsed, 132, 43),
            cast.marker(elapsed, "idle"),
            cast.exit(elapsed, 3),
        ] {
            let event: Value = serde_json::from_str(&text).unwrap();
            assert!(text.starts_with("[2.500117,"), "{text}");
            assert_eq!(event.as_array().unwrap().len(), 3);
        }
        assert!(cast.resize(elapsed, 132, 43).ends_with(r#""r","132x43"]"#));
    }

    #[test]
    fn invalid_bytes_are_replaced_and_counted() {
        let (mut cast, _) = CastWriter::new(80, 24, 0, Value::Null);
        let text = cast.output(Duration::ZERO, b"ok\xff\xfeok").unwrap();
        assert!(text.contains("ok\u{fffd}\u{fffd}ok"));
        assert_eq!(cast.invalid_bytes(), 2);
        assert_eq!(cast.output(Duration::ZERO, b"\xe2\x82"), None, "held back");
        assert!(cast.finish(Duration::ZERO).unwrap().contains('\u{fffd}'));
    }

    proptest! {
        #[test]
        fn any_split_of_valid_utf8_reassembles_exactly(text in "\\PC{0,40}", cuts in proptest::collection::vec(0usize..200, 0..6)) {
            let bytes = text.as_bytes();
            let mut points: Vec<usize> = cuts.into_iter().map(|cut| cut % (bytes.len() + 1)).collect();
            points.sort();
            let (mut cast, _) = CastWriter::new(80, 24, 0, Value::Null);
            let mut out = String::new();
            let mut start = 0;
            for point in points.into_iter().chain([bytes.len()]) {
                if let Some(line) = cast.output(Duration::ZERO, &bytes[start..point]) {
                    let event: Value = serde_json::from_str(&line).unwrap();
                    out.push_str(event[2].as_str().unwrap());
                }
                start = point;
            }
            prop_assert!(cast.finish(Duration::ZERO).is_none());
            prop_assert_eq!(out, text);
            prop_assert_eq!(cast.invalid_bytes(), 0);
        }
    }
}
