//! WAMP v2 over RawSocket: the WAMP TCP framing, serving the same router as the WebSocket
//! endpoint, for back-end services that do not want HTTP.
//!
//! The client opens with four octets: `0x7F`, its maximum message length (`2^(9+n)`, `n`
//! in the high nibble) and serializer (1 JSON, 2 MessagePack, 3 CBOR; low nibble), and two
//! zero octets; the router answers the same way with its own maximum, or with an error in
//! the high nibble of the second octet (1 serializer unsupported, 3 reserved bits used,
//! 4 too many connections). Then each message is a four-octet header (a frame type in the
//! low three bits of the first octet, 0 a WAMP message, 1 PING, 2 PONG; a 24-bit big-endian
//! length) and the payload.
//!
//! A connection is made to look like a WebSocket (text frames for JSON, binary for the
//! others, PING and PONG as WebSocket pings and pongs), so the session machinery, limits and
//! keepalive are the WebSocket endpoint's. A PING from the client is answered at once.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use axum::body::Bytes;
use axum::extract::ws::{Message as WsMessage, Utf8Bytes};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, BufWriter},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::Mutex,
};

use crate::{core::codec::v2::Serializer, layer::Config, router::Inner, wire::Proto};

/// How long a client has to send its four opening octets.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const MAGIC: u8 = 0x7F;

/// The largest length exponent: 2^(9+15) = 16 MiB, what a 24-bit length can say.
const MAX_EXPONENT: u8 = 15;

/// The handshake's error codes.
mod refuse {
    pub(super) const SERIALIZER: u8 = 1;
    pub(super) const RESERVED_BITS: u8 = 3;
    pub(super) const TOO_MANY: u8 = 4;
}

/// The largest exponent `n` with `2^(9+n) <= bytes` (at least 0: 512 bytes, the least
/// the spec lets a router accept; at most [`MAX_EXPONENT`]): what the router announces is
/// what it accepts.
fn exponent_for(bytes: usize) -> u8 {
    let mut n = 0;
    while n < MAX_EXPONENT && (1usize << (9 + n + 1)) <= bytes {
        n += 1;
    }
    n
}

/// How many connections may be in their opening handshake at once; more are dropped.
const MAX_HANDSHAKES: usize = 1024;

/// How many PINGs a client may send in [`PING_WINDOW`] before its connection ends.
const MAX_PINGS: u32 = 100;
const PING_WINDOW: Duration = Duration::from_secs(10);

/// What the client's four octets ask for: its serializer and maximum message length, or
/// the error code to answer with.
fn read_hello(hello: [u8; 4], served: &[Proto]) -> Result<(Serializer, usize), u8> {
    if hello[0] != MAGIC || hello[2] != 0 || hello[3] != 0 {
        return Err(refuse::RESERVED_BITS);
    }
    let serializer = match hello[1] & 0x0F {
        1 => Serializer::Json,
        2 => Serializer::MsgPack,
        3 => Serializer::Cbor,
        _ => return Err(refuse::SERIALIZER),
    };
    if !served.contains(&Proto::V2(serializer)) {
        return Err(refuse::SERIALIZER);
    }
    Ok((serializer, 1usize << (9 + (hello[1] >> 4))))
}

/// Serves RawSocket connections from `listener` until the router shuts down. An error
/// accepting a connection (out of file descriptors, say) is logged and accepting goes on.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Arc<Inner<()>>,
    config: Arc<Config>,
) -> io::Result<()> {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let hub = router.wamp().hub.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = hub.shutdown_begun() => return Ok(()),
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "RawSocket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Connections that never finish their handshake cannot pile up without bound.
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "RawSocket connection dropped: too many handshakes in progress");
            continue;
        };
        let (router, config) = (router.clone(), config.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(tcp, peer, router, config, permit).await {
                tracing::debug!(error = %e, %peer, "RawSocket connection refused");
            }
        });
    }
}

