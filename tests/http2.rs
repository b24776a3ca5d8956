//! WebSockets over HTTP/2 (RFC 8441): an application that turns on axum's `http2` feature
//! (these tests do) gets WAMP sessions over an extended CONNECT, answered 200 (no 101, no
//! accept key, which HTTP/2 does not have).
mod common;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::{WebSocketStream, tungstenite::Message, tungstenite::protocol::Role};
use tower_wamp::{Args, WampRouter};

#[tokio::test]
async fn a_v2_session_over_an_http2_extended_connect() {
    let router = WampRouter::new().realm("realm1").rpc(
        "com.example.add",
        |Args((a, b)): Args<(i64, i64)>| async move { a + b },
    );
    let addr = common::serve_router(router).await;

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::connect(format!("http://{addr}/ws"))
        .version(http::Version::HTTP_2)
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "wamp.2.json")
        .body(axum::body::Body::empty())
        .unwrap();
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let response = client.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["sec-websocket-protocol"], "wamp.2.json");
    assert!(response.headers().get("sec-websocket-accept").is_none());

    let upgraded = hyper::upgrade::on(response).await.unwrap();
    let mut ws = WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        Role::Client,
        None,
    )
    .await;
    ws.send(Message::text(
        json!([1, "realm1", {"roles": {"caller": {}}}]).to_string(),
    ))
    .await
    .unwrap();
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome[0], 2, "{welcome}");
    ws.send(Message::text(
        json!([48, 7, {}, "com.example.add", [2, 3]]).to_string(),
    ))
    .await
    .unwrap();
    let result = next_json(&mut ws).await;
    assert_eq!(result, json!([50, 7, {}, [5]]));
    ws.send(Message::text(
        json!([6, {}, "wamp.close.close_realm"]).to_string(),
    ))
    .await
    .unwrap();
    let goodbye = next_json(&mut ws).await;
    assert_eq!(goodbye[0], 6, "{goodbye}");
}

async fn next_json<S>(ws: &mut WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(_)) => {}
            other => panic!("a text frame, not {other:?}"),
        }
    }
}
