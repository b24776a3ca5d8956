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

/// The smallest exponent `n` with `2^(9+n) >= bytes`, at most [`MAX_EXPONENT`].
fn exponent_for(bytes: usize) -> u8 {
    let mut n = 0;
    while n < MAX_EXPONENT && (1usize << (9 + n)) < bytes {
        n += 1;
    }
    n
}

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

/// Serves RawSocket connections from `listener` until it fails.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Arc<Inner<()>>,
    config: Arc<Config>,
) -> io::Result<()> {
    loop {
        let (tcp, peer) = listener.accept().await?;
        let (router, config) = (router.clone(), config.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(tcp, peer, router, config).await {
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
    let ours = (1usize << (9 + ours)).min(config.max_message_size);
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

/// Writes one frame (and flushes: the session batches by handing several messages before a
/// flush only to WebSockets; here each goes out as it comes).
async fn write_frame(writer: &Writer, kind: u8, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l < 1 << 24)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "message too long"))?;
    let mut header = len.to_be_bytes();
    header[0] = kind;
    let mut w = writer.lock().await;
    w.write_all(&header).await?;
    w.write_all(payload).await?;
    w.flush().await
}

/// The sending half, as a WebSocket's: a message longer than the client accepts ends the
/// connection (the spec's rule), a close frame shuts the connection down.
fn sink(writer: Writer, theirs: usize) -> crate::socket::Sink {
    Box::pin(futures_util::sink::unfold(
        writer,
        move |writer, message: WsMessage| async move {
            let sent = match &message {
                WsMessage::Text(t) if t.len() <= theirs => {
                    write_frame(&writer, 0, t.as_bytes()).await
                }
                WsMessage::Binary(b) if b.len() <= theirs => write_frame(&writer, 0, b).await,
                WsMessage::Text(_) | WsMessage::Binary(_) => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "message longer than the client accepts",
                )),
                WsMessage::Ping(p) => write_frame(&writer, 1, p).await,
                WsMessage::Pong(p) => write_frame(&writer, 2, p).await,
                WsMessage::Close(_) => writer.lock().await.shutdown().await,
            };
            sent.map(|()| writer).map_err(axum::Error::new)
        },
    ))
}

/// The receiving half, as a WebSocket's: WAMP messages as text (JSON) or binary frames,
/// PONGs as pongs; a PING is answered here.
fn stream(
    read: OwnedReadHalf,
    writer: Writer,
    serializer: Serializer,
    ours: usize,
) -> crate::socket::Stream {
    let state = (read, writer, false);
    Box::pin(futures_util::stream::unfold(
        state,
        move |(mut read, writer, done)| async move {
            if done {
                return None;
            }
            loop {
                let mut header = [0u8; 4];
                if let Err(e) = read.read_exact(&mut header).await {
                    // The client closed: as a WebSocket without a close frame.
                    return (e.kind() != io::ErrorKind::UnexpectedEof)
                        .then(|| (Err(axum::Error::new(e)), (read, writer, true)));
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
                    let e = io::Error::new(io::ErrorKind::InvalidData, why);
                    return Some((Err(axum::Error::new(e)), (read, writer, true)));
                }
                let mut payload = vec![0u8; len];
                if let Err(e) = read.read_exact(&mut payload).await {
                    return Some((Err(axum::Error::new(e)), (read, writer, true)));
                }
                let message = match kind {
                    0 if serializer == Serializer::Json => match Utf8Bytes::try_from(payload) {
                        Ok(text) => WsMessage::Text(text),
                        Err(e) => {
                            let e = io::Error::new(io::ErrorKind::InvalidData, e);
                            return Some((Err(axum::Error::new(e)), (read, writer, true)));
                        }
                    },
                    0 => WsMessage::Binary(Bytes::from(payload)),
                    1 => {
                        // Answered at once, as a WebSocket answers pings.
                        if let Err(e) = write_frame(&writer, 2, &payload).await {
                            return Some((Err(axum::Error::new(e)), (read, writer, true)));
                        }
                        continue;
                    }
                    _ => WsMessage::Pong(Bytes::from(payload)),
                };
                return Some((Ok(message), (read, writer, false)));
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
        assert_eq!(exponent_for(100), 0);
        assert_eq!(exponent_for(usize::MAX), 15);
    }
}
