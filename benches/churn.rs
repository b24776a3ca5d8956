//! Fan-out while another client churns SUBSCRIBE/UNSUBSCRIBE: does one client's
//! subscription traffic hold up everybody's events?
//!
//! ```text
//! cargo bench --bench churn                 # 1000 subscribers, 3 s per phase
//! cargo bench --bench churn -- --smoke      # a second per phase
//! ```
//!
//! One process: the server (a multi-thread runtime with 2 workers) and in-process clients.
//! `subscribers` clients subscribe to `urn:t`, read, and measure how long each event took
//! from `Wamp::publish` to them (all deliveries, so a subscriber's place in the fan-out
//! order does not decide the figure); a publisher calls
//! `Wamp::publish` every 20 ms and times the call. Phase 1 runs without churn, phase 2
//! with a client that sends SUBSCRIBE/UNSUBSCRIBE pairs to the same topic as fast as the
//! router takes them (pipelined, 64 pairs per round trip). Figures are printed, never
//! asserted; compare the phases of one run (the machine is noisy).

#![allow(missing_docs)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use axum::{Router, serve::ListenerExt};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};
use tower_wamp::{Topic, WampLayer, WampRouter};

const TOPIC: &str = "urn:t";

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: std::net::SocketAddr) -> Ws {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("wamp"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let _welcome = ws.next().await;
    ws
}

async fn subscribe(ws: &mut Ws) {
    ws.send(Message::text(format!(r#"[5,"{TOPIC}"]"#)))
        .await
        .unwrap();
    // A round trip, so that the subscription is in place.
    ws.send(Message::text(r#"[2,"s","urn:none"]"#))
        .await
        .unwrap();
    while let Some(Ok(m)) = ws.next().await {
        if m.to_text().is_ok_and(|t| t.starts_with("[4")) {
            break;
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "{name}: n={} p50={:.0} µs p99={:.0} µs max={:.0} µs",
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        v.last().copied().unwrap_or(f64::NAN)
    )
}

struct Phase {
    publish_us: Vec<f64>,
    churn_pairs: u64,
}

/// Publishes every 20 ms for `length`, with a churning client when `churn`.
async fn phase(
    wamp: &tower_wamp::Wamp,
    addr: std::net::SocketAddr,
    base: Instant,
    churn: bool,
    length: Duration,
) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let pairs = Arc::new(AtomicU64::new(0));
    let churner = churn.then(|| {
        let (stop, pairs) = (stop.clone(), pairs.clone());
        tokio::spawn(async move {
            let mut ws = connect(addr).await;
            let sub = format!(r#"[5,"{TOPIC}"]"#);
            let unsub = format!(r#"[6,"{TOPIC}"]"#);
            while !stop.load(Relaxed) {
                for _ in 0..64 {
                    ws.feed(Message::text(sub.as_str())).await.unwrap();
                    ws.feed(Message::text(unsub.as_str())).await.unwrap();
                }
                ws.send(Message::text(r#"[2,"s","urn:none"]"#))
                    .await
                    .unwrap();
                while let Some(Ok(m)) = ws.next().await {
                    if m.to_text().is_ok_and(|t| t.starts_with("[4")) {
                        break;
                    }
                }
                pairs.fetch_add(64, Relaxed);
            }
        })
    });
    let mut publish_us = Vec::new();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while started.elapsed() < length {
        tick.tick().await;
        let sent = base.elapsed().as_secs_f64() * 1e6;
        let t = Instant::now();
        wamp.publish(TOPIC, &sent).unwrap();
        publish_us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    // Let the last events arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Relaxed);
    if let Some(c) = churner {
        let _ = c.await;
    }
    Phase {
        publish_us,
        churn_pairs: pairs.load(Relaxed),
    }
}

/// A subscriber that reads until `stop` and returns, per phase, how long each event took.
async fn reader(
    mut ws: Ws,
    base: Instant,
    phase: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> [Vec<f64>; 2] {
    let mut delays = [Vec::new(), Vec::new()];
    while !stop.load(Relaxed) {
        let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(100), ws.next()).await
        else {
            continue;
        };
        let now = base.elapsed().as_secs_f64() * 1e6;
        let p = phase.load(Relaxed) as usize;
        if let Ok(t) = m.to_text()
            && let Some(sent) = t
                .rsplit(',')
                .next()
                .and_then(|n| n.trim_end_matches(']').parse::<f64>().ok())
            && (1..=2).contains(&p)
        {
            delays[p - 1].push(now - sent);
        }
    }
    delays
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let subscribers: usize = std::env::args()
        .skip_while(|a| a != "--subscribers")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(if smoke { 100 } else { 1000 });
    let length = Duration::from_secs(if smoke { 1 } else { 3 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let router = WampRouter::new().topic(TOPIC, Topic::new());
        let wamp = router.handle();
        let app = Router::new().route_service("/ws", WampLayer::new(router).into_service());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let base = Instant::now();
        let phase_now = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut readers = Vec::new();
        for _ in 0..subscribers {
            let mut ws = connect(addr).await;
            subscribe(&mut ws).await;
            readers.push(tokio::spawn(reader(
                ws,
                base,
                phase_now.clone(),
                stop.clone(),
            )));
        }
        println!("churn: {subscribers} subscribers, a publish every 20 ms, {length:?} per phase");
        let mut publish = Vec::new();
        for (i, churn) in [false, true].into_iter().enumerate() {
            phase_now.store(i as u64 + 1, Relaxed);
            let p = phase(&wamp, addr, base, churn, length).await;
            publish.push((p.publish_us, p.churn_pairs));
        }
        stop.store(true, Relaxed);
        let mut delivered = [Vec::new(), Vec::new()];
        for r in readers {
            let [a, b] = r.await.unwrap();
            delivered[0].extend(a);
            delivered[1].extend(b);
        }
        for (i, ((publish_us, pairs), delivery)) in publish.into_iter().zip(delivered).enumerate() {
            let label = if i == 1 { "with churn" } else { "no churn  " };
            println!("  {label} {}", report("publish() call", publish_us));
            println!("  {label} {}", report("publish→subscriber", delivery));
            if i == 1 {
                println!(
                    "  {label} churn: {:.0} subscribe/unsubscribe pairs/s",
                    pairs as f64 / length.as_secs_f64()
                );
            }
        }
    });
}
