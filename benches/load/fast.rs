//! The load client's hot loop on mio: one thread drives every connection, non-blocking,
//! reading and writing straight from per-connection buffers that are reused, answering
//! each frame with pre-encoded bytes. It does per frame only what a client must (find the
//! frame's end, count it, queue the next request), so that it is cheaper per call than the
//! server it measures.

use std::{
    io::{self, Read as _, Write as _},
    sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    time::{Duration, Instant},
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
    /// `s`, non-blocking, registered with `poll` for reading as token `token`.
    fn register(s: std::net::TcpStream, poll: &Poll, token: usize) -> io::Result<Self> {
        s.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(s);
        poll.registry()
            .register(&mut stream, Token(token), Interest::READABLE)?;
        Ok(Self {
            stream,
            buf: vec![0; 16 << 10],
            start: 0,
            end: 0,
            out: Vec::with_capacity(4 << 10),
            sent: 0,
            writable_wanted: false,
        })
    }

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
        let mut c = Conn::register(s, &poll, i)?;
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

/// One set of connections that takes turns with others in [`drive_turns`].
pub struct Group {
    /// Connected, past their handshake, nothing unread.
    pub streams: Vec<std::net::TcpStream>,
    /// The request every connection sends at its turn's start and again on every answer
    /// while the turn lasts.
    pub frame: Vec<u8>,
    /// Whether an answer is a served call (otherwise it counts as an error).
    pub served: fn(&[u8]) -> bool,
}

/// One turn of one group: the calls answered in it and how long it took, with what `probe`
/// read just before it started and just after its last answer.
#[derive(Clone, Copy, Debug)]
pub struct Turn<P> {
    pub calls: u64,
    pub errors: u64,
    pub time: Duration,
    pub before: P,
    pub after: P,
}

/// Closed loop, one call in flight per connection, the groups taking turns of `slice`
/// each (group 0, 1, ..., then 1, 2, ..., 0, and so on) for `cycles` cycles: in its turn a group's
/// connections each send a call and answer every answer with the next; at the turn's end
/// they stop sending, and the next turn starts when every call in flight has been answered.
/// So every group sees the machine as it is over the whole run, in slices, rather than in
/// one phase of it. Returns each group's turns, in order.
pub fn drive_turns<P>(
    groups: Vec<Group>,
    slice: Duration,
    cycles: usize,
    mut probe: impl FnMut(usize) -> P,
) -> io::Result<Vec<Vec<Turn<P>>>> {
    let mut poll = Poll::new()?;
    let mut conns = vec![];
    let mut group_of = vec![];
    let mut members: Vec<std::ops::Range<usize>> = vec![];
    let mut frames = vec![];
    let mut served = vec![];
    for (g, group) in groups.into_iter().enumerate() {
        let first = conns.len();
        for s in group.streams {
            conns.push(Some(Conn::register(s, &poll, conns.len())?));
            group_of.push(g);
        }
        members.push(first..conns.len());
        frames.push(group.frame);
        served.push(group.served);
    }
    let mut live = conns.len();
    // Calls in flight per connection: a connection lost with one counts it as an error.
    let mut pending = vec![0u64; conns.len()];
    let mut events = Events::with_capacity(1024);
    let mut turns: Vec<Vec<Turn<P>>> = (0..frames.len()).map(|_| vec![]).collect();
    let n = frames.len();
    for cycle in 0..cycles {
        // Each cycle starts one group later, so that the seam between cycles falls before a
        // different group each time; within a cycle a group still follows the same one.
        for g in (0..n).map(|k| (cycle + k) % n) {
            let before = probe(g);
            let started = Instant::now();
            let ends = started + slice;
            let (mut calls, mut errors, mut in_flight) = (0u64, 0u64, 0u64);
            // What a lost connection had in flight: no longer awaited, counted as errors.
            let lost = |conns: &[Option<Conn>], pending: &mut [u64], i: usize| {
                if conns[i].is_none() {
                    std::mem::take(&mut pending[i])
                } else {
                    0
                }
            };
            for i in members[g].clone() {
                if let Some(c) = conns[i].as_mut() {
                    c.out.extend_from_slice(&frames[g]);
                    in_flight += 1;
                    pending[i] += 1;
                } else {
                    // A connection lost in an earlier turn: every turn of its group shows it.
                    errors += 1;
                }
                flush_one(&mut poll, &mut conns, i, &mut live)?;
                let gone = lost(&conns, &mut pending, i);
                (in_flight, errors) = (in_flight - gone, errors + gone);
            }
            let mut sending = true;
            loop {
                let now = Instant::now();
                sending &= now < ends;
                if !sending && in_flight == 0 {
                    break;
                }
                if now > ends + Duration::from_secs(5) {
                    // A server that stalls this long: its connections still waiting are
                    // dropped and their calls count as errors (as every later turn of theirs
                    // does), so the round reads "not measured" and the run goes on.
                    for i in members[g].clone() {
                        if pending[i] > 0 && conns[i].take().is_some() {
                            live -= 1;
                            errors += std::mem::take(&mut pending[i]);
                        }
                    }
                    break;
                }
                let wait = if sending {
                    ends - now
                } else {
                    Duration::from_millis(50)
                };
                poll.poll(&mut events, Some(wait))?;
                for event in &events {
                    let i = event.token().0;
                    let Some(c) = conns[i].as_mut() else { continue };
                    // Only this turn's group has calls in flight; a frame on a connection
                    // without a call in flight answers nothing.
                    let mine = group_of[i] == g;
                    let waiting = &mut pending[i];
                    let mut answer = |_: usize, payload: &[u8], out: &mut Vec<u8>| {
                        if !mine || *waiting == 0 {
                            return;
                        }
                        in_flight -= 1;
                        *waiting -= 1;
                        if (served[g])(payload) {
                            calls += 1;
                        } else {
                            errors += 1;
                        }
                        if sending {
                            out.extend_from_slice(&frames[g]);
                            in_flight += 1;
                            *waiting += 1;
                        }
                    };
                    if event.is_readable() && c.read(i, &mut answer).is_err() {
                        conns[i] = None;
                        live -= 1;
                    } else {
                        flush_one(&mut poll, &mut conns, i, &mut live)?;
                    }
                    let gone = lost(&conns, &mut pending, i);
                    (in_flight, errors) = (in_flight - gone, errors + gone);
                }
            }
            let time = started.elapsed();
            let after = probe(g);
            turns[g].push(Turn {
                calls,
                errors,
                time,
                before,
                after,
            });
        }
    }
    Ok(turns)
}
