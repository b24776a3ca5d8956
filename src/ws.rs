//! The WebSocket transport of a session (RFC 6455, the server's side), written for the
//! session loop: frames are read into one reused buffer without zeroing it first, text
//! is checked once, payloads are handed on without a copy, and a batch of frames goes out
//! in one write from one reused buffer. The handshake is the layer's (`crate::layer`); this
//! module takes the upgraded connection.
//!
//! What it does not do: extensions (no `permessage-deflate`: the handshake offers none, so
//! any RSV bit is a protocol error), masking (a server's frames are not masked; a client's
//! must be).
//!
//! The frame codec ([`Decoder`], [`encode`]) is sans-IO and unit-tested without a runtime.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
};

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

/// What the peer did wrong, or what failed underneath.
#[derive(Debug)]
#[non_exhaustive]
pub(crate) enum WsError {
    /// A frame that breaks RFC 6455 (answered with close code 1002).
    Protocol(&'static str),
    /// A text message or close reason that is not UTF-8 (close code 1007).
    InvalidUtf8,
    /// A message or frame above the limit (the session closes with 1009).
    Oversize { size: u64, max: usize },
    /// The session's own sending after its close frame.
    SendAfterClose,
    /// The connection failed.
    Io(io::Error),
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Protocol(what) => write!(f, "WebSocket protocol error: {what}"),
            Self::InvalidUtf8 => f.write_str("WebSocket protocol error: text that is not UTF-8"),
            Self::Oversize { size, max } => {
                write!(f, "message too big: {size} bytes, the limit is {max}")
            }
            Self::SendAfterClose => f.write_str("sending after the close frame"),
            Self::Io(e) => write!(f, "WebSocket I/O error: {e}"),
        }
    }
}

impl std::error::Error for WsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl WsError {
    /// The close code that tells the peer about this error, if one should be sent.
    fn close_code(&self) -> Option<u16> {
        match self {
            Self::Protocol(_) => Some(1002),
            Self::InvalidUtf8 => Some(1007),
            _ => None,
        }
    }
}

fn error(e: WsError) -> axum::Error {
    axum::Error::new(e)
}

/// Whether `error` is an oversize message or frame.
pub(crate) fn is_oversize(error: &axum::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|s| s.downcast_ref::<WsError>())
        .is_some_and(|e| matches!(e, WsError::Oversize { .. }))
}

const FIN: u8 = 0x80;
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

/// One complete message taken from the buffer, or a control frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// Checked to be UTF-8 (once: the WAMP decoder takes it as text without checking again).
    Text(Utf8Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    /// A close frame: its code and reason, if it had any.
    Close(Option<(u16, Bytes)>),
}

/// The sans-IO frame decoder: frames are unmasked in place in the read buffer and split off
/// it; a fragmented message is gathered in a buffer of its own.
#[derive(Debug)]
pub(crate) struct Decoder {
    max_message: usize,
    /// The opcode and the parts so far of a fragmented message.
    fragments: Option<(u8, BytesMut)>,
}

impl Decoder {
    pub(crate) fn new(max_message: usize) -> Self {
        Self {
            max_message,
            fragments: None,
        }
    }

