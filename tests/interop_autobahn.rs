//! Interop: the independent autobahn 0.8.15 WAMP v1 client (Python 2.7) uses the demo.
//!
//! The test sets up its own virtualenv (`.venv-wamp1`, about 10 s, once) from the Python
//! 2.7 that pyenv provides. On a machine without Python 2.7 it is skipped with a message,
//! except on CI (`CI` set), where a missing peer fails the run.

#[path = "../examples/demo/app.rs"]
#[allow(dead_code)]
mod app;
mod common;

use common::peers;
use serde_json::json;

/// Runs a client script against `addr` and parses the JSON object it prints last.
async fn run_script(
    py: &std::path::Path,
    script: &str,
    addr: std::net::SocketAddr,
) -> serde_json::Value {
    peers::run_script(py, script, &[format!("ws://{addr}/ws")]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_cra_client_authenticates_with_the_demo() {
    let Some(py) = peers::autobahn08().await else {
        return;
    };
    let addr = common::serve_layer(app::layer_for(app::auth_router())).await;
    let got = run_script(&py, "autobahn_cra_client.py", addr).await;
    // The client reports errors as (uri, desc, details); details is None when absent.
    let unauthorized = json!([
        "http://api.wamp.ws/error#unauthorized",
        "unauthorized",
        null
    ]);
    // A call before authentication is refused.
    assert_eq!(got["before"]["add"], unauthorized);
    // Plain secret and salted secret (the client derives the key from authextra).
    for who in ["plain", "salted"] {
        assert_eq!(got[who]["add"], 42, "{who}: {}", got[who]);
        assert_eq!(
            got[who]["permissions"]["rpc"][app::rpc_url("add")],
            true,
            "{who}"
        );
    }
    // Anonymous: may echo, may not add.
    assert_eq!(got["anonymous"]["echo"], "hi");
    assert_eq!(got["anonymous"]["add"], unauthorized);
    assert_eq!(
        got["anonymous"]["permissions"]["rpc"],
        json!({app::rpc_url("echo"): true})
    );
    // A wrong secret is refused and grants nothing.
    assert_eq!(
        got["wrong"]["auth_error"][0],
        "http://api.wamp.ws/error#invalid-signature"
    );
    assert_eq!(got["wrong"]["add"], unauthorized);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_python_client_uses_the_demo() {
    let Some(py) = peers::autobahn08().await else {
        return;
    };
    let router = app::router();
    let wamp = router.handle();
    let addr = common::serve_layer(app::layer_for(router)).await;
    let got = run_script(&py, "autobahn_client.py", addr).await;

    let sid = got["session_id"].as_str().unwrap();
    assert_eq!(sid.len(), 16);
    assert_eq!(got["add"], 122);
    assert_eq!(got["add_float"], 3.5);
    let add_error = got["add_error"].as_array().unwrap();
    assert_eq!(add_error[0], "http://api.wamp.ws/error#invalid-argument");
    assert!(
        add_error[1].as_str().unwrap().contains("abc"),
        "{add_error:?}"
    );
    assert_eq!(got["echo"], json!({"k": [1, "ü"]}));
    assert_eq!(got["notfound"][0], "http://api.wamp.ws/error#notfound");
    assert_eq!(got["notfound"][1], "not found error");
    // The chat broker stamped the sender; the prefix topic passed through; the
    // subscribe to pub-only was refused so its event never arrived.
    assert_eq!(
        got["events"],
        json!([
            ["http://clj-wamp-example/event#chat", {"from": sid, "message": "hello from autobahn"}],
            ["http://clj-wamp-example/event#prefix-x", {"n": 1}],
        ])
    );
    // The client has gone; nothing of it remains.
    for _ in 0..200 {
        if wamp.sessions().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(wamp.sessions().is_empty());
    assert_eq!(wamp.topic_count(), 0);
}
