//! Authorization as data: a role table (Crossbar's shape) decides what each authrole may
//! call, register, publish and subscribe to, and whom it discloses, over real sockets with
//! v1 and v2 clients, anonymous and authenticated.
mod common;

use common::{v2::*, *};
use serde_json::{Value, json};
use tower_wamp::{
    Args, Topic, WampRouter,
    auth::{Secret, WampCra},
    core::{
        auth::{AuthKey, Permissions},
        codec::v2::{Message, Serializer},
        roles::RoleTable,
    },
};

const TABLE: &str = r#"{
    "roles": [
        {"name": "anonymous", "permissions": [
            {"uri": "com.example.", "match": "prefix",
             "allow": {"call": true, "subscribe": true, "publish": true},
             "disclose": {"caller": true}},
            {"uri": "com.example.secret", "allow": {"subscribe": true}},
            {"uri": "com..wild", "match": "wildcard", "allow": {"register": true}}
        ]},
        {"name": "backend", "permissions": [
            {"uri": "", "match": "prefix",
             "allow": {"call": true, "register": true, "publish": true, "subscribe": true},
             "disclose": {"publisher": true}, "cache": true}
        ]},
        {"name": "user"}
    ],
    "principals": {"svc": "backend"}
}"#;

fn router() -> WampRouter {
    WampRouter::new()
        .realm("realm1")
        .rpc("com.example.add", |Args(n): Args<Vec<i64>>| async move {
            n.iter().sum::<i64>()
        })
        .rpc("org.admin.reset", || async { "reset" })
        .topic("com.example.*", Topic::new())
        .roles(RoleTable::from_json(TABLE).unwrap())
}

async fn call(c: &mut V2, procedure: &str, args: Value) -> Result<Value, String> {
    match c.call(procedure, args, json!({})).await {
        Message::Result { args, .. } => Ok(args.first().cloned().unwrap_or(Value::Null)),
        Message::Error { error, .. } => Err(error),
        other => panic!("{other:?}"),
    }
}

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

