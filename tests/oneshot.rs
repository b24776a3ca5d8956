//! Testing handlers without a socket: the router is a `tower::Service<Call>`.
use serde_json::json;
use tower::ServiceExt;
use tower_wamp::{Args, Call, CallReply, RpcError, Session, WampRouter};

async fn add(Args(numbers): Args<Vec<f64>>) -> f64 {
    numbers.iter().sum()
}

#[tokio::test]
async fn oneshot_answers_like_the_socket_would() {
    let router = WampRouter::new()
        .rpc("urn:add", add)
        .rpc("urn:me", |s: Session| async move { s.id().to_string() })
        .rpc("urn:header", |h: http::HeaderMap| async move {
            h.get("x-user").map(|v| v.to_str().unwrap().to_owned())
        })
        .rpc("urn:fail", || async {
            Err::<(), _>(RpcError::new("urn:e", "nope"))
        });
    let reply = router
        .clone()
        .oneshot(Call::new("urn:add", vec![json!(1), json!(2.5)]))
        .await
        .unwrap();
    assert_eq!(reply, CallReply::Result(json!(3.5)));
    let reply = router
        .clone()
        .oneshot(Call::new("urn:add", vec![json!("x")]))
        .await
        .unwrap();
    assert_eq!(
        reply.error().unwrap().uri(),
        "http://api.wamp.ws/error#invalid-argument"
    );
    let session = Session::detached("fixed-id".into());
    let reply = router
        .clone()
        .oneshot(Call::new("urn:me", vec![]).with_session(session))
        .await
        .unwrap();
    assert_eq!(reply.result(), Some(&json!("fixed-id")));
    let reply = router
        .clone()
        .oneshot(Call::new("urn:header", vec![]).with_header("x-user", "ada"))
        .await
        .unwrap();
    assert_eq!(reply.result(), Some(&json!("ada")));
    let reply = router
        .clone()
        .oneshot(Call::new("urn:fail", vec![]))
        .await
        .unwrap();
    assert_eq!(reply, CallReply::Error(RpcError::new("urn:e", "nope")));
    let reply = router.oneshot(Call::new("urn:none", vec![])).await.unwrap();
    assert_eq!(reply, CallReply::Error(RpcError::not_found()));
}
