//! The `frame` example as a black box: it round-trips every golden frame, reproduces every
//! decode outcome, and answers any input with exactly one line.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

/// `cargo test` builds the examples next to the test binaries' `deps` directory.
fn frame_tool() -> PathBuf {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let tool = deps
        .parent()
        .unwrap()
        .join("examples")
        .join(format!("frame{}", std::env::consts::EXE_SUFFIX));
    assert!(
        tool.exists(),
        "{} not built; run the tests with `cargo test`",
        tool.display()
    );
    tool
}

fn run(args: &[&str], input: &[u8]) -> Vec<String> {
    let mut child = Command::new(frame_tool())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn cases(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR")))
        .unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["cases"]
        .as_array()
        .unwrap()
        .clone()
}

const FIELDS: [&str; 12] = [
    "header_length",
    "message_type",
    "schema_version",
    "created_date",
    "sequence_number",
    "flags",
    "message_id",
    "payload_digest",
    "payload_type",
    "payload_length",
    "payload",
    "frame_length",
];

#[test]
fn decode_then_encode_round_trips_every_golden_frame() {
    let frames: Vec<Value> = cases("frames.json")
        .into_iter()
        .filter(|c| !c["frame"].is_null())
        .collect();
    let input: String = frames
        .iter()
        .map(|c| format!("{}\n", c["frame"].as_str().unwrap()))
        .collect();
    let decoded = run(&["decode"], input.as_bytes());
    assert_eq!(decoded.len(), frames.len());
    for (case, line) in frames.iter().zip(&decoded) {
        let json: Value = serde_json::from_str(line).unwrap();
        assert_eq!(json["ok"], true, "{}: {line}", case["name"]);
        for field in &FIELDS[..FIELDS.len() - 1] {
            assert_eq!(json[field], case[field], "{}: {field}", case["name"]);
        }
    }
    let encoded = run(&["encode"], (decoded.join("\n") + "\n").as_bytes());
    for (case, hex) in frames.iter().zip(&encoded) {
        assert_eq!(hex, case["frame"].as_str().unwrap(), "{}", case["name"]);
    }
}

#[test]
fn encode_refuses_frames_the_reference_cannot_send() {
    let refused: Vec<Value> = cases("frames.json")
        .into_iter()
        .filter(|c| c["frame"].is_null())
        .collect();
    let input: String = refused.iter().map(|c| format!("{c}\n")).collect();
    for (case, line) in refused.iter().zip(run(&["encode"], input.as_bytes())) {
        let json: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(json["ok"], false, "{}", case["name"]);
        assert!(!json["error"].as_str().unwrap().is_empty());
    }
}

#[test]
fn decode_outcomes_follow_the_client_and_no_verify_the_agent() {
    let decode = cases("decode.json");
    let input: String = decode
        .iter()
        .map(|c| format!("{}\n", c["frame"].as_str().unwrap()))
        .collect();
    for (args, side) in [
        (&["decode"][..], "client"),
        (&["decode", "--no-verify"][..], "agent"),
    ] {
        let lines = run(args, input.as_bytes());
        assert_eq!(lines.len(), decode.len());
        for (case, line) in decode.iter().zip(lines) {
            let json: Value = serde_json::from_str(&line).unwrap();
            let name = case["name"].as_str().unwrap();
            // Documented deviations from the Go agent, see tests/vectors.rs.
            let expected = match (side, name) {
                (_, "header_length_ffffffff") => false,
                ("agent", "pause_publication_created_date_zero") => true,
                _ => case[side]["outcome"] == "accepted",
            };
            assert_eq!(json["ok"], expected, "{side} {name}: {line}");
        }
    }
}

#[test]
fn any_input_gives_one_line_per_line_and_no_panic() {
    let garbage: &[u8] = b"\nzz\n0\n00000074\n\xff\xfe\n{}\n{\"message_type\":1}\nnull\n[]\n{\"message_type\":\"x\",\"created_date\":-1}\n";
    let expected_lines = garbage.split(|b| *b == b'\n').count() - 1;
    for args in [&["decode"][..], &["decode", "--no-verify"], &["encode"]] {
        let lines = run(args, garbage);
        assert_eq!(lines.len(), expected_lines, "{args:?}");
        for line in lines {
            let json: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(json["ok"], false, "{args:?}: {line}");
        }
    }
}
