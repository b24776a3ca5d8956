//! The WAMP v2 codec: one message per WebSocket frame, a list whose first element is the
//! message code, serialized as JSON (`wamp.2.json`, text frames), MessagePack
//! (`wamp.2.msgpack`) or CBOR (`wamp.2.cbor`, both binary frames).
//!
//! Every serializer decodes into the same [`Message`], whose payloads are
//! `serde_json::Value`s. Binary values follow the spec's JSON convention everywhere: a
//! string that starts with `"\u0000"` followed by the base64 of the bytes. MessagePack
//! and CBOR byte strings decode to that form and encode back to byte strings, so binary
//! survives from any serializer to any other.
//!
//! ```
//! use tower_wamp::core::codec::v2::{Message, Serializer, decode, encode};
//! use serde_json::json;
//!
//! let hello = decode(Serializer::Json, br#"[1, "realm1", {"roles": {"caller": {}}}]"#).unwrap();
//! assert!(matches!(&hello, Message::Hello { realm, .. } if realm == "realm1"));
//! let welcome = Message::Welcome { session: 42, details: Default::default() };
//! for s in [Serializer::Json, Serializer::MsgPack, Serializer::Cbor] {
//!     assert_eq!(decode(s, &encode(s, &welcome)).unwrap(), welcome);
//! }
//! ```

use std::fmt;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde_json::{Map, Number, Value};

/// Options and details: a dictionary with string keys.
pub type Dict = Map<String, Value>;

/// The largest id: 2^53.
pub const MAX_ID: u64 = 1 << 53;

/// How deep lists and dicts may nest in a MessagePack or CBOR frame (serde_json's limit for
/// JSON is 128): decoding recurses, and a thread's stack is finite.
const MAX_DEPTH: usize = 128;

/// A WAMP v2 serializer, chosen per connection by its WebSocket subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Serializer {
    /// `wamp.2.json`, text frames.
    Json,
    /// `wamp.2.msgpack`, binary frames.
    MsgPack,
    /// `wamp.2.cbor`, binary frames.
    Cbor,
}

impl Serializer {
    /// Every serializer, in the router's default order of preference.
    pub const ALL: [Self; 3] = [Self::Json, Self::MsgPack, Self::Cbor];

    /// The WebSocket subprotocol.
    ///
    /// ```
    /// use tower_wamp::core::codec::v2::Serializer;
    /// assert_eq!(Serializer::MsgPack.subprotocol(), "wamp.2.msgpack");
    /// assert_eq!(Serializer::from_subprotocol("WAMP.2.CBOR"), Some(Serializer::Cbor));
    /// ```
    #[must_use]
    pub const fn subprotocol(self) -> &'static str {
        match self {
            Self::Json => "wamp.2.json",
            Self::MsgPack => "wamp.2.msgpack",
            Self::Cbor => "wamp.2.cbor",
        }
    }

    /// The serializer of a subprotocol name (compared without case).
    #[must_use]
    pub fn from_subprotocol(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.subprotocol().eq_ignore_ascii_case(name))
    }

    /// Whether frames are binary (else text).
    #[must_use]
    pub const fn is_binary(self) -> bool {
        !matches!(self, Self::Json)
    }
}

/// A WAMP v2 message (both directions: the router decodes what clients send, and tests
/// and clients can decode what the router sends).
///
/// `args` and `kwargs` are empty when absent; the encoder leaves out empty trailing ones,
/// as the spec asks.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[allow(missing_docs)] // The fields are the spec's, named as there.
pub enum Message {
    Hello {
        realm: String,
        details: Dict,
    },
    Welcome {
        session: u64,
        details: Dict,
    },
    Abort {
        details: Dict,
        reason: String,
    },
    Challenge {
        method: String,
        extra: Dict,
    },
    Authenticate {
        signature: String,
        extra: Dict,
    },
    Goodbye {
        details: Dict,
        reason: String,
    },
    Error {
        request_type: u64,
        request: u64,
        details: Dict,
        error: String,
        args: Vec<Value>,
        kwargs: Dict,
    },
    Publish {
        request: u64,
        options: Dict,
        topic: String,
        args: Vec<Value>,
        kwargs: Dict,
    },
    Published {
        request: u64,
        publication: u64,
    },
    Subscribe {
        request: u64,
        options: Dict,
        topic: String,
    },
    Subscribed {
        request: u64,
        subscription: u64,
    },
    Unsubscribe {
        request: u64,
        subscription: u64,
    },
    Unsubscribed {
        request: u64,
    },
    Event {
        subscription: u64,
        publication: u64,
        details: Dict,
        args: Vec<Value>,
        kwargs: Dict,
    },
    Call {
        request: u64,
        options: Dict,
        procedure: String,
        args: Vec<Value>,
        kwargs: Dict,
    },
    Cancel {
        request: u64,
        options: Dict,
    },
    Result {
        request: u64,
        details: Dict,
        args: Vec<Value>,
        kwargs: Dict,
    },
    Register {
        request: u64,
        options: Dict,
        procedure: String,
    },
    Registered {
        request: u64,
        registration: u64,
    },
    Unregister {
        request: u64,
        registration: u64,
    },
    Unregistered {
        request: u64,
    },
    Invocation {
        request: u64,
        registration: u64,
        details: Dict,
        args: Vec<Value>,
        kwargs: Dict,
    },
    Interrupt {
        request: u64,
        options: Dict,
    },
    Yield {
        request: u64,
        options: Dict,
        args: Vec<Value>,
        kwargs: Dict,
    },
}

/// Message codes.
#[allow(missing_docs)]
pub mod code {
    pub const HELLO: u64 = 1;
    pub const WELCOME: u64 = 2;
    pub const ABORT: u64 = 3;
    pub const CHALLENGE: u64 = 4;
    pub const AUTHENTICATE: u64 = 5;
    pub const GOODBYE: u64 = 6;
    pub const ERROR: u64 = 8;
    pub const PUBLISH: u64 = 16;
    pub const PUBLISHED: u64 = 17;
    pub const SUBSCRIBE: u64 = 32;
    pub const SUBSCRIBED: u64 = 33;
    pub const UNSUBSCRIBE: u64 = 34;
    pub const UNSUBSCRIBED: u64 = 35;
    pub const EVENT: u64 = 36;
    pub const CALL: u64 = 48;
    pub const CANCEL: u64 = 49;
    pub const RESULT: u64 = 50;
    pub const REGISTER: u64 = 64;
    pub const REGISTERED: u64 = 65;
    pub const UNREGISTER: u64 = 66;
    pub const UNREGISTERED: u64 = 67;
    pub const INVOCATION: u64 = 68;
    pub const INTERRUPT: u64 = 69;
    pub const YIELD: u64 = 70;
}

impl Message {
    /// The message code.
    #[must_use]
    pub fn code(&self) -> u64 {
        use code::*;
        match self {
            Self::Hello { .. } => HELLO,
            Self::Welcome { .. } => WELCOME,
            Self::Abort { .. } => ABORT,
            Self::Challenge { .. } => CHALLENGE,
            Self::Authenticate { .. } => AUTHENTICATE,
            Self::Goodbye { .. } => GOODBYE,
            Self::Error { .. } => ERROR,
            Self::Publish { .. } => PUBLISH,
            Self::Published { .. } => PUBLISHED,
            Self::Subscribe { .. } => SUBSCRIBE,
            Self::Subscribed { .. } => SUBSCRIBED,
            Self::Unsubscribe { .. } => UNSUBSCRIBE,
            Self::Unsubscribed { .. } => UNSUBSCRIBED,
            Self::Event { .. } => EVENT,
            Self::Call { .. } => CALL,
            Self::Cancel { .. } => CANCEL,
            Self::Result { .. } => RESULT,
            Self::Register { .. } => REGISTER,
            Self::Registered { .. } => REGISTERED,
            Self::Unregister { .. } => UNREGISTER,
            Self::Unregistered { .. } => UNREGISTERED,
            Self::Invocation { .. } => INVOCATION,
            Self::Interrupt { .. } => INTERRUPT,
            Self::Yield { .. } => YIELD,
        }
    }
}

