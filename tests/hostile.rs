//! A hostile client over real sockets: oversize URIs and prefix tables, subscription
//! floods, clients that stop reading, pipelined WAMP-CRA guessing, calls that never end,
//! log forging, slow hooks, panicking identity providers, Origin tricks, shutdown during
//! an upgrade. Everything here uses the API of today; what needs new API is in
//! `tests/hostile_api.rs`.
mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::Request, middleware::Next, response::Response};
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    time::Instant,
};
use tokio_tungstenite::{
    MaybeTlsStream,
    tungstenite::{
        Message,
        client::IntoClientRequest,
        http::HeaderValue,
        protocol::{CloseFrame, frame::coding::CloseCode},
    },
};
use tower_wamp::{
    Args, RateLimit, Session, SessionId, SlowConsumerPolicy, Topic, WampLayer, WampRouter,
    auth::{AUTH, AUTHREQ, Secret, WampCra},
    core::auth::{AuthKey, Permissions, derive_key},
};

const T: &str = "urn:t";
const KIB: usize = 1 << 10;
const INVALID_ARGUMENT: &str = "http://api.wamp.ws/error#invalid-argument";
const TOO_MANY_CALLS: &str = "http://api.wamp.ws/error#too-many-calls";
const UNAUTHORIZED: &str = "http://api.wamp.ws/error#unauthorized";
const INVALID_SIGNATURE: &str = "http://api.wamp.ws/error#invalid-signature";

fn router() -> WampRouter {
    WampRouter::new()
        .topic(T, Topic::new())
        // A prefix pattern: every topic that starts with `urn:`.
        .topic("urn:*", Topic::new())
        .rpc(
            "urn:add",
            |Args((a, b)): Args<(i64, i64)>| async move { a + b },
        )
        .rpc("urn:sleep", |Args((ms,)): Args<(u64,)>| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ms
        })
}

/// The first bytes of a long text, for assertion messages.
fn head(text: &str) -> String {
    text.chars().take(200).collect()
}

/// Sends a probe CALL after what was sent before and reads until the close frame. Frames of
/// one session are handled in order, so a reply to the probe means the session is still
/// open: that fails at once instead of waiting for a timeout.
async fn expect_close(c: &mut Client, what: &str) -> (u16, String) {
    let probe = json!([2, "probe", "urn:test:probe"]).to_string();
    let _ = c.ws.send(Message::text(probe)).await;
    let deadline = Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, c.ws.next()).await {
            Err(_) => panic!("{what}: no close frame within {WAIT:?}"),
            Ok(Some(Ok(Message::Close(Some(f))))) => {
                return (f.code.into(), f.reason.to_string());
            }
            Ok(Some(Ok(Message::Close(None)))) => return (1005, String::new()),
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                assert_ne!(
                    v[1],
                    "probe",
                    "{what}: the session is still open (it answered a CALL sent afterwards: {})",
                    head(&t)
                );
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => panic!("{what}: connection error instead of a close frame: {e}"),
            Ok(None) => panic!("{what}: the connection ended without a close frame"),
        }
    }
}

/// A round trip through the session; returns every frame that arrived before its reply.
async fn frames_until_sync(c: &mut Client) -> Vec<Value> {
    c.send(json!([2, "sync", "urn:test:sync-barrier"])).await;
    let mut before = vec![];
    for _ in 0..10_000 {
        let v = c.recv().await;
        if v[1] == "sync" && (v[0] == 3 || v[0] == 4) {
            return before;
        }
        before.push(v);
    }
    panic!("no sync reply among 10000 frames");
}

/// A round trip through the session that tolerates its end: reads until the reply to a
/// probe CALL, a close, or a deadline.
async fn settle(c: &mut Client) {
    let probe = json!([2, "settle", "urn:test:sync-barrier"]).to_string();
    if c.ws.send(Message::text(probe)).await.is_err() {
        return;
    }
    let deadline = Instant::now() + WAIT;
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, c.ws.next()).await {
        match m {
            Message::Text(t) if serde_json::from_str::<Value>(&t).unwrap()[1] == "settle" => return,
            Message::Close(_) => return,
            _ => {}
        }
    }
}

/// Polls `done` every 10 ms until it holds or `within` has passed.
async fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn ws_request(
    addr: SocketAddr,
    headers: &[(&str, String)],
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("wamp"));
    for (k, v) in headers {
        let name =
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut()
            .insert(name, HeaderValue::from_str(v).unwrap());
    }
    req
}

/// Connects and reads WELCOME; the error says why not (`... 503 ...` for a refused upgrade).
async fn try_connect(addr: SocketAddr, headers: &[(&str, String)]) -> Result<Client, String> {
    let req = ws_request(addr, headers);
    let (ws, _) = match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req)).await {
        Err(_) => return Err("the handshake timed out".into()),
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(ok)) => ok,
    };
    let mut c = Client {
        ws,
        session_id: String::new(),
        welcome: Value::Null,
    };
    match tokio::time::timeout(WAIT, c.ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => {
            let welcome: Value = serde_json::from_str(&t).unwrap();
            if welcome[0] != 0 {
                return Err(format!("first frame is not WELCOME: {t}"));
            }
            c.session_id = welcome[1].as_str().unwrap().to_owned();
            c.welcome = welcome;
            Ok(c)
        }
        other => Err(format!("upgraded but no WELCOME: {other:?}")),
    }
}

