//! Interop: the independent autobahn-python 26 WAMP v2 client (asyncio) uses the demo with
//! each serializer, anonymously and with WAMP-CRA, beside a WAMP v1 client.
//!
//! The test sets up its own virtualenv (`.venv-wamp2`, about 30 s, once) with the
//! machine's `python3`. Without it the test is skipped with a message, except on CI (`CI`
//! set), where a missing peer fails the run.

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

/// The venv's python with autobahn 26, created if needed.
fn autobahn26() -> Result<PathBuf, String> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-wamp2");
    let py = venv.join("bin/python");
    let ready = |py: &Path| {
        run(Command::new(py).args([
            "-c",
            "import autobahn, msgpack, cbor2; assert autobahn.__version__.startswith('26.')",
        ]))
    };
    if py.exists() && ready(&py) {
        return Ok(py);
    }
    let steps: [(&Path, &[&str]); 2] = [
        (
            Path::new("python3"),
            &["-m", "venv", venv.to_str().unwrap()],
        ),
        (
            &venv.join("bin/pip"),
            &[
                "install",
                "-q",
                "autobahn[asyncio,serialization]==26.10.2",
                "numpy<2",
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
        Err("autobahn 26 did not import after install".into())
    }
}

async fn peer() -> Option<PathBuf> {
    static SETUP: tokio::sync::OnceCell<Result<PathBuf, String>> =
        tokio::sync::OnceCell::const_new();
    let setup = SETUP
        .get_or_init(|| async { tokio::task::spawn_blocking(autobahn26).await.unwrap() })
        .await;
    match setup {
        Ok(py) => Some(py.clone()),
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED autobahn 26 interop: {why}");
            None
        }
        Err(why) => panic!("autobahn 26 interop cannot run on CI: {why}"),
    }
}

