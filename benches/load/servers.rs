//! The servers under test: tower-wamp and the axum ceiling run in this same binary
//! (re-executed with `--serve`), the peers from `benches/peers/`.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::serve::ListenerExt;
use axum::{
    Router,
    extract::{
        State,
        ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade},
    },
    routing::get,
};
use futures_util::SinkExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tower_wamp::{Args, OriginPolicy, Topic, WampLayer, WampRouter};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    TowerWamp,
    /// WAMP v2 peers (routers only: no server-side procedures).
    Crossbar,
    Xconn,
    Battler,
    /// The README's demo as users run it: its own `tracing` subscriber at `info`.
    Demo,
    TowerWampPatterns,
    Ceiling,
    WampIo,
    Autobahn,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::TowerWamp => "tower-wamp",
            Self::Demo => "tower-wamp demo (info log)",
            Self::Crossbar => "crossbar 26.10.1",
            Self::Xconn => "xconn 0.5.1",
            Self::Battler => "battler-wamp 0.6.1",
            Self::TowerWampPatterns => "tower-wamp (10k topics, 1k patterns)",
            Self::Ceiling => "axum ceiling",
            Self::WampIo => "wamp.io 0.0.4",
            Self::Autobahn => "autobahn 0.8.15",
        }
    }
}

impl Kind {
    /// A v2 router of another project (no v1, no server-side procedures).
    pub fn is_peer(self) -> bool {
        matches!(self, Self::Crossbar | Self::Xconn | Self::Battler)
    }
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub struct Server {
    pub kind: Kind,
    pub addr: SocketAddr,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first, so that a peer that runs children (crossbar) stops them too.
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(40));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's user + system CPU time, its child processes included (crossbar runs
    /// its router in a worker process).
    pub fn cpu(&self) -> Duration {
        tree_cpu(self.pid())
    }

    /// The server's resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }
}

pub fn proc_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name.
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    Duration::from_millis(ticks * 10)
}

/// CPU time of `pid` and every process descended from it.
pub fn tree_cpu(pid: u32) -> Duration {
    let mut parents = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|x| x.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.insert(p, ppid);
        }
    }
    let descends = |mut p: u32| {
        while p > 1 {
            if p == pid {
                return true;
            }
            p = parents.get(&p).copied().unwrap_or(0);
        }
        false
    };
    parents
        .keys()
        .filter(|p| descends(**p))
        .map(|p| proc_cpu(*p))
        .sum()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Why a peer cannot run, or `None` when it can.
pub fn unavailable(kind: Kind) -> Option<String> {
    match kind {
        Kind::WampIo => {
            let peers = root().join("benches/peers");
            if !peers.join("node_modules/wamp.io").exists() {
                let ok = Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund", "--silent"])
                    .current_dir(&peers)
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    return Some("`npm ci` in benches/peers failed".into());
                }
            }
            None
        }
        // The tests' setup: it checks that autobahn imports and installs it if not.
        Kind::Autobahn => crate::peers::setup_autobahn08().err(),
        Kind::Crossbar => venv("crossbar", "crossbar==26.10.1", "crossbar"),
        Kind::Xconn => venv("xconn", "xconn==0.5.1", "xconn"),
        Kind::Battler => {
            // Its own crate outside the workspace; the first release build takes minutes.
            if battler().exists() {
                return None;
            }
            eprintln!("building benches/peers/battler (once)");
            // Its own target dir, whatever CARGO_TARGET_DIR says, so the binary is where
            // `battler()` looks.
            let dir = root().join("benches/peers/battler");
            let ok = Command::new("cargo")
                .args(["build", "--release", "--locked", "-j2", "--target-dir"])
                .arg(dir.join("target"))
                .current_dir(&dir)
                .status()
                .is_ok_and(|s| s.success());
            (!(ok && battler().exists()))
                .then(|| "`cargo build --release` in benches/peers/battler failed".into())
        }
        _ => None,
    }
}

/// The python of `.venv-<name>`.
fn venv_python(name: &str) -> PathBuf {
    root().join(format!(".venv-{name}/bin/python"))
}

