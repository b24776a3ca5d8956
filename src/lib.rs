//! tower-wamp
pub mod core;
pub use crate::core::RpcError;
