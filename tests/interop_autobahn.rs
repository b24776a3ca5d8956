//! Interop: the independent autobahn 0.8.15 WAMP v1 client (Python 2.7) uses the demo.
//!
//! The test sets up its own virtualenv (`.venv-wamp1`, about 10 s, once) from the Python
//! 2.7 that pyenv provides. On a machine without Python 2.7 it is skipped with a message,
//! except on CI (`CI` set), where a missing peer fails the run.

#[path = "../examples/demo/app.rs"]
#[allow(dead_code)]
mod app;
mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{Value, json};

fn run(cmd: &mut Command) -> bool {
    cmd.status().map(|s| s.success()).unwrap_or(false)
}

fn python27() -> Option<PathBuf> {
    let root = Command::new("pyenv")
        .arg("root")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pyenv")))?;
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root.join("versions"))
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("2.7"))
        .map(|e| e.path().join("bin/python"))
        .filter(|p| p.exists())
        .collect();
    versions.sort();
    versions.pop()
}

/// The venv's python with autobahn 0.8.15, created if needed.
fn autobahn_python() -> Result<PathBuf, String> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-wamp1");
    let py = venv.join("bin/python");
    let ready =
        |py: &Path| run(Command::new(py).args(["-c", "import autobahn.wamp1.protocol, twisted"]));
    if py.exists() && ready(&py) {
        return Ok(py);
    }
    let py27 = python27().ok_or("Python 2.7 not found (pyenv versions 2.7.x)")?;
    let steps: [(&Path, &[&str]); 3] = [
        (
            &py27,
            &["-m", "pip", "install", "-q", "virtualenv==20.15.1"],
        ),
        (&py27, &["-m", "virtualenv", "-q", venv.to_str().unwrap()]),
        (
            &venv.join("bin/pip"),
            &[
                "install",
                "-q",
                "autobahn[twisted]==0.8.15",
                "Twisted==20.3.0",
            ],
        ),
    ];
    for (prog, args) in steps {
        if !run(Command::new(prog).args(args)) {
            return Err(format!(
                "setup step failed: {} {}",
                prog.display(),
                args.join(" ")
            ));
        }
    }
    if ready(&py) {
        Ok(py)
    } else {
        Err("autobahn did not import after install".into())
    }
}

/// The peer's python, `None` (with a message) where it cannot run outside CI.
async fn peer() -> Option<PathBuf> {
    static SETUP: tokio::sync::OnceCell<Result<PathBuf, String>> =
        tokio::sync::OnceCell::const_new();
    let setup = SETUP
        .get_or_init(|| async { tokio::task::spawn_blocking(autobahn_python).await.unwrap() })
        .await;
    match setup {
        Ok(py) => Some(py.clone()),
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED autobahn interop: {why}");
            None
        }
        Err(why) => panic!("autobahn interop cannot run on CI: {why}"),
    }
}

/// Runs a client script against `addr` and parses the JSON object it prints last.
async fn run_script(py: &Path, script: &str, addr: std::net::SocketAddr) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(script);
    let out = tokio::process::Command::new(py)
        .arg(script)
        .arg(format!("ws://{addr}/ws"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output; stderr:\n{stderr}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_cra_client_authenticates_with_the_demo() {
    let Some(py) = peer().await else { return };
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
    let Some(py) = peer().await else { return };
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
