//! WAMP-CRA and authorization over real WebSockets.
mod common;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::Request, middleware::Next, response::Response};
use common::*;
use serde_json::{Value, json};
use tower_wamp::{
    Args, Session, Topic, WampLayer, WampRouter,
    auth::{AUTH, AUTHREQ, CraFlavor, Secret, WampCra},
    core::auth::{AuthKey, Permissions, cljwamp_signature, sign},
};

const EV: &str = "http://example.com/event#";

fn ev(n: &str) -> String {
    format!("{EV}{n}")
}

fn secrets(key: &str) -> Option<Secret> {
    match key {
        "ada" => Some(Secret::plain("secret")),
        "carol" => Some(Secret::salted("secret", "salt123", 100, 16)),
        _ => None,
    }
}

fn permissions(key: &AuthKey) -> Permissions {
    match key.as_key() {
        Some("ada") | Some("carol") => Permissions::all(),
        _ => Permissions::none()
            .allow_call("urn:api:echo")
            .allow_subscribe(&ev("*")),
    }
}

fn cra() -> WampCra {
    WampCra::new(
        |_s, key: String, _extra| async move { secrets(&key) },
        |_s, key: AuthKey| async move { permissions(&key) },
    )
}

fn router(cra: WampCra) -> WampRouter {
    WampRouter::new()
        .rpc("urn:api:echo", |Args(a): Args<Vec<Value>>| async move { a })
        .rpc("urn:api:add", |Args((a, b)): Args<(i64, i64)>| async move {
            a + b
        })
        .rpc("urn:api:me", |s: Session| async move {
            s.auth_key().map(|k| k.to_string())
        })
        .topic(&ev("chat"), Topic::new())
        .topic(&ev("news*"), Topic::subscribe_only())
        .auth(cra)
}

async fn login(c: &mut Client, key: &str, secret: &str) -> Value {
    let challenge = c.call("r", AUTHREQ, &[json!(key)]).await;
    assert_eq!(challenge[0], 3, "{challenge}");
    let challenge = challenge[2].as_str().unwrap().to_owned();
    let parsed: Value = serde_json::from_str(&challenge).unwrap();
    let signing_key = match parsed.get("authextra") {
        Some(x) => tower_wamp::core::auth::derive_key(
            secret,
            x["salt"].as_str().unwrap(),
            x["iterations"].as_u64().unwrap() as u32,
            x["keylen"].as_u64().unwrap() as usize,
        ),
        None => secret.to_owned(),
    };
    c.call("a", AUTH, &[json!(sign(&signing_key, &challenge))])
        .await
}

#[tokio::test]
async fn nothing_is_permitted_before_authentication() {
    let addr = serve_router(router(cra())).await;
    let mut c = connect(addr).await;
    let unauthorized = json!([
        4,
        "1",
        "http://api.wamp.ws/error#unauthorized",
        "unauthorized"
    ]);
    assert_eq!(
        c.call("1", "urn:api:add", &[json!(1), json!(2)]).await,
        unauthorized
    );
    assert_eq!(c.call("1", "urn:api:unknown", &[]).await, unauthorized);
    c.send(json!([5, ev("chat")])).await;
    c.send(json!([7, ev("chat"), "x"])).await;
    c.expect_silence().await;
    // Not even between authreq and a verified signature (clj-wamp's hole).
    let challenge = c.call("r", AUTHREQ, &[json!("ada")]).await;
    assert_eq!(challenge[0], 3);
    assert_eq!(
        c.call("1", "urn:api:add", &[json!(1), json!(2)]).await,
        unauthorized
    );
}

