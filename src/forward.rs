//! Port forwarding over a session, for both ends: the smux-multiplexed mode (many TCP
//! connections, PROTOCOL.md §9.4) run by [`crate::smux::Mux`] directly over the session's byte
//! stream, and the basic mode (one connection at a time, PROTOCOL.md §9.3).
//!
//! One task owns the mux (or the basic-mode connection) and never waits on a write: the
//! session's write side runs in its own task, and so does the write side of every TCP
//! connection. The adapters only acknowledge what the application reads, so a loop that stopped
//! reading the session while it waited for the session's window would wait forever on an echo.
//! Memory stays bounded: TCP data is taken only while the session writer keeps up, and session
//! data only while less than [`MAX_TO_TCP`] bytes wait for TCP connections. smux v1 has no
//! per-stream window, so one connection that stops reading pauses the whole session once that
//! limit is reached (as with the reference).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::net::{Ending, Incoming, NetError, ReadHalf, WriteHalf};
use crate::payload::Flag;
use crate::smux::{Mux, MuxEvent, StreamId};

/// What the client says when the agent could not connect to the destination port: where the
/// reason is (the agent logs it, and the gateway's audit log has the stream report).
const CONNECT_TO_PORT_FAILED: &str = "connection to the destination port failed: the agent \
    logs why on its stderr (under systemd: `journalctl -u ssm-agent` on the target), and the \
    gateway's audit log has the stream's report";

/// Bytes waiting for TCP connections above which the session is not read.
pub const MAX_TO_TCP: usize = 8 << 20;
/// Writes queued for the session's writer task.
const SESSION_QUEUE: usize = 64;
/// Read size from TCP connections.
const READ_SIZE: usize = 32 * 1024;

/// What a forwarded TCP connection did, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvent {
    /// smux stream id (0 in basic mode).
    pub stream_id: u64,
    /// Where it goes (agent: the destination; client: the local peer).
    pub destination: String,
    /// Opened (false) or closed (true).
    pub closed: bool,
    /// Bytes written to the TCP connection.
    pub bytes_out: u64,
    /// Bytes read from the TCP connection.
    pub bytes_in: u64,
    /// How long it lasted, when closed.
    pub duration_ms: u64,
    /// Dial error or close reason.
    pub detail: String,
}

/// Where new streams come from.
pub enum Streams {
    /// Client: every accepted connection opens a stream.
    Accept(TcpListener),
    /// Agent: every stream the peer opens is dialled to `addresses`, in order, never by
    /// name (they are what the agent checked); `destination` (`host:port`) names it in reports.
    Dial {
        /// The destination as the document names it.
        destination: String,
        /// What it resolved to.
        addresses: Vec<SocketAddr>,
    },
}

/// How a forwarding run ended.
#[derive(Debug)]
pub enum ForwardEnd {
    /// The session ended (the ending says how).
    Session(Ending),
    /// The peer sent `TerminateSession`.
    Terminated,
    /// The mux failed (protocol error or keep-alive timeout).
    Mux(String),
    /// `stop` completed: every connection was closed and the session closed after it
    /// (the ending says whether the peer acknowledged everything).
    Stopped(Ending),
}

type Report = Box<dyn FnMut(StreamEvent) + Send>;

/// What the session writer task sends.
enum Out {
    Data(Bytes),
    Flag(Flag),
    /// Closes the session once everything before it is acknowledged.
    Close(oneshot::Sender<Ending>),
}

/// The session's write side in its own task.
fn spawn_session_writer(mut writer: WriteHalf) -> mpsc::Sender<Out> {
    let (tx, mut rx) = mpsc::channel::<Out>(SESSION_QUEUE);
    tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            let sent = match out {
                Out::Data(bytes) => writer.write_all(&bytes).await.is_ok(),
                Out::Flag(flag) => writer.send_flag(flag).await.is_ok(),
                Out::Close(done) => {
                    let ending = writer.close().await;
                    let _ =
                        done.send(ending.unwrap_or_else(|error| Ending::Failed(Arc::new(error))));
                    return;
                }
            };
            if !sent {
                return;
            }
        }
    });
    tx
}

