//! The independent Python peers, each in a virtualenv of its own that the tests set up
//! once: autobahn 0.8.15 (WAMP v1, Python 2.7 from pyenv, `.venv-wamp1`) and
//! autobahn-python 26 (WAMP v2, the machine's `python3`, `.venv-wamp2`).
//!
//! Outside CI a peer that cannot be set up skips its tests with a message; on CI (`CI`
//! set) it fails them.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;
use tokio::sync::OnceCell;

fn run(cmd: &mut Command) -> bool {
    cmd.status().map(|s| s.success()).unwrap_or(false)
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs setup steps in order; the first failure is the error.
fn steps(steps: &[(&Path, &[&str])]) -> Result<(), String> {
    for (prog, args) in steps {
        if !run(Command::new(prog).args(*args)) {
            return Err(format!(
                "setup step failed: {} {}",
                prog.display(),
                args.join(" ")
            ));
        }
    }
    Ok(())
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

/// The venv's python with autobahn 0.8.15, created if needed (also the load bench's
/// autobahn 0.8 router, `benches/load/servers.rs`).
pub fn setup_autobahn08() -> Result<PathBuf, String> {
    let venv = root().join(".venv-wamp1");
    let py = venv.join("bin/python");
    let ready =
        |py: &Path| run(Command::new(py).args(["-c", "import autobahn.wamp1.protocol, twisted"]));
    if py.exists() && ready(&py) {
        return Ok(py);
    }
    let py27 = python27().ok_or("Python 2.7 not found (pyenv versions 2.7.x)")?;
    steps(&[
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
    ])?;
    if ready(&py) {
        Ok(py)
    } else {
        Err("autobahn 0.8 did not import after install".into())
    }
}

/// The venv's python with autobahn 26, created if needed.
fn setup_autobahn26() -> Result<PathBuf, String> {
    let venv = root().join(".venv-wamp2");
    let py = venv.join("bin/python");
    let ready = |py: &Path| {
        run(Command::new(py).args([
            "-c",
            "import autobahn, msgpack, cbor2, autobahn.wamp.cryptosign; assert autobahn.__version__.startswith('26.')",
        ]))
    };
    if py.exists() && ready(&py) {
        return Ok(py);
    }
    steps(&[
        (
            Path::new("python3"),
            &["-m", "venv", venv.to_str().unwrap()],
        ),
        (
            &venv.join("bin/pip"),
            &[
                "install",
                "-q",
                "autobahn[asyncio,serialization,encryption]==26.10.2",
                "numpy<2",
            ],
        ),
    ])?;
    if ready(&py) {
        Ok(py)
    } else {
        Err("autobahn 26 did not import after install".into())
    }
}

async fn peer(
    cell: &'static OnceCell<Result<PathBuf, String>>,
    name: &str,
    setup: fn() -> Result<PathBuf, String>,
) -> Option<PathBuf> {
    let setup = cell
        .get_or_init(|| async { tokio::task::spawn_blocking(setup).await.unwrap() })
        .await;
    match setup {
        Ok(py) => Some(py.clone()),
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED {name} interop: {why}");
            None
        }
        Err(why) => panic!("{name} interop cannot run on CI: {why}"),
    }
}

/// The python of autobahn 0.8.15 (WAMP v1), or `None` (with a message) outside CI.
pub async fn autobahn08() -> Option<PathBuf> {
    static CELL: OnceCell<Result<PathBuf, String>> = OnceCell::const_new();
    peer(&CELL, "autobahn 0.8", setup_autobahn08).await
}

/// The python of autobahn-python 26 (WAMP v2), or `None` (with a message) outside CI.
pub async fn autobahn26() -> Option<PathBuf> {
    static CELL: OnceCell<Result<PathBuf, String>> = OnceCell::const_new();
    peer(&CELL, "autobahn 26", setup_autobahn26).await
}

/// `tests/interop/<script>` with `args`, under `py`: the JSON object it prints last.
pub async fn run_script(py: &Path, script: &str, args: &[String]) -> Value {
    let child = tokio::process::Command::new(py)
        .arg(root().join("tests/interop").join(script))
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .unwrap_or_else(|_| panic!("{script} finished within 60 s"))
        .unwrap();
    last_json(script, &out.stdout, &out.stderr)
}

/// The JSON object on the last line of a script's output.
pub fn last_json(script: &str, stdout: &[u8], stderr: &[u8]) -> Value {
    let stdout = String::from_utf8_lossy(stdout);
    let stderr = String::from_utf8_lossy(stderr);
    let line = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("{script}: no output; stderr:\n{stderr}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{script}: {e}: {stdout}\n{stderr}"))
}

/// The Node packages of `tests/e2e` (AutobahnJS 26.3.1, wampy 8.0.2), installed if needed;
/// returns that directory.
pub async fn node_clients() -> Result<PathBuf, String> {
    let dir = root().join("tests/e2e");
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