    /// The next message in `buf`, consuming its frames; `Ok(None)` when more bytes are
    /// needed, with `need` set to how many in all would complete the next frame, if known.
    pub(crate) fn decode(
        &mut self,
        buf: &mut BytesMut,
        need: &mut usize,
    ) -> Result<Option<Decoded>, WsError> {
        loop {
            let Some((header, len)) = parse_header(buf)? else {
                *need = 14;
                return Ok(None);
            };
            let b0 = buf[0];
            let opcode = b0 & 0x0f;
            let fin = b0 & FIN != 0;
            let control = opcode & 0x8 != 0;
            // A frame is refused as soon as its header shows it too big (control frames are
            // at most 125 bytes, checked by `parse_header`).
            let so_far = self.fragments.as_ref().map_or(0, |(_, f)| f.len());
            if !control && len.saturating_add(so_far as u64) > self.max_message as u64 {
                return Err(WsError::Oversize {
                    size: len.saturating_add(so_far as u64),
                    max: self.max_message,
                });
            }
            // Within max_message (or 125), so it fits a usize.
            let len = len as usize;
            let total = header.saturating_add(len);
            if buf.len() < total {
                *need = total;
                return Ok(None);
            }
            let mask = [
                buf[header - 4],
                buf[header - 3],
                buf[header - 2],
                buf[header - 1],
            ];
            let _ = buf.split_to(header);
            let mut payload = buf.split_to(len);
            unmask(&mut payload, mask);
            match opcode {
                TEXT | BINARY if self.fragments.is_some() => {
                    return Err(WsError::Protocol(
                        "a new message began before the fragmented one ended",
                    ));
                }
                TEXT | BINARY if fin => return Ok(Some(message(opcode, payload.freeze())?)),
                TEXT | BINARY => self.fragments = Some((opcode, payload)),
                CONTINUATION => {
                    let Some((_, parts)) = self.fragments.as_mut() else {
                        return Err(WsError::Protocol("a continuation frame with no message"));
                    };
                    parts.extend_from_slice(&payload);
                    if fin {
                        let (opcode, parts) = self.fragments.take().expect("fragments");
                        return Ok(Some(message(opcode, parts.freeze())?));
                    }
                }
                PING => return Ok(Some(Decoded::Ping(payload.freeze()))),
                PONG => return Ok(Some(Decoded::Pong(payload.freeze()))),
                CLOSE => return close_frame(payload.freeze()).map(Some),
                _ => unreachable!("opcodes are checked by parse_header"),
            }
        }
    }
}

/// A whole text or binary message; text is checked to be UTF-8.
fn message(opcode: u8, payload: Bytes) -> Result<Decoded, WsError> {
    if opcode == TEXT {
        Utf8Bytes::try_from(payload)
            .map(Decoded::Text)
            .map_err(|_| WsError::InvalidUtf8)
    } else {
        Ok(Decoded::Binary(payload))
    }
}

fn close_frame(payload: Bytes) -> Result<Decoded, WsError> {
    match payload.len() {
        0 => Ok(Decoded::Close(None)),
        1 => Err(WsError::Protocol("a close frame with a one-byte payload")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !close_code_allowed(code) {
                return Err(WsError::Protocol("a close code that may not be sent"));
            }
            let reason = payload.slice(2..);
            std::str::from_utf8(&reason).map_err(|_| WsError::InvalidUtf8)?;
            Ok(Decoded::Close(Some((code, reason))))
        }
    }
}

/// The close codes a peer may send (RFC 6455 7.4 and the IANA registry).
fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The header's length and the payload's, once the header is whole; checks what the
/// header alone can tell.
fn parse_header(buf: &[u8]) -> Result<Option<(usize, u64)>, WsError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(WsError::Protocol(
            "a reserved bit is set (no extension was agreed)",
        ));
    }
    let opcode = b0 & 0x0f;
    if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
        return Err(WsError::Protocol("a reserved opcode"));
    }
    if b1 & 0x80 == 0 {
        return Err(WsError::Protocol("a client frame that is not masked"));
    }
    let short = b1 & 0x7f;
    if opcode & 0x8 != 0 && (b0 & FIN == 0 || short > 125) {
        return Err(WsError::Protocol(
            "a control frame that is fragmented or longer than 125 bytes",
        ));
    }
    let (len, at) = match short {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let len = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
            if len >> 63 != 0 {
                return Err(WsError::Protocol("a frame length with its top bit set"));
            }
            (len, 10)
        }
        126 | 127 => return Ok(None),
        n => (u64::from(n), 2),
    };
    let header = at + 4;
    Ok((buf.len() >= header).then_some((header, len)))
}

