//! Ending what a session started. A shell leads its own session (the PTY's `setsid`) and a
//! command its own process group, so everything they started — background jobs, which an
//! interactive shell puts in process groups of their own, and their children — carries the
//! leader's id as its session or process group. When a session ends, those processes are hung
//! up, then killed: no session leaves processes behind on the host. (A process that calls
//! `setsid` itself has left on purpose, like a daemon, and is not followed.)

use std::time::Duration;

use rustix::process::{Pid, Signal};

/// How long processes have, after SIGHUP, to exit before SIGKILL.
const HANGUP_GRACE: Duration = Duration::from_millis(500);
/// Rounds of SIGKILL, for processes forked while the previous round ran.
const KILL_ROUNDS: usize = 5;

/// Hangs up, then kills, every process in the session or process group that `leader` leads,
/// the leader included. Returns once none is left (or after [`KILL_ROUNDS`]).
pub(crate) async fn reap(leader: Option<u32>) {
    let Some(leader) = leader
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw)
    else {
        return;
    };
    // Never the agent's own group (a command spawned without its own group would share it).
    if rustix::process::getpgrp() == leader || rustix::process::getpid() == leader {
        return;
    }
    if signal_all(leader, Signal::HUP) == 0 {
        return;
    }
    let deadline = tokio::time::Instant::now() + HANGUP_GRACE;
    while tokio::time::Instant::now() < deadline && !members(leader).is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..KILL_ROUNDS {
        if signal_all(leader, Signal::KILL) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::warn!(
        leader = leader.as_raw_nonzero(),
        "processes of the session survived SIGKILL"
    );
}

/// Sends `signal` to the group and to every member found; how many members there were.
fn signal_all(leader: Pid, signal: Signal) -> usize {
    let _ = rustix::process::kill_process_group(leader, signal);
    let found = members(leader);
    for &pid in &found {
        let _ = rustix::process::kill_process(pid, signal);
    }
    found.len()
}

/// Live processes (not zombies) whose session or process group is `leader`'s.
#[cfg(target_os = "linux")]
fn members(leader: Pid) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|id| {
            let stat = std::fs::read_to_string(format!("/proc/{id}/stat")).ok()?;
            let (state, group, session) = group_and_session(&stat)?;
            let member =
                group == leader.as_raw_nonzero().get() || session == leader.as_raw_nonzero().get();
            (member && state != 'Z')
                .then(|| Pid::from_raw(id))
                .flatten()
        })
        .collect()
}

/// Elsewhere only the group is known: it is signalled, and reported while it exists.
#[cfg(not(target_os = "linux"))]
fn members(leader: Pid) -> Vec<Pid> {
    match rustix::process::test_kill_process_group(leader) {
        Ok(()) => vec![leader],
        Err(_) => Vec::new(),
    }
}

/// State, process group and session of a `/proc/<pid>/stat` line. The command name, in
/// parentheses, may hold anything, so fields are counted from the last `)`.
#[cfg(any(target_os = "linux", test))]
fn group_and_session(stat: &str) -> Option<(char, i32, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let _parent = fields.next()?;
    let group = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some((state, group, session))
}

#[cfg(test)]
mod tests {
    use super::group_and_session;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let stat = "4242 (a) b) (c) S 1 4240 4200 34816 4242 4194560 0 0";
        assert_eq!(group_and_session(stat), Some(('S', 4240, 4200)));
        assert_eq!(group_and_session("17 (sh) Z 1 17"), None);
        assert_eq!(group_and_session("garbage"), None);
    }
}
