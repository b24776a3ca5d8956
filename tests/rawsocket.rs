//! WAMP v2 over RawSocket, byte by byte: the handshake and its refusals, framing, PING.
mod common;

use std::net::SocketAddr;

use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tower_wamp::{WampLayer, WampRouter};

async fn serve(layer: WampLayer) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(layer.serve_rawsocket(listener));
    addr
}

fn layer() -> WampLayer {
    WampLayer::new(WampRouter::new().realm("realm1"))
}

/// Connects and sends the four opening octets; the router's four.
async fn handshake(addr: SocketAddr, hello: [u8; 4]) -> (TcpStream, [u8; 4]) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&hello).await.unwrap();
    let mut answer = [0u8; 4];
    tcp.read_exact(&mut answer).await.unwrap();
    (tcp, answer)
}

async fn send(tcp: &mut TcpStream, kind: u8, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    tcp.write_all(&[kind, len[1], len[2], len[3]])
        .await
        .unwrap();
    tcp.write_all(payload).await.unwrap();
}

async fn recv(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut header = [0u8; 4];
    tokio::time::timeout(common::WAIT, tcp.read_exact(&mut header))
        .await
        .unwrap()
        .unwrap();
    let len = usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3]);
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.unwrap();
    (header[0], payload)
}

#[tokio::test]
async fn the_handshake_agrees_on_json_and_a_session_opens() {
    let addr = serve(layer()).await;
    // JSON, 16 MiB: the router answers JSON with its own maximum (1 MiB: 2^(9+11)).
    let (mut tcp, answer) = handshake(addr, [0x7F, 0xF1, 0, 0]).await;
    assert_eq!(answer, [0x7F, 0xB1, 0, 0]);
    // A PING is answered with its payload.
    send(&mut tcp, 1, b"are you there").await;
    assert_eq!(recv(&mut tcp).await, (2, b"are you there".to_vec()));
    send(&mut tcp, 0, br#"[1, "realm1", {"roles": {"caller": {}}}]"#).await;
    let (kind, welcome) = recv(&mut tcp).await;
    assert_eq!(kind, 0);
    let welcome: Value = serde_json::from_slice(&welcome).unwrap();
    assert_eq!(welcome[0], 2);
    assert_eq!(welcome[2]["authrole"], "anonymous");
    send(&mut tcp, 0, br#"[6, {}, "wamp.close.close_realm"]"#).await;
    let (_, goodbye) = recv(&mut tcp).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&goodbye).unwrap(),
        json!([6, {}, "wamp.close.goodbye_and_out"])
    );
}

#[tokio::test]
async fn a_bad_handshake_gets_the_spec_error_and_nothing_more() {
    let addr = serve(layer()).await;
    for (hello, error) in [
        ([0x7E, 0xF1, 0, 0], 3), // not the magic octet
        ([0x7F, 0xF1, 1, 0], 3), // reserved octets used
        ([0x7F, 0xF5, 0, 0], 1), // no serializer 5
    ] {
        let (mut tcp, answer) = handshake(addr, hello).await;
        assert_eq!(answer, [0x7F, error << 4, 0, 0], "{hello:?}");
        let mut rest = Vec::new();
        tcp.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
    // The session cap holds here too.
    let addr = serve(layer().max_sessions(Some(1))).await;
    let (_first, answer) = handshake(addr, [0x7F, 0xF2, 0, 0]).await;
    assert_eq!(answer, [0x7F, 0xB2, 0, 0]);
    let (_, answer) = handshake(addr, [0x7F, 0xF2, 0, 0]).await;
    assert_eq!(answer, [0x7F, 4 << 4, 0, 0]);
}

#[tokio::test]
async fn a_message_longer_than_agreed_ends_the_connection() {
    let addr = serve(layer().max_message_size(1024)).await;
    let (mut tcp, answer) = handshake(addr, [0x7F, 0xF1, 0, 0]).await;
    // 1024 bytes: 2^(9+1).
    assert_eq!(answer, [0x7F, 0x11, 0, 0]);
    send(&mut tcp, 0, &vec![b' '; 1025]).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(common::WAIT, tcp.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the router closed the connection");
    // An unknown frame type too.
    let (mut tcp, _) = handshake(addr, [0x7F, 0xF1, 0, 0]).await;
    send(&mut tcp, 5, b"").await;
    let read = tokio::time::timeout(common::WAIT, tcp.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the router closed the connection");
}

#[tokio::test]
async fn the_router_announces_no_more_than_it_accepts_and_limits_pings() {
    // 1000 bytes: announced as 512 (2^9), enforced as 512.
    let addr = serve(layer().max_message_size(1000)).await;
    let (mut tcp, answer) = handshake(addr, [0x7F, 0xF1, 0, 0]).await;
    assert_eq!(answer, [0x7F, 0x01, 0, 0]);
    send(&mut tcp, 0, &vec![b' '; 600]).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(common::WAIT, tcp.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "600 bytes are more than announced: closed");

    // A PING flood ends the connection.
    let addr = serve(layer()).await;
    let (mut tcp, _) = handshake(addr, [0x7F, 0xF1, 0, 0]).await;
    for _ in 0..150 {
        send(&mut tcp, 1, b"").await;
    }
    let read = tokio::time::timeout(common::WAIT, async {
        let mut buf = vec![0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the router closed the connection");
}

#[tokio::test]
async fn a_message_longer_than_the_client_accepts_is_not_sent_and_the_session_stays() {
    let router = WampRouter::new()
        .realm("realm1")
        .rpc("com.example.big", || async { "x".repeat(2000) })
        .rpc("com.example.small", || async { "ok" });
    let addr = serve(WampLayer::new(router)).await;
    // The client accepts 1 KiB at most.
    let (mut tcp, _) = handshake(addr, [0x7F, 0x11, 0, 0]).await;
    send(&mut tcp, 0, br#"[1, "realm1", {"roles": {"caller": {}}}]"#).await;
    assert_eq!(recv(&mut tcp).await.0, 0);
    send(&mut tcp, 0, br#"[48, 1, {}, "com.example.big"]"#).await;
    send(&mut tcp, 0, br#"[48, 2, {}, "com.example.small"]"#).await;
    let (_, result) = recv(&mut tcp).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&result).unwrap(),
        json!([50, 2, {}, ["ok"]])
    );
}
