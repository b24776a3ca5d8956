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
    assert!(
        !wamp_b.metrics().backplane_up,
        "the health signal says down"
    );

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
    assert!(wamp_b.metrics().backplane_up, "and up again");
    // A saw the gap in B's numbering: what it missed is counted there too.
    assert!(
        wamp_a.metrics().backplane_lost >= 5,
        "{:?}",
        wamp_a.metrics().backplane_lost
    );
}

/// A v2 callee on `addr` that announced canceling and progressive results, with
/// `procedure` registered under `options`.
async fn callee_on(addr: SocketAddr, procedure: &str, options: Value) -> Result<V2, String> {
    let roles = json!({"roles": {"caller": {}, "callee": {"features": {
        "call_canceling": true, "progressive_call_results": true}}}});
    let mut c = V2::join_with(addr, Serializer::MsgPack, "realm1", roles)
        .await
        .unwrap();
    let request = c.request();
    c.send(&Message::Register {
        request,
        options: dict(options),
        procedure: procedure.into(),
    })
    .await;
    match c.recv().await {
        Message::Registered { .. } => Ok(c),
        Message::Error { error, .. } => Err(error),
        other => panic!("{other:?}"),
    }
}

/// Sends CALL `procedure` with `options`; its request id.
async fn start_call(c: &mut V2, procedure: &str, arg: Value, options: Value) -> u64 {
    let request = c.request();
    c.send(&Message::Call {
        request,
        options: dict(options),
        procedure: procedure.into(),
        args: vec![arg],
        kwargs: Default::default(),
    })
    .await;
    request
}

/// The next INVOCATION's request id, details and first argument.
async fn invocation(c: &mut V2) -> (u64, tower_wamp::core::codec::v2::Dict, Value) {
    match c.recv().await {
        Message::Invocation {
            request,
            details,
            args,
            ..
        } => (
            request,
            details,
            args.into_iter().next().unwrap_or(Value::Null),
        ),
        other => panic!("{other:?}"),
    }
}

/// Calls until the procedure is known on the caller's node (registrations cross nodes
/// as they are made): the first INVOCATION.
async fn until_routed(caller: &mut V2, callee: &mut V2, procedure: &str) -> (u64, u64) {
    for _ in 0..100 {
        let request = start_call(caller, procedure, json!("probe"), json!({})).await;
        match tokio::time::timeout(Duration::from_millis(100), callee.recv()).await {
            Ok(Message::Invocation { request: inv, .. }) => return (request, inv),
            Ok(other) => panic!("{other:?}"),
            Err(_) => match caller.recv().await {
                Message::Error { error, .. } if error == "wamp.error.no_such_procedure" => {}
                other => panic!("{other:?}"),
            },
        }
    }
    panic!("the registration never reached the other node");
}

