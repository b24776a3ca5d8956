//! Cross-version interop: the WAMP v1 client autobahn 0.8.15 and the WAMP v2 client
//! autobahn-python 26 (each serializer) on the demo at once. The v1 client calls the
//! procedures the v2 client registered (results, errors with args and kwargs), both
//! call the router's handlers, and each hears the other's publications.
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

/// Starts `autobahn26_peer.py`, waits for its "ready", then runs the v1 peer; returns what
/// the v1 and the v2 client saw.
async fn cross(
    py2: &Path,
    py3: &Path,
    addr: std::net::SocketAddr,
    serializer: &str,
) -> (Value, Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    let mut v2 = tokio::process::Command::new(py3)
        .arg(dir.join("autobahn26_peer.py"))
        .arg(format!("ws://{addr}/ws"))
        .arg(serializer)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(v2.stdout.take().unwrap());
    let mut line = String::new();
    let ready = tokio::time::timeout(Duration::from_secs(30), out.read_line(&mut line)).await;
    assert!(
        matches!(ready, Ok(Ok(_))) && line.trim() == "ready",
        "the v2 peer is ready: {line:?}"
    );
    let v1 = peers::run_script(
        py2,
        "autobahn_v1_peer.py",
        &[format!("ws://{addr}/ws"), "py".into()],
    )
    .await;
    let mut rest = Vec::new();
    let mut err = Vec::new();
    let finished = async {
        out.read_to_end(&mut rest).await.unwrap();
        v2.stderr
            .take()
            .unwrap()
            .read_to_end(&mut err)
            .await
            .unwrap();
        v2.wait().await.unwrap()
    };
    tokio::time::timeout(Duration::from_secs(30), finished)
        .await
        .expect("the v2 peer finished");
    (v1, peers::last_json("autobahn26_peer.py", &rest, &err))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn08_and_autobahn26_work_together_on_the_demo() {
    let (Some(py2), Some(py3)) = (peers::autobahn08().await, peers::autobahn26().await) else {
        return;
    };
    let addr = common::serve_layer(app::layer_for(app::router())).await;
    for serializer in ["json", "msgpack", "cbor"] {
        let (v1, v2) = cross(&py2, &py3, addr, serializer).await;
        assert_eq!(v2.get("exception"), None, "{serializer}: {v2}");
        // v1 → a v2 callee: args as given, no kwargs; the result is the one value.
        assert_eq!(v1["mul"], 42, "{serializer}: {v1}");
        assert_eq!(
            v2["invocations"],
            json!([["mul", [6, 7], {}], ["fail", ["x"], {}]]),
            "{serializer}"
        );
        // The v2 callee's error, with args and kwargs, as a v1 CALLERROR: its URI, the
        // first arg as the description, args and kwargs as the details.
        assert_eq!(
            v1["fail"],
            json!([
                "com.example.py.failed",
                "no good",
                {"args": ["no good", 7], "kwargs": {"reason": "because"}}
            ]),
            "{serializer}"
        );
        // A result with args and kwargs, as one v1 value.
        assert_eq!(
            v1["both"],
            json!({"args": [1, 2], "kwargs": {"k": 3}}),
            "{serializer}"
        );
        assert_eq!(v1["add"], 3);
        // v1 → v2 through the chat broker (stamped with the v1 publisher's session).
        let sid = v1["session_id"].as_str().unwrap();
        assert_eq!(
            v2["chat"],
            json!([[{"from": sid, "message": "hello v2 from autobahn 0.8"}], {}]),
            "{serializer}"
        );
        // v2 → v1: the chat answer, then args + kwargs (binary as "\0" + base64), then
        // an empty publication as null.
        let v2sid = v2["session"].to_string();
        assert_eq!(
            v1["events"],
            json!([
                [app::evt_url("chat"), {"from": sid, "message": "hello v2 from autobahn 0.8"}],
                [app::evt_url("chat"), {"from": v2sid, "message": "hello v1 from autobahn 26"}],
                ["com.example.py.news", {"args": ["\u{0}AP8=", 2], "kwargs": {"k": "v"}}],
                ["com.example.py.news", null],
            ]),
            "{serializer}"
        );
        assert_eq!(v2["leave"], "wamp.close.goodbye_and_out", "{serializer}");
    }
}
