//! The WAMP v2 session state machine, sans IO: a frame in, one [`Action`] out.
//!
//! It decodes frames with the connection's [`Serializer`], keeps the session's phase
//! (HELLO → optional CHALLENGE/AUTHENTICATE → WELCOME → GOODBYE), checks request ids,
//! URIs, options and limits, and answers what is wrong with the spec's ERROR or ABORT.
//! What a valid request means (who may do it, which handler runs) is for the realm: the
//! transport carries the action out and tells the machine how the session opened
//! ([`State::welcome`], [`State::challenge`], [`State::abort`]).
//!
//! ```
//! use tower_wamp::core::codec::v2::{Message, Serializer, decode};
//! use tower_wamp::core::session::v2::{Action, State};
//!
//! let mut s = State::new(Serializer::Json);
//! match s.handle(br#"[1, "realm1", {"roles": {"subscriber": {}}}]"#, false) {
//!     Action::Hello { realm, .. } => assert_eq!(realm, "realm1"),
//!     other => panic!("{other:?}"),
//! }
//! let welcome = s.welcome(7, Default::default());
//! assert!(matches!(welcome, Message::Welcome { session: 7, .. }));
//! assert!(matches!(s.handle(br#"[32, 1, {}, "com.example.chat"]"#, false), Action::Subscribe { request: 1, .. }));
//! ```

use serde_json::Value;
use std::collections::VecDeque;

use super::SessionLimits;
use crate::core::codec::v2::{self, Dict, Message, Serializer, code};

/// `wamp.error.*` and `wamp.close.*` URIs the machine sends.
#[allow(missing_docs)]
pub mod uri {
    pub const PROTOCOL_VIOLATION: &str = "wamp.error.protocol_violation";
    pub const INVALID_URI: &str = "wamp.error.invalid_uri";
    pub const INVALID_ARGUMENT: &str = "wamp.error.invalid_argument";
    pub const OPTION_NOT_ALLOWED: &str = "wamp.error.option_not_allowed";
    pub const PAYLOAD_SIZE_EXCEEDED: &str = "wamp.error.payload_size_exceeded";
    pub const GOODBYE_AND_OUT: &str = "wamp.close.goodbye_and_out";
    pub const SYSTEM_SHUTDOWN: &str = "wamp.close.system_shutdown";
    /// Too many calls in flight (the v2 form of v1's `#too-many-calls`).
    pub const TOO_MANY_CALLS: &str = "wamp.error.too_many_calls";
    pub const KILLED: &str = "wamp.close.killed";
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Waiting for HELLO.
    Establishing,
    /// A CHALLENGE was sent: waiting for AUTHENTICATE.
    Challenging,
    /// WELCOME was sent.
    Established,
    /// The router sent GOODBYE and waits for the answer.
    Closing,
    /// ABORT or GOODBYE exchanged: nothing more is processed.
    Closed,
}

/// What the transport should do about one frame.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[allow(missing_docs)] // Fields as in the spec's messages.
pub enum Action {
    /// Nothing (a GOODBYE answered our own, a frame after the session closed).
    None,
    /// A HELLO: answer with [`State::welcome`], [`State::challenge`] or [`State::abort`].
    Hello {
        realm: String,
        /// `Details.authid`, when given.
        authid: Option<String>,
        /// `Details.authmethods`, in the client's order of preference (empty: anonymous).
        authmethods: Vec<String>,
        authextra: Dict,
        /// `Details.roles` as the client announced them.
        roles: Dict,
    },
    /// The answer to our CHALLENGE.
    Authenticate {
        signature: String,
        extra: Dict,
    },
    Subscribe {
        request: u64,
        /// A topic, or a pattern under a prefix or wildcard `policy`.
        topic: String,
        /// `Options.match`.
        policy: crate::core::matching::MatchPolicy,
        /// `Options.get_retained`: send the topic's retained event after SUBSCRIBED.
        get_retained: bool,
    },
    Unsubscribe {
        request: u64,
        subscription: u64,
    },
    Publish {
        request: u64,
        topic: String,
        args: Vec<Value>,
        kwargs: Dict,
        /// `Options.acknowledge`: answer with PUBLISHED or ERROR.
        acknowledge: bool,
        /// `Options.exclude_me` (default true in v2).
        exclude_me: bool,
        exclude: Vec<u64>,
        eligible: Option<Vec<u64>>,
        /// `Options.exclude_authid`, `exclude_authrole`, `eligible_authid`,
        /// `eligible_authrole`.
        auth_lists: crate::core::AuthLists,
        /// `Options.disclose_me`: the publisher asks to be named to subscribers.
        disclose_me: bool,
        /// `Options.retain`: keep it as the topic's retained event.
        retain: bool,
    },
    Call {
        request: u64,
        procedure: String,
        args: Vec<Value>,
        kwargs: Dict,
        /// `Options.timeout` in milliseconds (0 or absent: none).
        timeout_ms: u64,
        /// `Options.disclose_me`: the caller asks to be named to the callee.
        disclose_me: bool,
        /// `Options.receive_progress`: the caller takes progressive results.
        receive_progress: bool,
        /// `Options.progress`: the first chunk of a progressive call invocation (the
        /// caller announced them); more come as [`Action::CallChunk`].
        progress: bool,
    },
    /// A later CALL of a progressive call invocation (the same request id).
    CallChunk {
        request: u64,
        args: Vec<Value>,
        kwargs: Dict,
        /// The last chunk (a CALL without `progress`): the call takes no more.
        last: bool,
    },
    Register {
        request: u64,
        /// A procedure, or a pattern under a prefix or wildcard `policy`.
        procedure: String,
        /// `Options.disclose_caller`: the callee asks to be told who calls.
        disclose_caller: bool,
        /// `Options.match`.
        policy: crate::core::matching::MatchPolicy,
        /// `Options.invoke`.
        invoke: InvokePolicy,
    },
    Unregister {
        request: u64,
        registration: u64,
    },
    /// A callee's YIELD.
    Yield {
        request: u64,
        args: Vec<Value>,
        kwargs: Dict,
        /// `Options.progress`: a progressive result; the call goes on.
        progress: bool,
    },
    /// A callee's ERROR for an INVOCATION.
    InvocationError {
        request: u64,
        error: String,
        args: Vec<Value>,
        kwargs: Dict,
    },
    /// A caller's CANCEL.
    Cancel {
        request: u64,
        mode: CancelMode,
    },
    /// Send this message back (an ERROR for a bad request).
    Reply(Message),
    /// Send `message` if any, then close the WebSocket with `code`.
    Close {
        message: Option<Message>,
        code: u16,
        reason: String,
    },
}

