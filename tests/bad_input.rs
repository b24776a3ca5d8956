//! Garbage through a real socket: no panic, no harm, the session goes on.
mod common;

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tower_wamp::{Args, Topic, WampLayer, WampRouter};

fn router() -> WampRouter {
    WampRouter::new()
        .rpc(
            "urn:add",
            |Args((a, b)): Args<(i64, i64)>| async move { a + b },
        )
        .topic("urn:t", Topic::new())
}

#[tokio::test]
async fn garbage_is_ignored_and_the_session_still_works() {
    let addr = serve_router(router()).await;
    let mut a = connect(addr).await;
    let mut b = connect(addr).await;
    b.subscribe("urn:t").await;
    let garbage = [
        "not json",
        "{\"a\":1}",
        "42",
        "[]",
        "[\"2\"]",
        "[1.5]",
        "[-1,\"invalid type\"]",
        "[99]",
        "[0,\"x\",1,\"y\"]",
        "[3,\"c\",1]",
        "[4,\"c\",\"u\",\"d\"]",
        "[8,\"urn:t\",1]",
        "[1,\"p\"]",
        "[5]",
        "[5,7]",
        "[6,null]",
        "[7,\"urn:t\",1,\"me\"]",
        "[7,\"urn:t\",1,[],{}]",
        "[2]",
        "[2,17,\"urn:add\"]",
        "\u{0}\u{1}",
    ];
    for g in garbage {
        a.send_text(g).await;
    }
    a.ws.send(Message::binary(vec![0xff, 0x00, 0x13]))
        .await
        .unwrap();
    a.expect_silence().await;
    b.expect_silence().await;
    assert_eq!(
        a.call("1", "urn:add", &[json!(1), json!(2)]).await,
        json!([3, "1", 3])
    );
    a.send(json!([7, "urn:t", "still here"])).await;
    assert_eq!(b.recv().await, json!([8, "urn:t", "still here"]));
}

#[tokio::test]
async fn a_call_with_a_readable_id_but_a_bad_shape_gets_a_callerror() {
    let addr = serve_router(router()).await;
    let mut a = connect(addr).await;
    a.send_text("[2,\"c1\"]").await;
    let reply = a.recv().await;
    assert_eq!(reply[0], 4);
    assert_eq!(reply[1], "c1");
    assert_eq!(reply[2], "http://api.wamp.ws/error#invalid-argument");
    a.send_text("[2,\"c2\",{\"not\":\"a uri\"}]").await;
    let reply = a.recv().await;
    assert_eq!(reply[1], "c2");
    assert!(
        reply[3]
            .as_str()
            .unwrap()
            .contains("procedure URI must be a string"),
        "{reply}"
    );
}

#[tokio::test]
async fn protocol_violations_can_close_the_connection() {
    let addr = serve_layer(WampLayer::new(router()).close_on_protocol_violation(true)).await;
    let mut a = connect(addr).await;
    a.send_text("not json").await;
    let (code, reason) = a.recv_close().await;
    assert_eq!(code, 1002);
    assert!(reason.contains("invalid JSON"), "{reason}");
    let mut b = connect(addr).await;
    b.ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(b.recv_close().await.0, 1003);
}

#[tokio::test]
async fn an_oversize_message_closes_with_1009_and_others_go_on() {
    let addr = serve_layer(WampLayer::new(router()).max_message_size(1024)).await;
    let mut a = connect(addr).await;
    let mut b = connect(addr).await;
    let big = format!("[7,\"urn:t\",\"{}\"]", "x".repeat(4096));
    a.send_text(&big).await;
    let (code, _) = a.recv_close().await;
    assert_eq!(code, 1009);
    assert_eq!(b.call("1", "urn:add", &[json!(2), json!(2)]).await[2], 4);
}
