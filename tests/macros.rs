//! `#[rpc]` and `#[topic]`: plain calls, registration, the oneshot path, a real socket.
mod common;

use common::*;
use serde_json::json;
use tower::ServiceExt;
use tower_wamp::{Args, Call, Publication, RpcError, Session, State, WampRouter, rpc, topic};

/// Adds two integers.
#[rpc("urn:api:add")]
async fn add(Args((a, b)): Args<(i64, i64)>) -> Result<i64, RpcError> {
    a.checked_add(b)
        .ok_or_else(|| RpcError::invalid_argument("overflow"))
}

#[derive(Clone)]
struct Greeting(String);

#[rpc("urn:api:greet", state = Greeting)]
async fn greet(State(Greeting(g)): State<Greeting>, session: Session) -> String {
    format!("{g} {}", session.id())
}

async fn nobody(_s: Session, _t: String) -> bool {
    false
}

#[topic("urn:ev:shout*")]
async fn shout(_s: Session, mut p: Publication) -> Option<Publication> {
    p.event = json!(p.event.as_str()?.to_uppercase());
    Some(p)
}

#[topic("urn:ev:closed", subscribe = nobody)]
async fn closed(_s: Session, p: Publication) -> Option<Publication> {
    Some(p)
}

#[topic("urn:ev:write-only", subscribe = deny)]
async fn write_only(_s: Session, p: Publication) -> Option<Publication> {
    Some(p)
}

#[tokio::test]
async fn attributes_keep_plain_calls_and_carry_their_uris() {
    assert_eq!(add(Args((2, 3))).await, Ok(5));
    assert!(add(Args((i64::MAX, 1))).await.is_err());
    assert_eq!((add::URI, shout::PATTERN), ("urn:api:add", "urn:ev:shout*"));
    let p = shout(
        Session::detached("s".into()),
        Publication::new("urn:ev:shout", json!("hey")),
    )
    .await
    .unwrap();
    assert_eq!(p.event, "HEY");
    assert!(
        shout(
            Session::detached("s".into()),
            Publication::new("urn:ev:shout", json!(1))
        )
        .await
        .is_none()
    );
}

#[tokio::test]
async fn oneshot_works_the_same_for_attribute_handlers() {
    let router: WampRouter = WampRouter::<Greeting>::new()
        .route(add)
        .route(greet)
        .with_state(Greeting("hello".into()));
    let reply = router
        .clone()
        .oneshot(Call::new(add::URI, vec![json!(40), json!(2)]))
        .await
        .unwrap();
    assert_eq!(reply.result(), Some(&json!(42)));
    let session = Session::detached("me".into());
    let reply = router
        .oneshot(Call::new(greet::URI, vec![]).with_session(session))
        .await
        .unwrap();
    assert_eq!(reply.result(), Some(&json!("hello me")));
}

#[tokio::test]
async fn attribute_routes_over_a_real_socket() {
    let router = WampRouter::new()
        .route(add)
        .route(shout)
        .route(closed)
        .route(write_only);
    let addr = serve_router(router).await;
    let mut a = connect(addr).await;
    assert_eq!(
        a.call("1", "urn:api:add", &[json!(1), json!(2)]).await,
        json!([3, "1", 3])
    );
    a.subscribe("urn:ev:shout-loud").await;
    a.subscribe("urn:ev:closed").await;
    a.subscribe("urn:ev:write-only").await;
    a.send(json!([7, "urn:ev:shout-loud", "hi"])).await;
    assert_eq!(a.recv().await, json!([8, "urn:ev:shout-loud", "HI"]));
    a.send(json!([7, "urn:ev:closed", "x"])).await;
    a.send(json!([7, "urn:ev:write-only", "x"])).await;
    a.expect_silence().await;
}