/// XORs `data` with the 4-byte `mask`, eight bytes at a time.
fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let m4 = u32::from_ne_bytes(mask);
    let m8 = u64::from(m4) | (u64::from(m4) << 32);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ m8;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Appends one unmasked, final frame to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.reserve(payload.len() + 10);
    out.push(FIN | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// A close frame's payload: the code, then the reason.
fn encode_close(out: &mut Vec<u8>, frame: Option<&CloseFrame>) {
    match frame {
        None => encode(out, CLOSE, &[]),
        Some(frame) => {
            let reason = frame.reason.as_bytes();
            // A control frame carries at most 125 bytes: the reason is cut at a char boundary.
            let mut end = reason.len().min(123);
            while !frame.reason.is_char_boundary(end) {
                end -= 1;
            }
            let mut payload = Vec::with_capacity(2 + end);
            payload.extend_from_slice(&frame.code.to_be_bytes());
            payload.extend_from_slice(&reason[..end]);
            encode(out, CLOSE, &payload);
        }
    }
}

/// The connection and the sending side's state, shared by the two halves: the receiving
/// side reads through it, and queues pongs and the answer to a close frame. (One lock for
/// both ways: the halves are polled by one task, and `tokio::io::split` would add a lock of
/// its own to every read and write.)
struct Outgoing<W> {
    io: W,
    out: Vec<u8>,
    sent: usize,
    close_sent: bool,
    /// The reader, stopped while the backlog is above `WRITE_HIGH`: woken by the next write.
    reader_parked: Option<std::task::Waker>,
}

/// Above this many unsent bytes, `poll_ready` writes before taking more.
const WRITE_HIGH: usize = 64 << 10;
/// The first reads' room: a connection that sends only small messages keeps this much.
const SMALL_READ: usize = 512;
/// The most the read buffer grows by at once for a large frame.
const GROW_STEP: usize = 256 << 10;
/// A send buffer grown above this is let go once empty.
const OUT_KEEP: usize = 16 << 10;

impl<W: AsyncWrite + Unpin> Outgoing<W> {
    fn queue(&mut self, message: &WsMessage) -> Result<(), WsError> {
        if self.close_sent {
            return Err(WsError::SendAfterClose);
        }
        match message {
            WsMessage::Text(text) => encode(&mut self.out, TEXT, text.as_bytes()),
            WsMessage::Binary(bytes) => encode(&mut self.out, BINARY, bytes),
            WsMessage::Ping(bytes) => encode(&mut self.out, PING, &bytes[..bytes.len().min(125)]),
            WsMessage::Pong(bytes) => encode(&mut self.out, PONG, &bytes[..bytes.len().min(125)]),
            WsMessage::Close(frame) => {
                encode_close(&mut self.out, frame.as_ref());
                self.close_sent = true;
            }
        }
        Ok(())
    }

    /// Writes what is queued.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        while self.sent < self.out.len() {
            let written = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.sent..]));
            // Whoever writes (the writer or the reader) wakes a reader that stopped reading
            // for the backlog: the socket keeps one write waker, the last one registered.
            if let Some(reader) = self.reader_parked.take() {
                reader.wake();
            }
            match written {
                Ok(0) => return Poll::Ready(Err(WsError::Io(io::ErrorKind::WriteZero.into()))),
                Ok(n) => self.sent += n,
                Err(e) => return Poll::Ready(Err(WsError::Io(e))),
            }
        }
        self.sent = 0;
        if self.out.capacity() > OUT_KEEP {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
        Poll::Ready(Ok(()))
    }
}

type Shared<W> = Arc<Mutex<Outgoing<W>>>;

fn lock<W>(shared: &Shared<W>) -> std::sync::MutexGuard<'_, Outgoing<W>> {
    // Nothing panics while holding it; a poisoned lock still holds consistent bytes.
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The receiving half.
pub(crate) struct Incoming<W> {
    buf: BytesMut,
    read_size: usize,
    decoder: Decoder,
    shared: Shared<W>,
    /// Control frames (a pong, a close answer) are waiting in the send buffer.
    control_pending: Arc<AtomicBool>,
    done: bool,
    /// After an oversize message: what arrives is dropped.
    draining: bool,
    /// A read has filled the room it had: reads take `read_size` from then on.
    filled: bool,
    /// The buffer grew beyond one read for a large frame.
    grown: bool,
    /// The answer to the latest ping read, written before the next read.
    pong: Option<Bytes>,
}

/// The sending half.
pub(crate) struct Sending<W> {
    shared: Shared<W>,
    control_pending: Arc<AtomicBool>,
}

/// The two halves of a connection, as [`split`] makes them.
pub(crate) type Halves<T> = (Sending<T>, Incoming<T>);

/// Splits an upgraded connection into the session's two halves.
pub(crate) fn split<T>(io: T, read_size: usize, max_message: usize) -> Halves<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let shared = Arc::new(Mutex::new(Outgoing {
        io,
        out: Vec::new(),
        sent: 0,
        close_sent: false,
        reader_parked: None,
    }));
    let control_pending = Arc::new(AtomicBool::new(false));
    (
        Sending {
            shared: shared.clone(),
            control_pending: control_pending.clone(),
        },
        Incoming {
            buf: BytesMut::new(),
            read_size: read_size.max(256),
            decoder: Decoder::new(max_message),
            shared,
            control_pending,
            done: false,
            draining: false,
            filled: false,
            grown: false,
            pong: None,
        },
    )
}

