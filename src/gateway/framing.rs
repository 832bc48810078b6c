//! HTTP/1.1 message framing as it arrived on the wire. hyper folds equal duplicate
//! `Content-Length` lines into one and drops `Content-Length` when `Transfer-Encoding` is
//! present, so the gateway cannot see either in the request it is handed; yet a peer that sends
//! them may be framed differently by a proxy in front (request smuggling). [`Framed`] watches
//! the bytes hyper reads and gives each request head a [`Framing`] verdict, in order.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::lock;

/// Longest head line looked at; hyper refuses longer heads anyway.
const MAX_LINE: usize = 16 * 1024;

/// How one request was framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// One `Content-Length` or none, and no `Transfer-Encoding`.
    Plain,
    /// More than one `Content-Length`, or `Content-Length` with `Transfer-Encoding`: refuse.
    Ambiguous,
    /// Chunked: served, but the watch cannot follow the body, so the connection closes after
    /// the answer (no later request goes unchecked).
    Chunked,
}

/// The verdicts of the heads read so far, oldest first; the handler takes one per request.
#[derive(Clone, Default)]
pub(super) struct Verdicts(Arc<Mutex<VecDeque<Framing>>>);

impl Verdicts {
    /// The next request's framing; [`Framing::Plain`] once the watch has stopped (HTTP/2, an
    /// upgrade).
    pub(super) fn next(&self) -> Framing {
        lock(&self.0).pop_front().unwrap_or(Framing::Plain)
    }
}

enum State {
    Head {
        line: Vec<u8>,
        lines: usize,
        lengths: usize,
        length: Option<u64>,
        chunked: bool,
        upgrade: bool,
    },
    Body(u64),
    /// HTTP/2, an upgrade, or a body the watch cannot follow.
    Off,
}

impl State {
    fn head() -> State {
        State::Head {
            line: Vec::new(),
            lines: 0,
            lengths: 0,
            length: None,
            chunked: false,
            upgrade: false,
        }
    }
}

/// A connection's reading side, watched for request framing.
pub(super) struct Framed<S> {
    inner: S,
    state: State,
    verdicts: Verdicts,
}

impl<S> Framed<S> {
    pub(super) fn new(inner: S) -> (Framed<S>, Verdicts) {
        let verdicts = Verdicts::default();
        let framed = Framed {
            inner,
            state: State::head(),
            verdicts: verdicts.clone(),
        };
        (framed, verdicts)
    }

    fn watch(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Off => return,
                State::Body(left) => {
                    let take = (*left).min(bytes.len() as u64);
                    *left -= take;
                    bytes = &bytes[take as usize..];
                    if *left == 0 {
                        self.state = State::head();
                    }
                }
                State::Head { line, .. } => {
                    let end = bytes.iter().position(|&byte| byte == b'\n');
                    let (part, rest) = match end {
                        Some(end) => (&bytes[..end], &bytes[end + 1..]),
                        None => (bytes, &[][..]),
                    };
                    if line.len() < MAX_LINE {
                        let room = MAX_LINE - line.len();
                        line.extend_from_slice(&part[..part.len().min(room)]);
                    }
                    bytes = rest;
                    if end.is_some() {
                        self.end_line();
                    }
                }
            }
        }
    }

    fn end_line(&mut self) {
        let State::Head {
            line,
            lines,
            lengths,
            length,
            chunked,
            upgrade,
        } = &mut self.state
        else {
            return;
        };
        let text = std::mem::take(line);
        let text = text.strip_suffix(b"\r").unwrap_or(&text);
        if text.is_empty() {
            if *lines == 0 {
                // Empty lines before a request line are allowed.
                return;
            }
            let verdict = match (*lengths, *chunked) {
                (0 | 1, false) => Framing::Plain,
                (0, true) => Framing::Chunked,
                _ => Framing::Ambiguous,
            };
            lock(&self.verdicts.0).push_back(verdict);
            self.state = match (verdict, *upgrade, *length) {
                (Framing::Plain, false, Some(length)) if length > 0 => State::Body(length),
                (Framing::Plain, false, _) => State::head(),
                _ => State::Off,
            };
            return;
        }
        *lines += 1;
        if *lines == 1 {
            if text.starts_with(b"PRI * HTTP/2") {
                self.state = State::Off;
            }
            return;
        }
        let Some(colon) = text.iter().position(|&byte| byte == b':') else {
            return;
        };
        let name = &text[..colon];
        let value = String::from_utf8_lossy(&text[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            *lengths += 1;
            *length = value.trim().parse().ok();
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            *chunked = true;
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            *upgrade = true;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Framed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let fresh = buf.filled()[before..].to_vec();
            self.watch(&fresh);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Framed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(wire: &[u8], step: usize) -> Vec<Framing> {
        let (mut framed, verdicts) = Framed::new(());
        for chunk in wire.chunks(step) {
            framed.watch(chunk);
        }
        let mut all = Vec::new();
        while let Some(verdict) = lock(&verdicts.0).pop_front() {
            all.push(verdict);
        }
        all
    }

    #[test]
    fn pipelined_requests_are_judged_in_order_whatever_the_reads() {
        let wire = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
            POST / HTTP/1.1\r\ncontent-length: 2\r\nContent-Length: 2\r\n\r\nhi\
            POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        for step in [1, 3, 7, wire.len()] {
            assert_eq!(
                verdicts(wire, step),
                [Framing::Plain, Framing::Ambiguous],
                "reads of {step} bytes"
            );
        }
    }

    #[test]
    fn a_body_that_looks_like_a_head_is_skipped() {
        let body = b"x\r\nContent-Length: 1\r\n\r\n";
        let mut wire =
            format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        wire.extend_from_slice(body);
        wire.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(verdicts(&wire, 4), [Framing::Plain, Framing::Plain]);
    }

    #[test]
    fn transfer_encoding_is_chunked_alone_and_ambiguous_with_a_length() {
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(verdicts(chunked, 5), [Framing::Chunked]);
        let both = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(verdicts(both, 5), [Framing::Ambiguous]);
        let h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        assert!(verdicts(h2, 5).is_empty());
    }
}
