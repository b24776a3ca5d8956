#![doc = include_str!("../docs/crate.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod auth;
pub mod backplane;
mod cancel;
mod clip;
mod cluster;
pub mod core;
mod dealer;
pub mod extract;
mod gate;
mod handler;
mod hub;
mod layer;
mod meta;
mod metrics;
mod origin;
mod rawsocket;
mod router;
mod session;
mod socket;
mod v2;
mod wire;
mod ws;

pub use crate::core::{RpcError, SessionId};
pub use extract::{
    Args, Call, CallId, Caller, Extension, FromCall, FromRef, Kwargs, Procedure, Progress, State,
    UpgradeRequest,
};
pub use handler::{IntoCallResult, RpcHandler};
pub use hub::Wamp;
pub use layer::{NotUpgrade, RateLimit, WampFuture, WampLayer, WampService};
pub use metrics::MetricsSnapshot;
pub use origin::{OriginPolicy, OriginRejection};
pub use router::{
    BrokerFunction, CallInfo, CallReply, Publication, PublishRule, Route, SubscribePredicateFn,
    SubscribeRule, Topic, WampRouter,
};
pub use session::{CloseReason, Protocol, SendError, Session, SlowConsumerPolicy};

#[doc(hidden)]
pub use handler::{Fallible, Plain};

/// The WAMP v2 features WELCOME announces: (role, feature, only with the meta API, the
/// test that shows it as `file::test`). For `tests/features.rs`.
#[doc(hidden)]
#[must_use]
pub fn __announced_features() -> Vec<(&'static str, &'static str, bool, &'static str)> {
    v2::FEATURES
        .iter()
        .map(|f| (f.role, f.name, f.meta, f.test))
        .collect()
}

#[cfg(feature = "macros")]
#[doc = include_str!("../docs/rpc.md")]
pub use tower_wamp_macros::rpc;
#[cfg(feature = "macros")]
#[doc = include_str!("../docs/topic.md")]
pub use tower_wamp_macros::topic;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
