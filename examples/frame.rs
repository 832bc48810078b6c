//! Inspect and build data-channel frames, one per line.
//!
//! ```text
//! cargo run --example frame -- decode [--no-verify]   # hex frame in, JSON out
//! cargo run --example frame -- encode                 # JSON in, hex frame out
//! ```
//!
//! Every input line gives exactly one output line; a line that cannot be handled gives
//! `{"ok":false,"error":"…"}`. The output of `decode` is valid input for `encode`.

use std::io::{self, BufRead, Write};
use std::process::ExitCode;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use ssm_session::{DecodeOptions, Frame, Header, MessageType, PayloadType};
use uuid::Uuid;

#[derive(Parser)]
#[command(about = "Decode and encode Session Manager data-channel frames, one per line")]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Read hex frames, print their fields as JSON.
    Decode {
        /// Accept frames whose PayloadDigest does not match (as the agent does).
        #[arg(long)]
        no_verify: bool,
    },
    /// Read JSON frame descriptions, print the frames as hex.
    Encode,
}

/// Every field of a decoded frame, in wire order.
#[derive(Serialize)]
struct Decoded {
    ok: bool,
    header_length: u32,
    message_type: String,
    schema_version: u32,
    created_date: u64,
    sequence_number: i64,
    flags: u64,
    message_id: String,
    payload_digest: String,
    payload_type: u32,
    payload_length: u32,
    payload: String,
}

/// The fields a sender chooses; the wire-only ones are computed. Unknown keys are ignored so
/// that `decode` output can be fed back.
#[derive(Deserialize)]
struct ToEncode {
    message_type: String,
    #[serde(default = "schema_version")]
    schema_version: u32,
    created_date: u64,
    sequence_number: i64,
    #[serde(default)]
    flags: u64,
    message_id: String,
    payload_type: u32,
    payload: String,
}

fn schema_version() -> u32 {
    ssm_session::SCHEMA_VERSION
}

#[derive(Serialize)]
struct Failure {
    ok: bool,
    error: String,
}

fn decode_line(line: &str, options: DecodeOptions) -> Result<String, String> {
    let message = hex::decode(line.trim()).map_err(|e| format!("invalid hex: {e}"))?;
    let header = Header::parse(&message).map_err(|e| e.to_string())?;
    let frame = Frame::decode_with(Bytes::from(message), options).map_err(|e| e.to_string())?;
    let decoded = Decoded {
        ok: true,
        header_length: header.header_length,
        message_type: frame.message_type.to_string(),
        schema_version: frame.schema_version,
        created_date: frame.created_date,
        sequence_number: frame.sequence_number,
        flags: frame.flags,
        message_id: frame.message_id.hyphenated().to_string(),
        payload_digest: hex::encode(header.payload_digest),
        payload_type: frame.payload_type.into(),
        payload_length: header.payload_length,
        payload: hex::encode(&frame.payload),
    };
    Ok(serde_json::to_string(&decoded).expect("plain data serializes"))
}

fn encode_line(line: &str) -> Result<String, String> {
    let input: ToEncode = serde_json::from_str(line).map_err(|e| format!("invalid input: {e}"))?;
    let payload = hex::decode(&input.payload).map_err(|e| format!("invalid payload hex: {e}"))?;
    let message_id =
        Uuid::parse_str(&input.message_id).map_err(|e| format!("invalid message_id: {e}"))?;
    let message_type =
        MessageType::try_from(input.message_type.as_str()).map_err(|e| e.to_string())?;
    let frame = Frame {
        message_type,
        schema_version: input.schema_version,
        created_date: input.created_date,
        sequence_number: input.sequence_number,
        flags: input.flags,
        message_id,
        payload_type: PayloadType::from(input.payload_type),
        payload: payload.into(),
    };
    frame.to_bytes().map(hex::encode).map_err(|e| e.to_string())
}

fn run(mode: &Mode) -> io::Result<()> {
    let stdin = io::stdin().lock();
    let mut stdout = io::BufWriter::new(io::stdout().lock());
    for line in stdin.split(b'\n') {
        let line = line?;
        let line = String::from_utf8_lossy(&line);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        let result = match mode {
            Mode::Decode { no_verify } => {
                decode_line(line, DecodeOptions::default().verify_digest(!no_verify))
            }
            Mode::Encode => encode_line(line),
        };
        let output = result.unwrap_or_else(|error| {
            serde_json::to_string(&Failure { ok: false, error }).expect("plain data serializes")
        });
        writeln!(stdout, "{output}")?;
    }
    stdout.flush()
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args.mode) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("frame: {error}");
            ExitCode::FAILURE
        }
    }
}