/// Why a frame is not a WAMP v2 message. Every case is a protocol violation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes are not a value of the serializer.
    Syntax(String),
    /// Not a list, or an empty one, or the first element is not a known message code.
    NotAMessage,
    /// A known code with the wrong number or kind of elements.
    BadShape {
        /// The message code.
        code: u64,
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(e) => write!(f, "undecodable frame: {e}"),
            Self::NotAMessage => {
                f.write_str("a WAMP message is a list that starts with a known code")
            }
            Self::BadShape { code, reason } => write!(f, "malformed message {code}: {reason}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one frame.
///
/// # Errors
/// A [`DecodeError`]: the session answers with ABORT `wamp.error.protocol_violation`.
pub fn decode(serializer: Serializer, bytes: &[u8]) -> Result<Message, DecodeError> {
    let value = match serializer {
        Serializer::Json => {
            // One UTF-8 check of the whole frame, cheaper than serde_json's check of each
            // string when it reads bytes.
            let text = std::str::from_utf8(bytes)
                .map_err(|_| DecodeError::Syntax("JSON text is not UTF-8".into()))?;
            return decode_json(text);
        }
        Serializer::MsgPack => {
            // 0xc1 is never used; rmpv would read it as nil.
            if count_msgpack(bytes).is_none() {
                return Err(DecodeError::Syntax("not MessagePack".into()));
            }
            let mut rest = bytes;
            let v = rmpv::decode::read_value_with_max_depth(&mut rest, MAX_DEPTH)
                .map_err(|e| DecodeError::Syntax(e.to_string()))?;
            if !rest.is_empty() {
                return Err(DecodeError::Syntax("bytes after the message".into()));
            }
            from_msgpack(v)?
        }
        Serializer::Cbor => {
            let mut rest = bytes;
            let v: ciborium::Value =
                ciborium::de::from_reader_with_recursion_limit(&mut rest, MAX_DEPTH)
                    .map_err(|e| DecodeError::Syntax(e.to_string()))?;
            if !rest.is_empty() {
                return Err(DecodeError::Syntax("bytes after the message".into()));
            }
            from_cbor(v)?
        }
    };
    from_value(value)
}

/// Decodes one JSON message from text known to be UTF-8 (a WebSocket text frame, checked
/// as it was read): [`decode`] without checking it again.
///
/// ```
/// use tower_wamp::core::codec::v2::{decode_json, Message};
/// assert!(matches!(decode_json("[6, {}, \"wamp.close.normal\"]"), Ok(Message::Goodbye { .. })));
/// ```
///
/// # Errors
/// As [`decode`].
pub fn decode_json(text: &str) -> Result<Message, DecodeError> {
    let value = match crate::core::json::parse(text) {
        Some(value) => value,
        None => serde_json::from_str(text).map_err(|e| DecodeError::Syntax(e.to_string()))?,
    };
    from_value(value)
}

/// [`decode_json`] and [`decoded_size`] together, in one pass over the text when it parses
/// on the fast path (for a frame too short to need its estimate before it is decoded).
pub(crate) fn decode_json_measured(text: &str) -> (Result<Message, DecodeError>, usize) {
    match crate::core::json::ListItems::new(text) {
        // A list (every message): decoded item by item as they are parsed.
        Some(mut items) => {
            let decoded = from_items(&mut items);
            if let Some(counts) = items.finish() {
                return (decoded, super::v1::estimate(text.len(), counts));
            }
            // `parse_counted` would take the same steps and fail the same way.
        }
        None => {
            if let Some((value, counts)) = crate::core::json::parse_counted(text) {
                return (from_value(value), super::v1::estimate(text.len(), counts));
            }
        }
    }
    // Left to serde_json, for its value or its error (not parsed here again).
    (
        serde_json::from_str(text)
            .map_err(|e| DecodeError::Syntax(e.to_string()))
            .and_then(from_value),
        decoded_size(Serializer::Json, text.as_bytes()),
    )
}

/// Encodes one message.
///
/// # Panics
/// Never: every [`Message`] serializes with every serializer.
#[must_use]
pub fn encode(serializer: Serializer, message: &Message) -> Vec<u8> {
    if serializer == Serializer::Json {
        // Straight from the message: no tree of values built (and cloned) first.
        return super::exact(|out| {
            serde_json::to_writer(out, &Items(message)).expect("JSON values always serialize");
        });
    }
    let value = to_value(message);
    match serializer {
        Serializer::Json => unreachable!("encoded above"),
        Serializer::MsgPack => {
            let mut out = Vec::new();
            rmpv::encode::write_value(&mut out, &to_msgpack(&value))
                .expect("writing to a Vec cannot fail");
            out
        }
        Serializer::Cbor => {
            let mut out = Vec::new();
            ciborium::ser::into_writer(&to_cbor(&value), &mut out)
                .expect("writing to a Vec cannot fail");
            out
        }
    }
}

/// `[RESULT, request, {}, [result]]` in JSON, written without building the message: what
/// [`encode`] writes for a [`Message::Result`] with one argument and no details.
///
/// ```
/// use tower_wamp::core::codec::v2::{encode, encode_json_result, Message, Serializer};
/// let result = serde_json::json!({"sum": 3});
/// let message = Message::Result {
///     request: 7,
///     details: Default::default(),
///     args: vec![result.clone()],
///     kwargs: Default::default(),
/// };
/// assert_eq!(encode_json_result(7, &result), encode(Serializer::Json, &message));
/// ```
#[must_use]
pub fn encode_json_result(request: u64, result: &Value) -> Vec<u8> {
    super::exact(|out| {
        out.extend_from_slice(b"[50,");
        crate::core::json::write_u64(out, request);
        out.extend_from_slice(b",{},[");
        crate::core::json::write_value(out, result);
        out.extend_from_slice(b"]]");
    })
}

/// An EVENT's arguments encoded once, to go out under many subscriptions: the part of
/// the message that does not depend on the subscription (see [`encode_event`]).
#[derive(Debug, Clone)]
pub struct EncodedPayload {
    serializer: Serializer,
    /// How many list items it is: 0 (no arguments), 1 (args) or 2 (args and kwargs).
    items: usize,
    bytes: Vec<u8>,
}

impl EncodedPayload {
    /// How many bytes it takes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether it is no bytes (no arguments).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Encodes `args` and `kwargs` as EVENT's trailing items (omitted when empty, as
    /// [`encode`] does).
    #[must_use]
    pub fn new(serializer: Serializer, args: &[Value], kwargs: &Dict) -> Self {
        let mut items = Vec::new();
        push_payload(&mut items, args, kwargs);
        let mut bytes = Vec::new();
        for item in &items {
            if serializer == Serializer::Json {
                bytes.push(b',');
            }
            encode_item(serializer, item, &mut bytes);
        }
        Self {
            serializer,
            items: items.len(),
            bytes,
        }
    }
}

fn encode_item(serializer: Serializer, item: &Value, out: &mut Vec<u8>) {
    match serializer {
        Serializer::Json => {
            serde_json::to_writer(&mut *out, item).expect("JSON values always serialize");
        }
        Serializer::MsgPack => {
            rmpv::encode::write_value(out, &to_msgpack(item)).expect("writing to a Vec cannot fail")
        }
        Serializer::Cbor => {
            ciborium::ser::into_writer(&to_cbor(item), out).expect("writing to a Vec cannot fail");
        }
    }
}

/// Encodes `[EVENT, subscription, publication, details, <payload>]` around a payload
/// encoded once: the same bytes as [`encode`] gives for the whole message.
///
/// ```
/// use tower_wamp::core::codec::v2::{EncodedPayload, Message, Serializer, encode, encode_event};
/// let args = vec![serde_json::json!("hi")];
/// let kwargs = Default::default();
/// for s in [Serializer::Json, Serializer::MsgPack, Serializer::Cbor] {
///     let payload = EncodedPayload::new(s, &args, &kwargs);
///     let whole = encode(s, &Message::Event {
///         subscription: 7, publication: 9, details: Default::default(),
///         args: args.clone(), kwargs: Default::default(),
///     });
///     assert_eq!(encode_event(7, 9, &Default::default(), &payload), whole);
/// }
/// ```
#[must_use]
pub fn encode_event(
    subscription: u64,
    publication: u64,
    details: &Dict,
    payload: &EncodedPayload,
) -> Vec<u8> {
    let serializer = payload.serializer;
    let head = [
        Value::from(code::EVENT),
        Value::from(subscription),
        Value::from(publication),
        Value::Object(details.clone()),
    ];
    let count = head.len() + payload.items;
    let mut out = Vec::with_capacity(payload.bytes.len() + 64);
    match serializer {
        Serializer::Json => out.push(b'['),
        // At most 6 items: a MessagePack fixarray, a CBOR array with its count in the
        // initial byte.
        Serializer::MsgPack => out.push(0x90 | u8::try_from(count).unwrap_or(15)),
        Serializer::Cbor => out.push(0x80 | u8::try_from(count).unwrap_or(23)),
    }
    for (i, item) in head.iter().enumerate() {
        if i > 0 && serializer == Serializer::Json {
            out.push(b',');
        }
        encode_item(serializer, item, &mut out);
    }
    out.extend_from_slice(&payload.bytes);
    if serializer == Serializer::Json {
        out.push(b']');
    }
    out
}

// ---- the message <-> list mapping --------------------------------------------------------

fn shape(code: u64, reason: impl Into<String>) -> DecodeError {
    DecodeError::BadShape {
        code,
        reason: reason.into(),
    }
}

/// A message's items after its code, taken in order (from a parsed list, or parsed one by
/// one from the text: one `dyn` for both, not two copies of [`from_items`]).
struct Fields<'a> {
    code: u64,
    items: &'a mut dyn Iterator<Item = Value>,
}

impl Fields<'_> {
    fn next(&mut self, what: &str) -> Result<Value, DecodeError> {
        self.items
            .next()
            .ok_or_else(|| shape(self.code, format!("{what} is missing")))
    }

    fn id(&mut self, what: &str) -> Result<u64, DecodeError> {
        match self.next(what)? {
            v @ Value::Number(_) => id_value(&v)
                .ok_or_else(|| shape(self.code, format!("{what} must be an id in [1, 2^53]"))),
            _ => Err(shape(self.code, format!("{what} must be an integer id"))),
        }
    }

    fn integer(&mut self, what: &str) -> Result<u64, DecodeError> {
        match self.next(what)? {
            Value::Number(n) => n
                .as_u64()
                .ok_or_else(|| shape(self.code, format!("{what} must be a non-negative integer"))),
            _ => Err(shape(self.code, format!("{what} must be an integer"))),
        }
    }

    fn string(&mut self, what: &str) -> Result<String, DecodeError> {
        match self.next(what)? {
            Value::String(s) => Ok(s),
            _ => Err(shape(self.code, format!("{what} must be a string"))),
        }
    }

    fn dict(&mut self, what: &str) -> Result<Dict, DecodeError> {
        match self.next(what)? {
            Value::Object(d) => Ok(d),
            _ => Err(shape(self.code, format!("{what} must be a dict"))),
        }
    }

    /// The optional trailing `Arguments|list, ArgumentsKw|dict`; nothing may follow.
    fn payload(&mut self) -> Result<(Vec<Value>, Dict), DecodeError> {
        let args = match self.items.next() {
            None => return Ok((Vec::new(), Dict::new())),
            Some(Value::Array(a)) => a,
            Some(_) => return Err(shape(self.code, "Arguments must be a list")),
        };
        let kwargs = match self.items.next() {
            None => Dict::new(),
            Some(Value::Object(d)) => d,
            Some(_) => return Err(shape(self.code, "ArgumentsKw must be a dict")),
        };
        self.end()?;
        Ok((args, kwargs))
    }

    fn end(&mut self) -> Result<(), DecodeError> {
        if self.items.next().is_some() {
            return Err(shape(self.code, "too many elements"));
        }
        Ok(())
    }
}