async fn connection(
    mut tcp: TcpStream,
    peer: SocketAddr,
    router: Arc<Inner<()>>,
    config: Arc<Config>,
    handshake: tokio::sync::OwnedSemaphorePermit,
) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    let mut hello = [0u8; 4];
    tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.read_exact(&mut hello))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no handshake in time"))??;
    let ours = exponent_for(config.max_message_size);
    let asked = read_hello(hello, &config.protocols).and_then(|asked| {
        router
            .wamp()
            .hub
            .reserve_slot(config.max_sessions)
            .map(|()| asked)
            .map_err(|_| refuse::TOO_MANY)
    });
    let (serializer, theirs) = match asked {
        Ok(asked) => asked,
        Err(code) => {
            tcp.write_all(&[MAGIC, code << 4, 0, 0]).await?;
            return Ok(());
        }
    };
    let code = match serializer {
        Serializer::Json => 1,
        Serializer::MsgPack => 2,
        _ => 3,
    };
    if let Err(e) = tcp.write_all(&[MAGIC, (ours << 4) | code, 0, 0]).await {
        router.wamp().hub.release_slot();
        return Err(e);
    }
    drop(handshake);
    let ours = 1usize << (9 + ours);
    let (read, write) = tcp.into_split();
    let writer = Arc::new(Mutex::new(BufWriter::new(write)));
    let sink = sink(writer.clone(), theirs);
    let stream = stream(read, writer, serializer, ours);
    // Like an upgraded WebSocket's request: no headers, the peer's address for the
    // authentication throttle.
    let mut parts = http::Request::new(()).into_parts().0;
    parts.extensions.insert(axum::extract::ConnectInfo(peer));
    crate::socket::run_on(
        sink,
        stream,
        router,
        config,
        Arc::new(parts),
        Proto::V2(serializer),
    )
    .await;
    Ok(())
}

type Writer = Arc<Mutex<BufWriter<OwnedWriteHalf>>>;

/// Writes one frame, header and payload in one write, and flushes (each message goes out
/// as it comes: the session batches writes only on WebSockets).
async fn write_frame(writer: &Writer, kind: u8, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l < 1 << 24)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "message too long"))?;
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame[0] = kind;
    frame.extend_from_slice(payload);
    let mut w = writer.lock().await;
    w.write_all(&frame).await?;
    w.flush().await
}

/// The sending half, as a WebSocket's. A message longer than the client accepts is not
/// sent (the spec forbids it; its recipient should not lose its session for what others
/// send): it is logged and dropped. A close frame shuts the connection down.
fn sink(writer: Writer, theirs: usize) -> crate::socket::Sink {
    let unfold = futures_util::sink::unfold(writer, move |writer, message: WsMessage| async move {
        let sent = match &message {
            WsMessage::Text(t) if t.len() <= theirs => write_frame(&writer, 0, t.as_bytes()).await,
            WsMessage::Binary(b) if b.len() <= theirs => write_frame(&writer, 0, b).await,
            WsMessage::Text(_) | WsMessage::Binary(_) => {
                tracing::warn!(
                    limit = theirs,
                    "message longer than the RawSocket client accepts: dropped"
                );
                Ok(())
            }
            WsMessage::Ping(p) => write_frame(&writer, 1, p).await,
            WsMessage::Pong(p) => write_frame(&writer, 2, p).await,
            WsMessage::Close(_) => writer.lock().await.shutdown().await,
        };
        sent.map(|()| writer).map_err(axum::Error::new)
    });
    Box::pin(Fused {
        inner: Box::pin(unfold),
        failed: false,
    })
}

/// A sink that, once a send failed, keeps failing (an `unfold` sink panics when used after
/// an error).
struct Fused<S> {
    inner: std::pin::Pin<Box<S>>,
    failed: bool,
}

impl<S: futures_util::Sink<WsMessage, Error = axum::Error>> Fused<S> {
    fn check(&mut self, r: Result<(), axum::Error>) -> Result<(), axum::Error> {
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    fn gone() -> axum::Error {
        axum::Error::new(io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the connection failed",
        ))
    }
}

impl<S: futures_util::Sink<WsMessage, Error = axum::Error>> futures_util::Sink<WsMessage>
    for Fused<S>
{
    type Error = axum::Error;

    fn poll_ready(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), axum::Error>> {
        let this = self.get_mut();
        if this.failed {
            return std::task::Poll::Ready(Err(Self::gone()));
        }
        let r = std::task::ready!(this.inner.as_mut().poll_ready(cx));
        std::task::Poll::Ready(this.check(r))
    }

    fn start_send(self: std::pin::Pin<&mut Self>, item: WsMessage) -> Result<(), axum::Error> {
        let this = self.get_mut();
        if this.failed {
            return Err(Self::gone());
        }
        let r = this.inner.as_mut().start_send(item);
        this.check(r)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), axum::Error>> {
        let this = self.get_mut();
        if this.failed {
            return std::task::Poll::Ready(Err(Self::gone()));
        }
        let r = std::task::ready!(this.inner.as_mut().poll_flush(cx));
        std::task::Poll::Ready(this.check(r))
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), axum::Error>> {
        let this = self.get_mut();
        if this.failed {
            return std::task::Poll::Ready(Ok(()));
        }
        let r = std::task::ready!(this.inner.as_mut().poll_close(cx));
        std::task::Poll::Ready(this.check(r))
    }
}