impl<W: AsyncRead + AsyncWrite + Unpin> Incoming<W> {
    /// Queues a control frame behind what is being sent and tries to send it now.
    fn answer(&self, cx: &mut Context<'_>, message: &WsMessage) {
        let mut out = lock(&self.shared);
        if out.queue(message).is_ok() {
            self.flush_control(cx, &mut out);
        }
    }

    fn flush_control(&self, cx: &mut Context<'_>, out: &mut Outgoing<W>) {
        // Pending: the rest goes with the next flush, or when this reader is woken.
        let done = match out.poll_write_out(cx) {
            // Through a transport that buffers (TLS), the pong goes out now too.
            Poll::Ready(Ok(())) => Pin::new(&mut out.io).poll_flush(cx).is_ready(),
            Poll::Ready(Err(_)) => true,
            Poll::Pending => false,
        };
        self.control_pending.store(!done, Ordering::Relaxed);
    }

    fn fail(
        &mut self,
        cx: &mut Context<'_>,
        e: WsError,
    ) -> Poll<Option<Result<WsMessage, axum::Error>>> {
        if let Some(code) = e.close_code() {
            let reason = match &e {
                WsError::Protocol(what) => *what,
                _ => "invalid UTF-8",
            };
            self.answer(
                cx,
                &WsMessage::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                })),
            );
        }
        // After an oversize message the rest of it is read and dropped, so that the 1009
        // close the session sends is not lost to a reset (unread bytes at close make one).
        if matches!(e, WsError::Oversize { .. }) {
            self.draining = true;
            self.buf = BytesMut::new();
            self.decoder.fragments = None;
        } else {
            self.done = true;
        }
        Poll::Ready(Some(Err(error(e))))
    }

    /// Reads and drops until the peer closes or fails: `Ready(None)` then.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<WsMessage, axum::Error>>> {
        let mut scratch = [0u8; 1024];
        loop {
            let mut read = tokio::io::ReadBuf::new(&mut scratch);
            let polled = Pin::new(&mut lock(&self.shared).io).poll_read(cx, &mut read);
            match ready!(polled) {
                Ok(()) if !read.filled().is_empty() => {}
                _ => {
                    self.done = true;
                    return Poll::Ready(None);
                }
            }
        }
    }
}

