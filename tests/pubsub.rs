//! Publish and subscribe over real WebSockets: rules, precedence, PUBLISH forms, CURIEs,
//! hooks, the server handle.
mod common;

use std::sync::{Arc, Mutex};

use common::*;
use serde_json::{Value, json};
use tower_wamp::{Publication, Session, Topic, WampLayer, WampRouter};

const EV: &str = "http://example.com/event#";

fn ev(name: &str) -> String {
    format!("{EV}{name}")
}

type Log = Arc<Mutex<Vec<String>>>;

fn router(log: &Log) -> WampRouter {
    let (l1, l2, l3, l4) = (log.clone(), log.clone(), log.clone(), log.clone());
    WampRouter::new()
        .topic(&ev("open"), Topic::new())
        .topic(&ev("sub-only"), Topic::subscribe_only())
        .topic(&ev("pub-only"), Topic::publish_only())
        .topic(&ev("prefix*"), Topic::new())
        .topic(
            &ev("prefix-closed"),
            Topic::new().deny_subscribe().deny_publish(),
        )
        .topic(
            &ev("vip"),
            Topic::new().subscribe_if(|s: Session, _t: String| async move {
                s.id()
                    .as_str()
                    .starts_with(|c: char| c.is_ascii_alphabetic())
            }),
        )
        .topic(
            &ev("shout"),
            Topic::new().broker(|_s: Session, mut p: Publication| async move {
                match p.event.as_str() {
                    Some("forbidden") => None,
                    Some(text) => {
                        p.event = json!(text.to_uppercase());
                        Some(p)
                    }
                    None => Some(p),
                }
            }),
        )
        .after_subscribe(move |s, t| l1.lock().unwrap().push(format!("sub {} {t}", s.id())))
        .after_publish(move |s, p| {
            l2.lock()
                .unwrap()
                .push(format!("pub {} {} {}", s.id(), p.topic, p.event))
        })
        .on_unsubscribe(move |s, t| l3.lock().unwrap().push(format!("unsub {} {t}", s.id())))
        .on_close(move |s, _| l4.lock().unwrap().push(format!("close {}", s.id())))
}

