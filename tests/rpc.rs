//! RPC over a real WebSocket: results, errors, hooks, extractors, panics, concurrency.
mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Extension, Router, extract::Request, middleware::Next, response::Response};
use common::*;
use serde_json::{Value, json};
use tower_wamp::{
    Args, CallId, FromRef, Procedure, RpcError, Session, State, WampLayer, WampRouter,
};

const API: &str = "http://example.com/api#";

fn api(name: &str) -> String {
    format!("{API}{name}")
}

async fn add(Args((a, b)): Args<(i64, i64)>) -> i64 {
    a + b
}

fn base() -> WampRouter {
    WampRouter::new()
        .rpc(&api("add"), add)
        .rpc(
            &api("echo"),
            |Args(all): Args<Vec<Value>>| async move { all },
        )
        .rpc(&api("nothing"), || async {})
        .rpc(&api("give-error"), || async {
            Err::<(), _>(
                RpcError::new("http://example.com/error#give-error", "Test error")
                    .with_details(json!("Test error description")),
            )
        })
        .rpc(&api("plain-error"), || async {
            Err::<(), _>(RpcError::new(
                "http://example.com/error#plain",
                "no details",
            ))
        })
        .rpc(&api("kill"), || async {
            Err::<(), _>(RpcError::generic().kill())
        })
        .rpc(&api("panic"), || async {
            if true {
                panic!("handler exploded");
            }
        })
        .rpc(
            &api("whoami"),
            |s: Session, Procedure(p): Procedure, CallId(c): CallId| async move {
                json!([s.id(), p, c])
            },
        )
        .rpc(&api("sleep"), |Args((ms,)): Args<(u64,)>| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ms
        })
}

#[tokio::test]
async fn results_and_plain_values() {
    let addr = serve_router(base()).await;
    let mut c = connect(addr).await;
    assert_eq!(
        c.call("1", &api("add"), &[json!(23), json!(99)]).await,
        json!([3, "1", 122])
    );
    assert_eq!(
        c.call("2", &api("echo"), &[json!({"k": [1, "ü"]}), json!(null)])
            .await,
        json!([3, "2", [{"k": [1, "ü"]}, null]])
    );
    assert_eq!(
        c.call("3", &api("nothing"), &[]).await,
        json!([3, "3", null])
    );
}

#[tokio::test]
async fn errors_have_four_or_five_elements() {
    let addr = serve_router(base()).await;
    let mut c = connect(addr).await;
    assert_eq!(
        c.call("e", &api("give-error"), &[]).await,
        json!([
            4,
            "e",
            "http://example.com/error#give-error",
            "Test error",
            "Test error description"
        ])
    );
    let plain = c.call("p", &api("plain-error"), &[]).await;
    assert_eq!(
        plain,
        json!([4, "p", "http://example.com/error#plain", "no details"])
    );
    assert_eq!(
        c.call("n", &api("not-there"), &[]).await,
        json!([
            4,
            "n",
            "http://api.wamp.ws/error#notfound",
            "not found error"
        ])
    );
}

#[tokio::test]
async fn bad_arguments_get_an_error_that_names_the_problem() {
    let addr = serve_router(base()).await;
    let mut c = connect(addr).await;
    let reply = c.call("x", &api("add"), &[json!(23), json!("abc")]).await;
    assert_eq!(reply[0], 4);
    assert_eq!(reply[2], "http://api.wamp.ws/error#invalid-argument");
    let desc = reply[3].as_str().unwrap();
    assert!(
        desc.contains("invalid type") && desc.contains("abc"),
        "{desc}"
    );
    let reply = c.call("y", &api("add"), &[json!(1)]).await;
    assert!(
        reply[3].as_str().unwrap().contains("invalid length"),
        "{reply}"
    );
    // The session goes on.
    assert_eq!(c.call("z", &api("add"), &[json!(1), json!(2)]).await[2], 3);
}

#[tokio::test]
async fn a_panicking_handler_gets_internal_error_and_harms_no_one() {
    let addr = serve_router(base()).await;
    let mut a = connect(addr).await;
    let mut b = connect(addr).await;
    let reply = a.call("p", &api("panic"), &[]).await;
    assert_eq!(
        reply,
        json!([
            4,
            "p",
            "http://api.wamp.ws/error#internal",
            "internal error",
            "handler exploded"
        ])
    );
    assert_eq!(a.call("1", &api("add"), &[json!(1), json!(1)]).await[2], 2);
    assert_eq!(b.call("2", &api("add"), &[json!(2), json!(2)]).await[2], 4);
}

#[tokio::test]
async fn a_killing_error_is_sent_then_the_connection_closes_with_1002() {
    let addr = serve_router(base()).await;
    let mut c = connect(addr).await;
    c.send(json!([2, "k", api("kill")])).await;
    assert_eq!(
        c.recv().await,
        json!([4, "k", "http://api.wamp.ws/error#generic", "generic error"])
    );
    assert_eq!(c.recv_close().await.0, 1002);
}

#[tokio::test]
async fn handlers_see_session_procedure_and_call_id() {
    let addr = serve_router(base()).await;
    let mut c = connect(addr).await;
    c.prefix("api", API).await;
    let reply = c.call("c-42", "api:whoami", &[]).await;
    assert_eq!(reply[2], json!([c.session_id, api("whoami"), "c-42"]));
}