/// How a CANCEL asks the router to end a call (`Options.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CancelMode {
    /// Answer the caller at once; the callee is not told and its answer is dropped.
    Skip,
    /// Interrupt the callee and answer the caller with what the callee answers.
    Kill,
    /// Interrupt the callee and answer the caller at once. The default for a CANCEL
    /// without `mode` (as crossbar does).
    #[default]
    KillNoWait,
}

impl CancelMode {
    /// The spec's name of the mode.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Kill => "kill",
            Self::KillNoWait => "killnowait",
        }
    }
}

/// How a shared registration picks the callee of a call (`REGISTER.Options.invoke`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum InvokePolicy {
    /// One callee only: a second REGISTER fails (the default).
    #[default]
    Single,
    /// Each callee in turn, in the order they registered.
    RoundRobin,
    /// A callee picked at random.
    Random,
    /// The callee that registered first.
    First,
    /// The callee that registered last.
    Last,
}

impl InvokePolicy {
    /// The spec's name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::RoundRobin => "roundrobin",
            Self::Random => "random",
            Self::First => "first",
            Self::Last => "last",
        }
    }

    /// The policy named by `Options.invoke` (absent: single); `None` for an unknown name.
    #[must_use]
    pub fn parse(name: Option<&str>) -> Option<Self> {
        match name {
            None | Some("single") => Some(Self::Single),
            Some("roundrobin") => Some(Self::RoundRobin),
            Some("random") => Some(Self::Random),
            Some("first") => Some(Self::First),
            Some("last") => Some(Self::Last),
            Some(_) => None,
        }
    }
}

/// What the client announced it supports as a callee (HELLO's `roles.callee.features`),
/// which decides what the router may send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CalleeFeatures {
    /// `call_canceling` (also read as `call_cancelling`): it understands INTERRUPT.
    pub call_canceling: bool,
    /// `progressive_call_results`, counted only with `call_canceling` (as the spec asks):
    /// it may be sent `receive_progress`.
    pub progressive_call_results: bool,
    /// `progressive_call_invocations`, counted only with `call_canceling` (as the spec
    /// asks): it may be sent a call's arguments in several INVOCATIONs.
    pub progressive_call_invocations: bool,
}

impl CalleeFeatures {
    /// Reads HELLO's `Details.roles`.
    #[must_use]
    pub fn from_roles(roles: &Dict) -> Self {
        let features = roles
            .get("callee")
            .and_then(|c| c.get("features"))
            .and_then(Value::as_object);
        let on = |name: &str| {
            features
                .and_then(|f| f.get(name))
                .is_some_and(|v| v == &Value::Bool(true))
        };
        let call_canceling = on("call_canceling") || on("call_cancelling");
        Self {
            call_canceling,
            progressive_call_results: call_canceling && on("progressive_call_results"),
            progressive_call_invocations: call_canceling && on("progressive_call_invocations"),
        }
    }
}

/// One WAMP v2 session's protocol state.
#[derive(Debug, Clone)]
pub struct State {
    serializer: Serializer,
    phase: Phase,
    callee: CalleeFeatures,
    limits: SessionLimits,
    /// The last request id the client used.
    last_request: u64,
    strict_request_ids: bool,
    out_of_sequence: u64,
    /// The caller announced `progressive_call_invocations`.
    caller_streams: bool,
    /// The request ids of its progressive call invocations still taking chunks.
    streaming: Vec<u64>,
    /// The last ones that ended (a CALL for them is discarded).
    finished: VecDeque<u64>,
}

/// How many progressive call invocations a session may have taking chunks at once.
pub const MAX_STREAMING_CALLS: usize = 64;
/// How many ended ones it is remembered, to discard their late chunks.
const FINISHED_STREAMS: usize = 64;

impl State {
    /// A fresh session on a connection that speaks `serializer`, default limits.
    #[must_use]
    pub fn new(serializer: Serializer) -> Self {
        Self::with_limits(serializer, SessionLimits::default())
    }

    /// A fresh session with these limits.
    #[must_use]
    pub fn with_limits(serializer: Serializer, limits: SessionLimits) -> Self {
        Self {
            serializer,
            phase: Phase::Establishing,
            callee: CalleeFeatures::default(),
            limits,
            last_request: 0,
            strict_request_ids: false,
            out_of_sequence: 0,
            caller_streams: false,
            streaming: Vec::new(),
            finished: VecDeque::new(),
        }
    }

    /// A progressive call invocation ended (answered, canceled, timed out): later CALLs
    /// with its request id are discarded.
    pub fn stream_ended(&mut self, request: u64) {
        if let Some(at) = self.streaming.iter().position(|r| *r == request) {
            self.streaming.swap_remove(at);
            self.remember_finished(request);
        }
    }

    fn remember_finished(&mut self, request: u64) {
        if self.finished.len() >= FINISHED_STREAMS {
            self.finished.pop_front();
        }
        self.finished.push_back(request);
    }

    /// The request ids of the progressive call invocations still taking chunks.
    #[must_use]
    pub fn streaming(&self) -> &[u64] {
        &self.streaming
    }

    /// Treat a request id that is not the previous one plus one as a protocol violation
    /// (off by default: old clients drew random ids; such ids are counted instead).
    #[must_use]
    pub fn strict_request_ids(mut self, yes: bool) -> Self {
        self.strict_request_ids = yes;
        self
    }

    /// The connection's serializer.
    #[must_use]
    pub fn serializer(&self) -> Serializer {
        self.serializer
    }

    /// What the client announced it supports as a callee (default until HELLO).
    #[must_use]
    pub fn callee_features(&self) -> CalleeFeatures {
        self.callee
    }

    /// The session's phase.
    #[must_use]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// How many requests came with an id out of sequence.
    #[must_use]
    pub fn out_of_sequence(&self) -> u64 {
        self.out_of_sequence
    }

    /// Opens the session: the WELCOME to send.
    pub fn welcome(&mut self, session: u64, details: Dict) -> Message {
        self.phase = Phase::Established;
        Message::Welcome { session, details }
    }

    /// Asks for authentication: the CHALLENGE to send.
    pub fn challenge(&mut self, method: &str, extra: Dict) -> Message {
        self.phase = Phase::Challenging;
        Message::Challenge {
            method: method.to_owned(),
            extra,
        }
    }

