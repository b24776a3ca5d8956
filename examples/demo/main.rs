//! The tower-wamp demo server: clj-wamp's example app on `ws://127.0.0.1:8080/ws`.
//!
//! ```text
//! cargo run --example demo                       # 127.0.0.1:8080
//! cargo run --example demo -- --addr 127.0.0.1:9000
//! WAMP_DEMO_ADDR=127.0.0.1:9000 cargo run --example demo
//! cargo run --example demo -- --auth             # WAMP-CRA required (users ada, carol, anonymous)
//! cargo run --example demo -- --rawsocket 127.0.0.1:8181   # also WAMP v2 over RawSocket
//! cargo run --features redis --example demo -- --redis redis://127.0.0.1:6379   # a cluster node
//! ```
//!
//! The page is at `http://127.0.0.1:8080/` (WAMP v1, our own small client) and
//! `http://127.0.0.1:8080/?wamp=2` (WAMP v2 on AutobahnJS; `&serializer=msgpack` or `cbor`),
//! which needs `npm install --prefix examples/demo` once.

mod app;

use axum::serve::ListenerExt;
use tracing_subscriber::EnvFilter;

fn auth_flag() -> bool {
    std::env::args().skip(1).any(|a| a == "--auth")
}

/// The value of `--name VALUE` or `--name=VALUE`.
fn flag_value(name: &str) -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == name {
            return Some(
                args.next()
                    .unwrap_or_else(|| panic!("{name} needs a value, e.g. 127.0.0.1:8080")),
            );
        }
        if let Some(value) = arg.strip_prefix(name).and_then(|v| v.strip_prefix('=')) {
            return Some(value.to_owned());
        }
    }
    None
}

fn address() -> String {
    flag_value("--addr").unwrap_or_else(|| {
        std::env::var("WAMP_DEMO_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned())
    })
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let redis = flag_value("--redis");
    let (app, wamp, layer) = app::site_parts_with(
        auth_flag(),
        app::default_autobahn_js(),
        |router| match redis {
            #[cfg(feature = "redis")]
            Some(url) => {
                tracing::info!(%url, "a cluster node: publications shared through Redis");
                router.backplane(tower_wamp::backplane::Redis::new(url))
            }
            #[cfg(not(feature = "redis"))]
            Some(_) => panic!(
                "--redis needs the `redis` feature: cargo run --features redis --example demo"
            ),
            None => router,
        },
    );
    if let Some(raw) = flag_value("--rawsocket") {
        let listener = tokio::net::TcpListener::bind(&raw)
            .await
            .unwrap_or_else(|e| panic!("cannot listen on {raw}: {e}"));
        tracing::info!(
            "WAMP v2 over RawSocket on tcp://{}",
            listener.local_addr().unwrap()
        );
        let serving = layer.serve_rawsocket(listener);
        tokio::spawn(async move {
            if let Err(e) = serving.await {
                tracing::error!(error = %e, "RawSocket listener failed");
            }
        });
    }
    let addr = address();
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"));
    let local = listener.local_addr().unwrap();
    // Small WAMP frames should not wait for Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tracing::info!("tower-wamp demo on ws://{local}/ws, page http://{local}/ (WAMP v2: /?wamp=2)");
    if !app::default_autobahn_js().exists() {
        tracing::warn!(
            "AutobahnJS not installed: run `npm install --prefix examples/demo` for the v2 page"
        );
    }
    // Connect info gives WAMP-CRA's failure throttle the peer's address.
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::signal::ctrl_c().await.ok();
            wamp.shutdown(std::time::Duration::from_secs(5)).await;
        })
        .await
        .expect("server error");
}
