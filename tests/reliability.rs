//! Limits and policies over real sockets: slow consumers, keepalive, idle, caps, rate
//! limits, call timeouts, graceful shutdown, metrics, oversize handshakes.
mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::Router;
use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};
use tower_wamp::{Args, RateLimit, SlowConsumerPolicy, Topic, WampLayer, WampRouter};

const T: &str = "urn:t";

fn router() -> WampRouter {
    WampRouter::new()
        .topic(T, Topic::new())
        .rpc(
            "urn:add",
            |Args((a, b)): Args<(i64, i64)>| async move { a + b },
        )
        .rpc("urn:sleep", |Args((ms,)): Args<(u64,)>| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ms
        })
}

/// Reads every frame until close, or until nothing arrives for `quiet`; returns the event
/// sequence numbers and the close code (`None`: still open).
async fn drain_for(c: &mut Client, quiet: Duration) -> (Vec<u64>, Option<u16>) {
    let mut seqs = vec![];
    loop {
        match tokio::time::timeout(quiet, c.ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v[0] == 8 {
                    seqs.push(v[2]["seq"].as_u64().unwrap());
                }
            }
            Ok(Some(Ok(Message::Close(f)))) => return (seqs, f.map(|f| f.code.into())),
            Ok(Some(Ok(_))) => {}
            Ok(None) | Ok(Some(Err(_))) => return (seqs, None),
            Err(_) => return (seqs, None), // quiet: still open
        }
    }
}

async fn drain(c: &mut Client) -> (Vec<u64>, Option<u16>) {
    drain_for(c, Duration::from_secs(10)).await
}

/// Publishes `n` events of about `size` bytes through the server handle.
fn flood(wamp: &tower_wamp::Wamp, n: u64, size: usize) {
    let pad = "x".repeat(size);
    for seq in 0..n {
        wamp.publish(T, &json!({"seq": seq, "pad": pad})).unwrap();
    }
}

// The slow-subscriber test (a subscriber that never reads, a fast one that gets everything,
// memory bounded well below what is owed) is in tests/hostile.rs.

async fn policy_run(policy: SlowConsumerPolicy) -> (Vec<u64>, Option<u16>, u64) {
    let router = router();
    let wamp = router.handle();
    let addr = serve_layer(
        WampLayer::new(router)
            .outbound_queue_capacity(32)
            .slow_consumer_policy(policy),
    )
    .await;
    let mut c = connect(addr).await;
    c.subscribe(T).await;
    flood(&wamp, 2000, 16 << 10);
    // Let the socket task drain what it can, then read everything.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut seqs, code) = drain_for(&mut c, Duration::from_millis(500)).await;
    // Still open: one more event arrives.
    if code.is_none() {
        wamp.publish(T, &json!({"seq": 99_999})).unwrap();
        let (more, _) = drain_for(&mut c, Duration::from_millis(500)).await;
        seqs.extend(more);
    }
    (seqs, code, wamp.metrics().events_dropped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_keeps_the_newest_and_the_session() {
    let (seqs, code, dropped) = policy_run(SlowConsumerPolicy::DropOldest).await;
    assert_eq!(code, None);
    assert!(dropped > 0);
    assert_eq!(seqs.last(), Some(&99_999));
    assert!(seqs.contains(&1999), "the newest event survived");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order");
    assert_eq!(seqs.len() as u64 + dropped, 2001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_newest_keeps_a_gapless_prefix_and_the_session() {
    let (seqs, code, dropped) = policy_run(SlowConsumerPolicy::DropNewest).await;
    assert_eq!(code, None);
    assert!(dropped > 0);
    let (last, prefix) = seqs.split_last().unwrap();
    assert_eq!(*last, 99_999);
    assert_eq!(
        prefix,
        (0..prefix.len() as u64).collect::<Vec<_>>().as_slice()
    );
    assert_eq!(prefix.len() as u64 + dropped, 2000);
}

#[tokio::test]
async fn keepalive_closes_a_peer_that_never_answers_pings() {
    let layer = WampLayer::new(router())
        .ping_interval(Some(Duration::from_millis(100)))
        .pong_timeout(Duration::from_millis(200));
    let addr = serve_layer(layer).await;
    let mut silent = RawPeer::connect(addr).await;
    let mut alive = connect(addr).await;
    // `alive` reads (so its client answers pings) while `silent` reads nothing, and goes on
    // doing so until the test has read everything `silent` got.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let keep_alive = tokio::spawn({
        let stop = stop.clone();
        async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                alive.sync().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            alive
        }
    });
    let frames = silent.read_frames().await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut alive = keep_alive.await.unwrap();
    assert!(frames.iter().any(|(op, _)| *op == 0x9), "the server pinged");
    let (_, close) = frames
        .iter()
        .find(|(op, _)| *op == 0x8)
        .expect("a close frame");
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1008);
    assert_eq!(&close[2..], b"keepalive timeout: no pong");
    assert_eq!(
        alive.call("1", "urn:add", &[json!(1), json!(2)]).await[2],
        3
    );
}