    /// Refuses the session (during the handshake) or ends it: the ABORT to send.
    pub fn abort(&mut self, reason: &str, message: &str) -> Message {
        self.phase = Phase::Closed;
        let mut details = Dict::new();
        details.insert("message".into(), Value::from(message));
        Message::Abort {
            details,
            reason: reason.to_owned(),
        }
    }

    /// Leaves an established session (the router shuts down, or closes it): the GOODBYE to
    /// send; the client's answer ends it.
    pub fn goodbye(&mut self, reason: &str) -> Message {
        self.phase = Phase::Closing;
        Message::Goodbye {
            details: Dict::new(),
            reason: reason.to_owned(),
        }
    }

    fn violation(&mut self, why: impl Into<String>) -> Action {
        let why = why.into();
        let abort = self.abort(uri::PROTOCOL_VIOLATION, &why);
        Action::Close {
            message: Some(abort),
            code: 1002,
            reason: why,
        }
    }

    /// Handles one frame (`binary`: it came as a binary WebSocket frame).
    pub fn handle(&mut self, bytes: &[u8], binary: bool) -> Action {
        self.handle_sized(bytes, binary).0
    }

    /// Handles one frame; also returns the estimate of its decoded size (what a call holds
    /// while it runs).
    pub fn handle_sized(&mut self, bytes: &[u8], binary: bool) -> (Action, usize) {
        let size = v2::decoded_size(self.serializer, bytes);
        (self.handle_measured(bytes, binary, None, size), size)
    }

    /// [`handle_sized`](Self::handle_sized) for a text frame already known to be UTF-8
    /// (as a WebSocket reads it): not checked again.
    pub fn handle_text_sized(&mut self, text: &str) -> (Action, usize) {
        // A JSON frame too short to go past the limit whatever it holds is sized as it is
        // parsed, not scanned first.
        if self.serializer == Serializer::Json
            && crate::core::codec::v1::surely_within(text.len(), self.limits.max_decoded_size)
        {
            if let Some(refused) = self.refused_before_decoding(false) {
                return (refused, v2::decoded_size(self.serializer, text.as_bytes()));
            }
            let (decoded, size) = v2::decode_json_measured(text);
            let action = match decoded {
                Ok(message) => self.act(message),
                Err(e) => self.violation(e.to_string()),
            };
            return (action, size);
        }
        let size = v2::decoded_size(self.serializer, text.as_bytes());
        (
            self.handle_measured(text.as_bytes(), false, Some(text), size),
            size,
        )
    }

    /// What a frame gets before it is decoded: nothing once closed, a protocol violation
    /// for the wrong kind of frame.
    fn refused_before_decoding(&mut self, binary: bool) -> Option<Action> {
        if matches!(self.phase, Phase::Closed) {
            return Some(Action::None);
        }
        if binary != self.serializer.is_binary() {
            return Some(self.violation(if binary {
                "a binary frame on a text serializer"
            } else {
                "a text frame on a binary serializer"
            }));
        }
        None
    }

    fn handle_measured(
        &mut self,
        bytes: &[u8],
        binary: bool,
        text: Option<&str>,
        size: usize,
    ) -> Action {
        if let Some(refused) = self.refused_before_decoding(binary) {
            return refused;
        }
        if size > self.limits.max_decoded_size {
            let why = format!(
                "message too big once decoded (limit {} bytes)",
                self.limits.max_decoded_size
            );
            let abort = self.abort(uri::PAYLOAD_SIZE_EXCEEDED, &why);
            return Action::Close {
                message: Some(abort),
                code: 1009,
                reason: why,
            };
        }
        let decoded = match text {
            Some(text) if self.serializer == Serializer::Json => v2::decode_json(text),
            _ => v2::decode(self.serializer, bytes),
        };
        match decoded {
            Ok(message) => self.act(message),
            Err(e) => self.violation(e.to_string()),
        }
    }

    /// What a decoded message does in this phase.
    fn act(&mut self, message: Message) -> Action {
        match self.phase {
            Phase::Establishing => self.establishing(message),
            Phase::Challenging => match message {
                Message::Authenticate { signature, extra } => {
                    Action::Authenticate { signature, extra }
                }
                Message::Abort { .. } => self.closed_by_peer(),
                other => self.violation(format!(
                    "message {} while authenticating: AUTHENTICATE expected",
                    other.code()
                )),
            },
            Phase::Established => self.established(message),
            Phase::Closing => match message {
                Message::Goodbye { .. } | Message::Abort { .. } => self.closed_by_peer(),
                // Requests that crossed our GOODBYE are dropped.
                _ => Action::None,
            },
            Phase::Closed => Action::None,
        }
    }

    fn closed_by_peer(&mut self) -> Action {
        self.phase = Phase::Closed;
        Action::Close {
            message: None,
            code: 1000,
            reason: String::new(),
        }
    }

