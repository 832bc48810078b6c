//! `NonInteractiveCommands` sessions: a process with pipes, stdout as Output, stderr as StdErr,
//! then its exit code; run as the session's account and recorded (the command in the header,
//! stdout and stderr as output) like shells.

use std::process::Stdio;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use super::reap::reap;
use super::recorder::{FLUSH_EVERY, Recorder};
use super::shell::{DRAIN, exit_code, refuse};
use super::{Context, Outcome, account};
use crate::control::EndReason;
use crate::document::AgentSessionRequest;
use crate::net::{Connection, Incoming};
use crate::payload::Flag;

pub(crate) async fn run(
    context: &Arc<Context>,
    connection: Connection,
    request: &AgentSessionRequest,
    cancel: CancellationToken,
) -> Outcome {
    let Some(command) = request.session.command.clone() else {
        return refuse(connection, "the document names no command".into()).await;
    };
    let account = match account::resolve(request, context.settings.default_run_as.as_deref()).await
    {
        Ok(account) => account,
        Err(why) => return refuse(connection, why).await,
    };
    let mut recorder = match Recorder::for_session(context, request, account.as_ref(), &connection)
    {
        Ok(recorder) => recorder,
        Err(why) => return refuse(connection, why).await,
    };
    let mut process = tokio::process::Command::new("/bin/sh");
    process
        .arg("-c")
        .arg(&command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that what it starts is reaped with it.
        .process_group(0)
        .kill_on_drop(true);
    let environment =
        account::session_environment(account.as_ref(), &context.settings.shell, |name| {
            std::env::var(name).ok()
        });
    process.env_clear().envs(environment);
    if let Some(account) = &account {
        process
            .uid(account.uid)
            .gid(account.gid)
            .current_dir(account.working_directory());
    }
    let spawned = process.spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => return refuse(connection, format!("starting the command: {error}")).await,
    };
    let leader = child.id();
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return refuse(connection, "the command has no pipes".into()).await;
    };
    let (mut reader, mut writer) = connection.split();
    let mut out = vec![0; 16 * 1024];
    let mut err = vec![0; 16 * 1024];
    let (mut out_open, mut err_open, mut stdin_open) = (true, true, true);
    // Set on cancel: the command is killed, and what it wrote is still read until then.
    let mut stopping: Option<Instant> = None;
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    let interrupted = loop {
        if !out_open && !err_open {
            break stopping.map(|_| EndReason::Terminated);
        }
        let drained = async {
            match stopping {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = stdout.read(&mut out), if out_open => match read {
                Ok(n) if n > 0 => {
                    recorder.output(&out[..n]);
                    if writer.write_all(&out[..n]).await.is_err() { break Some(EndReason::NetworkLost); }
                }
                _ => out_open = false,
            },
            read = stderr.read(&mut err), if err_open => match read {
                Ok(n) if n > 0 => {
                    recorder.output(&err[..n]);
                    if writer.send_stderr(&err[..n]).await.is_err() { break Some(EndReason::NetworkLost); }
                }
                _ => err_open = false,
            },
            incoming = reader.recv(), if stopping.is_none() => match incoming {
                Some(Incoming::Data(bytes)) if stdin_open => {
                    if stdin.write_all(&bytes).await.is_err() { stdin_open = false; }
                }
                Some(Incoming::Flag(Flag::TerminateSession)) => break Some(EndReason::ClientExit),
                Some(Incoming::Ended(_)) | None => break Some(EndReason::Terminated),
                Some(_) => {}
            },
            () = cancel.cancelled(), if stopping.is_none() => {
                let _ = child.start_kill();
                stopping = Some(Instant::now() + DRAIN);
            }
            () = drained => break Some(EndReason::Terminated),
            _ = flush.tick() => recorder.flush(),
        }
    };
    drop(stdin);
    // Unread input would hold up the acknowledgements the close waits for.
    drop(reader);
    if let Some(reason) = interrupted {
        reap(leader).await;
        recorder.marker(reason.as_str());
        let recording = recorder.finish(None).await;
        let _ = writer.close().await;
        return Outcome {
            reason,
            exit_code: None,
            output: String::new(),
            recording,
        };
    }
    let code = child.wait().await.map_or(-1, |status| exit_code(&status));
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