fn from_value(value: Value) -> Result<Message, DecodeError> {
    let Value::Array(items) = value else {
        return Err(DecodeError::NotAMessage);
    };
    from_items(&mut items.into_iter())
}

/// A message from its list's items (the code first).
fn from_items(items: &mut dyn Iterator<Item = Value>) -> Result<Message, DecodeError> {
    let code = match items.next() {
        Some(Value::Number(n)) => n.as_u64().ok_or(DecodeError::NotAMessage)?,
        _ => return Err(DecodeError::NotAMessage),
    };
    let mut f = Fields { code, items };
    use code::*;
    let m = match code {
        HELLO => Message::Hello {
            realm: f.string("Realm")?,
            details: f.dict("Details")?,
        },
        WELCOME => Message::Welcome {
            session: f.id("Session")?,
            details: f.dict("Details")?,
        },
        ABORT => {
            let m = Message::Abort {
                details: f.dict("Details")?,
                reason: f.string("Reason")?,
            };
            f.payload()?;
            return Ok(m);
        }
        CHALLENGE => Message::Challenge {
            method: f.string("AuthMethod")?,
            extra: f.dict("Extra")?,
        },
        AUTHENTICATE => Message::Authenticate {
            signature: f.string("Signature")?,
            extra: f.dict("Extra")?,
        },
        GOODBYE => Message::Goodbye {
            details: f.dict("Details")?,
            reason: f.string("Reason")?,
        },
        ERROR => {
            let request_type = f.integer("REQUEST.Type")?;
            let request = f.id("REQUEST.Request")?;
            let details = f.dict("Details")?;
            let error = f.string("Error")?;
            let (args, kwargs) = f.payload()?;
            return Ok(Message::Error {
                request_type,
                request,
                details,
                error,
                args,
                kwargs,
            });
        }
        PUBLISH => {
            let request = f.id("Request")?;
            let options = f.dict("Options")?;
            let topic = f.string("Topic")?;
            let (args, kwargs) = f.payload()?;
            return Ok(Message::Publish {
                request,
                options,
                topic,
                args,
                kwargs,
            });
        }
        PUBLISHED => Message::Published {
            request: f.id("Request")?,
            publication: f.id("Publication")?,
        },
        SUBSCRIBE => Message::Subscribe {
            request: f.id("Request")?,
            options: f.dict("Options")?,
            topic: f.string("Topic")?,
        },
        SUBSCRIBED => Message::Subscribed {
            request: f.id("Request")?,
            subscription: f.id("Subscription")?,
        },
        UNSUBSCRIBE => {
            let m = Message::Unsubscribe {
                request: f.id("Request")?,
                subscription: f.id("Subscription")?,
            };
            // Options (test vectors only, e.g. forward_for) are tolerated.
            if let Some(extra) = f.items.next()
                && !extra.is_object()
            {
                return Err(shape(code, "Options must be a dict"));
            }
            f.end()?;
            return Ok(m);
        }
        UNSUBSCRIBED => {
            let m = Message::Unsubscribed {
                request: f.id("Request")?,
            };
            // A revocation's Details (`[35, 0, {...}]`) is not decoded here: 0 is not an id.
            f.end()?;
            return Ok(m);
        }
        EVENT => {
            let subscription = f.id("Subscription")?;
            let publication = f.id("Publication")?;
            let details = f.dict("Details")?;
            let (args, kwargs) = f.payload()?;
            return Ok(Message::Event {
                subscription,
                publication,
                details,
                args,
                kwargs,
            });
        }
        CALL => {
            let request = f.id("Request")?;
            let options = f.dict("Options")?;
            let procedure = f.string("Procedure")?;
            let (args, kwargs) = f.payload()?;
            return Ok(Message::Call {
                request,
                options,
                procedure,
                args,
                kwargs,
            });
        }
        CANCEL => Message::Cancel {
            request: f.id("Request")?,
            options: f.dict("Options")?,
        },
        RESULT => {
            let request = f.id("Request")?;
            let details = f.dict("Details")?;
            let (args, kwargs) = f.payload()?;
            return Ok(Message::Result {
                request,
                details,
                args,
                kwargs,
            });
        }
        REGISTER => Message::Register {
            request: f.id("Request")?,
            options: f.dict("Options")?,
            procedure: f.string("Procedure")?,
        },
        REGISTERED => Message::Registered {
            request: f.id("Request")?,
            registration: f.id("Registration")?,
        },
        UNREGISTER => Message::Unregister {
            request: f.id("Request")?,
            registration: f.id("Registration")?,
        },
        UNREGISTERED => Message::Unregistered {
            request: f.id("Request")?,
        },
        INVOCATION => {
            let request = f.id("Request")?;
            let registration = f.id("Registration")?;
            let details = f.dict("Details")?;
            let (args, kwargs) = f.payload()?;
            return Ok(Message::Invocation {
                request,
                registration,
                details,
                args,
                kwargs,
            });
        }
        INTERRUPT => Message::Interrupt {
            request: f.id("Request")?,
            options: f.dict("Options")?,
        },
        YIELD => {
            let request = f.id("Request")?;
            let options = f.dict("Options")?;
            let (args, kwargs) = f.payload()?;
            return Ok(Message::Yield {
                request,
                options,
                args,
                kwargs,
            });
        }
        _ => return Err(DecodeError::NotAMessage),
    };
    f.end()?;
    Ok(m)
}

