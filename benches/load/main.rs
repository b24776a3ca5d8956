//! The load harness: tower-wamp against the machine's ceiling (a plain axum WebSocket
//! echo server on the same hyper and tokio) and the WAMP v1 routers a user would pick instead (wamp.io,
//! autobahn 0.8.15), in one run, with one native client.
//!
//! ```text
//! cargo bench --bench load               # everything; writes BENCHMARKS.md and benchmarks.svg
//! cargo bench --bench load -- --smoke    # a seconds-long run of every scenario (CI)
//! ```
//!
//! Servers run pinned to core 0, this client to core 1 (`taskset`). The client is one
//! thread: pre-serialized frames, no JSON parsing on the hot path, TCP_NODELAY.

// A benchmark binary, not an API: its items need no docs.
#![allow(missing_docs, missing_debug_implementations)]

#[path = "../../examples/demo/app.rs"]
#[allow(dead_code, unreachable_pub)]
mod app;
mod client;
mod fast;
/// The tests' setup of the Python peers: the bench's autobahn 0.8 router runs in the same
/// virtualenv, created on first use.
#[path = "../../tests/common/peers.rs"]
#[allow(dead_code)]
mod peers;
mod report;
mod servers;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use client::{Conn, binary_frame, call_id_of, payload_offset, seq_of, text_frame};
use futures_util::future::join_all;
use servers::{Kind, Server};

#[derive(Clone, Copy)]
pub struct Settings {
    pub smoke: bool,
    pub warmup: Duration,
    pub measure: Duration,
}

impl Settings {
    /// The length of one server's turn where servers are measured in turns.
    pub fn turn(&self) -> Duration {
        Duration::from_millis(if self.smoke { 20 } else { 100 })
    }
}

/// One throughput figure with the CPU it cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rate {
    pub per_second: f64,
    /// Server CPU microseconds per operation.
    pub server_us_per_op: f64,
    /// Client CPU use, in percent of one core.
    pub client_cpu: f64,
    /// Fan-out only: events lost, duplicated or out of order.
    pub anomalies: u64,
}

impl Rate {
    /// `ops` operations in `secs` seconds, which cost the server and the client the CPU
    /// seconds given; no anomalies.
    pub fn of(ops: f64, secs: f64, server_cpu: f64, client_cpu: f64) -> Self {
        Self {
            per_second: ops / secs,
            server_us_per_op: if ops > 0.0 {
                server_cpu * 1e6 / ops
            } else {
                0.0
            },
            client_cpu: client_cpu / secs * 100.0,
            anomalies: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub rate: f64,
    pub achieved: f64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    /// Calls scheduled in the measured window, results recorded, and error answers.
    pub sent: u64,
    pub results: u64,
    pub errors: u64,
}

impl Latency {
    /// The figures of `h` (microseconds), in milliseconds.
    pub fn of(
        h: &hdrhistogram::Histogram<u64>,
        rate: f64,
        achieved: f64,
        sent: u64,
        errors: u64,
    ) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            rate,
            achieved,
            p50: ms(0.5),
            p99: ms(0.99),
            p999: ms(0.999),
            max: h.max() as f64 / 1000.0,
            sent,
            results: h.len(),
            errors,
        }
    }

    /// Every call scheduled was answered with a result (1 % slack for the last ones in
    /// flight when the window closed), and some were.
    pub fn served(&self) -> bool {
        self.results > 0 && self.errors == 0 && self.results * 100 >= self.sent * 99
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub sessions: usize,
    pub kib_per_session: f64,
    pub connects_per_second: f64,
}

fn self_cpu() -> Duration {
    servers::proc_cpu(std::process::id())
}

/// The WAMP a load connection speaks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Wire {
    V1,
    V2Json,
    V2Msgpack,
}

impl Wire {
    /// `payload` (already in this wire's serialization) as a masked client frame.
    fn frame(self, payload: &[u8]) -> Vec<u8> {
        match self {
            Self::V2Msgpack => binary_frame(payload),
            _ => text_frame(payload),
        }
    }

    /// Whether `payload` is a message of v2 type `code` (v1: `v1_code`) in this wire.
    fn is(self, payload: &[u8], v1_code: u8, code: u8) -> bool {
        match self {
            Self::V1 => payload.starts_with(format!("[{v1_code},").as_bytes()),
            Self::V2Json => payload.starts_with(format!("[{code},").as_bytes()),
            // A fixarray whose first element is the type, a positive fixint.
            Self::V2Msgpack => payload.get(1) == Some(&code),
        }
    }

    /// Whether `payload` answers a call with its result (v1 CALLRESULT, v2 RESULT).
    fn is_result(self, payload: &[u8]) -> bool {
        self.is(payload, 3, 50)
    }

    /// A v2 message written as JSON, in this wire's serialization.
    fn encode(self, json: &str) -> Vec<u8> {
        match self {
            Self::V2Msgpack => {
                let value: serde_json::Value = serde_json::from_str(json).unwrap();
                let mut out = Vec::new();
                rmpv::encode::write_value(&mut out, &to_msgpack(&value)).unwrap();
                out
            }
            _ => json.as_bytes().to_vec(),
        }
    }
}

fn to_msgpack(v: &serde_json::Value) -> rmpv::Value {
    use serde_json::Value as J;
    match v {
        J::Null => rmpv::Value::Nil,
        J::Bool(b) => rmpv::Value::Boolean(*b),
        J::Number(n) => match n.as_u64() {
            Some(u) => rmpv::Value::from(u),
            None => rmpv::Value::from(n.as_f64().unwrap()),
        },
        J::String(s) => rmpv::Value::from(s.as_str()),
        J::Array(a) => rmpv::Value::Array(a.iter().map(to_msgpack).collect()),
        J::Object(o) => rmpv::Value::Map(
            o.iter()
                .map(|(k, v)| (rmpv::Value::from(k.as_str()), to_msgpack(v)))
                .collect(),
        ),
    }
}

async fn connect_all(addr: SocketAddr, n: usize) -> Vec<Conn> {
    connect_all_as(addr, n, Wire::V1).await
}

/// `n` sessions, WELCOME received (v2: after a HELLO for realm1).
async fn connect_all_as(addr: SocketAddr, n: usize, wire: Wire) -> Vec<Conn> {
    let hello = wire.frame(&wire.encode(
        r#"[1,"realm1",{"roles":{"caller":{},"callee":{},"publisher":{},"subscriber":{}}}]"#,
    ));
    let mut conns = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(64) {
        let batch = join_all(chunk.iter().map(|_| async {
            let mut c = match wire {
                Wire::V1 => Conn::connect(addr).await.expect("connect"),
                Wire::V2Json | Wire::V2Msgpack => {
                    let protocol = if wire == Wire::V2Json {
                        "wamp.2.json"
                    } else {
                        "wamp.2.msgpack"
                    };
                    let mut c = Conn::connect_as(addr, protocol).await.expect("connect");
                    c.stream_write(&hello).await.expect("HELLO");
                    c
                }
            };
            let welcome = c.next_text().await.expect("WELCOME");
            assert!(
                wire.is(welcome, 0, 2),
                "not a WELCOME: {}",
                String::from_utf8_lossy(welcome)
            );
            c
        }))
        .await;
        conns.extend(batch);
    }
    conns
}