/// Moves queued writes into the session writer as far as it takes them; false once it is gone.
fn flush(unsent: &mut VecDeque<Out>, out: &mpsc::Sender<Out>) -> bool {
    while let Some(next) = unsent.pop_front() {
        match out.try_send(next) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(next)) => {
                unsent.push_front(next);
                return true;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
        }
    }
    true
}

/// Hands every queued write to the session writer, then closes the session and waits until
/// the peer acknowledged them (bounded by the session's drain timeout).
async fn close_session(
    reader: ReadHalf,
    unsent: VecDeque<Out>,
    out: &mpsc::Sender<Out>,
) -> ForwardEnd {
    // Unread input would hold up the acknowledgements the close waits for.
    drop(reader);
    let (done, closed) = oneshot::channel();
    for next in unsent.into_iter().chain([Out::Close(done)]) {
        if out.send(next).await.is_err() {
            break;
        }
    }
    let ending = closed
        .await
        .unwrap_or_else(|_| Ending::Failed(Arc::new(NetError::SessionOver)));
    ForwardEnd::Stopped(ending)
}

/// Bytes handed to TCP writer tasks and not yet written, with a wake-up when they drain.
#[derive(Clone, Default)]
struct ToTcp {
    bytes: Arc<AtomicUsize>,
    drained: Arc<Notify>,
}

impl ToTcp {
    fn full(&self) -> bool {
        self.bytes.load(Ordering::Relaxed) > MAX_TO_TCP
    }
}

enum FromTcp {
    Data(StreamId, Bytes),
    Eof(StreamId, String),
    Dialed(StreamId, Result<TcpStream, String>),
}

struct StreamState {
    to_tcp: Option<mpsc::UnboundedSender<Bytes>>,
    /// Data that arrived while the destination was being dialled.
    early: Vec<Bytes>,
    destination: String,
    opened: Instant,
    bytes_out: u64,
    bytes_in: u64,
}

fn session_over(reader: &ReadHalf) -> ForwardEnd {
    ForwardEnd::Session(reader.ending().cloned().unwrap_or(Ending::Closed))
}

/// Runs `mux` over the session until it ends or `stop` completes; streams still open then are
/// reported closed. On `stop`, what the TCP connections already sent is forwarded, then every
/// stream is closed and the session after it ([`ForwardEnd::Stopped`]).
pub async fn run_mux(
    reader: ReadHalf,
    writer: WriteHalf,
    mux: Mux,
    streams: Streams,
    stop: impl Future<Output = ()>,
    report: impl FnMut(StreamEvent) + Send + 'static,
) -> ForwardEnd {
    let mut report: Report = Box::new(report);
    let mut table: HashMap<StreamId, StreamState> = HashMap::new();
    let to_tcp = ToTcp::default();
    let end = mux_loop(
        reader,
        writer,
        mux,
        streams,
        stop,
        &mut report,
        &mut table,
        &to_tcp,
    )
    .await;
    let open: Vec<StreamId> = table.keys().copied().collect();
    for id in open {
        close_stream(
            &mut table,
            id,
            "the session ended".into(),
            &mut report,
            &to_tcp,
        );
    }
    end
}

