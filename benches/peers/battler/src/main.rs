//! battler-wamp 0.6.1 as a benchmark peer: `battler-peer PORT`, realm1, json and msgpack,
//! anonymous, with its per-connection DoS limits raised (its defaults allow 10 messages/s).

use std::time::Duration;

use battler_wamp::router::{
    EmptyConnectionPolicies, EmptyPubSubPolicies, EmptyRpcPolicies, RealmConfig, RouterConfig,
    RouterLimitsConfig, new_web_socket_router,
};
use battler_wamp_uri::Uri;

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("usage: battler-peer PORT");
    let config = RouterConfig {
        port,
        realms: vec![RealmConfig {
            name: "realm1".to_owned(),
            uri: Uri::try_from("realm1").unwrap(),
            authentication: Default::default(),
        }],
        limits: RouterLimitsConfig {
            max_connections: Some(100_000),
            max_message_size_bytes: 16 << 20,
            max_frame_size_bytes: 16 << 20,
            rate_limit_burst: u32::MAX / 2,
            rate_limit_refill_per_sec: u32::MAX / 2,
            idle_timeout: Some(Duration::from_secs(3600)),
            ..RouterLimitsConfig::default()
        },
        ..RouterConfig::default()
    };
    let router = new_web_socket_router(
        config,
        Box::new(EmptyConnectionPolicies),
        Box::new(EmptyPubSubPolicies),
        Box::new(EmptyRpcPolicies),
    )
    .expect("router");
    let (_handle, join) = router.start().await.expect("start");
    println!("ready");
    let _ = join.await;
}
