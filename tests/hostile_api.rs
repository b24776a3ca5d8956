//! Hostile-client tests of settings that do not exist in the old API: write timeouts,
//! the per-session limits (URI length, prefixes, subscriptions, calls in flight), allowed
//! `Host`s, an Origin scheme, and the WAMP-CRA failure throttle across sessions.
mod common;

use std::{net::SocketAddr, time::Duration};

use axum::Router;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::{
    MaybeTlsStream,
    tungstenite::{
        Message,
        client::IntoClientRequest,
        handshake::client::Request as WsRequest,
        http::{HeaderName, HeaderValue},
    },
};
use tower_wamp::{
    Args, OriginPolicy, SessionId, SlowConsumerPolicy, Topic, WampLayer, WampRouter,
    auth::{AUTH, AUTHREQ, Secret, WampCra},
    core::auth::{AuthKey, Permissions},
};

const T: &str = "urn:t";
const KIB: usize = 1 << 10;
const TOO_MANY_CALLS: &str = "http://api.wamp.ws/error#too-many-calls";
const TOO_MANY_ATTEMPTS: &str = "http://api.wamp.ws/error#too-many-attempts";
const INVALID_SIGNATURE: &str = "http://api.wamp.ws/error#invalid-signature";

fn router() -> WampRouter {
    WampRouter::new()
        .topic(T, Topic::new())
        .topic("urn:*", Topic::new())
        .rpc("urn:pfx:x", || async { "x" })
        .rpc("urn:never", |Args(_args): Args<Vec<Value>>| {
            std::future::pending::<i64>()
        })
}

// --- Helpers (as in tests/hostile.rs) --------------------------------------------------

/// Sends a probe CALL after what was sent before and reads until the close frame; a reply
/// to the probe means the session is still open.
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
                    v[1], "probe",
                    "{what}: the session is still open (it answered a CALL sent afterwards)"
                );
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => panic!("{what}: connection error instead of a close frame: {e}"),
            Ok(None) => panic!("{what}: the connection ended without a close frame"),
        }
    }
}

/// The close code if the session closes, or the reply to a probe CALL if it stays open.
async fn closed_or_reply(c: &mut Client, probe: Value) -> Result<u16, Value> {
    let id = probe[1].clone();
    let _ = c.ws.send(Message::text(probe.to_string())).await;
    let deadline = Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, c.ws.next()).await {
            Err(_) => panic!("neither a close nor a reply within {WAIT:?}"),
            Ok(Some(Ok(Message::Close(f)))) => return Ok(f.map_or(1005, |f| f.code.into())),
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v[1] == id {
                    return Err(v);
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => panic!("connection error instead of a close frame: {e}"),
            Ok(None) => panic!("the connection ended without a close frame"),
        }
    }
}

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

fn ws_request(addr: SocketAddr, headers: &[(&str, String)]) -> WsRequest {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("wamp"));
    for (k, v) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    req
}

/// Connects and reads WELCOME; the error says why not (`... 403 ...` for a refused upgrade).
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

/// A client whose TCP receive buffer is tiny, so that the server's writes block as soon as
/// it stops reading.
async fn connect_small_rcvbuf(addr: SocketAddr) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        ws_request(addr, &[]),
        MaybeTlsStream::Plain(stream),
        None,
    )
    .await
    .unwrap();
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

/// Serves `app` so that handlers and the router see the peer's address.
async fn serve_with_connect_info(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

// --- write_timeout ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_makes_no_progress_drops_the_connection() {
    let router = router();
    let wamp = router.handle();
    let layer = WampLayer::new(router)
        .slow_consumer_policy(SlowConsumerPolicy::DropNewest)
        .write_timeout(Duration::from_millis(500));
    let addr = serve_layer(layer).await;
    let mut slow = connect_small_rcvbuf(addr).await;
    slow.subscribe(T).await;
    // Never reads again. DropNewest keeps the session from being closed as a slow
    // consumer: only the write timeout can end it.
    let pad = "x".repeat(4 * KIB);
    for seq in 0..5000u64 {
        let _ = wamp.publish(T, &json!({"seq": seq, "pad": pad}));
        if seq % 100 == 99 {
            tokio::task::yield_now().await;
        }
    }
    let gone = wait_until(Duration::from_secs(3), || wamp.sessions().is_empty()).await;
    assert!(gone, "the stalled session is still open 3 s later");
    assert_eq!(wamp.metrics().write_timeouts, 1);
    drop(slow);
}

// --- Per-session limits ----------------------------------------------------------------