    fn establishing(&mut self, message: Message) -> Action {
        match message {
            Message::Hello { realm, details } => {
                if !valid_uri(&realm) || realm.len() > self.limits.max_uri_length {
                    let abort = self.abort(uri::INVALID_URI, "the realm is not a valid URI");
                    return Action::Close {
                        message: Some(abort),
                        code: 1000,
                        reason: "invalid realm".into(),
                    };
                }
                let mut details = details;
                let authid = match details.remove("authid") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s),
                    Some(_) => return self.violation("HELLO.Details.authid must be a string"),
                };
                let authmethods = match details.remove("authmethods") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(list)) => {
                        let mut methods = Vec::with_capacity(list.len());
                        for m in list {
                            let Value::String(m) = m else {
                                return self.violation("HELLO.Details.authmethods must be strings");
                            };
                            methods.push(m);
                        }
                        methods
                    }
                    Some(_) => return self.violation("HELLO.Details.authmethods must be a list"),
                };
                let authextra = match details.remove("authextra") {
                    None | Some(Value::Null) => Dict::new(),
                    Some(Value::Object(d)) => d,
                    Some(_) => return self.violation("HELLO.Details.authextra must be a dict"),
                };
                let roles = match details.remove("roles") {
                    Some(Value::Object(d)) if !d.is_empty() => d,
                    _ => return self.violation("HELLO.Details.roles must announce a role"),
                };
                self.callee = CalleeFeatures::from_roles(&roles);
                self.caller_streams = roles
                    .get("caller")
                    .and_then(|c| c.get("features"))
                    .and_then(|f| f.get("progressive_call_invocations"))
                    .is_some_and(|v| v == &Value::Bool(true));
                Action::Hello {
                    realm,
                    authid,
                    authmethods,
                    authextra,
                    roles,
                }
            }
            Message::Abort { .. } => self.closed_by_peer(),
            other => self.violation(format!(
                "message {} before the session was established",
                other.code()
            )),
        }
    }

    /// Checks a client request id; `Some(violation)` in strict mode.
    fn request_id(&mut self, request: u64) -> Option<Action> {
        let expected = if self.last_request >= v2::MAX_ID {
            1
        } else {
            self.last_request + 1
        };
        self.last_request = request;
        if request == expected {
            return None;
        }
        self.out_of_sequence += 1;
        self.strict_request_ids
            .then(|| self.violation(format!("request id {request}, expected {expected}")))
    }

    /// A CALL that repeats the request id of a progressive call invocation: its next chunk.
    fn chunk(&mut self, message: Message) -> Action {
        let Message::Call {
            request,
            options,
            args,
            kwargs,
            ..
        } = message
        else {
            unreachable!("only CALLs are chunks")
        };
        let last = match option_bool(&options, "progress") {
            Ok(p) => !p.unwrap_or(false),
            Err(()) => return self.violation("CALL.Options.progress must be a boolean"),
        };
        if last {
            self.stream_ended(request);
        }
        Action::CallChunk {
            request,
            args,
            kwargs,
            last,
        }
    }

    fn error(request_type: u64, request: u64, error: &str, message: String) -> Action {
        Action::Reply(Message::Error {
            request_type,
            request,
            details: Dict::new(),
            error: error.to_owned(),
            args: vec![Value::String(message)],
            kwargs: Dict::new(),
        })
    }

    /// `Some(error)` when `uri` may not be used in a `request_type` request.
    fn check_uri(&self, request_type: u64, request: u64, uri: &str) -> Option<Action> {
        if uri.len() > self.limits.max_uri_length {
            return Some(Self::error(
                request_type,
                request,
                uri::INVALID_URI,
                format!("URI longer than {} bytes", self.limits.max_uri_length),
            ));
        }
        if !valid_uri(uri) {
            return Some(Self::error(
                request_type,
                request,
                uri::INVALID_URI,
                "not a valid WAMP v2 URI (dot-separated, no empty components, no whitespace or #)"
                    .into(),
            ));
        }
        let reserved = uri == "wamp" || uri.starts_with("wamp.");
        if reserved && matches!(request_type, code::PUBLISH | code::REGISTER) {
            return Some(Self::error(
                request_type,
                request,
                uri::INVALID_URI,
                "URIs under `wamp.` are reserved for the protocol".into(),
            ));
        }
        None
    }

    fn established(&mut self, message: Message) -> Action {
        if let Message::Call { request, .. } = &message {
            let request = *request;
            if self.streaming.contains(&request) {
                return self.chunk(message);
            }
            if self.finished.contains(&request) {
                // The spec: CALLs of a progressive call that ended are discarded.
                return Action::None;
            }
        }
        let request = match &message {
            Message::Subscribe { request, .. }
            | Message::Unsubscribe { request, .. }
            | Message::Publish { request, .. }
            | Message::Call { request, .. }
            | Message::Register { request, .. }
            | Message::Unregister { request, .. } => Some(*request),
            _ => None,
        };
        if let Some(request) = request
            && let Some(violation) = self.request_id(request)
        {
            return violation;
        }
        match message {
            Message::Subscribe {
                request,
                options,
                topic,
            } => {
                use crate::core::matching::MatchPolicy;
                let policy = match option_str(&options, "match") {
                    Err(()) => return self.violation("SUBSCRIBE.Options.match must be a string"),
                    Ok(name) => match MatchPolicy::parse(name) {
                        Some(policy) => policy,
                        None => {
                            return Self::error(
                                code::SUBSCRIBE,
                                request,
                                uri::OPTION_NOT_ALLOWED,
                                format!("match policy {:?} is not supported", name.unwrap_or("")),
                            );
                        }
                    },
                };
                if policy == MatchPolicy::Exact {
                    if let Some(e) = self.check_uri(code::SUBSCRIBE, request, &topic) {
                        return e;
                    }
                } else if topic.len() > self.limits.max_uri_length || !policy.valid(&topic) {
                    return Self::error(
                        code::SUBSCRIBE,
                        request,
                        uri::INVALID_URI,
                        format!("not a valid {} pattern", policy.as_str()),
                    );
                }
                let Ok(get_retained) = option_bool(&options, "get_retained") else {
                    return self.violation("SUBSCRIBE.Options.get_retained must be a boolean");
                };
                Action::Subscribe {
                    request,
                    topic,
                    policy,
                    get_retained: get_retained.unwrap_or(false),
                }
            }
            Message::Unsubscribe {
                request,
                subscription,
            } => Action::Unsubscribe {
                request,
                subscription,
            },
            Message::Publish {
                request,
                options,
                topic,
                args,
                kwargs,
            } => {
                let options = match PublishOptions::parse(&options) {
                    Ok(options) => options,
                    Err(why) => return self.violation(format!("PUBLISH {why}")),
                };
                if let Some(e) = self.check_uri(code::PUBLISH, request, &topic) {
                    // Errors of publications are sent only when acknowledged.
                    return if options.acknowledge { e } else { Action::None };
                }
                Action::Publish {
                    request,
                    topic,
                    args,
                    kwargs,
                    acknowledge: options.acknowledge,
                    exclude_me: options.exclude_me,
                    exclude: options.exclude,
                    eligible: options.eligible,
                    auth_lists: options.auth_lists,
                    disclose_me: options.disclose_me,
                    retain: options.retain,
                }
            }
            Message::Call {
                request,
                options,
                procedure,
                args,
                kwargs,
            } => {
                let CallOptions {
                    timeout_ms,
                    disclose_me,
                    receive_progress,
                    progress,
                } = match CallOptions::of(&options) {
                    Ok(options) => options,
                    Err(why) => return self.violation(why),
                };
                if progress && !self.caller_streams {
                    return self.violation(
                        "CALL.Options.progress from a caller that did not announce \
                         progressive_call_invocations",
                    );
                }
                if let Some(e) = self.check_uri(code::CALL, request, &procedure) {
                    if progress {
                        // Its later chunks are discarded, not taken for new calls.
                        self.remember_finished(request);
                    }
                    return e;
                }
                if progress {
                    if self.streaming.len() >= MAX_STREAMING_CALLS {
                        self.remember_finished(request);
                        return Self::error(
                            code::CALL,
                            request,
                            uri::TOO_MANY_CALLS,
                            format!(
                                "at most {MAX_STREAMING_CALLS} progressive call invocations at once"
                            ),
                        );
                    }
                    self.streaming.push(request);
                }
                Action::Call {
                    request,
                    procedure,
                    args,
                    kwargs,
                    timeout_ms,
                    disclose_me,
                    receive_progress,
                    progress,
                }
            }
            Message::Register {
                request,
                options,
                procedure,
            } => {
                use crate::core::matching::MatchPolicy;
                let (policy, invoke) = match (
                    option_str(&options, "match"),
                    option_str(&options, "invoke"),
                ) {
                    (Err(()), _) | (_, Err(())) => {
                        return self.violation("REGISTER options match and invoke are strings");
                    }
                    (Ok(policy), Ok(invoke)) => {
                        match (MatchPolicy::parse(policy), InvokePolicy::parse(invoke)) {
                            (Some(p), Some(i)) => (p, i),
                            _ => {
                                return Self::error(
                                    code::REGISTER,
                                    request,
                                    uri::OPTION_NOT_ALLOWED,
                                    "match is exact, prefix or wildcard; invoke is single, \
                                     roundrobin, random, first or last"
                                        .into(),
                                );
                            }
                        }
                    }
                };
                let Ok(disclose_caller) = option_bool(&options, "disclose_caller") else {
                    return self.violation("REGISTER.Options.disclose_caller must be a boolean");
                };
                if policy == MatchPolicy::Exact {
                    if let Some(e) = self.check_uri(code::REGISTER, request, &procedure) {
                        return e;
                    }
                } else if procedure.len() > self.limits.max_uri_length
                    || !policy.valid(&procedure)
                    || procedure == "wamp"
                    || procedure.starts_with("wamp.")
                {
                    return Self::error(
                        code::REGISTER,
                        request,
                        uri::INVALID_URI,
                        format!(
                            "not a valid {} pattern (or under the reserved wamp.)",
                            policy.as_str()
                        ),
                    );
                }
                Action::Register {
                    request,
                    procedure,
                    disclose_caller: disclose_caller.unwrap_or(false),
                    policy,
                    invoke,
                }
            }
            Message::Unregister {
                request,
                registration,
            } => Action::Unregister {
                request,
                registration,
            },
            Message::Yield {
                request,
                options,
                args,
                kwargs,
            } => {
                let Ok(progress) = option_bool(&options, "progress") else {
                    return self.violation("YIELD.Options.progress must be a boolean");
                };
                Action::Yield {
                    request,
                    args,
                    kwargs,
                    progress: progress.unwrap_or(false),
                }
            }
            Message::Error {
                request_type: code::INVOCATION,
                request,
                error,
                args,
                kwargs,
                ..
            } => Action::InvocationError {
                request,
                error,
                args,
                kwargs,
            },
            Message::Cancel { request, options } => {
                let mode = match option_str(&options, "mode") {
                    Ok(None) => CancelMode::default(),
                    Ok(Some("skip")) => CancelMode::Skip,
                    Ok(Some("kill")) => CancelMode::Kill,
                    Ok(Some("killnowait")) => CancelMode::KillNoWait,
                    _ => {
                        return self.violation(
                            "CANCEL.Options.mode must be \"skip\", \"kill\" or \"killnowait\"",
                        );
                    }
                };
                Action::Cancel { request, mode }
            }
            Message::Goodbye { .. } => {
                self.phase = Phase::Closed;
                Action::Close {
                    message: Some(Message::Goodbye {
                        details: Dict::new(),
                        reason: uri::GOODBYE_AND_OUT.into(),
                    }),
                    code: 1000,
                    reason: String::new(),
                }
            }
            Message::Abort { .. } => self.closed_by_peer(),
            other => self.violation(format!(
                "message {} is not sent by clients in an established session",
                other.code()
            )),
        }
    }
}