#[tokio::test]
async fn idle_sessions_are_closed() {
    let layer = WampLayer::new(router()).idle_timeout(Some(Duration::from_millis(300)));
    let addr = serve_layer(layer).await;
    let mut idle = connect(addr).await;
    let mut busy = connect(addr).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(700) {
        busy.sync().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(idle.recv_close().await, (1000, "idle timeout".into()));
    assert_eq!(busy.call("1", "urn:add", &[json!(2), json!(2)]).await[2], 4);
}

async fn try_connect(addr: std::net::SocketAddr) -> Result<Client, String> {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("wamp"));
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => Ok(connect(addr).await),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test]
async fn the_session_cap_refuses_with_503() {
    let router = router();
    let wamp = router.handle();
    let addr = serve_layer(WampLayer::new(router).max_sessions(Some(2))).await;
    let a = connect(addr).await;
    let _b = connect(addr).await;
    let refused = try_connect(addr)
        .await
        .err()
        .expect("a third session is refused");
    assert!(refused.contains("503"), "{refused}");
    drop(a);
    for _ in 0..100 {
        if wamp.sessions().len() < 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut c = connect(addr).await;
    assert_eq!(c.call("1", "urn:add", &[json!(1), json!(1)]).await[2], 2);
}

#[tokio::test]
async fn a_flooding_session_is_rate_limited() {
    let layer = WampLayer::new(router()).rate_limit(Some(RateLimit::new(20, 10)));
    let addr = serve_layer(layer).await;
    let mut calm = connect(addr).await;
    let mut flooder = connect(addr).await;
    for i in 0..50 {
        flooder.send(json!([7, T, i])).await;
    }
    let (code, reason) = flooder.recv_close().await;
    assert_eq!((code, reason.as_str()), (1008, "rate limit exceeded"));
    for i in 0..5 {
        assert_eq!(
            calm.call(&format!("{i}"), "urn:add", &[json!(i), json!(1)])
                .await[2],
            i + 1
        );
    }
}

#[tokio::test]
async fn a_procedure_past_its_deadline_gets_a_timeout_error() {
    let router = router()
        .call_timeout(Duration::from_secs(5))
        .procedure_timeout("urn:sleep", Duration::from_millis(100));
    let addr = serve_router(router).await;
    let mut c = connect(addr).await;
    let started = Instant::now();
    let reply = c.call("s", "urn:sleep", &[json!(10_000)]).await;
    assert_eq!(
        reply,
        json!([4, "s", "http://api.wamp.ws/error#timeout", "call timed out"])
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(c.call("a", "urn:add", &[json!(1), json!(2)]).await[2], 3);
}

#[tokio::test]
async fn graceful_shutdown_flushes_closes_with_1001_and_runs_on_close() {
    let closed = Arc::new(Mutex::new(vec![]));
    let log = closed.clone();
    let router = router().on_close(move |s, reason| {
        log.lock()
            .unwrap()
            .push((s.id().to_string(), reason.clone()))
    });
    let wamp = router.handle();
    let app = Router::new().route_service("/ws", WampLayer::new(router).into_service());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown_handle = wamp.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                stop_rx.await.ok();
                assert!(shutdown_handle.shutdown(Duration::from_secs(5)).await);
            })
            .await
            .unwrap();
    });
    let mut a = connect(addr).await;
    let mut b = connect(addr).await;
    a.subscribe(T).await;
    b.subscribe(T).await;
    for seq in 0..100 {
        wamp.publish(T, &json!({"seq": seq})).unwrap();
    }
    stop_tx.send(()).unwrap();
    for c in [&mut a, &mut b] {
        let (seqs, code) = drain(c).await;
        assert_eq!(
            seqs,
            (0..100).collect::<Vec<u64>>(),
            "queued events were flushed first"
        );
        assert_eq!(code, Some(1001));
    }
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    let closed = closed.lock().unwrap();
    assert_eq!(closed.len(), 2);
    assert!(
        closed
            .iter()
            .all(|(_, r)| matches!(r, tower_wamp::CloseReason::Server { code: 1001, .. }))
    );
    assert!(wamp.sessions().is_empty() && wamp.is_shutting_down());
}

