//! A minimal WebSocket client for load: hand-made handshake, pre-serialized masked frames
//! (mask key zero, so the payload bytes are written as they are), frame boundaries parsed
//! straight from the read buffer.

use std::{io, net::SocketAddr};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
};

/// The reading side: a buffer and the frame parser.
pub struct Reader {
    half: OwnedReadHalf,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// The writing side.
pub struct Writer(OwnedWriteHalf);

impl Writer {
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes).await
    }
}

pub struct Conn {
    reader: Reader,
    writer: Writer,
}

/// A client text frame carrying `payload`, masked with the key 0.
pub fn text_frame(payload: &[u8]) -> Vec<u8> {
    frame(0x81, payload)
}

/// A masked binary frame (MessagePack and CBOR sessions).
pub fn binary_frame(payload: &[u8]) -> Vec<u8> {
    frame(0x82, payload)
}

fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(first);
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n < 65536 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Offset of the payload within a frame built by [`text_frame`].
pub fn payload_offset(payload_len: usize) -> usize {
    match payload_len {
        n if n < 126 => 6,
        n if n < 65536 => 8,
        _ => 14,
    }
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        Self::connect_as(addr, "wamp").await
    }

    /// Connects offering one WebSocket subprotocol.
    pub async fn connect_as(addr: SocketAddr, subprotocol: &str) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (half, mut writer) = stream.into_split();
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: {subprotocol}\r\n\r\n"
        );
        writer.write_all(req.as_bytes()).await?;
        let mut reader = Reader {
            half,
            buf: vec![0; 16 << 10],
            start: 0,
            end: 0,
        };
        loop {
            if let Some(i) = reader.buf[..reader.end]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
            {
                if !reader.buf.starts_with(b"HTTP/1.1 101") {
                    return Err(io::Error::other(format!(
                        "handshake refused: {}",
                        String::from_utf8_lossy(&reader.buf[..i])
                    )));
                }
                reader.start = i + 4;
                return Ok(Self {
                    reader,
                    writer: Writer(writer),
                });
            }
            reader.fill().await?;
        }
    }

    pub async fn stream_write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write(bytes).await
    }

    pub async fn next_text(&mut self) -> io::Result<&[u8]> {
        self.reader.next_text().await
    }

    pub async fn read_batch(&mut self, each: impl FnMut(&[u8])) -> io::Result<usize> {
        self.reader.read_batch(each).await
    }

    pub fn split(self) -> (Reader, Writer) {
        (self.reader, self.writer)
    }

    /// The socket, for the mio client (`fast`); nothing may be left unread.
    pub fn into_std(self) -> io::Result<std::net::TcpStream> {
        assert_eq!(
            self.reader.start, self.reader.end,
            "unread bytes would be lost"
        );
        let stream = self
            .reader
            .half
            .reunite(self.writer.0)
            .map_err(|e| io::Error::other(e.to_string()))?;
        stream.into_std()
    }
}

impl Reader {
    async fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 && self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        let n = self.half.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.end += n;
        Ok(())
    }

    /// The next complete frame in the buffer, without reading: (opcode, payload range).
    fn parse(&self) -> Option<(u8, usize, usize)> {
        crate::fast::parse(&self.buf[self.start..self.end])
            .map(|(op, from, to)| (op, self.start + from, self.start + to))
    }

    /// The next text frame's payload (other frames are skipped; a close is an error).
    pub async fn next_text(&mut self) -> io::Result<&[u8]> {
        loop {
            match self.parse() {
                Some((op, from, to)) => {
                    self.start = to;
                    match op {
                        0x1 | 0x2 => return Ok(&self.buf[from..to]),
                        0x8 => return Err(io::Error::other("closed by the server")),
                        _ => {}
                    }
                }
                None => self.fill().await?,
            }
        }
    }

    /// Reads at least one more chunk and returns the text frames now complete, calling
    /// `each` on every payload.
    pub async fn read_batch(&mut self, mut each: impl FnMut(&[u8])) -> io::Result<usize> {
        let mut n = 0;
        loop {
            while let Some((op, from, to)) = self.parse() {
                self.start = to;
                match op {
                    0x1 => {
                        each(&self.buf[from..to]);
                        n += 1;
                    }
                    0x8 => return Err(io::Error::other("closed by the server")),
                    _ => {}
                }
            }
            if n > 0 {
                return Ok(n);
            }
            self.fill().await?;
        }
    }
}

/// The number after `"seq":` in an event payload (routers that print `": "` included).
pub fn seq_of(payload: &[u8]) -> Option<u64> {
    let mut i = payload.windows(6).position(|w| w == b"\"seq\":")? + 6;
    while payload.get(i) == Some(&b' ') {
        i += 1;
    }
    let digits = payload[i..].iter().take_while(|b| b.is_ascii_digit());
    let mut n = 0u64;
    let mut any = false;
    for d in digits {
        n = n * 10 + u64::from(d - b'0');
        any = true;
    }
    any.then_some(n)
}

/// The fixed-width decimal call id in the first string (`[3,"00000012",...`; routers that
/// print `[3, "00000012", ...` included).
pub fn call_id_of(payload: &[u8]) -> Option<usize> {
    let quote = payload.iter().take(8).position(|b| *b == b'"')? + 1;
    let digits = payload.get(quote..quote + 8)?;
    let mut n = 0usize;
    for d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + usize::from(d - b'0');
    }
    Some(n)
}