#[tokio::test]
async fn a_slow_call_blocks_neither_the_session_nor_others() {
    let addr = serve_router(base()).await;
    let mut a = connect(addr).await;
    let mut b = connect(addr).await;
    a.send(json!([2, "slow", api("sleep"), 1500])).await;
    a.send(json!([2, "fast", api("sleep"), 0])).await;
    // Replies come as calls complete: the fast one overtakes the slow one.
    assert_eq!(a.recv().await, json!([3, "fast", 0]));
    assert_eq!(b.call("b", &api("add"), &[json!(1), json!(2)]).await[2], 3);
    assert_eq!(a.recv().await, json!([3, "slow", 1500]));
}

#[derive(Clone)]
struct AppState {
    greeting: String,
    db: Db,
}

#[derive(Clone)]
struct Db(Arc<Mutex<Vec<String>>>);

impl FromRef<AppState> for Db {
    fn from_ref(s: &AppState) -> Self {
        s.db.clone()
    }
}

#[tokio::test]
async fn state_is_shared_with_from_ref() {
    let db = Db(Arc::new(Mutex::new(vec![])));
    let router = WampRouter::<AppState>::new()
        .rpc(&api("greet"), |State(s): State<AppState>| async move {
            s.greeting
        })
        .rpc(
            &api("store"),
            |State(db): State<Db>, Args((v,)): Args<(String,)>| async move {
                db.0.lock().unwrap().push(v);
            },
        )
        .with_state(AppState {
            greeting: "hello".into(),
            db: db.clone(),
        });
    let addr = serve_router(router).await;
    let mut c = connect(addr).await;
    assert_eq!(c.call("1", &api("greet"), &[]).await[2], "hello");
    c.call("2", &api("store"), &[json!("kept")]).await;
    assert_eq!(*db.0.lock().unwrap(), vec!["kept".to_owned()]);
}

#[derive(Clone, Debug)]
struct User(String);

/// An upstream "auth" layer: turns a header into an identity extension, or refuses.
async fn auth_layer(mut req: Request, next: Next) -> Response {
    let Some(user) = req.headers().get("x-token").and_then(|t| t.to_str().ok()) else {
        return (axum::http::StatusCode::UNAUTHORIZED, "no token").into_response();
    };
    let user = User(format!("user-of-{user}"));
    req.extensions_mut().insert(user);
    next.run(req).await
}

use axum::response::IntoResponse;

#[tokio::test]
async fn an_upstream_tower_layer_hands_an_identity_to_handlers() {
    let router = WampRouter::new().rpc(
        &api("me"),
        |Extension(User(u)): Extension<User>, headers: axum::http::HeaderMap| async move {
            // The handshake's own headers are not kept for the session's life.
            let handshake = ["sec-websocket-key", "upgrade", "connection"]
                .iter()
                .any(|h| headers.contains_key(*h));
            json!([
                u,
                headers.get("x-token").map(|v| v.to_str().unwrap()),
                handshake
            ])
        },
    );
    let app = Router::new()
        .route_service("/ws", WampLayer::new(router).into_service())
        .layer(axum::middleware::from_fn(auth_layer))
        .layer(tower_http::trace::TraceLayer::new_for_http());
    let addr = serve(app).await;
    let mut c = connect_with(addr, &[("x-token", "abc")]).await;
    assert_eq!(
        c.call("1", &api("me"), &[]).await[2],
        json!(["user-of-abc", "abc", false])
    );

    // Without the token the upstream layer refuses the upgrade itself.
    let req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{addr}/ws"),
    )
    .unwrap();
    let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
}

#[tokio::test]
async fn before_hook_rewrites_or_denies_and_after_hooks_rewrite_or_suppress() {
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let router = base()
        .before_call(|mut call| async move {
            match call.args().first() {
                Some(Value::String(s)) if s == "deny" => Err(RpcError::unauthorized()),
                Some(Value::String(s)) if s == "double" => {
                    let n = call.args()[1].clone();
                    call.set_args(vec![n.clone(), n]);
                    Ok(call)
                }
                _ => Ok(call),
            }
        })
        .after_call_success(move |info, result| {
            log.lock()
                .unwrap()
                .push(format!("ok {} {}", info.procedure, result));
            if result == json!(["hide"]) {
                None
            } else if result == json!(5) {
                Some(json!(500))
            } else {
                Some(result)
            }
        })
        .after_call_error(|info, error| {
            if info.call_id == "silent" {
                None
            } else {
                Some(error)
            }
        });
    let addr = serve_router(router).await;
    let mut c = connect(addr).await;
    assert_eq!(
        c.call("d", &api("echo"), &[json!("deny")]).await,
        json!([
            4,
            "d",
            "http://api.wamp.ws/error#unauthorized",
            "unauthorized"
        ])
    );
    // Rewritten arguments reach the handler: echo sees [7, 7].
    assert_eq!(
        c.call("r", &api("echo"), &[json!("double"), json!(7)])
            .await[2],
        json!([7, 7])
    );
    // after_call_success rewrites 5 into 500 ...
    assert_eq!(
        c.call("5", &api("add"), &[json!(2), json!(3)]).await[2],
        500
    );
    // ... and suppresses "hide"; after_call_error suppresses call id "silent".
    c.send(json!([2, "h", api("echo"), "hide"])).await;
    c.send(json!([2, "silent", api("not-there")])).await;
    c.expect_silence().await;
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with(&format!("ok {}", api("add"))))
    );
}

#[tokio::test]
async fn without_procedures_every_call_is_not_found() {
    let addr = serve_router(WampRouter::new()).await;
    let mut c = connect(addr).await;
    for uri in ["http://api.wamp.ws/procedure#authreq", "http://x/y"] {
        assert_eq!(
            c.call("1", uri, &[]).await[2],
            "http://api.wamp.ws/error#notfound"
        );
    }
}
