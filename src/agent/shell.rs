//! `Standard_Stream` and `InteractiveCommands` sessions: a process in a PTY, recorded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::account;
use super::reap::reap;
use super::recorder::{FLUSH_EVERY, Recorder};
use super::{Context, Outcome};
use crate::control::EndReason;
use crate::document::{AgentSessionRequest, SessionType};
use crate::net::{Connection, Incoming, WriteHalf};
use crate::payload::Flag;

/// How long output is still read after the process exited or was killed (its children may
/// hold the PTY).
pub(crate) const DRAIN: Duration = Duration::from_millis(300);

pub(crate) async fn run(
    context: &Arc<Context>,
    connection: Connection,
    request: &AgentSessionRequest,
    cancel: CancellationToken,
) -> Outcome {
    let account = match account::resolve(request, context.settings.default_run_as.as_deref()).await
    {
        Ok(account) => account,
        Err(why) => return refuse(connection, why).await,
    };
    let (pty, pts) = match pty_process::open() {
        Ok(pair) => pair,
        Err(error) => return refuse(connection, format!("opening a PTY: {error}")).await,
    };
    let _ = pty.resize(pty_process::Size::new(24, 80));
    let mut command = match (&request.session.session_type, &request.session.command) {
        (SessionType::InteractiveCommands, Some(command)) => {
            pty_process::Command::new("/bin/sh").arg("-c").arg(command)
        }
        _ => pty_process::Command::new(&context.settings.shell),
    };
    let environment =
        account::session_environment(account.as_ref(), &context.settings.shell, |name| {
            std::env::var(name).ok()
        });
    command = command
        .env_clear()
        .envs(environment)
        .env("TERM", "xterm-256color");
    if let Some(account) = &account {
        command = command
            .uid(account.uid)
            .gid(account.gid)
            .current_dir(account.working_directory());
    }
    let mut child = match command.kill_on_drop(true).spawn(pts) {
        Ok(child) => child,
        Err(error) => return refuse(connection, format!("starting the shell: {error}")).await,
    };
    // The shell leads its own session (the PTY's setsid): what it starts is reaped with it.
    let leader = child.id();
    let (mut pty_out, mut pty_in) = pty.into_split();
    if let Some(profile) = &request.session.preferences.shell_profile_linux
        && !profile.trim().is_empty()
        && request.session.session_type == SessionType::StandardStream
    {
        let _ = pty_in.write_all(format!("{profile}\n").as_bytes()).await;
    }

    let mut recorder = match Recorder::for_session(context, request, account.as_ref(), &connection)
    {
        Ok(recorder) => recorder,
        Err(why) => return refuse(connection, why).await,
    };
    let (mut reader, mut writer) = connection.split();
    let idle = request.session.preferences.idle_session_timeout;
    let mut idle_deadline = Instant::now() + idle;
    let max_deadline = request
        .session
        .preferences
        .max_session_duration
        .map(|limit| Instant::now() + limit);
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    let mut buffer = vec![0; 16 * 1024];
    let mut exited = None;
    let ended: Option<Outcome> = loop {
        let max = async {
            match max_deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = pty_out.read(&mut buffer) => match read {
                Ok(n) if n > 0 => {
                    recorder.output(&buffer[..n]);
                    if writer.write_all(&buffer[..n]).await.is_err() {
                        break Some(Outcome::from_ending(&reader_ending(&reader)));
                    }
                }
                // EOF or EIO: every holder of the PTY is gone.
                _ => break None,
            },
            incoming = reader.recv() => match incoming {
                Some(Incoming::Data(bytes)) => {
                    idle_deadline = Instant::now() + idle;
                    if pty_in.write_all(&bytes).await.is_err() {
                        break None;
                    }
                }
                Some(Incoming::Resize(size)) => {
                    let rows = size.rows.clamp(1, u32::from(u16::MAX)) as u16;
                    let cols = size.cols.clamp(1, u32::from(u16::MAX)) as u16;
                    let _ = pty_in.resize(pty_process::Size::new(rows, cols));
                    recorder.resize(size.cols, size.rows);
                }
                Some(Incoming::Flag(Flag::TerminateSession)) => {
                    break Some(Outcome { reason: EndReason::ClientExit, exit_code: None, output: String::new(), recording: None });
                }
                Some(Incoming::Ended(ending)) => break Some(Outcome::from_ending(&ending)),
                None => break Some(Outcome::from_ending(&reader_ending(&reader))),
                Some(_) => {}
            },
            status = child.wait(), if exited.is_none() => {
                exited = Some(status);
                drain(&mut pty_out, &mut buffer, &mut recorder, &mut writer).await;
                break None;
            }
            () = tokio::time::sleep_until(idle_deadline.into()) => {
                let text = format!("\r\nSession ended: no input for {} s (idle timeout).\r\n", idle.as_secs());
                let _ = writer.write_all(text.as_bytes()).await;
                recorder.marker("idle timeout");
                break Some(Outcome { reason: EndReason::IdleTimeout, exit_code: None, output: "idle timeout".into(), recording: None });
            }
            () = max => {
                let _ = writer.write_all(b"\r\nSession ended: maximum session duration reached.\r\n").await;
                recorder.marker("max duration");
                break Some(Outcome { reason: EndReason::MaxDuration, exit_code: None, output: "maximum session duration reached".into(), recording: None });
            }
            () = cancel.cancelled() => {
                // The process goes first, so that the drain ends once its output is read.
                let _ = child.start_kill();
                drain(&mut pty_out, &mut buffer, &mut recorder, &mut writer).await;
                recorder.marker("session cancelled");
                break Some(Outcome { reason: EndReason::Terminated, exit_code: None, output: String::new(), recording: None });
            }
            _ = flush.tick() => recorder.flush(),
        }
    };
    // Unread input would hold up the acknowledgements the close waits for.
    drop(reader);
    if let Some(mut outcome) = ended {
        reap(leader).await;
        outcome.recording = recorder.finish(None).await;
        let _ = writer.close().await;
        return outcome;
    }
    let status = match exited {
        Some(status) => status,
        None => child.wait().await,
    };
    let code = status.map_or(-1, |status| exit_code(&status));
    // The shell is gone; what it left running in its session goes with it.
    reap(leader).await;
    let recording = recorder.finish(Some(code)).await;
    let _ = writer.send_exit_code(code).await;
    let _ = writer.close().await;
    Outcome {
        reason: EndReason::ProcessExit,
        exit_code: Some(code),
        output: String::new(),
        recording,
    }
}

/// Reads what the PTY still holds once the process is gone or going, for at most [`DRAIN`]:
/// to the client and the recording.
async fn drain(
    pty_out: &mut (impl AsyncRead + Unpin),
    buffer: &mut [u8],
    recorder: &mut Recorder,
    writer: &mut WriteHalf,
) {
    let deadline = Instant::now() + DRAIN;
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline.into(), pty_out.read(buffer)).await {
        if n == 0 {
            break;
        }
        recorder.output(&buffer[..n]);
        if writer.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
}

fn reader_ending(reader: &crate::net::ReadHalf) -> crate::net::Ending {
    reader
        .ending()
        .cloned()
        .unwrap_or(crate::net::Ending::Closed)
}

/// The shell convention: the code, or 128 + the signal that killed it.
pub(crate) fn exit_code(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(-1)
}

/// Tells the client why the session cannot run, then ends it.
pub(crate) async fn refuse(connection: Connection, why: String) -> Outcome {
    let (_, mut writer) = connection.split();
    let _ = writer.write_all(format!("\r\n{why}\r\n").as_bytes()).await;
    let _ = writer.send_exit_code(1).await;
    let _ = writer.close().await;
    Outcome::failed(why)
}