/// Creates `.venv-<name>` with `package` if `module` does not import yet; `Some(why)` on
/// failure.
fn venv(name: &str, package: &str, module: &str) -> Option<String> {
    let py = venv_python(name);
    let imports = |py: &PathBuf| {
        Command::new(py)
            .args(["-c", &format!("import {module}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if py.exists() && imports(&py) {
        return None;
    }
    eprintln!("installing {package} into .venv-{name} (once)");
    let dir = root().join(format!(".venv-{name}"));
    let ok = Command::new("python3")
        .args(["-m", "venv", dir.to_str().unwrap()])
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(dir.join("bin/pip"))
            .args(["install", "-q", package])
            .status()
            .is_ok_and(|s| s.success());
    (!(ok && imports(&py))).then(|| format!("could not install {package} into .venv-{name}"))
}

fn battler() -> PathBuf {
    root().join("benches/peers/battler/target/release/battler-peer")
}

fn autobahn_python() -> PathBuf {
    root().join(".venv-wamp1/bin/python")
}

pub fn spawn(kind: Kind, core: &str) -> Server {
    let port = free_port();
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", core]);
    match kind {
        Kind::TowerWamp | Kind::TowerWampPatterns | Kind::Ceiling | Kind::Demo => {
            cmd.arg(exe).arg("--serve").arg(match kind {
                Kind::TowerWamp => "tower-wamp",
                Kind::TowerWampPatterns => "tower-wamp-patterns",
                Kind::Demo => "demo",
                _ => "ceiling",
            });
        }
        Kind::WampIo => {
            cmd.arg("node")
                .arg(root().join("benches/peers/wampio_server.js"));
        }
        Kind::Autobahn => {
            cmd.arg(autobahn_python())
                .arg(root().join("benches/peers/autobahn_server.py"));
        }
        Kind::Crossbar => {
            cmd.arg(venv_python("crossbar"))
                .arg(root().join("benches/peers/crossbar_server.py"));
        }
        Kind::Xconn => {
            cmd.arg(venv_python("xconn"))
                .arg(root().join("benches/peers/xconn_server.py"));
        }
        Kind::Battler => {
            cmd.arg(battler());
        }
    }
    cmd.arg(port.to_string())
        .stdout(Stdio::piped())
        // The demo logs every session at info (formatted, then discarded here).
        .stderr(if kind == Kind::Demo {
            Stdio::null()
        } else {
            Stdio::inherit()
        });
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", kind.name()));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("ready") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{} did not start", kind.name()));
    Server {
        kind,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        child,
    }
}

/// Runs a server in this process (`--serve KIND PORT`), on one tokio worker.
pub fn serve(kind: &str, port: u16) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let app = match kind {
            "demo" => {
                // As the demo's main does: the fmt subscriber at info (formatted here to
                // stderr, which the bench discards; the demo's main writes to stdout).
                tracing_subscriber::fmt()
                    .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
                    .with_writer(std::io::stderr)
                    .init();
                crate::app::site(false).0
            }
            "ceiling" => ceiling(),
            "tower-wamp" => tower_wamp(false),
            "tower-wamp-patterns" => tower_wamp(true),
            other => panic!("unknown server {other}"),
        };
        // TCP_NODELAY on accepted sockets, for both servers (axum leaves Nagle on).
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap()
            .tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
        println!("ready");
        axum::serve(listener, app).await.unwrap();
    });
}

fn tower_wamp(patterns: bool) -> Router {
    let mut router = WampRouter::new()
        .rpc(
            "urn:bench:echo",
            |Args((v,)): Args<(Value,)>| async move { v },
        )
        .topic("urn:bench:fan*", Topic::new())
        .topic("com.example.bench.*", Topic::new())
        .topic("urn:bench:idle:*", Topic::new());
    if patterns {
        for i in 0..10_000 {
            router = router.topic(&format!("urn:bench:topic{i}"), Topic::new());
        }
        for i in 0..1_000 {
            router = router.topic(&format!("urn:bench:fan{i}*"), Topic::new());
        }
    }
    let layer = WampLayer::new(router)
        .allowed_origins(OriginPolicy::any())
        .ping_interval(None)
        .outbound_queue_capacity(1 << 16)
        .outbound_queue_bytes(256 << 20);
    Router::new().route_service("/ws", layer.into_service())
}

type Hub = Arc<Mutex<Vec<(u64, mpsc::UnboundedSender<Utf8Bytes>)>>>;

/// The ceiling: a plain axum WebSocket server on the same stack and settings. Echoes
/// every frame; broadcasts frames that start with `[7` to every connection, through a
/// queue per connection drained into one flush.
fn ceiling() -> Router {
    let hub: Hub = Arc::default();
    Router::new()
        .route(
            "/ws",
            get(|ws: WebSocketUpgrade, State(hub): State<Hub>| async move {
                ws.read_buffer_size(4096)
                    .protocols(["wamp"])
                    .on_upgrade(move |socket| ceiling_conn(socket, hub))
            }),
        )
        .with_state(hub)
}

async fn ceiling_conn(mut ws: WebSocket, hub: Hub) {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (tx, mut rx) = mpsc::unbounded_channel();
    hub.lock().unwrap().push((id, tx));
    if ws
        .send(Message::Text(r#"[0,"ceiling",1,"ceiling"]"#.into()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            incoming = ws.recv() => match incoming {
                Some(Ok(Message::Text(t))) => {
                    if t.as_str().starts_with("[7") {
                        for (_, tx) in hub.lock().unwrap().iter() {
                            let _ = tx.send(t.clone());
                        }
                    } else if t.as_str().starts_with("[2") && ws.send(Message::Text(t)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                _ => break,
            },
            Some(frame) = rx.recv() => {
                if ws.feed(Message::Text(frame)).await.is_err() {
                    break;
                }
                while let Ok(frame) = rx.try_recv() {
                    if ws.feed(Message::Text(frame)).await.is_err() {
                        break;
                    }
                }
                if ws.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    hub.lock().unwrap().retain(|(i, _)| *i != id);
}