#[expect(
    clippy::too_many_arguments,
    reason = "the streams live in `run_mux`, which closes what is left however the loop ends"
)]
async fn mux_loop(
    mut reader: ReadHalf,
    writer: WriteHalf,
    mut mux: Mux,
    mut streams: Streams,
    stop: impl Future<Output = ()>,
    report: &mut Report,
    table: &mut HashMap<StreamId, StreamState>,
    to_tcp: &ToTcp,
) -> ForwardEnd {
    let out = spawn_session_writer(writer);
    let mut unsent: VecDeque<Out> = VecDeque::new();
    let (from_tcp_tx, mut from_tcp) = mpsc::channel::<FromTcp>(64);
    let mut pending: Option<(StreamId, Bytes)> = None;
    tokio::pin!(stop);
    loop {
        let deadline = mux.poll_timeout();
        let accept = async {
            match &mut streams {
                Streams::Accept(listener) => listener.accept().await.ok(),
                Streams::Dial { .. } => std::future::pending().await,
            }
        };
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let tcp_full = to_tcp.full();
        tokio::select! {
            incoming = reader.recv(), if mux.wants_input() && !tcp_full => match incoming {
                Some(Incoming::Data(bytes)) => {
                    if let Err(error) = mux.handle_input(&bytes, Instant::now()) {
                        return ForwardEnd::Mux(error.to_string());
                    }
                }
                Some(Incoming::Flag(Flag::TerminateSession)) => return ForwardEnd::Terminated,
                Some(Incoming::Flag(Flag::ConnectToPortError)) => {
                    tracing::warn!("{CONNECT_TO_PORT_FAILED}");
                }
                Some(Incoming::Ended(ending)) => return ForwardEnd::Session(ending),
                None => return session_over(&reader),
                Some(_) => {}
            },
            () = to_tcp.drained.notified(), if tcp_full => {}
            permit = out.reserve(), if !unsent.is_empty() => {
                if permit.is_err() {
                    return session_over(&reader);
                }
                drop(permit); // room again: the flush below uses it
            }
            message = from_tcp.recv(), if pending.is_none() && unsent.is_empty() => match message {
                Some(FromTcp::Data(id, bytes)) => {
                    if let Some(state) = table.get_mut(&id) {
                        state.bytes_in += bytes.len() as u64;
                        pending = Some((id, bytes));
                    }
                }
                Some(FromTcp::Eof(id, why)) => {
                    mux.close(id);
                    close_stream(table, id, why, report, to_tcp);
                }
                Some(FromTcp::Dialed(id, Ok(tcp))) => {
                    if let Some(state) = table.get_mut(&id) {
                        let writer = spawn_tcp(id, tcp, from_tcp_tx.clone(), to_tcp.clone());
                        for bytes in state.early.drain(..) {
                            let _ = writer.send(bytes); // already counted in `to_tcp`
                        }
                        state.to_tcp = Some(writer);
                        report(opened_event(id, state));
                    }
                }
                Some(FromTcp::Dialed(id, Err(error))) => {
                    if let Some(state) = table.get(&id) {
                        tracing::warn!(destination = %state.destination, %error, "connection to the destination port failed");
                    }
                    mux.close(id);
                    unsent.push_back(Out::Flag(Flag::ConnectToPortError));
                    close_stream(table, id, format!("dial failed: {error}"), report, to_tcp);
                }
                None => {}
            },
            accepted = accept => {
                if let Some((tcp, peer)) = accepted {
                    match mux.open() {
                        Ok(id) => {
                            let mut state = new_stream(peer.to_string());
                            state.to_tcp = Some(spawn_tcp(id, tcp, from_tcp_tx.clone(), to_tcp.clone()));
                            report(opened_event(id, &state));
                            table.insert(id, state);
                        }
                        Err(error) => tracing::warn!(%peer, %error, "refusing a local connection"),
                    }
                }
            }
            () = sleep => mux.handle_timeout(Instant::now()),
            () = &mut stop => {
                // What the TCP connections already sent goes out before their FINs.
                let mut read: Vec<(StreamId, Bytes)> = pending.take().into_iter().collect();
                while let Ok(message) = from_tcp.try_recv() {
                    if let FromTcp::Data(id, bytes) = message
                        && let Some(state) = table.get_mut(&id)
                    {
                        state.bytes_in += bytes.len() as u64;
                        read.push((id, bytes));
                    }
                }
                for (id, mut bytes) in read {
                    while !bytes.is_empty() {
                        while let Some(frames) = mux.poll_transmit() {
                            unsent.push_back(Out::Data(frames));
                        }
                        // The queue is empty: 0 means the stream is gone.
                        let taken = mux.write(id, &bytes);
                        if taken == 0 {
                            break;
                        }
                        bytes = bytes.slice(taken..);
                    }
                }
                let open: Vec<StreamId> = table.keys().copied().collect();
                for id in open {
                    mux.close(id);
                    close_stream(table, id, "the session was stopped".into(), report, to_tcp);
                }
                while let Some(frames) = mux.poll_transmit() {
                    unsent.push_back(Out::Data(frames));
                }
                return close_session(reader, unsent, &out).await;
            }
        }

        // Deliver what arrived to the TCP connections (their writers queue without limit;
        // the accounting above stops reading the session instead).
        while let Some(event) = mux.poll_event() {
            match event {
                MuxEvent::Opened(id) => {
                    let Streams::Dial {
                        destination,
                        addresses,
                    } = &streams
                    else {
                        mux.close(id); // a client does not accept streams
                        continue;
                    };
                    table.insert(id, new_stream(destination.clone()));
                    let addresses = addresses.clone();
                    let tx = from_tcp_tx.clone();
                    tokio::spawn(async move {
                        let dialed = TcpStream::connect(&addresses[..])
                            .await
                            .map_err(|error| error.to_string());
                        let _ = tx.send(FromTcp::Dialed(id, dialed)).await;
                    });
                }
                MuxEvent::Data(id, bytes) => {
                    if let Some(state) = table.get_mut(&id) {
                        state.bytes_out += bytes.len() as u64;
                        let len = bytes.len();
                        let queued = match &state.to_tcp {
                            Some(to) => to.send(bytes).is_ok(),
                            None => {
                                state.early.push(bytes);
                                true
                            }
                        };
                        if queued {
                            to_tcp.bytes.fetch_add(len, Ordering::Relaxed);
                        }
                    }
                }
                MuxEvent::Closed(id) => {
                    close_stream(table, id, "closed by the peer".into(), report, to_tcp);
                }
                MuxEvent::Dead => return ForwardEnd::Mux("smux keep-alive timed out".into()),
            }
        }
        // Hand TCP data to the mux while the session writer keeps up.
        loop {
            while let Some(frames) = mux.poll_transmit() {
                unsent.push_back(Out::Data(frames));
            }
            if !flush(&mut unsent, &out) {
                return session_over(&reader);
            }
            let Some((id, bytes)) = pending.take() else {
                break;
            };
            if !unsent.is_empty() {
                pending = Some((id, bytes));
                break;
            }
            let taken = mux.write(id, &bytes);
            if taken == 0 && mux.outgoing_len() == 0 {
                break; // the stream is gone: nothing will take these bytes
            }
            if taken < bytes.len() {
                pending = Some((id, bytes.slice(taken..)));
            }
        }
    }
}

