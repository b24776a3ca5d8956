//! WAMP v2 pattern-based subscriptions over real sockets: prefix and wildcard matching,
//! one EVENT per matching subscription, publications from v2 and v1 clients and from the
//! server handle, and the topic rules and permissions that bound what a pattern reaches.
mod common;

use std::net::SocketAddr;

use common::{v2::*, *};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tower_wamp::{
    Session, Topic, WampRouter,
    auth::{Secret, WampCra},
    core::{
        auth::{AuthKey, Permissions},
        codec::v2::{Message, Serializer},
    },
};

const END: &str = "org.end";

fn router() -> WampRouter {
    WampRouter::new()
        .realm("realm1")
        .topic("com.example.*", Topic::new())
        // The end marker of a batch of events: matched by no pattern of the tests.
        .topic(END, Topic::new())
        .topic("com.example.closed", Topic::new().deny_subscribe())
        .topic(
            "com.example.vetted",
            Topic::new().subscribe_if(|_s: Session, _t: String| async { true }),
        )
}

/// SUBSCRIBEs with `options`; the subscription id, or the ERROR's URI.
async fn subscribe(c: &mut V2, topic: &str, options: Value) -> Result<u64, String> {
    let request = c.request();
    c.send(&Message::Subscribe {
        request,
        options: dict(options),
        topic: topic.into(),
    })
    .await;
    match c.recv().await {
        Message::Subscribed {
            request: r,
            subscription,
        } if r == request => Ok(subscription),
        Message::Error { error, .. } => Err(error),
        other => panic!("{other:?}"),
    }
}

fn prefix() -> Value {
    json!({"match": "prefix"})
}

fn wildcard() -> Value {
    json!({"match": "wildcard"})
}

/// Publishes with acknowledgement (so that its events are queued when it returns).
async fn publish(c: &mut V2, topic: &str, arg: Value) {
    c.publish(topic, json!([arg]), json!({}), json!({"acknowledge": true}))
        .await;
    assert!(matches!(c.recv().await, Message::Published { .. }));
}