#[tokio::test]
async fn max_uri_length_applies() {
    let router = router();
    let wamp = router.handle();
    let addr = serve_layer(WampLayer::new(router).max_uri_length(64)).await;
    let mut c = connect(addr).await;
    let fits = format!("urn:{}", "a".repeat(60));
    assert_eq!(fits.len(), 64);
    c.subscribe(&fits).await;
    let id = SessionId::from(c.session_id.clone());
    assert_eq!(wamp.topics_of(&id), vec![fits]);
    let over = format!("urn:{}", "b".repeat(61));
    assert_eq!(over.len(), 65);
    c.send(json!([5, over])).await;
    let (code, reason) = expect_close(&mut c, "a 65-byte topic with max_uri_length(64)").await;
    assert_eq!(code, 1008, "{reason}");
}

#[tokio::test]
async fn max_prefixes_applies() {
    let addr = serve_layer(WampLayer::new(router()).max_prefixes(3)).await;
    let mut c = connect(addr).await;
    for i in 0..3 {
        c.prefix(&format!("p{i}"), "urn:pfx:").await;
    }
    assert_eq!(c.call("0", "p2:x", &[]).await, json!([3, "0", "x"]));
    c.prefix("p3", "urn:pfx:").await;
    // The fourth prefix either closes the session or does not take effect.
    match closed_or_reply(&mut c, json!([2, "4", "p3:x"])).await {
        Ok(code) => assert_eq!(code, 1008),
        Err(reply) => assert_ne!(reply[0], 3, "a fourth prefix took effect: {reply}"),
    }
}

#[tokio::test]
async fn max_prefix_bytes_applies() {
    let addr = serve_layer(WampLayer::new(router()).max_prefix_bytes(100)).await;
    let mut c = connect(addr).await;
    // Two prefixes of 2 + 40 bytes fit in 100 bytes; a third does not.
    let uri = format!("urn:pfx:{}", "u".repeat(32));
    assert_eq!(uri.len(), 40);
    c.prefix("p0", &uri).await;
    c.prefix("p1", &uri).await;
    c.sync().await;
    c.prefix("p2", &uri).await;
    let (code, reason) = expect_close(&mut c, "126 bytes of prefixes, 100 allowed").await;
    assert_eq!(code, 1008, "{reason}");
}

#[tokio::test]
async fn max_subscriptions_applies() {
    let router = router();
    let wamp = router.handle();
    let addr = serve_layer(WampLayer::new(router).max_subscriptions(3)).await;
    let mut c = connect(addr).await;
    for i in 0..3 {
        c.subscribe(&format!("urn:topic:{i}")).await;
    }
    let id = SessionId::from(c.session_id.clone());
    assert_eq!(wamp.topics_of(&id).len(), 3);
    c.send(json!([5, "urn:topic:3"])).await;
    let (code, reason) = expect_close(&mut c, "a 4th subscription, 3 allowed").await;
    assert_eq!(code, 1008, "{reason}");
}

#[tokio::test]
async fn max_subscription_bytes_applies() {
    let router = router();
    let wamp = router.handle();
    let addr = serve_layer(WampLayer::new(router).max_subscription_bytes(100)).await;
    let mut c = connect(addr).await;
    let topic = |i: usize| format!("urn:topic:{i}:{}", "t".repeat(28));
    assert_eq!(topic(0).len(), 40);
    c.subscribe(&topic(0)).await;
    c.subscribe(&topic(1)).await;
    let id = SessionId::from(c.session_id.clone());
    assert_eq!(wamp.topics_of(&id).len(), 2);
    c.send(json!([5, topic(2)])).await;
    let (code, reason) = expect_close(&mut c, "120 bytes of topics, 100 allowed").await;
    assert_eq!(code, 1008, "{reason}");
}

#[tokio::test]
async fn max_calls_in_flight_applies() {
    let addr = serve_layer(WampLayer::new(router()).max_calls_in_flight(2)).await;
    let mut c = connect(addr).await;
    for i in 0..3 {
        c.send(json!([2, format!("c{i}"), "urn:never"])).await;
    }
    let reply = c.recv().await;
    assert_eq!(reply[0], 4, "{reply}");
    assert_eq!(reply[1], "c2", "{reply}");
    assert_eq!(reply[2], TOO_MANY_CALLS, "{reply}");
    c.expect_silence().await;
}