fn new_stream(destination: String) -> StreamState {
    StreamState {
        to_tcp: None,
        early: Vec::new(),
        destination,
        opened: Instant::now(),
        bytes_out: 0,
        bytes_in: 0,
    }
}

fn opened_event(id: StreamId, state: &StreamState) -> StreamEvent {
    StreamEvent {
        stream_id: u64::from(id),
        destination: state.destination.clone(),
        closed: false,
        bytes_out: 0,
        bytes_in: 0,
        duration_ms: 0,
        detail: String::new(),
    }
}

fn close_stream(
    table: &mut HashMap<StreamId, StreamState>,
    id: StreamId,
    detail: String,
    report: &mut Report,
    to_tcp: &ToTcp,
) {
    if let Some(state) = table.remove(&id) {
        let early: usize = state.early.iter().map(Bytes::len).sum();
        to_tcp.bytes.fetch_sub(early, Ordering::Relaxed);
        report(StreamEvent {
            stream_id: u64::from(id),
            destination: state.destination,
            closed: true,
            bytes_out: state.bytes_out,
            bytes_in: state.bytes_in,
            duration_ms: state.opened.elapsed().as_millis() as u64,
            detail,
        });
    }
}

/// Starts the reader and writer tasks of one TCP connection; returns the writer's queue.
fn spawn_tcp(
    id: StreamId,
    tcp: TcpStream,
    from_tcp: mpsc::Sender<FromTcp>,
    to_tcp: ToTcp,
) -> mpsc::UnboundedSender<Bytes> {
    let _ = tcp.set_nodelay(true);
    let (mut read, write) = tcp.into_split();
    let queue = spawn_tcp_writer(write, to_tcp);
    tokio::spawn(async move {
        let mut buffer = vec![0; READ_SIZE];
        let why = loop {
            match read.read(&mut buffer).await {
                Ok(0) => break "closed by the connection".to_owned(),
                Ok(n) => {
                    let data = Bytes::copy_from_slice(&buffer[..n]);
                    if from_tcp.send(FromTcp::Data(id, data)).await.is_err() {
                        return;
                    }
                }
                Err(error) => break error.to_string(),
            }
        };
        let _ = from_tcp.send(FromTcp::Eof(id, why)).await;
    });
    queue
}

