//! WAMP v2 pattern-based and shared registrations over real sockets: which registration a
//! call goes to, INVOCATION's `procedure`, and the invoke policies of shared ones.
mod common;

use std::net::SocketAddr;

use common::{v2::*, *};
use serde_json::{Value, json};
use tower_wamp::{
    Args, WampRouter,
    core::codec::v2::{Dict, Message, Serializer},
};

fn router() -> WampRouter {
    WampRouter::new()
        .realm("realm1")
        .rpc("com.example.add", |Args(n): Args<Vec<i64>>| async move {
            n.iter().sum::<i64>()
        })
}

/// REGISTERs with `options`: the registration id, or the ERROR's URI.
async fn register(c: &mut V2, procedure: &str, options: Value) -> Result<u64, String> {
    let request = c.request();
    c.send(&Message::Register {
        request,
        options: dict(options),
        procedure: procedure.into(),
    })
    .await;
    match c.recv().await {
        Message::Registered { registration, .. } => Ok(registration),
        Message::Error { error, .. } => Err(error),
        other => panic!("{other:?}"),
    }
}

/// Serves the next INVOCATION `c` gets: YIELDs `tag`; returns (registration, details).
async fn serve_one(c: &mut V2, tag: &str) -> (u64, Dict) {
    match c.recv().await {
        Message::Invocation {
            request,
            registration,
            details,
            ..
        } => {
            c.send(&Message::Yield {
                request,
                options: Dict::new(),
                args: vec![json!(tag)],
                kwargs: Dict::new(),
            })
            .await;
            (registration, details)
        }
        other => panic!("{other:?}"),
    }
}

async fn call(c: &mut V2, procedure: &str) -> Result<Value, String> {
    match c.call(procedure, json!([]), json!({})).await {
        Message::Result { args, .. } => Ok(args.first().cloned().unwrap_or(Value::Null)),
        Message::Error { error, .. } => Err(error),
        other => panic!("{other:?}"),
    }
}

