//! The WAMP v2 meta API over real sockets: session, subscription and registration
//! procedures and meta events, off by default, and kills only with authentication.
mod common;

use std::net::SocketAddr;

use common::{v2::*, *};
use serde_json::{Value, json};
use tower_wamp::{
    Topic, WampRouter,
    auth::{Secret, WampCra},
    core::{
        auth::{AuthKey, Permissions},
        codec::v2::{Message, Serializer},
    },
};

fn router() -> WampRouter {
    WampRouter::new()
        .realm("realm1")
        .topic("com.example.*", Topic::new())
        .meta_api(true)
}

async fn call(c: &mut V2, procedure: &str, args: Value, kwargs: Value) -> Result<Value, String> {
    match c.call(procedure, args, kwargs).await {
        Message::Result { args, .. } => Ok(args.first().cloned().unwrap_or(Value::Null)),
        Message::Error { error, .. } => Err(error),
        other => panic!("{other:?}"),
    }
}

async fn subscribe(c: &mut V2, topic: &str) -> u64 {
    match c.subscribe(topic).await {
        Message::Subscribed { subscription, .. } => subscription,
        other => panic!("{topic}: {other:?}"),
    }
}

/// The next EVENT's (subscription, args).
async fn event(c: &mut V2) -> (u64, Vec<Value>) {
    match c.recv().await {
        Message::Event {
            subscription, args, ..
        } => (subscription, args),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_meta_api_is_off_unless_turned_on() {
    let addr = serve_router(WampRouter::new().realm("realm1")).await;
    let mut c = V2::join(addr, Serializer::Json).await;
    let broker = &c.welcome["roles"]["broker"]["features"];
    assert!(broker.get("session_meta_api").is_none());
    assert_eq!(
        call(&mut c, "wamp.session.count", json!([]), json!({})).await,
        Err("wamp.error.no_such_procedure".into())
    );
    match c.subscribe("wamp.session.on_join").await {
        Message::Error { error, .. } => assert_eq!(error, "wamp.error.not_authorized"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_listed_told_and_their_joins_and_leaves_published() {
    let addr = serve_router(router()).await;
    let mut watcher = V2::join(addr, Serializer::Json).await;
    for (role, feature) in [
        ("broker", "session_meta_api"),
        ("broker", "subscription_meta_api"),
        ("dealer", "session_meta_api"),
        ("dealer", "registration_meta_api"),
    ] {
        assert_eq!(watcher.welcome["roles"][role]["features"][feature], true);
    }
    let joins = subscribe(&mut watcher, "wamp.session.on_join").await;
    let leaves = subscribe(&mut watcher, "wamp.session.on_leave").await;
    let other = V2::join(addr, Serializer::MsgPack).await;
    let (sub, args) = event(&mut watcher).await;
    assert_eq!(sub, joins);
    let joined = &args[0];
    assert_eq!(joined["session"], other.session);
    // The authid its WELCOME gave it (random, for an anonymous session).
    assert_eq!(joined["authid"], other.welcome["authid"]);
    assert_eq!(joined["authrole"], "anonymous");
    assert_eq!(joined["authmethod"], "anonymous");
    assert_eq!(joined["transport"]["protocol"], "wamp.2.msgpack");

    let mut ids = vec![watcher.session, other.session];
    ids.sort_unstable();
    assert_eq!(
        call(&mut watcher, "wamp.session.list", json!([]), json!({})).await,
        Ok(json!(ids))
    );
    assert_eq!(
        call(
            &mut watcher,
            "wamp.session.count",
            json!([["anonymous"]]),
            json!({})
        )
        .await,
        Ok(json!(2))
    );
    assert_eq!(
        call(
            &mut watcher,
            "wamp.session.count",
            json!([["admin"]]),
            json!({})
        )
        .await,
        Ok(json!(0))
    );
    let got = call(
        &mut watcher,
        "wamp.session.get",
        json!([other.session]),
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(&got, joined);
    assert_eq!(
        call(&mut watcher, "wamp.session.get", json!([1]), json!({})).await,
        Err("wamp.error.no_such_session".into())
    );
    // Without authentication nobody may end anybody's session.
    assert_eq!(
        call(
            &mut watcher,
            "wamp.session.kill",
            json!([other.session]),
            json!({})
        )
        .await,
        Err("wamp.error.not_authorized".into())
    );
    let gone = other.session;
    let authid = other.welcome["authid"].clone();
    drop(other);
    let (sub, args) = event(&mut watcher).await;
    assert_eq!(
        (sub, args),
        (leaves, vec![json!(gone), authid, json!("anonymous")])
    );
    // Gone from the list by the time its leave is told.
    assert_eq!(
        call(&mut watcher, "wamp.session.list", json!([]), json!({})).await,
        Ok(json!([watcher.session]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_and_registrations_are_told_and_their_lives_published() {
    let addr = serve_router(router()).await;
    let mut watcher = V2::join(addr, Serializer::Json).await;
    let mut topics = vec![];
    for t in [
        "wamp.subscription.on_create",
        "wamp.subscription.on_subscribe",
        "wamp.subscription.on_unsubscribe",
        "wamp.subscription.on_delete",
        "wamp.registration.on_create",
        "wamp.registration.on_register",
        "wamp.registration.on_unregister",
        "wamp.registration.on_delete",
    ] {
        topics.push(subscribe(&mut watcher, t).await);
    }
    let mut c = V2::join(addr, Serializer::Json).await;
    let sub = subscribe(&mut c, "com.example.t").await;
    let (s, args) = event(&mut watcher).await;
    assert_eq!(s, topics[0]);
    assert_eq!(args[0], c.session);
    assert_eq!(args[1]["id"], sub);
    assert_eq!(args[1]["uri"], "com.example.t");
    assert_eq!(args[1]["match"], "exact");
    assert!(args[1]["created"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        event(&mut watcher).await,
        (topics[1], vec![json!(c.session), json!(sub)])
    );

    // The procedures.
    let list = call(&mut watcher, "wamp.subscription.list", json!([]), json!({}))
        .await
        .unwrap();
    assert!(list["exact"].as_array().unwrap().contains(&json!(sub)));
    for (procedure, args, want) in [
        (
            "wamp.subscription.lookup",
            json!(["com.example.t"]),
            json!(sub),
        ),
        (
            "wamp.subscription.lookup",
            json!(["com.example.t", {"match": "prefix"}]),
            Value::Null,
        ),
        (
            "wamp.subscription.match",
            json!(["com.example.t"]),
            json!([sub]),
        ),
        (
            "wamp.subscription.match",
            json!(["com.example.none"]),
            Value::Null,
        ),
        (
            "wamp.subscription.list_subscribers",
            json!([sub]),
            json!([c.session]),
        ),
        (
            "wamp.subscription.count_subscribers",
            json!([sub]),
            json!(1),
        ),
    ] {
        assert_eq!(
            call(&mut watcher, procedure, args.clone(), json!({})).await,
            Ok(want),
            "{procedure} {args}"
        );
    }
    let got = call(
        &mut watcher,
        "wamp.subscription.get",
        json!([sub]),
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(
        (&got["uri"], &got["match"]),
        (&json!("com.example.t"), &json!("exact"))
    );
    assert_eq!(
        call(
            &mut watcher,
            "wamp.subscription.get",
            json!([987_654]),
            json!({})
        )
        .await,
        Err("wamp.error.no_such_subscription".into())
    );

    // Registrations.
    let request = c.request();
    c.send(&Message::Register {
        request,
        options: dict(json!({"match": "prefix", "invoke": "roundrobin"})),
        procedure: "com.example.p.".into(),
    })
    .await;
    let Message::Registered { registration, .. } = c.recv().await else {
        panic!()
    };
    let (s, args) = event(&mut watcher).await;
    assert_eq!(s, topics[4]);
    assert_eq!(args[1]["invoke"], "roundrobin");
    assert_eq!(args[1]["match"], "prefix");
    assert_eq!(
        event(&mut watcher).await,
        (topics[5], vec![json!(c.session), json!(registration)])
    );
    for (procedure, args, want) in [
        (
            "wamp.registration.lookup",
            json!(["com.example.p.", {"match": "prefix"}]),
            json!(registration),
        ),
        (
            "wamp.registration.match",
            json!(["com.example.p.x"]),
            json!(registration),
        ),
        (
            "wamp.registration.match",
            json!(["com.example.q"]),
            Value::Null,
        ),
        (
            "wamp.registration.list_callees",
            json!([registration]),
            json!([c.session]),
        ),
        (
            "wamp.registration.count_callees",
            json!([registration]),
            json!(1),
        ),
    ] {
        assert_eq!(
            call(&mut watcher, procedure, args.clone(), json!({})).await,
            Ok(want),
            "{procedure} {args}"
        );
    }
    let list = call(&mut watcher, "wamp.registration.list", json!([]), json!({}))
        .await
        .unwrap();
    assert_eq!(list["prefix"], json!([registration]));
    let got = call(
        &mut watcher,
        "wamp.registration.get",
        json!([registration]),
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(got["invoke"], "roundrobin");

    // UNSUBSCRIBE and leaving: unsubscribe, then delete, for each.
    let request = c.request();
    c.send(&Message::Unsubscribe {
        request,
        subscription: sub,
    })
    .await;
    assert!(matches!(c.recv().await, Message::Unsubscribed { .. }));
    assert_eq!(
        event(&mut watcher).await,
        (topics[2], vec![json!(c.session), json!(sub)])
    );
    assert_eq!(
        event(&mut watcher).await,
        (topics[3], vec![json!(c.session), json!(sub)])
    );
    let id = c.session;
    drop(c);
    assert_eq!(
        event(&mut watcher).await,
        (topics[6], vec![json!(id), json!(registration)])
    );
    assert_eq!(
        event(&mut watcher).await,
        (topics[7], vec![json!(id), json!(registration)])
    );
}

fn cra_router() -> WampRouter {
    router().auth(WampCra::new(
        |_s, key: String, _e| async move {
            matches!(key.as_str(), "ada" | "bob" | "carl").then(|| Secret::plain("secret"))
        },
        |_s, key: AuthKey| async move {
            match key {
                AuthKey::Key(k) if k == "ada" => Permissions::all(),
                _ => Permissions::none().allow_call("com.example.*"),
            }
        },
    ))
}

async fn user(addr: SocketAddr, name: &str) -> V2 {
    ticket_join(addr, name, "secret").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorized_session_kills_others_with_a_goodbye() {
    let addr = serve_router(cra_router()).await;
    let mut ada = user(addr, "ada").await;
    let mut bob = user(addr, "bob").await;
    // Bob may not call the meta API.
    assert_eq!(
        call(&mut bob, "wamp.session.list", json!([]), json!({})).await,
        Err("wamp.error.not_authorized".into())
    );
    // Not itself, and a reason must be a URI.
    let me = ada.session;
    assert_eq!(
        call(&mut ada, "wamp.session.kill", json!([me]), json!({})).await,
        Err("wamp.error.no_such_session".into())
    );
    assert_eq!(
        call(
            &mut ada,
            "wamp.session.kill",
            json!([bob.session]),
            json!({"reason": "no uri"})
        )
        .await,
        Err("wamp.error.invalid_uri".into())
    );
    // A message longer than a close frame may carry: the GOODBYE has it all.
    let message = "ü".repeat(100);
    assert_eq!(
        call(
            &mut ada,
            "wamp.session.kill",
            json!([bob.session]),
            json!({"reason": "com.example.bye", "message": message})
        )
        .await,
        Ok(Value::Null)
    );
    match bob.recv().await {
        Message::Goodbye { reason, details } => {
            assert_eq!(reason, "com.example.bye");
            assert_eq!(details["message"], message.as_str());
        }
        other => panic!("{other:?}"),
    }
    match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut bob.ws)).await {
        Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f))))) => {
            assert!(f.reason.len() <= 123);
        }
        other => panic!("{other:?}"),
    }
    let carl1 = user(addr, "carl").await;
    let carl2 = user(addr, "carl").await;
    let mut killed = vec![carl1.session, carl2.session];
    killed.sort_unstable();
    assert_eq!(
        call(
            &mut ada,
            "wamp.session.kill_by_authid",
            json!(["carl"]),
            json!({})
        )
        .await,
        Ok(json!(killed))
    );
    let _dan = user(addr, "bob").await;
    assert_eq!(
        call(
            &mut ada,
            "wamp.session.kill_by_authrole",
            json!(["user"]),
            json!({})
        )
        .await,
        Ok(json!(1)),
        "the caller itself is spared"
    );
}

/// The next EVENT on `subscription`, skipping others (meta events of the same watcher).
async fn event_on(c: &mut V2, subscription: u64) -> Vec<Value> {
    loop {
        let (sub, args) = event(c).await;
        if sub == subscription {
            return args;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testaments_are_published_when_a_session_ends_unless_flushed() {
    let addr =
        serve_router(router().topic("com.example.sealed", Topic::new().deny_publish())).await;
    let mut watcher = V2::join(addr, Serializer::Json).await;
    assert_eq!(
        watcher.welcome["roles"]["dealer"]["features"]["testament_meta_api"],
        true
    );
    let will = subscribe(&mut watcher, "com.example.will").await;
    let leaves = subscribe(&mut watcher, "wamp.session.on_leave").await;
    let add =
        |topic: &str, args: Value, kwargs: Value| (json!([topic, args, {"n": args[0]}]), kwargs);

    // Checked as a publication would be, and bounded.
    let mut a = V2::join(addr, Serializer::MsgPack).await;
    for (args, kwargs, error) in [
        (
            json!(["not a uri", []]),
            json!({}),
            "wamp.error.invalid_uri",
        ),
        (
            json!(["com.example.sealed", []]),
            json!({}),
            "wamp.error.not_authorized",
        ),
        (
            json!(["org.unmapped", []]),
            json!({}),
            "wamp.error.not_authorized",
        ),
        (
            json!(["com.example.will", []]),
            json!({"scope": "later"}),
            "wamp.error.invalid_argument",
        ),
        (
            json!(["com.example.will", []]),
            json!({"publish_options": {"retain": 1}}),
            "wamp.error.invalid_argument",
        ),
        (
            json!(["com.example.will", 5]),
            json!({}),
            "wamp.error.invalid_argument",
        ),
    ] {
        assert_eq!(
            call(&mut a, "wamp.session.add_testament", args.clone(), kwargs).await,
            Err(error.to_owned()),
            "{args}"
        );
    }
    // Options count toward the budget: a long list does not fit.
    let many: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
    assert_eq!(
        call(
            &mut a,
            "wamp.session.add_testament",
            json!(["com.example.will", []]),
            json!({"publish_options": {"exclude_authid": many}})
        )
        .await,
        Err("wamp.error.too_many_testaments".into())
    );
    assert_eq!(
        call(
            &mut a,
            "wamp.session.add_testament",
            json!(["wamp.session.on_join", []]),
            json!({})
        )
        .await,
        Err("wamp.error.invalid_uri".into()),
        "reserved"
    );
    for i in 0..32 {
        let (args, kwargs) = add("com.example.will", json!([i]), json!({}));
        assert_eq!(
            call(&mut a, "wamp.session.add_testament", args, kwargs).await,
            Ok(Value::Null)
        );
    }
    let (args, kwargs) = add("com.example.will", json!([32]), json!({}));
    assert_eq!(
        call(&mut a, "wamp.session.add_testament", args, kwargs).await,
        Err("wamp.error.too_many_testaments".into())
    );
    // Flushing forgets a scope, and frees its room.
    assert_eq!(
        call(
            &mut a,
            "wamp.session.flush_testaments",
            json!([]),
            json!({})
        )
        .await,
        Ok(json!(32))
    );
    for (arg, scope) in [(1, "destroyed"), (0, "detached"), (2, "destroyed")] {
        let (args, kwargs) = add("com.example.will", json!([arg]), json!({"scope": scope}));
        assert_eq!(
            call(&mut a, "wamp.session.add_testament", args, kwargs).await,
            Ok(Value::Null)
        );
    }
    // One that the watcher may not receive: published, but not to it.
    let (args, kwargs) = add(
        "com.example.will",
        json!([99]),
        json!({"publish_options": {"exclude": [watcher.session]}}),
    );
    assert_eq!(
        call(&mut a, "wamp.session.add_testament", args, kwargs).await,
        Ok(Value::Null)
    );

    // A session that says GOODBYE leaves its testaments too (the spec); one that flushed
    // them first leaves none (its testament would come before a's).
    let goodbye = Message::Goodbye {
        details: Default::default(),
        reason: "wamp.close.close_realm".into(),
    };
    let mut b = V2::join(addr, Serializer::Json).await;
    let (args, kwargs) = add("com.example.will", json!(["b"]), json!({}));
    assert_eq!(
        call(&mut b, "wamp.session.add_testament", args, kwargs).await,
        Ok(Value::Null)
    );
    b.send(&goodbye).await;
    assert!(matches!(b.recv().await, Message::Goodbye { .. }));
    assert_eq!(event_on(&mut watcher, will).await, vec![json!("b")]);
    let mut e = V2::join(addr, Serializer::Json).await;
    let (args, kwargs) = add("com.example.will", json!(["e"]), json!({}));
    assert_eq!(
        call(&mut e, "wamp.session.add_testament", args, kwargs).await,
        Ok(Value::Null)
    );
    assert_eq!(
        call(
            &mut e,
            "wamp.session.flush_testaments",
            json!([]),
            json!({})
        )
        .await,
        Ok(json!(1))
    );
    e.send(&goodbye).await;
    assert!(matches!(e.recv().await, Message::Goodbye { .. }));
    assert_eq!(event_on(&mut watcher, leaves).await[0], json!(e.session));

    // a's connection drops without GOODBYE: detached first, then destroyed, each in order.
    drop(a);
    for n in [0, 1, 2] {
        assert_eq!(
            event_on(&mut watcher, will).await,
            vec![json!(n)],
            "testament {n}"
        );
    }
    // Nothing else: the next event on the topic is one published now.
    let mut c = V2::join(addr, Serializer::Cbor).await;
    c.publish("com.example.will", json!(["end"]), json!({}), json!({}))
        .await;
    assert_eq!(event_on(&mut watcher, will).await, vec![json!("end")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_session_leaves_its_testaments_unless_all_are_killed() {
    let addr = serve_router(router().auth(WampCra::new(
        |_s, _key: String, _e| async move { Some(Secret::plain("secret")) },
        |_s, key: AuthKey| async move {
            match key {
                AuthKey::Key(k) if k == "mallory" => {
                    Permissions::none().allow_call("wamp.session.*")
                }
                _ => Permissions::all(),
            }
        },
    )))
    .await;
    // One who may call the procedure but not publish to the topic leaves no testament.
    let mut mallory = user(addr, "mallory").await;
    assert_eq!(
        call(
            &mut mallory,
            "wamp.session.add_testament",
            json!(["com.example.will", ["mallory"]]),
            json!({})
        )
        .await,
        Err("wamp.error.not_authorized".into())
    );
    let mut ada = user(addr, "ada").await;
    let will = subscribe(&mut ada, "com.example.will").await;
    // Meta events of the sessions `kill_all` ends would come here.
    let _leaves = subscribe(&mut ada, "wamp.session.on_leave").await;
    let mut victims = Vec::new();
    for name in ["bob", "carl", "dan"] {
        let mut v = user(addr, name).await;
        assert_eq!(
            call(
                &mut v,
                "wamp.session.add_testament",
                json!(["com.example.will", [name]]),
                json!({})
            )
            .await,
            Ok(Value::Null)
        );
        victims.push(v);
    }
    assert_eq!(
        call(
            &mut ada,
            "wamp.session.kill",
            json!([victims[0].session]),
            json!({})
        )
        .await,
        Ok(Value::Null)
    );
    assert_eq!(event_on(&mut ada, will).await, vec![json!("bob")]);
    // Killed all at once: none (the spec), so the next event is one published after.
    assert_eq!(
        call(&mut ada, "wamp.session.kill_all", json!([]), json!({})).await,
        Ok(json!(3)),
        "carl, dan and mallory"
    );
    for mut v in victims.drain(1..) {
        assert!(matches!(v.recv().await, Message::Goodbye { .. }));
        // Until the connection is closed: the session has ended on the router.
        while let Some(Ok(_)) = futures_util::StreamExt::next(&mut v.ws).await {}
    }
    let mut eve = user(addr, "eve").await;
    eve.publish("com.example.will", json!(["end"]), json!({}), json!({}))
        .await;
    // Neither testaments nor on_leave events of the sessions killed all at once.
    assert_eq!(event(&mut ada).await, (will, vec![json!("end")]));
}

/// PUBLISHes with `acknowledge` and waits for PUBLISHED: its publication id.
async fn published(c: &mut V2, topic: &str, args: Value, kwargs: Value, options: Value) -> u64 {
    let mut options = options;
    options["acknowledge"] = json!(true);
    c.publish(topic, args, kwargs, options).await;
    match c.recv().await {
        Message::Published { publication, .. } => publication,
        other => panic!("{other:?}"),
    }
}

/// The (topic, args, kwargs) of the events `wamp.subscription.get_events` returned.
fn told(events: &Value) -> Vec<(String, Value, Value)> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["topic"].as_str().unwrap().to_owned(),
                e["args"].clone(),
                e["kwargs"].clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_history_tells_a_subscriber_the_last_events_it_could_have_received() {
    let addr = serve_router(
        router()
            .event_history("com.example.hist", 3)
            .event_history("com.example.pat.*", 2),
    )
    .await;
    let mut reader = V2::join(addr, Serializer::Json).await;
    assert_eq!(
        reader.welcome["roles"]["broker"]["features"]["event_history"],
        true
    );
    let mut publisher = V2::join(addr, Serializer::MsgPack).await;
    let publisher_id = publisher.session;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            published(
                &mut publisher,
                "com.example.hist",
                json!([i]),
                json!({}),
                json!({}),
            )
            .await,
        );
    }
    // Not for the reader: excluded, or only for others.
    published(
        &mut publisher,
        "com.example.hist",
        json!(["excluded"]),
        json!({}),
        json!({"exclude": [reader.session]}),
    )
    .await;
    published(
        &mut publisher,
        "com.example.hist",
        json!(["eligible"]),
        json!({}),
        json!({"eligible": [publisher_id]}),
    )
    .await;
    // Kept, but not for the reader's authrole.
    published(
        &mut publisher,
        "com.example.hist",
        json!(["not for anonymous"]),
        json!({}),
        json!({"exclude_authrole": ["anonymous"]}),
    )
    .await;
    let last = published(
        &mut publisher,
        "com.example.hist",
        json!([]),
        json!({"k": "v"}),
        json!({"disclose_me": true}),
    )
    .await;
    let hist = subscribe(&mut reader, "com.example.hist").await;
    // Events naming their audience by session id are not kept (ids change on reconnect: the
    // spec); of the last 3 kept, one was not for the reader.
    let events = call(
        &mut reader,
        "wamp.subscription.get_events",
        json!([hist]),
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(
        told(&events),
        vec![
            ("com.example.hist".to_owned(), json!([]), json!({"k": "v"})),
            ("com.example.hist".to_owned(), json!([3]), Value::Null),
        ]
    );
    assert_eq!(events[1].get("kwargs"), None, "no kwargs: none told");
    // Options beyond `limit` are not implemented: refused, not ignored.
    assert_eq!(
        call(
            &mut reader,
            "wamp.subscription.get_events",
            json!([hist]),
            json!({"after_publication": 1})
        )
        .await,
        Err("wamp.error.invalid_argument".into())
    );
    let e = &events[0];
    assert_eq!(
        (e["subscription"].as_u64(), e["publication"].as_u64()),
        (Some(hist), Some(last))
    );
    assert_eq!(e["publisher"], json!(publisher.session));
    let ts = e["timestamp"].as_str().unwrap();
    assert!(ts.ends_with('Z') && ts.len() == 24, "{ts}");
    assert!(!ids.contains(&last));

    // The newest first, `limit` of them.
    for i in 4..7 {
        published(
            &mut publisher,
            "com.example.hist",
            json!([i]),
            json!({}),
            json!({}),
        )
        .await;
    }
    for i in 4..7 {
        assert_eq!(event(&mut reader).await, (hist, vec![json!(i)]), "live");
    }
    let events = call(
        &mut reader,
        "wamp.subscription.get_events",
        json!([hist, 2]),
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(
        told(&events),
        vec![
            ("com.example.hist".to_owned(), json!([6]), Value::Null),
            ("com.example.hist".to_owned(), json!([5]), Value::Null),
        ]
    );

    // A pattern subscription: every kept topic it matches, newest first.
    for (topic, i) in [
        ("com.example.pat.a", 1),
        ("com.example.pat.b", 2),
        ("com.example.pat.a", 3),
        ("com.example.pat.a", 4),
    ] {
        published(&mut publisher, topic, json!([i]), json!({}), json!({})).await;
    }
    let request = reader.request();
    reader
        .send(&Message::Subscribe {
            request,
            options: dict(json!({"match": "prefix"})),
            topic: "com.example.pat.".into(),
        })
        .await;
    let Message::Subscribed {
        subscription: pat, ..
    } = reader.recv().await
    else {
        panic!("not subscribed");
    };
    let events = call(
        &mut reader,
        "wamp.subscription.get_events",
        json!([pat]),
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(
        told(&events),
        vec![
            ("com.example.pat.a".to_owned(), json!([4]), Value::Null),
            ("com.example.pat.a".to_owned(), json!([3]), Value::Null),
            ("com.example.pat.b".to_owned(), json!([2]), Value::Null),
        ]
    );

    // Where no history is kept, for whom is not a subscriber, and for no subscription.
    let other = subscribe(&mut reader, "com.example.other").await;
    assert_eq!(
        call(
            &mut reader,
            "wamp.subscription.get_events",
            json!([other]),
            json!({})
        )
        .await,
        Err("wamp.error.history_unavailable".into())
    );
    assert_eq!(
        call(
            &mut publisher,
            "wamp.subscription.get_events",
            json!([hist]),
            json!({})
        )
        .await,
        Err("wamp.error.not_authorized".into())
    );
    assert_eq!(
        call(
            &mut reader,
            "wamp.subscription.get_events",
            json!([12345]),
            json!({})
        )
        .await,
        Err("wamp.error.no_such_subscription".into())
    );
}