async fn yield_(c: &mut V2, request: u64, arg: Value, options: Value) {
    c.send(&Message::Yield {
        request,
        options: dict(options),
        args: vec![arg],
        kwargs: Default::default(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_procedure_registered_on_one_node_is_called_from_another() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis, "rpc").await;
    let mut callee = callee_on(a, "com.example.remote", json!({})).await.unwrap();
    let mut caller = V2::join(b, Serializer::Json).await;
    let (request, inv) = until_routed(&mut caller, &mut callee, "com.example.remote").await;
    yield_(&mut callee, inv, json!("pong"), json!({})).await;
    match caller.recv().await {
        Message::Result {
            request: r, args, ..
        } => assert_eq!((r, args), (request, vec![json!("pong")])),
        other => panic!("{other:?}"),
    }

    // Unique across nodes: a single registration on b is refused, as is another policy.
    for options in [json!({}), json!({"invoke": "roundrobin"})] {
        assert_eq!(
            callee_on(b, "com.example.remote", options)
                .await
                .err()
                .as_deref(),
            Some("wamp.error.procedure_already_exists")
        );
    }

    // Arguments, kwargs and the caller's identity reach the callee; an ERROR comes back whole.
    let request = start_call(
        &mut caller,
        "com.example.remote",
        json!({"k": [1, "ü"]}),
        json!({"disclose_me": true}),
    )
    .await;
    let (inv, details, arg) = invocation(&mut callee).await;
    assert_eq!(arg, json!({"k": [1, "ü"]}));
    assert_eq!(details["caller"], json!(caller.session));
    callee
        .send(&Message::Error {
            request_type: 68,
            request: inv,
            details: Default::default(),
            error: "com.example.error.nope".into(),
            args: vec![json!("no")],
            kwargs: dict(json!({"why": 42})),
        })
        .await;
    match caller.recv().await {
        Message::Error {
            request: r,
            error,
            args,
            kwargs,
            ..
        } => {
            assert_eq!((r, error.as_str()), (request, "com.example.error.nope"));
            assert_eq!(
                (args, kwargs),
                (vec![json!("no")], dict(json!({"why": 42})))
            );
        }
        other => panic!("{other:?}"),
    }

    // Progressive results, in order, before the final one.
    let request = start_call(
        &mut caller,
        "com.example.remote",
        json!(3),
        json!({"receive_progress": true}),
    )
    .await;
    let (inv, details, _) = invocation(&mut callee).await;
    assert_eq!(details["receive_progress"], true);
    for i in [1, 2] {
        yield_(&mut callee, inv, json!(i), json!({"progress": true})).await;
    }
    yield_(&mut callee, inv, json!("done"), json!({})).await;
    for (i, progress) in [(json!(1), true), (json!(2), true), (json!("done"), false)] {
        match caller.recv().await {
            Message::Result {
                request: r,
                details,
                args,
                ..
            } => {
                assert_eq!((r, args), (request, vec![i]));
                assert_eq!(details.get("progress") == Some(&json!(true)), progress);
            }
            other => panic!("{other:?}"),
        }
    }

    // CANCEL (killnowait): the caller is answered at once, the callee interrupted.
    let request = start_call(&mut caller, "com.example.remote", json!(0), json!({})).await;
    let (inv, _, _) = invocation(&mut callee).await;
    caller
        .send(&Message::Cancel {
            request,
            options: dict(json!({"mode": "killnowait"})),
        })
        .await;
    match caller.recv().await {
        Message::Error {
            request: r, error, ..
        } => assert_eq!((r, error.as_str()), (request, "wamp.error.canceled")),
        other => panic!("{other:?}"),
    }
    match callee.recv().await {
        Message::Interrupt { request, .. } => assert_eq!(request, inv),
        other => panic!("{other:?}"),
    }

    // The caller's node owns the timeout: it answers, and the callee is interrupted.
    let request = start_call(
        &mut caller,
        "com.example.remote",
        json!(0),
        json!({"timeout": 200}),
    )
    .await;
    let (inv, _, _) = invocation(&mut callee).await;
    match caller.recv().await {
        Message::Error {
            request: r, error, ..
        } => assert_eq!((r, error.as_str()), (request, "wamp.error.timeout")),
        other => panic!("{other:?}"),
    }
    match callee.recv().await {
        Message::Interrupt { request, .. } => assert_eq!(request, inv),
        other => panic!("{other:?}"),
    }
    // Its late answer goes nowhere: the next call is answered by its own result.
    yield_(&mut callee, inv, json!("late"), json!({})).await;
    let request = start_call(&mut caller, "com.example.remote", json!(0), json!({})).await;
    let (inv, _, _) = invocation(&mut callee).await;
    yield_(&mut callee, inv, json!("fresh"), json!({})).await;
    match caller.recv().await {
        Message::Result {
            request: r, args, ..
        } => assert_eq!((r, args), (request, vec![json!("fresh")])),
        other => panic!("{other:?}"),
    }

    // The callee leaves: its registration is gone on the other node too.
    drop(callee);
    let mut gone = false;
    for _ in 0..100 {
        let request = start_call(&mut caller, "com.example.remote", json!(0), json!({})).await;
        match caller.recv().await {
            Message::Error {
                request: r, error, ..
            } if r == request && error == "wamp.error.no_such_procedure" => {
                gone = true;
                break;
            }
            Message::Error { error, .. } if error == "wamp.error.canceled" => {}
            other => panic!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the registration stayed known after its callee left");
}

/// A multi-threaded runtime of `workers` threads (a node in one of its own can be killed
/// as in a crash by shutting it down).
fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_lost_node_fails_the_calls_pending_there() {
    let (rt, doomed) = (runtime(2), runtime(1));
    let Some(redis) = rt.block_on(RedisServer::start()) else {
        return;
    };
    let url = redis.url();
    // The callee's node runs in a runtime of its own (`doomed`), shut down mid-call: its
    // tasks, its heartbeat and its Redis connections end at once, as in a crash.
    let a = doomed.block_on(serve_router(node(&url, "lost")));
    let (mut caller, callee, request) = rt.block_on(async {
        let b = serve_router(node(&url, "lost")).await;
        // The callee's client runs on the test's runtime: only its node dies.
        let mut callee = callee_on(a, "com.example.doomed", json!({})).await.unwrap();
        let mut caller = V2::join(b, Serializer::Json).await;
        let (request, _) = until_routed(&mut caller, &mut callee, "com.example.doomed").await;
        (caller, callee, request)
    });
    let lost_at = std::time::Instant::now();
    doomed.shutdown_background();
    rt.block_on(async move {
        // Within the heartbeat's bound (5 s silent, checked every second), not never.
        let answer = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(Ok(frame)) = futures_util::StreamExt::next(&mut caller.ws).await {
                    let bytes = frame.into_data();
                    if bytes.is_empty() {
                        continue;
                    }
                    return tower_wamp::core::codec::v2::decode(Serializer::Json, &bytes).unwrap();
                }
            }
        })
        .await
        .expect("the call to the lost node was answered");
        match answer {
            Message::Error {
                request: r, error, ..
            } => {
                assert_eq!((r, error.as_str()), (request, "wamp.error.canceled"));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            lost_at.elapsed() >= Duration::from_secs(4),
            "not before the node was silent"
        );
        drop(callee);
        drop(redis);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_meta_api_answers_for_every_node() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let with_meta = || node(&redis.url(), "meta").meta_api(true);
    let (router_a, router_b) = (with_meta(), with_meta());
    let handle_b = router_b.handle();
    let (a, b) = (serve_router(router_a).await, serve_router(router_b).await);
    let on_a = [
        V2::join(a, Serializer::Json).await,
        V2::join(a, Serializer::Cbor).await,
    ];
    let mut asker = V2::join(b, Serializer::MsgPack).await;
    let mut all: Vec<u64> = on_a
        .iter()
        .map(|c| c.session)
        .chain([asker.session])
        .collect();
    all.sort_unstable();
    // The nodes know each other once a heartbeat has crossed.
    let mut listed = Value::Null;
    for _ in 0..50 {
        match asker.call("wamp.session.list", json!([]), json!({})).await {
            Message::Result { args, .. } => listed = args[0].clone(),
            other => panic!("{other:?}"),
        }
        if listed == json!(all) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed, json!(all), "sessions of both nodes");
    match asker
        .call("wamp.session.count", json!([["anonymous"]]), json!({}))
        .await
    {
        Message::Result { args, .. } => assert_eq!(args, vec![json!(3)]),
        other => panic!("{other:?}"),
    }
    match asker
        .call("wamp.session.count", json!([["nobody"]]), json!({}))
        .await
    {
        Message::Result { args, .. } => assert_eq!(args, vec![json!(0)]),
        other => panic!("{other:?}"),
    }
    match asker
        .call("wamp.session.get", json!([on_a[1].session]), json!({}))
        .await
    {
        Message::Result { args, .. } => {
            assert_eq!(args[0]["session"], json!(on_a[1].session));
            assert_eq!(args[0]["transport"]["protocol"], "wamp.2.cbor");
        }
        other => panic!("{other:?}"),
    }
    match asker
        .call("wamp.session.get", json!([12345]), json!({}))
        .await
    {
        Message::Error { error, .. } => assert_eq!(error, "wamp.error.no_such_session"),
        other => panic!("{other:?}"),
    }
    // The server handle asks every node too.
    let strings = |ids: Vec<tower_wamp::SessionId>| -> Vec<String> {
        ids.iter().map(|s| s.as_str().to_owned()).collect()
    };
    let mut want: Vec<String> = all.iter().map(u64::to_string).collect();
    want.sort();
    assert_eq!(strings(handle_b.sessions_everywhere().await), want);
    assert_eq!(handle_b.sessions().len(), 1, "this node's own");
    let mut watcher = V2::join(a, Serializer::Json).await;
    assert!(matches!(
        watcher.subscribe("com.example.present").await,
        Message::Subscribed { .. }
    ));
    assert_eq!(
        strings(handle_b.subscribers_everywhere("com.example.present").await),
        vec![watcher.session.to_string()]
    );
    // Session joins and leaves are told on every node.
    let joins = match watcher.subscribe("wamp.session.on_join").await {
        Message::Subscribed { subscription, .. } => subscription,
        other => panic!("{other:?}"),
    };
    let newcomer = V2::join(b, Serializer::Json).await;
    match watcher.recv().await {
        Message::Event {
            subscription, args, ..
        } => {
            assert_eq!(subscription, joins);
            assert_eq!(args[0]["session"], json!(newcomer.session));
        }
        other => panic!("{other:?}"),
    }
}

/// The first argument of a call's RESULT (panics on an ERROR).
async fn result_of(c: &mut V2, procedure: &str, args: Value) -> Value {
    match c.call(procedure, args, json!({})).await {
        Message::Result { args, .. } => args.into_iter().next().unwrap_or(Value::Null),
        other => panic!("{procedure}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_churning_across_nodes_leave_no_trace() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let routers = [
        node(&redis.url(), "churn").meta_api(true),
        node(&redis.url(), "churn").meta_api(true),
        node(&redis.url(), "churn").meta_api(true),
    ];
    let handles: Vec<_> = routers.iter().map(WampRouter::handle).collect();
    let mut addrs = Vec::new();
    for r in routers {
        addrs.push(serve_router(r).await);
    }
    // 3,000 sessions in rounds of 150, a third on each of three nodes: each subscribes
    // (exact and prefix), registers a procedure of its own (told to the other nodes), and
    // leaves, half with GOODBYE, half by dropping the connection.
    for round in 0..20 {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..150 {
            let addr = addrs[i % 3];
            tasks.spawn(async move {
                let mut c = V2::join(addr, Serializer::Json).await;
                assert!(matches!(
                    c.subscribe(&format!("com.example.churn.{}", i % 7)).await,
                    Message::Subscribed { .. }
                ));
                let request = c.request();
                c.send(&Message::Subscribe {
                    request,
                    options: dict(json!({"match": "prefix"})),
                    topic: "com.example.churn.".into(),
                })
                .await;
                assert!(matches!(c.recv().await, Message::Subscribed { .. }));
                let request = c.request();
                c.send(&Message::Register {
                    request,
                    options: Default::default(),
                    procedure: format!("com.example.churn.p{round}.{i}"),
                })
                .await;
                assert!(matches!(c.recv().await, Message::Registered { .. }));
                if i % 2 == 0 {
                    c.send(&Message::Goodbye {
                        details: Default::default(),
                        reason: "wamp.close.close_realm".into(),
                    })
                    .await;
                    assert!(matches!(c.recv().await, Message::Goodbye { .. }));
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    }
    // Every node's tables empty, its view of the other node's registrations too, within
    // a heartbeat or two.
    let mut checkers = Vec::new();
    for addr in &addrs {
        checkers.push(V2::join(*addr, Serializer::Json).await);
    }
    let empty = json!({"exact": [], "prefix": [], "wildcard": []});
    let mut clean = false;
    for _ in 0..50 {
        let mut all = true;
        for (c, handle) in checkers.iter_mut().zip(&handles) {
            all &= handle.sessions().len() == 1 && handle.topic_count() == 0;
            all &= result_of(c, "wamp.subscription.list", json!([])).await == empty;
            all &= result_of(c, "wamp.registration.list", json!([])).await == empty;
            all &= result_of(c, "wamp.session.count", json!([])).await == json!(3);
            // The other nodes' sessions it knows of: their checkers.
            all &= handle.metrics().backplane_sessions_elsewhere == 2;
            match c
                .call("com.example.churn.p19.1", json!([]), json!({}))
                .await
            {
                Message::Error { error, .. } => all &= error == "wamp.error.no_such_procedure",
                other => panic!("{other:?}"),
            }
        }
        if all {
            clean = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(clean, "tables left behind");
    // Every registration's name is let go in Redis (within the announcer's pace), not left
    // to lapse.
    let mut keys = String::new();
    for _ in 0..50 {
        keys = redis_cli(&redis, &["DBSIZE"]).await;
        if keys == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(keys, "0", "names left in Redis");
    let m = handles[0].metrics();
    assert_eq!(m.sessions_open, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_another_node_fail_fast_while_redis_is_down() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis, "outage").await;
    let mut callee = callee_on(a, "com.example.far", json!({})).await.unwrap();
    let mut caller = V2::join(b, Serializer::Json).await;
    let (request, _) = until_routed(&mut caller, &mut callee, "com.example.far").await;
    let port = redis.stop().await;
    // The pending call ends (its answer could be lost), within the heartbeat's second.
    match caller.recv().await {
        Message::Error {
            request: r, error, ..
        } => {
            assert_eq!((r, error.as_str()), (request, "wamp.error.network_failure"));
        }
        other => panic!("{other:?}"),
    }
    // And a new one fails at once, not at its timeout.
    let request = start_call(&mut caller, "com.example.far", json!(1), json!({})).await;
    match caller.recv().await {
        Message::Error {
            request: r, error, ..
        } => {
            assert_eq!((r, error.as_str()), (request, "wamp.error.network_failure"));
        }
        other => panic!("{other:?}"),
    }
    drop(RedisServer::start_on(port).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_procedure_registered_on_two_nodes_at_once_goes_to_one() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis, "race").await;
    // Both nodes connected (a first call of each takes the directory's answer).
    let mut kept = Vec::new();
    for i in 0..20 {
        let procedure = format!("com.example.race.{i}");
        let (on_a, on_b) = tokio::join!(
            callee_on(a, &procedure, json!({})),
            callee_on(b, &procedure, json!({}))
        );
        let won = [on_a.is_ok(), on_b.is_ok()];
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "{procedure}: {:?}",
            [on_a.as_ref().err(), on_b.as_ref().err()]
        );
        for lost in [on_a.as_ref().err(), on_b.as_ref().err()]
            .into_iter()
            .flatten()
        {
            assert_eq!(lost, "wamp.error.procedure_already_exists");
        }
        kept.extend(on_a.ok());
        kept.extend(on_b.ok());
    }
    // A name is let go when its callee leaves: the other node may take it then.
    let procedure = "com.example.race.handover";
    let first = callee_on(a, procedure, json!({})).await.unwrap();
    assert!(callee_on(b, procedure, json!({})).await.is_err());
    drop(first);
    let mut taken = false;
    for _ in 0..50 {
        if callee_on(b, procedure, json!({})).await.is_ok() {
            taken = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(taken, "the name was let go");
    // Shared registrations with one policy take callees on both nodes.
    let shared = json!({"invoke": "roundrobin"});
    let (x, y) = tokio::join!(
        callee_on(a, "com.example.race.shared", shared.clone()),
        callee_on(b, "com.example.race.shared", shared)
    );
    assert!(x.is_ok() && y.is_ok(), "{:?} {:?}", x.err(), y.err());
}

/// `redis-cli` against the test's server.
async fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    let out = tokio::process::Command::new("redis-cli")
        .arg("-p")
        .arg(redis.port.to_string())
        .args(args)
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_messages_may_be_lost_ends_instead_of_hanging() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let router_b = node(&redis.url(), "blip");
    let wamp_b = router_b.handle();
    let a = serve_router(node(&redis.url(), "blip")).await;
    let b = serve_router(router_b).await;
    let mut callee = callee_on(a, "com.example.blip", json!({})).await.unwrap();
    let mut caller = V2::join(b, Serializer::Json).await;
    let (request, _) = until_routed(&mut caller, &mut callee, "com.example.blip").await;
    // Redis drops every subscriber connection (as an output buffer limit or a failover
    // would); the nodes reconnect at once, but what was on its way is gone: the call,
    // without a timeout of its own, ends rather than wait forever.
    assert_ne!(
        redis_cli(&redis, &["CLIENT", "KILL", "TYPE", "pubsub"]).await,
        "0"
    );
    match caller.recv().await {
        Message::Error {
            request: r, error, ..
        } => {
            assert_eq!((r, error.as_str()), (request, "wamp.error.network_failure"));
        }
        other => panic!("{other:?}"),
    }
    assert!(wamp_b.metrics().backplane_calls_failed >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_and_immediate_cancels_cross_nodes() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let aliased = || node(&redis.url(), "alias").alias("com.example.nick", "com.example.real");
    let (a, b) = (serve_router(aliased()).await, serve_router(aliased()).await);
    let roles = json!({"roles": {"caller": {}, "callee": {"features": {
        "call_canceling": true, "progressive_call_results": true}}}});
    let mut callee = V2::join_with(a, Serializer::Json, "realm1", roles)
        .await
        .unwrap();
    let request = callee.request();
    callee
        .send(&Message::Register {
            request,
            options: Default::default(),
            procedure: "com.example.real".into(),
        })
        .await;
    assert!(matches!(callee.recv().await, Message::Registered { .. }));
    let mut caller = V2::join(b, Serializer::Json).await;
    let (request, inv) = until_routed(&mut caller, &mut callee, "com.example.real").await;
    yield_(&mut callee, inv, json!("ok"), json!({})).await;
    assert!(matches!(caller.recv().await, Message::Result { request: r, .. } if r == request));
    // Called by its alias on the other node.
    let request = start_call(&mut caller, "com.example.nick", json!(1), json!({})).await;
    let (inv, _, arg) = invocation(&mut callee).await;
    assert_eq!(arg, json!(1));
    yield_(&mut callee, inv, json!("by alias"), json!({})).await;
    match caller.recv().await {
        Message::Result {
            request: r, args, ..
        } => assert_eq!((r, args), (request, vec![json!("by alias")])),
        other => panic!("{other:?}"),
    }
    // A CANCEL right behind its CALL (kill): the callee is interrupted, and its answer
    // goes to the caller.
    for _ in 0..20 {
        let request = start_call(&mut caller, "com.example.real", json!(2), json!({})).await;
        caller
            .send(&Message::Cancel {
                request,
                options: dict(json!({"mode": "kill"})),
            })
            .await;
        let (inv, _, _) = invocation(&mut callee).await;
        match callee.recv().await {
            Message::Interrupt { request, .. } => assert_eq!(request, inv),
            other => panic!("{other:?}"),
        }
        callee
            .send(&Message::Error {
                request_type: 68,
                request: inv,
                details: Default::default(),
                error: "wamp.error.canceled".into(),
                args: vec![],
                kwargs: Default::default(),
            })
            .await;
        match caller.recv().await {
            Message::Error {
                request: r, error, ..
            } => {
                assert_eq!((r, error.as_str()), (request, "wamp.error.canceled"));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_does_not_fail_calls_that_are_only_late() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis, "pause").await;
    let mut callee = callee_on(a, "com.example.late", json!({})).await.unwrap();
    let mut caller = V2::join(b, Serializer::Json).await;
    let (request, inv) = until_routed(&mut caller, &mut callee, "com.example.late").await;
    yield_(&mut callee, inv, json!(0), json!({})).await;
    assert!(matches!(caller.recv().await, Message::Result { request: r, .. } if r == request));
    // Redis holds every client for 3 s: lists of running calls written before the call
    // arrived come after its deadline for being "on its way"; it is late, not lost.
    assert_eq!(
        redis_cli(&redis, &["CLIENT", "PAUSE", "3000", "ALL"]).await,
        "OK"
    );
    let request = start_call(&mut caller, "com.example.late", json!(1), json!({})).await;
    let (inv, _, arg) = invocation(&mut callee).await;
    assert_eq!(arg, json!(1));
    yield_(&mut callee, inv, json!("on time"), json!({})).await;
    match caller.recv().await {
        Message::Result {
            request: r, args, ..
        } => assert_eq!((r, args), (request, vec![json!("on time")])),
        other => panic!("{other:?}"),
    }
}

/// Calls `procedure` from `caller` once; the callee of `callees` that got it (answered,
/// and the RESULT checked).
async fn which_callee(caller: &mut V2, callees: &mut [&mut V2], procedure: &str) -> usize {
    let request = start_call(caller, procedure, json!("which"), json!({})).await;
    let (i, inv) = {
        let mut waits: Vec<_> = callees
            .iter_mut()
            .enumerate()
            .map(|(i, c)| Box::pin(async move { (i, c.recv().await) }))
            .collect();
        let ((i, message), _, _) = futures_util::future::select_all(waits.iter_mut()).await;
        drop(waits);
        match message {
            Message::Invocation { request, .. } => (i, request),
            other => panic!("{other:?}"),
        }
    };
    yield_(callees[i], inv, json!(i), json!({})).await;
    match caller.recv().await {
        Message::Result {
            request: r, args, ..
        } => assert_eq!((r, args), (request, vec![json!(i)])),
        other => panic!("{other:?}"),
    }
    i
}

/// Calls until callee `want` gets one (the other node's registration has reached the
/// caller's node).
async fn until_reaches(caller: &mut V2, callees: &mut [&mut V2], procedure: &str, want: usize) {
    for _ in 0..100 {
        if which_callee(caller, callees, procedure).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{procedure}: callee {want} never got a call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_policies_and_best_matches_hold_across_nodes() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis, "policies").await;
    let mut caller_a = V2::join(a, Serializer::Json).await;
    let mut caller_b = V2::join(b, Serializer::Json).await;

    // Round robin over every callee of the cluster, not only the caller's node's: two
    // callees on A, one on B, called from A, take turns.
    let rr = "com.example.policy.rr";
    let shared = json!({"invoke": "roundrobin"});
    let mut a1 = callee_on(a, rr, shared.clone()).await.unwrap();
    let mut a2 = callee_on(a, rr, shared.clone()).await.unwrap();
    let mut b1 = callee_on(b, rr, shared).await.unwrap();
    until_reaches(&mut caller_a, &mut [&mut a1, &mut a2, &mut b1], rr, 2).await;
    let mut counts = [0; 3];
    for _ in 0..30 {
        counts[which_callee(&mut caller_a, &mut [&mut a1, &mut a2, &mut b1], rr).await] += 1;
    }
    assert_eq!(counts, [10, 10, 10], "round robin over both nodes");

    // `first` and `last` by when each callee joined, whichever node it is on.
    for (invoke, want) in [("first", 0), ("last", 1)] {
        let procedure = format!("com.example.policy.{invoke}");
        let options = json!({ "invoke": invoke });
        let mut on_a = callee_on(a, &procedure, options.clone()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut on_b = callee_on(b, &procedure, options).await.unwrap();
        // From the node that does not have the chosen callee.
        let caller = if want == 0 {
            &mut caller_b
        } else {
            &mut caller_a
        };
        until_reaches(caller, &mut [&mut on_a, &mut on_b], &procedure, want).await;
        for _ in 0..5 {
            assert_eq!(
                which_callee(caller, &mut [&mut on_a, &mut on_b], &procedure).await,
                want,
                "{invoke}"
            );
        }
    }

    // The best match of the whole cluster: an exact registration on B over a prefix one
    // on A, for a caller on A; the prefix one still takes what only it matches.
    let mut prefix = callee_on(a, "com.example.policy.pfx.", json!({"match": "prefix"}))
        .await
        .unwrap();
    let mut exact = callee_on(b, "com.example.policy.pfx.add", json!({}))
        .await
        .unwrap();
    let add = "com.example.policy.pfx.add";
    until_reaches(&mut caller_a, &mut [&mut prefix, &mut exact], add, 1).await;
    for _ in 0..5 {
        assert_eq!(
            which_callee(&mut caller_a, &mut [&mut prefix, &mut exact], add).await,
            1
        );
    }
    let other = "com.example.policy.pfx.sub";
    assert_eq!(
        which_callee(&mut caller_b, &mut [&mut prefix, &mut exact], other).await,
        0
    );
}

/// The sessions told as left to `watcher` (subscribed to `wamp.session.on_leave` as
/// `subscription`) until `until`, or until `want` of them came; sorted. Answers to calls
/// the watcher made are passed over.
async fn leaves_until(
    watcher: &mut V2,
    subscription: u64,
    until: tokio::time::Instant,
    want: Option<usize>,
) -> Vec<u64> {
    let mut left = Vec::new();
    while want.is_none_or(|n| left.len() < n) {
        let Ok(frame) =
            tokio::time::timeout_at(until, futures_util::StreamExt::next(&mut watcher.ws)).await
        else {
            break;
        };
        let bytes = frame.unwrap().unwrap().into_data();
        if bytes.is_empty() {
            continue;
        }
        match tower_wamp::core::codec::v2::decode(Serializer::Json, &bytes).unwrap() {
            Message::Event {
                subscription: s,
                args,
                ..
            } => {
                assert_eq!(s, subscription);
                left.push(args[0].as_u64().unwrap());
            }
            Message::Error { .. } | Message::Result { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    left.sort_unstable();
    left
}

#[test]
fn a_lost_nodes_sessions_leave_on_the_other_nodes() {
    let (rt, doomed) = (runtime(2), runtime(1));
    let Some(redis) = rt.block_on(RedisServer::start()) else {
        return;
    };
    let url = redis.url();
    // The node that dies runs in a runtime of its own (see the lost-node test above).
    let b = doomed.block_on(serve_router(node(&url, "gone").meta_api(true)));
    let (mut watcher, gone, ons) = rt.block_on(async {
        // One session joined before the other node listened, one after.
        let early = V2::join(b, Serializer::Json).await;
        let mut callee = callee_on(b, "com.example.gone", json!({})).await.unwrap();
        let a = serve_router(node(&url, "gone").meta_api(true)).await;
        let mut watcher = V2::join(a, Serializer::Json).await;
        let ons = match watcher.subscribe("wamp.session.on_leave").await {
            Message::Subscribed { subscription, .. } => subscription,
            other => panic!("{other:?}"),
        };
        // A has heard of B (and asked for its sessions).
        until_routed(&mut watcher, &mut callee, "com.example.gone").await;
        let late = V2::join(b, Serializer::Json).await;
        let mut gone = vec![early.session, callee.session, late.session];
        gone.sort_unstable();
        // The late one's on_join has reached A before B dies.
        tokio::time::sleep(Duration::from_millis(500)).await;
        std::mem::forget((early, late, callee));
        (watcher, gone, ons)
    });
    doomed.shutdown_background();
    rt.block_on(async move {
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        let left = leaves_until(&mut watcher, ons, until, Some(gone.len())).await;
        assert_eq!(left, gone, "every session of the lost node left");
        drop(redis);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_publications_does_not_push_out_a_call() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let router_b = node(&redis.url(), "burst");
    let handle_b = router_b.handle();
    let a = serve_router(node(&redis.url(), "burst")).await;
    let b = serve_router(router_b).await;
    let mut callee = callee_on(a, "com.example.burst", json!({})).await.unwrap();
    let mut caller = V2::join(b, Serializer::Json).await;
    let (request, inv) = until_routed(&mut caller, &mut callee, "com.example.burst").await;
    yield_(&mut callee, inv, json!(0), json!({})).await;
    assert!(matches!(caller.recv().await, Message::Result { request: r, .. } if r == request));
    // Redis holds B's publisher for 2 s while B publishes more than its backplane queue
    // holds; then B calls the procedure on A.
    assert_eq!(
        redis_cli(&redis, &["CLIENT", "PAUSE", "2000", "WRITE"]).await,
        "OK"
    );
    let lost_before = handle_b.metrics().backplane_lost;
    for i in 0..6000 {
        let _ = handle_b.publish("com.example.burst.news", &json!([i]));
    }
    assert!(
        handle_b.metrics().backplane_lost > lost_before,
        "the queue overflowed"
    );
    let request = start_call(&mut caller, "com.example.burst", json!(1), json!({})).await;
    let (inv, _, arg) = invocation(&mut callee).await;
    assert_eq!(arg, json!(1));
    yield_(&mut callee, inv, json!("through"), json!({})).await;
    match caller.recv().await {
        Message::Result {
            request: r, args, ..
        } => assert_eq!((r, args), (request, vec![json!("through")])),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_lost_nodes_procedures_may_be_registered_elsewhere_once_it_is_lost() {
    let (rt, doomed) = (runtime(2), runtime(1));
    let Some(redis) = rt.block_on(RedisServer::start()) else {
        return;
    };
    let url = redis.url();
    let a = doomed.block_on(serve_router(node(&url, "taken")));
    let (b, callee) = rt.block_on(async {
        let b = serve_router(node(&url, "taken")).await;
        let mut callee = callee_on(a, "com.example.taken", json!({})).await.unwrap();
        let mut caller = V2::join(b, Serializer::Json).await;
        until_routed(&mut caller, &mut callee, "com.example.taken").await;
        assert_eq!(
            callee_on(b, "com.example.taken", json!({})).await.err(),
            Some("wamp.error.procedure_already_exists".into())
        );
        // B's backplane is up for longer than a node takes to be lost (names are let go
        // only then: not after an outage, when every hold looks stale).
        tokio::time::sleep(Duration::from_secs(2)).await;
        (b, callee)
    });
    let lost_at = std::time::Instant::now();
    doomed.shutdown_background();
    rt.block_on(async move {
        // Lost within 4–6 s (5 s silent, checked every second); its hold on the name would
        // lapse only 7–10 s after it died (renewed every 3 s for 10 s).
        let taken = loop {
            let attempt = callee_on(b, "com.example.taken", json!({})).await;
            assert!(
                lost_at.elapsed() < Duration::from_millis(6900),
                "the lost node's name was not let go before it lapsed"
            );
            if let Ok(c) = attempt {
                break c;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        drop((taken, callee, redis));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_across_nodes_keeps_its_turn_while_registrations_change() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis, "turns").await;
    let rr = "com.example.turns";
    let shared = json!({"invoke": "roundrobin"});
    let mut on_a = callee_on(a, rr, shared.clone()).await.unwrap();
    let mut on_b = callee_on(b, rr, shared).await.unwrap();
    let mut caller = V2::join(a, Serializer::Json).await;
    until_reaches(&mut caller, &mut [&mut on_a, &mut on_b], rr, 1).await;
    // Between any two calls, B's registrations change (and A hears of it).
    let mut churn = V2::join(b, Serializer::Json).await;
    let mut counts = [0; 2];
    for i in 0..20 {
        counts[which_callee(&mut caller, &mut [&mut on_a, &mut on_b], rr).await] += 1;
        let request = churn.request();
        churn
            .send(&Message::Register {
                request,
                options: Default::default(),
                procedure: format!("com.example.turns.other{i}"),
            })
            .await;
        assert!(matches!(churn.recv().await, Message::Registered { .. }));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(counts, [10, 10], "each callee in turn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_procedure_may_be_registered_again_under_another_policy_at_once() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, _b) = two_nodes(&redis, "switch").await;
    let procedure = "com.example.switch";
    let mut c = V2::join(a, Serializer::Json).await;
    let request = c.request();
    c.send(&Message::Register {
        request,
        options: Default::default(),
        procedure: procedure.into(),
    })
    .await;
    let Message::Registered { registration, .. } = c.recv().await else {
        panic!("not registered");
    };
    let request = c.request();
    c.send(&Message::Unregister {
        request,
        registration,
    })
    .await;
    assert!(matches!(c.recv().await, Message::Unregistered { .. }));
    // Its name is still held for the single callee that just left (let go at the
    // announcer's pace): a shared registration of it takes it over at once.
    let shared = callee_on(a, procedure, json!({"invoke": "roundrobin"})).await;
    assert!(shared.is_ok(), "{:?}", shared.err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_shuts_down_tells_each_leave_once() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let router_b = node(&redis.url(), "bye").meta_api(true);
    let handle_b = router_b.handle();
    let a = serve_router(node(&redis.url(), "bye").meta_api(true)).await;
    let b = serve_router(router_b).await;
    let mut watcher = V2::join(a, Serializer::Json).await;
    let leaves = subscribe(&mut watcher, "wamp.session.on_leave").await;
    let mut callee = callee_on(b, "com.example.bye", json!({})).await.unwrap();
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(V2::join(b, Serializer::Json).await);
    }
    until_routed(&mut watcher, &mut callee, "com.example.bye").await;
    let mut gone: Vec<u64> = others.iter().map(|c| c.session).collect();
    gone.push(callee.session);
    gone.sort_unstable();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(handle_b.shutdown(Duration::from_secs(2)).await);
    // Each leave once: none told again when A finds B gone (5 s later).
    let until = tokio::time::Instant::now() + Duration::from_secs(8);
    let left = leaves_until(&mut watcher, leaves, until, None).await;
    assert_eq!(left, gone);
    drop((others, callee));
}
