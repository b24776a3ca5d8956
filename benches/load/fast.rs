//! The load client's hot loop on mio: one thread drives every connection, non-blocking,
//! reading and writing straight from per-connection buffers that are reused, answering
//! each frame with pre-encoded bytes. It does per frame only what a client must (find the
//! frame's end, count it, queue the next request), so that it is cheaper per call than the
//! server it measures.

use std::{
    io::{self, Read as _, Write as _},
    sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use mio::{Events, Interest, Poll, Token, net::TcpStream};

/// One connection after its handshake.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    sent: usize,
    writable_wanted: bool,
}

/// The next complete frame in `b`: (opcode, payload start, payload end), relative to `b`.
pub fn parse(b: &[u8]) -> Option<(u8, usize, usize)> {
    if b.len() < 2 {
        return None;
    }
    let op = b[0] & 0x0f;
    let (len, head) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
        127 if b.len() >= 10 => (
            u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (usize::from(n), 2),
    };
    (b.len() >= head + len).then_some((op, head, head + len))
}

impl Conn {
    /// Reads until the socket would block, handing each complete text or binary frame's
    /// payload to `each`; `Err` when the server closed.
    fn read(
        &mut self,
        index: usize,
        each: &mut impl FnMut(usize, &[u8], &mut Vec<u8>),
    ) -> io::Result<()> {
        loop {
            if self.end == self.buf.len() {
                if self.start > 0 {
                    self.buf.copy_within(self.start..self.end, 0);
                    self.end -= self.start;
                    self.start = 0;
                } else {
                    self.buf.resize(self.buf.len() * 2, 0);
                }
            }
            let room = self.buf.len() - self.end;
            // A short read emptied the socket's queue: no second read to learn that
            // (edge-triggered, so anything later comes with a new event).
            let drained = match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.end += n;
                    n < room
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            while let Some((op, from, to)) = parse(&self.buf[self.start..self.end]) {
                let (from, to) = (self.start + from, self.start + to);
                self.start = to;
                match op {
                    0x1 | 0x2 => each(index, &self.buf[from..to], &mut self.out),
                    0x8 => return Err(io::Error::other("closed by the server")),
                    _ => {}
                }
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            }
            if drained {
                return Ok(());
            }
        }
    }

    /// Writes what is queued until done or the socket would block.
    fn flush(&mut self) -> io::Result<()> {
        while self.sent < self.out.len() {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.sent = 0;
        Ok(())
    }
}

/// Drives `streams` (connected, past their handshake, nothing unread) until `stop`: first
/// writes `start(i)` on connection `i`, then hands every frame that arrives to `each(i,
/// payload, out)`, which appends what to send in answer to `out`. Returns when stopped or
/// when every connection has failed.
pub fn drive(
    streams: Vec<std::net::TcpStream>,
    mut start: impl FnMut(usize, &mut Vec<u8>),
    mut each: impl FnMut(usize, &[u8], &mut Vec<u8>),
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(streams.len());
    for (i, s) in streams.into_iter().enumerate() {
        s.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(s);
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)?;
        let mut c = Conn {
            stream,
            buf: vec![0; 16 << 10],
            start: 0,
            end: 0,
            out: Vec::with_capacity(4 << 10),
            sent: 0,
            writable_wanted: false,
        };
        start(i, &mut c.out);
        conns.push(Some(c));
    }
    let mut live = conns.len();
    let mut events = Events::with_capacity(1024);
    for i in 0..conns.len() {
        flush_one(&mut poll, &mut conns, i, &mut live)?;
    }
    while !stop.load(Relaxed) && live > 0 {
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        for event in &events {
            let i = event.token().0;
            let Some(c) = conns[i].as_mut() else { continue };
            if event.is_readable() && c.read(i, &mut each).is_err() {
                conns[i] = None;
                live -= 1;
                continue;
            }
            flush_one(&mut poll, &mut conns, i, &mut live)?;
        }
    }
    Ok(())
}

/// Flushes connection `i`, asking for writability while it is backed up.
fn flush_one(
    poll: &mut Poll,
    conns: &mut [Option<Conn>],
    i: usize,
    live: &mut usize,
) -> io::Result<()> {
    let Some(c) = conns[i].as_mut() else {
        return Ok(());
    };
    if c.flush().is_err() {
        conns[i] = None;
        *live -= 1;
        return Ok(());
    }
    let want = !c.out.is_empty();
    if want != c.writable_wanted {
        let interest = if want {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        poll.registry()
            .reregister(&mut c.stream, Token(i), interest)?;
        c.writable_wanted = want;
    }
    Ok(())
}

/// Counts one more operation.
pub fn bump(count: &AtomicU64) {
    count.fetch_add(1, Relaxed);
}