async fn join(addr: SocketAddr) -> V2 {
    let roles = json!({"roles": {"caller": {}, "callee": {}}});
    V2::join_with(addr, Serializer::Json, "realm1", roles)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_goes_to_the_best_matching_registration() {
    let addr = serve_router(router()).await;
    let mut callee = join(addr).await;
    let features = &callee.welcome["roles"]["dealer"]["features"];
    assert_eq!(features["pattern_based_registration"], true);
    assert_eq!(features["shared_registration"], true);
    // The spec's registrations.
    let mut ids = vec![];
    for (uri, policy) in [
        ("a1.b2.c3.d4.e55", "exact"),
        ("a1.b2.c3", "prefix"),
        ("a1.b2.c3.d4", "prefix"),
        ("a1.b2..d4.e5", "wildcard"),
        ("a1.b2.c3..e5", "wildcard"),
        ("a1.b2..d4.e5..g7", "wildcard"),
        ("a1.b2..d4..f6.g7", "wildcard"),
    ] {
        ids.push(
            register(&mut callee, uri, json!({"match": policy}))
                .await
                .unwrap(),
        );
    }
    let mut caller = V2::join(addr, Serializer::Json).await;
    for (procedure, want) in [
        ("a1.b2.c3.d4.e55", Some(0)),
        ("a1.b2.c3.d98.e74", Some(1)),
        ("a1.b2.c3.d4.e325", Some(2)),
        ("a1.b2.c55.d4.e5", Some(3)),
        ("a1.b2.c88.d4.e5.f6.g7", Some(5)),
        ("a2.b2.c2.d2.e2", None),
    ] {
        let answer = tokio::join!(call(&mut caller, procedure), async {
            match want {
                Some(_) => Some(serve_one(&mut callee, "ok").await),
                None => None,
            }
        });
        match (want, answer) {
            (Some(i), (Ok(_), Some((registration, details)))) => {
                assert_eq!(registration, ids[i], "{procedure}");
                let named = details.get("procedure").and_then(Value::as_str);
                // A pattern's callee is told the procedure; an exact one knows it.
                let expected = (i > 0).then_some(procedure);
                assert_eq!(named, expected, "{procedure}");
            }
            (None, (Err(error), None)) => assert_eq!(error, "wamp.error.no_such_procedure"),
            other => panic!("{procedure}: {other:?}"),
        }
    }
    // The router's own procedures come first, and `wamp.` is no pattern's.
    register(&mut callee, "com.", json!({"match": "prefix"}))
        .await
        .unwrap();
    assert_eq!(call(&mut caller, "com.example.add").await, Ok(json!(0)));
    register(&mut callee, "w", json!({"match": "prefix"}))
        .await
        .unwrap();
    assert_eq!(
        call(&mut caller, "wamp.session.count").await,
        Err("wamp.error.no_such_procedure".into())
    );
    for (uri, options) in [
        ("wamp.", json!({"match": "prefix"})),
        ("a..b", json!({"match": "prefix"})),
        ("..", json!({"match": "wildcard"})),
    ] {
        assert_eq!(
            register(&mut callee, uri, options).await,
            Err("wamp.error.invalid_uri".into()),
            "{uri}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_registrations_pick_their_callee_by_policy() {
    let addr = serve_router(router()).await;
    let mut caller = V2::join(addr, Serializer::Json).await;
    for policy in ["roundrobin", "first", "last", "random"] {
        let procedure = format!("com.example.{policy}");
        let mut callees = vec![join(addr).await, join(addr).await, join(addr).await];
        let mut id = None;
        for c in &mut callees {
            let got = register(c, &procedure, json!({"invoke": policy}))
                .await
                .unwrap();
            assert_eq!(*id.get_or_insert(got), got, "one registration id for all");
        }
        let mut served = vec![];
        for _ in 0..6 {
            let request = caller.request();
            caller
                .send(&Message::Call {
                    request,
                    options: Dict::new(),
                    procedure: procedure.clone(),
                    args: vec![],
                    kwargs: Dict::new(),
                })
                .await;
            // Whichever callee got it answers with its index.
            let [c0, c1, c2] = &mut callees[..] else {
                unreachable!()
            };
            let who = tokio::select! {
                _ = serve_one(c0, "0") => 0,
                _ = serve_one(c1, "1") => 1,
                _ = serve_one(c2, "2") => 2,
            };
            match caller.recv().await {
                Message::Result { args, .. } => assert_eq!(args, vec![json!(who.to_string())]),
                other => panic!("{other:?}"),
            }
            served.push(who);
        }
        match policy {
            "roundrobin" => assert_eq!(served, vec![0, 1, 2, 0, 1, 2]),
            "first" => assert_eq!(served, vec![0; 6]),
            "last" => assert_eq!(served, vec![2; 6]),
            _ => assert!(served.iter().all(|&w| w < 3)),
        }
        // A callee that leaves: the rest go on serving; the first is now the second.
        drop(callees.remove(0));
        tokio::time::sleep(QUIET).await;
        if policy == "first" {
            let (answer, _) = tokio::join!(
                call(&mut caller, &procedure),
                serve_one(&mut callees[0], "next")
            );
            assert_eq!(answer, Ok(json!("next")));
        }
    }
}

#[tokio::test]
async fn a_shared_registration_refuses_another_policy_a_single_one_and_a_second_turn() {
    let addr = serve_router(router()).await;
    let mut a = join(addr).await;
    let mut b = join(addr).await;
    let rr = json!({"invoke": "roundrobin"});
    let id = register(&mut a, "com.example.p", rr.clone()).await.unwrap();
    let exists = Err("wamp.error.procedure_already_exists".to_owned());
    assert_eq!(
        register(&mut b, "com.example.p", json!({"invoke": "first"})).await,
        exists
    );
    assert_eq!(register(&mut b, "com.example.p", json!({})).await, exists);
    assert_eq!(
        register(&mut a, "com.example.p", rr.clone()).await,
        exists,
        "twice"
    );
    assert_eq!(register(&mut b, "com.example.p", rr.clone()).await, Ok(id));
    // A single registration takes no second callee; the same URI as a pattern is another.
    register(&mut a, "com.example.s", json!({})).await.unwrap();
    assert_eq!(register(&mut b, "com.example.s", json!({})).await, exists);
    assert!(
        register(&mut b, "com.example.s", json!({"match": "prefix"}))
            .await
            .is_ok()
    );
    assert_eq!(
        register(&mut b, "com.example.x", json!({"invoke": "sometimes"})).await,
        Err("wamp.error.option_not_allowed".into())
    );
    // UNREGISTER takes one callee off; the registration stays with the other.
    let request = a.request();
    a.send(&Message::Unregister {
        request,
        registration: id,
    })
    .await;
    assert!(matches!(a.recv().await, Message::Unregistered { .. }));
    let mut caller = V2::join(addr, Serializer::Json).await;
    let (answer, (registration, _)) =
        tokio::join!(call(&mut caller, "com.example.p"), serve_one(&mut b, "b"));
    assert_eq!((answer, registration), (Ok(json!("b")), id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_callee_leaves_every_policy_serves_with_the_rest() {
    let addr = serve_router(router()).await;
    let mut caller = V2::join(addr, Serializer::Json).await;
    for policy in ["roundrobin", "first", "last", "random"] {
        let procedure = format!("com.example.rest.{policy}");
        let mut callees = vec![join(addr).await, join(addr).await];
        for c in &mut callees {
            register(c, &procedure, json!({"invoke": policy}))
                .await
                .unwrap();
        }
        drop(callees.remove(0));
        tokio::time::sleep(QUIET).await;
        for _ in 0..3 {
            let (answer, _) = tokio::join!(
                call(&mut caller, &procedure),
                serve_one(&mut callees[0], "rest")
            );
            assert_eq!(answer, Ok(json!("rest")), "{policy}");
        }
    }
}

#[tokio::test]
async fn a_pattern_catches_only_calls_its_session_may_register_for() {
    use tower_wamp::{
        auth::{Secret, WampCra},
        core::auth::{Action, AuthKey, Permissions},
    };
    let router = router().auth(WampCra::new(
        |_s, key: String, _e| async move { (key == "ada").then(|| Secret::plain("secret")) },
        |_s, _key: AuthKey| async move {
            Permissions::none()
                .allow_register("com.app.*")
                .deny(Action::Register, "com.app.admin*")
                .allow_call("*")
        },
    ));
    let addr = serve_router(router).await;
    let mut callee = ticket_join(addr, "ada", "secret").await.unwrap();
    let id = register(&mut callee, "com.app..reset", json!({"match": "wildcard"}))
        .await
        .unwrap();
    assert_eq!(
        register(&mut callee, "com.app.admin.reset", json!({})).await,
        Err("wamp.error.not_authorized".into())
    );
    let mut caller = ticket_join(addr, "ada", "secret").await.unwrap();
    let (answer, (registration, details)) = tokio::join!(
        call(&mut caller, "com.app.user.reset"),
        serve_one(&mut callee, "reset")
    );
    assert_eq!((answer, registration), (Ok(json!("reset")), id));
    assert_eq!(details["procedure"], "com.app.user.reset");
    // The pattern matches, but its session may not serve admin procedures.
    assert_eq!(
        call(&mut caller, "com.app.admin.reset").await,
        Err("wamp.error.no_such_procedure".into())
    );
}

#[tokio::test]
async fn a_pattern_is_told_the_name_called_and_never_catches_wamp_cra() {
    let router = router().alias("com.example.nick", "com.real.thing");
    let addr = serve_router(router).await;
    let mut callee = join(addr).await;
    register(&mut callee, "com.real.", json!({"match": "prefix"}))
        .await
        .unwrap();
    register(
        &mut callee,
        "http://api.wamp.ws/",
        json!({"match": "prefix"}),
    )
    .await
    .unwrap();
    let mut caller = V2::join(addr, Serializer::Json).await;
    let (answer, (_, details)) = tokio::join!(
        call(&mut caller, "com.example.nick"),
        serve_one(&mut callee, "ok")
    );
    assert_eq!(answer, Ok(json!("ok")));
    assert_eq!(details["procedure"], "com.example.nick");
    // A v1 client's authreq is not a callee's to answer, even without WAMP-CRA configured.
    let mut v1 = connect(addr).await;
    v1.send(json!([
        2,
        "c1",
        "http://api.wamp.ws/procedure#authreq",
        "ada"
    ]))
    .await;
    let reply = v1.recv().await;
    assert_eq!(reply[0], 4, "{reply}");
}
