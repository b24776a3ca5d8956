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

pub mod v2;

use serde_json::Value;

use super::{
    Exclude, Message, RpcError, SessionId,
    codec::v1::{self, DecodeError},
    curie::{MAX_PREFIX_BYTES, MAX_PREFIXES, Prefixes},
};

/// The longest URI (after CURIE expansion) a session may use by default, in bytes.
pub const MAX_URI_LENGTH: usize = 4096;

/// The per-session budgets the state machine enforces.
///
/// ```
/// use tower_wamp::core::session::{Action, SessionLimits, SessionState};
///
/// let mut limits = SessionLimits::default();
/// limits.max_uri_length = 16;
/// let mut s = SessionState::with_limits(false, limits);
/// assert!(matches!(s.handle_text(r#"[5, "urn:a-topic-that-is-too-long"]"#), Action::Close { code: 1008, .. }));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionLimits {
    /// The longest procedure or topic URI, after CURIE expansion, and the longest prefix
    /// URI (default [`MAX_URI_LENGTH`]). A CALL beyond it gets a CALLERROR; PREFIX,
    /// SUBSCRIBE, UNSUBSCRIBE and PUBLISH close the session (1008).
    pub max_uri_length: usize,
    /// How many CURIE prefixes (default [`MAX_PREFIXES`]); one more closes (1008).
    pub max_prefixes: usize,
    /// How many bytes of prefix names and URIs (default [`MAX_PREFIX_BYTES`]); more closes
    /// (1008).
    pub max_prefix_bytes: usize,
    /// The most memory one message may take once decoded, as estimated by
    /// [`v1::decoded_size`] before decoding (default [`MAX_DECODED_SIZE`]); a message
    /// beyond it is not decoded and closes the session (1009).
    pub max_decoded_size: usize,
}

/// The default of [`SessionLimits::max_decoded_size`]: 16 MiB.
pub const MAX_DECODED_SIZE: usize = 16 << 20;

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_uri_length: MAX_URI_LENGTH,
            max_prefixes: MAX_PREFIXES,
            max_prefix_bytes: MAX_PREFIX_BYTES,
            max_decoded_size: MAX_DECODED_SIZE,
        }
    }
}

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
    limits: SessionLimits,
}

impl SessionState {
    /// A fresh session with the default [`SessionLimits`]. With
    /// `close_on_protocol_violation`, frames that are not WAMP v1 close the connection
    /// (1002, 1003 for binary) instead of being ignored.
    #[must_use]
    pub fn new(close_on_protocol_violation: bool) -> Self {
        Self::with_limits(close_on_protocol_violation, SessionLimits::default())
    }

    /// A fresh session with these limits.
    #[must_use]
    pub fn with_limits(close_on_protocol_violation: bool, limits: SessionLimits) -> Self {
        Self {
            prefixes: Prefixes::with_budget(limits.max_prefixes, limits.max_prefix_bytes),
            close_on_protocol_violation,
            limits,
        }
    }

    fn uri_too_long(&self) -> Action {
        Action::Close {
            code: 1008,
            reason: format!("URI too long (limit {} bytes)", self.limits.max_uri_length),
        }
    }

    /// A resolved topic, or the close for one that is too long.
    fn topic(&self, topic: String) -> Result<String, Action> {
        if topic.len() > self.limits.max_uri_length {
            return Err(self.uri_too_long());
        }
        let topic = self.prefixes.resolve_owned(topic);
        if topic.len() > self.limits.max_uri_length {
            return Err(self.uri_too_long());
        }
        Ok(topic)
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
        self.handle_text_sized(text).0
    }

    /// Handles one text frame; also returns the estimate of its decoded size (what a call
    /// holds while it runs).
    pub fn handle_text_sized(&mut self, text: &str) -> (Action, usize) {
        // A frame too short to go past the limit whatever it holds is sized as it is parsed.
        if v1::surely_within(text.len(), self.limits.max_decoded_size) {
            let (decoded, size) = v1::decode_measured(text);
            return (self.act(decoded), size);
        }
        let size = v1::decoded_size(text);
        if size > self.limits.max_decoded_size {
            let close = Action::Close {
                code: 1009,
                reason: format!(
                    "message too big once decoded (limit {} bytes)",
                    self.limits.max_decoded_size
                ),
            };
            return (close, size);
        }
        (self.decode_and_act(text), size)
    }

    fn decode_and_act(&mut self, text: &str) -> Action {
        self.act(v1::decode(text))
    }

