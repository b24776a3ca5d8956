//! Scale-out through a real Redis: two routers (nodes) serve one realm; publications on
//! either reach every subscriber on both, once and in order, with their lists applied, and
//! a Redis restart is survived. The tests start `redis-server` themselves on a free port
//! (Debian's `redis-server`, which `.ci/run` installs); without it they are skipped with a
//! message, except on CI.
#![cfg(feature = "redis")]

mod common;

use std::{net::SocketAddr, process::Stdio, time::Duration};

use common::{v2::*, *};
use serde_json::{Value, json};
use tower_wamp::{
    Topic, WampRouter,
    backplane::Redis,
    core::codec::v2::{Message, Serializer},
};

/// A `redis-server` of the test's own, stopped when dropped.
struct RedisServer {
    port: u16,
    child: tokio::process::Child,
}

impl RedisServer {
    async fn start_on(port: u16) -> Option<Self> {
        let child = tokio::process::Command::new("redis-server")
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
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "redis-server is needed on CI: {e}"
                );
                eprintln!("skipped: redis-server not found ({e}); `apt-get install redis-server`");
                return None;
            }
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(Self { port, child });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start on port {port}");
    }

    async fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port).await
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn stop(mut self) -> u16 {
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
        self.port
    }
}

fn node(redis: &str, channel: &str) -> WampRouter {
    WampRouter::new()
        .realm("realm1")
        .topic("com.example.*", Topic::new())
        .backplane(Redis::new(redis).channel(channel))
}

async fn two_nodes(redis: &RedisServer, channel: &str) -> (SocketAddr, SocketAddr) {
    let a = serve_router(node(&redis.url(), channel)).await;
    let b = serve_router(node(&redis.url(), channel)).await;
    (a, b)
}

async fn subscribe(c: &mut V2, topic: &str) -> u64 {
    match c.subscribe(topic).await {
        Message::Subscribed { subscription, .. } => subscription,
        other => panic!("{other:?}"),
    }
}

/// The first argument of the next EVENT.
async fn next_event(c: &mut V2) -> (u64, Value) {
    match c.recv().await {
        Message::Event {
            subscription, args, ..
        } => (subscription, args.into_iter().next().unwrap_or(Value::Null)),
        other => panic!("{other:?}"),
    }
}

