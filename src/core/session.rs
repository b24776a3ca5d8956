//! The per-session protocol state machine, sans IO: a text frame in, one [`Action`] out.
//!
//! It decodes the frame, keeps the session's CURIE prefixes, resolves CURIEs in CALL,
//! SUBSCRIBE, UNSUBSCRIBE and PUBLISH, and decides what to do with bad input. The
//! transport carries the action out (runs the call, updates the tables, sends the reply).
//!
//! ```
//! use tower_wamp::core::session::{Action, SessionState};
//!
//! let mut s = SessionState::new(false);
//! assert!(matches!(s.handle_text(r#"[1, "ev", "http://x/event#"]"#), Action::None));
//! match s.handle_text(r#"[5, "ev:chat"]"#) {
//!     Action::Subscribe { topic } => assert_eq!(topic, "http://x/event#chat"),
//!     other => panic!("{other:?}"),
//! }
//! ```

use serde_json::Value;

use super::{
    Exclude, Message, RpcError, SessionId,
    codec::v1::{self, DecodeError},
    curie::Prefixes,
};

/// What the transport should do about one incoming frame.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Action {
    /// Nothing (a PREFIX was recorded).
    None,
    /// Run a call; the procedure URI is resolved.
    Call {
        /// The client's call id.
        call_id: String,
        /// The full procedure URI.
        procedure: String,
        /// Positional arguments.
        args: Vec<Value>,
    },
    /// Subscribe to a full topic URI.
    Subscribe {
        /// The topic.
        topic: String,
    },
    /// Unsubscribe from a full topic URI.
    Unsubscribe {
        /// The topic.
        topic: String,
    },
    /// Publish to a full topic URI.
    Publish {
        /// The topic.
        topic: String,
        /// The event.
        event: Value,
        /// The exclude element.
        exclude: Exclude,
        /// The eligible element.
        eligible: Option<Vec<SessionId>>,
    },
    /// Send this encoded frame back (a CALLERROR for a malformed CALL).
    Reply(String),
    /// Ignore the frame; the reason is for a `tracing` event.
    Ignore(String),
    /// Close the connection.
    Close {
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
}

/// One session's protocol state.
#[derive(Debug, Clone, Default)]
pub struct SessionState {
    prefixes: Prefixes,
    close_on_protocol_violation: bool,
}

impl SessionState {
    /// A fresh session. With `close_on_protocol_violation`, frames that are not WAMP v1
    /// close the connection (1002, 1003 for binary) instead of being ignored.
    #[must_use]
    pub fn new(close_on_protocol_violation: bool) -> Self {
        Self {
            prefixes: Prefixes::default(),
            close_on_protocol_violation,
        }
    }

    /// The session's CURIE prefixes.
    #[must_use]
    pub fn prefixes(&self) -> &Prefixes {
        &self.prefixes
    }

    fn violation(&self, code: u16, reason: String) -> Action {
        if self.close_on_protocol_violation {
            Action::Close { code, reason }
        } else {
            Action::Ignore(reason)
        }
    }

    /// Handles a binary frame (WAMP v1 uses text frames only).
    pub fn handle_binary(&mut self) -> Action {
        self.violation(1003, "binary frames are not WAMP v1".into())
    }

    /// Handles one text frame.
    pub fn handle_text(&mut self, text: &str) -> Action {
        match v1::decode(text) {
            Ok(Message::Prefix { prefix, uri }) => {
                if self.prefixes.insert(prefix, uri) {
                    Action::None
                } else {
                    Action::Ignore("PREFIX ignored: too many prefixes on this session".into())
                }
            }
            Ok(Message::Call {
                call_id,
                procedure,
                args,
            }) => Action::Call {
                procedure: self.prefixes.resolve_owned(procedure),
                call_id,
                args,
            },
            Ok(Message::Subscribe { topic }) => Action::Subscribe {
                topic: self.prefixes.resolve_owned(topic),
            },
            Ok(Message::Unsubscribe { topic }) => Action::Unsubscribe {
                topic: self.prefixes.resolve_owned(topic),
            },
            Ok(Message::Publish {
                topic,
                event,
                exclude,
                eligible,
            }) => Action::Publish {
                topic: self.prefixes.resolve_owned(topic),
                event,
                exclude,
                eligible,
            },
            Ok(other) => self.violation(
                1002,
                format!("message type {} is not sent by clients", other.type_id()),
            ),
            Err(DecodeError::BadShape {
                call_id: Some(call_id),
                reason,
                ..
            }) => {
                let error = RpcError::invalid_argument(format!("malformed CALL: {reason}"));
                Action::Reply(v1::encode_call_error(&call_id, &error))
            }
            Err(error) => self.violation(1002, error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curies_resolve_in_every_message_that_names_a_uri() {
        let mut s = SessionState::new(false);
        assert_eq!(s.handle_text(r#"[1,"p","urn:x:"]"#), Action::None);
        assert!(
            matches!(s.handle_text(r#"[2,"c","p:f",1]"#), Action::Call { procedure, .. } if procedure == "urn:x:f")
        );
        assert!(
            matches!(s.handle_text(r#"[6,"p:t"]"#), Action::Unsubscribe { topic } if topic == "urn:x:t")
        );
        assert!(
            matches!(s.handle_text(r#"[7,"p:t",1]"#), Action::Publish { topic, .. } if topic == "urn:x:t")
        );
    }

    #[test]
    fn bad_input_is_ignored_or_closes() {
        let mut lax = SessionState::new(false);
        let mut strict = SessionState::new(true);
        for garbage in ["nope", "[0]", "[8,\"t\",1]", "{}"] {
            assert!(
                matches!(lax.handle_text(garbage), Action::Ignore(_)),
                "{garbage}"
            );
            assert!(
                matches!(
                    strict.handle_text(garbage),
                    Action::Close { code: 1002, .. }
                ),
                "{garbage}"
            );
        }
        assert!(matches!(lax.handle_binary(), Action::Ignore(_)));
        assert!(matches!(
            strict.handle_binary(),
            Action::Close { code: 1003, .. }
        ));
        match lax.handle_text(r#"[2,"c"]"#) {
            Action::Reply(frame) => {
                assert!(frame.starts_with(r#"[4,"c","http://api.wamp.ws/error#invalid-argument""#))
            }
            other => panic!("{other:?}"),
        }
    }
}
