//! Soak: thousands of sessions connect, subscribe, publish and leave while subscribers
//! stay; afterwards every table is empty, memory is back near its baseline, and every
//! subscriber that stayed received every event, in order per publisher.
mod common;

use std::{collections::HashMap, time::Duration};

use common::*;
use futures_util::future::join_all;
use serde_json::json;
use tower_wamp::{Topic, WampRouter};

const TOPICS: usize = 10;
const WAVES: usize = 10;
const PER_WAVE: usize = 200;
const EVENTS: u64 = 5;

fn topic(k: usize) -> String {
    format!("urn:soak:{k}")
}

async fn visitor(addr: std::net::SocketAddr, i: usize) -> String {
    let mut c = connect(addr).await;
    let t = topic(i % TOPICS);
    // Frames of one session are handled in order: the subscription is in place before
    // the publications.
    c.send(json!([5, t])).await;
    for seq in 0..EVENTS {
        c.send(json!([7, t, {"p": c.session_id, "seq": seq}])).await;
    }
    // Its own events come back, in order (the publisher is included by default), among
    // those of other visitors of the topic.
    let mut own = vec![];
    while own.len() < EVENTS as usize {
        let e = c.recv().await;
        assert_eq!(e[1], t);
        if e[2]["p"] == c.session_id.as_str() {
            own.push(e[2]["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(own, (0..EVENTS).collect::<Vec<_>>());
    let id = c.session_id.clone();
    if i.is_multiple_of(2) {
        c.ws.close(None).await.unwrap();
    } // else: just drop the connection
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_sessions_come_and_go() {
    let mut router = WampRouter::new();
    for k in 0..TOPICS {
        router = router.topic(&topic(k), Topic::new());
    }
    let wamp = router.handle();
    let addr = serve_router(router).await;

    // Stayers: one per topic, reading everything in the background.
    let mut stayers = vec![];
    for k in 0..TOPICS {
        let mut c = connect(addr).await;
        c.subscribe(&topic(k)).await;
        stayers.push(tokio::spawn(async move {
            let mut by_publisher: HashMap<String, Vec<u64>> = HashMap::new();
            let expected = (WAVES * PER_WAVE / TOPICS) as u64 * EVENTS;
            let mut got = 0;
            while got < expected {
                let e = c.recv().await;
                by_publisher
                    .entry(e[2]["p"].as_str().unwrap().to_owned())
                    .or_default()
                    .push(e[2]["seq"].as_u64().unwrap());
                got += 1;
            }
            (c, by_publisher)
        }));
    }

    let started = std::time::Instant::now();
    let mut baseline = 0;
    let mut publishers = vec![];
    for wave in 0..WAVES {
        let ids = tokio::time::timeout(
            Duration::from_secs(60),
            join_all((0..PER_WAVE).map(|i| visitor(addr, wave * PER_WAVE + i))),
        )
        .await
        .expect("a wave finished in time");
        publishers.extend(ids);
        if wave == 0 {
            baseline = rss_kib();
        }
    }
    // Every visitor has gone.
    for _ in 0..500 {
        if wamp.sessions().len() == TOPICS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(wamp.sessions().len(), TOPICS, "only the stayers remain");
    assert_eq!(wamp.topic_count(), TOPICS);
    for k in 0..TOPICS {
        assert_eq!(wamp.subscribers(&topic(k)).len(), 1);
    }
    let after = rss_kib();
    eprintln!(
        "{} sessions in {:?}; RSS baseline {baseline} KiB, after {after} KiB",
        WAVES * PER_WAVE,
        started.elapsed()
    );
    assert!(
        after < baseline + 32 * 1024,
        "memory returned near its baseline: {baseline} -> {after} KiB"
    );

    for (k, stayer) in stayers.into_iter().enumerate() {
        let (mut c, by_publisher) = tokio::time::timeout(Duration::from_secs(30), stayer)
            .await
            .expect("the stayer got every event")
            .unwrap();
        assert_eq!(by_publisher.len(), WAVES * PER_WAVE / TOPICS);
        for (publisher, seqs) in by_publisher {
            assert_eq!(
                seqs,
                (0..EVENTS).collect::<Vec<_>>(),
                "topic {k}, publisher {publisher}"
            );
        }
        c.ws.close(None).await.unwrap();
    }
    for _ in 0..500 {
        if wamp.sessions().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(wamp.sessions().is_empty());
    assert_eq!(wamp.topic_count(), 0);
    let m = wamp.metrics();
    assert_eq!(m.sessions_open, 0);
    assert_eq!(m.sessions_total, (WAVES * PER_WAVE + TOPICS) as u64);
    assert_eq!(m.slow_consumers_disconnected + m.events_dropped, 0);
}
