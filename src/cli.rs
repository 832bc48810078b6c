//! What the programs in `src/bin/` share: log set-up and the version line. Library code logs
//! through `tracing` only; this is where a program decides where those records go.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How a program writes its log records (to standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
#[non_exhaustive]
pub enum LogFormat {
    /// One human-readable line per record.
    #[default]
    Text,
    /// One JSON object per line, for journald/Loki/CloudWatch shippers.
    Json,
}

/// Sends `tracing` records to standard error, filtered by `RUST_LOG` (for example
/// `RUST_LOG=info,ssm_session::session=debug`), or by `default_filter` when it is unset.
///
/// # Errors
///
/// When `RUST_LOG` does not parse, naming the bad directive; or when a subscriber is already
/// installed.
pub fn init_logging(format: LogFormat, default_filter: &str) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) => {
            EnvFilter::try_new(&spec).map_err(|error| format!("RUST_LOG={spec:?}: {error}"))?
        }
        Err(_) => EnvFilter::new(default_filter),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    installed.map_err(|error| format!("cannot install the log subscriber: {error}"))
}

/// `name version`, for `--version` and the first log line.
pub fn version_line(name: &str) -> String {
    format!("{name} {}", env!("CARGO_PKG_VERSION"))
}

/// Completes on SIGTERM (systemd's stop) or SIGINT (Ctrl-C), whichever comes first; logs
/// which. If a handler cannot be installed, that signal is not waited for.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let wait = |kind: SignalKind, name: &'static str| async move {
        match signal(kind) {
            Ok(mut stream) => {
                stream.recv().await;
                tracing::info!(signal = name, "shutting down");
            }
            Err(error) => {
                tracing::warn!(signal = name, %error, "cannot listen for the signal");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = wait(SignalKind::terminate(), "SIGTERM") => {}
        () = wait(SignalKind::interrupt(), "SIGINT") => {}
    }
}

/// Completes on SIGTERM, SIGHUP (the terminal went away) or SIGINT: what ends a client's
/// session, which it then ends at the agent rather than leave behind.
#[cfg(feature = "client")]
pub async fn session_end_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let wait = |kind: SignalKind, name: &'static str| async move {
        match signal(kind) {
            Ok(mut stream) => {
                stream.recv().await;
                tracing::info!(signal = name, "ending the session");
            }
            // Without a handler the signal's default action still ends the process.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = wait(SignalKind::terminate(), "SIGTERM") => {}
        () = wait(SignalKind::hangup(), "SIGHUP") => {}
        () = wait(SignalKind::interrupt(), "SIGINT") => {}
    }
}

/// Raises the soft limit on open files to the hard limit (systemd's default soft limit, 1024,
/// is too low for a gateway), logging both. Call it after [`init_logging`].
#[cfg(feature = "gateway")]
pub fn raise_fd_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    let show = |limit: Option<u64>| limit.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    if before.current == before.maximum {
        tracing::info!(soft = %show(before.current), hard = %show(before.maximum), "file-descriptor limit");
        return;
    }
    let raised = Rlimit {
        current: before.maximum,
        maximum: before.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::info!(
            soft = %show(getrlimit(Resource::Nofile).current),
            was = %show(before.current),
            hard = %show(before.maximum),
            "file-descriptor soft limit raised to the hard limit"
        ),
        Err(error) => tracing::warn!(
            soft = %show(before.current),
            hard = %show(before.maximum),
            %error,
            "could not raise the file-descriptor soft limit; fewer connections will be served"
        ),
    }
}