/// Publishes until `c` hears one on `topic` (the nodes' Redis subscriptions are made as
/// they start: wait for them to be live before measuring anything).
async fn until_connected(publisher: &mut V2, c: &mut V2, topic: &str) {
    for _ in 0..100 {
        publisher
            .publish(topic, json!(["ping"]), json!({}), json!({}))
            .await;
        if let Ok(Some(Ok(_))) = tokio::time::timeout(
            Duration::from_millis(100),
            futures_util::StreamExt::next(&mut c.ws),
        )
        .await
        {
            // Drain any more pings in flight.
            while let Ok(Some(Ok(_))) = tokio::time::timeout(
                Duration::from_millis(200),
                futures_util::StreamExt::next(&mut c.ws),
            )
            .await
            {}
            return;
        }
    }
    panic!("the nodes never connected through Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_nodes_once_and_in_publication_order() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis, "order").await;
    let mut on_a = V2::join(a, Serializer::MsgPack).await;
    let mut on_b = V2::join(b, Serializer::Json).await;
    let mut publisher = V2::join(b, Serializer::Json).await;
    let (a1, a2) = (
        subscribe(&mut on_a, "com.example.one").await,
        subscribe(&mut on_a, "com.example.two").await,
    );
    let b1 = subscribe(&mut on_b, "com.example.one").await;
    until_connected(&mut publisher, &mut on_a, "com.example.one").await;
    while let Ok(Some(Ok(_))) =
        tokio::time::timeout(QUIET, futures_util::StreamExt::next(&mut on_b.ws)).await
    {}
    // 200 publications on B, across two topics.
    for n in 0..200 {
        let topic = if n % 2 == 0 {
            "com.example.one"
        } else {
            "com.example.two"
        };
        publisher
            .publish(topic, json!([n]), json!({}), json!({}))
            .await;
    }
    for n in 0..200 {
        let want = if n % 2 == 0 { a1 } else { a2 };
        assert_eq!(
            next_event(&mut on_a).await,
            (want, json!(n)),
            "on A, in order"
        );
    }
    for n in (0..200).step_by(2) {
        assert_eq!(next_event(&mut on_b).await, (b1, json!(n)), "on B, once");
    }
    for c in [&mut on_a, &mut on_b] {
        assert!(
            tokio::time::timeout(QUIET, futures_util::StreamExt::next(&mut c.ws))
                .await
                .is_err(),
            "no duplicates"
        );
    }
    // A v1 client on A and a v2 client on B chat.
    let mut v1 = connect(a).await;
    v1.subscribe("com.example.chat").await;
    let chat = subscribe(&mut on_b, "com.example.chat").await;
    tokio::time::sleep(QUIET).await;
    v1.send(json!([7, "com.example.chat", "hello from v1 on A"]))
        .await;
    assert_eq!(
        next_event(&mut on_b).await,
        (chat, json!("hello from v1 on A"))
    );
    // (A v1 publisher hears its own events, as clj-wamp's did.)
    assert_eq!(
        v1.recv().await,
        json!([8, "com.example.chat", "hello from v1 on A"])
    );
    publisher
        .publish(
            "com.example.chat",
            json!(["hello from v2 on B"]),
            json!({}),
            json!({}),
        )
        .await;
    assert_eq!(
        v1.recv().await,
        json!([8, "com.example.chat", "hello from v2 on B"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclude_and_eligible_name_sessions_on_any_node() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis, "lists").await;
    let mut x = V2::join(a, Serializer::Json).await;
    let mut y = V2::join(b, Serializer::Json).await;
    let mut publisher = V2::join(b, Serializer::Cbor).await;
    let sx = subscribe(&mut x, "com.example.l").await;
    let sy = subscribe(&mut y, "com.example.l").await;
    until_connected(&mut publisher, &mut x, "com.example.l").await;
    while let Ok(Some(Ok(_))) =
        tokio::time::timeout(QUIET, futures_util::StreamExt::next(&mut y.ws)).await
    {}
    for (n, options) in [
        (1, json!({"eligible": [x.session]})),
        (2, json!({"exclude": [x.session]})),
        (3, json!({"exclude_authrole": ["anonymous"]})),
        (4, json!({})),
    ] {
        publisher
            .publish("com.example.l", json!([n]), json!({}), options)
            .await;
    }
    assert_eq!(next_event(&mut x).await, (sx, json!(1)));
    assert_eq!(next_event(&mut x).await, (sx, json!(4)));
    assert_eq!(next_event(&mut y).await, (sy, json!(2)));
    assert_eq!(next_event(&mut y).await, (sy, json!(4)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_is_survived_and_what_it_missed_is_counted() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let url = redis.url();
    let router_b = node(&url, "restart");
    let wamp_b = router_b.handle();
    let router_a = node(&url, "restart");
    let wamp_a = router_a.handle();
    let a = serve_router(router_a).await;
    let b = serve_router(router_b).await;
    let mut on_a = V2::join(a, Serializer::Json).await;
    let mut on_b = V2::join(b, Serializer::Json).await;
    let mut publisher = V2::join(b, Serializer::Json).await;
    let sa = subscribe(&mut on_a, "com.example.r").await;
    let sb = subscribe(&mut on_b, "com.example.r").await;
    until_connected(&mut publisher, &mut on_a, "com.example.r").await;
    while let Ok(Some(Ok(_))) =
        tokio::time::timeout(QUIET, futures_util::StreamExt::next(&mut on_b.ws)).await
    {}

    let port = redis.stop().await;
    // Redis is down: B's own subscriber still gets B's publications.
    for n in 0..5 {
        publisher
            .publish(
                "com.example.r",
                json!([format!("down {n}")]),
                json!({}),
                json!({}),
            )
            .await;
        assert_eq!(
            next_event(&mut on_b).await,
            (sb, json!(format!("down {n}")))
        );
    }
    // All five are counted as not carried (within the reconnect attempts' pace).
    let mut lost = 0;
    for _ in 0..50 {
        lost = wamp_b.metrics().backplane_lost;
        if lost >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(lost >= 5, "what could not be carried is counted: {lost}");

    // Redis is back on the same port: the nodes reconnect and carry again.
    let _redis = RedisServer::start_on(port).await.unwrap();
    until_connected(&mut publisher, &mut on_a, "com.example.r").await;
    while let Ok(Some(Ok(_))) =
        tokio::time::timeout(QUIET, futures_util::StreamExt::next(&mut on_b.ws)).await
    {}
    publisher
        .publish("com.example.r", json!(["back"]), json!({}), json!({}))
        .await;
    assert_eq!(next_event(&mut on_a).await, (sa, json!("back")));
    assert!(wamp_b.metrics().backplane_reconnects >= 1);
    // A saw the gap in B's numbering: what it missed is counted there too.
    assert!(
        wamp_a.metrics().backplane_lost >= 5,
        "{:?}",
        wamp_a.metrics().backplane_lost
    );
}