impl<W: AsyncRead + AsyncWrite + Unpin> futures_util::Stream for Incoming<W> {
    type Item = Result<WsMessage, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.control_pending.load(Ordering::Relaxed) {
            let shared = this.shared.clone();
            let mut out = lock(&shared);
            this.flush_control(cx, &mut out);
            // A peer that sends pings (or anything that makes us answer) but does not read
            // is not read from either while our answers pile up: the send buffer is bounded.
            if this.control_pending.load(Ordering::Relaxed)
                && out.out.len() - out.sent >= WRITE_HIGH
            {
                out.reader_parked = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        if this.draining {
            return this.poll_drain(cx);
        }
        loop {
            let mut need = 0;
            match this.decoder.decode(&mut this.buf, &mut need) {
                Err(e) => return this.fail(cx, e),
                Ok(Some(decoded)) => {
                    let message = match decoded {
                        Decoded::Text(text) => WsMessage::Text(text),
                        Decoded::Binary(bytes) => WsMessage::Binary(bytes),
                        // Answered before the next read, only the latest of those read
                        // together (RFC 6455 5.5.3).
                        Decoded::Ping(bytes) => {
                            this.pong = Some(bytes.clone());
                            WsMessage::Ping(bytes)
                        }
                        Decoded::Pong(bytes) => WsMessage::Pong(bytes),
                        Decoded::Close(frame) => {
                            // Answered with the same code (none for none), unless our close
                            // frame went first; nothing is read after it.
                            let frame = frame.map(|(code, reason)| CloseFrame {
                                code,
                                reason: Utf8Bytes::try_from(reason).expect("checked"),
                            });
                            let answer = WsMessage::Close(frame.as_ref().map(|f| CloseFrame {
                                code: f.code,
                                reason: Utf8Bytes::default(),
                            }));
                            let mut out = lock(&this.shared);
                            if !out.close_sent {
                                let _ = out.queue(&answer);
                                this.flush_control(cx, &mut out);
                            }
                            drop(out);
                            this.done = true;
                            WsMessage::Close(frame)
                        }
                    };
                    return Poll::Ready(Some(Ok(message)));
                }
                Ok(None) => {}
            }
            if let Some(pong) = this.pong.take() {
                this.answer(cx, &WsMessage::Pong(pong));
                // The answer waits for room: through the backlog check first.
                if this.control_pending.load(Ordering::Relaxed) {
                    let mut out = lock(&this.shared);
                    if out.out.len() - out.sent >= WRITE_HIGH {
                        out.reader_parked = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                }
            }
            // A buffer grown for a large message is let go once it is empty (its capacity
            // tells only what is left after the message; a flag tells it grew): an idle
            // connection keeps at most `read_size`.
            if this.buf.is_empty() && this.grown {
                this.buf = BytesMut::new();
                this.grown = false;
            }
            // Reads start small (most WAMP messages are): a connection that sends only
            // those keeps `SMALL_READ` bytes; one whose read fills the room it had reads
            // `read_size` at a time from then on.
            let chunk = if this.filled {
                this.read_size
            } else {
                SMALL_READ.min(this.read_size)
            };
            // Room for the rest of the frame, or for one read; a frame's declared length is
            // not reserved at once, but as its bytes arrive.
            let want = need
                .saturating_sub(this.buf.len())
                .clamp(chunk, GROW_STEP.max(chunk));
            if this.buf.capacity() - this.buf.len() < want.min(chunk) {
                this.buf.reserve(want);
                this.grown |= want > chunk;
            }
            let room = this.buf.capacity() - this.buf.len();
            let read = tokio_util::io::poll_read_buf(
                Pin::new(&mut lock(&this.shared).io),
                cx,
                &mut this.buf,
            );
            match ready!(read) {
                // The peer went away without a close frame.
                Ok(0) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Ok(n) => this.filled |= n == room,
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(error(WsError::Io(e)))));
                }
            }
        }
    }
}

