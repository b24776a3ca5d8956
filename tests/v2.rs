//! WAMP v2 over real sockets, in every serializer, and across versions: v2 clients and v1
//! clients on one router share handlers, topics, rules and authentication.
mod common;

use std::{net::SocketAddr, time::Duration};

use common::{v2::*, *};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message as Ws, client::IntoClientRequest, http::HeaderValue};
use tower_wamp::{
    Args, Kwargs, RpcError, Topic, WampLayer, WampRouter,
    auth::{Secret, WampCra},
    core::{
        auth::{AuthKey, Permissions, derive_key, sign},
        codec::v2::{Dict, Message, Serializer, decode},
    },
};

const CHAT: &str = "com.example.chat";

fn router() -> WampRouter {
    WampRouter::new()
        .realm("realm1")
        .topic(CHAT, Topic::new())
        .topic("http://example.com/event#chat", Topic::new())
        .topic(
            "com.example.closed",
            Topic::new().deny_subscribe().deny_publish(),
        )
        .rpc("com.example.add", |Args(n): Args<Vec<f64>>| async move {
            n.iter().sum::<f64>()
        })
        .rpc("com.example.greet", |Kwargs(k): Kwargs<Value>| async move {
            format!("hello {}", k["name"].as_str().unwrap_or("?"))
        })
        .rpc("com.example.fail", || async {
            Err::<(), _>(
                RpcError::new("com.example.error.oops", "it failed")
                    .with_details(json!({"code": 7})),
            )
        })
}