/// [`try_connect`] until it succeeds or `within` has passed; the last error otherwise.
async fn connect_retrying(addr: SocketAddr, within: Duration) -> Result<Client, String> {
    let deadline = Instant::now() + within;
    loop {
        match try_connect(addr, &[]).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

/// A client whose TCP receive buffer is tiny, so that the server's writes block as soon as
/// it stops reading.
async fn connect_small_rcvbuf(addr: SocketAddr) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let req = ws_request(addr, &[]);
    let (ws, resp) =
        tokio_tungstenite::client_async_with_config(req, MaybeTlsStream::Plain(stream), None)
            .await
            .unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "wamp");
    let mut c = Client {
        ws,
        session_id: String::new(),
        welcome: Value::Null,
    };
    let welcome = c.recv().await;
    assert_eq!(welcome[0], 0, "first frame is WELCOME: {welcome}");
    c.session_id = welcome[1].as_str().unwrap().to_owned();
    c.welcome = welcome;
    c
}

/// Reads raw bytes under the WebSocket until EOF or a reset (Ok: the server closed the TCP
/// connection) or until `within` has passed (Err).
async fn tcp_closed_by_server(c: &mut Client, within: Duration) -> Result<String, String> {
    let stream = c.ws.get_mut();
    let mut buf = vec![0u8; 64 * KIB];
    let deadline = Instant::now() + within;
    let mut total = 0u64;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Err(format!("still open after draining {total} bytes")),
            Ok(Ok(0)) => return Ok(format!("EOF after {total} bytes")),
            Ok(Ok(n)) => total += n as u64,
            Ok(Err(e)) => return Ok(format!("{e} after {total} bytes")),
        }
    }
}

// --- 1. URI and prefix budgets ---------------------------------------------------------

#[tokio::test]
async fn a_prefix_uri_longer_than_the_uri_limit_closes_the_session() {
    let addr = serve_router(router()).await;
    let mut c = connect(addr).await;
    // Fits the 1 MiB message limit, far over the 4096-byte URI limit.
    let uri = format!("urn:{}", "u".repeat((1 << 20) - 100 - 4));
    c.prefix("p", &uri).await;
    let (code, reason) = expect_close(&mut c, "a 1 MiB PREFIX URI").await;
    assert_eq!(code, 1008, "{reason}");
}

#[tokio::test]
async fn a_curie_that_expands_past_the_uri_limit_is_an_invalid_argument() {
    let base = format!("urn:long:{}", "a".repeat(4000 - 9));
    assert_eq!(base.len(), 4000);
    let router = router().rpc(&format!("{base}ok"), || async { 1 });
    let addr = serve_router(router).await;
    let mut c = connect(addr).await;
    // A 4000-byte prefix URI is accepted, and a short CURIE under it works ...
    c.prefix("p", &base).await;
    assert_eq!(c.call("ok", "p:ok", &[]).await, json!([3, "ok", 1]));
    // ... but one that expands to 4202 bytes is refused as such.
    let reply = c.call("c", &format!("p:{}", "b".repeat(200)), &[]).await;
    assert_eq!(reply[0], 4, "{reply}");
    assert_eq!(
        reply[2],
        INVALID_ARGUMENT,
        "an expanded procedure over 4096 bytes: {}",
        head(&reply.to_string())
    );
}

#[tokio::test]
async fn a_subscribe_to_a_topic_longer_than_the_uri_limit_closes_the_session() {
    let addr = serve_router(router()).await;
    let mut c = connect(addr).await;
    let topic = format!("urn:{}", "t".repeat(5000 - 4));
    c.send(json!([5, topic])).await;
    let (code, reason) = expect_close(&mut c, "a 5000-byte SUBSCRIBE topic").await;
    assert_eq!(code, 1008, "{reason}");
}

#[tokio::test]
async fn prefixes_over_the_byte_budget_close_the_session() {
    let addr = serve_router(router()).await;
    let mut c = connect(addr).await;
    // 40 × 2000 bytes: 80 000 bytes of prefix URIs, over the 64 KiB budget.
    for i in 0..40 {
        let uri = format!("urn:{i:02}:{}", "u".repeat(2000 - 7));
        assert_eq!(uri.len(), 2000);
        let _ =
            c.ws.send(Message::text(json!([1, format!("p{i}"), uri]).to_string()))
                .await;
    }
    let (code, reason) = expect_close(&mut c, "80 kB of prefixes").await;
    assert_eq!(code, 1008, "{reason}");
}

// --- 2. Subscriptions per session ------------------------------------------------------

#[tokio::test]
async fn more_than_1024_subscriptions_close_the_session() {
    let router = router();
    let wamp = router.handle();
    let addr = serve_router(router).await;
    let mut c = connect(addr).await;
    for i in 0..1024 {
        c.send(json!([5, format!("urn:topic:{i}")])).await;
    }
    c.sync().await;
    let id = SessionId::from(c.session_id.clone());
    assert_eq!(
        wamp.topics_of(&id).len(),
        1024,
        "1024 subscriptions are allowed"
    );
    c.send(json!([5, "urn:topic:1024"])).await;
    let (code, reason) = expect_close(&mut c, "the 1025th subscription").await;
    assert_eq!(code, 1008, "{reason}");
}

