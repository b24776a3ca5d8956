//! Scale-out through a real Redis, beside the same on one node, in one run: calls to a
//! client callee from callers on its node and on another, and fan-out to subscribers on
//! the publisher's node and on another; with what Redis spent per call and per event.
//!
//! ```text
//! cargo bench --features redis --bench cluster              # a few seconds per scenario
//! cargo bench --features redis --bench cluster -- --smoke   # about a second each
//! ```
//!
//! The two nodes and the load clients share this process and the machine's two cores, and
//! `redis-server` runs beside them: figures are what one machine does with all of it, so
//! compare the rows of one run with each other, not with BENCHMARKS.md's single-node
//! ceilings (its client runs apart, pinned to a core). The process's CPU and Redis's are
//! printed per operation.

#![allow(missing_docs, missing_debug_implementations)]

use std::{
    net::SocketAddr,
    process::Stdio,
    time::{Duration, Instant},
};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message as Ws, client::IntoClientRequest, http::HeaderValue};
use tower_wamp::{
    Topic, WampLayer, WampRouter,
    backplane::Redis,
    core::codec::v2::{Dict, Message, Serializer, decode, encode},
};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const SER: Serializer = Serializer::MsgPack;

fn proc_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((field(11) + field(12)) * 10)
}

struct Client {
    ws: Socket,
    next: u64,
    session: u64,
}

impl Client {
    async fn join(addr: SocketAddr) -> Self {
        let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
        req.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(SER.subprotocol()),
        );
        let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let mut c = Self {
            ws,
            next: 0,
            session: 0,
        };
        let details =
            json!({"roles": {"caller": {}, "callee": {}, "subscriber": {}, "publisher": {}}});
        c.send(&Message::Hello {
            realm: "realm1".into(),
            details: details.as_object().cloned().unwrap(),
        })
        .await;
        match c.recv().await {
            Message::Welcome { session, .. } => c.session = session,
            other => panic!("{other:?}"),
        }
        c
    }

    fn request(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    async fn send(&mut self, m: &Message) {
        self.ws.send(Ws::binary(encode(SER, m))).await.unwrap();
    }

    async fn recv(&mut self) -> Message {
        loop {
            match self.ws.next().await.expect("open").expect("no error") {
                Ws::Binary(b) => return decode(SER, &b).unwrap(),
                Ws::Close(f) => panic!("closed: {f:?}"),
                _ => {}
            }
        }
    }
}

fn router(redis: Option<&str>) -> WampRouter {
    let r = WampRouter::new()
        .realm("realm1")
        .topic("com.example.*", Topic::new());
    match redis {
        Some(url) => r.backplane(Redis::new(url).channel("bench")),
        None => r,
    }
}