#[tokio::test]
async fn autobahn_flavour_plain_and_salted() {
    let addr = serve_router(router(cra())).await;
    let mut c = connect(addr).await;
    let challenge = c
        .call("r", AUTHREQ, &[json!("ada"), json!({"client": "test"})])
        .await;
    let parsed: Value = serde_json::from_str(challenge[2].as_str().unwrap()).unwrap();
    assert_eq!(parsed["authkey"], "ada");
    assert_eq!(parsed["sessionid"], c.session_id.as_str());
    assert_eq!(parsed["extra"], json!({"client": "test"}));
    assert_eq!(parsed["authid"].as_str().unwrap().len(), 16);
    assert!(parsed["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(parsed.get("authextra").is_none());
    let sig = sign("secret", challenge[2].as_str().unwrap());
    let perms = c.call("a", AUTH, &[json!(sig)]).await;
    assert_eq!(
        perms[2],
        json!({
            "rpc": {"urn:api:add": true, "urn:api:echo": true, "urn:api:me": true},
            "subscribe": {ev("chat"): true, ev("news*"): true},
            "publish": {ev("chat"): true},
        })
    );
    assert_eq!(
        c.call("1", "urn:api:add", &[json!(1), json!(2)]).await[2],
        3
    );
    assert_eq!(c.call("2", "urn:api:me", &[]).await[2], "ada");
    c.subscribe(&ev("chat")).await;
    c.send(json!([7, ev("chat"), "hi"])).await;
    assert_eq!(c.recv().await, json!([8, ev("chat"), "hi"]));
    let again = c.call("3", AUTHREQ, &[json!("ada")]).await;
    assert_eq!(
        again,
        json!([
            4,
            "3",
            "http://api.wamp.ws/error#already-authenticated",
            "already authenticated"
        ])
    );
    assert_eq!(
        c.call("4", AUTH, &[json!(sig)]).await[2],
        "http://api.wamp.ws/error#already-authenticated"
    );

    let mut s = connect(addr).await;
    let perms = login(&mut s, "carol", "secret").await;
    assert_eq!(perms[0], 3, "salted login: {perms}");
    assert_eq!(s.call("1", "urn:api:me", &[]).await[2], "carol");
}

#[tokio::test]
async fn the_error_table() {
    let addr = serve_router(router(cra())).await;
    let mut c = connect(addr).await;
    let err = |v: Value| {
        (
            v[2].as_str().unwrap().to_owned(),
            v[3].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(
        err(c.call("1", AUTH, &[json!("sig")]).await),
        (
            "http://api.wamp.ws/error#no-authentication-requested".into(),
            "no authentication previously requested".into()
        )
    );
    assert_eq!(
        err(c.call("2", AUTHREQ, &[json!("mallory")]).await),
        (
            "http://api.wamp.ws/error#no-such-authkey".into(),
            "authentication key does not exist".into()
        )
    );
    assert_eq!(
        err(c.call("3", AUTHREQ, &[]).await),
        (
            "http://api.wamp.ws/error#anonymous-auth-forbidden".into(),
            "authentication as anonymous is forbidden".into()
        )
    );
    assert_eq!(
        err(c.call("4", AUTHREQ, &[json!(7)]).await).0,
        "http://api.wamp.ws/error#invalid-argument"
    );
    let first = c.call("5", AUTHREQ, &[json!("ada")]).await[2].clone();
    assert_eq!(
        err(c.call("6", AUTHREQ, &[json!("ada")]).await),
        (
            "http://api.wamp.ws/error#authentication-already-requested".into(),
            "authentication request already issued - authentication pending".into()
        )
    );
    // A wrong signature discards the challenge ...
    assert_eq!(
        err(c
            .call("7", AUTH, &[json!(sign("wrong", first.as_str().unwrap()))])
            .await),
        (
            "http://api.wamp.ws/error#invalid-signature".into(),
            "signature for authentication request is invalid".into()
        )
    );
    // ... so even the right one for it no longer works ...
    let right = sign("secret", first.as_str().unwrap());
    assert_eq!(
        err(c.call("8", AUTH, &[json!(right)]).await).0,
        "http://api.wamp.ws/error#no-authentication-requested"
    );
    // ... and a new authreq issues a fresh challenge.
    let second = c.call("9", AUTHREQ, &[json!("ada")]).await[2].clone();
    assert_ne!(first, second);
    let ok = c
        .call(
            "10",
            AUTH,
            &[json!(sign("secret", second.as_str().unwrap()))],
        )
        .await;
    assert_eq!(ok[0], 3);
}

#[tokio::test]
async fn anonymous_sessions_get_the_anonymous_permissions() {
    let addr = serve_router(router(cra().allow_anonymous(true))).await;
    let mut c = connect(addr).await;
    assert_eq!(
        c.call("1", AUTHREQ, &[Value::Null, Value::Null]).await,
        json!([3, "1", null])
    );
    let perms = c.call("2", AUTH, &[Value::Null]).await;
    assert_eq!(
        perms[2],
        json!({"rpc": {"urn:api:echo": true}, "subscribe": {ev("chat"): true, ev("news*"): true}, "publish": {}})
    );
    assert_eq!(
        c.call("3", "urn:api:echo", &[json!(1)]).await[2],
        json!([1])
    );
    assert_eq!(
        c.call("4", "urn:api:add", &[json!(1), json!(1)]).await[2],
        "http://api.wamp.ws/error#unauthorized"
    );
    // May subscribe but not publish.
    let mut ada = connect(addr).await;
    login(&mut ada, "ada", "secret").await;
    c.subscribe(&ev("chat")).await;
    c.send(json!([7, ev("chat"), "from anonymous"])).await;
    c.expect_silence().await;
    ada.send(json!([7, ev("chat"), "from ada"])).await;
    assert_eq!(c.recv().await[2], "from ada");
}

#[tokio::test]
async fn permissions_are_consulted_for_every_action_unless_cached() {
    for cache in [false, true] {
        let open = Arc::new(AtomicBool::new(true));
        let asked = Arc::new(AtomicUsize::new(0));
        let (o, a) = (open.clone(), asked.clone());
        let cra = WampCra::new(
            |_s, _k: String, _e| async { Some(Secret::plain("secret")) },
            move |_s, _k: AuthKey| {
                a.fetch_add(1, Ordering::SeqCst);
                let allowed = o.load(Ordering::SeqCst);
                async move {
                    if allowed {
                        Permissions::all()
                    } else {
                        Permissions::none()
                    }
                }
            },
        )
        .cache_permissions(cache);
        let addr = serve_router(router(cra)).await;
        let mut c = connect(addr).await;
        login(&mut c, "anyone", "secret").await;
        assert_eq!(
            c.call("1", "urn:api:add", &[json!(1), json!(1)]).await[2],
            2
        );
        open.store(false, Ordering::SeqCst);
        let second = c.call("2", "urn:api:add", &[json!(1), json!(1)]).await;
        if cache {
            assert_eq!(second[2], 2, "cached permissions do not change");
            assert_eq!(asked.load(Ordering::SeqCst), 1);
        } else {
            assert_eq!(second[2], "http://api.wamp.ws/error#unauthorized");
            assert_eq!(asked.load(Ordering::SeqCst), 3);
        }
    }
}

#[tokio::test]
async fn unauthenticated_sessions_are_closed_after_the_timeout() {
    let addr = serve_router(router(cra().timeout(Duration::from_millis(300)))).await;
    let mut idle = connect(addr).await;
    let mut authed = connect(addr).await;
    login(&mut authed, "ada", "secret").await;
    let (code, reason) = idle.recv_close().await;
    assert_eq!((code, reason.as_str()), (1008, "authentication timeout"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        authed.call("1", "urn:api:add", &[json!(2), json!(2)]).await[2],
        4
    );
}

#[tokio::test]
async fn repeated_failures_close_the_session() {
    let addr = serve_router(router(cra().max_failures(3))).await;
    let mut c = connect(addr).await;
    for i in 0..3 {
        let id = format!("{i}");
        c.call(&format!("r{i}"), AUTHREQ, &[json!("ada")]).await;
        let started = std::time::Instant::now();
        let reply = c.call(&id, AUTH, &[json!("bad")]).await;
        assert_eq!(reply[2], "http://api.wamp.ws/error#invalid-signature");
        if i == 1 {
            assert!(
                started.elapsed() >= Duration::from_millis(400),
                "the second failure is slowed down"
            );
        }
    }
    // The last allowed failure is answered at once, and the session closes.
    assert_eq!(
        c.recv_close().await,
        (1008, "too many failed authentication attempts".to_owned())
    );
}

#[tokio::test]
async fn cljwamp_flavour() {
    let addr = serve_router(router(cra().flavor(CraFlavor::CljWamp))).await;
    let mut c = connect(addr).await;
    let challenge = c.call("r", AUTHREQ, &[json!("ada")]).await[2]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(challenge.len(), 44, "a base64 HMAC, not JSON: {challenge}");
    // The Autobahn order is refused ...
    let wrong = c
        .call("a", AUTH, &[json!(sign("secret", &challenge))])
        .await;
    assert_eq!(wrong[2], "http://api.wamp.ws/error#invalid-signature");
    // ... the clj-wamp template's swapped order is accepted.
    let challenge = c.call("r2", AUTHREQ, &[json!("ada")]).await[2]
        .as_str()
        .unwrap()
        .to_owned();
    let ok = c
        .call("b", AUTH, &[json!(cljwamp_signature(&challenge, "secret"))])
        .await;
    assert_eq!(ok[0], 3, "{ok}");
    assert_eq!(c.call("1", "urn:api:me", &[]).await[2], "ada");
}

#[derive(Clone)]
struct LoggedIn(String);

async fn cookie_login(mut req: Request, next: Next) -> Response {
    let user = req
        .headers()
        .get("cookie")
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.strip_prefix("session="))
        .map(|u| u.to_owned());
    if let Some(user) = user {
        req.extensions_mut().insert(LoggedIn(user));
    }
    next.run(req).await
}

#[tokio::test]
async fn an_identity_from_an_upstream_layer_authenticates_without_cra() {
    let seen_by_provider = Arc::new(Mutex::new(vec![]));
    let seen = seen_by_provider.clone();
    let cra = WampCra::new(
        |_s, _k: String, _e| async { None },
        move |_s, key: AuthKey| {
            seen.lock().unwrap().push(key.to_string());
            async { Permissions::all() }
        },
    )
    .identity_from(|parts| parts.extensions.get::<LoggedIn>().map(|u| u.0.clone()));
    let app = Router::new()
        .route_service("/ws", WampLayer::new(router(cra)).into_service())
        .layer(axum::middleware::from_fn(cookie_login));
    let addr = serve(app).await;
    let mut c = connect_with(addr, &[("cookie", "session=grace")]).await;
    assert_eq!(c.call("1", "urn:api:me", &[]).await[2], "grace");
    assert_eq!(
        c.call("2", AUTHREQ, &[json!("x")]).await[2],
        "http://api.wamp.ws/error#already-authenticated"
    );
    assert_eq!(*seen_by_provider.lock().unwrap(), vec!["grace".to_owned()]);
    // Without the cookie, CRA is required.
    let mut anon = connect(addr).await;
    assert_eq!(
        anon.call("1", "urn:api:me", &[]).await[2],
        "http://api.wamp.ws/error#unauthorized"
    );
}

#[tokio::test]
async fn auth_procedures_go_through_the_hooks() {
    let seen = Arc::new(Mutex::new(vec![]));
    let log = seen.clone();
    let router = router(cra()).before_call(move |call| {
        log.lock().unwrap().push(call.procedure().to_owned());
        async move { Ok(call) }
    });
    let addr = serve_router(router).await;
    let mut c = connect(addr).await;
    login(&mut c, "ada", "secret").await;
    assert_eq!(
        *seen.lock().unwrap(),
        vec![AUTHREQ.to_owned(), AUTH.to_owned()]
    );
}

/// A writer that keeps everything logged, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_never_appear_in_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    const SECRET: &str = "Tr0ub4dor-and-3";
    let cra = WampCra::new(
        |_s, _k: String, _e| async { Some(Secret::plain(SECRET)) },
        |_s, _k: AuthKey| async { Permissions::all() },
    )
    .flavor(CraFlavor::CljWamp);
    let addr = serve_router(router(cra)).await;
    let mut c = connect(addr).await;
    let challenge = c.call("r", AUTHREQ, &[json!("ada")]).await[2]
        .as_str()
        .unwrap()
        .to_owned();
    c.call("bad", AUTH, &[json!("wrong")]).await;
    let challenge2 = c.call("r2", AUTHREQ, &[json!("ada")]).await[2]
        .as_str()
        .unwrap()
        .to_owned();
    let sig = cljwamp_signature(&challenge2, SECRET);
    assert_eq!(c.call("a", AUTH, &[json!(sig)]).await[0], 3);
    c.ws.close(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("authenticated"), "the capture works: {text}");
    for needle in [SECRET, &sig, &challenge] {
        assert!(!text.contains(needle), "{needle} leaked into the logs");
    }
}
