//! Wire codecs: WAMP v1 (JSON text frames) and WAMP v2 (JSON, MessagePack, CBOR).

pub mod v2;

/// What `write` writes, in a buffer of exactly its size: written first into a buffer kept
/// per thread, so that a frame costs one allocation of its own size (no growing, and a
/// frame's bytes can be shared without another allocation).
pub(crate) fn exact(write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let mut write = Some(write);
    let shared = SCRATCH.try_with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => {
            scratch.clear();
            (write.take().expect("written once"))(&mut scratch);
            let bytes = scratch.to_vec();
            // A rare large frame does not stay with the thread.
            if scratch.capacity() > 64 << 10 {
                *scratch = Vec::new();
            }
            Some(bytes)
        }
        // Written while another frame is (not done today): a buffer of its own.
        Err(_) => None,
    });
    match (shared, write) {
        (Ok(Some(bytes)), _) => bytes,
        // Or while the thread's locals are being destroyed.
        (_, Some(write)) => {
            let mut bytes = Vec::new();
            write(&mut bytes);
            bytes
        }
        (_, None) => unreachable!("written to the shared buffer"),
    }
}

pub mod v1 {
    //! The WAMP v1 JSON codec: each WebSocket text frame is one JSON array whose first
    //! element is the integer type id.
    //!
    //! ```
    //! use tower_wamp::core::{Message, codec::v1};
    //! use serde_json::json;
    //!
    //! let text = v1::encode(&Message::Event { topic: "http://x/t".into(), event: json!({"a": 1}) });
    //! assert_eq!(text, r#"[8,"http://x/t",{"a":1}]"#);
    //! // Clients send SUBSCRIBE; servers never accept EVENT.
    //! assert_eq!(v1::decode(r#"[5, "http://x/t"]"#).unwrap().type_id(), 5);
    //! assert!(v1::decode(&text).is_err());
    //! ```

    use std::fmt;

    use serde_json::Value;

    use crate::core::{Exclude, Message, RpcError, SessionId};

    /// The WebSocket subprotocol name of WAMP v1.
    pub const SUBPROTOCOL: &str = "wamp";

    /// Why a frame could not be decoded.
    #[derive(Debug, Clone, PartialEq, Eq)]
    #[non_exhaustive]
    pub enum DecodeError {
        /// Not valid JSON.
        InvalidJson(String),
        /// Valid JSON, but not an array.
        NotAnArray,
        /// The first element is missing or is not an integer.
        BadTypeId,
        /// An integer type id that WAMP v1 does not define.
        UnknownType(i64),
        /// A message that only a server sends (WELCOME, CALLRESULT, CALLERROR, EVENT).
        UnexpectedType(u8),
        /// A known type with the wrong number or kind of elements.
        BadShape {
            /// The message's type id.
            type_id: u8,
            /// The call id, for a CALL whose id could be read: the router answers with a
            /// CALLERROR.
            call_id: Option<String>,
            /// What is wrong.
            reason: String,
        },
    }