    fn act(&mut self, decoded: Result<Message, v1::DecodeError>) -> Action {
        match decoded {
            Ok(Message::Prefix { prefix, uri }) => {
                if prefix.len() > self.limits.max_uri_length
                    || uri.len() > self.limits.max_uri_length
                {
                    self.uri_too_long()
                } else if self.prefixes.insert(prefix, uri) {
                    Action::None
                } else {
                    Action::Close {
                        code: 1008,
                        reason: format!(
                            "too many prefixes (limit {} prefixes, {} bytes)",
                            self.limits.max_prefixes, self.limits.max_prefix_bytes
                        ),
                    }
                }
            }
            Ok(Message::Call {
                call_id,
                procedure,
                args,
            }) => {
                let max = self.limits.max_uri_length;
                let procedure = if procedure.len() > max {
                    procedure
                } else {
                    self.prefixes.resolve_owned(procedure)
                };
                if procedure.len() > max {
                    let error = RpcError::invalid_argument(format!(
                        "the procedure URI is longer than {max} bytes"
                    ));
                    return Action::Reply(v1::encode_call_error(&call_id, &error));
                }
                Action::Call {
                    procedure,
                    call_id,
                    args,
                }
            }
            Ok(Message::Subscribe { topic }) => match self.topic(topic) {
                Ok(topic) => Action::Subscribe { topic },
                Err(close) => close,
            },
            Ok(Message::Unsubscribe { topic }) => match self.topic(topic) {
                Ok(topic) => Action::Unsubscribe { topic },
                Err(close) => close,
            },
            Ok(Message::Publish {
                topic,
                event,
                exclude,
                eligible,
            }) => match self.topic(topic) {
                Ok(topic) => Action::Publish {
                    topic,
                    event,
                    exclude,
                    eligible,
                },
                Err(close) => close,
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
    fn a_frame_is_sized_the_same_counted_as_it_is_parsed_or_scanned_first() {
        for text in [
            r#"[2,"c","urn:f",{"a":[1,{}],"b":"x\",y"},[],"z"]"#,
            r#"[7, "urn:t", [[], {}, {"k": "v,[{"}]]"#,
            // Not JSON: sized by the scan.
            r#"[2,"c","urn:f",1,]"#,
        ] {
            let mut s = SessionState::new(false);
            assert_eq!(
                s.handle_text_sized(text).1,
                v1::decoded_size(text),
                "{text}"
            );
        }
    }

    #[test]
    fn only_a_frame_that_cannot_pass_the_limit_skips_the_scan() {
        // A frame of `{` alone is the most a byte can decode to.
        let worst = "{".repeat(10);
        let limit = v1::decoded_size(&worst);
        assert!(v1::surely_within(10, limit));
        assert!(!v1::surely_within(11, limit));
    }

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
    fn uris_and_prefixes_have_budgets() {
        let mut s = SessionState::new(false);
        let long = "x".repeat(MAX_URI_LENGTH + 1);
        let close = |a: Action| matches!(a, Action::Close { code: 1008, .. });
        assert!(close(s.handle_text(&format!(r#"[1,"p","{long}"]"#))));
        assert!(close(s.handle_text(&format!(r#"[5,"{long}"]"#))));
        assert!(close(s.handle_text(&format!(r#"[6,"{long}"]"#))));
        assert!(close(s.handle_text(&format!(r#"[7,"{long}",1]"#))));
        match s.handle_text(&format!(r#"[2,"c","{long}"]"#)) {
            Action::Reply(frame) => assert!(frame.contains("invalid-argument"), "{frame}"),
            other => panic!("{other:?}"),
        }
        // A prefix within the limit whose expansion is not.
        let near = "u".repeat(MAX_URI_LENGTH - 10);
        assert_eq!(s.handle_text(&format!(r#"[1,"p","{near}"]"#)), Action::None);
        assert!(matches!(
            s.handle_text(r#"[2,"c","p:0123456789x"]"#),
            Action::Reply(_)
        ));
        assert!(close(s.handle_text(r#"[5,"p:0123456789x"]"#)));
        assert!(matches!(
            s.handle_text(r#"[5,"p:0123456789"]"#),
            Action::Subscribe { .. }
        ));
        // The byte budget of all prefixes together.
        let mut s = SessionState::new(false);
        let uri = "u".repeat(2000);
        let closed = (0..40)
            .map(|i| s.handle_text(&format!(r#"[1,"p{i}","{uri}"]"#)))
            .position(close);
        assert_eq!(closed, Some(32), "64 KiB hold 32 prefixes of 2 KiB");
    }

    #[test]
    fn messages_that_decode_to_too_much_memory_are_not_decoded() {
        let mut s = SessionState::new(false);
        // 150k empty objects: 1 MiB on the wire, about 100 MiB as `Value`s.
        let objects = vec!["{\"\":0}"; 150_000].join(",");
        let (action, size) = s.handle_text_sized(&format!(r#"[2,"c","urn:f",{objects}]"#));
        assert!(size > MAX_DECODED_SIZE, "{size}");
        assert!(
            matches!(action, Action::Close { code: 1009, .. }),
            "{action:?}"
        );
        let (action, size) = s.handle_text_sized(r#"[2,"c","urn:f",1,"two",{"a":[3]}]"#);
        assert!(matches!(action, Action::Call { .. }));
        assert!(size < 4096, "{size}");
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
