//! What the application holds: a byte stream plus control, talking to the driver task through
//! two bounded channels (so both directions are back-pressured).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::PollSender;

use super::NetError;
use crate::payload::{ExitCode, Flag, TerminalSize};
use crate::session::{HandshakeInfo, SessionError};

/// Events an [`AsyncRead`] caller has not taken yet, at most; beyond that reads fail until
/// [`ReadHalf::take_events`] is called (nothing is dropped).
const MAX_STASHED_EVENTS: usize = 1024;

/// What the peer sent, in order.
#[derive(Debug)]
#[non_exhaustive]
pub enum Incoming {
    /// Stream bytes: terminal or port output at the client, keystrokes or port data at the
    /// agent.
    Data(Bytes),
    /// Standard-error bytes (client, `NonInteractiveCommands` with separate streams).
    Stderr(Bytes),
    /// The terminal size changed (agent).
    Resize(TerminalSize),
    /// A flag (Ctrl-C as `Interrupt` is sent as a byte, not a flag).
    Flag(Flag),
    /// The command's exit status (client).
    ExitCode(ExitCode),
    /// One received message was bad and was dropped; the session goes on.
    Error(SessionError),
    /// The session is over; nothing follows.
    Ended(Ending),
}

/// How a connection ended.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Ending {
    /// The gateway closed the channel (`channel_closed`); `output` is its message, if any.
    ChannelClosed {
        /// The text the reference client shows instead of its default goodbye.
        output: String,
    },
    /// Closed by this side, everything sent was acknowledged.
    Closed,
    /// Closed by this side; this many messages were never acknowledged.
    DrainTimedOut {
        /// Messages the peer did not acknowledge.
        unacknowledged: usize,
    },
    /// The session or its transport failed.
    Failed(Arc<NetError>),
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::ChannelClosed { output } if output.is_empty() => {
                f.write_str("the gateway closed the channel")
            }
            Ending::ChannelClosed { output } => {
                write!(f, "the gateway closed the channel: {output}")
            }
            Ending::Closed => f.write_str("closed"),
            Ending::DrainTimedOut { unacknowledged } => {
                write!(f, "closed with {unacknowledged} messages unacknowledged")
            }
            Ending::Failed(error) => write!(f, "failed: {error}"),
        }
    }
}

/// Counters shared with the driver.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) reconnects: AtomicU64,
    pub(crate) retransmits: AtomicU64,
}

/// Live counters of one connection; cheap to clone and valid after the connection is gone.
#[derive(Debug, Clone)]
pub struct Counters(Arc<Shared>);

impl Counters {
    /// Times the transport was re-established.
    pub fn reconnects(&self) -> u64 {
        self.0.reconnects.load(Ordering::Relaxed)
    }

    /// Stream messages sent more than once.
    pub fn retransmits(&self) -> u64 {
        self.0.retransmits.load(Ordering::Relaxed)
    }
}

/// What the application asks of the driver.
#[derive(Debug)]
pub(crate) enum Command {
    Data(Bytes),
    Stderr(Bytes),
    Size(TerminalSize),
    Flag(Flag),
    ExitCode(ExitCode),
    Close(oneshot::Sender<Ending>),
}

/// An open data channel: [`AsyncRead`] gives the peer's stream bytes, [`AsyncWrite`] sends
/// ours, and the methods carry the rest. [`Connection::split`] gives independent halves.
#[derive(Debug)]
pub struct Connection {
    read: ReadHalf,
    write: WriteHalf,
    info: HandshakeInfo,
}

impl Connection {
    pub(crate) fn new(
        incoming: mpsc::Receiver<Incoming>,
        commands: mpsc::Sender<Command>,
        max_write: usize,
        info: HandshakeInfo,
        shared: Arc<Shared>,
    ) -> Self {
        Connection {
            read: ReadHalf {
                incoming,
                data: Bytes::new(),
                stash: VecDeque::new(),
                ending: None,
                reported_failure: false,
            },
            write: WriteHalf {
                commands: PollSender::new(commands),
                max_write,
                closing: None,
                shared,
            },
            info,
        }
    }

    /// What the handshake settled: session type, properties, encryption, peer version.
    pub fn info(&self) -> &HandshakeInfo {
        &self.info
    }

    /// Independent halves, e.g. for one task per direction.
    pub fn split(self) -> (ReadHalf, WriteHalf) {
        (self.read, self.write)
    }

    /// The next thing the peer sent (see [`ReadHalf::recv`]).
    pub async fn recv(&mut self) -> Option<Incoming> {
        self.read.recv().await
    }

    /// Sends the terminal size (client).
    pub async fn resize(&mut self, cols: u32, rows: u32) -> Result<(), NetError> {
        self.write.resize(cols, rows).await
    }

    /// Sends a flag.
    pub async fn send_flag(&mut self, flag: Flag) -> Result<(), NetError> {
        self.write.send_flag(flag).await
    }

    /// Sends the exit status (agent).
    pub async fn send_exit_code(&mut self, code: i32) -> Result<(), NetError> {
        self.write.send_exit_code(code).await
    }

    /// Sends standard-error bytes (agent).
    pub async fn send_stderr(&mut self, data: &[u8]) -> Result<(), NetError> {
        self.write.send_stderr(data).await
    }

    /// Ends the session once everything sent is acknowledged; says how it ended.
    pub async fn close(self) -> Result<Ending, NetError> {
        // Without a reader the driver discards what still arrives and keeps reading the acks.
        let Connection { read, write, .. } = self;
        drop(read);
        write.close().await
    }

    /// This connection's counters.
    pub fn counters(&self) -> Counters {
        self.write.counters()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.write).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_shutdown(cx)
    }
}