#[tokio::test]
async fn max_call_bytes_applies() {
    let addr = serve_layer(WampLayer::new(router()).max_call_bytes(10_000)).await;
    let mut c = connect(addr).await;
    let big = "x".repeat(6000);
    c.send(json!([2, "c0", "urn:never", big])).await;
    c.send(json!([2, "c1", "urn:never", big])).await;
    let reply = c.recv().await;
    assert_eq!(reply[0], 4, "{reply}");
    assert_eq!(reply[1], "c1", "{reply}");
    assert_eq!(reply[2], TOO_MANY_CALLS, "{reply}");
}

// --- Host and Origin -------------------------------------------------------------------

#[tokio::test]
async fn allowed_hosts_refuses_a_rebound_host() {
    let layer = WampLayer::new(router()).allowed_hosts(["localhost", "127.0.0.1"]);
    let addr = serve_layer(layer).await;
    let port = addr.port();
    // Same-origin passes (Origin matches Host), but the Host is not ours.
    let evil = try_connect(
        addr,
        &[
            ("host", format!("evil.example:{port}")),
            ("origin", format!("http://evil.example:{port}")),
        ],
    )
    .await;
    let err = evil.err().expect("a foreign Host is refused");
    assert!(err.contains("403"), "{err}");
    let ours = try_connect(addr, &[("host", format!("127.0.0.1:{port}"))]).await;
    assert!(ours.is_ok(), "{:?}", ours.err());
}

#[tokio::test]
async fn an_origin_policy_can_require_https() {
    let policy = OriginPolicy::same_origin().with_scheme("https");
    let addr = serve_layer(WampLayer::new(router()).allowed_origins(policy)).await;
    let http = try_connect(addr, &[("origin", format!("http://{addr}"))]).await;
    let err = http.err().expect("an http:// Origin is refused");
    assert!(err.contains("403"), "{err}");
    let https = try_connect(addr, &[("origin", format!("https://{addr}"))]).await;
    assert!(https.is_ok(), "{:?}", https.err());
}

// --- WAMP-CRA failure throttle ---------------------------------------------------------

fn throttled_router() -> WampRouter {
    let cra = WampCra::new(
        |_s, key: String, _e| async move {
            matches!(key.as_str(), "ada" | "carol").then(|| Secret::plain("secret"))
        },
        |_s, _k: AuthKey| async { Permissions::all() },
    )
    .max_failures(2)
    .failure_throttle(4, Duration::from_secs(60));
    router().auth(cra)
}

/// Makes failed attempts for `key`, in a new session after each close (max_failures(2)
/// closes a session after its second failure), until `failures` invalid signatures have
/// been answered.
async fn fail_attempts(addr: SocketAddr, key: &str, failures: usize) {
    let mut made = 0;
    for session in 0..failures {
        let mut c = connect(addr).await;
        for attempt in 0..2 {
            if made == failures {
                return;
            }
            let challenge = c
                .call(&format!("r{session}.{attempt}"), AUTHREQ, &[json!(key)])
                .await;
            assert_eq!(challenge[0], 3, "a challenge: {challenge}");
            let reply = c
                .call(&format!("a{session}.{attempt}"), AUTH, &[json!("wrong")])
                .await;
            assert_eq!(reply[2], INVALID_SIGNATURE, "{reply}");
            made += 1;
        }
    }
}

async fn authreq_reply(addr: SocketAddr, key: &str) -> Value {
    let mut c = connect(addr).await;
    c.call("r", AUTHREQ, &[json!(key)]).await
}

#[tokio::test]
async fn the_failure_throttle_counts_per_key_and_per_address() {
    let app = Router::new().route_service("/ws", WampLayer::new(throttled_router()).into_service());
    let addr = serve_with_connect_info(app).await;
    fail_attempts(addr, "ada", 4).await;
    let ada = authreq_reply(addr, "ada").await;
    assert_eq!(ada[0], 4, "{ada}");
    assert_eq!(ada[2], TOO_MANY_ATTEMPTS, "{ada}");
    // The same address is throttled for other keys too.
    let carol = authreq_reply(addr, "carol").await;
    assert_eq!(carol[0], 4, "{carol}");
    assert_eq!(carol[2], TOO_MANY_ATTEMPTS, "{carol}");
}

#[tokio::test]
async fn without_connect_info_the_failure_throttle_counts_per_key() {
    let addr = serve_router(throttled_router()).await;
    fail_attempts(addr, "ada", 4).await;
    let ada = authreq_reply(addr, "ada").await;
    assert_eq!(ada[0], 4, "{ada}");
    assert_eq!(ada[2], TOO_MANY_ATTEMPTS, "{ada}");
    let carol = authreq_reply(addr, "carol").await;
    assert_eq!(carol[0], 3, "another key still gets a challenge: {carol}");
}
