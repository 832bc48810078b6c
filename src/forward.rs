//! Port forwarding over a session, for both ends: the smux-multiplexed mode (many TCP
//! connections, SPEC §8.4) run by [`crate::smux::Mux`] directly over the session's byte stream,
//! and the basic mode (one connection at a time, SPEC §8.3).
//!
//! One task owns the mux; each TCP connection has a reader task feeding it through one bounded
//! channel and a writer task fed through its own bounded channel, so a slow destination slows
//! its sender instead of growing a buffer. smux v1 has no per-stream window: while one
//! connection's writer is full, the whole session waits for it (as with the reference).

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::net::{Ending, Incoming, ReadHalf, WriteHalf};
use crate::payload::Flag;
use crate::smux::{Mux, MuxEvent, StreamId};

/// Chunks queued toward one TCP connection.
const TCP_QUEUE: usize = 16;
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
    /// Agent: every stream the peer opens is dialled to this destination.
    Dial(String),
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
}

type Report = Box<dyn FnMut(StreamEvent) + Send>;

enum FromTcp {
    Data(StreamId, Bytes),
    Eof(StreamId, String),
    Dialed(StreamId, Result<TcpStream, String>),
}

struct StreamState {
    to_tcp: Option<mpsc::Sender<Bytes>>,
    destination: String,
    opened: Instant,
    bytes_out: u64,
    bytes_in: u64,
}

/// Runs `mux` over the session until it ends.
pub async fn run_mux(
    mut reader: ReadHalf,
    mut writer: WriteHalf,
    mut mux: Mux,
    mut streams: Streams,
    mut report: impl FnMut(StreamEvent) + Send + 'static,
) -> ForwardEnd {
    let (from_tcp_tx, mut from_tcp) = mpsc::channel::<FromTcp>(64);
    let mut table: HashMap<StreamId, StreamState> = HashMap::new();
    let mut pending: Option<(StreamId, Bytes)> = None;
    let report: &mut Report = &mut (Box::new(move |event| report(event)) as Report);
    loop {
        let deadline = mux.poll_timeout();
        let accept = async {
            match &mut streams {
                Streams::Accept(listener) => listener.accept().await.ok(),
                Streams::Dial(_) => std::future::pending().await,
            }
        };
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            incoming = reader.recv(), if mux.wants_input() => match incoming {
                Some(Incoming::Data(bytes)) => {
                    if let Err(error) = mux.handle_input(&bytes, Instant::now()) {
                        return ForwardEnd::Mux(error.to_string());
                    }
                }
                Some(Incoming::Flag(Flag::TerminateSession)) => return ForwardEnd::Terminated,
                Some(Incoming::Flag(Flag::ConnectToPortError)) => {
                    eprintln!("\nConnection to destination port failed, check SSM Agent logs.");
                }
                Some(Incoming::Ended(ending)) => return ForwardEnd::Session(ending),
                None => return ForwardEnd::Session(Ending::Closed),
                Some(_) => {}
            },
            message = from_tcp.recv(), if pending.is_none() => match message {
                Some(FromTcp::Data(id, bytes)) => {
                    if let Some(state) = table.get_mut(&id) {
                        state.bytes_in += bytes.len() as u64;
                        pending = Some((id, bytes));
                    }
                }
                Some(FromTcp::Eof(id, why)) => {
                    mux.close(id);
                    close_stream(&mut table, id, why, report);
                }
                Some(FromTcp::Dialed(id, Ok(tcp))) => {
                    if let Some(state) = table.get_mut(&id) {
                        state.to_tcp = Some(spawn_tcp(id, tcp, from_tcp_tx.clone()));
                        report(opened_event(id, state));
                    }
                }
                Some(FromTcp::Dialed(id, Err(error))) => {
                    mux.close(id);
                    let _ = writer.send_flag(Flag::ConnectToPortError).await;
                    close_stream(&mut table, id, format!("dial failed: {error}"), report);
                }
                None => {}
            },
            accepted = accept => {
                if let Some((tcp, peer)) = accepted {
                    match mux.open() {
                        Ok(id) => {
                            let mut state = new_stream(peer.to_string());
                            state.to_tcp = Some(spawn_tcp(id, tcp, from_tcp_tx.clone()));
                            report(opened_event(id, &state));
                            table.insert(id, state);
                        }
                        Err(error) => eprintln!("refusing a local connection: {error}"),
                    }
                }
            }
            () = sleep => mux.handle_timeout(Instant::now()),
        }

        // Hand TCP data to the mux and its frames to the session until all of it is taken;
        // writing to the session waits for its window, which is the back-pressure.
        loop {
            if let Some((id, bytes)) = pending.take() {
                let taken = mux.write(id, &bytes);
                if taken < bytes.len() {
                    pending = Some((id, bytes.slice(taken..)));
                }
            }
            let mut moved = false;
            while let Some(frames) = mux.poll_transmit() {
                moved = true;
                if writer.write_all(&frames).await.is_err() {
                    return ForwardEnd::Session(reader.ending().cloned().unwrap_or(Ending::Closed));
                }
            }
            if pending.is_none() {
                break;
            }
            if !moved {
                pending = None; // the stream is gone: nothing will take these bytes
                break;
            }
        }
        while let Some(event) = mux.poll_event() {
            match event {
                MuxEvent::Opened(id) => {
                    let Streams::Dial(destination) = &streams else {
                        mux.close(id); // a client does not accept streams
                        continue;
                    };
                    table.insert(id, new_stream(destination.clone()));
                    let destination = destination.clone();
                    let tx = from_tcp_tx.clone();
                    tokio::spawn(async move {
                        let dialed = TcpStream::connect(&destination)
                            .await
                            .map_err(|error| error.to_string());
                        let _ = tx.send(FromTcp::Dialed(id, dialed)).await;
                    });
                }
                MuxEvent::Data(id, bytes) => {
                    if let Some(state) = table.get_mut(&id) {
                        state.bytes_out += bytes.len() as u64;
                        if let Some(to_tcp) = &state.to_tcp
                            && to_tcp.send(bytes).await.is_err()
                        {
                            state.to_tcp = None;
                        }
                    }
                }
                MuxEvent::Closed(id) => {
                    close_stream(&mut table, id, "closed by the peer".into(), report);
                }
                MuxEvent::Dead => return ForwardEnd::Mux("smux keep-alive timed out".into()),
            }
        }
        // Frames produced while handling events (FIN for refused streams).
        while let Some(frames) = mux.poll_transmit() {
            if writer.write_all(&frames).await.is_err() {
                return ForwardEnd::Session(reader.ending().cloned().unwrap_or(Ending::Closed));
            }
        }
    }
}