    impl fmt::Display for DecodeError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Self::InvalidJson(e) => write!(f, "invalid JSON: {e}"),
                Self::NotAnArray => f.write_str("a WAMP message must be a JSON array"),
                Self::BadTypeId => f.write_str("the first element must be an integer type id"),
                Self::UnknownType(t) => write!(f, "unknown message type {t}"),
                Self::UnexpectedType(t) => {
                    write!(f, "message type {t} is sent by servers, not clients")
                }
                Self::BadShape {
                    type_id, reason, ..
                } => write!(f, "malformed message of type {type_id}: {reason}"),
            }
        }
    }

    impl std::error::Error for DecodeError {}

    fn shape(type_id: u8, call_id: Option<String>, reason: impl Into<String>) -> DecodeError {
        DecodeError::BadShape {
            type_id,
            call_id,
            reason: reason.into(),
        }
    }

    fn take_string(v: Value, type_id: u8, what: &str) -> Result<String, DecodeError> {
        match v {
            Value::String(s) => Ok(s),
            other => Err(shape(
                type_id,
                None,
                format!("{what} must be a string, not {}", kind(&other)),
            )),
        }
    }

    fn kind(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }

    fn session_list(v: Value, type_id: u8, what: &str) -> Result<Vec<SessionId>, DecodeError> {
        let Value::Array(items) = v else {
            return Err(shape(
                type_id,
                None,
                format!("{what} must be a list of session ids"),
            ));
        };
        items
            .into_iter()
            .map(|i| match i {
                Value::String(s) => Ok(SessionId::from(s)),
                _ => Err(shape(
                    type_id,
                    None,
                    format!("{what} must contain only session id strings"),
                )),
            })
            .collect()
    }

    /// Bytes per JSON value, array element or object member once decoded (a `Value`, a key,
    /// allocation overhead).
    const PER_ITEM: usize = 64;
    /// Bytes per JSON object once decoded (a map's first node).
    const PER_OBJECT: usize = 640;

    /// An estimate, from above, of the memory `text` takes once decoded into JSON values:
    /// one pass over the bytes, without decoding. A small frame can decode to a hundred
    /// times its size (`[{"":0},{"":0},…]`), so limits on what a client may hold count this,
    /// not the frame's length.
    ///
    /// ```
    /// use tower_wamp::core::codec::v1::decoded_size;
    /// assert!(decoded_size(r#"[5,"http://x/t"]"#) < 512);
    /// let objects = vec!["{}"; 1000].join(",");
    /// assert!(decoded_size(&format!("[{objects}]")) > 600_000);
    /// ```
    #[must_use]
    pub fn decoded_size(text: &str) -> usize {
        decoded_size_of(text.as_bytes())
    }

    /// The estimate of [`decoded_size`] from what the parser counted.
    pub(crate) fn estimate(len: usize, counts: crate::core::json::Counts) -> usize {
        len.saturating_add(counts.marks.saturating_add(1).saturating_mul(PER_ITEM))
            .saturating_add(counts.objects.saturating_mul(PER_OBJECT))
    }

    /// Whether a text of `len` bytes is within `max` once decoded whatever it holds, that
    /// is, even if every byte were a `{`: then it need not be scanned before it is decoded.
    pub(crate) fn surely_within(len: usize, max: usize) -> bool {
        len.saturating_mul(1 + PER_ITEM + PER_OBJECT)
            .saturating_add(PER_ITEM)
            <= max
    }

    /// [`decode`] and [`decoded_size`] together, in one pass over the text when it parses on
    /// the fast path. For a frame that is [`surely_within`] the limit (no estimate is
    /// needed before decoding).
    pub(crate) fn decode_measured(text: &str) -> (Result<Message, DecodeError>, usize) {
        match crate::core::json::parse_counted(text) {
            Some((value, counts)) => (from_parsed(value), estimate(text.len(), counts)),
            // Left to serde_json, for its value or its error (not parsed here again).
            None => {
                let decoded = serde_json::from_str(text)
                    .map_err(|e| DecodeError::InvalidJson(e.to_string()))
                    .and_then(from_parsed);
                (decoded, decoded_size(text))
            }
        }
    }

    /// [`decoded_size`] of JSON text as bytes (v2's JSON frames arrive as bytes). Strings,
    /// most of a frame, are skipped with `memchr` rather than byte by byte.
    pub(crate) fn decoded_size_of(bytes: &[u8]) -> usize {
        let (mut items, mut objects) = (1usize, 0usize);
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            i += 1;
            match b {
                b'"' => {
                    // To the closing quote, stepping over escapes (`\"` included); an
                    // unterminated string runs to the end.
                    loop {
                        let Some(j) = bytes
                            .get(i..)
                            .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
                        else {
                            i = bytes.len();
                            break;
                        };
                        i += j + 1;
                        if bytes[i - 1] == b'"' {
                            break;
                        }
                        i += 1;
                    }
                }
                b',' | b'[' => items += 1,
                b'{' => {
                    items += 1;
                    objects += 1;
                }
                _ => {}
            }
        }
        bytes.len() + items * PER_ITEM + objects * PER_OBJECT
    }

    /// Decodes one text frame sent by a client.
    ///
    /// ```
    /// use tower_wamp::core::codec::v1::{decode, DecodeError};
    /// assert_eq!(decode("[99]"), Err(DecodeError::UnknownType(99)));
    /// assert_eq!(decode("{}"), Err(DecodeError::NotAnArray));
    /// ```
    ///
    /// # Errors
    /// A [`DecodeError`] saying what is wrong with the frame.
    pub fn decode(text: &str) -> Result<Message, DecodeError> {
        let value = match crate::core::json::parse(text) {
            Some(value) => value,
            None => {
                serde_json::from_str(text).map_err(|e| DecodeError::InvalidJson(e.to_string()))?
            }
        };
        from_parsed(value)
    }

    /// The message a frame's parsed value is.
    fn from_parsed(value: Value) -> Result<Message, DecodeError> {
        let Value::Array(mut rest) = value else {
            return Err(DecodeError::NotAnArray);
        };
        // The items after the type id stay in the list's own allocation (a short shift,
        // not a second list).
        let type_id = match rest.first() {
            Some(Value::Number(n)) => n.as_i64().ok_or(DecodeError::BadTypeId)?,
            _ => return Err(DecodeError::BadTypeId),
        };
        rest.remove(0);
        let ty = match u8::try_from(type_id) {
            Ok(t @ 0..=8) => t,
            _ => return Err(DecodeError::UnknownType(type_id)),
        };
        match ty {
            1 => {
                let [prefix, uri]: [Value; 2] = rest
                    .try_into()
                    .map_err(|_| shape(1, None, "PREFIX takes exactly a prefix and a URI"))?;
                Ok(Message::Prefix {
                    prefix: take_string(prefix, 1, "the prefix")?,
                    uri: take_string(uri, 1, "the URI")?,
                })
            }
            2 => {
                let mut args = rest;
                let call_id = match args.first_mut() {
                    Some(Value::String(id)) => std::mem::take(id),
                    Some(_) => return Err(shape(2, None, "the call id must be a string")),
                    None => return Err(shape(2, None, "CALL without a call id")),
                };
                let procedure = match args.get_mut(1) {
                    Some(Value::String(p)) => std::mem::take(p),
                    Some(other) => {
                        return Err(shape(
                            2,
                            Some(call_id),
                            format!("the procedure URI must be a string, not {}", kind(other)),
                        ));
                    }
                    None => return Err(shape(2, Some(call_id), "CALL without a procedure URI")),
                };
                // Both out in one shift.
                args.drain(..2);
                Ok(Message::Call {
                    call_id,
                    procedure,
                    args,
                })
            }
            5 | 6 => {
                let [topic]: [Value; 1] = rest.try_into().map_err(|_| {
                    shape(ty, None, "SUBSCRIBE and UNSUBSCRIBE take exactly one topic")
                })?;
                let topic = take_string(topic, ty, "the topic")?;
                Ok(if ty == 5 {
                    Message::Subscribe { topic }
                } else {
                    Message::Unsubscribe { topic }
                })
            }
            7 => {
                // `[7, topic]` publishes `null`, as clj-wamp did.
                if !(1..=4).contains(&rest.len()) {
                    return Err(shape(
                        7,
                        None,
                        "PUBLISH takes a topic, an event and at most exclude and eligible",
                    ));
                }
                let mut rest = rest.into_iter();
                let topic = take_string(rest.next().unwrap_or_default(), 7, "the topic")?;
                let event = rest.next().unwrap_or_default();
                let exclude = match rest.next() {
                    None | Some(Value::Null) => Exclude::Unspecified,
                    Some(Value::Bool(b)) => Exclude::ExcludeMe(b),
                    Some(list) => Exclude::List(session_list(list, 7, "exclude")?),
                };
                let eligible = match rest.next() {
                    None | Some(Value::Null) => None,
                    Some(list) => Some(session_list(list, 7, "eligible")?),
                };
                Ok(Message::Publish {
                    topic,
                    event,
                    exclude,
                    eligible,
                })
            }
            t => Err(DecodeError::UnexpectedType(t)),
        }
    }

    fn to_text<T: serde::Serialize>(value: &T) -> String {
        // Serializing tuples of strings and `Value`s cannot fail: no maps with non-string
        // keys, no custom Serialize impls that error.
        let bytes = super::exact(|out| {
            serde_json::to_writer(out, value).expect("WAMP frames always serialize");
        });
        String::from_utf8(bytes).expect("serde_json writes UTF-8")
    }

    /// `[8, topic, event]`.
    ///
    /// ```
    /// let text = tower_wamp::core::codec::v1::encode_event("t", &serde_json::json!(1));
    /// assert_eq!(text, r#"[8,"t",1]"#);
    /// ```
    #[must_use]
    pub fn encode_event(topic: &str, event: &Value) -> String {
        to_text(&(8, topic, event))
    }

    /// `[3, callId, result]`.
    ///
    /// ```
    /// let text = tower_wamp::core::codec::v1::encode_call_result("c", &serde_json::json!(null));
    /// assert_eq!(text, r#"[3,"c",null]"#);
    /// ```
    #[must_use]
    pub fn encode_call_result(call_id: &str, result: &Value) -> String {
        let bytes = super::exact(|out| {
            out.extend_from_slice(b"[3,");
            crate::core::json::write_str(out, call_id);
            out.push(b',');
            crate::core::json::write_value(out, result);
            out.push(b']');
        });
        String::from_utf8(bytes).unwrap_or_default()
    }

    /// `[4, callId, errorUri, errorDesc]`, plus `errorDetails` only when there are details.
    ///
    /// ```
    /// use tower_wamp::{RpcError, core::codec::v1::encode_call_error};
    /// assert_eq!(encode_call_error("c", &RpcError::not_found()),
    ///            r#"[4,"c","http://api.wamp.ws/error#notfound","not found error"]"#);
    /// ```
    #[must_use]
    pub fn encode_call_error(call_id: &str, error: &RpcError) -> String {
        match error.details() {
            Some(details) => to_text(&(4, call_id, error.uri(), error.description(), details)),
            None => to_text(&(4, call_id, error.uri(), error.description())),
        }
    }

    /// `[0, sessionId, 1, serverIdent]`.
    ///
    /// ```
    /// use tower_wamp::core::{SessionId, codec::v1::encode_welcome};
    /// assert_eq!(encode_welcome(&SessionId::from("s"), "x/1"), r#"[0,"s",1,"x/1"]"#);
    /// ```
    #[must_use]
    pub fn encode_welcome(session_id: &SessionId, server_ident: &str) -> String {
        to_text(&(0, session_id.as_str(), 1, server_ident))
    }

    /// Encodes any message (both directions: clients can use this too).
    ///
    /// ```
    /// use tower_wamp::core::{Message, codec::v1};
    /// let m = Message::Subscribe { topic: "http://x/t".into() };
    /// assert_eq!(v1::decode(&v1::encode(&m)).unwrap(), m);
    /// ```
    #[must_use]
    pub fn encode(message: &Message) -> String {
        match message {
            Message::Welcome {
                session_id,
                protocol_version,
                server_ident,
            } => to_text(&(0, session_id.as_str(), protocol_version, server_ident)),
            Message::Prefix { prefix, uri } => to_text(&(1, prefix, uri)),
            Message::Call {
                call_id,
                procedure,
                args,
            } => {
                let mut items = Vec::with_capacity(args.len() + 3);
                items.push(Value::from(2));
                items.push(Value::from(call_id.as_str()));
                items.push(Value::from(procedure.as_str()));
                items.extend(args.iter().cloned());
                to_text(&items)
            }
            Message::CallResult { call_id, result } => encode_call_result(call_id, result),
            Message::CallError { call_id, error } => encode_call_error(call_id, error),
            Message::Subscribe { topic } => to_text(&(5, topic)),
            Message::Unsubscribe { topic } => to_text(&(6, topic)),
            Message::Publish {
                topic,
                event,
                exclude,
                eligible,
            } => match (exclude, eligible) {
                (Exclude::Unspecified, None) => to_text(&(7, topic, event)),
                (Exclude::ExcludeMe(me), None) => to_text(&(7, topic, event, me)),
                (Exclude::List(list), None) => to_text(&(7, topic, event, list)),
                (Exclude::List(list), Some(el)) => to_text(&(7, topic, event, list, el)),
                (Exclude::ExcludeMe(me), Some(el)) => to_text(&(7, topic, event, me, el)),
                (Exclude::Unspecified, Some(el)) => to_text(&(7, topic, event, Value::Null, el)),
            },
            Message::Event { topic, event } => encode_event(topic, event),
        }
    }

    #[cfg(test)]
    pub(crate) mod tests {
        use super::*;
        use serde_json::json;

        /// Frames the fast parser takes, and frames it leaves to serde_json (a surrogate
        /// pair, deep nesting, not JSON).
        pub(crate) fn frames() -> Vec<String> {
            vec![
                r#"[2,"c","urn:f",{"a":[1,{}],"b":"x\",y"},[],"z"]"#.to_owned(),
                r#" [7 , "urn:t", [[], {}, {"k": "v,[{"}]] "#.to_owned(),
                r#"[2,"c","urn:f","\ud83d\ude00"]"#.to_owned(),
                format!(r#"[2,"c","urn:f",{}1{}]"#, "[".repeat(120), "]".repeat(120)),
                r#"[2,"c","urn:f",1,]"#.to_owned(),
                r#"[2,"c"]"#.to_owned(),
            ]
        }

        #[test]
        fn decoding_and_sizing_at_once_is_decoding_then_sizing() {
            for text in frames() {
                let (decoded, size) = decode_measured(&text);
                assert_eq!(decoded, decode(&text), "{text}");
                assert_eq!(size, decoded_size(&text), "{text}");
            }
        }

        /// The byte-by-byte scan that `decoded_size_of` replaced, as the reference.
        fn decoded_size_naive(text: &[u8]) -> usize {
            let (mut in_string, mut escaped) = (false, false);
            let (mut items, mut objects) = (1usize, 0usize);
            for &b in text {
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                    }
                    continue;
                }
                match b {
                    b'"' => in_string = true,
                    b',' | b'[' => items += 1,
                    b'{' => {
                        items += 1;
                        objects += 1;
                    }
                    _ => {}
                }
            }
            text.len() + items * PER_ITEM + objects * PER_OBJECT
        }

        #[test]
        fn decoded_size_skips_strings_as_the_byte_scan_did() {
            let cases: &[&[u8]] = &[
                br#"[2,"id","urn:x",{"a":[1,2,{}]},"x,[{"]"#,
                br#"["a\"b,[{",{}]"#,
                br#"["a\\",{},[1,2]]"#,
                br#"["unterminated,[{"#,
                br#"["ends in a backslash\"#,
                br#"["\"#,
                br#""\""#,
                br#"""#,
                b"",
                b"[{},{},{}]",
                br#"{"k\u0022":"v\\\"[",[]}"#,
            ];
            for case in cases {
                assert_eq!(
                    decoded_size_of(case),
                    decoded_size_naive(case),
                    "{}",
                    String::from_utf8_lossy(case)
                );
            }
            // Every prefix of a frame with escapes, so each can end anywhere.
            let frame = br#"[7,"t\"o,p{",{"a\\":["\\\"",{}]},"x"]"#;
            for end in 0..=frame.len() {
                assert_eq!(
                    decoded_size_of(&frame[..end]),
                    decoded_size_naive(&frame[..end])
                );
            }
        }

        #[test]
        fn decodes_every_client_message() {
            assert_eq!(
                decode(r#"[1,"calc","http://example.com/calc#"]"#).unwrap(),
                Message::Prefix {
                    prefix: "calc".into(),
                    uri: "http://example.com/calc#".into()
                }
            );
            assert_eq!(
                decode(r#"[2,"id","calc:add",1,"two",null]"#).unwrap(),
                Message::Call {
                    call_id: "id".into(),
                    procedure: "calc:add".into(),
                    args: vec![json!(1), json!("two"), Value::Null]
                }
            );
            assert_eq!(
                decode(r#"[5,"t"]"#).unwrap(),
                Message::Subscribe { topic: "t".into() }
            );
            assert_eq!(
                decode(r#"[6,"t"]"#).unwrap(),
                Message::Unsubscribe { topic: "t".into() }
            );
        }

        #[test]
        fn decodes_all_four_publish_forms() {
            let p = |s: &str| match decode(s).unwrap() {
                Message::Publish {
                    exclude, eligible, ..
                } => (exclude, eligible),
                other => panic!("{other:?}"),
            };
            assert_eq!(p(r#"[7,"t",{"a":1}]"#), (Exclude::Unspecified, None));
            assert_eq!(p(r#"[7,"t",1,true]"#), (Exclude::ExcludeMe(true), None));
            assert_eq!(
                p(r#"[7,"t",1,["a","b"]]"#),
                (Exclude::List(vec!["a".into(), "b".into()]), None)
            );
            assert_eq!(
                p(r#"[7,"t",1,[],["x"]]"#),
                (Exclude::List(vec![]), Some(vec!["x".into()]))
            );
        }

        #[test]
        fn publish_without_an_event_publishes_null() {
            match decode(r#"[7,"t"]"#).unwrap() {
                Message::Publish {
                    topic,
                    event,
                    exclude,
                    eligible,
                } => {
                    assert_eq!(topic, "t");
                    assert_eq!(event, Value::Null);
                    assert_eq!((exclude, eligible), (Exclude::Unspecified, None));
                }
                other => panic!("{other:?}"),
            }
        }

        #[test]
        fn exclude_me_survives_beside_eligible() {
            // The fuzz target's round trip failed on this input: the encoder wrote `[]`.
            for text in [
                r#"[7,"t",1,true,[]]"#,
                r#"[7,"t",1,false,["a"]]"#,
                r#"[7,"t",1,null,["a"]]"#,
            ] {
                let m = decode(text).unwrap();
                assert_eq!(decode(&encode(&m)).unwrap(), m, "{text}");
            }
        }

        #[test]
        fn rejects_garbage_with_a_reason() {
            assert!(matches!(decode("nope"), Err(DecodeError::InvalidJson(_))));
            assert_eq!(decode("42"), Err(DecodeError::NotAnArray));
            assert_eq!(decode("[]"), Err(DecodeError::BadTypeId));
            assert_eq!(decode(r#"["2"]"#), Err(DecodeError::BadTypeId));
            assert_eq!(decode("[1.5]"), Err(DecodeError::BadTypeId));
            assert_eq!(decode("[-1]"), Err(DecodeError::UnknownType(-1)));
            assert_eq!(decode("[9]"), Err(DecodeError::UnknownType(9)));
            for server_only in [0, 3, 4, 8] {
                assert_eq!(
                    decode(&format!("[{server_only}]")),
                    Err(DecodeError::UnexpectedType(server_only))
                );
            }
            assert!(matches!(
                decode(r#"[1,"p"]"#),
                Err(DecodeError::BadShape { type_id: 1, .. })
            ));
            assert!(matches!(
                decode(r#"[5,7]"#),
                Err(DecodeError::BadShape { type_id: 5, .. })
            ));
            assert!(matches!(
                decode(r#"[7]"#),
                Err(DecodeError::BadShape { type_id: 7, .. })
            ));
            assert!(matches!(
                decode(r#"[7,"t",1,"me"]"#),
                Err(DecodeError::BadShape { type_id: 7, .. })
            ));
        }

        #[test]
        fn a_call_with_a_readable_id_keeps_it_in_the_error() {
            match decode(r#"[2,"c9",42]"#) {
                Err(DecodeError::BadShape {
                    type_id: 2,
                    call_id: Some(id),
                    reason,
                }) => {
                    assert_eq!(id, "c9");
                    assert!(reason.contains("procedure URI"), "{reason}");
                }
                other => panic!("{other:?}"),
            }
            assert!(matches!(
                decode("[2,7]"),
                Err(DecodeError::BadShape { call_id: None, .. })
            ));
        }

        #[test]
        fn call_error_omits_null_details() {
            let plain = encode_call_error("c", &RpcError::new("u", "d"));
            assert_eq!(plain, r#"[4,"c","u","d"]"#);
            let detailed =
                encode_call_error("c", &RpcError::new("u", "d").with_details(json!([1])));
            assert_eq!(detailed, r#"[4,"c","u","d",[1]]"#);
        }

        #[test]
        fn round_trips_through_encode() {
            let messages = vec![
                Message::Prefix {
                    prefix: "p".into(),
                    uri: "http://u#".into(),
                },
                Message::Call {
                    call_id: "1".into(),
                    procedure: "p:x".into(),
                    args: vec![json!(1), json!({"k": [true]})],
                },
                Message::Subscribe { topic: "t".into() },
                Message::Unsubscribe { topic: "t".into() },
                Message::Publish {
                    topic: "t".into(),
                    event: json!("e"),
                    exclude: Exclude::ExcludeMe(true),
                    eligible: None,
                },
                Message::Publish {
                    topic: "t".into(),
                    event: json!(null),
                    exclude: Exclude::List(vec!["a".into()]),
                    eligible: Some(vec!["b".into()]),
                },
            ];
            for m in messages {
                assert_eq!(decode(&encode(&m)).unwrap(), m);
            }
        }

        #[test]
        fn integers_stay_integers_and_unicode_survives() {
            let text = encode_event("t", &json!({"n": 9007199254740993_u64, "s": "pässwörd ✓"}));
            let Message::Event { event, .. } = decode_server(&text) else {
                panic!()
            };
            assert_eq!(event["n"].as_u64(), Some(9007199254740993));
            assert_eq!(event["s"], "pässwörd ✓");
        }

        fn decode_server(text: &str) -> Message {
            let v: Vec<Value> = serde_json::from_str(text).unwrap();
            Message::Event {
                topic: v[1].as_str().unwrap().into(),
                event: v[2].clone(),
            }
        }
    }
}