fn taken(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[tokio::test]
async fn events_reach_subscribers_with_full_uris_through_curies() {
    let log = Log::default();
    let addr = serve_router(router(&log)).await;
    let mut a = connect(addr).await;
    let mut b = connect(addr).await;
    a.prefix("event", EV).await;
    a.subscribe("event:open").await;
    b.subscribe(&ev("open")).await;
    b.prefix("e", EV).await;
    b.send(json!([7, "e:open", {"n": 1}])).await;
    assert_eq!(a.recv().await, json!([8, ev("open"), {"n": 1}]));
    // The three-element form includes the publisher by default.
    assert_eq!(b.recv().await, json!([8, ev("open"), {"n": 1}]));
    assert_eq!(
        taken(&log),
        vec![
            format!("sub {} {}", a.session_id, ev("open")),
            format!("sub {} {}", b.session_id, ev("open")),
            format!("pub {} {} {{\"n\":1}}", b.session_id, ev("open")),
        ]
    );
    // Prefixes are per connection: a's "event" prefix means nothing to b.
    b.send(json!([7, "event:open", 2])).await;
    a.expect_silence().await;
    // UNSUBSCRIBE through a CURIE.
    a.unsubscribe("event:open").await;
    assert_eq!(
        taken(&log),
        vec![format!("unsub {} {}", a.session_id, ev("open"))]
    );
    b.send(json!([7, ev("open"), 3])).await;
    assert_eq!(b.recv().await[2], 3);
    a.expect_silence().await;
}

#[tokio::test]
async fn curies_split_at_the_first_colon() {
    let addr = serve_router(WampRouter::new().topic("urn:x:*", Topic::new())).await;
    let mut a = connect(addr).await;
    a.prefix("p", "urn:x:").await;
    a.subscribe("p:a:b").await;
    a.send(json!([7, "urn:x:a:b", 1])).await;
    assert_eq!(a.recv().await, json!([8, "urn:x:a:b", 1]));
}

#[tokio::test]
async fn rules_allow_deny_and_are_silent() {
    let log = Log::default();
    let addr = serve_router(router(&log)).await;
    let mut a = connect(addr).await;
    for t in ["sub-only", "pub-only", "unmapped", "prefix-closed"] {
        a.subscribe(&ev(t)).await;
    }
    assert_eq!(
        taken(&log),
        vec![format!("sub {} {}", a.session_id, ev("sub-only"))]
    );
    // Publishing to a subscribe-only topic is dropped; nobody hears it and no hook runs.
    a.send(json!([7, ev("sub-only"), 1])).await;
    a.send(json!([7, ev("unmapped"), 1])).await;
    a.expect_silence().await;
    assert!(taken(&log).is_empty());
    // Publishing to a publish-only topic is allowed (after_publish runs) though nobody listens.
    a.send(json!([7, ev("pub-only"), 1])).await;
    a.sync().await;
    assert_eq!(
        taken(&log),
        vec![format!("pub {} {} 1", a.session_id, ev("pub-only"))]
    );
}

#[tokio::test]
async fn prefix_patterns_and_exact_precedence() {
    let log = Log::default();
    let addr = serve_router(router(&log).topic("*", Topic::subscribe_only())).await;
    let mut a = connect(addr).await;
    a.subscribe(&ev("prefix")).await;
    a.subscribe(&ev("prefix123")).await;
    // Exact deny beats both the longer-prefix match and the catch-all.
    a.subscribe(&ev("prefix-closed")).await;
    // The catch-all opens anything else for subscribing.
    a.subscribe("urn:anything").await;
    let subs: Vec<String> = taken(&log);
    assert_eq!(
        subs,
        vec![
            format!("sub {} {}", a.session_id, ev("prefix")),
            format!("sub {} {}", a.session_id, ev("prefix123")),
            format!("sub {} urn:anything", a.session_id),
        ]
    );
    a.send(json!([7, ev("prefix123"), "x"])).await;
    assert_eq!(a.recv().await, json!([8, ev("prefix123"), "x"]));
    // The catch-all is subscribe-only: this publish is dropped.
    a.send(json!([7, "urn:anything", "x"])).await;
    a.expect_silence().await;
}

#[tokio::test]
async fn resubscribing_is_a_no_op() {
    let log = Log::default();
    let addr = serve_router(router(&log)).await;
    let mut a = connect(addr).await;
    a.subscribe(&ev("open")).await;
    a.subscribe(&ev("open")).await;
    assert_eq!(taken(&log).len(), 1);
    a.send(json!([7, ev("open"), 1])).await;
    assert_eq!(a.recv().await[2], 1);
    a.expect_silence().await;
}

#[tokio::test]
async fn predicate_and_broker_function() {
    let log = Log::default();
    let router = router(&log).topic(
        &ev("nobody"),
        Topic::new().subscribe_if(|_s: Session, _t: String| async { false }),
    );
    let addr = serve_router(router).await;
    let mut a = connect(addr).await;
    a.subscribe(&ev("nobody")).await;
    a.subscribe(&ev("shout")).await;
    assert_eq!(
        taken(&log),
        vec![format!("sub {} {}", a.session_id, ev("shout"))]
    );
    a.send(json!([7, ev("shout"), "hello"])).await;
    assert_eq!(a.recv().await, json!([8, ev("shout"), "HELLO"]));
    a.send(json!([7, ev("shout"), "forbidden"])).await;
    a.send(json!([7, ev("nobody"), "x"])).await;
    a.expect_silence().await;
    let published = taken(&log);
    assert_eq!(
        published.len(),
        2,
        "denied publications run no after hook: {published:?}"
    );
}

async fn three(addr: std::net::SocketAddr, topic: &str) -> [Client; 3] {
    let mut cs = [
        connect(addr).await,
        connect(addr).await,
        connect(addr).await,
    ];
    for c in &mut cs {
        c.subscribe(topic).await;
    }
    cs
}

#[tokio::test]
async fn publish_forms_exclude_me_exclude_and_eligible() {
    let log = Log::default();
    let addr = serve_router(router(&log)).await;
    let t = ev("open");
    let [mut a, mut b, mut c] = three(addr, &t).await;
    let (ida, idb, idc) = (
        a.session_id.clone(),
        b.session_id.clone(),
        c.session_id.clone(),
    );

    // excludeMe = true: everyone but the publisher.
    a.send(json!([7, t, 1, true])).await;
    assert_eq!(b.recv().await[2], 1);
    assert_eq!(c.recv().await[2], 1);
    // excludeMe = false: everyone.
    a.send(json!([7, t, 2, false])).await;
    for x in [&mut a, &mut b, &mut c] {
        assert_eq!(x.recv().await[2], 2);
    }
    // An exclude list.
    a.send(json!([7, t, 3, [idb]])).await;
    assert_eq!(a.recv().await[2], 3);
    assert_eq!(c.recv().await[2], 3);
    // eligible ∩ subscribers − exclude (clj-wamp ignored exclude here; we intersect).
    a.send(json!([7, t, 4, [idc], [ida, idc, "not-a-session"]]))
        .await;
    assert_eq!(a.recv().await[2], 4);
    // Empty eligible: nobody.
    a.send(json!([7, t, 5, [], []])).await;
    for x in [&mut a, &mut b, &mut c] {
        x.expect_silence().await;
    }
}

#[tokio::test]
async fn the_publisher_can_be_left_out_of_the_three_element_form() {
    let log = Log::default();
    let addr = serve_router(router(&log).publisher_receives_own_events(false)).await;
    let t = ev("open");
    let [mut a, mut b, _c] = three(addr, &t).await;
    a.send(json!([7, t, "x"])).await;
    assert_eq!(b.recv().await[2], "x");
    a.expect_silence().await;
    // excludeMe = false still includes it.
    a.send(json!([7, t, "y", false])).await;
    assert_eq!(a.recv().await[2], "y");
}

#[tokio::test]
async fn closing_runs_on_close_then_one_unsubscribe_per_topic_and_leaves_nothing() {
    let log = Log::default();
    let router = router(&log);
    let wamp = router.handle();
    let addr = serve_router(router).await;
    let mut a = connect(addr).await;
    a.subscribe(&ev("open")).await;
    a.subscribe(&ev("prefix-x")).await;
    assert_eq!(wamp.sessions().len(), 1);
    assert_eq!(wamp.topic_count(), 2);
    taken(&log);
    let id = a.session_id.clone();
    a.ws.close(None).await.unwrap();
    for _ in 0..100 {
        if !wamp.sessions().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    assert!(wamp.sessions().is_empty());
    assert_eq!(wamp.topic_count(), 0);
    assert_eq!(
        taken(&log),
        vec![
            format!("close {id}"),
            format!("unsub {id} {}", ev("open")),
            format!("unsub {id} {}", ev("prefix-x")),
        ]
    );
}

#[tokio::test]
async fn the_server_handle_sends_lists_subscribes_and_closes() {
    let log = Log::default();
    let router = router(&log);
    let wamp = router.handle();
    let addr = serve_layer(WampLayer::new(router)).await;
    let t = ev("open");
    let [mut a, mut b, mut c] = three(addr, &t).await;
    let ids: Vec<tower_wamp::SessionId> = [&a, &b, &c]
        .iter()
        .map(|x| x.session_id.as_str().into())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(wamp.subscribers(&t), sorted);
    assert_eq!(wamp.sessions(), sorted);

    assert_eq!(wamp.publish(&t, &json!("all")).unwrap(), 3);
    for x in [&mut a, &mut b, &mut c] {
        assert_eq!(x.recv().await, json!([8, t, "all"]));
    }
    assert_eq!(wamp.publish_excluding(&t, &"but-a", &ids[..1]).unwrap(), 2);
    assert_eq!(b.recv().await[2], "but-a");
    assert_eq!(c.recv().await[2], "but-a");
    assert_eq!(wamp.publish_to(&t, &"only-c", &ids[2..]).unwrap(), 1);
    assert_eq!(c.recv().await[2], "only-c");
    wamp.send(&ids[1], "urn:direct", &Value::from(7)).unwrap();
    assert_eq!(b.recv().await, json!([8, "urn:direct", 7]));
    a.expect_silence().await;

    // Server-side subscription management needs no topic rule.
    assert!(wamp.subscribe(&ids[0], "urn:server-side"));
    assert_eq!(
        wamp.topics_of(&ids[0]),
        vec![t.clone(), "urn:server-side".into()]
    );
    assert_eq!(wamp.publish("urn:server-side", &1).unwrap(), 1);
    assert_eq!(a.recv().await, json!([8, "urn:server-side", 1]));
    assert!(wamp.unsubscribe(&ids[0], "urn:server-side"));
    assert_eq!(wamp.publish("urn:server-side", &1).unwrap(), 0);

    assert!(wamp.close(&ids[2]));
    assert_eq!(c.recv_close().await.0, 1000);
    assert!(!wamp.close(&"no-such-session".into()));
}

#[tokio::test]
async fn handlers_reach_the_server_handle_and_their_session() {
    let router = WampRouter::new().topic(&ev("open"), Topic::new()).rpc(
        "urn:notify",
        |w: tower_wamp::Wamp, s: Session| async move {
            s.send_event("urn:just-you", &"psst").unwrap();
            w.publish(&ev("open"), &"from a handler").unwrap()
        },
    );
    let addr = serve_router(router).await;
    let [mut a, mut b, _c] = three(addr, &ev("open")).await;
    a.send(json!([2, "n", "urn:notify"])).await;
    let mut got = [a.recv().await, a.recv().await, a.recv().await];
    got.sort_by_key(|v| v[0].as_i64());
    assert_eq!(got[0], json!([3, "n", 3]));
    assert!(got.contains(&json!([8, "urn:just-you", "psst"])));
    assert!(got.contains(&json!([8, ev("open"), "from a handler"])));
    assert_eq!(b.recv().await[2], "from a handler");
}