fn new_stream(destination: String) -> StreamState {
    StreamState {
        to_tcp: None,
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
) {
    if let Some(state) = table.remove(&id) {
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
fn spawn_tcp(id: StreamId, tcp: TcpStream, from_tcp: mpsc::Sender<FromTcp>) -> mpsc::Sender<Bytes> {
    let _ = tcp.set_nodelay(true);
    let (mut read, mut write) = tcp.into_split();
    let (to_tcp, mut queue) = mpsc::channel::<Bytes>(TCP_QUEUE);
    tokio::spawn(async move {
        while let Some(bytes) = queue.recv().await {
            if write.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = write.shutdown().await;
    });
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
    to_tcp
}

/// Basic mode at the agent: one TCP connection to `destination`, re-dialled when the client
/// reports a new local connection (`DisconnectToPort` then data); ends when the session does.
pub async fn run_basic_agent(
    mut reader: ReadHalf,
    mut writer: WriteHalf,
    destination: String,
    end_on_tcp_close: bool,
    mut report: impl FnMut(StreamEvent) + Send,
) -> ForwardEnd {
    let mut tcp: Option<(tokio::net::tcp::OwnedReadHalf, tokio::net::tcp::OwnedWriteHalf)> = None;
    let mut buffer = vec![0; READ_SIZE];
    let mut stream = 0u64;
    let mut counters = (0u64, 0u64, Instant::now());
    loop {
        let read = async {
            match tcp.as_mut() {
                Some((read, _)) => read.read(&mut buffer).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            incoming = reader.recv() => match incoming {
                Some(Incoming::Data(bytes)) => {
                    if tcp.is_none() {
                        stream += 1;
                        match TcpStream::connect(&destination).await {
                            Ok(connection) => {
                                let _ = connection.set_nodelay(true);
                                tcp = Some(connection.into_split());
                                counters = (0, 0, Instant::now());
                                report(StreamEvent { stream_id: stream, destination: destination.clone(), closed: false, bytes_out: 0, bytes_in: 0, duration_ms: 0, detail: String::new() });
                            }
                            Err(error) => {
                                let _ = writer.send_flag(Flag::ConnectToPortError).await;
                                report(StreamEvent { stream_id: stream, destination: destination.clone(), closed: true, bytes_out: 0, bytes_in: 0, duration_ms: 0, detail: format!("dial failed: {error}") });
                                continue;
                            }
                        }
                    }
                    if let Some((_, write)) = tcp.as_mut() {
                        counters.0 += bytes.len() as u64;
                        if write.write_all(&bytes).await.is_err() {
                            tcp = None;
                        }
                    }
                }
                Some(Incoming::Flag(Flag::DisconnectToPort)) => {
                    if tcp.take().is_some() {
                        report(StreamEvent { stream_id: stream, destination: destination.clone(), closed: true, bytes_out: counters.0, bytes_in: counters.1, duration_ms: counters.2.elapsed().as_millis() as u64, detail: "client disconnected".into() });
                    }
                }
                Some(Incoming::Flag(Flag::TerminateSession)) => return ForwardEnd::Terminated,
                Some(Incoming::Ended(ending)) => return ForwardEnd::Session(ending),
                None => return ForwardEnd::Session(Ending::Closed),
                Some(_) => {}
            },
            read = read => match read {
                Ok(n) if n > 0 => {
                    counters.1 += n as u64;
                    if writer.write_all(&buffer[..n]).await.is_err() {
                        return ForwardEnd::Session(reader.ending().cloned().unwrap_or(Ending::Closed));
                    }
                }
                _ => {
                    tcp = None;
                    report(StreamEvent { stream_id: stream, destination: destination.clone(), closed: true, bytes_out: counters.0, bytes_in: counters.1, duration_ms: counters.2.elapsed().as_millis() as u64, detail: "closed by the destination".into() });
                    if end_on_tcp_close {
                        return ForwardEnd::Terminated;
                    }
                }
            },
        }
    }
}