/// The receiving half: [`ReadHalf::recv`] gives everything in order; [`AsyncRead`] gives the
/// [`Incoming::Data`] bytes and keeps the other items for [`ReadHalf::take_events`].
#[derive(Debug)]
pub struct ReadHalf {
    incoming: mpsc::Receiver<Incoming>,
    /// What is left of the last `Data` after a short read.
    data: Bytes,
    /// Non-data items met by `poll_read`.
    stash: VecDeque<Incoming>,
    ending: Option<Ending>,
    reported_failure: bool,
}

impl ReadHalf {
    /// The next thing the peer sent; `None` after [`Incoming::Ended`].
    pub async fn recv(&mut self) -> Option<Incoming> {
        if let Some(item) = self.stash.pop_front() {
            return Some(item);
        }
        if !self.data.is_empty() {
            return Some(Incoming::Data(std::mem::take(&mut self.data)));
        }
        let item = self.incoming.recv().await?;
        if let Incoming::Ended(ending) = &item {
            self.ending = Some(ending.clone());
        }
        Some(item)
    }

    /// The non-data items that [`AsyncRead`] reads passed over, oldest first.
    pub fn take_events(&mut self) -> Vec<Incoming> {
        self.stash.drain(..).collect()
    }

    /// How the session ended, once it has and the reader got that far.
    pub fn ending(&self) -> Option<&Ending> {
        self.ending.as_ref()
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.data.is_empty() {
                let n = this.data.len().min(buf.remaining());
                buf.put_slice(&this.data.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.ending.is_some() {
                return Poll::Ready(this.end_of_stream());
            }
            if this.stash.len() >= MAX_STASHED_EVENTS {
                return Poll::Ready(Err(io::Error::other(
                    "too many session events not taken: call ReadHalf::take_events or use recv",
                )));
            }
            match ready!(this.incoming.poll_recv(cx)) {
                Some(Incoming::Data(data)) => this.data = data,
                Some(Incoming::Ended(ending)) => this.ending = Some(ending),
                Some(other) => this.stash.push_back(other),
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl ReadHalf {
    /// End of the stream: a failure is reported once as an error, then reads give EOF.
    fn end_of_stream(&mut self) -> io::Result<()> {
        match &self.ending {
            Some(Ending::Failed(error)) if !self.reported_failure => {
                self.reported_failure = true;
                Err(io::Error::other(error.clone()))
            }
            _ => Ok(()),
        }
    }
}

/// The sending half: [`AsyncWrite`] for stream bytes (each write waits while the session's
/// window is full), and methods for the control messages.
///
/// `flush` means handed to the session, which delivers reliably; `shutdown` closes the session
/// gracefully, waiting until the peer acknowledged everything.
#[derive(Debug)]
pub struct WriteHalf {
    commands: PollSender<Command>,
    max_write: usize,
    closing: Option<oneshot::Receiver<Ending>>,
    shared: Arc<Shared>,
}

impl WriteHalf {
    async fn command(&mut self, command: Command) -> Result<(), NetError> {
        let sender = self.commands.get_ref().ok_or_else(closed)?;
        sender.send(command).await.map_err(|_| closed())
    }

    /// Sends the terminal size (client).
    pub async fn resize(&mut self, cols: u32, rows: u32) -> Result<(), NetError> {
        self.command(Command::Size(TerminalSize { cols, rows }))
            .await
    }

    /// Sends a flag.
    pub async fn send_flag(&mut self, flag: Flag) -> Result<(), NetError> {
        self.command(Command::Flag(flag)).await
    }

    /// Sends the exit status (agent, `NonInteractiveCommands` with separate streams).
    pub async fn send_exit_code(&mut self, code: i32) -> Result<(), NetError> {
        self.command(Command::ExitCode(ExitCode(code))).await
    }

    /// Sends standard-error bytes (agent).
    pub async fn send_stderr(&mut self, data: &[u8]) -> Result<(), NetError> {
        for chunk in data.chunks(self.max_write) {
            self.command(Command::Stderr(Bytes::copy_from_slice(chunk)))
                .await?;
        }
        Ok(())
    }

    /// Ends the session once everything sent is acknowledged; says how it ended.
    pub async fn close(mut self) -> Result<Ending, NetError> {
        let (done, ending) = oneshot::channel();
        self.command(Command::Close(done)).await?;
        ending.await.map_err(|_| closed())
    }

    /// This connection's counters.
    pub fn counters(&self) -> Counters {
        Counters(self.shared.clone())
    }
}

fn closed() -> NetError {
    NetError::SessionOver
}

fn broken_pipe() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the session is over")
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(self.commands.poll_reserve(cx)).map_err(|_| broken_pipe())?;
        let n = buf.len().min(self.max_write);
        let data = Bytes::copy_from_slice(&buf[..n]);
        self.commands
            .send_item(Command::Data(data))
            .map_err(|_| broken_pipe())?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.closing.is_none() {
            ready!(self.commands.poll_reserve(cx)).map_err(|_| broken_pipe())?;
            let (done, ending) = oneshot::channel();
            self.commands
                .send_item(Command::Close(done))
                .map_err(|_| broken_pipe())?;
            self.closing = Some(ending);
        }
        let ending = self.closing.as_mut().expect("set above");
        let result = match ready!(Pin::new(ending).poll(cx)) {
            Ok(Ending::Failed(error)) => Err(io::Error::other(error)),
            Ok(_) => Ok(()),
            Err(_) => Err(broken_pipe()),
        };
        // Later calls find the channel gone and say so instead of polling a spent receiver.
        self.commands.close();
        self.closing = None;
        Poll::Ready(result)
    }
}
