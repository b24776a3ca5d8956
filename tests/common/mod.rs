//! Test harness: a real server on 127.0.0.1:0 and a real WebSocket client.
#![allow(dead_code, unreachable_pub)]

pub mod peers;
pub mod v2;

use std::{net::SocketAddr, time::Duration};

use axum::Router;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};
use tower_wamp::{WampLayer, WampRouter};

pub const WAIT: Duration = Duration::from_secs(5);
/// How long to wait to be reasonably sure nothing more arrives.
pub const QUIET: Duration = Duration::from_millis(150);

/// This process's resident memory in KiB.
pub fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4
}

/// Serves `app` on a free loopback port; the server stops when the test's runtime ends.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Serves a layer at `/ws`.
pub async fn serve_layer(layer: WampLayer) -> SocketAddr {
    serve(Router::new().route_service("/ws", layer.into_service())).await
}

/// Serves a router at `/ws` with default settings.
pub async fn serve_router(router: WampRouter) -> SocketAddr {
    serve_layer(WampLayer::new(router)).await
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub session_id: String,
    pub welcome: Value,
}

pub async fn connect(addr: SocketAddr) -> Client {
    connect_with(addr, &[]).await
}

pub async fn connect_with(addr: SocketAddr, headers: &[(&'static str, &str)]) -> Client {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("wamp"));
    for (k, v) in headers {
        req.headers_mut()
            .insert(*k, HeaderValue::from_str(v).unwrap());
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
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

impl Client {
    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// The next text frame as JSON; panics after [`WAIT`].
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("connection ended")
                .expect("websocket error");
            match msg {
                Message::Text(t) => return serde_json::from_str(&t).unwrap(),
                Message::Close(f) => panic!("closed: {f:?}"),
                _ => {}
            }
        }
    }

    /// Asserts nothing arrives for [`QUIET`].
    pub async fn expect_silence(&mut self) {
        if let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(QUIET, self.ws.next()).await {
            panic!("expected no frame, got {t}");
        }
    }

    /// Waits for the close frame and returns its code and reason.
    pub async fn recv_close(&mut self) -> (u16, String) {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for close");
            match msg {
                Some(Ok(Message::Close(Some(f)))) => return (f.code.into(), f.reason.to_string()),
                Some(Ok(Message::Close(None))) | None => return (1005, String::new()),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("error instead of close: {e}"),
            }
        }
    }

    pub async fn call(&mut self, id: &str, procedure: &str, args: &[Value]) -> Value {
        let mut msg = vec![json!(2), json!(id), json!(procedure)];
        msg.extend_from_slice(args);
        self.send(Value::Array(msg)).await;
        self.recv().await
    }

    pub async fn prefix(&mut self, p: &str, uri: &str) {
        self.send(json!([1, p, uri])).await;
    }

    /// Subscribes and waits until the subscription is visible through a round trip
    /// (frames of one session are handled in order).
    pub async fn subscribe(&mut self, topic: &str) {
        self.send(json!([5, topic])).await;
        self.sync().await;
    }

    pub async fn unsubscribe(&mut self, topic: &str) {
        self.send(json!([6, topic])).await;
        self.sync().await;
    }

    /// A round trip through the session (an unknown procedure), so that everything sent
    /// before has been handled.
    pub async fn sync(&mut self) {
        let reply = self.call("sync", "urn:test:sync-barrier", &[]).await;
        assert_eq!(reply[1], "sync", "{reply}");
    }
}
