//! The demo's WAMP application: clj-wamp's README example, ported. Shared by the demo
//! binary and the interop tests, so the tests exercise exactly what the demo serves.

use serde_json::{Number, Value, json};
use tower_wamp::{
    Args, OriginPolicy, Progress, Publication, RpcError, Session, Topic, WampLayer, WampRouter,
    auth::{Secret, WampCra},
    core::auth::{AuthKey, Permissions},
    rpc, topic,
};

/// `http://clj-wamp-example/api#` + name.
pub fn rpc_url(name: &str) -> String {
    format!("http://clj-wamp-example/api#{name}")
}

/// `http://clj-wamp-example/event#` + name.
pub fn evt_url(name: &str) -> String {
    format!("http://clj-wamp-example/event#{name}")
}

/// The sum of the arguments, which must all be numbers (integers stay integers).
#[rpc("http://clj-wamp-example/api#add")]
pub async fn add(Args(numbers): Args<Vec<Number>>) -> Result<Value, RpcError> {
    if let Some(ints) = numbers
        .iter()
        .map(Number::as_i64)
        .collect::<Option<Vec<i64>>>()
    {
        return ints
            .into_iter()
            .try_fold(0i64, i64::checked_add)
            .map(Value::from)
            .ok_or_else(|| RpcError::invalid_argument("integer overflow"));
    }
    let sum: f64 = numbers.iter().filter_map(Number::as_f64).sum();
    Ok(json!(sum))
}

/// Returns its argument.
#[rpc("http://clj-wamp-example/api#echo")]
pub async fn echo(Args((value,)): Args<(Value,)>) -> Value {
    value
}

/// Counts down from `n` (at most 100), one progressive result every 20 ms to a WAMP v2
/// caller that asked for them, then answers `"liftoff"`. A caller may cancel it.
pub async fn countdown(
    Args((n,)): Args<(u32,)>,
    progress: Progress,
) -> Result<&'static str, RpcError> {
    if n > 100 {
        return Err(RpcError::invalid_argument("count down from 100 at most"));
    }
    for i in (1..=n).rev() {
        progress.send(&i);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok("liftoff")
}

/// Chat messages must be non-empty text; the broker stamps them with the sender.
#[topic("http://clj-wamp-example/event#chat", subscribe = chat_subscribe)]
pub async fn chat(session: Session, mut publication: Publication) -> Option<Publication> {
    let (text, name) = match &publication.event {
        Value::String(s) => (s.clone(), None),
        Value::Object(o) => (
            o.get("message")?.as_str()?.to_owned(),
            o.get("name")
                .and_then(Value::as_str)
                .map(|n| n.chars().take(40).collect::<String>()),
        ),
        _ => return None,
    };
    if text.trim().is_empty() {
        return None;
    }
    publication.event = match name.filter(|n| !n.trim().is_empty()) {
        Some(name) => json!({ "from": session.id(), "name": name, "message": text }),
        None => json!({ "from": session.id(), "message": text }),
    };
    Some(publication)
}

/// Everyone may join the chat; the predicate is where an application would check.
async fn chat_subscribe(session: Session, topic: String) -> bool {
    tracing::info!(session = %session.id(), %topic, "joined the chat");
    true
}

/// The demo's router: WAMP v1 clients use clj-wamp's URIs, WAMP v2 clients (realm
/// `realm1`) the same procedures and chat under `com.example.*`.
pub fn router() -> WampRouter {
    WampRouter::new()
        .realm("realm1")
        // Attribute-declared handlers carry their own URIs ...
        .route(add)
        .route(echo)
        .route(chat)
        // ... builder calls suit URIs computed at run time.
        .topic(&evt_url("prefix*"), Topic::new())
        .topic(&evt_url("sub-only"), Topic::subscribe_only())
        .topic(&evt_url("pub-only"), Topic::publish_only())
        // The same procedures and chat room for WAMP v2 clients ('#' is not allowed in v2).
        .alias("com.example.add", &rpc_url("add"))
        .alias("com.example.echo", &rpc_url("echo"))
        .alias("com.example.chat", &evt_url("chat"))
        // Progressive results (v2 callers that ask get each number as it comes).
        .rpc("com.example.countdown", countdown)
        // v2 clients may use any other topic under com.example.
        .topic("com.example.*", Topic::new())
        // The WAMP v2 meta API (sessions, subscriptions, registrations).
        .meta_api(true)
        // The last 20 events of each topic under com.example., for
        // wamp.subscription.get_events.
        .event_history("com.example.*", 20)
        // The realm names publishers to v2 subscribers and callers to v2 callees.
        .disclose_publishers(true)
        .disclose_callers(true)
        .on_open(|s| tracing::info!(session = %s.id(), "opened"))
        .on_close(|s, reason| tracing::info!(session = %s.id(), ?reason, "closed"))
}

/// The demo's layer around a router: origins `http(s)://localhost` and `127.0.0.1` on any
/// port.
pub fn layer_for(router: WampRouter) -> WampLayer {
    WampLayer::new(router).allowed_origins(
        OriginPolicy::regex(r"https?://(localhost|127\.0\.0\.1)(:\d+)?")
            .expect("a valid origin regex"),
    )
}

/// The whole demo site: the page at `/` (a chat room and an RPC panel on a small browser
/// WAMP v1 client; `/?wamp=2` runs it on AutobahnJS over WAMP v2) and the WAMP endpoint at
/// `/ws`. Also returns the server handle. AutobahnJS comes from
/// [`default_autobahn_js`] (`npm install --prefix examples/demo`).
#[allow(dead_code)] // The tests' entry; the binary uses `site_parts`.
pub fn site(auth: bool) -> (axum::Router, tower_wamp::Wamp) {
    site_with(auth, default_autobahn_js())
}