/// The loose URI rule of the spec: dot-separated components, none empty, without
/// whitespace or `#`.
///
/// ```
/// use tower_wamp::core::session::v2::valid_uri;
/// assert!(valid_uri("com.example.add"));
/// assert!(!valid_uri("http://example.com/api#add"));
/// assert!(!valid_uri("com..add") && !valid_uri("") && !valid_uri("com.example."));
/// ```
#[must_use]
pub fn valid_uri(uri: &str) -> bool {
    // Eight bytes at a time, then byte by byte (every message with a URI passes here); a
    // URI with other than ASCII in it is checked char by char, for Unicode's whitespace.
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = LO * 0x80;
    const LOW7: u64 = LO * 0x7f;
    // The top bit of every byte of `w` (ASCII) that is zero, exactly (no borrow between
    // bytes).
    let zeros = |w: u64| !(((w & LOW7) + LOW7) | w | LOW7);
    let bytes = uri.as_bytes();
    let mut after_dot = true;
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let w = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        if w & HI != 0 {
            return valid_uri_by_chars(uri);
        }
        // `#`, space, or one of \t \n \v \f \r (9 to 13: 9 <= b, b - 9 < 5).
        let controls = (LO * (127 + 14) - (w & LOW7)) & !w & ((w & LOW7) + LO * (127 - 8)) & HI;
        if zeros(w ^ (LO * b'#' as u64)) | zeros(w ^ (LO * b' ' as u64)) | controls != 0 {
            return false;
        }
        let dots = zeros(w ^ (LO * b'.' as u64));
        // Two dots side by side, or one first after a dot (or at the start).
        if dots & (dots >> 8) != 0 || (after_dot && dots & 0x80 != 0) {
            return false;
        }
        after_dot = dots >> 63 != 0;
        at += 8;
    }
    for &b in &bytes[at..] {
        match b {
            b'.' if after_dot => return false,
            b'.' => after_dot = true,
            b'#' | b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' => return false,
            0x80.. => return valid_uri_by_chars(uri),
            _ => after_dot = false,
        }
    }
    !after_dot
}

fn valid_uri_by_chars(uri: &str) -> bool {
    uri.split('.')
        .all(|c| !c.is_empty() && !c.chars().any(|ch| ch == '#' || ch.is_whitespace()))
}

/// A string option; `Ok(None)` when absent or `null` (wampy sends `undefined`, which
/// MessagePack and CBOR carry as null), `Err` when of another type.
/// The options of a PUBLISH (also those of a testament, `publish_options`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishOptions {
    /// `acknowledge`: answer with PUBLISHED or ERROR.
    pub acknowledge: bool,
    /// `exclude_me` (default true).
    pub exclude_me: bool,
    /// `exclude`: session ids.
    pub exclude: Vec<u64>,
    /// `eligible`: session ids.
    pub eligible: Option<Vec<u64>>,
    /// `exclude_authid`, `exclude_authrole`, `eligible_authid`, `eligible_authrole`.
    pub auth_lists: crate::core::AuthLists,
    /// `disclose_me`.
    pub disclose_me: bool,
    /// `retain`.
    pub retain: bool,
}

