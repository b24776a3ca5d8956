//! The sans-IO core: the WAMP vocabulary, the v1 wire codec, CURIE resolution, topic
//! patterns, session ids and the subscription tables.
//!
//! Nothing in this module touches tokio, hyper or axum: every function here is plain
//! data in, plain data out, and is unit-tested without a runtime. The transport
//! ([`crate::WampLayer`] and the socket task) drives it.
//!
//! The vocabulary ([`Message`], [`RpcError`], [`SessionId`]) is version-neutral in shape;
//! [`codec::v1`] is the WAMP v1 JSON codec on top of it.

pub mod auth;
pub(crate) mod broker;
pub mod codec;
pub mod curie;
pub(crate) mod hash;
mod id;
pub mod json;
pub mod matching;
mod message;
pub(crate) mod pattern;
pub mod retained;
pub mod roles;
pub mod session;
pub mod testament;

pub use id::{SessionId, random_id, random_token};
pub use message::{AuthFilter, AuthLists, Exclude, Message, RpcError, error_uri};