/// Where `npm install --prefix examples/demo` puts AutobahnJS's browser build.
pub fn default_autobahn_js() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/demo/node_modules/autobahn-browser/autobahn.min.js")
}

/// [`site`], serving AutobahnJS's browser build at `/autobahn.min.js` from `autobahn_js`
/// (read at request time: a 404 when it is missing, and only the v2 page needs it).
#[allow(dead_code)] // The tests' entry; the binary uses `site_parts`.
pub fn site_with(auth: bool, autobahn_js: std::path::PathBuf) -> (axum::Router, tower_wamp::Wamp) {
    let (site, wamp, _) = site_parts(auth, autobahn_js);
    (site, wamp)
}

/// [`site_with`], and the WAMP layer it serves at `/ws` (to serve the same router over
/// RawSocket too).
#[allow(dead_code)] // The tests' entry; the binary uses `site_parts_with`.
pub fn site_parts(
    auth: bool,
    autobahn_js: std::path::PathBuf,
) -> (axum::Router, tower_wamp::Wamp, WampLayer) {
    site_parts_with(auth, autobahn_js, |router| router)
}

/// [`site_parts`] with the router changed by `configure` first (the binary's `--redis`).
pub fn site_parts_with(
    auth: bool,
    autobahn_js: std::path::PathBuf,
    configure: impl FnOnce(WampRouter) -> WampRouter,
) -> (axum::Router, tower_wamp::Wamp, WampLayer) {
    use axum::{http::StatusCode, http::header, routing::get};
    const INSTALL: &str = "run `npm install --prefix examples/demo` for the v2 page";
    let router = configure(if auth { auth_router() } else { router() });
    let wamp = router.handle();
    let layer = layer_for(router);
    let file = |body: &'static str, mime: &'static str| {
        get(move || async move { ([(header::CONTENT_TYPE, mime)], body) })
    };
    let autobahn = get(move || async move {
        match tokio::fs::read(&autobahn_js).await {
            Ok(js) => Ok(([(header::CONTENT_TYPE, "text/javascript")], js)),
            Err(e) => {
                // The path stays in the server's log, not in the answer.
                tracing::warn!(path = %autobahn_js.display(), error = %e, "AutobahnJS missing");
                Err((
                    StatusCode::NOT_FOUND,
                    format!("AutobahnJS is not installed: {INSTALL}\n"),
                ))
            }
        }
    });
    let site = axum::Router::new()
        .route(
            "/",
            file(
                include_str!("static/index.html"),
                "text/html; charset=utf-8",
            ),
        )
        .route(
            "/app.js",
            file(include_str!("static/app.js"), "text/javascript"),
        )
        .route(
            "/v1.js",
            file(include_str!("static/v1.js"), "text/javascript"),
        )
        .route(
            "/v2.js",
            file(include_str!("static/v2.js"), "text/javascript"),
        )
        .route(
            "/wamp.js",
            file(include_str!("static/wamp.js"), "text/javascript"),
        )
        .route(
            "/style.css",
            file(include_str!("static/style.css"), "text/css"),
        )
        .route("/autobahn.min.js", autobahn)
        .route(
            "/config.json",
            get(move || async move { axum::Json(json!({ "auth": auth })) }),
        )
        .route_service("/ws", layer.clone().into_service());
    (site, wamp, layer)
}

/// The demo's users: `ada` (secret `secret`), `carol` (salted password `secret`, stored
/// only as the derived key), and anonymous guests.
pub fn demo_auth() -> WampCra {
    WampCra::new(
        |_session, key: String, _extra| async move {
            match key.as_str() {
                "ada" => Some(Secret::plain("secret")),
                // derive_key("secret", "salt123", 1000, 32)
                "carol" => Some(Secret::derived(
                    "MDS8Yxpu4J/vkHJ8dNEgqECYsI0uRDh2oZ5eN0vYPvo=",
                    "salt123",
                    1000,
                    32,
                )),
                _ => None,
            }
        },
        |_session, key: AuthKey| async move {
            match key {
                AuthKey::Key(_) => Permissions::all(),
                // Guests may echo and listen, not add or publish.
                _ => Permissions::none()
                    .allow_call(&rpc_url("echo"))
                    .allow_subscribe(&evt_url("*"))
                    .allow_subscribe("com.example.*"),
            }
        },
    )
    .allow_anonymous(true)
    // WAMP v2 cryptosign: erin's Ed25519 key. A published test key (its seed is in the
    // README): never use it for anything real.
    .cryptosign(|_session, _authid, key: [u8; 32]| async move {
        (key == ERIN_PUBLIC_KEY).then(|| "erin".to_owned())
    })
}

/// Erin's Ed25519 public key: `59004fedebf606ec1e61de7cf058b72325798eda820942b3dfd90e315b364c5d`,
/// whose private seed `74a554360f01f441eae521d3b18e07639c4e0e440dd15689468352fe886d7837` is
/// published: a test key.
pub const ERIN_PUBLIC_KEY: [u8; 32] = [
    0x59, 0x00, 0x4f, 0xed, 0xeb, 0xf6, 0x06, 0xec, 0x1e, 0x61, 0xde, 0x7c, 0xf0, 0x58, 0xb7, 0x23,
    0x25, 0x79, 0x8e, 0xda, 0x82, 0x09, 0x42, 0xb3, 0xdf, 0xd9, 0x0e, 0x31, 0x5b, 0x36, 0x4c, 0x5d,
];

/// The demo's router with WAMP-CRA on (the demo's `--auth` flag).
pub fn auth_router() -> WampRouter {
    router().auth(demo_auth())
}