/// Measures `count` over the measuring window, with CPU of both sides.
async fn measure(server: &Server, s: Settings, count: &AtomicU64) -> Rate {
    tokio::time::sleep(s.warmup).await;
    let (c0, s0, t0) = (count.load(Relaxed), server.cpu(), Instant::now());
    let me0 = self_cpu();
    tokio::time::sleep(s.measure).await;
    let ops = (count.load(Relaxed) - c0) as f64;
    let secs = t0.elapsed().as_secs_f64();
    let server_cpu = (server.cpu() - s0).as_secs_f64();
    let client_cpu = (self_cpu() - me0).as_secs_f64();
    Rate::of(ops, secs, server_cpu, client_cpu)
}

fn call_payload(id: usize, pad: usize) -> Vec<u8> {
    call_payload_to("urn:bench:echo", id, pad)
}

fn call_payload_to(procedure: &str, id: usize, pad: usize) -> Vec<u8> {
    format!(r#"[2,"{id:08}","{procedure}","{}"]"#, "x".repeat(pad)).into_bytes()
}

/// A CALL of `server`'s echo procedure in `wire`, about `size` bytes.
fn echo_call(kind: Kind, wire: Wire, size: usize) -> Vec<u8> {
    let (v1, v2) = match kind {
        Kind::Demo => ("http://clj-wamp-example/api#echo", "com.example.echo"),
        _ => ("urn:bench:echo", "urn:bench:echo"),
    };
    let frame = |pad: usize| match wire {
        Wire::V1 => format!(r#"[2,"00000000","{v1}","{}"]"#, "x".repeat(pad)),
        _ => format!(r#"[48,1,{{}},"{v2}",["{}"]]"#, "x".repeat(pad)),
    };
    // Padded to `size` bytes as encoded (within a byte: a longer MessagePack string
    // header), so that every wire carries the same load.
    let pad = size.saturating_sub(wire.encode(&frame(0)).len());
    wire.encode(&frame(pad))
}

/// Closed loop on the mio client (`fast`): `n` connections, `k` calls in flight on each,
/// every answer counted and answered by the next call. The client runs on its own thread
/// in this process, so its CPU is this process's.
pub async fn rpc_on(
    server: &Server,
    s: Settings,
    n: usize,
    k: usize,
    size: usize,
    wire: Wire,
) -> Rate {
    let conns = connect_all_as(server.addr, n, wire).await;
    let streams: Vec<_> = conns
        .into_iter()
        .map(|c| c.into_std().expect("socket"))
        .collect();
    let frame = wire.frame(&echo_call(server.kind, wire, size));
    let echo = server.kind == Kind::Ceiling;
    let count = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let driver = {
        let (count, errors, stop) = (count.clone(), errors.clone(), stop.clone());
        std::thread::spawn(move || {
            fast::drive(
                streams,
                |_, out| {
                    for _ in 0..k {
                        out.extend_from_slice(&frame);
                    }
                },
                |_, payload, out| {
                    // Only results count (the ceiling echoes the CALL); anything else (an
                    // ERROR) is an anomaly.
                    if echo || wire.is_result(payload) {
                        fast::bump(&count);
                    } else {
                        fast::bump(&errors);
                    }
                    out.extend_from_slice(&frame);
                },
                &stop,
            )
        })
    };
    let mut rate = measure(server, s, &count).await;
    stop.store(true, Relaxed);
    let _ = driver.join();
    rate.anomalies = errors.load(Relaxed);
    rate
}

/// A turn with the server's and the client's CPU time before and after it.
type CpuTurn = fast::Turn<(Duration, Duration)>;

/// The RPC-to-a-handler figures that the targets compare, taken in turns: `n`
/// connections for each `(server, wire)` of `plan`, closed loop with one call in flight
/// each, the entries taking turns of `s.turn()` (see [`fast::drive_turns`]) for `rounds`
/// rounds of `s.measure` per entry (in whole turns), after about `s.warmup` per entry of
/// warm-up (whole turns, at least one). Every entry
/// sees the machine's slow and fast phases alike, which figures taken one after another
/// (seconds apart) do not. Each entry's figure in each round.
pub async fn rpc_turns(
    plan: &[(&Server, Wire)],
    s: Settings,
    n: usize,
    rounds: usize,
) -> Vec<Vec<Rate>> {
    let slice = s.turn();
    let per_round = (s.measure.as_millis() / slice.as_millis()).max(1) as usize;
    let warm = (s.warmup.as_millis() / slice.as_millis()).max(1) as usize;
    let mut groups = vec![];
    let mut pids = vec![];
    for &(server, wire) in plan {
        let streams = connect_all_as(server.addr, n, wire)
            .await
            .into_iter()
            .map(|c| c.into_std().expect("socket"))
            .collect();
        let served: fn(&[u8]) -> bool = match (server.kind, wire) {
            // The ceiling echoes the CALL.
            (Kind::Ceiling, _) => |_| true,
            (_, Wire::V1) => |p| Wire::V1.is_result(p),
            (_, Wire::V2Json) => |p| Wire::V2Json.is_result(p),
            (_, Wire::V2Msgpack) => |p| Wire::V2Msgpack.is_result(p),
        };
        groups.push(fast::Group {
            streams,
            frame: wire.frame(&echo_call(server.kind, wire, 100)),
            served,
        });
        pids.push(server.pid());
    }
    let turns = tokio::task::spawn_blocking(move || {
        fast::drive_turns(groups, slice, warm + rounds * per_round, |g| {
            (servers::proc_cpu(pids[g]), self_cpu())
        })
    })
    .await
    .expect("client thread")
    .expect("turns");
    turns
        .into_iter()
        .map(|all| {
            all[warm..]
                .chunks(per_round)
                .map(|round| {
                    let sum = |f: &dyn Fn(&CpuTurn) -> Duration| {
                        round.iter().map(f).sum::<Duration>().as_secs_f64()
                    };
                    let calls = round.iter().map(|t| t.calls).sum::<u64>() as f64;
                    let secs = sum(&|t| t.time);
                    let server_cpu = sum(&|t| t.after.0.saturating_sub(t.before.0));
                    let client_cpu = sum(&|t| t.after.1.saturating_sub(t.before.1));
                    Rate {
                        anomalies: round.iter().map(|t| t.errors).sum(),
                        ..Rate::of(calls, secs, server_cpu, client_cpu)
                    }
                })
                .collect()
        })
        .collect()
}

/// Exactly `calls` closed-loop calls over `n` connections (see `--drive`).
async fn drive_calls(addr: SocketAddr, what: &str, n: usize, calls: u64) -> Duration {
    let (kind, wire) = match what {
        "v1" => (Kind::TowerWamp, Wire::V1),
        "ceiling" => (Kind::Ceiling, Wire::V1),
        "v2" => (Kind::TowerWamp, Wire::V2Json),
        "demo-v1" => (Kind::Demo, Wire::V1),
        "demo-v2" => (Kind::Demo, Wire::V2Json),
        "v2-msgpack" => (Kind::TowerWamp, Wire::V2Msgpack),
        other => panic!("unknown load {other}"),
    };
    let streams: Vec<_> = connect_all_as(addr, n, wire)
        .await
        .into_iter()
        .map(|c| c.into_std().expect("socket"))
        .collect();
    let frame = wire.frame(&echo_call(kind, wire, 100));
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    let mut sent = n as u64;
    let mut answered = 0u64;
    fast::drive(
        streams,
        |_, out| out.extend_from_slice(&frame),
        |_, _, out| {
            answered += 1;
            if sent < calls {
                sent += 1;
                out.extend_from_slice(&frame);
            }
            if answered >= calls {
                stop.store(true, Relaxed);
            }
        },
        &stop,
    )
    .expect("drive");
    started.elapsed()
}

/// v2 (json) calls to a procedure that a client registered: one callee connection
/// answers every INVOCATION with a YIELD; `n` callers, one call in flight each.
pub async fn two_hop(server: &Server, s: Settings, n: usize) -> Rate {
    two_hop_as(server, s, n, Wire::V2Json).await
}

/// The request id of an INVOCATION (`[68, REQUEST, ...]`) in `wire`, as that wire's
/// bytes (digits in JSON, the encoded integer in MessagePack), ready to be copied into
/// the YIELD.
fn invocation_request(payload: &[u8], wire: Wire) -> Option<&[u8]> {
    if wire == Wire::V2Msgpack {
        // fixarray, fixint 68, then a MessagePack unsigned integer.
        let rest = payload.get(1..)?.strip_prefix(&[68])?;
        let len = match *rest.first()? {
            0x00..=0x7f => 1,
            0xcc => 2,
            0xcd => 3,
            0xce => 5,
            0xcf => 9,
            _ => return None,
        };
        return rest.get(..len);
    }
    let rest = payload.strip_prefix(b"[68,")?;
    let rest = &rest[rest.iter().take_while(|b| **b == b' ').count()..];
    Some(&rest[..rest.iter().take_while(|b| b.is_ascii_digit()).count()])
}

/// [`two_hop`] in `wire` (v2 json or msgpack).
pub async fn two_hop_as(server: &Server, s: Settings, n: usize, wire: Wire) -> Rate {
    let mut callee = connect_all_as(server.addr, 1, wire).await.remove(0);
    let uri = "com.example.bench.echo2";
    callee
        .stream_write(&wire.frame(&wire.encode(&format!(r#"[64,1,{{}},"{uri}"]"#))))
        .await
        .expect("REGISTER");
    let registered = callee.next_text().await.expect("REGISTERED").to_vec();
    let registered_type = if wire == Wire::V2Msgpack {
        registered.get(1) == Some(&65)
    } else {
        registered.starts_with(b"[65,")
    };
    assert!(
        registered_type,
        "not registered: {}",
        String::from_utf8_lossy(&registered)
    );
    let mut streams = vec![callee.into_std().expect("socket")];
    for c in connect_all_as(server.addr, n, wire).await {
        streams.push(c.into_std().expect("socket"));
    }
    let call = wire.frame(&wire.encode(&format!(r#"[48,1,{{}},"{uri}",["{}"]]"#, "x".repeat(40))));
    let errors = Arc::new(AtomicU64::new(0));
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let driver = {
        let (count, errors, stop) = (count.clone(), errors.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut answer = Vec::with_capacity(128);
            fast::drive(
                streams,
                |i, out| {
                    if i > 0 {
                        out.extend_from_slice(&call);
                    }
                },
                |i, payload, out| {
                    if i == 0 {
                        // YIELD a result for the INVOCATION's request.
                        let Some(request) = invocation_request(payload, wire) else {
                            return;
                        };
                        answer.clear();
                        if wire == Wire::V2Msgpack {
                            // [70, REQUEST, {}, ["ok"]]
                            answer.extend_from_slice(&[0x94, 70]);
                            answer.extend_from_slice(request);
                            answer.extend_from_slice(&[0x80, 0x91, 0xa2, b'o', b'k']);
                        } else {
                            answer.extend_from_slice(b"[70,");
                            answer.extend_from_slice(request);
                            answer.extend_from_slice(b",{},[\"ok\"]]");
                        }
                        out.extend_from_slice(&wire.frame(&answer));
                    } else {
                        // Only results count; an ERROR (say `canceled`) is an anomaly.
                        if wire.is_result(payload) {
                            fast::bump(&count);
                        } else {
                            fast::bump(&errors);
                        }
                        out.extend_from_slice(&call);
                    }
                },
                &stop,
            )
        })
    };
    let mut rate = measure(server, s, &count).await;
    stop.store(true, Relaxed);
    let _ = driver.join();
    rate.anomalies = errors.load(Relaxed);
    rate
}

/// Closed loop: `n` connections, `k` calls in flight on each, ~`size`-byte frames.
pub async fn rpc(server: &Server, s: Settings, n: usize, k: usize, size: usize) -> Rate {
    let conns = connect_all(server.addr, n).await;
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let pad = size.saturating_sub(call_payload(0, 0).len());
    let frame = text_frame(&call_payload(0, pad));
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let (count, stop, frame) = (count.clone(), stop.clone(), frame.clone());
            tokio::spawn(async move {
                let burst: Vec<u8> = frame.repeat(k);
                if c.stream_write(&burst).await.is_err() {
                    return;
                }
                let mut out = Vec::new();
                while !stop.load(Relaxed) {
                    let Ok(got) = c.read_batch(|_| {}).await else {
                        return;
                    };
                    count.fetch_add(got as u64, Relaxed);
                    out.clear();
                    for _ in 0..got {
                        out.extend_from_slice(&frame);
                    }
                    if c.stream_write(&out).await.is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    let rate = measure(server, s, &count).await;
    stop.store(true, Relaxed);
    for t in tasks {
        t.abort();
    }
    rate
}

/// The v1 topic of the fan-out on `kind`: the demo routes v1 topics under its own URIs (a
/// plain topic matched by its `prefix*` pattern).
fn v1_fan_topic(kind: Kind) -> &'static str {
    match kind {
        Kind::Demo => "http://clj-wamp-example/event#prefix-bench",
        _ => "urn:bench:fan",
    }
}

fn publish_frame(seq: u64, pad: &str, wire: Wire, kind: Kind) -> Vec<u8> {
    match wire {
        Wire::V1 => text_frame(
            format!(
                r#"[7,"{}",{{"seq":{seq},"p":"{pad}"}}]"#,
                v1_fan_topic(kind)
            )
            .as_bytes(),
        ),
        Wire::V2Json | Wire::V2Msgpack => text_frame(
            format!(
                r#"[16,{},{{}},"com.example.bench.fan",[{{"seq":{seq},"p":"{pad}"}}]]"#,
                seq + 1
            )
            .as_bytes(),
        ),
    }
}

/// One publisher, `n` subscribers checking sequence numbers. The publisher keeps at most
/// `window` publishes ahead of the slowest subscriber, so no router is measured while
/// its queues grow without bound. Counts deliveries to the `n` subscribers.
pub async fn fanout(server: &Server, s: Settings, n: usize, window: u64) -> Rate {
    fanout_as(server, s, n, window, Wire::V1).await
}

/// [`fanout`] in `wire`: v2 subscribers wait for SUBSCRIBED, the publisher sends PUBLISH
/// with the event as its one argument.
pub async fn fanout_as(server: &Server, s: Settings, n: usize, window: u64, wire: Wire) -> Rate {
    let mut conns = connect_all_as(server.addr, n + 1, wire).await;
    let publisher = conns.pop().unwrap();
    match wire {
        Wire::V1 => {
            let subscribe =
                text_frame(format!(r#"[5,"{}"]"#, v1_fan_topic(server.kind)).as_bytes());
            for c in &mut conns {
                c.stream_write(&subscribe).await.unwrap();
            }
            // A round trip on every connection, so all subscriptions are in place.
            let barrier = text_frame(&call_payload(0, 0));
            for c in &mut conns {
                c.stream_write(&barrier).await.unwrap();
            }
        }
        Wire::V2Json | Wire::V2Msgpack => {
            assert_eq!(wire, Wire::V2Json, "fan-out runs in v1 and v2 json");
            let subscribe = text_frame(br#"[32,1,{},"com.example.bench.fan"]"#);
            for c in &mut conns {
                c.stream_write(&subscribe).await.unwrap();
            }
        }
    }
    // The answers: the barrier's CALLRESULT (v1) or SUBSCRIBED (v2).
    for c in &mut conns {
        c.next_text().await.unwrap();
    }
    let delivered = Arc::new(AtomicU64::new(0));
    let anomalies = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    // Subscribers say when they have read more, so that a publisher with a full window
    // waits rather than spins (a spinning client would count as busy for slow routers).
    let advanced = Arc::new(tokio::sync::Notify::new());
    let mut tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let (delivered, anomalies, stop, progress, advanced) = (
                delivered.clone(),
                anomalies.clone(),
                stop.clone(),
                progress.clone(),
                advanced.clone(),
            );
            tokio::spawn(async move {
                let mut next = 0u64;
                while !stop.load(Relaxed) {
                    let mut bad = 0;
                    let Ok(got) = c
                        .read_batch(|p| match seq_of(p) {
                            Some(seq) if seq == next => next += 1,
                            Some(seq) if seq > next => {
                                bad += seq - next;
                                next = seq + 1;
                            }
                            _ => bad += 1,
                        })
                        .await
                    else {
                        return;
                    };
                    progress[i].store(next, Relaxed);
                    advanced.notify_one();
                    delivered.fetch_add(got as u64, Relaxed);
                    if bad > 0 {
                        anomalies.fetch_add(bad, Relaxed);
                    }
                }
            })
        })
        .collect();
    let (mut own_reader, mut writer) = publisher.split();
    // Routers that send the publisher its own events: read and discard them.
    tasks.push(tokio::spawn(async move {
        while own_reader.read_batch(|_| {}).await.is_ok() {}
    }));
    let stop_p = stop.clone();
    let kind = server.kind;
    tasks.push(tokio::spawn(async move {
        let pad = "x".repeat(60);
        let mut sent = 0u64;
        let mut burst = Vec::new();
        while !stop_p.load(Relaxed) {
            let slowest = progress
                .iter()
                .map(|p| p.load(Relaxed))
                .min()
                .unwrap_or(sent);
            burst.clear();
            while sent < slowest + window {
                burst.extend_from_slice(&publish_frame(sent, &pad, wire, kind));
                sent += 1;
            }
            if burst.is_empty() {
                // The window is full: wait for a subscriber to read on (a permit stored by
                // `notify_one` is not lost), and look at `stop` now and then.
                let _ = tokio::time::timeout(Duration::from_millis(20), advanced.notified()).await;
                continue;
            }
            if writer.write(&burst).await.is_err() {
                return;
            }
        }
    }));
    let mut rate = measure(server, s, &delivered).await;
    stop.store(true, Relaxed);
    for t in tasks {
        t.abort();
    }
    rate.anomalies = anomalies.load(Relaxed);
    rate
}

/// Open loop at `rate` calls/s over 10 connections; latency from each call's scheduled
/// send time (no coordinated omission).
pub async fn latency(server: &Server, s: Settings, rate: f64) -> Latency {
    let (l, _) = latency_turns(&[(server, rate)], s)
        .await
        .pop()
        .expect("one figure");
    l
}

/// Open-loop latency of each `(server, rate)` of `targets` at once, the servers taking
/// turns of `s.turn()` (one server alone: no turns): 10 connections per server, whose calls
/// are due only in its turns, at its rate while the turn lasts, `s.warmup` then
/// `s.measure` of turns per server. Latency counts from each call's scheduled send time
/// (no coordinated omission), so a call held back by a stall of either side counts late.
/// Each server's figures, with the histogram of its measured calls (to pool rounds).
pub async fn latency_turns(
    targets: &[(&Server, f64)],
    s: Settings,
) -> Vec<(Latency, hdrhistogram::Histogram<u64>)> {
    const CONNS: usize = 10;
    let turns = targets.len() as u32;
    let slice = s.turn();
    let mut connected = vec![];
    for &(server, _) in targets {
        connected.push(connect_all(server.addr, CONNS).await);
    }
    let start = Instant::now() + Duration::from_millis(50);
    let total = s.warmup + s.measure;
    // Where a server's time `active` (in its own turns) falls in the run.
    let wall = move |turn: u32, active: Duration| {
        let cycle = active.as_nanos() / slice.as_nanos();
        let into = active - slice * cycle as u32;
        slice * (cycle as u32 * turns + turn) + into
    };
    // The other way: how much of a server's time has passed by `wall`. (A call due
    // exactly at a turn's end counts as due here, but `wall` puts it at the start of the
    // next turn, and the sender waits for that.)
    let active_by = move |turn: u32, wall: Duration| {
        let cycle_len = slice * turns;
        let cycle = (wall.as_nanos() / cycle_len.as_nanos()) as u32;
        let into = wall - cycle_len * cycle;
        let mine = into.saturating_sub(slice * turn).min(slice);
        slice * cycle + mine
    };
    let mut runs = vec![];
    for (turn, (&(server, rate), conns)) in targets.iter().zip(connected).enumerate() {
        let turn = turn as u32;
        let kind = server.kind;
        let ids = (rate * total.as_secs_f64()) as usize + 1;
        let per_conn = rate / CONNS as f64;
        let hist = Arc::new(std::sync::Mutex::new(
            hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
        ));
        // Calls scheduled after the warm-up, and what came back for them: results, and
        // answers that are not results (errors). The rest went unanswered.
        let sent = Arc::new(AtomicU64::new(0));
        let answered = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(ci, c)| {
                let (hist, sent, answered, errors) =
                    (hist.clone(), sent.clone(), answered.clone(), errors.clone());
                // The connections take turns too: call `i` of connection `ci` is due at
                // `(i + ci / CONNS) / per_conn` of the server's time, so that calls
                // arrive evenly spaced rather than ten at a time.
                let phase = ci as f64 / CONNS as f64;
                // The first call after the warm-up.
                let first = (s.warmup.as_secs_f64() * per_conn - phase).ceil().max(0.0) as usize;
                tokio::spawn(async move {
                    let (mut reader, mut writer) = c.split();
                    let scheduled: Arc<Vec<AtomicU64>> =
                        Arc::new((0..ids / CONNS + 2).map(|_| AtomicU64::new(0)).collect());
                    let sched = scheduled.clone();
                    let read = tokio::spawn(async move {
                        loop {
                            let Ok(_) = reader
                                .read_batch(|p| {
                                    let now = start.elapsed().as_nanos() as u64;
                                    let Some(i) = call_id_of(p) else { return };
                                    if i < first {
                                        return;
                                    }
                                    let at = sched[i].load(Relaxed);
                                    // Results only (the ceiling echoes the CALL): an error
                                    // answer is not a served call, and counts apart.
                                    if kind == Kind::Ceiling || p.starts_with(b"[3,") {
                                        let us = (now.saturating_sub(at) / 1000).max(1);
                                        let _ = hist.lock().unwrap().record(us);
                                        answered.fetch_add(1, Relaxed);
                                    } else {
                                        errors.fetch_add(1, Relaxed);
                                    }
                                })
                                .await
                            else {
                                return;
                            };
                        }
                    });
                    let payload = match kind {
                        Kind::Demo => call_payload_to("http://clj-wamp-example/api#echo", 0, 40),
                        _ => call_payload(0, 40),
                    };
                    let off = payload_offset(payload.len()) + 4;
                    let template = text_frame(&payload);
                    let mut i = 0usize;
                    let mut out = Vec::new();
                    loop {
                        let elapsed = Instant::now().saturating_duration_since(start);
                        let active = active_by(turn, elapsed);
                        if active >= total {
                            break;
                        }
                        // Calls scheduled at or before now. (Counting `floor(t * per_conn)`
                        // sent each call one interval late, which counted as latency: 1.2
                        // ms at 9k/s over 10 connections.)
                        let due = (active.as_secs_f64() * per_conn - phase).floor() as i64 + 1;
                        let due = usize::try_from(due).unwrap_or(0);
                        out.clear();
                        while i < due.min(scheduled.len() - 1) {
                            let at = Duration::from_secs_f64((i as f64 + phase) / per_conn);
                            // Never before its time: a call due exactly at the end of the
                            // server's turn belongs to its next turn.
                            let at = wall(turn, at);
                            if at > elapsed {
                                break;
                            }
                            scheduled[i].store(at.as_nanos() as u64, Relaxed);
                            if i >= first {
                                sent.fetch_add(1, Relaxed);
                            }
                            let mut f = template.clone();
                            f[off..off + 8].copy_from_slice(format!("{i:08}").as_bytes());
                            out.extend_from_slice(&f);
                            i += 1;
                        }
                        if !out.is_empty() && writer.write(&out).await.is_err() {
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    read.abort();
                })
            })
            .collect();
        runs.push((rate, tasks, hist, sent, answered, errors));
    }
    let mut figures = vec![];
    for (rate, tasks, hist, sent, answered, errors) in runs {
        join_all(tasks).await;
        let h = std::mem::replace(
            &mut *hist.lock().unwrap(),
            hdrhistogram::Histogram::<u64>::new(3).unwrap(),
        );
        let latency = Latency::of(
            &h,
            rate,
            answered.load(Relaxed) as f64 / s.measure.as_secs_f64(),
            sent.load(Relaxed),
            errors.load(Relaxed),
        );
        figures.push((latency, h));
    }
    figures
}

/// `n` idle sessions with one subscription each: server memory per session and the
/// connect rate.
pub async fn memory(server: &Server, n: usize) -> Memory {
    let mut warm = connect_all(server.addr, 1).await;
    let before = server.rss_kib();
    let started = Instant::now();
    let conns = idle_sessions(server.addr, n, server.kind).await;
    let connect_secs = started.elapsed().as_secs_f64();
    warm[0]
        .stream_write(&text_frame(&call_payload(0, 0)))
        .await
        .unwrap();
    warm[0].next_text().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.rss_kib();
    drop(conns);
    Memory {
        sessions: n,
        kib_per_session: after.saturating_sub(before) as f64 / n as f64,
        connects_per_second: n as f64 / connect_secs,
    }
}

/// `n` idle v1 sessions, each subscribed to one of 100 topics (unless
/// `BENCH_NO_SUBSCRIBE` is set), after a round trip that shows the subscriptions are in.
async fn idle_sessions(addr: SocketAddr, n: usize, kind: Kind) -> Vec<Conn> {
    let mut conns = connect_all(addr, n).await;
    let subscribe = std::env::var_os("BENCH_NO_SUBSCRIBE").is_none();
    let prefix = match kind {
        Kind::Demo => "http://clj-wamp-example/event#prefix-idle-",
        _ => "urn:bench:idle:",
    };
    for (i, c) in conns.iter_mut().enumerate().filter(|_| subscribe) {
        let sub = text_frame(format!(r#"[5,"{prefix}{}"]"#, i % 100).as_bytes());
        c.stream_write(&sub).await.unwrap();
    }
    let first = conns.first_mut().unwrap();
    first
        .stream_write(&text_frame(&call_payload(0, 0)))
        .await
        .unwrap();
    first.next_text().await.unwrap();
    conns
}

/// Spins for `span`, reading the clock: the time lost in gaps of over 0.5 ms between two
/// readings (the thread was not running), and the longest gap.
fn gaps(span: Duration) -> (Duration, Duration) {
    let started = Instant::now();
    let (mut last, mut lost, mut longest) = (started, Duration::ZERO, Duration::ZERO);
    while last - started < span {
        let now = Instant::now();
        let gap = now - last;
        if gap > Duration::from_micros(500) {
            lost += gap;
            longest = longest.max(gap);
        }
        last = now;
    }
    (lost, longest)
}

/// The host's stalls on each core, as [`gaps`] sees them over `span` with one spinning
/// process pinned to each core at once: (lost, longest) per core, in milliseconds, or
/// `None` for a core where the check failed.
pub fn host_stalls(span: Duration) -> Vec<Option<(f64, f64)>> {
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["0", "1"]
        .into_iter()
        .map(|core| {
            std::process::Command::new("taskset")
                .args(["-c", core])
                .arg(&exe)
                .args(["--gaps", &span.as_secs_f64().to_string()])
                .stdout(std::process::Stdio::piped())
                .spawn()
        })
        .collect();
    children
        .into_iter()
        .map(|child| {
            let out = child.and_then(|c| c.wait_with_output()).ok()?;
            if !out.status.success() {
                return None;
            }
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let us: Vec<f64> = text
                .split_whitespace()
                .map(|x| x.parse::<f64>().map(|us| us / 1000.0))
                .collect::<Result<_, _>>()
                .ok()?;
            match us[..] {
                [lost, longest] => Some((lost, longest)),
                _ => None,
            }
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        servers::serve(&args[i + 1], args[i + 2].parse().unwrap());
        return;
    }
    let smoke = args.iter().any(|a| a == "--smoke");
    if let Some(i) = args.iter().position(|a| a == "--gaps") {
        // The host's stalls as one spinning thread sees them: --gaps SECONDS prints the
        // time lost in gaps of over 0.5 ms between two readings of the clock, and the
        // longest, in microseconds.
        let secs: f64 = args[i + 1].parse().unwrap();
        let (lost, longest) = gaps(Duration::from_secs_f64(secs));
        println!("{} {}", lost.as_micros(), longest.as_micros());
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--hold") {
        // Idle sessions held on a server started elsewhere (for a heap profiler such as
        // `valgrind --tool=dhat`): --hold ADDR SESSIONS SECONDS
        let addr: SocketAddr = args[i + 1].parse().unwrap();
        let n: usize = args[i + 2].parse().unwrap();
        let secs: u64 = args[i + 3].parse().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let conns = idle_sessions(addr, n, Kind::TowerWamp).await;
            tokio::time::sleep(Duration::from_secs(secs)).await;
            drop(conns);
        });
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--drive") {
        // A fixed number of calls against a server started elsewhere (for example under
        // `valgrind --tool=callgrind`, whose instruction counts do not move with the
        // machine's noise): --drive ADDR ceiling|v1|v2|two-hop|demo-v1|demo-v2 CONNECTIONS CALLS
        let addr: SocketAddr = args[i + 1].parse().unwrap();
        let what = args[i + 2].clone();
        let n: usize = args[i + 3].parse().unwrap();
        let calls: u64 = args[i + 4].parse().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let took = rt.block_on(drive_calls(addr, &what, n, calls));
        eprintln!("{calls} calls in {took:?}");
        return;
    }
    // Pin this client to core 1; servers go to core 0.
    let _ = std::process::Command::new("taskset")
        .args(["-p", "-c", "1", &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status();
    if let Some(i) = args.iter().position(|a| a == "--profile") {
        // Hold one load on one server, for profiling it with perf:
        // --profile rpc|rpc-tokio|rpc2|rpc2-msgpack|two-hop|two-hop-msgpack|fanout|fanout2|memory|latency
        //   (or turns|latency-turns N SECONDS: the ceiling and the demo at once, in turns)
        //   N SECONDS [ceiling|demo|crossbar|xconn|battler]
        let what = args[i + 1].clone();
        let n: usize = args[i + 2].parse().unwrap();
        let secs: u64 = args[i + 3].parse().unwrap();
        let kind = if args.iter().any(|a| a == "ceiling") {
            Kind::Ceiling
        } else if args.iter().any(|a| a == "demo") {
            Kind::Demo
        } else if args.iter().any(|a| a == "xconn") {
            Kind::Xconn
        } else if args.iter().any(|a| a == "crossbar") {
            Kind::Crossbar
        } else if args.iter().any(|a| a == "battler") {
            Kind::Battler
        } else {
            Kind::TowerWamp
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        if let Some(why) = servers::unavailable(kind) {
            eprintln!("{} cannot run: {why}", kind.name());
            return;
        }
        rt.block_on(async {
            let s = Settings {
                smoke: false,
                warmup: Duration::from_millis(500),
                measure: Duration::from_secs(secs),
            };
            if what == "turns" || what == "latency-turns" {
                // The ceiling and the demo at once, taking turns (N connections each, or
                // for latency N calls/s each), three rounds of SECONDS per server.
                let (ceiling, demo) = (
                    servers::spawn(Kind::Ceiling, "0"),
                    servers::spawn(Kind::Demo, "0"),
                );
                eprintln!(
                    "in turns: ceiling pid {}, demo pid {}",
                    ceiling.pid(),
                    demo.pid()
                );
                if what == "turns" {
                    let plan = [
                        (&ceiling, Wire::V1),
                        (&demo, Wire::V1),
                        (&demo, Wire::V2Json),
                    ];
                    let figures = rpc_turns(&plan, s, n, 3).await;
                    let rounds = figures[0].iter().zip(&figures[1]).zip(&figures[2]);
                    for (round, ((c, d1), d2)) in rounds.enumerate() {
                        let at = |g: usize| [c, d1, d2][g];
                        eprintln!(
                            "round {round}: ceiling {:.0}/s (client {:.0} %); demo v1 {:.0}/s = {:.2}×, v2 json {:.0}/s = {:.2}×; server µs/call {:.2} {:.2} {:.2}",
                            at(0).per_second,
                            at(0).client_cpu,
                            at(1).per_second,
                            at(1).per_second / at(0).per_second,
                            at(2).per_second,
                            at(2).per_second / at(0).per_second,
                            at(0).server_us_per_op,
                            at(1).server_us_per_op,
                            at(2).server_us_per_op,
                        );
                    }
                } else {
                    let figures =
                        latency_turns(&[(&ceiling, n as f64), (&demo, n as f64)], s).await;
                    for (name, (l, _)) in ["ceiling", "demo"].iter().zip(figures) {
                        eprintln!(
                            "{name} at {:.0}/s (achieved {:.0}): p50 {:.3} p99 {:.3} p99.9 {:.3} max {:.3} ms",
                            l.rate, l.achieved, l.p50, l.p99, l.p999, l.max
                        );
                    }
                }
                return;
            }
            let server = servers::spawn(kind, "0");
            eprintln!("server pid {}", server.pid());
            if what == "latency" {
                // N is the rate, calls/s.
                let l = latency(&server, s, n as f64).await;
                eprintln!(
                    "at {:.0}/s (achieved {:.0}): p50 {:.3} p99 {:.3} p99.9 {:.3} max {:.3} ms",
                    l.rate, l.achieved, l.p50, l.p99, l.p999, l.max
                );
                return;
            }
            if what == "memory" {
                let m = memory(&server, n).await;
                eprintln!(
                    "{:.2} KiB per session, {:.0} connects/s",
                    m.kib_per_session, m.connects_per_second
                );
                return;
            }
            let r = if what == "rpc" {
                rpc_on(&server, s, n, 1, 100, Wire::V1).await
            } else if what == "rpc-tokio" {
                rpc(&server, s, n, 1, 100).await
            } else if what == "rpc2" {
                rpc_on(&server, s, n, 1, 100, Wire::V2Json).await
            } else if what == "rpc2-msgpack" {
                rpc_on(&server, s, n, 1, 100, Wire::V2Msgpack).await
            } else if what == "two-hop-msgpack" {
                two_hop_as(&server, s, n, Wire::V2Msgpack).await
            } else if what == "two-hop" {
                two_hop(&server, s, n).await
            } else if what == "fanout2" {
                fanout_as(&server, s, n, 16, Wire::V2Json).await
            } else {
                fanout(&server, s, n, 16).await
            };
            eprintln!(
                "{:.0}/s, {:.2} µs server CPU per op, client {:.0} %, anomalies {}",
                r.per_second, r.server_us_per_op, r.client_cpu, r.anomalies
            );
        });
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        // Sockets are polled on every scheduler tick: the latency client's senders
        // never idle, and tokio's default (every 61st tick) left answers unread for
        // about a millisecond, which counted as the server's latency.
        .event_interval(1)
        .enable_all()
        .build()
        .unwrap();
    let results = rt.block_on(run(smoke));
    let (md, svg) = report::render(&results);
    if smoke {
        println!("{md}");
        println!("smoke: every scenario ran");
    } else {
        let root = servers::root();
        std::fs::write(root.join("BENCHMARKS.md"), md).unwrap();
        std::fs::write(root.join("benchmarks.svg"), svg).unwrap();
        println!("wrote BENCHMARKS.md and benchmarks.svg");
    }
}

pub struct Results {
    pub settings: Settings,
    pub servers: Vec<(Kind, Option<String>)>,
    pub rpc_ns: Vec<usize>,
    pub rpc: Vec<(Kind, Vec<Rate>)>,
    pub rpc_4k: Vec<(Kind, Rate)>,
    pub fan_ns: Vec<usize>,
    pub fanout: Vec<(Kind, Vec<Rate>)>,
    pub latency: Vec<(Kind, Vec<Latency>)>,
    pub memory: Vec<(Kind, Memory)>,
    pub patterns: (Rate, Rate),
    /// The ceiling at N=100 measured by the old tokio client and by the mio client.
    pub client_check: (Rate, Rate),
    /// N=100: v1 RPC, v2 json RPC, v2 msgpack RPC (to a handler), two-hop json, two-hop
    /// msgpack (to a client callee), v2 json fan-out to 1000 subscribers.
    pub versions: Vec<(Kind, [Option<Rate>; 6])>,
    /// Latency at half of each server's own maximum (its median v1 rate at N=100), round
    /// by round, and over all rounds' calls: the ceiling and the demo.
    pub target_latency: Vec<(Kind, Vec<Latency>, Latency)>,
    /// Before each latency round: per core, the milliseconds a spinning process lost in
    /// gaps of over 0.5 ms in one second, and the longest gap.
    pub host_stalls: Vec<Vec<Option<(f64, f64)>>>,
    /// The ceiling's v1 RPC alone, taken just before the demo's two-hop figures.
    pub two_hop_ceiling: Option<Rate>,
    /// The RPC-to-a-handler figures (v1, v2 json, v2 msgpack), round by round; round `i`
    /// of every server was taken in the same cycles of turns (`rpc_turns`).
    pub handler_rounds: Vec<(Kind, [Vec<Rate>; 3])>,
    /// The demo's v1 fan-out (to the v2 fan-out's number of subscribers) and its memory
    /// per idle session.
    pub demo_fanout_v1: Option<Rate>,
    pub demo_memory: Option<Memory>,
}

async fn run(smoke: bool) -> Results {
    let settings = if smoke {
        Settings {
            smoke,
            warmup: Duration::from_millis(100),
            measure: Duration::from_millis(300),
        }
    } else {
        Settings {
            smoke,
            warmup: Duration::from_millis(1000),
            measure: Duration::from_secs(3),
        }
    };
    let kinds: Vec<Kind> = if smoke {
        vec![Kind::TowerWamp, Kind::Ceiling]
    } else {
        vec![Kind::TowerWamp, Kind::Ceiling, Kind::WampIo, Kind::Autobahn]
    };
    let servers: Vec<(Kind, Option<String>)> = kinds
        .iter()
        .map(|k| (*k, servers::unavailable(*k)))
        .collect();
    for (k, why) in &servers {
        if let Some(why) = why {
            eprintln!("skipping {}: {why}", k.name());
        }
    }
    let available: Vec<Kind> = servers
        .iter()
        .filter(|(_, w)| w.is_none())
        .map(|(k, _)| *k)
        .collect();
    let rpc_ns = if smoke {
        vec![1, 10]
    } else {
        vec![1, 10, 100, 1000]
    };
    let fan_ns = if smoke {
        vec![1, 10]
    } else {
        vec![1, 100, 1000, 10_000]
    };
    let mut results = Results {
        settings,
        servers: servers.clone(),
        rpc_ns: rpc_ns.clone(),
        rpc: vec![],
        rpc_4k: vec![],
        fan_ns: fan_ns.clone(),
        fanout: vec![],
        latency: vec![],
        memory: vec![],
        patterns: (Rate::default(), Rate::default()),
        client_check: (Rate::default(), Rate::default()),
        versions: vec![],
        target_latency: vec![],
        host_stalls: vec![],
        two_hop_ceiling: None,
        handler_rounds: vec![],
        demo_fanout_v1: None,
        demo_memory: None,
    };
    let n100 = if smoke { 10 } else { 100 };
    {
        // Is the client the limit? The same ceiling, measured by both clients.
        let old = rpc(&servers::spawn(Kind::Ceiling, "0"), settings, n100, 1, 100).await;
        let new = rpc_on(
            &servers::spawn(Kind::Ceiling, "0"),
            settings,
            n100,
            1,
            100,
            Wire::V1,
        )
        .await;
        eprintln!(
            "client check: tokio client {:.0}/s at {:.0} % CPU, mio client {:.0}/s at {:.0} % CPU",
            old.per_second, old.client_cpu, new.per_second, new.client_cpu
        );
        results.client_check = (old, new);
    }
    let fan_n = if smoke { 10 } else { 1000 };
    let mut version_kinds = vec![Kind::Ceiling, Kind::TowerWamp, Kind::Demo];
    if !smoke {
        for peer in [Kind::Crossbar, Kind::Xconn, Kind::Battler] {
            match servers::unavailable(peer) {
                None => version_kinds.push(peer),
                Some(why) => eprintln!("skipping {}: {why}", peer.name()),
            }
        }
    }
    // RPC to a handler, the figures the targets compare with the ceiling: the ceiling, the
    // demo (v1, v2 json, v2 msgpack) and the bench router (the same three) all at once,
    // taking turns of `settings.turn()` (see `rpc_turns`), in five rounds.
    let rounds = if smoke { 1 } else { 5 };
    let wires = [Wire::V1, Wire::V2Json, Wire::V2Msgpack];
    let kinds3 = [Kind::Ceiling, Kind::TowerWamp, Kind::Demo];
    let turn_servers: Vec<Server> = kinds3.iter().map(|&k| servers::spawn(k, "0")).collect();
    let mut plan: Vec<(&Server, Wire)> = vec![(&turn_servers[0], Wire::V1)];
    for server in [&turn_servers[2], &turn_servers[1]] {
        plan.extend(wires.iter().map(|&w| (server, w)));
    }
    let figures = rpc_turns(&plan, settings, n100, rounds).await;
    let entries: Vec<(Kind, Wire)> = plan
        .iter()
        .map(|(server, wire)| (server.kind, *wire))
        .collect();
    drop(plan);
    drop(turn_servers);
    let mut handler_rpc: Vec<(Kind, [Vec<Rate>; 3])> = kinds3
        .into_iter()
        .map(|kind| (kind, [vec![], vec![], vec![]]))
        .collect();
    for ((kind, wire), rates) in entries.into_iter().zip(figures) {
        let col = wires.iter().position(|w| *w == wire).expect("a wire");
        let (_, all) = handler_rpc
            .iter_mut()
            .find(|(k, _)| *k == kind)
            .expect("a kind");
        all[col] = rates;
    }
    for round in 0..rounds {
        let at = |kind: Kind, col: usize| {
            handler_rpc
                .iter()
                .find(|(k, _)| *k == kind)
                .and_then(|(_, all)| all[col].get(round))
                .map_or(0.0, |r| r.per_second)
        };
        eprintln!(
            "round {round}: ceiling {:.0}/s; demo v1 {:.0}, v2 json {:.0}, v2 msgpack {:.0}/s; \
             bench router v1 {:.0}, v2 json {:.0}, v2 msgpack {:.0}/s",
            at(Kind::Ceiling, 0),
            at(Kind::Demo, 0),
            at(Kind::Demo, 1),
            at(Kind::Demo, 2),
            at(Kind::TowerWamp, 0),
            at(Kind::TowerWamp, 1),
            at(Kind::TowerWamp, 2),
        );
    }
    let median = |kind: Kind, which: usize| -> Option<Rate> {
        let (_, all) = handler_rpc.iter().find(|(k, _)| *k == kind)?;
        let mut rates = all[which].clone();
        rates.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
        // (Of an even count, the upper of the middle two.)
        rates.get(rates.len() / 2).copied()
    };
    // The latency target: p99 at half of each server's own maximum (its median v1 rate
    // above), the ceiling and the demo at once, taking turns of `settings.turn()`, in rounds.
    let mut pooled: Vec<(Kind, Vec<Latency>, hdrhistogram::Histogram<u64>)> = vec![];
    let lat_kinds: Vec<(Kind, f64)> = [Kind::Ceiling, Kind::Demo]
        .into_iter()
        .filter_map(|kind| {
            let max = median(kind, 0).filter(|r| r.per_second >= 1.0)?;
            Some((kind, (max.per_second * 0.5).max(100.0)))
        })
        .collect();
    for _ in 0..rounds {
        // What the host takes from each core just now (a spinning process per core).
        let stalls = host_stalls(Duration::from_secs(1));
        eprintln!("host stalls (lost, longest ms per core): {stalls:?}");
        results.host_stalls.push(stalls);
        let spawned: Vec<Server> = lat_kinds
            .iter()
            .map(|&(kind, _)| servers::spawn(kind, "0"))
            .collect();
        let targets: Vec<(&Server, f64)> = spawned
            .iter()
            .zip(&lat_kinds)
            .map(|(server, &(_, rate))| (server, rate))
            .collect();
        let figures = latency_turns(&targets, settings).await;
        for (&(kind, _), (l, h)) in lat_kinds.iter().zip(figures) {
            eprintln!(
                "{} latency at {:.0}/s: p50 {:.3} p99 {:.3} ms; {} of {} answered with results, {} errors",
                kind.name(),
                l.rate,
                l.p50,
                l.p99,
                l.results,
                l.sent,
                l.errors
            );
            match pooled.iter_mut().find(|(k, _, _)| *k == kind) {
                Some((_, all, hist)) => {
                    all.push(l);
                    hist.add(&h).expect("same bounds");
                }
                None => pooled.push((kind, vec![l], h)),
            }
        }
    }
    results.target_latency = pooled
        .into_iter()
        .map(|(kind, all, hist)| {
            let n = all.len() as f64;
            let all_calls = Latency::of(
                &hist,
                all[0].rate,
                all.iter().map(|l| l.achieved).sum::<f64>() / n,
                all.iter().map(|l| l.sent).sum(),
                all.iter().map(|l| l.errors).sum(),
            );
            (kind, all, all_calls)
        })
        .collect();
    for kind in version_kinds {
        let spawn = || servers::spawn(kind, "0");
        // Peers are routers only: no v1, no server-side procedure.
        let (v1, v2, v2m) = (median(kind, 0), median(kind, 1), median(kind, 2));
        let (hop, hopm, fan) = if kind == Kind::Ceiling {
            (None, None, None)
        } else {
            if kind == Kind::Demo {
                // The ceiling alone, just before, for the two-hop target: the two-hop
                // figures are taken alone too, not in turns.
                let ceiling = servers::spawn(Kind::Ceiling, "0");
                let alone = rpc_on(&ceiling, settings, n100, 1, 100, Wire::V1).await;
                results.two_hop_ceiling = Some(alone);
            }
            let hop = two_hop(&spawn(), settings, n100).await;
            let hopm = two_hop_as(&spawn(), settings, n100, Wire::V2Msgpack).await;
            let fan = Some(fanout_as(&spawn(), settings, fan_n, 16, Wire::V2Json).await);
            (Some(hop), Some(hopm), fan)
        };
        let show =
            |r: Option<Rate>| r.map_or("–".to_owned(), |r| format!("{:.0}/s", r.per_second));
        eprintln!(
            "{}: v1 {}, v2 json {}, v2 msgpack {}, two-hop json {}, msgpack {}, v2 fan-out {} (anomalies {})",
            kind.name(),
            show(v1),
            show(v2),
            show(v2m),
            show(hop),
            show(hopm),
            show(fan),
            [v1, v2, v2m, hop, hopm, fan]
                .iter()
                .flatten()
                .map(|r| r.anomalies)
                .sum::<u64>()
        );
        results.versions.push((kind, [v1, v2, v2m, hop, hopm, fan]));
    }
    results.handler_rounds = handler_rpc;
    // The demo's own v1 fan-out and idle memory, for the targets (set on the demo).
    {
        let fan = fanout(&servers::spawn(Kind::Demo, "0"), settings, fan_n, 16).await;
        eprintln!(
            "demo v1 fan-out n={fan_n}: {:.0}/s, anomalies {}",
            fan.per_second, fan.anomalies
        );
        results.demo_fanout_v1 = Some(fan);
        let m = memory(
            &servers::spawn(Kind::Demo, "0"),
            if smoke { 100 } else { 10_000 },
        )
        .await;
        eprintln!("demo memory: {:.1} KiB/session", m.kib_per_session);
        results.demo_memory = Some(m);
    }
    for &kind in &available {
        eprintln!("== {}", kind.name());
        let mut rates = vec![];
        for &n in &rpc_ns {
            let server = servers::spawn(kind, "0");
            let r = rpc_on(&server, settings, n, 1, 100, Wire::V1).await;
            eprintln!(
                "rpc n={n}: {:.0}/s, client {:.0} %",
                r.per_second, r.client_cpu
            );
            rates.push(r);
        }
        results.rpc.push((kind, rates));
        {
            let server = servers::spawn(kind, "0");
            let r = rpc_on(
                &server,
                settings,
                if smoke { 2 } else { 100 },
                1,
                4096,
                Wire::V1,
            )
            .await;
            eprintln!("rpc 4 KiB: {:.0}/s", r.per_second);
            results.rpc_4k.push((kind, r));
        }
        let mut fans = vec![];
        for &n in &fan_ns {
            let server = servers::spawn(kind, "0");
            let r = fanout(&server, settings, n, 16).await;
            eprintln!(
                "fan-out n={n}: {:.0}/s, anomalies {}",
                r.per_second, r.anomalies
            );
            fans.push(r);
        }
        results.fanout.push((kind, fans));
        // Latency at 10/50/80 % of this server's own maximum at N = 10.
        let max = results.rpc.last().unwrap().1[1].per_second;
        let mut lats = vec![];
        for share in [0.1, 0.5, 0.8] {
            let server = servers::spawn(kind, "0");
            let l = latency(&server, settings, (max * share).max(100.0)).await;
            eprintln!(
                "latency at {:.0}/s: p50 {:.3} p99 {:.3} ms",
                l.rate, l.p50, l.p99
            );
            lats.push(l);
        }
        results.latency.push((kind, lats));
        {
            let server = servers::spawn(kind, "0");
            let m = memory(&server, if smoke { 100 } else { 10_000 }).await;
            eprintln!(
                "memory: {:.1} KiB/session, {:.0} connects/s",
                m.kib_per_session, m.connects_per_second
            );
            results.memory.push((kind, m));
        }
    }
    {
        let n = if smoke { 10 } else { 100 };
        let plain = fanout(&servers::spawn(Kind::TowerWamp, "0"), settings, n, 16).await;
        let heavy = fanout(
            &servers::spawn(Kind::TowerWampPatterns, "0"),
            settings,
            n,
            16,
        )
        .await;
        eprintln!(
            "patterns: {:.0}/s vs {:.0}/s",
            plain.per_second, heavy.per_second
        );
        results.patterns = (plain, heavy);
    }
    results
}