async fn publish_acked(c: &mut V2, topic: &str) -> Result<(), String> {
    c.publish(topic, json!(["x"]), json!({}), json!({"acknowledge": true}))
        .await;
    match c.recv().await {
        Message::Published { .. } => Ok(()),
        Message::Error { error, .. } => Err(error),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_sessions_get_what_the_anonymous_role_permits() {
    let addr = serve_router(router()).await;
    let mut c = V2::join(addr, Serializer::Json).await;
    assert_eq!(c.welcome["authrole"], "anonymous");
    assert_eq!(
        call(&mut c, "com.example.add", json!([1, 2])).await,
        Ok(json!(3))
    );
    // No rule matches: refused; the exact rule beats the prefix.
    assert_eq!(
        call(&mut c, "org.admin.reset", json!([])).await,
        Err("wamp.error.not_authorized".into())
    );
    assert_eq!(
        publish_acked(&mut c, "com.example.secret").await,
        Err("wamp.error.not_authorized".into())
    );
    assert_eq!(publish_acked(&mut c, "com.example.open").await, Ok(()));
    assert!(matches!(
        c.subscribe("com.example.secret").await,
        Message::Subscribed { .. }
    ));
    // Registering: only where the wildcard rule allows it.
    assert_eq!(
        register(&mut c, "com.example.mine", json!({})).await,
        Err("wamp.error.not_authorized".into())
    );
    assert!(
        register(&mut c, "com.anything.wild", json!({}))
            .await
            .is_ok()
    );

    // A v1 session is anonymous too.
    let mut v1 = connect(addr).await;
    let answer = v1
        .call("c1", "com.example.add", &[json!(2), json!(2)])
        .await;
    assert_eq!(answer, json!([3, "c1", 4]));
    let answer = v1.call("c2", "org.admin.reset", &[]).await;
    assert_eq!(
        answer,
        json!([
            4,
            "c2",
            "http://api.wamp.ws/error#unauthorized",
            "unauthorized"
        ])
    );
}

fn authenticated_router() -> WampRouter {
    router().auth(
        WampCra::new(
            |_s, key: String, _e| async move {
                matches!(key.as_str(), "svc" | "ada").then(|| Secret::plain("secret"))
            },
            // The role table decides: this function is not asked.
            |_s, _key: AuthKey| async move { Permissions::all() },
        )
        .allow_anonymous(true),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principals_get_their_roles_and_rules_disclose_callers_and_publishers() {
    let addr = serve_router(authenticated_router()).await;
    let mut svc = ticket_join(addr, "svc", "secret").await.unwrap();
    assert_eq!(svc.welcome["authrole"], "backend");
    let mut ada = ticket_join(addr, "ada", "secret").await.unwrap();
    assert_eq!(ada.welcome["authrole"], "user");
    // The role "user" has no rules: nothing, whatever the WampCra function would say.
    assert_eq!(
        call(&mut ada, "com.example.add", json!([1])).await,
        Err("wamp.error.not_authorized".into())
    );
    let mut anon = V2::join(addr, Serializer::MsgPack).await;
    assert_eq!(anon.welcome["authrole"], "anonymous");
    // A role the table does not have: refused at the handshake (as Crossbar).
    let ghostly = RoleTable::from_json(
        r#"{"roles": [{"name": "anonymous"}], "principals": {"svc": "ghost"}}"#,
    )
    .unwrap();
    let addr2 = serve_router(authenticated_router().roles(ghostly)).await;
    assert_eq!(
        ticket_join(addr2, "svc", "secret").await.err().as_deref(),
        Some("wamp.error.no_such_role")
    );
    assert_eq!(
        ticket_join(addr2, "ada", "secret").await.err().as_deref(),
        Some("wamp.error.no_such_role"),
        "user is not in that table"
    );
    V2::join(addr2, Serializer::Json).await;

    // The backend registers anywhere; the anonymous caller is disclosed by its rule.
    register(&mut svc, "com.example.svc.echo", json!({}))
        .await
        .unwrap();
    let request = anon.request();
    anon.send(&Message::Call {
        request,
        options: Default::default(),
        procedure: "com.example.svc.echo".into(),
        args: vec![json!("hi")],
        kwargs: Default::default(),
    })
    .await;
    let invocation = match svc.recv().await {
        Message::Invocation {
            request, details, ..
        } => {
            assert_eq!(details["caller"], json!(anon.session));
            assert_eq!(details["caller_authrole"], "anonymous");
            request
        }
        other => panic!("{other:?}"),
    };
    svc.send(&Message::Yield {
        request: invocation,
        options: Default::default(),
        args: vec![json!("hi")],
        kwargs: Default::default(),
    })
    .await;
    assert!(matches!(anon.recv().await, Message::Result { .. }));

    // The backend's publications name it; the anonymous ones do not.
    let sub = match anon.subscribe("com.example.news").await {
        Message::Subscribed { subscription, .. } => subscription,
        other => panic!("{other:?}"),
    };
    svc.publish("com.example.news", json!([1]), json!({}), json!({}))
        .await;
    match anon.recv().await {
        Message::Event {
            subscription,
            details,
            ..
        } => {
            assert_eq!(subscription, sub);
            assert_eq!(details["publisher"], json!(svc.session));
            assert_eq!(details["publisher_authrole"], "backend");
        }
        other => panic!("{other:?}"),
    }
    let mut other = V2::join(addr, Serializer::Json).await;
    other
        .publish("com.example.news", json!([2]), json!({}), json!({}))
        .await;
    match anon.recv().await {
        Message::Event { details, args, .. } => {
            assert_eq!(args, vec![json!(2)]);
            assert_eq!(details.get("publisher"), None);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_tells_a_pattern_only_what_the_role_may_subscribe_to() {
    let table = RoleTable::from_json(
        r#"{"roles": [{"name": "anonymous", "permissions": [
            {"uri": "com.example.", "match": "prefix", "allow": {"call": true, "subscribe": true, "publish": true}},
            {"uri": "com.example.secret", "allow": {"publish": true}},
            {"uri": "wamp.subscription.get_events", "allow": {"call": true}}
        ]}]}"#,
    )
    .unwrap();
    let router = WampRouter::new()
        .realm("realm1")
        .topic("com.example.*", Topic::new())
        .meta_api(true)
        .event_history("com.example.*", 5)
        .roles(table);
    let addr = serve_router(router).await;
    let mut c = V2::join(addr, Serializer::Json).await;
    // (The meta procedure needs a rule of its own, like any other call.)
    let mut publisher = V2::join(addr, Serializer::Json).await;
    for (topic, word) in [
        ("com.example.secret", "password"),
        ("com.example.open", "hi"),
    ] {
        publish_acked_word(&mut publisher, topic, word).await;
    }
    let request = c.request();
    c.send(&Message::Subscribe {
        request,
        options: dict(json!({"match": "prefix"})),
        topic: "com.example.".into(),
    })
    .await;
    let Message::Subscribed { subscription, .. } = c.recv().await else {
        panic!("not subscribed");
    };
    let events = match c
        .call(
            "wamp.subscription.get_events",
            json!([subscription]),
            json!({}),
        )
        .await
    {
        Message::Error { error, .. } => panic!("{error}"),
        Message::Result { args, .. } => args[0].clone(),
        other => panic!("{other:?}"),
    };
    let words: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["args"][0])
        .collect();
    assert_eq!(
        words,
        vec![&json!("hi")],
        "the secret topic is not readable through history"
    );
}

async fn publish_acked_word(c: &mut V2, topic: &str, word: &str) {
    c.publish(
        topic,
        json!([word]),
        json!({}),
        json!({"acknowledge": true}),
    )
    .await;
    assert!(
        matches!(c.recv().await, Message::Published { .. }),
        "{topic}"
    );
}
