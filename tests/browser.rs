//! The demo in real headless Chromium (Playwright): the WAMP v1 page and the WAMP v2 page
//! on AutobahnJS's browser build, and interop with the npm `wamp1` client. Node packages
//! come from `tests/e2e/package-lock.json` (`npm install`, run here when missing); Chromium
//! is Debian's `chromium`. Outside CI a missing piece skips these
//! tests with a message; on CI (`CI` set) it fails them.

#[path = "../examples/demo/app.rs"]
#[allow(dead_code)]
mod app;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::Command,
    task::JoinHandle,
};

fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e")
}

/// `Ok(())` when node, the packages and Chromium are there; `Err(why)` otherwise.
async fn prerequisites(chromium: bool) -> Result<(), String> {
    static NPM: tokio::sync::OnceCell<Result<(), String>> = tokio::sync::OnceCell::const_new();
    NPM.get_or_init(|| async {
        let node = Command::new("node").arg("--version").output().await;
        if !node.is_ok_and(|o| o.status.success()) {
            return Err("node is not installed".to_owned());
        }
        let installed = ["playwright-core", "autobahn-browser"]
            .iter()
            .all(|p| e2e_dir().join("node_modules").join(p).exists());
        if !installed {
            let ok = Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--silent"])
                .current_dir(e2e_dir())
                .status()
                .await
                .is_ok_and(|s| s.success());
            if !ok {
                return Err("`npm install` in tests/e2e failed".to_owned());
            }
        }
        Ok(())
    })
    .await
    .clone()?;
    if chromium
        && !Path::new("/usr/bin/chromium").exists()
        && std::env::var_os("CHROMIUM").is_none()
    {
        return Err("Chromium is not installed (apt-get install chromium)".to_owned());
    }
    Ok(())
}