fn push_payload(items: &mut Vec<Value>, args: &[Value], kwargs: &Dict) {
    if !args.is_empty() || !kwargs.is_empty() {
        items.push(Value::Array(args.to_vec()));
    }
    if !kwargs.is_empty() {
        items.push(Value::Object(kwargs.clone()));
    }
}

/// One item of a message's list, borrowed from the message.
enum Item<'a> {
    Int(u64),
    Str(&'a str),
    Dict(&'a Dict),
    Args(&'a [Value]),
}

impl serde::Serialize for Item<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Int(n) => s.serialize_u64(*n),
            Self::Str(text) => s.serialize_str(text),
            Self::Dict(dict) => dict.serialize(s),
            Self::Args(args) => args.serialize(s),
        }
    }
}

impl Item<'_> {
    fn to_value(&self) -> Value {
        match self {
            Self::Int(n) => (*n).into(),
            Self::Str(text) => (*text).into(),
            Self::Dict(dict) => Value::Object((*dict).clone()),
            Self::Args(args) => Value::Array(args.to_vec()),
        }
    }
}

/// A message as the list it is on the wire, serialized without building it.
struct Items<'a>(&'a Message);

impl serde::Serialize for Items<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq as _;
        let mut items = [const { None }; 7];
        let n = items_of(self.0, &mut items);
        let mut seq = s.serialize_seq(Some(n))?;
        for item in items.iter().flatten() {
            seq.serialize_element(item)?;
        }
        seq.end()
    }
}

fn to_value(m: &Message) -> Value {
    let mut items = [const { None }; 7];
    items_of(m, &mut items);
    Value::Array(items.iter().flatten().map(Item::to_value).collect())
}

/// Fills `out` with the message's items in order; returns how many.
fn items_of<'a>(m: &'a Message, out: &mut [Option<Item<'a>>; 7]) -> usize {
    let mut n = 0;
    macro_rules! put {
        ($($item:expr),+ $(,)?) => {{ $( out[n] = Some($item); n += 1; )+ }};
    }
    macro_rules! payload {
        ($args:expr, $kwargs:expr) => {{
            if !$args.is_empty() || !$kwargs.is_empty() {
                put!(Item::Args($args));
            }
            if !$kwargs.is_empty() {
                put!(Item::Dict($kwargs));
            }
        }};
    }
    put!(Item::Int(m.code()));
    match m {
        Message::Hello { realm, details } => put!(Item::Str(realm), Item::Dict(details)),
        Message::Welcome { session, details } => put!(Item::Int(*session), Item::Dict(details)),
        Message::Abort { details, reason } => put!(Item::Dict(details), Item::Str(reason)),
        Message::Challenge { method, extra } => put!(Item::Str(method), Item::Dict(extra)),
        Message::Authenticate { signature, extra } => {
            put!(Item::Str(signature), Item::Dict(extra));
        }
        Message::Goodbye { details, reason } => {
            put!(Item::Dict(details), Item::Str(reason));
        }
        Message::Error {
            request_type,
            request,
            details,
            error,
            args,
            kwargs,
        } => {
            put!(
                Item::Int(*request_type),
                Item::Int(*request),
                Item::Dict(details),
                Item::Str(error),
            );
            payload!(args, kwargs);
        }
        Message::Publish {
            request,
            options,
            topic,
            args,
            kwargs,
        } => {
            put!(Item::Int(*request), Item::Dict(options), Item::Str(topic));
            payload!(args, kwargs);
        }
        Message::Published {
            request,
            publication,
        } => put!(Item::Int(*request), Item::Int(*publication)),
        Message::Subscribe {
            request,
            options,
            topic,
        } => put!(Item::Int(*request), Item::Dict(options), Item::Str(topic)),
        Message::Subscribed {
            request,
            subscription,
        } => put!(Item::Int(*request), Item::Int(*subscription)),
        Message::Unsubscribe {
            request,
            subscription,
        } => put!(Item::Int(*request), Item::Int(*subscription)),
        Message::Unsubscribed { request } => put!(Item::Int(*request)),
        Message::Event {
            subscription,
            publication,
            details,
            args,
            kwargs,
        } => {
            put!(
                Item::Int(*subscription),
                Item::Int(*publication),
                Item::Dict(details)
            );
            payload!(args, kwargs);
        }
        Message::Call {
            request,
            options,
            procedure,
            args,
            kwargs,
        } => {
            put!(
                Item::Int(*request),
                Item::Dict(options),
                Item::Str(procedure)
            );
            payload!(args, kwargs);
        }
        Message::Cancel { request, options } => put!(Item::Int(*request), Item::Dict(options)),
        Message::Result {
            request,
            details,
            args,
            kwargs,
        } => {
            put!(Item::Int(*request), Item::Dict(details));
            payload!(args, kwargs);
        }
        Message::Register {
            request,
            options,
            procedure,
        } => put!(
            Item::Int(*request),
            Item::Dict(options),
            Item::Str(procedure)
        ),
        Message::Registered {
            request,
            registration,
        } => put!(Item::Int(*request), Item::Int(*registration)),
        Message::Unregister {
            request,
            registration,
        } => put!(Item::Int(*request), Item::Int(*registration)),
        Message::Unregistered { request } => put!(Item::Int(*request)),
        Message::Invocation {
            request,
            registration,
            details,
            args,
            kwargs,
        } => {
            put!(
                Item::Int(*request),
                Item::Int(*registration),
                Item::Dict(details)
            );
            payload!(args, kwargs);
        }
        Message::Interrupt { request, options } => {
            put!(Item::Int(*request), Item::Dict(options));
        }
        Message::Yield {
            request,
            options,
            args,
            kwargs,
        } => {
            put!(Item::Int(*request), Item::Dict(options));
            payload!(args, kwargs);
        }
    }
    n
}