// --- 3. A client that stops reading ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_and_frees_its_slot() {
    let router = router();
    let wamp = router.handle();
    let addr = serve_layer(WampLayer::new(router).max_sessions(Some(1))).await;
    let mut slow = connect_small_rcvbuf(addr).await;
    slow.subscribe(T).await;
    // From here on `slow` reads nothing: 5000 × 4 KiB = 20 MiB are owed to it.
    let pad = "x".repeat(4 * KIB);
    for seq in 0..5000u64 {
        let _ = wamp.publish(T, &json!({"seq": seq, "pad": pad}));
        if seq % 100 == 99 {
            tokio::task::yield_now().await;
        }
    }
    let gone = wait_until(Duration::from_secs(5), || wamp.sessions().is_empty()).await;
    let m = wamp.metrics();
    assert!(
        gone,
        "the session of a client that stopped reading is still open 5 s later: {:?} \
         (slow_consumers_disconnected = {})",
        wamp.sessions(),
        m.slow_consumers_disconnected
    );
    let closed = tcp_closed_by_server(&mut slow, Duration::from_secs(5)).await;
    assert!(
        closed.is_ok(),
        "the server kept the TCP connection: {closed:?}"
    );
    // Its slot is free again: a new client gets WELCOME, not 503.
    let next = connect_retrying(addr, Duration::from_secs(2)).await;
    assert!(next.is_ok(), "the slot was not released: {:?}", next.err());
}

// --- 4. Close handshake ----------------------------------------------------------------

#[tokio::test]
async fn a_client_close_is_answered_with_a_close_frame() {
    let addr = serve_router(router()).await;
    let mut c = connect(addr).await;
    c.ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    let deadline = Instant::now() + WAIT;
    let mut seen = vec![];
    loop {
        match tokio::time::timeout_at(deadline, c.ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(f))))) => {
                assert_eq!(u16::from(f.code), 1000, "{f:?}");
                return;
            }
            Ok(Some(Ok(m))) => seen.push(format!("{m:?}")),
            Ok(Some(Err(e))) => {
                panic!("an error instead of the server's close frame: {e} (after {seen:?})")
            }
            Ok(None) => panic!("the connection ended without a close frame (after {seen:?})"),
            Err(_) => panic!("no close frame within {WAIT:?} (after {seen:?})"),
        }
    }
}

// --- 5. WAMP-CRA at network speed ------------------------------------------------------

fn cra_router() -> WampRouter {
    let cra = WampCra::new(
        |_s, key: String, _e| async move { (key == "ada").then(|| Secret::plain("secret")) },
        |_s, _k: AuthKey| async { Permissions::all() },
    );
    router().auth(cra)
}

/// Every frame until the close frame (or the connection's end) or `deadline`: the texts,
/// and the close code (`None`: no close frame).
async fn read_until_close(c: &mut Client, deadline: Instant) -> (Vec<Value>, Option<u16>, String) {
    let mut texts = vec![];
    loop {
        match tokio::time::timeout_at(deadline, c.ws.next()).await {
            Err(_) => return (texts, None, "still open at the deadline".into()),
            Ok(Some(Ok(Message::Text(t)))) => texts.push(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(Message::Close(f)))) => {
                let code = f.as_ref().map_or(1005, |f| f.code.into());
                let reason = f.map(|f| f.reason.to_string()).unwrap_or_default();
                return (texts, Some(code), reason);
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return (texts, None, format!("error: {e}")),
            Ok(None) => return (texts, None, "ended without a close frame".into()),
        }
    }
}

/// Queues every message, then flushes once: they leave together.
async fn pipeline(c: &mut Client, messages: Vec<Value>) {
    for m in messages {
        let _ = c.ws.feed(Message::text(m.to_string())).await;
    }
    let _ = c.ws.flush().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_signature_guesses_hit_the_failure_limit_at_network_speed() {
    let addr = serve_router(cra_router()).await;
    let mut c = connect(addr).await;
    let started = Instant::now();
    let mut messages = vec![];
    for i in 0..20 {
        messages.push(json!([2, format!("r{i}"), AUTHREQ, "ada"]));
        messages.push(json!([2, format!("a{i}"), AUTH, "wrong"]));
    }
    pipeline(&mut c, messages).await;
    let (texts, code, why) = read_until_close(&mut c, started + Duration::from_secs(3)).await;
    let elapsed = started.elapsed();
    let failures = texts.iter().filter(|v| v[2] == INVALID_SIGNATURE).count();
    assert_eq!(
        code,
        Some(1008),
        "closed with 1008 within 3 s ({why}; {elapsed:?}; {failures} invalid-signature errors)"
    );
    assert!(
        failures <= 5,
        "{failures} invalid-signature errors: the limit of 5 did not hold"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_challenge_after_the_last_allowed_failure() {
    let addr = serve_router(cra_router()).await;
    let mut c = connect(addr).await;
    let mut messages = vec![];
    for i in 0..5 {
        messages.push(json!([2, format!("r{i}"), AUTHREQ, "ada"]));
        messages.push(json!([2, format!("a{i}"), AUTH, "wrong"]));
    }
    messages.push(json!([2, "after", AUTHREQ, "ada"]));
    pipeline(&mut c, messages).await;
    let (texts, code, why) =
        read_until_close(&mut c, Instant::now() + Duration::from_secs(3)).await;
    let challenge = texts.iter().find(|v| v[0] == 3 && v[1] == "after");
    assert!(
        challenge.is_none(),
        "a challenge was issued after the 5th failed signature: {challenge:?} (close {code:?}, {why})"
    );
}

// --- 6. Calls in flight ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_128_in_flight_are_refused_at_once() {
    let router = router().rpc("urn:never", std::future::pending::<i64>);
    let addr = serve_router(router).await;
    let mut c = connect(addr).await;
    let calls = (0..200)
        .map(|i| json!([2, format!("c{i}"), "urn:never"]))
        .collect();
    pipeline(&mut c, calls).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut refused = vec![];
    while refused.len() < 72 {
        match tokio::time::timeout_at(deadline, c.ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v[0], 4, "only refusals: {v}");
                assert_eq!(v[2], TOO_MANY_CALLS, "{v}");
                let n: usize = v[1].as_str().unwrap()[1..].parse().unwrap();
                assert!(n >= 128, "call {n} is within the 128 in flight: {v}");
                refused.push(n);
            }
            Ok(Some(Ok(Message::Close(f)))) => panic!("closed: {f:?}"),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => panic!("{e}"),
            Ok(None) => panic!("connection ended"),
            Err(_) => panic!(
                "only {} of the 72 calls beyond 128 in flight were refused: {refused:?}",
                refused.len()
            ),
        }
    }
    refused.sort_unstable();
    assert_eq!(refused, (128..200).collect::<Vec<_>>());
}

struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_call_is_cancelled_when_its_session_ends() {
    let started = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicBool::new(false));
    let (s, d) = (started.clone(), dropped.clone());
    let router = router().rpc("urn:hang", move || {
        let (s, d) = (s.clone(), d.clone());
        async move {
            let _guard = SetOnDrop(d);
            s.store(true, Ordering::SeqCst);
            std::future::pending::<i64>().await
        }
    });
    let addr = serve_router(router).await;
    let mut c = connect(addr).await;
    c.send(json!([2, "h", "urn:hang"])).await;
    assert!(
        wait_until(WAIT, || started.load(Ordering::SeqCst)).await,
        "the handler started"
    );
    drop(c);
    let cancelled = wait_until(Duration::from_secs(2), || dropped.load(Ordering::SeqCst)).await;
    assert!(
        cancelled,
        "the call of a disconnected session still runs 2 s later"
    );
}

// --- 7. Logs and binary frames ---------------------------------------------------------

/// A writer that keeps everything logged, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures TRACE logs of this thread (the tests using it run on a current-thread runtime,
/// so the server's tasks log here too).
fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    capture_logs_at(tracing::Level::TRACE)
}

/// Captures this thread's logs at `level` and above.
fn capture_logs_at(level: tracing::Level) -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

fn assert_no_forged_or_huge_lines(captured: &Captured) {
    let text = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(!text.is_empty(), "the capture works");
    for line in text.lines() {
        assert!(
            !line.starts_with("FORGED"),
            "a client forged a log line: {}",
            head(line)
        );
        assert!(
            line.len() <= 2048,
            "a log line of {} bytes: {}",
            line.len(),
            head(line)
        );
    }
}

#[tokio::test]
async fn a_procedure_uri_cannot_forge_or_flood_log_lines() {
    let (captured, _guard) = capture_logs();
    let addr = serve_router(router()).await;
    let mut c = connect(addr).await;
    let procedure = format!("urn:x\nFORGED LOG LINE {}", "A".repeat(20_000));
    c.send(json!([2, "forged", procedure])).await;
    settle(&mut c).await;
    let _ = c.ws.close(None).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_no_forged_or_huge_lines(&captured);
}

#[tokio::test]
async fn a_topic_cannot_forge_or_flood_log_lines() {
    let (captured, _guard) = capture_logs();
    let addr = serve_router(router()).await;
    let mut c = connect(addr).await;
    // Under the 4096-byte URI limit; one mapped (`urn:*`), one not.
    let mapped = format!("urn:x\nFORGED TOPIC {}", "A".repeat(3000));
    let unmapped = format!("other:x\nFORGED TOPIC {}", "A".repeat(3000));
    for topic in [&mapped, &unmapped] {
        c.send(json!([5, topic])).await;
        c.send(json!([7, topic, "event"])).await;
    }
    settle(&mut c).await;
    let _ = c.ws.close(None).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_no_forged_or_huge_lines(&captured);
}

/// An application's INFO subscriber pays nothing per message for the session's span: it
/// is at DEBUG unless the layer raises it, and then a handler's own line is in it.
#[tokio::test]
async fn the_session_span_is_at_debug_unless_the_layer_raises_it() {
    for raised in [false, true] {
        let (captured, _guard) = capture_logs_at(tracing::Level::INFO);
        let router = WampRouter::new()
            .rpc("urn:log", |Args((v,)): Args<(Value,)>| async move {
                tracing::info!("handler ran");
                v
            })
            // One that waits: it goes on in a task of its own.
            .rpc("urn:later", |Args((v,)): Args<(Value,)>| async move {
                tokio::task::yield_now().await;
                tracing::info!("waiting handler ran");
                v
            });
        let mut layer = WampLayer::new(router);
        if raised {
            layer = layer.session_span_level(tracing::Level::INFO);
        }
        let mut c = connect(serve_layer(layer).await).await;
        c.send(json!([2, "c1", "urn:log", 1])).await;
        assert_eq!(c.recv().await, json!([3, "c1", 1]));
        c.send(json!([2, "c2", "urn:later", 2])).await;
        assert_eq!(c.recv().await, json!([3, "c2", 2]));
        let _ = c.ws.close(None).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
        let span = format!("wamp_session{{session_id={}", c.session_id);
        for said in ["handler ran", "waiting handler ran"] {
            let line = text
                .lines()
                .find(|l| l.contains(said))
                .expect("the handler's line");
            assert_eq!(
                line.contains(&span),
                raised,
                "raised: {raised}, line: {line}"
            );
        }
        for said in ["session opened", "session closed"] {
            let line = text
                .lines()
                .find(|l| l.contains(said))
                .expect("opened and closed");
            assert!(line.contains(&c.session_id), "{line}");
        }
    }
}