#[tokio::test]
async fn no_new_sessions_while_shutting_down() {
    let router = router();
    let wamp = router.handle();
    let addr = serve_router(router).await;
    assert!(wamp.shutdown(Duration::from_secs(1)).await);
    let refused = try_connect(addr).await.err().expect("refused");
    assert!(refused.contains("503"), "{refused}");
}

#[tokio::test]
async fn metrics_count_what_happens() {
    let router = router();
    let wamp = router.handle();
    let addr = serve_router(router).await;
    let mut a = connect(addr).await;
    a.subscribe(T).await; // SUBSCRIBE + the sync CALL
    a.call("1", "urn:add", &[json!(1), json!(1)]).await;
    a.call("2", "urn:add", &[json!("x")]).await;
    a.send(json!([7, T, 1])).await;
    a.recv().await;
    let m = wamp.metrics();
    assert_eq!(m.sessions_open, 1);
    assert_eq!(m.sessions_total, 1);
    assert_eq!(m.messages_in, 5);
    assert_eq!(m.calls_total, 3);
    assert_eq!(m.calls_in_flight, 0);
    assert!(m.messages_out >= 4, "{m:?}");
    assert_eq!(m.errors_by_uri["http://api.wamp.ws/error#notfound"], 1);
    assert_eq!(
        m.errors_by_uri["http://api.wamp.ws/error#invalid-argument"],
        1
    );
}

#[tokio::test]
async fn oversize_handshake_headers_are_refused() {
    let addr = serve_router(router()).await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let huge = "a".repeat(1 << 20);
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: wamp\r\nX-Huge: {huge}\r\n\r\n"
    );
    let _ = tcp.write_all(req.as_bytes()).await;
    let mut response = vec![0u8; 1024];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut response))
        .await
        .unwrap()
        .unwrap_or(0);
    let head = String::from_utf8_lossy(&response[..n]);
    assert!(!head.contains("101"), "no upgrade: {head}");
    assert!(
        n == 0 || head.starts_with("HTTP/1.1 431"),
        "refused: {head}"
    );
}

#[tokio::test]
async fn a_cross_site_origin_is_refused_by_default() {
    let addr = serve_router(router()).await;
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("wamp"));
    req.headers_mut()
        .insert("origin", HeaderValue::from_static("https://evil.example"));
    let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
}

/// A WebSocket peer that does the handshake by hand and then never answers anything.
struct RawPeer(tokio::net::TcpStream);

impl RawPeer {
    async fn connect(addr: std::net::SocketAddr) -> Self {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Protocol: wamp\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut head = vec![];
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            tcp.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        Self(tcp)
    }

    /// Every frame (opcode, payload) until the server closes the connection.
    async fn read_frames(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut bytes = vec![];
        let _ = tokio::time::timeout(WAIT, self.0.read_to_end(&mut bytes)).await;
        let mut frames = vec![];
        let mut at = 0;
        while at + 2 <= bytes.len() {
            let op = bytes[at] & 0x0f;
            let mut len = usize::from(bytes[at + 1] & 0x7f);
            at += 2;
            if len == 126 {
                len = usize::from(u16::from_be_bytes([bytes[at], bytes[at + 1]]));
                at += 2;
            } else if len == 127 {
                len = usize::try_from(u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap()))
                    .unwrap();
                at += 8;
            }
            frames.push((op, bytes[at..at + len].to_vec()));
            at += len;
        }
        frames
    }
}