fn skip_or_fail(why: String) {
    if std::env::var_os("CI").is_some() {
        panic!("browser tests cannot run on CI: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// AutobahnJS's browser build from the test's own packages.
fn autobahn_js() -> PathBuf {
    e2e_dir().join("node_modules/autobahn-browser/autobahn.min.js")
}

/// Serves the demo site on `addr` (port 0: any free port), AutobahnJS from `autobahn_js`;
/// returns the address too.
async fn serve_with(
    addr: SocketAddr,
    auth: bool,
    autobahn_js: PathBuf,
) -> (JoinHandle<()>, tower_wamp::Wamp, SocketAddr) {
    let (site, wamp) = app::site_with(auth, autobahn_js);
    // Rebinding a port that was just released (the restart) may need a moment.
    let mut tries = 0;
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if tries < 100 => {
                tries += 1;
                eprintln!("bind {addr}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot bind {addr}: {e}"),
        }
    };
    let bound = listener.local_addr().unwrap();
    let task = tokio::spawn(async move { axum::serve(listener, site).await.unwrap() });
    (task, wamp, bound)
}

async fn serve_at(addr: SocketAddr, auth: bool) -> (JoinHandle<()>, tower_wamp::Wamp, SocketAddr) {
    serve_with(addr, auth, autobahn_js()).await
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_works_in_chromium() {
    if let Err(why) = prerequisites(true).await {
        return skip_or_fail(why);
    }
    let (mut plain_server, mut plain_wamp, plain) = serve_at(any_port(), false).await;
    let (_auth_server, _, auth) = serve_at(any_port(), true).await;
    let missing = e2e_dir().join("no-such-dir/autobahn.min.js");
    let (_bare_server, _, bare) = serve_with(any_port(), false, missing).await;
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("screenshots");
    let mut node = Command::new("node")
        .arg(e2e_dir().join("demo.mjs"))
        .arg(format!("http://127.0.0.1:{}/", plain.port()))
        .arg(format!("http://localhost:{}/", auth.port()))
        .arg(&shots)
        .arg(format!("http://127.0.0.1:{}/", bare.port()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = node.stdin.take().unwrap();
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut findings = None;
    let run = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line == "restart-server" {
                // Stop everything of the first server, then serve again on the same port.
                assert!(plain_wamp.shutdown(Duration::from_secs(5)).await);
                plain_server.abort();
                let _ = (&mut plain_server).await;
                (plain_server, plain_wamp, _) = serve_at(plain, false).await;
                stdin.write_all(b"restarted\n").await.unwrap();
            } else if line.starts_with('{') {
                findings = Some(serde_json::from_str::<Value>(&line).unwrap());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser test finished in time");
    let status = node.wait().await.unwrap();
    let mut stderr = String::new();
    use tokio::io::AsyncReadExt;
    node.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(status.success(), "the browser test failed:\n{stderr}");
    let f = findings.expect("findings printed");
    assert_eq!(f["chat"], true);
    assert_eq!(f["add"], "api:add → 6.5");
    assert!(
        f["add_error"]
            .as_str()
            .unwrap()
            .contains("http://api.wamp.ws/error#invalid-argument")
    );
    assert_eq!(f["reconnected"], true);
    assert_eq!(f["guest_refused"], true);
    assert!(
        f["login"]
            .as_str()
            .unwrap()
            .starts_with("logged in as carol"),
        "{f}"
    );
    check_v2(&f);
    for shot in [
        "demo-chat-rpc.png",
        "demo-guest-refused.png",
        "demo-auth.png",
        "demo-v2.png",
        "demo-v2-guest.png",
    ] {
        assert!(shots.join(shot).exists(), "{shot} written");
    }
    plain_server.abort();
}

/// The WAMP v2 page's findings (AutobahnJS in Chromium, json, msgpack and cbor).
fn check_v2(f: &Value) {
    assert_eq!(f["page_errors"], json!([]), "no script errors on the pages");
    for (serializer, name) in [("json", "Cyd"), ("msgpack", "Dan"), ("cbor", "Eve")] {
        assert_eq!(
            f["v2_protocols"][serializer],
            json!([
                format!("WAMP v2 (AutobahnJS, {serializer})"),
                format!("wamp.2.{serializer}")
            ])
        );
        // Each v2 page's line reached the v1 page and the other v2 pages.
        let line = format!("{name}: {name} over {serializer}");
        let v1_lines = f["v1_page_lines"].as_array().unwrap();
        assert!(v1_lines.contains(&json!(line)), "{line} on v1: {f}");
        if serializer != "msgpack" {
            let v2_lines = f["v2_page_lines"].as_array().unwrap();
            assert!(v2_lines.contains(&json!(line)), "{line} on v2: {f}");
        }
        let rpc = &f["v2_rpc"][serializer];
        assert_eq!(rpc["add"], "com.example.add → 6.5");
        let error = rpc["add_error"].as_str().unwrap();
        assert!(
            error.starts_with("com.example.add → error wamp.error.invalid_argument: "),
            "{error}"
        );
        assert_eq!(rpc["echo"], "com.example.echo → \"ünïcødé ✓\"");
        assert_eq!(f["v2_reconnected"][serializer], true);
    }
    // The v1 page's line reached the v2 pages.
    assert!(
        f["v2_page_lines"]
            .as_array()
            .unwrap()
            .contains(&json!("Ada: Ada to everyone"))
    );
    assert_eq!(
        f["v2_guest_publish"],
        "Guest2: may I speak on v2?  (not delivered: wamp.error.not_authorized: not authorized to publish to this topic)"
    );
    let add = f["v2_guest_add"].as_str().unwrap();
    assert!(
        add.starts_with("com.example.add → error wamp.error.not_authorized"),
        "{add}"
    );
    let refused = f["v2_login_refused"].as_str().unwrap();
    assert!(
        refused.starts_with("login refused: ")
            && refused.contains("(wamp.error.authentication_denied)"),
        "{refused}"
    );
    assert_eq!(
        f["v2_login"],
        "logged in as carol: authid carol, authrole user"
    );
    assert_eq!(f["v2_auth_chat"], true);
    // Without AutobahnJS: a readable 404 and notice; the v1 page still works.
    let notice = f["no_autobahn_notice"].as_str().unwrap();
    assert!(
        notice.contains("npm install --prefix examples/demo"),
        "{notice}"
    );
    assert_eq!(f["no_autobahn_http"][0], 404);
    let body = f["no_autobahn_http"][1].as_str().unwrap();
    assert!(
        body.contains("npm install --prefix examples/demo"),
        "{body}"
    );
    assert_eq!(f["no_autobahn_v1"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_npm_wamp1_client_uses_the_demo() {
    if let Err(why) = prerequisites(false).await {
        return skip_or_fail(why);
    }
    let (_server, wamp, addr) = serve_at(any_port(), false).await;
    let out = Command::new("node")
        .arg(e2e_dir().join("wamp1_interop.mjs"))
        .arg(format!("ws://{addr}/ws"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let session = got["session"].as_str().unwrap();
    assert_eq!(session.len(), 16);
    assert_eq!(got["add"], json!({"result": 122}));
    assert_eq!(got["echo"], json!({"result": {"nested": [1, "two"]}}));
    assert_eq!(
        got["bad"]["error"]["uri"],
        "http://api.wamp.ws/error#invalid-argument"
    );
    assert_eq!(
        got["events"],
        json!([
            ["prefix-news", {"n": 1}],
            ["chat", {"from": session, "message": "hello from wamp1"}],
        ])
    );
    let _ = wamp;
}