/// A task writing what it is sent to `write`, counting it out of `to_tcp`; shuts the write
/// side down when the queue is dropped.
fn spawn_tcp_writer(
    mut write: tokio::net::tcp::OwnedWriteHalf,
    to_tcp: ToTcp,
) -> mpsc::UnboundedSender<Bytes> {
    let (queue, mut rx) = mpsc::unbounded_channel::<Bytes>();
    tokio::spawn(async move {
        let mut failed = false;
        while let Some(bytes) = rx.recv().await {
            if !failed && write.write_all(&bytes).await.is_err() {
                failed = true; // keep draining so the accounting stays right
            }
            to_tcp.bytes.fetch_sub(bytes.len(), Ordering::Relaxed);
            to_tcp.drained.notify_one();
        }
        let _ = write.shutdown().await;
    });
    queue
}

/// One basic-mode TCP connection: its read half here, its write half in a task.
struct Basic {
    read: tokio::net::tcp::OwnedReadHalf,
    write: mpsc::UnboundedSender<Bytes>,
    number: u64,
    opened: Instant,
    bytes_out: u64,
    bytes_in: u64,
}

/// Basic mode (PROTOCOL.md §9.3), one TCP connection at a time. The client (`Streams::Accept`)
/// forwards each local connection in turn and sends `DisconnectToPort` when it closes; the
/// agent (`Streams::Dial`) dials when data arrives and again after `DisconnectToPort`.
/// `end_on_tcp_close` ends the session with the connection (standard-stream sessions). On
/// `stop`, the connection is closed, then the session ([`ForwardEnd::Stopped`]).
pub async fn run_basic(
    mut reader: ReadHalf,
    writer: WriteHalf,
    mut streams: Streams,
    end_on_tcp_close: bool,
    stop: impl Future<Output = ()>,
    mut report: impl FnMut(StreamEvent) + Send,
) -> ForwardEnd {
    let out = spawn_session_writer(writer);
    let to_tcp = ToTcp::default();
    let mut tcp: Option<Basic> = None;
    let mut held: Option<mpsc::OwnedPermit<Out>> = None;
    let mut buffer = vec![0; READ_SIZE];
    let mut count = 0u64;
    let closed = |connection: Basic, destination: &str, detail: &str| StreamEvent {
        stream_id: connection.number,
        destination: destination.to_owned(),
        closed: true,
        bytes_out: connection.bytes_out,
        bytes_in: connection.bytes_in,
        duration_ms: connection.opened.elapsed().as_millis() as u64,
        detail: detail.to_owned(),
    };
    let destination = match &streams {
        Streams::Dial { destination, .. } => destination.clone(),
        Streams::Accept(listener) => listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
    };
    tokio::pin!(stop);
    loop {
        let tcp_full = to_tcp.full();
        let (idle, reading) = (tcp.is_none(), held.is_some());
        tokio::select! {
            incoming = reader.recv(), if !tcp_full => match incoming {
                Some(Incoming::Data(bytes)) => {
                    if tcp.is_none()
                        && let Streams::Dial { destination, addresses } = &streams
                    {
                        count += 1;
                        match TcpStream::connect(&addresses[..]).await {
                            Ok(connection) => {
                                tcp = Some(basic(connection, count, &to_tcp));
                                report(StreamEvent { stream_id: count, destination: destination.clone(), closed: false, bytes_out: 0, bytes_in: 0, duration_ms: 0, detail: String::new() });
                            }
                            Err(error) => {
                                tracing::warn!(%destination, %error, "connection to the destination port failed");
                                let _ = out.send(Out::Flag(Flag::ConnectToPortError)).await;
                                report(StreamEvent { stream_id: count, destination: destination.clone(), closed: true, bytes_out: 0, bytes_in: 0, duration_ms: 0, detail: format!("dial failed: {error}") });
                                continue;
                            }
                        }
                    }
                    // With no local connection (client side) the bytes have nowhere to go.
                    if let Some(connection) = tcp.as_mut() {
                        connection.bytes_out += bytes.len() as u64;
                        let len = bytes.len();
                        if connection.write.send(bytes).is_ok() {
                            to_tcp.bytes.fetch_add(len, Ordering::Relaxed);
                        }
                    }
                }
                Some(Incoming::Flag(Flag::DisconnectToPort)) => {
                    if let Some(connection) = tcp.take() {
                        report(closed(connection, &destination, "client disconnected"));
                    }
                }
                Some(Incoming::Flag(Flag::ConnectToPortError)) => {
                    tracing::warn!("{CONNECT_TO_PORT_FAILED}");
                    if let Some(connection) = tcp.take() {
                        report(closed(connection, &destination, "destination unreachable"));
                    }
                }
                Some(Incoming::Flag(Flag::TerminateSession)) => return ForwardEnd::Terminated,
                Some(Incoming::Ended(ending)) => return ForwardEnd::Session(ending),
                None => return session_over(&reader),
                Some(_) => {}
            },
            () = to_tcp.drained.notified(), if tcp_full => {}
            permit = out.clone().reserve_owned(), if !idle && !reading => match permit {
                Ok(permit) => held = Some(permit),
                Err(_) => return session_over(&reader),
            },
            read = async {
                match tcp.as_mut() {
                    Some(connection) => connection.read.read(&mut buffer).await,
                    None => std::future::pending().await,
                }
            }, if reading => match read {
                Ok(n) if n > 0 => {
                    if let (Some(connection), Some(permit)) = (tcp.as_mut(), held.take()) {
                        connection.bytes_in += n as u64;
                        permit.send(Out::Data(Bytes::copy_from_slice(&buffer[..n])));
                    }
                }
                _ => {
                    held = None;
                    if let Some(connection) = tcp.take() {
                        report(closed(connection, &destination, "connection closed"));
                    }
                    if end_on_tcp_close {
                        return ForwardEnd::Terminated;
                    }
                    if matches!(streams, Streams::Accept(_)) {
                        let _ = out.send(Out::Flag(Flag::DisconnectToPort)).await;
                    }
                }
            },
            accepted = async {
                match &mut streams {
                    Streams::Accept(listener) => listener.accept().await.ok(),
                    Streams::Dial { .. } => std::future::pending().await,
                }
            }, if idle => {
                if let Some((connection, peer)) = accepted {
                    count += 1;
                    tcp = Some(basic(connection, count, &to_tcp));
                    report(StreamEvent { stream_id: count, destination: peer.to_string(), closed: false, bytes_out: 0, bytes_in: 0, duration_ms: 0, detail: String::new() });
                }
            }
            () = &mut stop => {
                // Read data is sent as soon as it is read: only the connection is left to close.
                drop(held);
                if let Some(connection) = tcp.take() {
                    report(closed(connection, &destination, "the session was stopped"));
                }
                return close_session(reader, VecDeque::new(), &out).await;
            }
        }
    }
}

fn basic(connection: TcpStream, number: u64, to_tcp: &ToTcp) -> Basic {
    let _ = connection.set_nodelay(true);
    let (read, write) = connection.into_split();
    Basic {
        read,
        write: spawn_tcp_writer(write, to_tcp.clone()),
        number,
        opened: Instant::now(),
        bytes_out: 0,
        bytes_in: 0,
    }
}