impl PublishOptions {
    /// Reads the options (absent keys take their defaults).
    ///
    /// ```
    /// use tower_wamp::core::{codec::v2::Dict, session::v2::PublishOptions};
    /// let options: Dict = serde_json::from_str(r#"{"exclude_me": false, "eligible": [7]}"#).unwrap();
    /// let o = PublishOptions::parse(&options).unwrap();
    /// assert_eq!((o.exclude_me, o.eligible), (false, Some(vec![7])));
    /// ```
    ///
    /// # Errors
    /// What is wrong, when an option has the wrong type.
    pub fn parse(options: &Dict) -> Result<Self, &'static str> {
        let (Ok(acknowledge), Ok(exclude_me), Ok(disclose_me), Ok(retain)) = (
            option_bool(options, "acknowledge"),
            option_bool(options, "exclude_me"),
            option_bool(options, "disclose_me"),
            option_bool(options, "retain"),
        ) else {
            return Err("options acknowledge, exclude_me, disclose_me and retain are booleans");
        };
        let (Ok(exclude), Ok(eligible)) = (
            option_ids(options, "exclude"),
            option_ids(options, "eligible"),
        ) else {
            return Err("options exclude and eligible are lists of ids");
        };
        let (Ok(exclude_authid), Ok(exclude_authrole), Ok(eligible_authid), Ok(eligible_authrole)) = (
            option_strs(options, "exclude_authid"),
            option_strs(options, "exclude_authrole"),
            option_strs(options, "eligible_authid"),
            option_strs(options, "eligible_authrole"),
        ) else {
            return Err(
                "options exclude_authid, exclude_authrole, eligible_authid and \
                 eligible_authrole are lists of strings",
            );
        };
        Ok(Self {
            acknowledge: acknowledge.unwrap_or(false),
            exclude_me: exclude_me.unwrap_or(true),
            exclude: exclude.unwrap_or_default(),
            eligible,
            auth_lists: crate::core::AuthLists {
                exclude_authid: exclude_authid.unwrap_or_default(),
                exclude_authrole: exclude_authrole.unwrap_or_default(),
                eligible_authid,
                eligible_authrole,
            },
            disclose_me: disclose_me.unwrap_or(false),
            retain: retain.unwrap_or(false),
        })
    }
}

fn option_str<'a>(options: &'a Dict, key: &str) -> Result<Option<&'a str>, ()> {
    match options.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(()),
    }
}

/// The options of a CALL that the router acts on.
#[derive(Debug, Default)]
struct CallOptions {
    timeout_ms: u64,
    disclose_me: bool,
    receive_progress: bool,
    progress: bool,
}

impl CallOptions {
    /// `Err` names the option of the wrong type. Most CALLs have none (`{}`): no lookups.
    fn of(options: &Dict) -> Result<Self, &'static str> {
        if options.is_empty() {
            return Ok(Self::default());
        }
        let timeout_ms = match options.get("timeout") {
            None | Some(Value::Null) => 0,
            Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or(0),
            Some(_) => return Err("CALL.Options.timeout must be an integer"),
        };
        let flag = |key, why| {
            option_bool(options, key)
                .map(Option::unwrap_or_default)
                .map_err(|()| why)
        };
        Ok(Self {
            timeout_ms,
            disclose_me: flag("disclose_me", "CALL.Options.disclose_me must be a boolean")?,
            receive_progress: flag(
                "receive_progress",
                "CALL.Options.receive_progress must be a boolean",
            )?,
            progress: flag("progress", "CALL.Options.progress must be a boolean")?,
        })
    }
}

fn option_bool(options: &Dict, key: &str) -> Result<Option<bool>, ()> {
    match options.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(()),
    }
}

/// A list of strings; `Ok(None)` when absent or `null`.
fn option_strs(options: &Dict, key: &str) -> Result<Option<Vec<String>>, ()> {
    match options.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or(()))
            .collect::<Result<_, _>>()
            .map(Some),
        Some(_) => Err(()),
    }
}

