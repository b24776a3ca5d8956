//! The handshake: pass-through of non-upgrades, Origin policy, subprotocol, WELCOME.
mod common;

use axum::{Router, body::Body, routing::get};
use common::*;
use http::{Request, StatusCode};
use serde_json::json;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};
use tower::ServiceExt;
use tower_wamp::{OriginPolicy, WampLayer, WampRouter};

fn upgrade_request(headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::get("/ws")
        .header("host", "example.com")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::empty()).unwrap()
}

async fn body_text(resp: axum::response::Response) -> String {
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn app(layer: WampLayer) -> Router {
    Router::new()
        .route(
            "/ws",
            get(|| async { "plain GET handled by the inner route" }),
        )
        .route_layer(layer)
}

#[tokio::test]
async fn non_upgrades_pass_through_the_layer_and_get_400_standalone() {
    let layer = WampLayer::new(WampRouter::new());
    let resp = app(layer.clone())
        .oneshot(Request::get("/ws").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        body_text(resp).await,
        "plain GET handled by the inner route"
    );

    let resp = Router::new()
        .route_service("/ws", layer.into_service())
        .oneshot(Request::get("/ws").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(body_text(resp).await.contains("not a WebSocket upgrade"));
}

#[tokio::test]
async fn origin_policies() {
    let check = |policy: OriginPolicy, headers: Vec<(&'static str, &'static str)>| async move {
        let headers: Vec<(&str, &str)> = headers;
        let mut h = headers.clone();
        h.push(("sec-websocket-protocol", "wamp"));
        let resp = app(WampLayer::new(WampRouter::new()).allowed_origins(policy))
            .oneshot(upgrade_request(&h))
            .await
            .unwrap();
        let status = resp.status();
        (status, body_text(resp).await)
    };
    // Same-origin by default. Without hyper's upgrade machinery (oneshot), an accepted
    // handshake gets as far as axum's "connection not upgradable" (426).
    let (s, _) = check(
        OriginPolicy::default(),
        vec![("origin", "http://example.com")],
    )
    .await;
    assert_eq!(s, StatusCode::UPGRADE_REQUIRED);
    let (s, body) = check(OriginPolicy::default(), vec![("origin", "http://evil.com")]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        body.contains("http://evil.com") && body.contains("not allowed"),
        "{body}"
    );
    // Missing Origin: allowed unless required.
    let (s, _) = check(OriginPolicy::default(), vec![]).await;
    assert_eq!(s, StatusCode::UPGRADE_REQUIRED);
    let (s, body) = check(OriginPolicy::default().require_origin(true), vec![]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(body.contains("missing Origin"), "{body}");
    // A regex must match the whole origin.
    let re = || OriginPolicy::regex(r"https?://myhost").unwrap();
    assert_eq!(
        check(re(), vec![("origin", "https://myhost")]).await.0,
        StatusCode::UPGRADE_REQUIRED
    );
    assert_eq!(
        check(re(), vec![("origin", "https://myhost.evil")]).await.0,
        StatusCode::FORBIDDEN
    );
    // A list and a predicate.
    let list = || OriginPolicy::list(["http://a.test"]);
    assert_eq!(
        check(list(), vec![("origin", "http://A.test")]).await.0,
        StatusCode::UPGRADE_REQUIRED
    );
    assert_eq!(
        check(list(), vec![("origin", "http://b.test")]).await.0,
        StatusCode::FORBIDDEN
    );
    let pred = || OriginPolicy::predicate(|o| o.ends_with(".ok"));
    assert_eq!(
        check(pred(), vec![("origin", "http://x.ok")]).await.0,
        StatusCode::UPGRADE_REQUIRED
    );
    assert_eq!(
        check(pred(), vec![("origin", "http://x.no")]).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn the_wamp_subprotocol_is_required() {
    for offered in [None, Some("wamp.3.json"), Some("soap, chat")] {
        let mut h = vec![];
        if let Some(o) = offered {
            h.push(("sec-websocket-protocol", o));
        }
        let resp = app(WampLayer::new(WampRouter::new()))
            .oneshot(upgrade_request(&h))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{offered:?}");
        let body = body_text(resp).await;
        assert!(
            body.contains("supported subprotocols: wamp.2.json, wamp.2.msgpack, wamp.2.cbor, wamp"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_real_handshake_selects_wamp_case_insensitively_and_welcomes() {
    let addr = serve_layer(WampLayer::new(WampRouter::new()).server_ident("my-server/9")).await;
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("foo, WAMP"),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["sec-websocket-protocol"], "WAMP");
    use futures_util::StreamExt;
    let first = ws.next().await.unwrap().unwrap().into_text().unwrap();
    let welcome: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(welcome[0], 0);
    assert_eq!(welcome[2], 1);
    assert_eq!(welcome[3], "my-server/9");
    assert_eq!(welcome[1].as_str().unwrap().len(), 16);
}

#[tokio::test]
async fn default_ident_and_unique_session_ids_and_on_open() {
    let opened = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
    let log = opened.clone();
    let router = WampRouter::new().on_open(move |s| log.lock().unwrap().push(s.id().to_string()));
    let addr = serve_router(router).await;
    let a = connect(addr).await;
    let b = connect(addr).await;
    assert_eq!(
        a.welcome,
        json!([
            0,
            a.session_id,
            1,
            concat!("tower-wamp/", env!("CARGO_PKG_VERSION"))
        ])
    );
    assert_ne!(a.session_id, b.session_id);
    assert_eq!(
        *opened.lock().unwrap(),
        vec![a.session_id.clone(), b.session_id.clone()]
    );
}