async fn serve(router: WampRouter) -> SocketAddr {
    let app = axum::Router::new().route_service("/ws", WampLayer::new(router).into_service());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

struct Figures {
    per_second: f64,
    process_us: f64,
    redis_us: f64,
    anomalies: u64,
    /// Calls only: p50 and p99 latency, µs.
    latency: Option<(u64, u64)>,
}

fn row(name: &str, unit: &str, f: &Figures) -> String {
    let latency = f
        .latency
        .map_or("—".to_owned(), |(p50, p99)| format!("{p50} / {p99} µs"));
    format!(
        "| {name} | {:.0} {unit}/s | {latency} | {:.1} µs | {:.2} µs | {} |",
        f.per_second, f.process_us, f.redis_us, f.anomalies
    )
}

/// A callee on `callee_at` answering at once; `callers` callers on `callers_at`, each with
/// one call in flight, for `time`.
async fn rpc(
    callee_at: SocketAddr,
    callers_at: SocketAddr,
    callers: usize,
    time: Duration,
    redis_pid: u32,
) -> Figures {
    let mut callee = Client::join(callee_at).await;
    let request = callee.request();
    let procedure = format!("com.example.echo{}", callee.session);
    callee
        .send(&Message::Register {
            request,
            options: Dict::new(),
            procedure: procedure.clone(),
        })
        .await;
    assert!(matches!(callee.recv().await, Message::Registered { .. }));
    let serving = tokio::spawn(async move {
        loop {
            let Some(Ok(Ws::Binary(b))) = callee.ws.next().await else {
                return;
            };
            if let Ok(Message::Invocation { request, args, .. }) = decode(SER, &b) {
                let y = Message::Yield {
                    request,
                    options: Dict::new(),
                    args,
                    kwargs: Dict::new(),
                };
                if callee.ws.send(Ws::binary(encode(SER, &y))).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut clients = Vec::new();
    for _ in 0..callers {
        clients.push(Client::join(callers_at).await);
    }
    // Until the registration is known on the callers' node.
    loop {
        let c = &mut clients[0];
        let request = c.request();
        c.send(&Message::Call {
            request,
            options: Dict::new(),
            procedure: procedure.clone(),
            args: vec![json!(0)],
            kwargs: Dict::new(),
        })
        .await;
        if matches!(c.recv().await, Message::Result { .. }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (cpu0, redis0, t0) = (
        proc_cpu(std::process::id()),
        proc_cpu(redis_pid),
        Instant::now(),
    );
    let deadline = t0 + time;
    let mut tasks = tokio::task::JoinSet::new();
    for mut c in clients {
        let procedure = procedure.clone();
        tasks.spawn(async move {
            let mut n = 0u64;
            let mut errors = 0u64;
            let mut took: Vec<u64> = Vec::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let request = c.request();
                c.send(&Message::Call {
                    request,
                    options: Dict::new(),
                    procedure: procedure.clone(),
                    args: vec![json!(n)],
                    kwargs: Dict::new(),
                })
                .await;
                match c.recv().await {
                    Message::Result {
                        request: r, args, ..
                    } if r == request && args == vec![json!(n)] => {
                        n += 1;
                        took.push(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
                    }
                    _ => errors += 1,
                }
            }
            (n, errors, took)
        });
    }
    let (mut calls, mut anomalies, mut took) = (0, 0, Vec::new());
    while let Some(r) = tasks.join_next().await {
        let (n, e, t) = r.unwrap();
        calls += n;
        anomalies += e;
        took.extend(t);
    }
    took.sort_unstable();
    let at = |q: f64| {
        let i = ((took.len() as f64 * q) as usize).min(took.len().saturating_sub(1));
        took.get(i).copied().unwrap_or(0)
    };
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = (proc_cpu(std::process::id()) - cpu0).as_secs_f64();
    let redis = (proc_cpu(redis_pid) - redis0).as_secs_f64();
    serving.abort();
    let calls_f = calls.max(1) as f64;
    Figures {
        per_second: calls as f64 / elapsed,
        process_us: cpu * 1e6 / calls_f,
        redis_us: redis * 1e6 / calls_f,
        anomalies,
        latency: Some((at(0.5), at(0.99))),
    }
}

/// `subscribers` on `subscribers_at`, one publisher on `publisher_at` publishing `events`
/// in batches of 100 (the next batch once every subscriber has the last one).
async fn fanout(
    publisher_at: SocketAddr,
    subscribers_at: SocketAddr,
    subscribers: usize,
    events: u64,
    redis_pid: u32,
    tag: &str,
) -> Figures {
    let topic = format!("com.example.fan.{tag}");
    let mut subs = Vec::new();
    for _ in 0..subscribers {
        let mut c = Client::join(subscribers_at).await;
        let request = c.request();
        c.send(&Message::Subscribe {
            request,
            options: Dict::new(),
            topic: topic.clone(),
        })
        .await;
        assert!(matches!(c.recv().await, Message::Subscribed { .. }));
        subs.push(c);
    }
    let mut publisher = Client::join(publisher_at).await;
    // Until a publication reaches the subscribers' node.
    let probe = &mut subs[0];
    loop {
        let e = Message::Publish {
            request: publisher.request(),
            options: Dict::new(),
            topic: topic.clone(),
            args: vec![json!(-1)],
            kwargs: Dict::new(),
        };
        publisher.send(&e).await;
        if tokio::time::timeout(Duration::from_millis(200), probe.ws.next())
            .await
            .is_ok()
        {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Drain the probes.
    for s in &mut subs {
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(20), s.ws.next()).await {
        }
    }
    let (cpu0, redis0, t0) = (
        proc_cpu(std::process::id()),
        proc_cpu(redis_pid),
        Instant::now(),
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, u64)>();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut s) in subs.into_iter().enumerate() {
        let tx = tx.clone();
        tasks.spawn(async move {
            let mut expect = 0u64;
            let mut anomalies = 0u64;
            while expect < events {
                match s.recv().await {
                    Message::Event { args, .. } => {
                        let n = args.first().and_then(Value::as_u64).unwrap_or(u64::MAX);
                        if n != expect {
                            anomalies += 1;
                        }
                        expect = n + 1;
                        if expect.is_multiple_of(100) {
                            let _ = tx.send((i, expect));
                        }
                    }
                    other => panic!("{other:?}"),
                }
            }
            anomalies
        });
    }
    drop(tx);
    let mut done = vec![0u64; subscribers];
    let mut sent = 0u64;
    while sent < events {
        for _ in 0..100 {
            let e = Message::Publish {
                request: publisher.request(),
                options: Dict::new(),
                topic: topic.clone(),
                args: vec![json!(sent)],
                kwargs: Dict::new(),
            };
            publisher.send(&e).await;
            sent += 1;
        }
        while done.iter().any(|d| *d < sent) {
            let Some((i, n)) = rx.recv().await else { break };
            done[i] = n;
        }
    }
    let mut anomalies = 0;
    while let Some(r) = tasks.join_next().await {
        anomalies += r.unwrap();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = (proc_cpu(std::process::id()) - cpu0).as_secs_f64();
    let redis = (proc_cpu(redis_pid) - redis0).as_secs_f64();
    let deliveries = (events * subscribers as u64) as f64;
    Figures {
        per_second: deliveries / elapsed,
        process_us: cpu * 1e6 / deliveries,
        redis_us: redis * 1e6 / events as f64,
        anomalies,
        latency: None,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let time = if smoke {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    let events = if smoke { 1_000 } else { 10_000 };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = match tokio::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return eprintln!("skipped: redis-server not found ({e})"),
    };
    let redis_pid = redis.id().unwrap_or(0);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("redis://127.0.0.1:{port}");
    let a = serve(router(Some(&url))).await;
    let b = serve(router(Some(&url))).await;
    let alone = serve(router(None)).await;
    let mut rows = Vec::new();
    let callers = 50;
    for (name, from, to) in [
        ("RPC, one node, no backplane (50 callers)", alone, alone),
        (
            "RPC, caller and callee on one node of two (50 callers)",
            a,
            a,
        ),
        ("RPC across nodes (50 callers)", b, a),
    ] {
        rows.push(row(
            name,
            "calls",
            &rpc(to, from, callers, time, redis_pid).await,
        ));
    }
    let subs = 200;
    for (name, from, to, tag) in [
        (
            "fan-out, one node, no backplane (200 subscribers)",
            alone,
            alone,
            "alone",
        ),
        (
            "fan-out, subscribers on the publisher's node of two",
            a,
            a,
            "local",
        ),
        ("fan-out, subscribers on the other node", a, b, "remote"),
    ] {
        let f = fanout(from, to, subs, events, redis_pid, tag).await;
        rows.push(row(name, "deliveries", &f));
    }
    let report = format!(
        "# Scale-out benchmarks\n\n\
         `cargo bench --features redis --bench cluster` writes this file (`-- --smoke` only \
         prints). Two tower-wamp nodes joined by a `redis-server` the benchmark starts, the load \
         clients (MessagePack; one call in flight each; fan-out in batches of 100 events, each \
         batch once every subscriber has the last) and Redis share this machine's 2 cores: \
         compare the rows with each other, not with BENCHMARKS.md's single-node ceilings, whose \
         client runs apart on a core of its own. Process CPU is the benchmark process's (nodes \
         and clients) per call or delivery; Redis CPU is redis-server's per call or per \
         published event. Anomalies: calls answered wrongly; events lost, duplicated or out of \
         order.\n\n\
         | scenario | rate | latency p50 / p99 | process CPU per op | Redis CPU per call or event | anomalies |\n\
         |---|---|---|---|---|---|\n{}\n",
        rows.join("\n")
    );
    print!("{report}");
    if !smoke {
        std::fs::write("BENCHMARKS-scale-out.md", report).unwrap();
    }
    let _ = redis.kill().await;
}