fn option_ids(options: &Dict, key: &str) -> Result<Option<Vec<u64>>, ()> {
    match options.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v2::id_value(v).ok_or(()))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(()),
    }
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        /// Components of any length (empty ones too) joined by dots, mostly letters, now
        /// and then a character a URI may not hold: dots and bad bytes fall at every offset
        /// of the eight-byte words.
        #[test]
        fn valid_uri_reads_words_as_the_rule_reads_chars(
            components in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::sample::select(vec![
                        'a', 'b', 'z', '0', '_', '-', 'a', 'c', 'd', 'e', 'x', 'y', '#', ' ',
                        '\t', '\n', '\r', '\u{b}', '\u{c}', '\u{8}', '\u{e}', '\u{1f}', '/',
                        'é', '\u{a0}',
                    ]),
                    0..12,
                ),
                1..6,
            ),
            clean in proptest::bool::weighted(0.7),
        ) {
            let uri = components
                .iter()
                .map(|c| {
                    let c: String = c.iter().collect();
                    if clean { c.chars().filter(char::is_ascii_alphanumeric).collect() } else { c }
                })
                .collect::<Vec<String>>()
                .join(".");
            proptest::prop_assert_eq!(valid_uri(&uri), valid_uri_by_chars(&uri), "{:?}", uri);
        }
    }

    #[test]
    fn valid_uri_reads_every_byte_at_every_offset_of_its_words_as_the_rule() {
        // Every ASCII byte at every place of a 25-byte URI (three words and a tail).
        for b in 0..0x80u8 {
            for at in 0..25 {
                let mut uri = vec![b'a'; 25];
                uri[at] = b;
                let uri = String::from_utf8(uri).unwrap();
                assert_eq!(valid_uri(&uri), valid_uri_by_chars(&uri), "{uri:?}");
            }
        }
        // Two dots side by side, across words too; a dot first or last at word lengths.
        for at in 0..24 {
            let mut uri = vec![b'a'; 25];
            uri[at] = b'.';
            uri[at + 1] = b'.';
            let uri = String::from_utf8(uri).unwrap();
            assert!(!valid_uri(&uri), "{uri:?}");
        }
        for len in [7, 8, 9, 16, 17] {
            let a = "a".repeat(len);
            assert!(valid_uri(&a));
            assert!(!valid_uri(&format!(".{a}")) && !valid_uri(&format!("{a}.")));
            assert!(valid_uri(&format!("{a}.{a}")));
        }
    }

    #[test]
    fn valid_uri_reads_bytes_as_the_rule_reads_chars() {
        let parts = [
            "", ".", "a", "com", "#", " ", "\t", "\u{b}", "\u{c}", "\r", "\n", "é", "\u{a0}",
            "\u{85}", "\u{2028}", "x_y", "1",
        ];
        for a in parts {
            for b in parts {
                for c in parts {
                    let uri = format!("{a}{b}{c}");
                    assert_eq!(valid_uri(&uri), valid_uri_by_chars(&uri), "{uri:?}");
                }
            }
        }
    }

    use super::*;
    use crate::core::codec::v2::encode;
    use serde_json::json;

    fn established(serializer: Serializer) -> State {
        let mut s = State::new(serializer);
        let hello = encode(
            serializer,
            &Message::Hello {
                realm: "realm1".into(),
                details: json!({"roles": {"caller": {}}})
                    .as_object()
                    .unwrap()
                    .clone(),
            },
        );
        assert!(matches!(
            s.handle(&hello, serializer.is_binary()),
            Action::Hello { .. }
        ));
        s.welcome(1, Dict::new());
        s
    }

    fn json(s: &mut State, text: &str) -> Action {
        s.handle(text.as_bytes(), false)
    }

    fn aborts(a: &Action) -> bool {
        matches!(a, Action::Close { message: Some(Message::Abort { reason, .. }), .. } if reason == uri::PROTOCOL_VIOLATION)
    }

    fn error_uri(a: &Action) -> Option<&str> {
        match a {
            Action::Reply(Message::Error { error, .. }) => Some(error),
            _ => None,
        }
    }

    #[test]
    fn only_hello_opens_a_session() {
        for early in [
            r#"[32, 1, {}, "t"]"#,
            r#"[6, {}, "wamp.close.normal"]"#,
            "[5]",
            "nope",
        ] {
            let mut s = State::new(Serializer::Json);
            assert!(aborts(&json(&mut s, early)), "{early}");
            assert_eq!(s.phase(), Phase::Closed);
            assert_eq!(
                json(&mut s, r#"[1, "realm1", {"roles": {"caller": {}}}]"#),
                Action::None
            );
        }
        let mut s = State::new(Serializer::Json);
        assert!(
            aborts(&json(&mut s, r#"[1, "realm1", {}]"#)),
            "roles are required"
        );
        let mut s = State::new(Serializer::Json);
        let a = json(&mut s, r#"[1, "bad realm", {"roles": {"caller": {}}}]"#);
        assert!(
            matches!(&a, Action::Close { message: Some(Message::Abort { reason, .. }), .. } if reason == uri::INVALID_URI),
            "{a:?}"
        );
        let mut s = State::new(Serializer::Json);
        match json(
            &mut s,
            r#"[1, "realm1", {"roles": {"caller": {}}, "authid": "ada", "authmethods": ["wampcra", "ticket"]}]"#,
        ) {
            Action::Hello {
                authid,
                authmethods,
                ..
            } => {
                assert_eq!(authid.as_deref(), Some("ada"));
                assert_eq!(authmethods, ["wampcra", "ticket"]);
            }
            other => panic!("{other:?}"),
        }
        s.challenge("wampcra", Dict::new());
        assert!(
            aborts(&json(&mut s, r#"[32, 1, {}, "t"]"#)),
            "nothing before AUTHENTICATE"
        );
    }

    #[test]
    fn requests_are_checked() {
        let mut s = established(Serializer::Json);
        assert_eq!(
            error_uri(&json(&mut s, r#"[32, 1, {}, "http://x/y#z"]"#)),
            Some(uri::INVALID_URI)
        );
        assert_eq!(
            error_uri(&json(&mut s, r#"[64, 2, {}, "wamp.session.get"]"#)),
            Some(uri::INVALID_URI)
        );
        assert_eq!(
            error_uri(&json(&mut s, r#"[32, 3, {"match": "glob"}, "a.*"]"#)),
            Some(uri::OPTION_NOT_ALLOWED)
        );
        // Patterns are checked by their policy.
        use crate::core::matching::MatchPolicy;
        assert!(matches!(
            json(&mut s, r#"[32, 4, {"match": "wildcard"}, "a..b"]"#),
            Action::Subscribe {
                policy: MatchPolicy::Wildcard,
                ..
            }
        ));
        assert!(matches!(
            json(&mut s, r#"[32, 5, {"match": "prefix"}, "a.b."]"#),
            Action::Subscribe {
                policy: MatchPolicy::Prefix,
                ..
            }
        ));
        for (request, bad) in [
            (6, r#"{"match": "prefix"}, "a..b""#),
            (7, r#"{"match": "wildcard"}, "a#..b""#),
            (8, r#"{}, "a.b.""#),
        ] {
            assert_eq!(
                error_uri(&json(&mut s, &format!("[32, {request}, {bad}]"))),
                Some(uri::INVALID_URI),
                "{bad}"
            );
        }
        // wampy's `undefined` arrives as null: absent.
        assert!(matches!(
            json(&mut s, r#"[32, 9, {"match": null}, "a.b"]"#),
            Action::Subscribe { .. }
        ));
        // An unacknowledged publish to a bad URI is dropped silently.
        assert_eq!(json(&mut s, r#"[16, 10, {}, "a b"]"#), Action::None);
        match json(
            &mut s,
            r#"[16, 11, {"acknowledge": true, "exclude_me": false, "eligible": [7]}, "a.b", [1], {"k": 2}]"#,
        ) {
            Action::Publish {
                acknowledge,
                exclude_me,
                eligible,
                args,
                kwargs,
                ..
            } => {
                assert!(acknowledge && !exclude_me);
                assert_eq!(eligible, Some(vec![7]));
                assert_eq!(
                    (args, kwargs),
                    (vec![json!(1)], json!({"k": 2}).as_object().unwrap().clone())
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            aborts(&json(&mut s, r#"[16, 12, {"acknowledge": 1}, "a.b"]"#)),
            "wrong type"
        );
        assert_eq!(s.out_of_sequence(), 0);
    }

    #[test]
    fn request_ids_out_of_sequence_are_counted_or_refused() {
        let mut s = established(Serializer::Json);
        assert!(matches!(
            json(&mut s, r#"[48, 5, {}, "a.b"]"#),
            Action::Call { .. }
        ));
        assert_eq!(s.out_of_sequence(), 1);
        let mut strict = established(Serializer::Json).strict_request_ids(true);
        assert!(aborts(&json(&mut strict, r#"[48, 5, {}, "a.b"]"#)));
    }

    #[test]
    fn goodbye_is_answered_and_frames_must_match_the_serializer() {
        let mut s = established(Serializer::Json);
        match json(&mut s, r#"[6, {}, "wamp.close.normal"]"#) {
            Action::Close {
                message: Some(Message::Goodbye { reason, .. }),
                code: 1000,
                ..
            } => {
                assert_eq!(reason, uri::GOODBYE_AND_OUT);
            }
            other => panic!("{other:?}"),
        }
        let mut s = established(Serializer::Cbor);
        assert!(aborts(&s.handle(b"[32, 1, {}, \"t\"]", false)));
        let mut s = established(Serializer::MsgPack);
        let call = encode(
            Serializer::MsgPack,
            &Message::Call {
                request: 1,
                options: Dict::new(),
                procedure: "a.b".into(),
                args: vec![json!(1)],
                kwargs: Dict::new(),
            },
        );
        assert!(matches!(s.handle(&call, true), Action::Call { .. }));
        // A router-only message from the client.
        assert!(aborts(&json(
            &mut established(Serializer::Json),
            r#"[36, 1, 2, {}]"#
        )));
        let mut s = established(Serializer::Json);
        let goodbye = s.goodbye(uri::SYSTEM_SHUTDOWN);
        assert!(matches!(goodbye, Message::Goodbye { .. }));
        assert_eq!(json(&mut s, r#"[48, 1, {}, "a.b"]"#), Action::None);
        assert!(matches!(
            json(&mut s, r#"[6, {}, "wamp.close.normal"]"#),
            Action::Close { code: 1000, .. }
        ));
    }

    #[test]
    fn progressive_call_invocations_are_chunks_under_one_request_id() {
        let mut s = State::new(Serializer::Json).strict_request_ids(true);
        json(
            &mut s,
            r#"[1, "realm1", {"roles": {"caller": {"features": {"progressive_call_invocations": true}}}}]"#,
        );
        s.phase = Phase::Established;
        assert!(matches!(
            json(&mut s, r#"[48, 1, {"progress": true}, "a.b", [1]]"#),
            Action::Call {
                request: 1,
                progress: true,
                ..
            }
        ));
        assert_eq!(s.streaming(), [1]);
        // A repeated id is the next chunk, not an id out of sequence.
        for (frame, last) in [
            (r#"[48, 1, {"progress": true}, "a.b", [2]]"#, false),
            (r#"[48, 1, {}, "a.b", [3]]"#, true),
        ] {
            match json(&mut s, frame) {
                Action::CallChunk {
                    request: 1,
                    args,
                    last: l,
                    ..
                } => assert_eq!((args.len(), l), (1, last)),
                other => panic!("{other:?}"),
            }
        }
        assert!(s.streaming().is_empty());
        // A chunk of a call that ended is discarded.
        assert_eq!(json(&mut s, r#"[48, 1, {}, "a.b", [4]]"#), Action::None);
        assert!(matches!(
            json(&mut s, r#"[48, 2, {"progress": true}, "a.b"]"#),
            Action::Call {
                request: 2,
                progress: true,
                ..
            }
        ));
        s.stream_ended(2);
        assert_eq!(
            json(&mut s, r#"[48, 2, {"progress": true}, "a.b"]"#),
            Action::None
        );
        // A bounded number at once.
        for request in 3..3 + MAX_STREAMING_CALLS as u64 {
            let frame = format!(r#"[48, {request}, {{"progress": true}}, "a.b"]"#);
            assert!(matches!(json(&mut s, &frame), Action::Call { .. }));
        }
        let request = 3 + MAX_STREAMING_CALLS as u64;
        let frame = format!(r#"[48, {request}, {{"progress": true}}, "a.b"]"#);
        assert_eq!(error_uri(&json(&mut s, &frame)), Some(uri::TOO_MANY_CALLS));
        // Its later chunks are discarded, not taken for a new call.
        let frame = format!(r#"[48, {request}, {{}}, "a.b", ["tail"]]"#);
        assert_eq!(json(&mut s, &frame), Action::None);
    }

    #[test]
    fn callee_features_cancel_modes_and_progress_options_are_read() {
        let mut s = State::new(Serializer::Json);
        json(
            &mut s,
            r#"[1, "realm1", {"roles": {"callee": {"features": {"call_cancelling": true, "progressive_call_results": true}}}}]"#,
        );
        assert_eq!(
            s.callee_features(),
            CalleeFeatures {
                call_canceling: true,
                progressive_call_results: true,
                progressive_call_invocations: false,
            }
        );
        // Progressive results count only with canceling; `"yes"` is not `true`.
        let roles = json!({"callee": {"features": {"progressive_call_results": true, "call_canceling": "yes"}}});
        assert_eq!(
            CalleeFeatures::from_roles(roles.as_object().unwrap()),
            CalleeFeatures::default()
        );

        let mut s = established(Serializer::Json);
        for (options, mode) in [
            ("{}", CancelMode::KillNoWait),
            (r#"{"mode": "skip"}"#, CancelMode::Skip),
            (r#"{"mode": "kill"}"#, CancelMode::Kill),
            (r#"{"mode": "killnowait"}"#, CancelMode::KillNoWait),
        ] {
            assert_eq!(
                json(&mut s, &format!("[49, 7, {options}]")),
                Action::Cancel { request: 7, mode }
            );
        }
        assert!(aborts(&json(&mut s, r#"[49, 7, {"mode": "stop"}]"#)));

        let mut s = established(Serializer::Json);
        assert!(matches!(
            json(&mut s, r#"[48, 1, {"receive_progress": true}, "a.b"]"#),
            Action::Call {
                receive_progress: true,
                ..
            }
        ));
        // `progress` from a caller that did not announce progressive call invocations.
        assert!(aborts(&json(
            &mut s,
            r#"[48, 2, {"progress": true}, "a.b"]"#
        )));
        let mut s = established(Serializer::Json);
        assert!(matches!(
            json(&mut s, r#"[70, 5, {"progress": true}, [1]]"#),
            Action::Yield {
                request: 5,
                progress: true,
                ..
            }
        ));
        assert!(matches!(
            json(&mut s, r#"[70, 5, {}]"#),
            Action::Yield {
                progress: false,
                ..
            }
        ));
        assert!(aborts(&json(&mut s, r#"[70, 5, {"progress": 1}]"#)));
    }
}