// ---- binary values and the two binary serializers --------------------------------------

/// The JSON form of a byte string: `"\u0000"` and the bytes in base64.
///
/// ```
/// use tower_wamp::core::codec::v2::{binary_string, string_binary};
/// let s = binary_string(&[1, 2, 3]);
/// assert_eq!(s, "\u{0}AQID");
/// assert_eq!(string_binary(&s), Some(vec![1, 2, 3]));
/// assert_eq!(string_binary("plain"), None);
/// ```
#[must_use]
pub fn binary_string(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(1 + bytes.len().div_ceil(3) * 4);
    s.push('\0');
    STANDARD.encode_string(bytes, &mut s);
    s
}

/// The bytes of a string in the binary convention, or `None` for any other string.
#[must_use]
pub fn string_binary(s: &str) -> Option<Vec<u8>> {
    STANDARD.decode(s.strip_prefix('\0')?).ok()
}

fn syntax(e: impl fmt::Display) -> DecodeError {
    DecodeError::Syntax(e.to_string())
}

fn float(f: f64) -> Result<Value, DecodeError> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| syntax("NaN and infinities are not WAMP values"))
}

fn from_msgpack(v: rmpv::Value) -> Result<Value, DecodeError> {
    use rmpv::Value as M;
    Ok(match v {
        M::Nil => Value::Null,
        M::Boolean(b) => Value::Bool(b),
        M::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => Value::from(u),
            (None, Some(s)) => Value::from(s),
            (None, None) => return Err(syntax("integer out of range")),
        },
        M::F32(f) => float(f64::from(f))?,
        M::F64(f) => float(f)?,
        M::String(s) => Value::String(
            s.into_str()
                .ok_or_else(|| syntax("a string that is not UTF-8"))?,
        ),
        M::Binary(b) => Value::String(binary_string(&b)),
        M::Array(items) => Value::Array(
            items
                .into_iter()
                .map(from_msgpack)
                .collect::<Result<_, _>>()?,
        ),
        M::Map(entries) => {
            let mut map = Dict::new();
            for (k, v) in entries {
                let M::String(k) = k else {
                    return Err(syntax("dict keys must be strings"));
                };
                let k = k
                    .into_str()
                    .ok_or_else(|| syntax("a key that is not UTF-8"))?;
                map.insert(k, from_msgpack(v)?);
            }
            Value::Object(map)
        }
        // msgpackr (wampy) encodes JavaScript's `undefined` as fixext 1, type 0, byte 0:
        // read it as null, which options treat as absent.
        M::Ext(0, data) if data == [0] => Value::Null,
        M::Ext(..) => return Err(syntax("MessagePack extension types are not WAMP values")),
    })
}

