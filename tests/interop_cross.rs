//! Cross-version interop: the WAMP v1 client autobahn 0.8.15 beside a WAMP v2 client
//! (autobahn-python 26, or AutobahnJS 26 under Node) on the demo, in each serializer. The
//! v1 client calls the procedures the v2 client registered (results, errors with args and
//! kwargs), both call the router's handlers, and each hears the other's publications.
//!
//! Peers as in `interop_autobahn.rs` and `interop_v2.rs` (`common::peers`).

#[path = "../examples/demo/app.rs"]
#[allow(dead_code)]
mod app;
mod common;

use std::{path::Path, process::Stdio, time::Duration};

use common::peers;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// Starts the v2 peer (`program script url serializer`), waits for its "ready", then runs
/// the v1 peer with namespace `ns`; returns what the v1 and the v2 client saw.
async fn cross(
    v1_python: &Path,
    v2: (&Path, &Path),
    ns: &str,
    addr: std::net::SocketAddr,
    serializer: &str,
) -> (Value, Value) {
    let url = format!("ws://{addr}/ws");
    let mut child = tokio::process::Command::new(v2.0)
        .arg(v2.1)
        .args([&url, serializer])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let ready = tokio::time::timeout(Duration::from_secs(30), out.read_line(&mut line)).await;
    assert!(
        matches!(ready, Ok(Ok(_))) && line.trim() == "ready",
        "the v2 peer is ready: {line:?}"
    );
    let v1 = peers::run_script(v1_python, "autobahn_v1_peer.py", &[url, ns.into()]).await;
    let mut rest = Vec::new();
    let mut err = Vec::new();
    let finished = async {
        out.read_to_end(&mut rest).await.unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_end(&mut err)
            .await
            .unwrap();
        child.wait().await.unwrap()
    };
    tokio::time::timeout(Duration::from_secs(30), finished)
        .await
        .expect("the v2 peer finished");
    (v1, peers::last_json("v2 peer", &rest, &err))
}

/// What the v1 and the v2 client of one run must have seen.
fn check(ns: &str, serializer: &str, v1: &Value, v2: &Value) {
    let at = format!("{ns} {serializer}");
    assert_eq!(v2.get("exception"), None, "{at}: {v2}");
    // v1 → a v2 callee: args as given, no kwargs; the result is the one value.
    assert_eq!(v1["mul"], 42, "{at}: {v1}");
    assert_eq!(
        v2["invocations"],
        json!([["mul", [6, 7], {}], ["fail", ["x"], {}]]),
        "{at}"
    );
    // The v2 callee's error, with args and kwargs, as a v1 CALLERROR: its URI, the first
    // arg as the description, args and kwargs as the details.
    assert_eq!(
        v1["fail"],
        json!([
            format!("com.example.{ns}.failed"),
            "no good",
            {"args": ["no good", 7], "kwargs": {"reason": "because"}}
        ]),
        "{at}"
    );
    // A result with args and kwargs, as one v1 value.
    assert_eq!(
        v1["both"],
        json!({"args": [1, 2], "kwargs": {"k": 3}}),
        "{at}"
    );
    assert_eq!(v1["add"], 3, "{at}");
    // v1 → v2 through the chat broker (stamped with the v1 publisher's session).
    let sid = v1["session_id"].as_str().unwrap();
    assert_eq!(
        v2["chat"],
        json!([[{"from": sid, "message": "hello v2 from autobahn 0.8"}], {}]),
        "{at}"
    );
    // v2 → v1: the chat answer, then args + kwargs (binary as "\0" + base64), then an
    // empty publication as null.
    let v2sid = v2["session"].to_string();
    let news = format!("com.example.{ns}.news");
    assert_eq!(
        v1["events"],
        json!([
            [app::evt_url("chat"), {"from": sid, "message": "hello v2 from autobahn 0.8"}],
            [app::evt_url("chat"), {"from": v2sid, "message": "hello v1 from autobahn 26"}],
            [news, {"args": ["\u{0}AP8=", 2], "kwargs": {"k": "v"}}],
            [news, null],
        ]),
        "{at}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn08_and_autobahn_python_26_work_together_on_the_demo() {
    let (Some(py2), Some(py3)) = (peers::autobahn08().await, peers::autobahn26().await) else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/autobahn26_peer.py");
    let addr = common::serve_layer(app::layer_for(app::router())).await;
    for serializer in ["json", "msgpack", "cbor"] {
        let (v1, v2) = cross(&py2, (&py3, &script), "py", addr, serializer).await;
        check("py", serializer, &v1, &v2);
        assert_eq!(v2["leave"], "wamp.close.goodbye_and_out", "{serializer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn08_and_autobahnjs_work_together_on_the_demo() {
    let Some(py2) = peers::autobahn08().await else {
        return;
    };
    let dir = match peers::node_clients().await {
        Ok(dir) => dir,
        Err(why) if std::env::var_os("CI").is_none() => {
            return eprintln!("SKIPPED AutobahnJS cross-version interop: {why}");
        }
        Err(why) => panic!("AutobahnJS interop cannot run on CI: {why}"),
    };
    let (node, script) = (Path::new("node"), dir.join("v2_peer.mjs"));
    let addr = common::serve_layer(app::layer_for(app::router())).await;
    for serializer in ["json", "msgpack", "cbor"] {
        let (v1, v2) = cross(&py2, (node, &script), "js", addr, serializer).await;
        check("js", serializer, &v1, &v2);
    }
}