#[tokio::test]
async fn every_serializer_opens_a_session_and_calls_a_handler() {
    let addr = serve_router(router()).await;
    for serializer in Serializer::ALL {
        let mut c = V2::join(addr, serializer).await;
        assert!((1..=1 << 53).contains(&c.session));
        assert_eq!(c.welcome["authrole"], "anonymous");
        assert_eq!(
            c.welcome["roles"]["broker"]["features"]["publisher_exclusion"],
            true
        );
        match c
            .call("com.example.add", json!([1, 2, 3.5]), json!({}))
            .await
        {
            Message::Result {
                request: 1,
                args,
                kwargs,
                ..
            } => {
                assert_eq!(args, vec![json!(6.5)], "{serializer:?}");
                assert!(kwargs.is_empty());
            }
            other => panic!("{serializer:?}: {other:?}"),
        }
        match c
            .call("com.example.greet", json!([]), json!({"name": "ada"}))
            .await
        {
            Message::Result { args, .. } => assert_eq!(args, vec![json!("hello ada")]),
            other => panic!("{other:?}"),
        }
        match c.call("com.example.fail", json!([]), json!({})).await {
            Message::Error {
                request_type: 48,
                request: 3,
                error,
                args,
                ..
            } => {
                assert_eq!(error, "com.example.error.oops");
                assert_eq!(args, vec![json!("it failed"), json!({"code": 7})]);
            }
            other => panic!("{other:?}"),
        }
        match c.call("com.example.nothing", json!([]), json!({})).await {
            Message::Error { error, .. } => assert_eq!(error, "wamp.error.no_such_procedure"),
            other => panic!("{other:?}"),
        }
        match c.call("com.example.add", json!(["x"]), json!({})).await {
            Message::Error { error, .. } => assert_eq!(error, "wamp.error.invalid_argument"),
            other => panic!("{other:?}"),
        }
        c.send(&Message::Goodbye {
            details: Dict::new(),
            reason: "wamp.close.normal".into(),
        })
        .await;
        match c.recv().await {
            Message::Goodbye { reason, .. } => assert_eq!(reason, "wamp.close.goodbye_and_out"),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn the_server_prefers_v2_json_and_a_wrong_realm_is_aborted() {
    let addr = serve_router(router()).await;
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("wamp, wamp.2.cbor, wamp.2.json"),
    );
    let (_ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "wamp.2.json");
    let refused = V2::join_with(addr, Serializer::Json, "realm2", json!({})).await;
    assert_eq!(refused.err().as_deref(), Some("wamp.error.no_such_realm"));
}

#[tokio::test]
async fn events_cross_versions_both_ways_in_every_serializer() {
    let addr = serve_router(router()).await;
    let mut v1 = connect(addr).await;
    v1.subscribe(CHAT).await;
    let mut subs = Vec::new();
    for serializer in Serializer::ALL {
        let mut c = V2::join(addr, serializer).await;
        let Message::Subscribed {
            request: 1,
            subscription,
        } = c.subscribe(CHAT).await
        else {
            panic!()
        };
        subs.push((c, subscription));
    }
    let ids: Vec<u64> = subs.iter().map(|(_, id)| *id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "one subscription id per topic: {ids:?}"
    );
    // v1 → v2: the event is args[0].
    v1.send(json!([7, CHAT, {"said": "hi"}])).await;
    assert_eq!(
        v1.recv().await,
        json!([8, CHAT, {"said": "hi"}]),
        "v1 publishers get their own events"
    );
    for (c, subscription) in &mut subs {
        match c.recv().await {
            Message::Event {
                subscription: s,
                args,
                kwargs,
                ..
            } => {
                assert_eq!(s, *subscription);
                assert_eq!(args, vec![json!({"said": "hi"})]);
                assert!(kwargs.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }
    // v2 → v1 and v2, with binary in args, acknowledged; the publisher is excluded.
    let binary = tower_wamp::core::codec::v2::binary_string(&[0, 1, 254, 255]);
    let (publisher, _) = &mut subs[1];
    publisher
        .publish(
            CHAT,
            json!([binary, 2]),
            json!({"k": true}),
            json!({"acknowledge": true}),
        )
        .await;
    assert!(matches!(
        publisher.recv().await,
        Message::Published { request: 2, .. }
    ));
    assert_eq!(
        v1.recv().await,
        json!([8, CHAT, {"args": [binary, 2], "kwargs": {"k": true}}])
    );
    for i in [0, 2] {
        match subs[i].0.recv().await {
            Message::Event { args, kwargs, .. } => {
                assert_eq!(args, vec![json!(binary), json!(2)]);
                assert_eq!(kwargs, dict(json!({"k": true})));
            }
            other => panic!("{other:?}"),
        }
    }
    subs[1].0.ws.close(None).await.unwrap();
    // Unsubscribe, then nothing more arrives; a refused publish is an ERROR when acknowledged.
    let (c, subscription) = &mut subs[0];
    c.send(&Message::Unsubscribe {
        request: 2,
        subscription: *subscription,
    })
    .await;
    assert_eq!(c.recv().await, Message::Unsubscribed { request: 2 });
    c.send(&Message::Unsubscribe {
        request: 3,
        subscription: *subscription,
    })
    .await;
    assert!(
        matches!(c.recv().await, Message::Error { request_type: 34, error, .. } if error == "wamp.error.no_such_subscription")
    );
    c.publish(
        "com.example.closed",
        json!([1]),
        json!({}),
        json!({"acknowledge": true}),
    )
    .await;
    assert!(
        matches!(c.recv().await, Message::Error { request_type: 16, error, .. } if error == "wamp.error.not_authorized")
    );
    assert!(
        matches!(c.subscribe("com.example.closed").await, Message::Error { request_type: 32, error, .. } if error == "wamp.error.not_authorized")
    );
    v1.send(json!([7, CHAT, 1])).await;
    assert_eq!(v1.recv().await, json!([8, CHAT, 1]));
    let quiet = tokio::time::timeout(QUIET, c.ws.next()).await;
    assert!(quiet.is_err(), "no event after UNSUBSCRIBE: {quiet:?}");
}

#[tokio::test]
async fn protocol_violations_are_aborted() {
    let addr = serve_router(router()).await;
    // A message before HELLO.
    let mut ws = open(addr, Serializer::Json).await;
    ws.send(Ws::text(r#"[32, 1, {}, "com.example.chat"]"#))
        .await
        .unwrap();
    let Some(Ok(Ws::Text(t))) = ws.next().await else {
        panic!()
    };
    assert!(
        matches!(decode(Serializer::Json, t.as_bytes()).unwrap(), Message::Abort { reason, .. } if reason == "wamp.error.protocol_violation")
    );
    // A YIELD nobody asked for, and a text frame on msgpack.
    let mut c = V2::join(addr, Serializer::Json).await;
    c.send(&Message::Yield {
        request: 9,
        options: Dict::new(),
        args: vec![],
        kwargs: Dict::new(),
    })
    .await;
    assert!(
        matches!(c.recv().await, Message::Abort { reason, .. } if reason == "wamp.error.protocol_violation")
    );
    let mut c = V2::join(addr, Serializer::MsgPack).await;
    c.ws.send(Ws::text("[48, 1, {}, \"com.example.add\"]"))
        .await
        .unwrap();
    assert!(
        matches!(c.recv().await, Message::Abort { reason, .. } if reason == "wamp.error.protocol_violation")
    );
}

fn cra_router() -> WampRouter {
    router().auth(
        WampCra::new(
            |_s, key: String, _e| async move {
                match key.as_str() {
                    "ada" => Some(Secret::plain("secret")),
                    "carol" => Some(Secret::salted("secret", "salt123", 1000, 32)),
                    _ => None,
                }
            },
            |_s, key: AuthKey| async move {
                match key {
                    AuthKey::Key(_) => Permissions::all(),
                    _ => Permissions::none(),
                }
            },
        )
        .allow_anonymous(true),
    )
}

async fn cra_join(
    addr: SocketAddr,
    serializer: Serializer,
    authid: &str,
    secret: &str,
) -> Result<V2, String> {
    let ws = open(addr, serializer).await;
    let mut c = V2::unjoined(ws, serializer);
    c.send(&Message::Hello {
        realm: "realm1".into(),
        details: dict(
            json!({"roles": {"caller": {}}, "authmethods": ["wampcra"], "authid": authid}),
        ),
    })
    .await;
    let extra = match c.recv().await {
        Message::Challenge { method, extra } => {
            assert_eq!(method, "wampcra");
            extra
        }
        Message::Abort { reason, .. } => return Err(reason),
        other => panic!("{other:?}"),
    };
    let key = match extra.get("salt") {
        Some(salt) => derive_key(
            secret,
            salt.as_str().unwrap(),
            u32::try_from(extra["iterations"].as_u64().unwrap()).unwrap(),
            usize::try_from(extra["keylen"].as_u64().unwrap()).unwrap(),
        ),
        None => secret.to_owned(),
    };
    let signature = sign(&key, extra["challenge"].as_str().unwrap());
    c.send(&Message::Authenticate {
        signature,
        extra: Dict::new(),
    })
    .await;
    c.welcomed().await.map(|()| c)
}

#[tokio::test]
async fn wampcra_on_v2_with_the_same_secrets_and_permissions_as_v1() {
    let addr = serve_router(cra_router()).await;
    for serializer in Serializer::ALL {
        let mut ada = cra_join(addr, serializer, "ada", "secret").await.unwrap();
        assert_eq!(
            (
                ada.welcome["authid"].as_str(),
                ada.welcome["authmethod"].as_str()
            ),
            (Some("ada"), Some("wampcra"))
        );
        assert!(matches!(
            ada.call("com.example.add", json!([1, 1]), json!({})).await,
            Message::Result { .. }
        ));
        let carol = cra_join(addr, serializer, "carol", "secret").await.unwrap();
        assert_eq!(carol.welcome["authid"], "carol");
        assert_eq!(
            cra_join(addr, serializer, "ada", "wrong")
                .await
                .err()
                .as_deref(),
            Some("wamp.error.authentication_denied")
        );
        assert_eq!(
            cra_join(addr, serializer, "nobody", "x")
                .await
                .err()
                .as_deref(),
            Some("wamp.error.no_such_principal")
        );
    }
    // Anonymous is allowed, and gets the anonymous permissions: nothing.
    let mut anon = V2::join(addr, Serializer::Json).await;
    assert_eq!(anon.welcome["authmethod"], "anonymous");
    assert!(
        matches!(anon.call("com.example.add", json!([1]), json!({})).await, Message::Error { error, .. } if error == "wamp.error.not_authorized")
    );
}

#[tokio::test]
async fn without_anonymous_a_hello_without_credentials_is_aborted() {
    let router = router().auth(WampCra::new(
        |_s, _k: String, _e| async { None::<Secret> },
        |_s, _k: AuthKey| async { Permissions::all() },
    ));
    let addr = serve_router(router).await;
    let refused = V2::join_with(addr, Serializer::Cbor, "realm1", json!({})).await;
    assert_eq!(
        refused.err().as_deref(),
        Some("wamp.error.no_matching_auth_method")
    );
}

#[tokio::test]
async fn a_v1_only_layer_refuses_v2() {
    let addr = serve_layer(WampLayer::new(router()).subprotocols(["wamp"])).await;
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("wamp.2.json"),
    );
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
    let _v1 = connect(addr).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// Answers INVOCATIONs of `c` until the connection ends: `com.example.mul` multiplies its
/// args; anything else fails with args and kwargs; returns how many it answered.
async fn serve_callee(mut c: V2, mul: u64, fail: u64) -> (V2, usize) {
    let mut answered = 0;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(QUIET * 4, c.ws.next()).await {
        let bytes = match frame {
            Ws::Text(t) => t.as_bytes().to_vec(),
            Ws::Binary(b) => b.to_vec(),
            _ => continue,
        };
        let Ok(Message::Invocation {
            request,
            registration,
            args,
            kwargs,
            ..
        }) = decode(c.serializer, &bytes)
        else {
            continue;
        };
        let reply = if registration == mul {
            let product: f64 = args.iter().filter_map(Value::as_f64).product();
            Message::Yield {
                request,
                options: Dict::new(),
                args: vec![json!(product)],
                kwargs,
            }
        } else {
            assert_eq!(registration, fail);
            Message::Error {
                request_type: 68,
                request,
                details: Dict::new(),
                error: "com.example.error.nope".into(),
                args: vec![json!("no"), json!(2)],
                kwargs: dict(json!({"why": "test"})),
            }
        };
        c.send(&reply).await;
        answered += 1;
    }
    (c, answered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_client_registers_procedures_that_v1_and_v2_callers_call() {
    let addr = serve_router(router()).await;
    let mut callee = V2::join(addr, Serializer::MsgPack).await;
    let register = |c: &mut V2, procedure: &str| {
        let request = c.request();
        (
            request,
            Message::Register {
                request,
                options: Dict::new(),
                procedure: procedure.into(),
            },
        )
    };
    let (_, m) = register(&mut callee, "com.example.mul");
    callee.send(&m).await;
    let Message::Registered {
        registration: mul, ..
    } = callee.recv().await
    else {
        panic!()
    };
    let (_, m) = register(&mut callee, "com.example.fails");
    callee.send(&m).await;
    let Message::Registered {
        registration: fail, ..
    } = callee.recv().await
    else {
        panic!()
    };
    // The router's own procedures, and procedures already registered, are taken.
    for taken in ["com.example.add", "com.example.mul"] {
        let (request, m) = register(&mut callee, taken);
        callee.send(&m).await;
        assert!(
            matches!(callee.recv().await, Message::Error { request_type: 64, request: r, error, .. } if r == request && error == "wamp.error.procedure_already_exists"),
            "{taken}"
        );
    }
    let serving = tokio::spawn(serve_callee(callee, mul, fail));
    // A v2 caller in another serializer, with kwargs passed through.
    let mut caller = V2::join(addr, Serializer::Json).await;
    match caller
        .call("com.example.mul", json!([2, 3.5]), json!({"unit": "m"}))
        .await
    {
        Message::Result { args, kwargs, .. } => {
            assert_eq!(args, vec![json!(7.0)]);
            assert_eq!(kwargs, dict(json!({"unit": "m"})));
        }
        other => panic!("{other:?}"),
    }
    match caller.call("com.example.fails", json!([]), json!({})).await {
        Message::Error {
            request_type: 48,
            error,
            args,
            kwargs,
            ..
        } => {
            assert_eq!(error, "com.example.error.nope");
            assert_eq!(args, vec![json!("no"), json!(2)]);
            assert_eq!(kwargs, dict(json!({"why": "test"})));
        }
        other => panic!("{other:?}"),
    }
    // A v1 caller: its arguments are the args; the result comes back as one value.
    let mut v1 = connect(addr).await;
    assert_eq!(
        v1.call("c1", "com.example.mul", &[json!(4), json!(5)])
            .await,
        json!([3, "c1", 20.0])
    );
    let e = v1.call("c2", "com.example.fails", &[]).await;
    assert_eq!(
        (e[0].clone(), e[2].clone(), e[3].clone()),
        (json!(4), json!("com.example.error.nope"), json!("no"))
    );
    let (_callee, answered) = serving.await.unwrap();
    assert_eq!(answered, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_that_leaves_fails_its_pending_calls_and_frees_its_names() {
    let addr = serve_router(router()).await;
    let mut callee = V2::join(addr, Serializer::Cbor).await;
    callee
        .send(&Message::Register {
            request: 1,
            options: Dict::new(),
            procedure: "com.example.slow".into(),
        })
        .await;
    assert!(matches!(
        callee.recv().await,
        Message::Registered { request: 1, .. }
    ));
    let mut caller = V2::join(addr, Serializer::Json).await;
    caller
        .send(&Message::Call {
            request: 1,
            options: Dict::new(),
            procedure: "com.example.slow".into(),
            args: vec![],
            kwargs: Dict::new(),
        })
        .await;
    let Message::Invocation { request: 1, .. } = callee.recv().await else {
        panic!()
    };
    // The callee leaves without answering: the caller gets an ERROR, not a hang.
    callee.ws.close(None).await.unwrap();
    match caller.recv().await {
        Message::Error {
            request_type: 48,
            request: 1,
            error,
            ..
        } => assert_eq!(error, "wamp.error.canceled"),
        other => panic!("{other:?}"),
    }
    // Its name is free again.
    match caller.call("com.example.slow", json!([]), json!({})).await {
        Message::Error { error, .. } => assert_eq!(error, "wamp.error.no_such_procedure"),
        other => panic!("{other:?}"),
    }
    let mut again = V2::join(addr, Serializer::Json).await;
    again
        .send(&Message::Register {
            request: 1,
            options: Dict::new(),
            procedure: "com.example.slow".into(),
        })
        .await;
    assert!(matches!(again.recv().await, Message::Registered { .. }));
    // UNREGISTER by its owner only.
    let Message::Registered { .. } = ({
        again
            .send(&Message::Register {
                request: 2,
                options: Dict::new(),
                procedure: "com.example.other".into(),
            })
            .await;
        again.recv().await
    }) else {
        panic!()
    };
    caller
        .send(&Message::Unregister {
            request: 9,
            registration: 1,
        })
        .await;
    assert!(
        matches!(caller.recv().await, Message::Error { request_type: 66, error, .. } if error == "wamp.error.no_such_registration")
    );
}

#[tokio::test]
async fn subscribed_comes_before_any_event_of_the_subscription() {
    // A hook that greets every new subscriber with an event, as applications do.
    let base = router();
    let wamp = base.handle();
    let router = base.after_subscribe(move |session, topic| {
        let _ = wamp.send(session.id(), topic, &"welcome");
    });
    let addr = serve_router(router).await;
    let mut c = V2::join(addr, Serializer::Json).await;
    let Message::Subscribed { subscription, .. } = c.subscribe(CHAT).await else {
        panic!("SUBSCRIBED first")
    };
    match c.recv().await {
        Message::Event {
            subscription: s,
            args,
            ..
        } => {
            assert_eq!((s, args), (subscription, vec![json!("welcome")]));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_auth_timeout_of_zero_turns_it_off_for_v2_too() {
    let router = router().auth(
        WampCra::new(
            |_s, _k: String, _e| async { None::<Secret> },
            |_s, _k: AuthKey| async { Permissions::all() },
        )
        .allow_anonymous(true)
        .timeout(Duration::ZERO),
    );
    let addr = serve_router(router).await;
    let c = V2::join(addr, Serializer::Json).await;
    assert_eq!(c.welcome["authmethod"], "anonymous");
}

#[tokio::test]
async fn ticket_authentication_uses_the_same_secrets() {
    let addr = serve_router(cra_router()).await;
    let mut ada = ticket_join(addr, "ada", "secret").await.unwrap();
    assert_eq!(
        (
            ada.welcome["authid"].as_str(),
            ada.welcome["authmethod"].as_str()
        ),
        (Some("ada"), Some("ticket"))
    );
    assert!(matches!(
        ada.call("com.example.add", json!([1]), json!({})).await,
        Message::Result { .. }
    ));
    // A salted secret's password is its ticket.
    assert!(ticket_join(addr, "carol", "secret").await.is_ok());
    assert_eq!(
        ticket_join(addr, "ada", "secreT").await.err().as_deref(),
        Some("wamp.error.authentication_denied")
    );
    assert_eq!(
        ticket_join(addr, "ada", "").await.err().as_deref(),
        Some("wamp.error.authentication_denied")
    );
}

#[tokio::test]
async fn a_callers_timeout_ends_a_call_to_a_silent_callee_and_a_late_yield_is_dropped() {
    let addr = serve_router(router()).await;
    let mut callee = V2::join(addr, Serializer::Json).await;
    callee
        .send(&Message::Register {
            request: 1,
            options: Dict::new(),
            procedure: "com.example.silent".into(),
        })
        .await;
    assert!(matches!(callee.recv().await, Message::Registered { .. }));
    let mut caller = V2::join(addr, Serializer::Json).await;
    assert_eq!(
        caller.welcome["roles"]["dealer"]["features"]["call_timeout"],
        true
    );
    caller
        .send(&Message::Call {
            request: 1,
            options: dict(json!({"timeout": 100})),
            procedure: "com.example.silent".into(),
            args: vec![],
            kwargs: Dict::new(),
        })
        .await;
    let Message::Invocation { request, .. } = callee.recv().await else {
        panic!()
    };
    match caller.recv().await {
        Message::Error {
            request: 1, error, ..
        } => assert_eq!(error, "wamp.error.timeout"),
        other => panic!("{other:?}"),
    }
    // The callee answers late: discarded, not a protocol violation; it goes on serving.
    callee
        .send(&Message::Yield {
            request,
            options: Dict::new(),
            args: vec![json!(1)],
            kwargs: Dict::new(),
        })
        .await;
    assert!(matches!(
        callee.call("com.example.add", json!([1]), json!({})).await,
        Message::Result { .. }
    ));
}

/// The next frame must be the close frame: its code.
async fn close_code(c: &mut V2) -> u16 {
    match tokio::time::timeout(WAIT, c.ws.next()).await {
        Ok(Some(Ok(Ws::Close(Some(f))))) => f.code.into(),
        other => panic!("expected a close frame: {other:?}"),
    }
}

#[tokio::test]
async fn the_router_says_goodbye_before_it_closes_a_v2_session() {
    let router = router();
    let wamp = router.handle();
    let addr = serve_router(router).await;
    for serializer in [Serializer::Json, Serializer::MsgPack, Serializer::Cbor] {
        // The application closes one session: GOODBYE wamp.close.killed, then 1000.
        let mut c = V2::join(addr, serializer).await;
        let id = wamp
            .sessions()
            .into_iter()
            .find(|s| s.as_u64() == Some(c.session))
            .unwrap();
        assert!(wamp.close(&id));
        match c.recv().await {
            Message::Goodbye { reason, details } => {
                assert_eq!(reason, "wamp.close.killed");
                assert_eq!(details["message"], "closed by the server");
            }
            other => panic!("{serializer:?}: {other:?}"),
        }
        assert_eq!(close_code(&mut c).await, 1000);
    }
    // Shutdown: GOODBYE wamp.close.system_shutdown, then 1001.
    let mut c = V2::join(addr, Serializer::Cbor).await;
    let mut v1 = common::connect(addr).await;
    let shutdown = tokio::spawn(async move { wamp.shutdown(WAIT).await });
    match c.recv().await {
        Message::Goodbye { reason, .. } => assert_eq!(reason, "wamp.close.system_shutdown"),
        other => panic!("{other:?}"),
    }
    assert_eq!(close_code(&mut c).await, 1001);
    // v1 has no GOODBYE: the close frame alone.
    assert_eq!(v1.recv_close().await.0, 1001);
    drop((c, v1));
    assert!(shutdown.await.unwrap());
}

#[tokio::test]
async fn a_handler_sends_an_event_to_its_v2_caller_on_a_subscription() {
    let router = router().rpc(
        "com.example.whisper",
        |session: tower_wamp::Session| async move {
            match session.send_event(CHAT, &"psst") {
                Ok(()) => "sent".to_owned(),
                Err(e) => e.to_string(),
            }
        },
    );
    let addr = serve_router(router).await;
    let mut c = V2::join(addr, Serializer::MsgPack).await;
    // Not subscribed: an EVENT would name no subscription.
    match c.call("com.example.whisper", json!([]), json!({})).await {
        Message::Result { args, .. } => assert_eq!(
            args,
            [json!(
                "a WAMP v2 session receives events only on its subscriptions"
            )]
        ),
        other => panic!("{other:?}"),
    }
    let Message::Subscribed { subscription, .. } = c.subscribe(CHAT).await else {
        panic!("not subscribed")
    };
    let request = c.request();
    c.send(&Message::Call {
        request,
        options: Dict::new(),
        procedure: "com.example.whisper".into(),
        args: vec![],
        kwargs: Dict::new(),
    })
    .await;
    match c.recv().await {
        Message::Event {
            subscription: s,
            args,
            ..
        } => {
            assert_eq!(s, subscription);
            assert_eq!(args, [json!("psst")]);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(c.recv().await, Message::Result { args, .. } if args == [json!("sent")]));
}

/// REGISTERs `procedure`; `true` if REGISTERED came back.
async fn register(c: &mut V2, procedure: &str) -> bool {
    let request = c.request();
    c.send(&Message::Register {
        request,
        options: Dict::new(),
        procedure: procedure.into(),
    })
    .await;
    match tokio::time::timeout(WAIT, c.ws.next()).await {
        Ok(Some(Ok(Ws::Close(_)))) | Ok(None) => false,
        Ok(Some(Ok(frame))) => {
            let bytes = frame.into_data();
            matches!(decode(c.serializer, &bytes), Ok(Message::Registered { .. }))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn registrations_have_a_budget_in_entries_and_bytes() {
    // Entries: the 4th of 3 closes the session (1008).
    let addr = serve_layer(WampLayer::new(router()).max_subscriptions(3)).await;
    let mut c = V2::join(addr, Serializer::Json).await;
    for i in 0..3 {
        assert!(register(&mut c, &format!("com.example.p{i}")).await);
    }
    let request = c.request();
    c.send(&Message::Register {
        request,
        options: Dict::new(),
        procedure: "com.example.p3".into(),
    })
    .await;
    assert_eq!(close_code(&mut c).await, 1008);
    // Bytes: two 40-byte URIs do not fit in 64 bytes, however few they are.
    let addr = serve_layer(WampLayer::new(router()).max_subscription_bytes(64)).await;
    let mut c = V2::join(addr, Serializer::Json).await;
    let uri = |i: u32| format!("com.example.{}{i}", "x".repeat(40 - 13));
    assert_eq!(uri(0).len(), 40);
    assert!(register(&mut c, &uri(0)).await);
    let request = c.request();
    c.send(&Message::Register {
        request,
        options: Dict::new(),
        procedure: uri(1),
    })
    .await;
    assert_eq!(close_code(&mut c).await, 1008);
    // Unregistering frees the room it took.
    let mut c = V2::join(addr, Serializer::Json).await;
    for _ in 0..3 {
        let request = c.request();
        c.send(&Message::Register {
            request,
            options: Dict::new(),
            procedure: uri(0),
        })
        .await;
        let Message::Registered { registration, .. } = c.recv().await else {
            panic!("not registered")
        };
        let request = c.request();
        c.send(&Message::Unregister {
            request,
            registration,
        })
        .await;
        assert!(matches!(c.recv().await, Message::Unregistered { .. }));
    }
}

#[tokio::test]
async fn a_callee_that_does_not_keep_up_gets_no_more_invocations_and_stays_connected() {
    // The caller's own budget is not what refuses here.
    let layer = WampLayer::new(router())
        .outbound_queue_bytes(256 << 10)
        .max_call_bytes(64 << 20);
    let wamp = layer.handle();
    let addr = serve_layer(layer).await;
    // A callee with a tiny receive buffer that never reads after REGISTERED.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("wamp.2.json"),
    );
    let (ws, _) =
        tokio_tungstenite::client_async(req, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    let mut callee = V2::unjoined(ws, Serializer::Json);
    callee
        .send(&Message::Hello {
            realm: "realm1".into(),
            details: dict(json!({"roles": {"callee": {}}})),
        })
        .await;
    let Message::Welcome { session, .. } = callee.recv().await else {
        panic!("no welcome")
    };
    assert!(register(&mut callee, "com.example.slow").await);
    // Calls at network speed, 64 KiB each (7.5 MiB, more than the kernel's buffers
    // take): the callee's queue fills.
    let mut caller = V2::join(addr, Serializer::Json).await;
    let big = "x".repeat(64 << 10);
    for _ in 0..120 {
        let request = caller.request();
        caller
            .send(&Message::Call {
                request,
                options: Dict::new(),
                procedure: "com.example.slow".into(),
                args: vec![json!(big)],
                kwargs: Dict::new(),
            })
            .await;
    }
    // The caller hears that the callee is busy (not that it has too many calls itself) ...
    match caller.recv().await {
        Message::Error { error, args, .. } => {
            assert_eq!(error, "wamp.error.too_many_calls");
            assert!(
                args[0].as_str().unwrap().contains("callee is busy"),
                "{args:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // ... and the callee is still there, not closed as a slow consumer.
    assert!(wamp.sessions().iter().any(|s| s.as_u64() == Some(session)));
    assert_eq!(wamp.metrics().slow_consumers_disconnected, 0);
}

async fn whoami(caller: tower_wamp::Caller) -> Value {
    json!({
        "session": caller.session.as_str(),
        "authid": caller.authid,
        "authrole": caller.authrole,
        "protocol": caller.protocol.map(|p| p.subprotocol()),
    })
}

#[tokio::test]
async fn a_handler_sees_who_calls_in_either_version() {
    let addr = serve_router(router().rpc("com.example.whoami", whoami)).await;
    let mut c = V2::join(addr, Serializer::MsgPack).await;
    match c.call("com.example.whoami", json!([]), json!({})).await {
        Message::Result { args, .. } => assert_eq!(
            args[0],
            json!({
                "session": c.session.to_string(),
                // Anonymous: the WELCOME's random authid names no one.
                "authid": null,
                "authrole": "anonymous",
                "protocol": "wamp.2.msgpack",
            })
        ),
        other => panic!("{other:?}"),
    }
    let mut v1 = common::connect(addr).await;
    let reply = v1.call("c1", "com.example.whoami", &[]).await;
    assert_eq!(
        reply[2],
        json!({"session": v1.session_id, "authid": null, "authrole": null, "protocol": "wamp"})
    );
    // Authenticated with WAMP-CRA: the authid and role of its WELCOME.
    let addr = serve_router(cra_router().rpc("com.example.whoami", whoami)).await;
    let mut ada = cra_join(addr, Serializer::Json, "ada", "secret")
        .await
        .unwrap();
    match ada.call("com.example.whoami", json!([]), json!({})).await {
        Message::Result { args, .. } => {
            assert_eq!(args[0]["authid"], "ada");
            assert_eq!(args[0]["authrole"], "user");
            assert_eq!(args[0]["protocol"], "wamp.2.json");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn shutdown_refuses_a_client_still_in_its_handshake() {
    let router = router();
    let wamp = router.handle();
    let addr = serve_router(router).await;
    // Connected, no HELLO yet (the handshake would wait 20 s for it).
    let ws = open(addr, Serializer::Json).await;
    let mut c = V2::unjoined(ws, Serializer::Json);
    tokio::time::sleep(QUIET).await;
    let shutdown = tokio::spawn(async move { wamp.shutdown(Duration::from_secs(3)).await });
    match c.recv().await {
        Message::Abort { reason, .. } => assert_eq!(reason, "wamp.close.system_shutdown"),
        other => panic!("{other:?}"),
    }
    assert_eq!(close_code(&mut c).await, 1001);
    drop(c);
    assert!(
        shutdown.await.unwrap(),
        "every session ended before the deadline"
    );
}

#[tokio::test]
async fn request_ids_out_of_sequence_are_a_violation_only_when_asked() {
    for strict in [false, true] {
        let layer = WampLayer::new(router()).strict_request_ids(strict);
        let addr = serve_layer(layer).await;
        let mut c = V2::join(addr, Serializer::Json).await;
        c.next = 4; // the first request id should be 1; this one is 5
        let reply = c.call("com.example.add", json!([1, 2]), json!({})).await;
        match (strict, reply) {
            (false, Message::Result { args, .. }) => assert_eq!(args, [json!(3.0)]),
            (true, Message::Abort { reason, .. }) => {
                assert_eq!(reason, "wamp.error.protocol_violation")
            }
            (_, other) => panic!("strict {strict}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_ticket_checked_against_a_derived_key_counts_until_it_succeeds() {
    let key = derive_key("secret", "salt123", 1000, 32);
    let cra = WampCra::new(
        move |_s, authid: String, _e| {
            let key = key.clone();
            async move { (authid == "carol").then(|| Secret::derived(key, "salt123", 1000, 32)) }
        },
        |_s, _key: AuthKey| async { Permissions::all() },
    )
    .failure_throttle(2, Duration::from_secs(600));
    let addr = serve_router(router().auth(cra)).await;
    assert_eq!(
        ticket_join(addr, "carol", "wrong").await.err().as_deref(),
        Some("wamp.error.authentication_denied")
    );
    // Each right ticket is counted while it is checked and forgiven once it matches:
    // one failure stays on record, below the limit of two.
    for _ in 0..3 {
        let carol = ticket_join(addr, "carol", "secret").await.unwrap();
        assert_eq!(carol.welcome["authid"], "carol");
    }
    assert_eq!(
        ticket_join(addr, "carol", "wrong again")
            .await
            .err()
            .as_deref(),
        Some("wamp.error.authentication_denied")
    );
    // Two failures: now even the right ticket is refused.
    assert!(ticket_join(addr, "carol", "secret").await.is_err());
}

/// The details of the next EVENT `c` receives.
async fn event_details(c: &mut V2) -> Dict {
    match c.recv().await {
        Message::Event { details, .. } => details,
        other => panic!("{other:?}"),
    }
}

/// The details of the next INVOCATION `c` receives, after YIELDing to it.
async fn invocation_details(c: &mut V2) -> Dict {
    match c.recv().await {
        Message::Invocation {
            request, details, ..
        } => {
            c.send(&Message::Yield {
                request,
                options: Dict::new(),
                args: vec![json!("ok")],
                kwargs: Dict::new(),
            })
            .await;
            details
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_and_callers_are_named_when_they_ask_or_the_realm_discloses() {
    for (policy, serializer) in [(false, Serializer::Cbor), (true, Serializer::MsgPack)] {
        let router = router()
            .disclose_publishers(policy)
            .disclose_callers(policy);
        let addr = serve_router(router).await;
        let mut subscriber = V2::join(addr, serializer).await;
        let mut publisher = V2::join(addr, Serializer::Json).await;
        assert_eq!(
            publisher.welcome["roles"]["broker"]["features"]["publisher_identification"],
            true
        );
        assert_eq!(
            publisher.welcome["roles"]["dealer"]["features"]["caller_identification"],
            true
        );
        assert!(matches!(
            subscriber.subscribe(CHAT).await,
            Message::Subscribed { .. }
        ));
        let named = json!({
            "publisher": publisher.session,
            "publisher_authrole": "anonymous",
        });
        // Without disclose_me, only the realm's policy names the publisher.
        publisher
            .publish(CHAT, json!([1]), json!({}), json!({}))
            .await;
        let expected = if policy { named.clone() } else { json!({}) };
        assert_eq!(
            Value::Object(event_details(&mut subscriber).await),
            expected,
            "policy {policy}"
        );
        publisher
            .publish(CHAT, json!([2]), json!({}), json!({"disclose_me": true}))
            .await;
        assert_eq!(
            Value::Object(event_details(&mut subscriber).await),
            named,
            "policy {policy}"
        );

        // The same for a caller, seen by the client that registered the procedure.
        assert!(register(&mut subscriber, "com.example.named").await);
        let caller_named = json!({
            "caller": publisher.session,
            "caller_authrole": "anonymous",
        });
        for (options, named) in [(json!({}), policy), (json!({"disclose_me": true}), true)] {
            let request = publisher.request();
            publisher
                .send(&Message::Call {
                    request,
                    options: dict(options),
                    procedure: "com.example.named".into(),
                    args: vec![],
                    kwargs: Dict::new(),
                })
                .await;
            let details = invocation_details(&mut subscriber).await;
            let expected = if named {
                caller_named.clone()
            } else {
                json!({})
            };
            assert_eq!(Value::Object(details), expected, "policy {policy}");
            assert!(matches!(publisher.recv().await, Message::Result { .. }));
        }
        // A callee may ask to be told who calls.
        let request = subscriber.request();
        subscriber
            .send(&Message::Register {
                request,
                options: dict(json!({"disclose_caller": true})),
                procedure: "com.example.named2".into(),
            })
            .await;
        assert!(matches!(
            subscriber.recv().await,
            Message::Registered { .. }
        ));
        let request = publisher.request();
        publisher
            .send(&Message::Call {
                request,
                options: Dict::new(),
                procedure: "com.example.named2".into(),
                args: vec![],
                kwargs: Dict::new(),
            })
            .await;
        assert_eq!(
            Value::Object(invocation_details(&mut subscriber).await),
            caller_named,
            "policy {policy}"
        );
        assert!(matches!(publisher.recv().await, Message::Result { .. }));

        // A v1 publisher has no numeric id: with the policy, its authrole (none
        // here: v1 has roles only once authenticated) and nothing else.
        let mut v1 = connect(addr).await;
        v1.send(json!([7, CHAT, "from v1"])).await;
        assert_eq!(
            Value::Object(event_details(&mut subscriber).await),
            json!({}),
            "policy {policy}"
        );

        // disclose_me must be a boolean, on CALL as on PUBLISH.
        let request = publisher.request();
        publisher
            .send(&Message::Call {
                request,
                options: dict(json!({"disclose_me": "yes"})),
                procedure: "com.example.named".into(),
                args: vec![],
                kwargs: Dict::new(),
            })
            .await;
        assert!(matches!(publisher.recv().await, Message::Abort { .. }));
        let mut publisher = V2::join(addr, Serializer::Json).await;
        publisher
            .publish(CHAT, json!([3]), json!({}), json!({"disclose_me": "yes"}))
            .await;
        assert!(matches!(publisher.recv().await, Message::Abort { .. }));
    }
}

/// The first argument of each EVENT `c` receives up to and including `marker`.
async fn events_until(c: &mut V2, marker: u64) -> Vec<u64> {
    let mut got = Vec::new();
    loop {
        match c.recv().await {
            Message::Event { args, .. } => {
                let n = args[0].as_u64().unwrap();
                if n == marker {
                    return got;
                }
                got.push(n);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_picks_its_audience_by_authid_and_authrole() {
    let addr = serve_router(cra_router()).await;
    let mut ada = cra_join(addr, Serializer::MsgPack, "ada", "secret")
        .await
        .unwrap();
    let mut carol = cra_join(addr, Serializer::Json, "carol", "secret")
        .await
        .unwrap();
    let mut publisher = cra_join(addr, Serializer::Cbor, "ada", "secret")
        .await
        .unwrap();
    assert_eq!(
        publisher.welcome["roles"]["broker"]["features"]["subscriber_blackwhite_listing"],
        true
    );
    for c in [&mut ada, &mut carol] {
        assert!(matches!(
            c.subscribe(CHAT).await,
            Message::Subscribed { .. }
        ));
    }
    let carol_session = carol.session;
    // (options, who receives it: ada, carol)
    let cases = [
        (json!({"exclude_authid": ["carol"]}), (true, false)),
        (json!({"eligible_authid": ["carol"]}), (false, true)),
        (json!({"exclude_authrole": ["user"]}), (false, false)),
        (json!({"eligible_authrole": ["user"]}), (true, true)),
        (json!({"eligible_authrole": ["anonymous"]}), (false, false)),
        (json!({"eligible_authid": []}), (false, false)),
        (
            json!({"exclude_authid": [], "exclude_authrole": null}),
            (true, true),
        ),
        // Every present list holds: eligible by session and by authid must both admit.
        (
            json!({"eligible": [carol_session], "eligible_authid": ["ada", "carol"]}),
            (false, true),
        ),
        (
            json!({"eligible": [carol_session], "eligible_authid": ["ada"]}),
            (false, false),
        ),
    ];
    for (n, (options, _)) in cases.iter().enumerate() {
        let n = n as u64;
        publisher
            .publish(CHAT, json!([n]), json!({}), options.clone())
            .await;
    }
    publisher
        .publish(CHAT, json!([999]), json!({}), json!({}))
        .await;
    let expected = |pick: fn(&(bool, bool)) -> bool| -> Vec<u64> {
        (0..cases.len() as u64)
            .filter(|&n| pick(&cases[n as usize].1))
            .collect()
    };
    assert_eq!(events_until(&mut ada, 999).await, expected(|w| w.0));
    assert_eq!(events_until(&mut carol, 999).await, expected(|w| w.1));
    // The lists hold strings, and are lists.
    publisher
        .publish(CHAT, json!([0]), json!({}), json!({"eligible_authid": [1]}))
        .await;
    assert!(matches!(
        publisher.recv().await,
        Message::Abort { reason, .. } if reason == "wamp.error.protocol_violation"
    ));
    let mut publisher = cra_join(addr, Serializer::Json, "ada", "secret")
        .await
        .unwrap();
    publisher
        .publish(
            CHAT,
            json!([0]),
            json!({}),
            json!({"exclude_authrole": "user"}),
        )
        .await;
    assert!(matches!(
        publisher.recv().await,
        Message::Abort { reason, .. } if reason == "wamp.error.protocol_violation"
    ));
}

#[tokio::test]
async fn anonymous_and_v1_subscribers_by_authrole() {
    // Without authentication a v2 session is `anonymous` (no authid); a v1 session has no
    // authrole at all (v1 has no roles), so it is in no list.
    let addr = serve_router(router()).await;
    let mut guest = V2::join(addr, Serializer::Json).await;
    assert!(matches!(
        guest.subscribe(CHAT).await,
        Message::Subscribed { .. }
    ));
    let mut v1 = connect(addr).await;
    v1.subscribe(CHAT).await;
    let mut publisher = V2::join(addr, Serializer::MsgPack).await;
    for (n, options) in [
        (1, json!({"eligible_authrole": ["anonymous"]})),
        (2, json!({"exclude_authrole": ["anonymous"]})),
        (3, json!({"exclude_authid": ["anonymous"]})),
        (4, json!({"eligible_authid": []})),
        (9, json!({})),
    ] {
        publisher
            .publish(CHAT, json!([n]), json!({}), options)
            .await;
    }
    assert_eq!(events_until(&mut guest, 9).await, vec![1, 3]);
    let mut seen = Vec::new();
    loop {
        let event = v1.recv().await;
        let n = event[2].as_u64().unwrap();
        if n == 9 {
            break;
        }
        seen.push(n);
    }
    assert_eq!(seen, vec![2, 3]);
}