fn to_msgpack(v: &Value) -> rmpv::Value {
    use rmpv::Value as M;
    match v {
        Value::Null => M::Nil,
        Value::Bool(b) => M::Boolean(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => M::from(u),
            (None, Some(i)) => M::from(i),
            _ => M::F64(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => match string_binary(s) {
            Some(bytes) => M::Binary(bytes),
            None => M::from(s.as_str()),
        },
        Value::Array(items) => M::Array(items.iter().map(to_msgpack).collect()),
        Value::Object(map) => M::Map(
            map.iter()
                .map(|(k, v)| (M::from(k.as_str()), to_msgpack(v)))
                .collect(),
        ),
    }
}

/// Integers are held in 64 bits, signed or unsigned.
const OUT_OF_RANGE: &str = "integer out of range (from -2^63 to 2^64-1)";

fn from_cbor(v: ciborium::Value) -> Result<Value, DecodeError> {
    use ciborium::Value as C;
    Ok(match v {
        C::Null => Value::Null,
        C::Bool(b) => Value::Bool(b),
        C::Integer(i) => {
            let i = i128::from(i);
            match (u64::try_from(i), i64::try_from(i)) {
                (Ok(u), _) => Value::from(u),
                (_, Ok(s)) => Value::from(s),
                _ => return Err(syntax(OUT_OF_RANGE)),
            }
        }
        C::Float(f) => float(f)?,
        C::Text(s) => Value::String(s),
        C::Bytes(b) => Value::String(binary_string(&b)),
        C::Array(items) => {
            Value::Array(items.into_iter().map(from_cbor).collect::<Result<_, _>>()?)
        }
        C::Map(entries) => {
            let mut map = Dict::new();
            for (k, v) in entries {
                let C::Text(k) = k else {
                    return Err(syntax("dict keys must be strings"));
                };
                map.insert(k, from_cbor(v)?);
            }
            Value::Object(map)
        }
        // Bignums (RFC 8949 3.4.3): those within 64 bits are integers; larger ones cannot be
        // held, and are refused rather than passed on as their bytes.
        C::Tag(tag @ (2 | 3), inner) => match *inner {
            // Leading zero bytes do not make it larger.
            C::Bytes(b) if b.iter().skip_while(|byte| **byte == 0).count() <= 8 => {
                let mut n = 0u128;
                for byte in b.iter().skip_while(|byte| **byte == 0) {
                    n = (n << 8) | u128::from(*byte);
                }
                let i = if tag == 2 { n as i128 } else { -1 - n as i128 };
                match (u64::try_from(i), i64::try_from(i)) {
                    (Ok(u), _) => Value::from(u),
                    (_, Ok(s)) => Value::from(s),
                    _ => return Err(syntax(OUT_OF_RANGE)),
                }
            }
            _ => return Err(syntax(OUT_OF_RANGE)),
        },
        C::Tag(_, inner) => from_cbor(*inner)?,
        _ => return Err(syntax("a CBOR value that is not a WAMP value")),
    })
}

fn to_cbor(v: &Value) -> ciborium::Value {
    use ciborium::Value as C;
    match v {
        Value::Null => C::Null,
        Value::Bool(b) => C::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => C::Integer(u.into()),
            (None, Some(i)) => C::Integer(i.into()),
            _ => C::Float(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => match string_binary(s) {
            Some(bytes) => C::Bytes(bytes),
            None => C::Text(s.clone()),
        },
        Value::Array(items) => C::Array(items.iter().map(to_cbor).collect()),
        Value::Object(map) => C::Map(
            map.iter()
                .map(|(k, v)| (C::Text(k.clone()), to_cbor(v)))
                .collect(),
        ),
    }
}

// ---- decoded size, before decoding ---------------------------------------------------------

/// Bytes per value once decoded; see [`super::v1::decoded_size`].
const PER_ITEM: usize = 64;
/// Bytes per dict once decoded.
const PER_OBJECT: usize = 640;

/// An estimate, from above, of the memory a frame takes once decoded, from one pass over
/// its bytes: MessagePack and CBOR encode an empty dict in one byte, which decodes to
/// hundreds. A frame that cannot be scanned is estimated at `usize::MAX`.
///
/// ```
/// use tower_wamp::core::codec::v2::{Serializer, decoded_size};
/// let many_dicts = [vec![0xdc, 0xff, 0xff], vec![0x80; 65535]].concat(); // a list of 65535 {}
/// assert!(decoded_size(Serializer::MsgPack, &many_dicts) > 40_000_000);
/// ```
#[must_use]
pub fn decoded_size(serializer: Serializer, bytes: &[u8]) -> usize {
    let counted = match serializer {
        Serializer::Json => {
            return super::v1::decoded_size_of(bytes);
        }
        Serializer::MsgPack => count_msgpack(bytes),
        Serializer::Cbor => count_cbor(bytes),
    };
    // A frame that cannot be scanned is not decoded either: estimate it as too big.
    let Some((items, objects)) = counted else {
        return usize::MAX;
    };
    bytes
        .len()
        .saturating_add(items.saturating_mul(PER_ITEM))
        .saturating_add(objects.saturating_mul(PER_OBJECT))
}

fn be(bytes: &[u8], at: usize, n: usize) -> Option<usize> {
    let slice = bytes.get(at..at.checked_add(n)?)?;
    let mut v: u64 = 0;
    for b in slice {
        v = (v << 8) | u64::from(*b);
    }
    usize::try_from(v).ok()
}

/// (values, dicts) in a MessagePack frame.
fn count_msgpack(bytes: &[u8]) -> Option<(usize, usize)> {
    let (mut at, mut items, mut maps) = (0usize, 0usize, 0usize);
    while at < bytes.len() {
        let b = bytes[at];
        items += 1;
        // (header length, payload length)
        let (head, body) = match b {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (1, 0),
            0x80..=0x8f => {
                maps += 1;
                (1, 0)
            }
            0x90..=0x9f => (1, 0),
            0xa0..=0xbf => (1, usize::from(b & 0x1f)),
            0xc4 | 0xd9 => (2, be(bytes, at + 1, 1)?),
            0xc5 | 0xda => (3, be(bytes, at + 1, 2)?),
            0xc6 | 0xdb => (5, be(bytes, at + 1, 4)?),
            0xc7 => (3, be(bytes, at + 1, 1)?),
            0xc8 => (4, be(bytes, at + 1, 2)?),
            0xc9 => (6, be(bytes, at + 1, 4)?),
            0xca => (5, 0),
            0xcb => (9, 0),
            0xcc | 0xd0 => (2, 0),
            0xcd | 0xd1 => (3, 0),
            0xce | 0xd2 => (5, 0),
            0xcf | 0xd3 => (9, 0),
            0xd4 => (3, 0),
            0xd5 => (4, 0),
            0xd6 => (6, 0),
            0xd7 => (10, 0),
            0xd8 => (18, 0),
            0xdc | 0xde => {
                maps += usize::from(b == 0xde);
                (3, 0)
            }
            0xdd | 0xdf => {
                maps += usize::from(b == 0xdf);
                (5, 0)
            }
            0xc1 => return None,
        };
        at = at.checked_add(head)?.checked_add(body)?;
    }
    Some((items, maps))
}

/// (values, dicts) in a CBOR frame.
fn count_cbor(bytes: &[u8]) -> Option<(usize, usize)> {
    let (mut at, mut items, mut maps) = (0usize, 0usize, 0usize);
    while at < bytes.len() {
        let b = bytes[at];
        let (major, info) = (b >> 5, b & 0x1f);
        let (head, arg) = match info {
            0..=23 => (1, usize::from(info)),
            24 => (2, be(bytes, at + 1, 1)?),
            25 => (3, be(bytes, at + 1, 2)?),
            26 => (5, be(bytes, at + 1, 4)?),
            27 => (9, be(bytes, at + 1, 8)?),
            31 => (1, 0),
            _ => return None,
        };
        let body = match major {
            2 | 3 if info != 31 => arg,
            _ => 0,
        };
        // Tags count too: each wraps its value in a box.
        if b != 0xff {
            items += 1;
        }
        if major == 5 {
            maps += 1;
        }
        at = at.checked_add(head)?.checked_add(body)?;
    }
    Some((items, maps))
}

/// A WAMP id (1 to 2^53) given as an integer, or as a float with no fraction: some
/// clients' CBOR encoders (wampy's) send integers above 2^32 as floats.
///
/// ```
/// use tower_wamp::core::codec::v2::id_value;
/// use serde_json::json;
/// assert_eq!(id_value(&json!(7)), Some(7));
/// assert_eq!(id_value(&json!(4294967297.0)), Some(4294967297));
/// assert_eq!(id_value(&json!(1.5)), None);
/// assert_eq!(id_value(&json!(0)), None);
/// assert_eq!(id_value(&json!(1e16)), None);
/// ```
#[must_use]
pub fn id_value(v: &Value) -> Option<u64> {
    let id = match v.as_u64() {
        Some(id) => id,
        None => {
            let f = v.as_f64()?;
            // Exactly an integer, within the id range (2^53 is exact as a float).
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let id = f as u64;
            if f.fract() != 0.0 || f < 1.0 || f > MAX_ID as f64 {
                return None;
            }
            id
        }
    };
    (1..=MAX_ID).contains(&id).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decoding_and_sizing_at_once_is_decoding_then_sizing() {
        let mut frames = super::super::v1::tests::frames();
        frames.extend(
            [
                r#"[48, 7, {"receive_progress": true}, "a.b", [{"x": [1, 2]}], {"k": {}}]"#,
                r#"[1, "realm1", {"roles": {"caller": {}}}]"#,
                r#" [ 16 , 2 , {} , "t.u" , [ "\u00e9" ] ] "#,
                r#"[70, 3, {}, [1], {"a": null}]"#,
                r#"[8, 48, 4, {}, "wamp.error.x", [], {}]"#,
                "[48, 1, 5, \"a.b\"]",
                "[48, 1, {}, \"a.b\", [], {}, 1]",
                "[48, 1, {}, \"a.b\", [], {}, tru]",
                "[48, \"x\", {}, tru]",
                "[]",
                "[\"\\ud800\", 1]",
                "{\"a\": 1}",
                "[48, 1, {}, \"a.b\"] x",
            ]
            .map(String::from),
        );
        for text in frames {
            let (decoded, size) = decode_json_measured(&text);
            assert_eq!(decoded, decode_json(&text), "{text}");
            assert_eq!(
                size,
                decoded_size(Serializer::Json, text.as_bytes()),
                "{text}"
            );
        }
    }

    /// Pieces of messages, good and bad: codes, ids, dicts, URIs, lists, numbers serde_json
    /// reads for this parser, a lone surrogate (left to serde_json), and syntax errors.
    const PIECES: &[&str] = &[
        "48",
        "1",
        "0",
        "6",
        "70",
        "{}",
        r#"{"progress":true}"#,
        r#""a.b""#,
        "[]",
        r#"[1,"x"]"#,
        r#"{"k":[{}]}"#,
        "-1",
        "1.5",
        r#""\ud800""#,
        "x",
        "]",
        "[",
        "",
        "null",
        r#""""#,
        "9007199254740993",
        // Nesting, and numbers the fast path leaves to the slow one.
        "[[[]]]",
        r#"{"a":{"b":[1,{"c":2}]}}"#,
        "01",
        "007",
        "1e3",
        "-0",
        "18446744073709551616",
        "12345678901234567890",
        "1234567890123456789",
    ];

    proptest::proptest! {
        #[test]
        fn decoding_a_list_item_by_item_is_decoding_it_whole(
            open in proptest::bool::weighted(0.95),
            close in proptest::bool::weighted(0.9),
            items in proptest::collection::vec(proptest::sample::select(PIECES), 0..8),
            separator in proptest::sample::select(&[",", " , ", ",,", " "][..]),
        ) {
            let text = format!(
                "{}{}{}",
                if open { "[" } else { "" },
                items.join(separator),
                if close { "]" } else { "" }
            );
            let (decoded, size) = decode_json_measured(&text);
            proptest::prop_assert_eq!(decoded, decode_json(&text), "{}", text);
            proptest::prop_assert_eq!(size, decoded_size(Serializer::Json, text.as_bytes()), "{}", text);
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn dict(v: Value) -> Dict {
        match v {
            Value::Object(d) => d,
            other => panic!("{other}"),
        }
    }

    // Vectors from the WAMP specification's test suite (wamp-proto/wamp-proto, testsuite/,
    // commit d8389b8): bytes in every serializer and the attributes they decode to.
    #[test]
    fn the_specs_vectors_decode_in_every_serializer() {
        let abort = Message::Abort {
            details: Dict::new(),
            reason: "wamp.error.system_shutdown".into(),
        };
        for (s, bytes) in [
            (
                Serializer::Json,
                br#"[3, {}, "wamp.error.system_shutdown"]"#.to_vec(),
            ),
            (
                Serializer::MsgPack,
                hex("930380ba77616d702e6572726f722e73797374656d5f73687574646f776e"),
            ),
            (
                Serializer::Cbor,
                hex("8303a0781a77616d702e6572726f722e73797374656d5f73687574646f776e"),
            ),
        ] {
            assert_eq!(decode(s, &bytes).unwrap(), abort, "{s:?}");
            assert_eq!(decode(s, &encode(s, &abort)).unwrap(), abort, "{s:?}");
        }
        let call = decode(
            Serializer::Json,
            br#"[48, 7814135, {}, "com.myapp.myprocedure1", ["Hello, world!"]]"#,
        )
        .unwrap();
        assert_eq!(
            call,
            Message::Call {
                request: 7814135,
                options: Dict::new(),
                procedure: "com.myapp.myprocedure1".into(),
                args: vec![json!("Hello, world!")],
                kwargs: Dict::new(),
            }
        );
    }

    #[test]
    fn every_message_round_trips_through_every_serializer() {
        let d = dict(json!({"a": [1, -2, 2.5, null, true], "b": {"c": "\u{0}AQID"}}));
        let args = vec![json!(1), json!("x"), json!({"k": [1]})];
        let kwargs = dict(json!({"k": "v"}));
        let messages = vec![
            Message::Hello {
                realm: "realm1".into(),
                details: d.clone(),
            },
            Message::Welcome {
                session: MAX_ID,
                details: d.clone(),
            },
            Message::Challenge {
                method: "wampcra".into(),
                extra: d.clone(),
            },
            Message::Authenticate {
                signature: "sig".into(),
                extra: Dict::new(),
            },
            Message::Goodbye {
                details: Dict::new(),
                reason: "wamp.close.normal".into(),
            },
            Message::Error {
                request_type: code::CALL,
                request: 3,
                details: Dict::new(),
                error: "com.example.error".into(),
                args: vec![],
                kwargs: kwargs.clone(),
            },
            Message::Publish {
                request: 1,
                options: d.clone(),
                topic: "t".into(),
                args: args.clone(),
                kwargs: Dict::new(),
            },
            Message::Published {
                request: 1,
                publication: 2,
            },
            Message::Subscribe {
                request: 1,
                options: Dict::new(),
                topic: "t".into(),
            },
            Message::Subscribed {
                request: 1,
                subscription: 9,
            },
            Message::Unsubscribe {
                request: 2,
                subscription: 9,
            },
            Message::Unsubscribed { request: 2 },
            Message::Event {
                subscription: 9,
                publication: 8,
                details: Dict::new(),
                args: args.clone(),
                kwargs: kwargs.clone(),
            },
            Message::Call {
                request: 4,
                options: Dict::new(),
                procedure: "p".into(),
                args: vec![],
                kwargs: Dict::new(),
            },
            Message::Cancel {
                request: 4,
                options: Dict::new(),
            },
            Message::Result {
                request: 4,
                details: Dict::new(),
                args: args.clone(),
                kwargs: Dict::new(),
            },
            Message::Register {
                request: 5,
                options: Dict::new(),
                procedure: "p".into(),
            },
            Message::Registered {
                request: 5,
                registration: 7,
            },
            Message::Unregister {
                request: 6,
                registration: 7,
            },
            Message::Unregistered { request: 6 },
            Message::Invocation {
                request: 1,
                registration: 7,
                details: Dict::new(),
                args,
                kwargs: kwargs.clone(),
            },
            Message::Interrupt {
                request: 1,
                options: Dict::new(),
            },
            Message::Yield {
                request: 1,
                options: Dict::new(),
                args: vec![],
                kwargs,
            },
        ];
        for m in messages {
            for s in Serializer::ALL {
                assert_eq!(decode(s, &encode(s, &m)).unwrap(), m, "{s:?} {m:?}");
            }
        }
    }

    #[test]
    fn binary_values_are_byte_strings_on_binary_serializers() {
        let m = Message::Event {
            subscription: 1,
            publication: 2,
            details: Dict::new(),
            args: vec![Value::String(binary_string(&[0, 255, 7]))],
            kwargs: Dict::new(),
        };
        let msgpack = encode(Serializer::MsgPack, &m);
        assert!(
            msgpack.windows(5).any(|w| w == [0xc4, 3, 0, 255, 7]),
            "{msgpack:x?}"
        );
        let cbor = encode(Serializer::Cbor, &m);
        assert!(cbor.windows(4).any(|w| w == [0x43, 0, 255, 7]), "{cbor:x?}");
        let json = encode(Serializer::Json, &m);
        assert!(String::from_utf8(json).unwrap().contains(r#""\u0000AP8H""#));
    }

    #[test]
    fn empty_trailing_payloads_are_left_out() {
        let m = Message::Result {
            request: 1,
            details: Dict::new(),
            args: vec![],
            kwargs: Dict::new(),
        };
        assert_eq!(encode(Serializer::Json, &m), br#"[50,1,{}]"#);
        let m = Message::Result {
            request: 1,
            details: Dict::new(),
            args: vec![],
            kwargs: dict(json!({"a": 1})),
        };
        assert_eq!(encode(Serializer::Json, &m), br#"[50,1,{},[],{"a":1}]"#);
    }

    #[test]
    fn bad_frames_are_protocol_violations() {
        for bad in [
            &b"nope"[..],
            b"{}",
            b"[]",
            b"[\"1\"]",
            b"[999]",
            b"[1, 5, {}]",
            b"[1, \"realm1\"]",
            b"[1, \"realm1\", {}, 1]",
            b"[48, 0, {}, \"p\"]",
            b"[48, 9007199254740993, {}, \"p\"]",
            b"[48, 1.5, {}, \"p\"]",
            b"[48, 1, {}, \"p\", {}]",
            b"[48, 1, {}, \"p\", [], []]",
            b"[48, 1, {}, \"p\", [], {}, 1]",
            b"[32, 1, [], \"t\"]",
        ] {
            assert!(
                decode(Serializer::Json, bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Trailing bytes, a non-string key, an extension type.
        assert!(decode(Serializer::MsgPack, &[0x91, 0x01, 0x00]).is_err());
        assert!(
            decode(
                Serializer::MsgPack,
                &[0x93, 0x01, 0xa1, b'r', 0x81, 0x01, 0x01]
            )
            .is_err()
        );
        assert!(decode(Serializer::MsgPack, &[0xd4, 0x01, 0x01]).is_err());
        assert!(
            decode(
                Serializer::Cbor,
                &[0x83, 0x01, 0x61, b'r', 0xa1, 0x01, 0x01]
            )
            .is_err()
        );
    }

    #[test]
    fn javascripts_undefined_reads_as_null() {
        // wampy 8's SUBSCRIBE options `{match: undefined}` under msgpack (msgpackr) and cbor
        // (cbor-x).
        let msgpack = [
            0x94, 0x20, 0x01, 0x81, 0xa5, b'm', b'a', b't', b'c', b'h', 0xd4, 0x00, 0x00, 0xa1,
            b't',
        ];
        let cbor = [
            0x84, 0x18, 0x20, 0x01, 0xa1, 0x65, b'm', b'a', b't', b'c', b'h', 0xf7, 0x61, b't',
        ];
        for (s, bytes) in [
            (Serializer::MsgPack, &msgpack[..]),
            (Serializer::Cbor, &cbor[..]),
        ] {
            match decode(s, bytes) {
                Ok(Message::Subscribe { options, .. }) => {
                    assert_eq!(options["match"], Value::Null, "{s:?}")
                }
                other => panic!("{s:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn unscannable_deep_and_trailing_frames_are_refused() {
        // One million empty maps and a reserved byte, or a trailing CBOR byte: the estimate
        // must not fall back to the frame's length.
        let msgpack = [
            vec![0x93, 0x30, 0x01, 0xdd, 0, 0x0f, 0x42, 0x40],
            vec![0x80; 1_000_000],
            vec![0xc1],
        ]
        .concat();
        assert_eq!(decoded_size(Serializer::MsgPack, &msgpack), usize::MAX);
        assert!(decode(Serializer::MsgPack, &[0x91, 0xc1]).is_err());
        let cbor = encode(Serializer::Cbor, &Message::Unsubscribed { request: 1 });
        assert!(decode(Serializer::Cbor, &[cbor.clone(), vec![0x1c]].concat()).is_err());
        assert!(decode(Serializer::Cbor, &[cbor.clone(), vec![0x01]].concat()).is_err());
        assert_eq!(
            decoded_size(Serializer::Cbor, &[cbor, vec![0x1c]].concat()),
            usize::MAX
        );
        // Nesting beyond the limit is an error, not a stack overflow.
        let deep = [vec![0x91; 100_000], vec![0x01]].concat();
        assert!(decode(Serializer::MsgPack, &deep).is_err());
        let deep = [vec![0x81; 100_000], vec![0x01]].concat();
        assert!(decode(Serializer::Cbor, &deep).is_err());
    }

    #[test]
    fn decoded_size_counts_what_decoding_would_allocate() {
        let empty_maps_msgpack = [vec![0xdd, 0, 1, 0, 0], vec![0x80; 65536]].concat();
        assert!(decoded_size(Serializer::MsgPack, &empty_maps_msgpack) > 65536 * 640);
        let empty_maps_cbor = [vec![0x9a, 0, 1, 0, 0], vec![0xa0; 65536]].concat();
        assert!(decoded_size(Serializer::Cbor, &empty_maps_cbor) > 65536 * 640);
        let call = encode(
            Serializer::Cbor,
            &Message::Call {
                request: 1,
                options: Dict::new(),
                procedure: "p".into(),
                args: vec![json!("x".repeat(1000))],
                kwargs: Dict::new(),
            },
        );
        assert!(decoded_size(Serializer::Cbor, &call) < 2000 + 10 * 640);
    }

    #[test]
    fn an_event_encoded_around_a_shared_payload_is_the_whole_message() {
        let binary = Value::from(binary_string(&[0, 1, 255]));
        let cases: Vec<(Vec<Value>, Dict)> = vec![
            (vec![], Dict::new()),
            (vec![json!(1), json!("ü"), binary.clone()], Dict::new()),
            (
                vec![],
                json!({"k": [binary, 2]}).as_object().unwrap().clone(),
            ),
            (
                vec![json!(null)],
                json!({"a": {"b": 1.5}}).as_object().unwrap().clone(),
            ),
        ];
        let details = json!({"topic": "com.example.a", "publisher": 5})
            .as_object()
            .unwrap()
            .clone();
        for serializer in Serializer::ALL {
            for (args, kwargs) in &cases {
                let payload = EncodedPayload::new(serializer, args, kwargs);
                for (subscription, details) in [(1, Dict::new()), (MAX_ID, details.clone())] {
                    let whole = encode(
                        serializer,
                        &Message::Event {
                            subscription,
                            publication: 42,
                            details: details.clone(),
                            args: args.clone(),
                            kwargs: kwargs.clone(),
                        },
                    );
                    assert_eq!(
                        encode_event(subscription, 42, &details, &payload),
                        whole,
                        "{serializer:?} {args:?} {kwargs:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn bignums_within_64_bits_are_integers_and_larger_ones_are_refused() {
        use ciborium::Value as C;
        let tagged = |tag, bytes: &[u8]| C::Tag(tag, Box::new(C::Bytes(bytes.to_vec())));
        assert_eq!(from_cbor(tagged(2, &[0xff; 8])).unwrap(), json!(u64::MAX));
        assert_eq!(from_cbor(tagged(3, &[0x01])).unwrap(), json!(-2));
        assert_eq!(
            from_cbor(tagged(2, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 7])).unwrap(),
            json!(7)
        );
        assert!(
            from_cbor(tagged(2, &[0xff; 16])).is_err(),
            "2^128-1 is not passed as bytes"
        );
        assert!(
            from_cbor(tagged(3, &[0xff; 8])).is_err(),
            "-2^64 does not fit"
        );
        // Other tags are read through.
        assert_eq!(
            from_cbor(C::Tag(1, Box::new(C::Integer(5.into())))).unwrap(),
            json!(5)
        );
        // An id sent as a float with no fraction (wampy's CBOR) is an id.
        let frame = encode(
            Serializer::Json,
            &Message::Unsubscribe {
                request: 1,
                subscription: 7,
            },
        );
        assert!(decode(Serializer::Json, &frame).is_ok());
        assert_eq!(
            decode(Serializer::Json, b"[34, 1, 4294967297.0]").unwrap(),
            Message::Unsubscribe {
                request: 1,
                subscription: 4_294_967_297
            }
        );
        assert!(decode(Serializer::Json, b"[34, 1, 1.5]").is_err());
    }
}