async fn client(py: &Path, addr: std::net::SocketAddr, serializer: &str, mode: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/autobahn26_client.py");
    let run = tokio::process::Command::new(py)
        .arg(script)
        .arg(format!("ws://{addr}/ws"))
        .args([serializer, mode])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("the client finished within 60 s")
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
async fn autobahn26_uses_the_demo_with_every_serializer_beside_a_v1_client() {
    let Some(py) = peer().await else { return };
    let addr = common::serve_layer(app::layer_for(app::router())).await;
    // A WAMP v1 client in the same chat room.
    let mut v1 = common::connect(addr).await;
    v1.subscribe(&app::evt_url("chat")).await;
    for serializer in ["json", "msgpack", "cbor"] {
        let got = client(&py, addr, serializer, "anonymous").await;
        assert_eq!(got.get("exception"), None, "{serializer}: {got}");
        assert_eq!(got["authrole"], "anonymous", "{serializer}");
        // v1's handlers under their v2 names.
        assert_eq!(got["add"], 42, "{serializer}");
        assert_eq!(got["echo"], json!({"k": [1, "ü"]}), "{serializer}");
        assert_eq!(
            got["echo_binary"],
            json!([0, 1, 254, 255]),
            "{serializer}: binary survives"
        );
        assert_eq!(
            got["add_error"][0], "wamp.error.invalid_argument",
            "{serializer}"
        );
        assert_eq!(
            got["notfound"], "wamp.error.no_such_procedure",
            "{serializer}"
        );
        // The chat broker stamped the v2 publication, for the v2 and the v1 subscriber.
        let stamped =
            json!({"from": got["session"].to_string(), "message": "hello from autobahn 26"});
        assert_eq!(got["published"], true, "{serializer}");
        assert_eq!(got["chat"], json!([[stamped], {}]), "{serializer}");
        assert_eq!(
            v1.recv().await,
            json!([8, app::evt_url("chat"), stamped]),
            "{serializer}"
        );
        // args, kwargs and binary through a topic of its own.
        assert_eq!(
            got["other"],
            json!([[[0, 255], 2], {"k": "v"}]),
            "{serializer}"
        );
        assert_eq!(got["leave"], "wamp.close.goodbye_and_out");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn26_authenticates_with_wampcra_on_the_demo() {
    let Some(py) = peer().await else { return };
    let addr = common::serve_layer(app::layer_for(app::auth_router())).await;
    for serializer in ["json", "msgpack", "cbor"] {
        for (user, method) in [("ada", "plain"), ("carol", "salted")] {
            let got = client(&py, addr, serializer, &format!("cra:{user}:secret")).await;
            assert_eq!(got.get("exception"), None, "{serializer} {method}: {got}");
            assert_eq!(got["authid"], user, "{serializer} {method}");
            assert_eq!(got["authmethod"], "wampcra");
            assert_eq!(got["add"], 42, "{serializer} {method}");
        }
        let wrong = client(&py, addr, serializer, "cra:ada:wrong").await;
        assert_eq!(
            wrong["leave"], "wamp.error.authentication_denied",
            "{serializer}: {wrong}"
        );
        assert_eq!(wrong.get("add"), None);
    }
    // Anonymous guests get the guests' permissions: no add.
    let guest = client(&py, addr, "json", "anonymous").await;
    assert_eq!(guest["authrole"], "anonymous");
    assert!(
        guest["exception"]
            .as_str()
            .is_some_and(|e| e.contains("ApplicationError")),
        "{guest}"
    );
}

/// The Node packages of `tests/e2e` (AutobahnJS 26.3.1, wampy 8.0.2), installed if needed.
async fn node_clients() -> Result<PathBuf, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
    let node = tokio::process::Command::new("node")
        .arg("--version")
        .output()
        .await;
    if !node.is_ok_and(|o| o.status.success()) {
        return Err("node is not installed".into());
    }
    if !dir.join("node_modules/autobahn").exists() || !dir.join("node_modules/wampy").exists() {
        let ok = tokio::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&dir)
            .status()
            .await
            .is_ok_and(|s| s.success());
        if !ok {
            return Err("`npm install` in tests/e2e failed".into());
        }
    }
    Ok(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahnjs_and_wampy_use_the_demo_with_every_serializer() {
    let dir = match node_clients().await {
        Ok(dir) => dir,
        Err(why) if std::env::var_os("CI").is_none() => {
            return eprintln!("SKIPPED AutobahnJS/wampy interop: {why}");
        }
        Err(why) => panic!("AutobahnJS/wampy interop cannot run on CI: {why}"),
    };
    let addr = common::serve_layer(app::layer_for(app::router())).await;
    let run = tokio::process::Command::new("node")
        .arg(dir.join("v2_interop.mjs"))
        .arg(format!("ws://{addr}/ws"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("the clients finished within 60 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let got: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    for serializer in ["json", "msgpack", "cbor"] {
        let js = &got["autobahnjs"][serializer];
        assert_eq!(js.get("failed"), None, "AutobahnJS {serializer}: {js}");
        assert_eq!(js["session"], true);
        assert_eq!(js["add"], 42, "AutobahnJS {serializer}");
        assert_eq!(
            js["echo"],
            json!({"k": [1, "ü"]}),
            "AutobahnJS {serializer}"
        );
        assert_eq!(js["add_error"], "wamp.error.invalid_argument");
        assert_eq!(js["notfound"], "wamp.error.no_such_procedure");
        // Its own procedure, registered and called through the router, kwargs passed through.
        assert_eq!(
            js["mul"],
            json!([[42], {"unit": "m"}]),
            "AutobahnJS {serializer}"
        );
        assert_eq!(js["chat"][0][0]["message"], "hello from AutobahnJS");
        let wampy = &got["wampy"][serializer];
        assert_eq!(wampy.get("failed"), None, "wampy {serializer}: {wampy}");
        assert_eq!(wampy["add"], json!([42]), "wampy {serializer}");
        // wampy subscribes with {match: undefined}: read as absent, in every serializer.
        assert_eq!(
            wampy["chat"][0][0]["message"], "hello from wampy",
            "wampy {serializer}"
        );
    }
}