/// The EVENTs `c` has received up to the one with argument `"end"` on `end_sub`:
/// (subscription, publication, topic detail, first argument).
async fn events_until_end(c: &mut V2, end_sub: u64) -> Vec<(u64, u64, Option<String>, Value)> {
    let mut got = vec![];
    loop {
        match c.recv().await {
            Message::Event {
                subscription,
                publication,
                details,
                args,
                ..
            } => {
                let arg = args.first().cloned().unwrap_or(Value::Null);
                if subscription == end_sub && arg == "end" {
                    return got;
                }
                let topic = details
                    .get("topic")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                got.push((subscription, publication, topic, arg));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_matching_subscription_gets_the_event_under_its_own_id() {
    let router = router();
    let wamp = router.handle();
    let addr = serve_router(router).await;
    for serializer in [Serializer::Json, Serializer::MsgPack, Serializer::Cbor] {
        let mut sub = V2::join(addr, serializer).await;
        assert_eq!(
            sub.welcome["roles"]["broker"]["features"]["pattern_based_subscription"],
            true
        );
        let exact = subscribe(&mut sub, "com.example.a.b", json!({}))
            .await
            .unwrap();
        let short = subscribe(&mut sub, "com.example.a", prefix())
            .await
            .unwrap();
        let long = subscribe(&mut sub, "com.example.", prefix()).await.unwrap();
        let wild = subscribe(&mut sub, "com.example..b", wildcard())
            .await
            .unwrap();
        let end = subscribe(&mut sub, END, json!({})).await.unwrap();
        let all = [exact, short, long, wild, end];
        assert_eq!(
            all.iter().collect::<std::collections::HashSet<_>>().len(),
            5,
            "one id per subscription"
        );
        // The same pattern again: the same id.
        assert_eq!(
            subscribe(&mut sub, "com.example.a", prefix()).await,
            Ok(short)
        );

        // From a v2 publisher.
        let mut publisher = V2::join(addr, serializer).await;
        publish(&mut publisher, "com.example.a.b", json!(1)).await;
        publish(&mut publisher, END, json!("end")).await;
        let got = events_until_end(&mut sub, end).await;
        let mut subs: Vec<u64> = got.iter().map(|e| e.0).collect();
        subs.sort_unstable();
        let mut want = vec![exact, short, long, wild];
        want.sort_unstable();
        assert_eq!(subs, want, "{serializer:?}: {got:?}");
        assert!(got.iter().all(|e| e.1 == got[0].1), "one publication id");
        for (subscription, _, topic, arg) in &got {
            assert_eq!(arg, &json!(1));
            let expected = (*subscription != exact).then(|| "com.example.a.b".to_owned());
            assert_eq!(
                topic, &expected,
                "the topic is named to pattern subscriptions only"
            );
        }

        // Hits and misses.
        for topic in [
            "com.example.a",       // short only
            "com.example.ab",      // short (a plain string prefix) and long
            "com.example.x.b",     // long and wild
            "com.example.x.b.c",   // long only
            "com.example.a.b.c.d", // short and long
        ] {
            publish(&mut publisher, topic, json!(topic)).await;
        }
        publish(&mut publisher, END, json!("end")).await;
        let mut got: Vec<(u64, String)> = events_until_end(&mut sub, end)
            .await
            .into_iter()
            .map(|(s, _, _, arg)| (s, arg.as_str().unwrap().to_owned()))
            .collect();
        got.sort();
        let mut want: Vec<(u64, String)> = [
            (short, "com.example.a"),
            (short, "com.example.ab"),
            (long, "com.example.a"),
            (long, "com.example.ab"),
            (long, "com.example.x.b"),
            (wild, "com.example.x.b"),
            (long, "com.example.x.b.c"),
            (short, "com.example.a.b.c.d"),
            (long, "com.example.a.b.c.d"),
        ]
        .into_iter()
        .map(|(s, t)| (s, t.to_owned()))
        .collect();
        want.sort();
        assert_eq!(got, want, "{serializer:?}");

        // From the server handle, and from a v1 client.
        wamp.publish("com.example.z.b", &"server").unwrap();
        let mut v1 = connect(addr).await;
        v1.send(json!([7, "com.example.z.b", "v1"])).await;
        // A v1 publisher does not get its own event: the end marker through the handle.
        tokio::time::sleep(QUIET).await;
        wamp.publish(END, &"end").unwrap();
        let got = events_until_end(&mut sub, end).await;
        let mut seen: Vec<(u64, Value)> = got.into_iter().map(|e| (e.0, e.3)).collect();
        seen.sort_by_key(|(s, a)| (*s, a.to_string()));
        let mut want = vec![
            (long, json!("server")),
            (wild, json!("server")),
            (long, json!("v1")),
            (wild, json!("v1")),
        ];
        want.sort_by_key(|(s, a)| (*s, a.to_string()));
        assert_eq!(seen, want, "{serializer:?}");

        // UNSUBSCRIBE by id ends that subscription only.
        let request = sub.request();
        sub.send(&Message::Unsubscribe {
            request,
            subscription: long,
        })
        .await;
        assert!(matches!(sub.recv().await, Message::Unsubscribed { .. }));
        publish(&mut publisher, "com.example.x.b.c", json!("gone")).await;
        publish(&mut publisher, "com.example.a.x", json!("short")).await;
        publish(&mut publisher, END, json!("end")).await;
        let got = events_until_end(&mut sub, end).await;
        assert_eq!(
            got.into_iter().map(|e| (e.0, e.3)).collect::<Vec<_>>(),
            vec![(short, json!("short"))]
        );
    }
}

#[tokio::test]
async fn patterns_reach_only_topics_whose_rules_plainly_allow_subscribing() {
    let addr = serve_router(router()).await;
    let mut sub = V2::join(addr, Serializer::Json).await;
    // A pattern outside every rule is refused; so is one under a topic with a predicate.
    assert_eq!(
        subscribe(&mut sub, "net.", prefix()).await,
        Err("wamp.error.not_authorized".into())
    );
    assert_eq!(
        subscribe(&mut sub, "com.example.vetted", prefix()).await,
        Err("wamp.error.not_authorized".into())
    );
    assert_eq!(
        subscribe(&mut sub, "com.", prefix()).await,
        Err("wamp.error.not_authorized".into()),
        "judged by the rule that covers the pattern itself"
    );
    let all = subscribe(&mut sub, "com.example.", prefix()).await.unwrap();
    let vetted = subscribe(&mut sub, "com.example.vetted", json!({}))
        .await
        .unwrap();
    let end = subscribe(&mut sub, END, json!({})).await.unwrap();
    let mut publisher = V2::join(addr, Serializer::Json).await;
    // Subscribing is denied on `closed` and guarded by a predicate on `vetted`: the pattern
    // gets neither; the exact subscriber of `vetted`, whose predicate ran, does.
    publish(&mut publisher, "com.example.closed", json!(1)).await;
    publish(&mut publisher, "com.example.vetted", json!(2)).await;
    publish(&mut publisher, "com.example.open", json!(3)).await;
    publish(&mut publisher, END, json!("end")).await;
    let got: Vec<(u64, Value)> = events_until_end(&mut sub, end)
        .await
        .into_iter()
        .map(|e| (e.0, e.3))
        .collect();
    assert_eq!(got, vec![(vetted, json!(2)), (all, json!(3))]);
}

#[tokio::test]
async fn bad_patterns_get_invalid_uri() {
    let addr = serve_router(router()).await;
    let mut sub = V2::join(addr, Serializer::Json).await;
    for (topic, options) in [
        ("com..x", prefix()),
        ("com.example.#", wildcard()),
        ("..", wildcard()),
        ("com.example.", json!({})),
    ] {
        assert_eq!(
            subscribe(&mut sub, topic, options).await,
            Err("wamp.error.invalid_uri".into()),
            "{topic}"
        );
    }
    assert_eq!(
        subscribe(&mut sub, "com.example.*", json!({"match": "glob"})).await,
        Err("wamp.error.option_not_allowed".into())
    );
}

fn cra_router() -> WampRouter {
    router().auth(WampCra::new(
        |_s, key: String, _e| async move { (key == "ada").then(|| Secret::plain("secret")) },
        |_s, _key: AuthKey| async move {
            Permissions::none()
                .allow_subscribe("com.example.*")
                .deny(
                    tower_wamp::core::auth::Action::Subscribe,
                    "com.example.secret",
                )
                .allow_publish("com.example.*")
                .allow_subscribe(END)
                .allow_publish(END)
        },
    ))
}

async fn ada(addr: SocketAddr) -> V2 {
    ticket_join(addr, "ada", "secret").await.unwrap()
}

#[tokio::test]
async fn a_pattern_reaches_only_topics_its_session_may_subscribe_to() {
    let addr = serve_router(cra_router()).await;
    let mut sub = ada(addr).await;
    let all = subscribe(&mut sub, "com.example.", prefix()).await.unwrap();
    let end = subscribe(&mut sub, END, json!({})).await.unwrap();
    assert_eq!(
        subscribe(&mut sub, "com.example.secret", json!({})).await,
        Err("wamp.error.not_authorized".into())
    );
    let mut publisher = ada(addr).await;
    publish(&mut publisher, "com.example.secret", json!(1)).await;
    publish(&mut publisher, "com.example.open", json!(2)).await;
    publish(&mut publisher, END, json!("end")).await;
    let got: Vec<(u64, Value)> = events_until_end(&mut sub, end)
        .await
        .into_iter()
        .map(|e| (e.0, e.3))
        .collect();
    assert_eq!(got, vec![(all, json!(2))]);
    assert!(
        tokio::time::timeout(QUIET, sub.ws.next()).await.is_err(),
        "nothing else"
    );
}

#[tokio::test]
async fn the_server_handle_and_broker_functions_keep_patterns_to_plainly_open_topics() {
    use std::sync::{Arc, Mutex};
    let hooked: Arc<Mutex<Vec<String>>> = Arc::default();
    let (on_sub, on_unsub) = (hooked.clone(), hooked.clone());
    let router = router()
        // A broker function that moves publications to the closed topic.
        .topic(
            "com.example.divert",
            Topic::new().broker(|_s: Session, mut p: tower_wamp::Publication| async move {
                p.topic = "com.example.closed".into();
                Some(p)
            }),
        )
        .after_subscribe(move |_s, t| on_sub.lock().unwrap().push(format!("+{t}")))
        .on_unsubscribe(move |_s, t| on_unsub.lock().unwrap().push(format!("-{t}")));
    let wamp = router.handle();
    let addr = serve_router(router).await;
    let mut sub = V2::join(addr, Serializer::Json).await;
    let all = subscribe(&mut sub, "com.example.", prefix()).await.unwrap();
    let end = subscribe(&mut sub, END, json!({})).await.unwrap();
    // A second session shares the pattern's id.
    let mut other = V2::join(addr, Serializer::Json).await;
    assert_eq!(
        subscribe(&mut other, "com.example.", prefix()).await,
        Ok(all)
    );
    wamp.publish("com.example.closed", &1).unwrap();
    wamp.publish("com.example.vetted", &2).unwrap();
    let mut publisher = V2::join(addr, Serializer::Json).await;
    publish(&mut publisher, "com.example.divert", json!(3)).await;
    wamp.publish("com.example.open", &4).unwrap();
    wamp.publish(END, &"end").unwrap();
    let got: Vec<(u64, Value)> = events_until_end(&mut sub, end)
        .await
        .into_iter()
        .map(|e| (e.0, e.3))
        .collect();
    assert_eq!(got, vec![(all, json!(4))]);
    // The topic hooks ran for the exact subscriptions only.
    drop(sub);
    tokio::time::sleep(QUIET).await;
    let mut hooked = hooked.lock().unwrap().clone();
    hooked.sort();
    assert_eq!(hooked, vec![format!("+{END}"), format!("-{END}")]);
}

#[tokio::test]
async fn exclude_and_eligible_apply_to_each_matching_subscription() {
    let addr = serve_router(router()).await;
    let mut sub = V2::join(addr, Serializer::Json).await;
    let a = subscribe(&mut sub, "com.example.a", prefix())
        .await
        .unwrap();
    let b = subscribe(&mut sub, "com.example..b", wildcard())
        .await
        .unwrap();
    let end = subscribe(&mut sub, END, json!({})).await.unwrap();
    let mut publisher = V2::join(addr, Serializer::Json).await;
    let me = sub.session;
    for (n, options) in [
        (1, json!({"exclude": [me]})),
        (2, json!({"eligible": [me]})),
        (3, json!({"eligible": [publisher.session]})),
        (4, json!({"eligible": [me], "exclude": [me]})),
    ] {
        let mut options = options;
        options["acknowledge"] = json!(true);
        publisher
            .publish("com.example.a.b", json!([n]), json!({}), options)
            .await;
        assert!(matches!(publisher.recv().await, Message::Published { .. }));
    }
    publish(&mut publisher, END, json!("end")).await;
    let mut got: Vec<(u64, Value)> = events_until_end(&mut sub, end)
        .await
        .into_iter()
        .map(|e| (e.0, e.3))
        .collect();
    got.sort_by_key(|(s, _)| *s);
    assert_eq!(got, vec![(a, json!(2)), (b, json!(2))]);
}

#[tokio::test]
async fn a_session_has_a_budget_of_patterns() {
    let layer = tower_wamp::WampLayer::new(router()).max_pattern_subscriptions(2);
    let addr = serve_layer(layer).await;
    let mut sub = V2::join(addr, Serializer::Json).await;
    subscribe(&mut sub, "com.example.a", prefix())
        .await
        .unwrap();
    subscribe(&mut sub, "com.example..b", wildcard())
        .await
        .unwrap();
    // Exact subscriptions are not patterns.
    subscribe(&mut sub, "com.example.x", json!({}))
        .await
        .unwrap();
    let request = sub.request();
    sub.send(&Message::Subscribe {
        request,
        options: dict(prefix()),
        topic: "com.example.b".into(),
    })
    .await;
    match tokio::time::timeout(WAIT, sub.ws.next()).await {
        Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f))))) => {
            assert_eq!(u16::from(f.code), 1008);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_retained_event_goes_to_a_later_subscriber_that_asks_and_may_have_it() {
    let addr = serve_router(router()).await;
    let mut publisher = V2::join(addr, Serializer::Json).await;
    assert_eq!(
        publisher.welcome["roles"]["broker"]["features"]["event_retention"],
        true
    );
    let retain = |extra: Value| {
        let mut o = json!({"acknowledge": true, "retain": true});
        o.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        o
    };
    for n in [1, 2] {
        publisher
            .publish(
                "com.example.r",
                json!([n]),
                json!({"k": n}),
                retain(json!({})),
            )
            .await;
        assert!(matches!(publisher.recv().await, Message::Published { .. }));
    }
    // Only the latest is kept; it comes right after SUBSCRIBED, marked retained.
    let mut late = V2::join(addr, Serializer::MsgPack).await;
    let sub = subscribe(&mut late, "com.example.r", json!({"get_retained": true}))
        .await
        .unwrap();
    match late.recv().await {
        Message::Event {
            subscription,
            details,
            args,
            kwargs,
            ..
        } => {
            assert_eq!(subscription, sub);
            assert_eq!(details["retained"], true);
            assert_eq!((args, kwargs), (vec![json!(2)], dict(json!({"k": 2}))));
        }
        other => panic!("{other:?}"),
    }
    // Without get_retained, or when it would not have been eligible: nothing.
    let mut plain = V2::join(addr, Serializer::Json).await;
    subscribe(&mut plain, "com.example.r", json!({}))
        .await
        .unwrap();
    publisher
        .publish(
            "com.example.r",
            json!([3]),
            json!({}),
            retain(json!({"eligible": [late.session]})),
        )
        .await;
    assert!(matches!(publisher.recv().await, Message::Published { .. }));
    let mut other = V2::join(addr, Serializer::Json).await;
    subscribe(&mut other, "com.example.r", json!({"get_retained": true}))
        .await
        .unwrap();
    // `late` was eligible and subscribed: it got event 3 live, and a second SUBSCRIBE
    // (already subscribed) does not send it again as the retained one.
    assert!(matches!(late.recv().await, Message::Event { args, .. } if args == vec![json!(3)]));
    assert_eq!(
        subscribe(&mut late, "com.example.r", json!({"get_retained": true})).await,
        Ok(sub)
    );

    // The publisher was excluded from its own publications (exclude_me).
    subscribe(
        &mut publisher,
        "com.example.r",
        json!({"get_retained": true}),
    )
    .await
    .unwrap();
    for c in [&mut plain, &mut other, &mut publisher, &mut late] {
        assert!(
            tokio::time::timeout(QUIET, c.ws.next()).await.is_err(),
            "no retained event"
        );
    }
}

#[tokio::test]
async fn retained_events_are_kept_within_the_budget() {
    let router = router().retain_events(tower_wamp::core::retained::RetainBudget {
        topics: 1,
        bytes: 1 << 20,
    });
    let addr = serve_router(router).await;
    let mut publisher = V2::join(addr, Serializer::Json).await;
    for topic in ["com.example.first", "com.example.second"] {
        publisher
            .publish(
                topic,
                json!([topic]),
                json!({}),
                json!({"acknowledge": true, "retain": true}),
            )
            .await;
        assert!(matches!(publisher.recv().await, Message::Published { .. }));
    }
    let mut late = V2::join(addr, Serializer::Json).await;
    subscribe(
        &mut late,
        "com.example.first",
        json!({"get_retained": true}),
    )
    .await
    .unwrap();
    let second = subscribe(
        &mut late,
        "com.example.second",
        json!({"get_retained": true}),
    )
    .await
    .unwrap();
    match late.recv().await {
        Message::Event {
            subscription, args, ..
        } => assert_eq!(
            (subscription, args),
            (second, vec![json!("com.example.second")])
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_retained_event_keeps_its_audience_by_authrole() {
    let addr = serve_router(router()).await;
    let mut publisher = V2::join(addr, Serializer::Json).await;
    for (n, options) in [
        (1, json!({"eligible_authrole": ["anonymous"]})),
        (2, json!({"exclude_authrole": ["anonymous"]})),
    ] {
        let topic = format!("com.example.role{n}");
        let mut options = options;
        options["acknowledge"] = json!(true);
        options["retain"] = json!(true);
        publisher
            .publish(&topic, json!([n]), json!({}), options)
            .await;
        assert!(matches!(publisher.recv().await, Message::Published { .. }));
    }
    let mut late = V2::join(addr, Serializer::Json).await;
    let s1 = subscribe(
        &mut late,
        "com.example.role1",
        json!({"get_retained": true}),
    )
    .await
    .unwrap();
    match late.recv().await {
        Message::Event {
            subscription, args, ..
        } => assert_eq!((subscription, args), (s1, vec![json!(1)])),
        other => panic!("{other:?}"),
    }
    subscribe(
        &mut late,
        "com.example.role2",
        json!({"get_retained": true}),
    )
    .await
    .unwrap();
    assert!(
        tokio::time::timeout(QUIET, late.ws.next()).await.is_err(),
        "anonymous was excluded from event 2"
    );
}

#[tokio::test]
async fn the_publisher_is_excluded_unless_it_asks() {
    let addr = serve_router(router()).await;
    let mut c = V2::join(addr, Serializer::Json).await;
    let sub = subscribe(&mut c, "com.example.me", json!({}))
        .await
        .unwrap();
    // By default (exclude_me true) the publisher does not get its own event ...
    publish(&mut c, "com.example.me", json!(1)).await;
    // ... with exclude_me false it does.
    c.publish(
        "com.example.me",
        json!([2]),
        json!({}),
        json!({"acknowledge": true, "exclude_me": false}),
    )
    .await;
    let mut got = vec![];
    for _ in 0..2 {
        match c.recv().await {
            Message::Event {
                subscription, args, ..
            } => got.push((subscription, args)),
            Message::Published { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, vec![(sub, vec![json!(2)])]);
    assert!(tokio::time::timeout(QUIET, c.ws.next()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_subscribers_get_events_in_order_with_their_extractors() {
    use tower_wamp::{Args, Caller, Kwargs, Procedure, core::matching::MatchPolicy};
    let (exact, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Value, Value, String)>();
    let (prefix, mut by_pattern) =
        tokio::sync::mpsc::unbounded_channel::<(String, Value, Value, String)>();
    let router = router()
        .on_event(
            "com.example.s",
            move |Procedure(topic): Procedure,
                  Args(args): Args<Value>,
                  Kwargs(kwargs): Kwargs<Value>,
                  caller: Caller| {
                let exact = exact.clone();
                async move {
                    if args[0] == json!("boom") {
                        panic!("a handler that panics");
                    }
                    let who = caller.session.to_string();
                    exact.send((topic, args, kwargs, who)).unwrap();
                }
            },
        )
        .on_events(
            MatchPolicy::Prefix,
            "com.example.p.",
            move |Procedure(topic): Procedure, Args(args): Args<Value>| {
                let prefix = prefix.clone();
                async move {
                    prefix
                        .send((topic, args, Value::Null, "prefix".into()))
                        .unwrap();
                }
            },
        );
    let wamp = router.handle();
    let addr = serve_router(router).await;
    let mut publisher = V2::join(addr, Serializer::Json).await;
    for n in 0..20 {
        publisher
            .publish("com.example.s", json!([n]), json!({"k": n}), json!({}))
            .await;
    }
    publisher
        .publish("com.example.s", json!(["boom"]), json!({}), json!({}))
        .await;
    publish(&mut publisher, "com.example.p.x", json!("pattern")).await;
    wamp.publish("com.example.s", &"server").unwrap();
    let me = publisher.session.to_string();
    for n in 0..20 {
        let got = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            got,
            (
                "com.example.s".into(),
                json!([n]),
                json!({"k": n}),
                me.clone()
            ),
            "in publication order"
        );
    }
    // The panic is caught and later events go on; the pattern subscriber has its own.
    let last = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (last.0.as_str(), &last.1),
        ("com.example.s", &json!(["server"]))
    );
    assert_ne!(
        last.3, me,
        "the server handle's publications come from no session"
    );
    let pattern = tokio::time::timeout(WAIT, by_pattern.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (pattern.0.as_str(), &pattern.1),
        ("com.example.p.x", &json!(["pattern"]))
    );
}