impl<W: AsyncWrite + Unpin> futures_util::Sink<WsMessage> for Sending<W> {
    type Error = axum::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let mut out = lock(&self.shared);
        if out.out.len() - out.sent < WRITE_HIGH {
            return Poll::Ready(Ok(()));
        }
        let written = ready!(out.poll_write_out(cx));
        self.control_pending.store(false, Ordering::Relaxed);
        Poll::Ready(written.map_err(error))
    }

    fn start_send(self: Pin<&mut Self>, item: WsMessage) -> Result<(), Self::Error> {
        lock(&self.shared).queue(&item).map_err(error)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let mut out = lock(&self.shared);
        ready!(out.poll_write_out(cx)).map_err(error)?;
        self.control_pending.store(false, Ordering::Relaxed);
        Pin::new(&mut out.io)
            .poll_flush(cx)
            .map_err(|e| error(WsError::Io(e)))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        {
            let mut out = lock(&self.shared);
            if !out.close_sent {
                out.queue(&WsMessage::Close(None)).map_err(error)?;
            }
        }
        self.poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut frame = vec![first];
        match payload.len() {
            n @ 0..=125 => frame.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    fn decode_all(decoder: &mut Decoder, bytes: &[u8]) -> Result<Vec<Decoded>, WsError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        let mut need = 0;
        while let Some(m) = decoder.decode(&mut buf, &mut need)? {
            out.push(m);
        }
        Ok(out)
    }

    #[test]
    fn text_binary_and_control_frames_decode() {
        let mut d = Decoder::new(1 << 20);
        let mut bytes = masked(0x81, b"[2,\"c\",\"p\"]");
        bytes.extend(masked(0x82, &[1, 2, 3]));
        bytes.extend(masked(0x89, b"hi"));
        bytes.extend(masked(0x8a, b""));
        bytes.extend(masked(0x88, &[0x03, 0xe8, b'o', b'k']));
        let got = decode_all(&mut d, &bytes).unwrap();
        assert_eq!(
            got,
            vec![
                Decoded::Text(Utf8Bytes::from_static("[2,\"c\",\"p\"]")),
                Decoded::Binary(Bytes::from_static(&[1, 2, 3])),
                Decoded::Ping(Bytes::from_static(b"hi")),
                Decoded::Pong(Bytes::new()),
                Decoded::Close(Some((1000, Bytes::from_static(b"ok")))),
            ]
        );
    }

    #[test]
    fn frames_split_anywhere_decode_whole() {
        let long = "x".repeat(70_000);
        let mut bytes = masked(0x81, long.as_bytes());
        bytes.extend(masked(0x81, b"short"));
        for cut in [1, 2, 5, 9, 13, 14, 100, 70_000, bytes.len() - 3] {
            let mut d = Decoder::new(1 << 20);
            let mut buf = BytesMut::from(&bytes[..cut]);
            let mut need = 0;
            let mut got = Vec::new();
            while let Some(m) = d.decode(&mut buf, &mut need).unwrap() {
                got.push(m);
            }
            buf.extend_from_slice(&bytes[cut..]);
            while let Some(m) = d.decode(&mut buf, &mut need).unwrap() {
                got.push(m);
            }
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(got[0], Decoded::Text(Utf8Bytes::from(long.clone())));
        }
    }

    #[test]
    fn fragments_gather_around_control_frames() {
        let mut d = Decoder::new(1 << 20);
        let mut bytes = masked(0x01, b"[2,");
        bytes.extend(masked(0x89, b"p"));
        bytes.extend(masked(0x00, b"\"c\","));
        bytes.extend(masked(0x80, b"\"p\"]"));
        let got = decode_all(&mut d, &bytes).unwrap();
        assert_eq!(
            got,
            vec![
                Decoded::Ping(Bytes::from_static(b"p")),
                Decoded::Text(Utf8Bytes::from_static("[2,\"c\",\"p\"]")),
            ]
        );
    }

    #[test]
    fn violations_are_refused() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0x81, 0x02, b'h', b'i'], "not masked"),
            (masked(0xc1, b"x"), "reserved bit"),
            (masked(0x83, b"x"), "reserved opcode"),
            (masked(0x09, b"x"), "fragmented control"),
            (masked(0x89, &[0; 126]), "long control"),
            (masked(0x80, b"x"), "continuation with no message"),
            (
                [masked(0x01, b"a"), masked(0x81, b"b")].concat(),
                "new message",
            ),
            (masked(0x88, &[3]), "one-byte close"),
            (masked(0x88, &[0x03, 0xed]), "close code 1005"),
        ];
        for (bytes, what) in cases {
            let mut d = Decoder::new(1 << 20);
            assert!(
                matches!(decode_all(&mut d, &bytes), Err(WsError::Protocol(_))),
                "{what}"
            );
        }
        let mut d = Decoder::new(1 << 20);
        assert!(matches!(
            decode_all(&mut d, &masked(0x81, &[0xff, 0xfe])),
            Err(WsError::InvalidUtf8)
        ));
        assert!(matches!(
            decode_all(&mut d, &masked(0x88, &[0x03, 0xe8, 0xff])),
            Err(WsError::InvalidUtf8)
        ));
    }

    #[test]
    fn oversize_is_seen_in_the_header_and_across_fragments() {
        let mut d = Decoder::new(100);
        // Only the header arrived: refused without waiting for the payload.
        let frame = masked(0x82, &[0; 101]);
        assert!(matches!(
            decode_all(&mut d, &frame[..8]),
            Err(WsError::Oversize {
                size: 101,
                max: 100
            })
        ));
        let mut d = Decoder::new(100);
        let bytes = [masked(0x02, &[0; 60]), masked(0x80, &[0; 60])].concat();
        assert!(matches!(
            decode_all(&mut d, &bytes),
            Err(WsError::Oversize { size: 120, .. })
        ));
        let mut d = Decoder::new(100);
        let mut huge = vec![0x82, 0xff];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert!(matches!(
            decode_all(&mut d, &huge),
            Err(WsError::Protocol(_))
        ));
    }

    #[test]
    fn frames_encode_with_each_length_form() {
        for n in [0, 125, 126, 65_535, 65_536] {
            let payload = vec![7u8; n];
            let mut out = Vec::new();
            encode(&mut out, TEXT, &payload);
            let (header, len) = match n {
                0..=125 => (2, out[1] as usize),
                126..=65_535 => (4, usize::from(u16::from_be_bytes([out[2], out[3]]))),
                _ => (
                    10,
                    u64::from_be_bytes(out[2..10].try_into().unwrap()) as usize,
                ),
            };
            assert_eq!(out[0], 0x81);
            assert_eq!(len, n);
            assert_eq!(out.len(), header + n);
        }
        let mut out = Vec::new();
        let reason: Utf8Bytes = "é".repeat(100).into();
        encode_close(&mut out, Some(&CloseFrame { code: 1001, reason }));
        assert_eq!(out[0], 0x88);
        assert!(usize::from(out[1]) <= 125);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }

    use futures_util::{Sink as _, SinkExt as _, Stream as _, StreamExt as _};
    use tokio::io::AsyncWriteExt as _;

    /// A session's halves over an in-memory pipe of `room` bytes each way, and the
    /// client's end.
    fn pipe(room: usize) -> (Halves<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (server, client) = tokio::io::duplex(room);
        (split(server, 4096, 1 << 20), client)
    }

    fn unsent<W>(incoming: &Incoming<W>) -> usize {
        let out = lock(&incoming.shared);
        out.out.len() - out.sent
    }

    #[tokio::test]
    async fn pings_from_a_peer_that_does_not_read_are_not_answered_without_bound() {
        let ((_sending, mut incoming), mut client) = pipe(64 << 10);
        // 4 MiB of 125-byte pings, written while the server reads; the client reads nothing.
        let ping = masked(0x89, &[0; 125]);
        let writer = tokio::spawn(async move {
            for _ in 0..(4 << 20) / ping.len() {
                if client.write_all(&ping).await.is_err() {
                    break;
                }
            }
            client
        });
        let mut answered = 0;
        loop {
            match tokio::time::timeout(Duration::from_millis(300), incoming.next()).await {
                Ok(Some(Ok(_))) => answered += 1,
                // The server stopped reading: its answers are not read.
                Err(_) => break,
                Ok(other) => panic!("unexpected {other:?}"),
            }
        }
        assert!(answered > 0);
        assert!(
            unsent(&incoming) < WRITE_HIGH + 200,
            "{} bytes of pongs queued",
            unsent(&incoming)
        );
        writer.abort();
    }

    /// A waker that counts its wakes.
    struct Counted(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counted {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_reader_stopped_for_the_backlog_is_woken_when_the_writer_drains_it() {
        let ((mut sending, mut incoming), client) = pipe(4096);
        let (mut client_in, mut client_out) = tokio::io::split(client);
        let ping = masked(0x89, &[0; 125]);
        let pinger = tokio::spawn(async move {
            for _ in 0..(4 << 20) / ping.len() {
                if client_out.write_all(&ping).await.is_err() {
                    break;
                }
            }
        });
        // The reader (its own waker, as under `Gated`) reads until its answers pile up.
        let reader = Arc::new(Counted(0.into()));
        let reader_waker = std::task::Waker::from(reader.clone());
        let mut parked = false;
        for _ in 0..100_000 {
            let mut cx = Context::from_waker(&reader_waker);
            match Pin::new(&mut incoming).poll_next(&mut cx) {
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Pending if unsent(&incoming) >= WRITE_HIGH => {
                    parked = true;
                    break;
                }
                Poll::Pending => tokio::task::yield_now().await,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(parked, "the reader stopped for the backlog");
        let woken_before = reader.0.load(Ordering::SeqCst);
        // The writer takes over the socket's write waker, then the client reads again.
        let writer = Arc::new(Counted(0.into()));
        let writer_waker = std::task::Waker::from(writer.clone());
        let mut cx = Context::from_waker(&writer_waker);
        assert!(Pin::new(&mut sending).poll_flush(&mut cx).is_pending());
        let drain = tokio::spawn(async move {
            let mut sink = vec![0; 1 << 16];
            loop {
                match tokio::io::AsyncReadExt::read(&mut client_in, &mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        });
        // The writer, woken, writes what is queued: the reader must be woken too.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while reader.0.load(Ordering::SeqCst) == woken_before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the reader was never woken"
            );
            let _ = Pin::new(&mut sending).poll_flush(&mut cx);
            tokio::task::yield_now().await;
        }
        pinger.abort();
        drain.abort();
    }

    #[tokio::test]
    async fn a_large_frame_is_not_reserved_before_it_arrives_and_is_let_go_after() {
        let ((_sending, mut incoming), mut client) = pipe(1 << 20);
        let frame = masked(0x82, &vec![1; 1 << 20]);
        // Only the header and a few bytes: room is made as bytes arrive.
        client.write_all(&frame[..64]).await.unwrap();
        let early = tokio::time::timeout(Duration::from_millis(100), incoming.next()).await;
        assert!(early.is_err(), "no message yet");
        assert!(
            incoming.buf.capacity() < 512 << 10,
            "{}",
            incoming.buf.capacity()
        );
        let rest = frame[64..].to_vec();
        let writer = tokio::spawn(async move {
            client.write_all(&rest).await.unwrap();
            client
        });
        let Some(Ok(WsMessage::Binary(bytes))) = incoming.next().await else {
            panic!("the message");
        };
        assert_eq!(bytes.len(), 1 << 20);
        drop(bytes);
        let _client = writer.await.unwrap();
        // Idle again: the buffer is back to the read size.
        let idle = tokio::time::timeout(Duration::from_millis(100), incoming.next()).await;
        assert!(idle.is_err());
        assert!(
            incoming.buf.capacity() <= 4 * 4096,
            "{}",
            incoming.buf.capacity()
        );
    }

    #[tokio::test]
    async fn a_connection_that_sends_small_messages_keeps_a_small_buffer() {
        let ((_sending, mut incoming), mut client) = pipe(1 << 16);
        for i in 0..20 {
            client
                .write_all(&masked(0x81, format!("[5,\"topic.{i}\"]").as_bytes()))
                .await
                .unwrap();
            assert!(matches!(
                incoming.next().await,
                Some(Ok(WsMessage::Text(_)))
            ));
            assert!(
                incoming.buf.capacity() <= SMALL_READ,
                "{}",
                incoming.buf.capacity()
            );
        }
        // A burst that fills the room: from then on reads take `read_size`.
        let burst: Vec<u8> = (0..100)
            .flat_map(|_| masked(0x81, b"[7,\"t\",1]"))
            .collect();
        client.write_all(&burst).await.unwrap();
        for _ in 0..100 {
            assert!(matches!(
                incoming.next().await,
                Some(Ok(WsMessage::Text(_)))
            ));
        }
        assert!(incoming.filled);
    }

    #[tokio::test]
    async fn an_oversize_message_is_read_and_dropped_so_the_close_gets_through() {
        let (server, mut client) = tokio::io::duplex(1 << 16);
        let (mut sending, mut incoming) = split(server, 4096, 1000);
        let frame = masked(0x82, &vec![1; 100_000]);
        let writer = tokio::spawn(async move {
            client.write_all(&frame).await.unwrap();
            client
        });
        let first = tokio::time::timeout(Duration::from_secs(2), incoming.next())
            .await
            .expect("the first read");
        assert!(
            matches!(&first, Some(Err(e)) if is_oversize(e)),
            "{first:?}"
        );
        // The session answers with 1009 while the rest of the frame still arrives: the
        // reader keeps taking it, so the client's writes finish.
        let closing = async {
            tokio::time::timeout(
                Duration::from_secs(2),
                sending.send(WsMessage::Close(Some(CloseFrame {
                    code: 1009,
                    reason: "message too big".into(),
                }))),
            )
            .await
            .expect("the close sent")
        };
        let draining = async {
            let next = tokio::time::timeout(Duration::from_secs(2), incoming.next()).await;
            assert!(matches!(next, Ok(None)), "{next:?}");
        };
        let client = async {
            let mut client = tokio::time::timeout(Duration::from_secs(2), writer)
                .await
                .expect("the client's frame was read")
                .unwrap();
            client.shutdown().await.unwrap();
            let mut got = [0; 19];
            tokio::time::timeout(
                Duration::from_secs(2),
                tokio::io::AsyncReadExt::read_exact(&mut client, &mut got),
            )
            .await
            .expect("the close read")
            .unwrap();
            got
        };
        let (sent, (), got) = tokio::join!(closing, draining, client);
        sent.unwrap();
        assert_eq!(&got[..4], &[0x88, 17, 0x03, 0xf1]);
    }

    #[test]
    fn unmask_matches_a_bytewise_xor() {
        let mask = [1, 2, 3, 4];
        for n in 0..40 {
            let data: Vec<u8> = (0..n as u8).collect();
            let mut fast = data.clone();
            unmask(&mut fast, mask);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(fast, slow);
        }
    }
}