/// The receiving half, as a WebSocket's: WAMP messages as text (JSON) or binary frames,
/// PONGs as pongs. A PING is answered here, unless the writer is busy (the client is
/// being sent data anyway) or too slow; more than [`MAX_PINGS`] in [`PING_WINDOW`] end the
/// connection.
fn stream(
    read: OwnedReadHalf,
    writer: Writer,
    serializer: Serializer,
    ours: usize,
) -> crate::socket::Stream {
    struct Reader {
        read: OwnedReadHalf,
        writer: Writer,
        pings: u32,
        window: tokio::time::Instant,
        done: bool,
    }
    let fail =
        |r: Reader, e: io::Error| Some((Err(axum::Error::new(e)), Reader { done: true, ..r }));
    let state = Reader {
        read,
        writer,
        pings: 0,
        window: tokio::time::Instant::now(),
        done: false,
    };
    Box::pin(futures_util::stream::unfold(
        state,
        move |mut r| async move {
            if r.done {
                return None;
            }
            loop {
                let mut header = [0u8; 4];
                if let Err(e) = r.read.read_exact(&mut header).await {
                    // The client closed between messages: as a WebSocket without a close frame.
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        return None;
                    }
                    return fail(r, e);
                }
                let kind = header[0];
                let len = usize::from(header[1]) << 16
                    | usize::from(header[2]) << 8
                    | usize::from(header[3]);
                if kind > 2 || len > ours {
                    let why = if kind > 2 {
                        "unknown RawSocket frame type"
                    } else {
                        "message longer than the router accepts"
                    };
                    return fail(r, io::Error::new(io::ErrorKind::InvalidData, why));
                }
                // Read as the bytes come: a length alone does not buy a buffer of that size.
                let mut payload = Vec::with_capacity(len.min(64 << 10));
                match (&mut r.read)
                    .take(len as u64)
                    .read_to_end(&mut payload)
                    .await
                {
                    Ok(n) if n == len => {}
                    Ok(_) => {
                        let e = io::Error::new(io::ErrorKind::UnexpectedEof, "closed mid-message");
                        return fail(r, e);
                    }
                    Err(e) => return fail(r, e),
                }
                let message = match kind {
                    0 if serializer == Serializer::Json => match Utf8Bytes::try_from(payload) {
                        Ok(text) => WsMessage::Text(text),
                        Err(e) => return fail(r, io::Error::new(io::ErrorKind::InvalidData, e)),
                    },
                    0 => WsMessage::Binary(Bytes::from(payload)),
                    1 => {
                        let now = tokio::time::Instant::now();
                        if now.duration_since(r.window) >= PING_WINDOW {
                            (r.pings, r.window) = (0, now);
                        }
                        r.pings += 1;
                        if r.pings > MAX_PINGS {
                            let e = io::Error::new(io::ErrorKind::InvalidData, "too many PINGs");
                            return fail(r, e);
                        }
                        // Answered unless the writer is busy, and never for longer than a second:
                        // reading goes on either way.
                        if r.writer.try_lock().is_ok() {
                            let pong = write_frame(&r.writer, 2, &payload);
                            if let Ok(Err(e)) =
                                tokio::time::timeout(Duration::from_secs(1), pong).await
                            {
                                return fail(r, e);
                            }
                        }
                        continue;
                    }
                    _ => WsMessage::Pong(Bytes::from(payload)),
                };
                return Some((Ok(message), r));
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_are_read_as_the_spec_writes_them() {
        let all = [
            Proto::V2(Serializer::Json),
            Proto::V2(Serializer::MsgPack),
            Proto::V2(Serializer::Cbor),
        ];
        assert_eq!(
            read_hello([0x7F, 0xF1, 0, 0], &all),
            Ok((Serializer::Json, 16 << 20))
        );
        assert_eq!(
            read_hello([0x7F, 0x02, 0, 0], &all),
            Ok((Serializer::MsgPack, 512))
        );
        assert_eq!(
            read_hello([0x7F, 0x14, 0, 0], &all),
            Err(refuse::SERIALIZER)
        );
        assert_eq!(
            read_hello([0x7F, 0x11, 0, 0], &all[1..]),
            Err(refuse::SERIALIZER),
            "not served"
        );
        assert_eq!(
            read_hello([0x7E, 0x11, 0, 0], &all),
            Err(refuse::RESERVED_BITS)
        );
        assert_eq!(
            read_hello([0x7F, 0x11, 0, 1], &all),
            Err(refuse::RESERVED_BITS)
        );
        assert_eq!(exponent_for(1 << 20), 11);
        assert_eq!(
            exponent_for((1 << 20) - 1),
            10,
            "announce no more than accepted"
        );
        assert_eq!(exponent_for(1000), 0);
        assert_eq!(exponent_for(100), 0);
        assert_eq!(exponent_for(usize::MAX), 15);
    }
}
