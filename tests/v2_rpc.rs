//! WAMP v2 progressive call results and call canceling over real sockets: between client
//! callees and callers, and with handlers of the router's own.
mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{v2::*, *};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tower_wamp::{
    Args, Progress, WampRouter,
    core::codec::v2::{Dict, Message, Serializer},
};

const SLOW: &str = "com.example.slow";

/// A callee that announced what it supports (`features` of its callee role).
async fn callee(addr: std::net::SocketAddr, serializer: Serializer, features: Value) -> V2 {
    let roles = json!({"roles": {"caller": {}, "callee": {"features": features}}});
    let mut c = V2::join_with(addr, serializer, "realm1", roles)
        .await
        .unwrap();
    let request = c.request();
    c.send(&Message::Register {
        request,
        options: Dict::new(),
        procedure: SLOW.into(),
    })
    .await;
    assert!(matches!(c.recv().await, Message::Registered { .. }));
    c
}

fn both() -> Value {
    json!({"call_canceling": true, "progressive_call_results": true})
}

fn router() -> WampRouter {
    WampRouter::new()
        .realm("realm1")
        .rpc("com.example.add", |Args(n): Args<Vec<i64>>| async move {
            n.iter().sum::<i64>()
        })
}

/// Sends CALL `SLOW` with `options`; returns the callee's INVOCATION (request, details).
async fn call_slow(caller: &mut V2, callee: &mut V2, options: Value) -> (u64, u64, Dict) {
    let request = caller.request();
    caller
        .send(&Message::Call {
            request,
            options: dict(options),
            procedure: SLOW.into(),
            args: vec![json!("go")],
            kwargs: Dict::new(),
        })
        .await;
    match callee.recv().await {
        Message::Invocation {
            request: invocation,
            details,
            ..
        } => (request, invocation, details),
        other => panic!("{other:?}"),
    }
}

async fn yield_(c: &mut V2, request: u64, arg: Value, progress: bool) {
    let options = if progress {
        dict(json!({"progress": true}))
    } else {
        Dict::new()
    };
    c.send(&Message::Yield {
        request,
        options,
        args: vec![arg],
        kwargs: Dict::new(),
    })
    .await;
}

async fn cancel(c: &mut V2, request: u64, options: Value) {
    c.send(&Message::Cancel {
        request,
        options: dict(options),
    })
    .await;
}

/// The next message must be the RESULT of an `add` call made now: nothing else was queued.
async fn nothing_queued(c: &mut V2) {
    match c.call("com.example.add", json!([1, 2]), json!({})).await {
        Message::Result { args, .. } => assert_eq!(args, vec![json!(3)]),
        other => panic!("something was queued before: {other:?}"),
    }
}

fn result(m: Message) -> (u64, bool, Vec<Value>) {
    match m {
        Message::Result {
            request,
            details,
            args,
            ..
        } => (request, details.get("progress") == Some(&json!(true)), args),
        other => panic!("{other:?}"),
    }
}

