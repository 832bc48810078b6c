//! The interactive terminal: raw mode while the session runs (restored on every exit path,
//! panics included), size changes sent on SIGWINCH, every byte — Ctrl-C too — passed through.

use std::future::Future;
use std::io::{self, IsTerminal, Write};
use std::os::fd::AsFd;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::SessionSummary;
use crate::net::{Connection, Ending, Incoming};

/// Puts a terminal in raw mode and restores it when dropped.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enter(fd: impl AsFd) -> io::Result<RawMode> {
        let saved = rustix::termios::tcgetattr(&fd)?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&fd, rustix::termios::OptionalActions::Now, &raw)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

fn window_size() -> Option<(u32, u32)> {
    let size = rustix::termios::tcgetwinsize(io::stdout()).ok()?;
    (size.ws_col > 0 && size.ws_row > 0).then(|| (u32::from(size.ws_col), u32::from(size.ws_row)))
}

/// Runs a shell-type session on this process's terminal (or pipes): stdin to the session,
/// output to stdout, stderr output to stderr. Returns when the session ends, or ends it — the
/// agent told, through a close ([`crate::session::Session::close`]) — when `stop` completes
/// (the programs pass SIGTERM, SIGHUP and SIGINT) or the terminal is gone (its input ends or
/// fails, or output cannot be written): a client that leaves never leaves its shell behind.
pub async fn run_terminal(
    connection: Connection,
    stop: impl Future<Output = ()>,
) -> io::Result<SessionSummary> {
    run_io(connection, false, stop).await
}

/// Runs a standard-stream port session (SSH `ProxyCommand` style, PROTOCOL.md §9.5): stdin to
/// the session, session to stdout; stdin's end, or `stop`, ends the session.
pub async fn run_standard_stream(
    connection: Connection,
    stop: impl Future<Output = ()>,
) -> io::Result<SessionSummary> {
    run_io(connection, true, stop).await
}

/// Why the loop below left the session.
enum Leave {
    /// The session ended.
    Ended(Ending),
    /// We end it: asked to, or our side of the terminal or pipe is gone.
    Close,
}

async fn run_io(
    connection: Connection,
    end_on_eof: bool,
    stop: impl Future<Output = ()>,
) -> io::Result<SessionSummary> {
    let started = Instant::now();
    let interactive = io::stdin().is_terminal();
    let _raw = match interactive {
        true => Some(RawMode::enter(io::stdin())?),
        false => None,
    };
    let mut resized =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    let (mut reader, mut writer) = connection.split();
    if let Some((cols, rows)) = window_size() {
        let _ = writer.resize(cols, rows).await;
    }
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let mut input = vec![0; 4096];
    let mut stdin_open = true;
    let (mut sent, mut received) = (0u64, 0u64);
    let mut exit_code = None;
    tokio::pin!(stop);
    let leave = loop {
        tokio::select! {
            read = stdin.read(&mut input), if stdin_open => match read {
                Ok(n) if n > 0 => {
                    sent += n as u64;
                    if writer.write_all(&input[..n]).await.is_err() {
                        stdin_open = false;
                    }
                }
                // A terminal's input ends or fails when the terminal is gone; a pipe's end is
                // the end of the input, which ends standard-stream sessions only.
                _ if interactive || end_on_eof => break Leave::Close,
                _ => stdin_open = false,
            },
            () = &mut stop => break Leave::Close,
            _ = resized.recv() => {
                if let Some((cols, rows)) = window_size() {
                    let _ = writer.resize(cols, rows).await;
                }
            }
            incoming = reader.recv() => match incoming {
                Some(Incoming::Data(bytes)) => {
                    received += bytes.len() as u64;
                    let written = async {
                        stdout.write_all(&bytes).await?;
                        stdout.flush().await
                    };
                    if written.await.is_err() {
                        break Leave::Close;
                    }
                }
                Some(Incoming::Stderr(bytes)) => {
                    received += bytes.len() as u64;
                    let mut stderr = io::stderr();
                    if stderr.write_all(&bytes).and_then(|()| stderr.flush()).is_err() {
                        break Leave::Close;
                    }
                }
                Some(Incoming::ExitCode(code)) => exit_code = Some(code.0),
                Some(Incoming::Ended(ending)) => break Leave::Ended(ending),
                None => break Leave::Ended(reader.ending().cloned().unwrap_or(Ending::Closed)),
                Some(_) => {}
            },
        }
    };
    let ending = match leave {
        Leave::Ended(ending) => ending,
        Leave::Close => {
            // Unread input would hold up the acknowledgements the close waits for.
            drop(reader);
            writer.close().await.unwrap_or(Ending::Closed)
        }
    };
    Ok(SessionSummary {
        exit_code,
        ending,
        bytes_sent: sent,
        bytes_received: received,
        duration: started.elapsed(),
    })
}
