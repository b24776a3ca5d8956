//! An identity established before the upgrade by ordinary tower middleware (here a
//! bearer token) authenticates WAMP sessions without WAMP-CRA, and handlers and the
//! permissions provider see it.
//!
//! ```text
//! cargo run --example upstream_identity
//! # then connect a WAMP v1 client to ws://127.0.0.1:8081/ws with
//! #   Authorization: Bearer token-ada     (may call and publish)
//! #   Authorization: Bearer token-guest   (may only subscribe)
//! # without a known token the upgrade itself is refused (401).
//! ```

use axum::{
    Router,
    extract::Request,
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    serve::ListenerExt,
};
use tower_wamp::{
    OriginPolicy, Session, Topic, WampLayer, WampRouter,
    auth::WampCra,
    core::auth::{AuthKey, Permissions},
    rpc,
};

/// Who the bearer token says the caller is.
#[derive(Clone, Debug)]
struct User(String);

/// Resolves `Authorization: Bearer <token>` into a [`User`], or refuses the request.
async fn bearer_auth(mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let user = match token {
        Some("token-ada") => "ada",
        Some("token-guest") => "guest",
        _ => return (StatusCode::UNAUTHORIZED, "a known bearer token is required").into_response(),
    };
    req.extensions_mut().insert(User(user.to_owned()));
    next.run(req).await
}

/// Greets the caller by the name the middleware established.
#[rpc("http://example.com/api#whoami")]
async fn whoami(session: Session) -> String {
    match session.auth_key() {
        Some(AuthKey::Key(name)) => format!("hello, {name}"),
        _ => "hello, stranger".to_owned(),
    }
}

fn router() -> WampRouter {
    let cra = WampCra::new(
        // No WAMP-CRA secrets: every session arrives authenticated by the middleware.
        |_session, _key: String, _extra| async { None },
        |_session, key: AuthKey| async move {
            match key.as_key() {
                Some("ada") => Permissions::all(),
                _ => Permissions::none().allow_subscribe("http://example.com/event#*"),
            }
        },
    )
    .identity_from(|parts| parts.extensions.get::<User>().map(|u| u.0.clone()));
    WampRouter::new()
        .route(whoami)
        .topic("http://example.com/event#news", Topic::new())
        .auth(cra)
}

#[tokio::main]
async fn main() {
    let wamp = WampLayer::new(router()).allowed_origins(OriginPolicy::any());
    let app = Router::new()
        .route_service("/ws", wamp.into_service())
        .layer(middleware::from_fn(bearer_auth));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8081")
        .await
        .expect("port 8081 is free")
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    println!("WAMP endpoint on ws://127.0.0.1:8081/ws (bearer tokens: token-ada, token-guest)");
    axum::serve(listener, app).await.unwrap();
}