fn error(m: Message) -> (u64, String) {
    match m {
        Message::Error {
            request_type: 48,
            request,
            error,
            ..
        } => (request, error),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progressive_results_stream_from_a_client_callee_to_a_caller_that_asked() {
    let addr = serve_router(router()).await;
    for serializer in [Serializer::Json, Serializer::MsgPack, Serializer::Cbor] {
        let mut callee = callee(addr, serializer, both()).await;
        let mut caller = V2::join(addr, serializer).await;
        let features = &caller.welcome["roles"]["dealer"]["features"];
        assert_eq!(features["progressive_call_results"], true);
        assert_eq!(features["call_canceling"], true);

        let (request, invocation, details) =
            call_slow(&mut caller, &mut callee, json!({"receive_progress": true})).await;
        assert_eq!(details["receive_progress"], true, "{serializer:?}");
        yield_(&mut callee, invocation, json!(1), true).await;
        yield_(&mut callee, invocation, json!(2), true).await;
        yield_(&mut callee, invocation, json!("done"), false).await;
        assert_eq!(result(caller.recv().await), (request, true, vec![json!(1)]));
        assert_eq!(result(caller.recv().await), (request, true, vec![json!(2)]));
        assert_eq!(
            result(caller.recv().await),
            (request, false, vec![json!("done")])
        );
        // A progressive YIELD after the final one is late: dropped, the callee stays.
        yield_(&mut callee, invocation, json!(3), true).await;
        nothing_queued(&mut callee).await;
        nothing_queued(&mut caller).await;

        // A caller that did not ask gets only the final result, whatever the callee sends.
        let (request, invocation, details) = call_slow(&mut caller, &mut callee, json!({})).await;
        assert_eq!(details.get("receive_progress"), None);
        yield_(&mut callee, invocation, json!(1), true).await;
        yield_(&mut callee, invocation, json!("done"), false).await;
        assert_eq!(
            result(caller.recv().await),
            (request, false, vec![json!("done")])
        );
    }
}

#[tokio::test]
async fn a_callee_that_did_not_announce_progressive_results_is_not_asked_for_them() {
    let addr = serve_router(router()).await;
    // Progressive results without call_canceling count as unsupported (the spec's rule).
    for features in [json!({}), json!({"progressive_call_results": true})] {
        let mut callee = callee(addr, Serializer::Json, features).await;
        let mut caller = V2::join(addr, Serializer::Json).await;
        let (request, invocation, details) =
            call_slow(&mut caller, &mut callee, json!({"receive_progress": true})).await;
        assert_eq!(details.get("receive_progress"), None);
        yield_(&mut callee, invocation, json!(1), true).await;
        yield_(&mut callee, invocation, json!("done"), false).await;
        assert_eq!(
            result(caller.recv().await),
            (request, false, vec![json!("done")])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_skip_kill_and_killnowait_do_what_the_spec_says() {
    let addr = serve_router(router()).await;
    let mut callee = callee(addr, Serializer::Json, both()).await;
    let mut caller = V2::join(addr, Serializer::Json).await;

    // skip: the caller is answered at once, the callee is not told, its answer is dropped.
    let (request, invocation, _) = call_slow(&mut caller, &mut callee, json!({})).await;
    cancel(&mut caller, request, json!({"mode": "skip"})).await;
    assert_eq!(
        error(caller.recv().await),
        (request, "wamp.error.canceled".into())
    );
    nothing_queued(&mut callee).await;
    yield_(&mut callee, invocation, json!("late"), false).await;
    nothing_queued(&mut caller).await;
    nothing_queued(&mut callee).await;

    // killnowait, and a CANCEL without a mode: INTERRUPT, and the caller is answered at once.
    for options in [json!({"mode": "killnowait"}), json!({})] {
        let (request, invocation, _) = call_slow(&mut caller, &mut callee, json!({})).await;
        cancel(&mut caller, request, options).await;
        assert_eq!(
            error(caller.recv().await),
            (request, "wamp.error.canceled".into())
        );
        match callee.recv().await {
            Message::Interrupt { request, options } => {
                assert_eq!(request, invocation);
                assert_eq!(options["mode"], "killnowait");
            }
            other => panic!("{other:?}"),
        }
        yield_(&mut callee, invocation, json!("late"), false).await;
        nothing_queued(&mut caller).await;
        nothing_queued(&mut callee).await;
    }

    // kill: INTERRUPT, and the caller waits for the callee's answer, which it gets.
    let (request, invocation, _) = call_slow(&mut caller, &mut callee, json!({})).await;
    cancel(&mut caller, request, json!({"mode": "kill"})).await;
    match callee.recv().await {
        Message::Interrupt { request, options } => {
            assert_eq!(request, invocation);
            assert_eq!(options["mode"], "kill");
        }
        other => panic!("{other:?}"),
    }
    nothing_queued(&mut caller).await;
    callee
        .send(&Message::Error {
            request_type: 68,
            request: invocation,
            details: Dict::new(),
            error: "com.example.stopped".into(),
            args: vec![],
            kwargs: Dict::new(),
        })
        .await;
    assert_eq!(
        error(caller.recv().await),
        (request, "com.example.stopped".into())
    );

    // A CANCEL of a call that is not running is ignored; a second CANCEL too.
    cancel(&mut caller, request, json!({"mode": "kill"})).await;
    cancel(&mut caller, 999, json!({})).await;
    nothing_queued(&mut caller).await;
    nothing_queued(&mut callee).await;
}

#[tokio::test]
async fn a_callee_that_cannot_be_interrupted_is_skipped() {
    let addr = serve_router(router()).await;
    let mut callee = callee(addr, Serializer::Json, json!({})).await;
    let mut caller = V2::join(addr, Serializer::Json).await;
    let (request, invocation, _) = call_slow(&mut caller, &mut callee, json!({})).await;
    cancel(&mut caller, request, json!({"mode": "kill"})).await;
    assert_eq!(
        error(caller.recv().await),
        (request, "wamp.error.canceled".into())
    );
    nothing_queued(&mut callee).await;
    yield_(&mut callee, invocation, json!("late"), false).await;
    nothing_queued(&mut caller).await;
    nothing_queued(&mut callee).await;

    // Nor on a timeout, nor when its caller leaves.
    let (request, _, _) = call_slow(&mut caller, &mut callee, json!({"timeout": 50})).await;
    assert_eq!(
        error(caller.recv().await),
        (request, "wamp.error.timeout".into())
    );
    call_slow(&mut caller, &mut callee, json!({})).await;
    drop(caller);
    tokio::time::sleep(QUIET).await;
    nothing_queued(&mut callee).await;
}

#[tokio::test]
async fn a_kill_that_the_callee_ignores_can_be_followed_by_a_skip() {
    let addr = serve_router(router()).await;
    let mut callee = callee(addr, Serializer::Json, both()).await;
    let mut caller = V2::join(addr, Serializer::Json).await;
    let (request, invocation, _) = call_slow(&mut caller, &mut callee, json!({})).await;
    cancel(&mut caller, request, json!({"mode": "kill"})).await;
    assert!(matches!(callee.recv().await, Message::Interrupt { .. }));
    nothing_queued(&mut caller).await;
    cancel(&mut caller, request, json!({"mode": "skip"})).await;
    assert_eq!(
        error(caller.recv().await),
        (request, "wamp.error.canceled".into())
    );
    // Interrupted once only.
    nothing_queued(&mut callee).await;
    yield_(&mut callee, invocation, json!("late"), false).await;
    nothing_queued(&mut caller).await;
}

#[tokio::test]
async fn a_call_that_reuses_the_id_of_a_running_one_is_a_protocol_violation() {
    let addr = serve_router(router()).await;
    let mut callee = callee(addr, Serializer::Json, both()).await;
    let mut caller = V2::join(addr, Serializer::Json).await;
    let (request, _, _) = call_slow(&mut caller, &mut callee, json!({})).await;
    caller
        .send(&Message::Call {
            request,
            options: Dict::new(),
            procedure: SLOW.into(),
            args: vec![],
            kwargs: Dict::new(),
        })
        .await;
    match caller.recv().await {
        Message::Abort { reason, .. } => assert_eq!(reason, "wamp.error.protocol_violation"),
        other => panic!("{other:?}"),
    }
}

/// The same with a handler of the router's own that waits (its CANCEL's sender is made
/// once it waits), and with one that answered: its id is free again.
#[tokio::test]
async fn a_call_that_reuses_the_id_of_a_waiting_handler_call_is_a_protocol_violation() {
    let router = router().rpc("com.example.forever", std::future::pending::<()>);
    let addr = serve_router(router).await;
    let mut caller = V2::join(addr, Serializer::Json).await;
    let call = |request, procedure: &str| Message::Call {
        request,
        options: Dict::new(),
        procedure: procedure.into(),
        args: vec![json!(1), json!(2)],
        kwargs: Dict::new(),
    };
    caller.send(&call(1, "com.example.add")).await;
    assert!(matches!(
        caller.recv().await,
        Message::Result { request: 1, .. }
    ));
    caller.send(&call(1, "com.example.add")).await;
    assert!(matches!(
        caller.recv().await,
        Message::Result { request: 1, .. }
    ));
    caller.send(&call(2, "com.example.forever")).await;
    caller.send(&call(2, "com.example.forever")).await;
    match caller.recv().await {
        Message::Abort { reason, .. } => assert_eq!(reason, "wamp.error.protocol_violation"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_streaming_faster_than_its_caller_reads_ends_the_call_not_the_caller() {
    let layer = tower_wamp::WampLayer::new(router()).outbound_queue_bytes(1 << 20);
    let addr = serve_layer(layer).await;
    let mut callee = callee(addr, Serializer::Json, both()).await;
    let mut caller = V2::join(addr, Serializer::Json).await;
    let (request, invocation, _) =
        call_slow(&mut caller, &mut callee, json!({"receive_progress": true})).await;
    // 16 MiB of progressive results to a caller that does not read meanwhile: more than
    // the socket buffers and its queue (1 MiB) hold.
    let chunk = json!("x".repeat(64 << 10));
    for _ in 0..256 {
        yield_(&mut callee, invocation, chunk.clone(), true).await;
    }
    match callee.recv().await {
        Message::Interrupt { request, options } => {
            assert_eq!(
                (request, &options["mode"]),
                (invocation, &json!("killnowait"))
            );
        }
        other => panic!("{other:?}"),
    }
    // The caller reads: some progress, then the ERROR; it is still connected.
    let mut progress = 0;
    loop {
        match caller.recv().await {
            Message::Result { details, .. } if details.get("progress").is_some() => progress += 1,
            Message::Error {
                request: r, error, ..
            } => {
                assert_eq!((r, error.as_str()), (request, "wamp.error.canceled"));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(progress < 256, "{progress}");
    nothing_queued(&mut caller).await;
}

#[tokio::test]
async fn with_progressive_results_the_timeout_runs_from_the_last_one() {
    let addr = serve_router(router()).await;
    let mut callee = callee(addr, Serializer::Json, both()).await;
    let mut caller = V2::join(addr, Serializer::Json).await;
    let (request, invocation, _) = call_slow(
        &mut caller,
        &mut callee,
        json!({"receive_progress": true, "timeout": 300}),
    )
    .await;
    // Five results 150 ms apart: 750 ms in all, never 300 ms without one.
    for n in 0..5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        yield_(&mut callee, invocation, json!(n), true).await;
        assert_eq!(result(caller.recv().await), (request, true, vec![json!(n)]));
    }
    // Then silence: the timeout ends it.
    assert_eq!(
        error(caller.recv().await),
        (request, "wamp.error.timeout".into())
    );
}

#[tokio::test]
async fn a_bad_cancel_mode_is_a_protocol_violation() {
    let addr = serve_router(router()).await;
    let mut caller = V2::join(addr, Serializer::Json).await;
    cancel(&mut caller, 1, json!({"mode": "later"})).await;
    match caller.recv().await {
        Message::Abort { reason, .. } => assert_eq!(reason, "wamp.error.protocol_violation"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_or_a_caller_that_leaves_interrupts_the_callee() {
    let addr = serve_router(router()).await;
    let mut callee = callee(addr, Serializer::Json, both()).await;
    let mut caller = V2::join(addr, Serializer::Json).await;
    let (request, invocation, _) =
        call_slow(&mut caller, &mut callee, json!({"timeout": 50})).await;
    assert_eq!(
        error(caller.recv().await),
        (request, "wamp.error.timeout".into())
    );
    match callee.recv().await {
        Message::Interrupt { request, options } => {
            assert_eq!(
                (request, &options["mode"]),
                (invocation, &json!("killnowait"))
            );
        }
        other => panic!("{other:?}"),
    }

    let (_, invocation, _) = call_slow(&mut caller, &mut callee, json!({})).await;
    drop(caller);
    match callee.recv().await {
        Message::Interrupt { request, .. } => assert_eq!(request, invocation),
        other => panic!("{other:?}"),
    }
}

/// Sets its flag when dropped: tells that a handler's future was dropped.
struct Dropped(Arc<AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_streams_progress_through_its_extractor_and_is_dropped_when_canceled() {
    for whole_pipeline in [false, true] {
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = dropped.clone();
        let spoke_late = Arc::new(AtomicBool::new(false));
        let late = spoke_late.clone();
        let router = router()
            .rpc("com.example.count", move |progress: Progress| {
                let late = late.clone();
                async move {
                    let wanted = progress.wanted();
                    for n in 1..=3 {
                        progress.send(&n);
                    }
                    // Moved elsewhere, it cannot speak after the answer.
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        if progress.send(&"after") {
                            late.store(true, Ordering::SeqCst);
                        }
                    });
                    json!({"wanted": wanted})
                }
            })
            .rpc("com.example.forever", move || {
                let guard = Dropped(flag.clone());
                async move {
                    let _guard = guard;
                    std::future::pending::<()>().await;
                }
            });
        // Through the router's quick start, and through its whole pipeline (which a
        // before_call hook, even one that changes nothing, takes calls through).
        let router = if whole_pipeline {
            router.before_call(|call| async move { Ok(call) })
        } else {
            router
        };
        let addr = serve_router(router).await;
        let mut caller = V2::join(addr, Serializer::MsgPack).await;
        let request = caller.request();
        caller
            .send(&Message::Call {
                request,
                options: dict(json!({"receive_progress": true})),
                procedure: "com.example.count".into(),
                args: vec![],
                kwargs: Dict::new(),
            })
            .await;
        for n in 1..=3 {
            assert_eq!(result(caller.recv().await), (1, true, vec![json!(n)]));
        }
        assert_eq!(
            result(caller.recv().await),
            (1, false, vec![json!({"wanted": true})])
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!spoke_late.load(Ordering::SeqCst));
        // Without receive_progress: the final result alone.
        match caller.call("com.example.count", json!([]), json!({})).await {
            Message::Result { details, args, .. } => {
                assert!(details.get("progress").is_none());
                assert_eq!(args, vec![json!({"wanted": false})]);
            }
            other => panic!("{other:?}"),
        }
        nothing_queued(&mut caller).await;

        let request = caller.request();
        caller
            .send(&Message::Call {
                request,
                options: Dict::new(),
                procedure: "com.example.forever".into(),
                args: vec![],
                kwargs: Dict::new(),
            })
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!dropped.load(Ordering::SeqCst));
        cancel(&mut caller, request, json!({"mode": "kill"})).await;
        assert_eq!(
            error(caller.recv().await),
            (request, "wamp.error.canceled".into())
        );
        assert!(dropped.load(Ordering::SeqCst), "the handler was dropped");
        assert!(
            tokio::time::timeout(QUIET, caller.ws.next()).await.is_err(),
            "nothing follows"
        );
    }
}

/// A caller that announced progressive call invocations.
async fn streaming_caller(addr: std::net::SocketAddr) -> V2 {
    let roles = json!({"roles": {"caller": {"features": {"progressive_call_invocations": true}}}});
    V2::join_with(addr, Serializer::Json, "realm1", roles)
        .await
        .unwrap()
}

/// A CALL of `procedure` under `request`, as one chunk (`progress`: more follow).
async fn chunk(c: &mut V2, request: u64, procedure: &str, arg: Value, progress: bool) {
    let options = if progress {
        dict(json!({"progress": true}))
    } else {
        Dict::new()
    };
    c.send(&Message::Call {
        request,
        options,
        procedure: procedure.into(),
        args: vec![arg],
        kwargs: Dict::new(),
    })
    .await;
}

/// The next INVOCATION's (request, progress in details, first argument).
async fn invocation(c: &mut V2) -> (u64, bool, Value) {
    match c.recv().await {
        Message::Invocation {
            request,
            details,
            args,
            ..
        } => (
            request,
            details.get("progress") == Some(&json!(true)),
            args[0].clone(),
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progressive_call_invocations_stream_a_callers_chunks_to_one_callee() {
    let addr = serve_router(router()).await;
    let probe = V2::join(addr, Serializer::Json).await;
    assert_eq!(
        probe.welcome["roles"]["dealer"]["features"]["progressive_call_invocations"],
        true
    );
    let streams = json!({"call_canceling": true, "progressive_call_invocations": true});
    let mut streamer = callee(addr, Serializer::MsgPack, streams).await;
    let mut caller = streaming_caller(addr).await;

    // Three chunks under one request id: one INVOCATION id, `progress` on all but the last.
    let request = caller.request();
    chunk(&mut caller, request, SLOW, json!("a"), true).await;
    let (invoked, more, arg) = invocation(&mut streamer).await;
    assert_eq!((more, arg), (true, json!("a")));
    chunk(&mut caller, request, SLOW, json!("b"), true).await;
    assert_eq!(invocation(&mut streamer).await, (invoked, true, json!("b")));
    chunk(&mut caller, request, SLOW, json!("c"), false).await;
    assert_eq!(
        invocation(&mut streamer).await,
        (invoked, false, json!("c"))
    );
    yield_(&mut streamer, invoked, json!("abc"), false).await;
    match caller.recv().await {
        Message::Result {
            request: r, args, ..
        } => assert_eq!((r, args), (request, vec![json!("abc")])),
        other => panic!("{other:?}"),
    }
    // A CALL for the call that ended is discarded: the next reply answers the next call.
    chunk(&mut caller, request, SLOW, json!("late"), false).await;
    let next = caller.next + 1;
    match caller
        .call("com.example.add", json!([1, 2]), json!({}))
        .await
    {
        Message::Result {
            request: r, args, ..
        } => assert_eq!((r, args), (next, vec![json!(3)])),
        other => panic!("{other:?}"),
    }

    // A callee that did not announce them cannot take one; nor can a handler of ours.
    // (Once the close handshake is answered, its registration is gone.)
    streamer.ws.close(None).await.unwrap();
    while let Some(Ok(_)) = streamer.ws.next().await {}
    let mut plain = callee(addr, Serializer::Json, both()).await;
    let request = caller.request();
    chunk(&mut caller, request, SLOW, json!("x"), true).await;
    match caller.recv().await {
        Message::Error { error, .. } => assert_eq!(error, "wamp.error.feature_not_supported"),
        other => panic!("{other:?}"),
    }
    let request = caller.request();
    chunk(&mut caller, request, "com.example.add", json!(1), true).await;
    match caller.recv().await {
        Message::Error { error, .. } => assert_eq!(error, "wamp.error.feature_not_supported"),
        other => panic!("{other:?}"),
    }
    // Later chunks of a refused call are discarded, not sent anywhere.
    chunk(&mut caller, request, "com.example.add", json!(2), false).await;
    let next = caller.next + 1;
    match caller
        .call("com.example.add", json!([2, 2]), json!({}))
        .await
    {
        Message::Result {
            request: r, args, ..
        } => assert_eq!((r, args), (next, vec![json!(4)])),
        other => panic!("{other:?}"),
    }
    drop(plain.ws.close(None).await);

    // A caller that did not announce them commits a protocol violation.
    let mut rude = V2::join(addr, Serializer::Json).await;
    let request = rude.request();
    chunk(&mut rude, request, SLOW, json!("x"), true).await;
    match rude.recv().await {
        Message::Abort { reason, .. } => assert_eq!(reason, "wamp.error.protocol_violation"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canceled_progressive_call_invocation_interrupts_its_callee_and_takes_no_more_chunks() {
    let addr = serve_router(router()).await;
    let streams = json!({"call_canceling": true, "progressive_call_invocations": true});
    let mut callee = callee(addr, Serializer::Json, streams).await;
    let mut caller = streaming_caller(addr).await;
    let request = caller.request();
    chunk(&mut caller, request, SLOW, json!(1), true).await;
    let (invoked, _, _) = invocation(&mut callee).await;
    caller
        .send(&Message::Cancel {
            request,
            options: dict(json!({"mode": "killnowait"})),
        })
        .await;
    match caller.recv().await {
        Message::Error { error, .. } => assert_eq!(error, "wamp.error.canceled"),
        other => panic!("{other:?}"),
    }
    match callee.recv().await {
        Message::Interrupt { request, .. } => assert_eq!(request, invoked),
        other => panic!("{other:?}"),
    }
    // More chunks go nowhere; the callee's next message is the next call's invocation.
    for i in 2..10 {
        chunk(&mut caller, request, SLOW, json!(i), true).await;
    }
    chunk(&mut caller, request, SLOW, json!(10), false).await;
    let next = caller.request();
    chunk(&mut caller, next, SLOW, json!("next"), false).await;
    let (again, more, arg) = invocation(&mut callee).await;
    assert_eq!((more, arg), (false, json!("next")));
    assert_ne!(again, invoked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progressive_call_invocations_that_end_early_free_their_place() {
    let addr = serve_router(router()).await;
    let streams = json!({"call_canceling": true, "progressive_call_invocations": true});
    let mut callee = callee(addr, Serializer::Json, streams).await;
    let mut caller = streaming_caller(addr).await;
    // More than the 64 a session may stream at once, each answered by the callee after its
    // first chunk (the spec allows that): the caller sends no more chunks of any.
    for i in 0..100 {
        let request = caller.request();
        chunk(&mut caller, request, SLOW, json!(i), true).await;
        let (invoked, more, arg) = invocation(&mut callee).await;
        assert_eq!((more, arg), (true, json!(i)), "stream {i}");
        callee
            .send(&Message::Error {
                request_type: 68,
                request: invoked,
                details: Dict::new(),
                error: "com.example.enough".into(),
                args: vec![],
                kwargs: Dict::new(),
            })
            .await;
        match caller.recv().await {
            Message::Error {
                request: r, error, ..
            } => {
                assert_eq!((r, error.as_str()), (request, "com.example.enough"));
            }
            other => panic!("{other:?}"),
        }
    }
}

/// A v2 call's id, as the `CallId` extractor gives it, is its request id written out (made
/// only when asked for), in a handler that answers at once and in one that waits.
#[tokio::test]
async fn a_handler_sees_a_v2_call_id_as_its_request_id() {
    let router = router()
        .rpc(
            "com.example.id",
            |tower_wamp::CallId(id): tower_wamp::CallId| async move { id },
        )
        .rpc(
            "com.example.id_later",
            |tower_wamp::CallId(id): tower_wamp::CallId| async move {
                tokio::task::yield_now().await;
                id
            },
        );
    let addr = serve_router(router).await;
    for serializer in [Serializer::Json, Serializer::MsgPack] {
        let mut c = V2::join(addr, serializer).await;
        for procedure in ["com.example.id", "com.example.id_later"] {
            match c.call(procedure, json!([]), json!({})).await {
                Message::Result { request, args, .. } => {
                    assert_eq!(args, vec![json!(request.to_string())], "{procedure}");
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
