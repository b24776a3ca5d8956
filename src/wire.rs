//! What goes on the socket: the protocol a connection speaks, its frames, and the one
//! mapping of payloads between WAMP v1 and v2.
//!
//! # Payloads between v1 and v2
//!
//! WAMP v1 carries one JSON value (an event, a call result) or a list of call arguments;
//! v2 carries positional `args` and keyword `kwargs`. The router maps them so:
//!
//! | v1 | v2 |
//! |---|---|
//! | event `e` | EVENT `args = [e]` |
//! | CALL arguments `a, b, …` | CALL `args = [a, b, …]` (kwargs: the [`Kwargs`](crate::Kwargs) extractor) |
//! | CALLRESULT `r` | RESULT `args = [r]` |
//! | CALLERROR `uri, desc, details` | ERROR `uri` (v1's `http://api.wamp.ws/error#…` as `wamp.error.…`), `args = [desc]` (+ `details`) |
//!
//! and from a v2 PUBLISH to a v1 event: no args and no kwargs → `null`; one arg → that
//! value; several → the list; only kwargs → the kwargs object; both →
//! `{"args": [...], "kwargs": {...}}`.

use axum::{
    body::Bytes,
    extract::ws::{Message as WsMessage, Utf8Bytes},
};
use serde_json::Value;

use crate::core::codec::v2::{self, Dict, Serializer};

/// The protocol of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    V1,
    V2(Serializer),
}

/// One encoded frame, shared cheaply between recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    Text(Utf8Bytes),
    Binary(Bytes),
}

impl Frame {
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Text(t) => t.len(),
            Self::Binary(b) => b.len(),
        }
    }

    pub(crate) fn into_message(self) -> WsMessage {
        match self {
            Self::Text(t) => WsMessage::Text(t),
            Self::Binary(b) => WsMessage::Binary(b),
        }
    }

    /// A v2 message in the connection's serializer.
    pub(crate) fn v2(serializer: Serializer, message: &v2::Message) -> Self {
        Self::v2_bytes(serializer, v2::encode(serializer, message))
    }

    /// A v2 message already encoded in `serializer`.
    pub(crate) fn v2_bytes(serializer: Serializer, bytes: Vec<u8>) -> Self {
        if serializer.is_binary() {
            Self::Binary(Bytes::from(bytes))
        } else {
            // The JSON encoder writes UTF-8.
            Self::Text(
                String::from_utf8(bytes)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
                    .into(),
            )
        }
    }
}

impl Frame {
    /// The v2 message that ends a session the router closes: GOODBYE once it is
    /// established, ABORT before, with `reason` and `message` in its details.
    pub(crate) fn v2_leave(
        serializer: Serializer,
        established: bool,
        reason: &str,
        message: &str,
    ) -> Self {
        let mut details = Dict::new();
        details.insert("message".into(), message.into());
        let reason = reason.to_owned();
        let leave = if established {
            v2::Message::Goodbye { details, reason }
        } else {
            v2::Message::Abort { details, reason }
        };
        Self::v2(serializer, &leave)
    }
}

impl From<String> for Frame {
    fn from(text: String) -> Self {
        Self::Text(text.into())
    }
}

impl From<&str> for Frame {
    fn from(text: &str) -> Self {
        Self::Text(text.into())
    }
}

impl std::fmt::Display for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(t) => f.write_str(t.as_str()),
            Self::Binary(b) => write!(f, "{b:?}"),
        }
    }
}

/// A publication's payload in v2's form.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Payload {
    pub(crate) args: Vec<Value>,
    pub(crate) kwargs: Dict,
}

impl Payload {
    /// A v1 event as v2 arguments.
    pub(crate) fn from_event(event: Value) -> Self {
        Self {
            args: vec![event],
            kwargs: Dict::new(),
        }
    }

    /// The v1 event for v2 arguments (see the module docs).
    pub(crate) fn to_event(&self) -> Value {
        match (self.args.as_slice(), self.kwargs.is_empty()) {
            ([], true) => Value::Null,
            ([one], true) => one.clone(),
            (many, true) => Value::Array(many.to_vec()),
            ([], false) => Value::Object(self.kwargs.clone()),
            (args, false) => {
                let mut both = Dict::new();
                both.insert("args".into(), Value::Array(args.to_vec()));
                both.insert("kwargs".into(), Value::Object(self.kwargs.clone()));
                Value::Object(both)
            }
        }
    }
}

/// A v1 error URI as v2 spells it: `http://api.wamp.ws/error#not-found` style names of the
/// v1 API become `wamp.error.*`; anything else passes unchanged.
pub(crate) fn v2_error_uri(uri: &str) -> String {
    match uri.strip_prefix("http://api.wamp.ws/error#") {
        Some("notfound") => "wamp.error.no_such_procedure".into(),
        Some("unauthorized") => "wamp.error.not_authorized".into(),
        Some("invalid-argument") => "wamp.error.invalid_argument".into(),
        Some("timeout") => "wamp.error.timeout".into(),
        Some("internal") => "wamp.error.runtime_error".into(),
        Some(other) => format!("wamp.error.{}", other.replace('-', "_")),
        None => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payloads_map_between_versions() {
        let p = |args: Value, kwargs: Value| Payload {
            args: args.as_array().unwrap().clone(),
            kwargs: kwargs.as_object().unwrap().clone(),
        };
        assert_eq!(p(json!([]), json!({})).to_event(), Value::Null);
        assert_eq!(p(json!([[1, 2]]), json!({})).to_event(), json!([1, 2]));
        assert_eq!(p(json!([1, 2]), json!({})).to_event(), json!([1, 2]));
        assert_eq!(p(json!([]), json!({"a": 1})).to_event(), json!({"a": 1}));
        assert_eq!(
            p(json!([1]), json!({"a": 1})).to_event(),
            json!({"args": [1], "kwargs": {"a": 1}})
        );
        // v1 → v2 → v1 keeps the event.
        for e in [json!(null), json!([1, 2]), json!({"a": 1}), json!("x")] {
            assert_eq!(Payload::from_event(e.clone()).to_event(), e);
        }
    }

    #[test]
    fn v1_error_uris_read_as_v2() {
        assert_eq!(
            v2_error_uri("http://api.wamp.ws/error#notfound"),
            "wamp.error.no_such_procedure"
        );
        assert_eq!(
            v2_error_uri("http://api.wamp.ws/error#too-many-calls"),
            "wamp.error.too_many_calls"
        );
        assert_eq!(v2_error_uri("com.example.oops"), "com.example.oops");
    }
}