#[tokio::test]
async fn binary_frames_count_against_the_rate_limit() {
    let layer = WampLayer::new(router()).rate_limit(Some(RateLimit::new(1, 5)));
    let addr = serve_layer(layer).await;
    let mut c = connect(addr).await;
    for _ in 0..50 {
        let _ = c.ws.feed(Message::binary(vec![0u8; 16])).await;
    }
    let _ = c.ws.flush().await;
    let (code, reason) = expect_close(&mut c, "50 binary frames at 1/s, burst 5").await;
    assert_eq!(code, 1008, "{reason}");
}

// --- 8. Reading and writing do not starve ----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscribe_predicate_stalls_neither_reading_nor_writing() {
    let entered = Arc::new(AtomicBool::new(false));
    let e = entered.clone();
    let router = WampRouter::new().topic(T, Topic::new()).topic(
        "urn:slow",
        Topic::new().subscribe_if(move |_s: Session, _t: String| {
            let e = e.clone();
            async move {
                e.store(true, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(2)).await;
                true
            }
        }),
    );
    let wamp = router.handle();
    let addr = serve_layer(WampLayer::new(router).outbound_queue_capacity(16)).await;
    let mut c = connect(addr).await;
    c.subscribe(T).await;
    c.send(json!([5, "urn:slow"])).await;
    assert!(
        wait_until(WAIT, || entered.load(Ordering::SeqCst)).await,
        "the predicate runs"
    );
    let reader = tokio::spawn(async move {
        let deadline = Instant::now() + WAIT;
        let mut seqs = vec![];
        while seqs.len() < 200 {
            match tokio::time::timeout_at(deadline, c.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v[0] == 8 && v[1] == T {
                        seqs.push(v[2]["seq"].as_u64().unwrap());
                    }
                }
                Ok(Some(Ok(Message::Close(f)))) => return (seqs, format!("closed: {f:?}")),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => return (seqs, format!("error: {e}")),
                Ok(None) => return (seqs, "ended".into()),
                Err(_) => return (seqs, "deadline".into()),
            }
        }
        (seqs, "open".into())
    });
    for seq in 0..200u64 {
        wamp.publish(T, &json!({"seq": seq})).unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (seqs, state) = reader.await.unwrap();
    assert_eq!(state, "open", "after {} events", seqs.len());
    assert_eq!(seqs, (0..200).collect::<Vec<u64>>());
}

// --- 9. A panicking identity provider --------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_identity_provider_does_not_leak_the_session_slot() {
    let cra = WampCra::new(
        |_s, _k: String, _e| async { None },
        |_s, _k: AuthKey| async { Permissions::all() },
    )
    .identity_from(|_parts| panic!("boom"));
    let layer = WampLayer::new(router().auth(cra)).max_sessions(Some(1));
    let addr = serve_layer(layer).await;
    // The first session may be refused, closed, or go on unauthenticated; either way it
    // ends when the client leaves.
    let first = try_connect(addr, &[]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(first);
    let second = connect_retrying(addr, Duration::from_secs(2)).await;
    assert!(
        second.is_ok(),
        "a second client after the first left: {:?}",
        second.err()
    );
}

// --- 10. Slow-consumer policies never drop replies -------------------------------------

async fn the_reply_survives(policy: SlowConsumerPolicy) {
    let started = Arc::new(AtomicBool::new(false));
    let s = started.clone();
    let router = router().rpc("urn:slow-reply", move || {
        let s = s.clone();
        async move {
            s.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
            "done"
        }
    });
    let wamp = router.handle();
    let layer = WampLayer::new(router)
        .outbound_queue_capacity(4)
        .slow_consumer_policy(policy);
    let addr = serve_layer(layer).await;
    let mut c = connect(addr).await;
    c.subscribe(T).await;
    // Not reading from here. The call takes 1 s.
    c.send(json!([2, "s", "urn:slow-reply"])).await;
    assert!(wait_until(WAIT, || started.load(Ordering::SeqCst)).await);
    // 200 events of 32 KiB, more than the socket buffers hold: the queue is full ...
    let event = json!({"pad": "x".repeat(32 * KIB)});
    for _ in 0..200 {
        let _ = wamp.publish(T, &event);
    }
    assert!(
        wait_until(WAIT, || wamp.metrics().events_dropped > 0).await,
        "the queue filled up"
    );
    // ... and stays full until well after the reply is due.
    let until = Instant::now() + Duration::from_millis(1500);
    for _ in 0..100 {
        if Instant::now() >= until {
            break;
        }
        for _ in 0..15 {
            let _ = wamp.publish(T, &event);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut events = 0;
    let outcome = loop {
        match tokio::time::timeout_at(deadline, c.ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v[1] == "s" {
                    break Some(v);
                }
                events += 1;
            }
            Ok(Some(Ok(Message::Close(f)))) => panic!("{policy:?}: closed: {f:?}"),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) | Err(_) => break None,
        }
    };
    assert_eq!(
        outcome,
        Some(json!([3, "s", "done"])),
        "{policy:?}: the CALLRESULT is missing after {events} events ({:?})",
        wamp.metrics()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_newest_never_drops_a_call_result() {
    the_reply_survives(SlowConsumerPolicy::DropNewest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_never_drops_a_call_result() {
    the_reply_survives(SlowConsumerPolicy::DropOldest).await;
}

// --- 11. Session::authenticated_as -----------------------------------------------------

#[tokio::test]
async fn authenticated_as_does_not_elevate_the_live_session() {
    let cra = WampCra::new(
        |_s, _k: String, _e| async { None },
        |_s, key: AuthKey| async move {
            match key {
                AuthKey::Key(k) if k == "system" => Permissions::all(),
                AuthKey::Anonymous => Permissions::none().allow_call("urn:escalate"),
                _ => Permissions::none(),
            }
        },
    )
    .allow_anonymous(true);
    let router = WampRouter::new()
        .rpc("urn:escalate", |session: Session| async move {
            let _elevated = session.authenticated_as(AuthKey::Key("system".into()));
            true
        })
        .rpc("urn:admin", || async { "the crown jewels" })
        .auth(cra);
    let addr = serve_router(router).await;
    let mut c = connect(addr).await;
    assert_eq!(
        c.call("1", AUTHREQ, &[Value::Null]).await,
        json!([3, "1", null])
    );
    assert_eq!(c.call("2", AUTH, &[Value::Null]).await[0], 3);
    assert_eq!(c.call("3", "urn:admin", &[]).await[2], UNAUTHORIZED);
    assert_eq!(
        c.call("4", "urn:escalate", &[]).await,
        json!([3, "4", true])
    );
    let after = c.call("5", "urn:admin", &[]).await;
    assert_eq!(
        after[2], UNAUTHORIZED,
        "the anonymous session was elevated: {after}"
    );
}

// --- 12. Keepalive deadline ------------------------------------------------------------

/// A WebSocket peer that does the handshake by hand and then never writes anything.
struct RawPeer(tokio::net::TcpStream);

impl RawPeer {
    async fn connect(addr: SocketAddr) -> Self {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Protocol: wamp\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut head = vec![];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
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
}

/// Whether these bytes from the server hold a close frame (server frames are unmasked).
fn has_close_frame(bytes: &[u8]) -> bool {
    let mut at = 0;
    while at + 2 <= bytes.len() {
        let op = bytes[at] & 0x0f;
        let mut len = usize::from(bytes[at + 1] & 0x7f);
        at += 2;
        if len == 126 && at + 2 <= bytes.len() {
            len = usize::from(u16::from_be_bytes([bytes[at], bytes[at + 1]]));
            at += 2;
        } else if len == 127 && at + 8 <= bytes.len() {
            len = usize::try_from(u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap()))
                .unwrap_or(usize::MAX);
            at += 8;
        }
        if op == 0x8 {
            return true;
        }
        at = at.saturating_add(len);
    }
    false
}

#[tokio::test]
async fn keepalive_closes_a_silent_peer_soon_after_the_pong_deadline() {
    let layer = WampLayer::new(router())
        .ping_interval(Some(Duration::from_secs(2)))
        .pong_timeout(Duration::from_millis(100));
    let addr = serve_layer(layer).await;
    let started = Instant::now();
    let mut peer = RawPeer::connect(addr).await;
    // Reading does not answer the ping: the peer stays silent.
    let deadline = started + Duration::from_millis(3500);
    let mut bytes = vec![];
    let mut chunk = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout_at(deadline, peer.0.read(&mut chunk)).await {
            Err(_) => break None,
            Ok(Ok(0)) => break Some("EOF"),
            Ok(Err(_)) => break Some("reset"),
            Ok(Ok(n)) => {
                bytes.extend_from_slice(&chunk[..n]);
                if has_close_frame(&bytes) {
                    break Some("close frame");
                }
            }
        }
    };
    assert!(
        closed.is_some(),
        "ping at 2 s, pong deadline 100 ms later: no close nor EOF at 3.5 s ({} bytes read)",
        bytes.len()
    );
}

// --- 13. Key derivation off the runtime ------------------------------------------------

/// PBKDF2 iterations that take about a second here (debug builds are slow).
fn iterations_for_about_a_second() -> u32 {
    let sample = 20_000;
    let t = std::time::Instant::now();
    let _ = derive_key("secret", "salt", sample, 32);
    let per_iteration = t.elapsed().as_secs_f64() / f64::from(sample);
    let n = (1.0 / per_iteration) as u32;
    n.clamp(50_000, 50_000_000)
}

#[tokio::test(flavor = "current_thread")]
async fn key_derivation_does_not_block_other_sessions() {
    let iterations = iterations_for_about_a_second();
    let cra = WampCra::new(
        move |_s, key: String, _e| async move {
            (key == "ada").then(|| Secret::salted("secret", "salt", iterations, 32))
        },
        |_s, key: AuthKey| async move {
            match key.as_key() {
                Some(_) => Permissions::all(),
                None => Permissions::none(),
            }
        },
    )
    .identity_from(|parts| {
        let user = parts.headers.get("x-user").and_then(|v| v.to_str().ok());
        (user == Some("b")).then(|| "b".to_owned())
    });
    let router = WampRouter::new()
        .rpc("urn:echo", |Args(a): Args<Vec<Value>>| async move { a })
        .auth(cra);
    let addr = serve_router(router).await;
    let mut b = connect_with(addr, &[("x-user", "b")]).await;
    assert_eq!(
        b.call("0", "urn:echo", &[json!(0)]).await,
        json!([3, "0", [0]])
    );
    let mut a = connect(addr).await;
    let order = Arc::new(AtomicUsize::new(0));
    a.send(json!([2, "r", AUTHREQ, "ada"])).await;
    let o = order.clone();
    let a_reader = tokio::spawn(async move {
        let v = a.recv().await;
        (o.fetch_add(1, Ordering::SeqCst), v)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let reply = b.call("e", "urn:echo", &[json!("hi")]).await;
    let b_position = order.fetch_add(1, Ordering::SeqCst);
    let (a_position, challenge) = a_reader.await.unwrap();
    assert_eq!(reply, json!([3, "e", ["hi"]]));
    assert_eq!(challenge[0], 3, "{challenge}");
    assert!(
        b_position < a_position,
        "B's call waited for A's key derivation ({iterations} PBKDF2 iterations): \
         A's challenge arrived first"
    );
}

// --- 14. PUBLISH without an event ------------------------------------------------------

#[tokio::test]
async fn a_publish_without_an_event_delivers_null() {
    let addr = serve_router(router()).await;
    let mut c = connect(addr).await;
    c.subscribe(T).await;
    c.send(json!([7, T])).await;
    let before = frames_until_sync(&mut c).await;
    assert_eq!(before, vec![json!([8, T, null])]);
}

// --- 15. Origin ------------------------------------------------------------------------

async fn handshake(addr: SocketAddr, headers: &[(&str, String)]) -> Result<Client, String> {
    try_connect(addr, headers).await
}

#[tokio::test]
async fn a_same_host_origin_with_another_scheme_is_refused() {
    let addr = serve_router(router()).await;
    let refused = handshake(addr, &[("origin", format!("ftp://{addr}"))]).await;
    let err = refused.err().expect("an ftp:// Origin is refused");
    assert!(err.contains("403"), "{err}");
}

#[tokio::test]
async fn a_plain_http_page_cannot_open_a_session_on_the_https_site() {
    let addr = serve_router(router()).await;
    let https = ("x-forwarded-proto", "https".to_owned());
    let refused = handshake(addr, &[("origin", format!("http://{addr}")), https.clone()]).await;
    let err = refused
        .err()
        .expect("an http:// Origin on the https site is refused");
    assert!(err.contains("403"), "{err}");
    let accepted = handshake(addr, &[("origin", format!("https://{addr}")), https]).await;
    assert!(accepted.is_ok(), "{:?}", accepted.err());
}

// --- 16. Shutdown during an upgrade ----------------------------------------------------

async fn slow_response(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_an_upgrade_does_not_leave_a_session_open() {
    let router = router();
    let wamp = router.handle();
    let app = Router::new()
        .route_service("/ws", WampLayer::new(router).into_service())
        .layer(axum::middleware::from_fn(slow_response));
    let addr = serve(app).await;
    let client = tokio::spawn(async move {
        let req = ws_request(addr, &[]);
        let started = Instant::now();
        let (mut ws, _) =
            match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req)).await {
                Err(_) => return "handshake timed out".to_owned(),
                Ok(Err(e)) => return format!("refused: {e}"),
                Ok(Ok(ok)) => ok,
            };
        let mut seen = vec![];
        loop {
            match tokio::time::timeout_at(started + Duration::from_secs(4), ws.next()).await {
                Err(_) => return format!("still open 4 s later, after {seen:?}"),
                Ok(Some(Ok(Message::Close(Some(f))))) => {
                    return format!("close {}", u16::from(f.code));
                }
                Ok(Some(Ok(Message::Text(t)))) => seen.push(head(&t)),
                Ok(Some(Ok(m))) => seen.push(format!("{m:?}")),
                Ok(Some(Err(e))) => return format!("error without close: {e}"),
                Ok(None) => return "ended without close".to_owned(),
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let all_ended = wamp.shutdown(Duration::from_secs(2)).await;
    let outcome = client.await.unwrap();
    assert!(
        all_ended,
        "shutdown did not end every session in time (client: {outcome})"
    );
    assert!(
        outcome.starts_with("refused") || outcome == "close 1001",
        "the client connected and got {outcome}"
    );
}

// --- 17. A subscriber that never reads -------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_is_cut_off_and_not_buffered_for() {
    let router = router();
    let wamp = router.handle();
    let addr = serve_layer(WampLayer::new(router).outbound_queue_capacity(64)).await;
    let mut slow = connect_small_rcvbuf(addr).await;
    let mut fast = connect(addr).await;
    slow.subscribe(T).await;
    fast.subscribe(T).await;
    let slow_id = SessionId::from(slow.session_id.clone());
    let n = 3000u64;
    let before = rss_kib();
    let reader = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = vec![];
        while (got.len() as u64) < n && Instant::now() < deadline {
            let v = fast.recv().await;
            got.push(v[2]["seq"].as_u64().unwrap());
        }
        (got, fast)
    });
    // 3000 events of 16 KiB: 48 MiB owed to `slow`, which never reads again.
    let pad = "x".repeat(16 * KIB);
    for chunk in 0..30 {
        for seq in chunk * 100..(chunk + 1) * 100 {
            wamp.publish(T, &json!({"seq": seq, "pad": pad})).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (got, _fast) = reader.await.unwrap();
    assert_eq!(
        got,
        (0..n).collect::<Vec<u64>>(),
        "the reading subscriber got every event in order"
    );
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "memory grew {grown} KiB for a subscriber owed 48 MiB"
    );
    let cut_off = wait_until(Duration::from_secs(5), || {
        !wamp.sessions().contains(&slow_id)
    })
    .await;
    assert!(
        cut_off,
        "the subscriber that never reads is still a session 5 s later \
         (slow_consumers_disconnected = {})",
        wamp.metrics().slow_consumers_disconnected
    );
    drop(slow);
}

// --- Found by the review of the fixes ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failure_throttle_applies_to_challenges_issued_before_it_was_reached() {
    let cra = WampCra::new(
        |_s, key: String, _e| async move { (key == "ada").then(|| Secret::plain("secret")) },
        |_s, _k: AuthKey| async { Permissions::all() },
    )
    .failure_throttle(4, Duration::from_secs(600));
    let addr = serve_router(router().auth(cra)).await;
    // Twelve sessions each hold a challenge before any signature is sent.
    let mut clients = Vec::new();
    let mut challenges = Vec::new();
    for i in 0..12 {
        let mut c = connect(addr).await;
        let r = c.call(&format!("r{i}"), AUTHREQ, &[json!("ada")]).await;
        assert_eq!(r[0], 3, "{r}");
        challenges.push(r[2].as_str().unwrap().to_owned());
        clients.push(c);
    }
    let mut compared = 0;
    for (i, c) in clients.iter_mut().enumerate().take(11) {
        let r = c.call(&format!("a{i}"), AUTH, &[json!("wrong")]).await;
        if r[2] == INVALID_SIGNATURE {
            compared += 1;
        } else {
            assert_eq!(r[2], "http://api.wamp.ws/error#too-many-attempts", "{r}");
        }
    }
    assert_eq!(compared, 4, "only 4 guesses were compared");
    // Even the right signature for a challenge issued earlier is not compared now.
    let sig = tower_wamp::core::auth::sign("secret", &challenges[11]);
    let r = clients[11].call("ok", AUTH, &[json!(sig)]).await;
    assert_eq!(r[2], "http://api.wamp.ws/error#too-many-attempts", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_decodes_to_far_more_than_its_size_is_refused() {
    // 1 MiB of small objects decodes to about 100 MiB of JSON values.
    let router = router().rpc("urn:never", |Args(_a): Args<Vec<Value>>| {
        std::future::pending::<i64>()
    });
    let addr = serve_router(router).await;
    let mut c = connect(addr).await;
    let unit = r#"{"":0},"#;
    let mut frame = String::from(r#"[2,"c0","urn:never","#);
    frame.push_str(&unit.repeat((1_000_000 - 40) / unit.len()));
    frame.pop();
    frame.push(']');
    let before = rss_kib();
    c.ws.send(Message::text(frame)).await.unwrap();
    let (code, reason) = c.recv_close().await;
    assert_eq!(code, 1009, "{reason}");
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 32 * 1024, "RSS grew {grown} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_callback_does_not_get_a_healthy_client_closed_by_the_keepalive() {
    let router = WampRouter::new().topic(
        "urn:slow",
        Topic::new().subscribe_if(|_s: Session, _t: String| async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            true
        }),
    );
    let layer = WampLayer::new(router)
        .ping_interval(Some(Duration::from_millis(300)))
        .pong_timeout(Duration::from_millis(300));
    let addr = serve_layer(layer).await;
    let mut c = connect(addr).await;
    c.send(json!([5, "urn:slow"])).await;
    // The client reads (and so answers pings) all along.
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, c.ws.next()).await {
        match m {
            Ok(Message::Close(f)) => panic!("a healthy client was closed: {f:?}"),
            Ok(_) => {}
            Err(e) => panic!("connection error: {e}"),
        }
    }
    assert_eq!(
        c.call("1", "urn:x", &[]).await[0],
        4,
        "still open and served"
    );
}

#[tokio::test]
async fn a_callback_that_panics_before_returning_its_future_is_answered() {
    fn boom(_s: Session, _t: String) -> std::future::Ready<bool> {
        panic!("predicate panicked before its future existed")
    }
    let router = router()
        .topic("urn:boom", Topic::new().subscribe_if(boom))
        .before_call(|call: tower_wamp::Call| {
            if call.procedure() == "urn:sleep" {
                panic!("before_call panicked before its future existed");
            }
            std::future::ready(Ok(call))
        });
    let addr = serve_router(router).await;
    let mut c = connect(addr).await;
    c.send(json!([5, "urn:boom"])).await;
    let r = c.call("1", "urn:sleep", &[json!(1)]).await;
    assert_eq!(r[2], "http://api.wamp.ws/error#internal", "{r}");
    // The session goes on.
    assert_eq!(c.call("2", "urn:add", &[json!(1), json!(2)]).await[2], 3);
}
