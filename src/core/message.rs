use std::{borrow::Cow, collections::HashSet, fmt};

use serde_json::Value;

use super::SessionId;

/// One WAMP message, as the core sees it.
///
/// The variants are the nine messages of WAMP v1; the codec in [`crate::core::codec::v1`]
/// turns them into and out of JSON text frames.
///
/// ```
/// use tower_wamp::core::{Message, codec::v1};
///
/// let frame = r#"[2, "c1", "calc:add", 1, 2]"#;
/// let Message::Call { call_id, procedure, args } = v1::decode(frame).unwrap() else { panic!() };
/// assert_eq!((call_id.as_str(), procedure.as_str(), args.len()), ("c1", "calc:add", 2));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Message {
    /// `[0, sessionId, protocolVersion, serverIdent]`: the first frame a server sends.
    Welcome {
        /// The new session's id.
        session_id: SessionId,
        /// Always 1 for WAMP v1.
        protocol_version: u64,
        /// Free text naming the server, e.g. `tower-wamp/0.1.0`.
        server_ident: String,
    },
    /// `[1, prefix, uri]`: defines a CURIE prefix for this connection.
    Prefix {
        /// The short name.
        prefix: String,
        /// The URI it stands for.
        uri: String,
    },
    /// `[2, callId, procUri, arg...]`: a remote procedure call.
    Call {
        /// The client's id for this call, echoed in the reply.
        call_id: String,
        /// The procedure URI or CURIE.
        procedure: String,
        /// Positional arguments.
        args: Vec<Value>,
    },
    /// `[3, callId, result]`: a successful call.
    CallResult {
        /// The call this answers.
        call_id: String,
        /// The result (may be `null`).
        result: Value,
    },
    /// `[4, callId, errorUri, errorDesc]` or `[4, callId, errorUri, errorDesc, errorDetails]`.
    CallError {
        /// The call this answers.
        call_id: String,
        /// The error.
        error: RpcError,
    },
    /// `[5, topicUri]`.
    Subscribe {
        /// Topic URI or CURIE.
        topic: String,
    },
    /// `[6, topicUri]`.
    Unsubscribe {
        /// Topic URI or CURIE.
        topic: String,
    },
    /// `[7, topicUri, event]`, `[7, topicUri, event, excludeMe]`,
    /// `[7, topicUri, event, exclude]` or `[7, topicUri, event, exclude, eligible]`.
    Publish {
        /// Topic URI or CURIE.
        topic: String,
        /// The event payload.
        event: Value,
        /// The fourth element, if any.
        exclude: Exclude,
        /// The fifth element, if any: only these sessions may receive the event.
        eligible: Option<Vec<SessionId>>,
    },
    /// `[8, topicUri, event]`: an event delivered to a subscriber.
    Event {
        /// Always a full URI, never a CURIE.
        topic: String,
        /// The event payload.
        event: Value,
    },
}

impl Message {
    /// The WAMP v1 type id of this message.
    ///
    /// ```
    /// use tower_wamp::core::Message;
    /// assert_eq!(Message::Subscribe { topic: "t".into() }.type_id(), 5);
    /// ```
    #[must_use]
    pub fn type_id(&self) -> u8 {
        match self {
            Self::Welcome { .. } => 0,
            Self::Prefix { .. } => 1,
            Self::Call { .. } => 2,
            Self::CallResult { .. } => 3,
            Self::CallError { .. } => 4,
            Self::Subscribe { .. } => 5,
            Self::Unsubscribe { .. } => 6,
            Self::Publish { .. } => 7,
            Self::Event { .. } => 8,
        }
    }
}

/// The fourth element of a PUBLISH.
///
/// ```
/// use tower_wamp::core::Exclude;
/// assert_eq!(Exclude::default(), Exclude::Unspecified);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Exclude {
    /// The three-element form: the router's default decides whether the publisher gets its
    /// own event.
    #[default]
    Unspecified,
    /// `excludeMe`: `true` excludes the publisher, `false` excludes nobody.
    ExcludeMe(bool),
    /// An explicit list of session ids that must not receive the event.
    List(Vec<SessionId>),
}

/// A WAMP v2 publication's audience by authentication: `exclude_authid`,
/// `exclude_authrole` (blacklists) and `eligible_authid`, `eligible_authrole` (whitelists;
/// `None` when absent). A subscriber receives the event only if it is in every present
/// whitelist and in no blacklist; one without an authid (or authrole) is in no list of them.
///
/// ```
/// use tower_wamp::core::AuthLists;
/// let mut lists = AuthLists::default();
/// lists.exclude_authid = vec!["mallory".into()];
/// lists.eligible_authrole = Some(vec!["user".into()]);
/// assert!(lists.admits(Some("ada"), Some("user")));
/// assert!(!lists.admits(Some("mallory"), Some("user")));
/// assert!(!lists.admits(None, Some("anonymous")));
/// assert!(AuthLists::default().admits(None, None));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct AuthLists {
    /// Subscribers with one of these authids do not receive the event.
    pub exclude_authid: Vec<String>,
    /// Subscribers with one of these authroles do not receive the event.
    pub exclude_authrole: Vec<String>,
    /// When present, only subscribers with one of these authids receive the event.
    pub eligible_authid: Option<Vec<String>>,
    /// When present, only subscribers with one of these authroles receive the event.
    pub eligible_authrole: Option<Vec<String>>,
}

impl AuthLists {
    /// Whether no list is present (everyone is admitted, without looking).
    ///
    /// ```
    /// use tower_wamp::core::AuthLists;
    /// let mut lists = AuthLists::default();
    /// assert!(lists.is_empty());
    /// lists.eligible_authid = Some(vec![]); // present, and admits nobody
    /// assert!(!lists.is_empty() && !lists.admits(Some("ada"), None));
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.exclude_authid.is_empty()
            && self.exclude_authrole.is_empty()
            && self.eligible_authid.is_none()
            && self.eligible_authrole.is_none()
    }

    /// Whether a subscriber with this authid and authrole receives the event. For many
    /// subscribers, [`filter`](Self::filter) once and ask it.
    #[must_use]
    pub fn admits(&self, authid: Option<&str>, authrole: Option<&str>) -> bool {
        self.filter().admits(authid, authrole)
    }

    /// The lists as sets, so that a fan-out asks each subscriber in constant time however
    /// long a publisher made them.
    ///
    /// ```
    /// use tower_wamp::core::AuthLists;
    /// let mut lists = AuthLists::default();
    /// lists.exclude_authrole = vec!["guest".into()];
    /// let filter = lists.filter();
    /// assert!(filter.admits(Some("ada"), Some("user")));
    /// assert!(!filter.admits(Some("bob"), Some("guest")));
    /// ```
    #[must_use]
    pub fn filter(&self) -> AuthFilter<'_> {
        fn set(list: &[String]) -> HashSet<&str> {
            list.iter().map(String::as_str).collect()
        }
        AuthFilter {
            exclude_authid: set(&self.exclude_authid),
            exclude_authrole: set(&self.exclude_authrole),
            eligible_authid: self.eligible_authid.as_deref().map(set),
            eligible_authrole: self.eligible_authrole.as_deref().map(set),
        }
    }
}

/// [`AuthLists`] made into sets (see [`AuthLists::filter`], which shows it in use).
#[derive(Debug)]
pub struct AuthFilter<'a> {
    exclude_authid: HashSet<&'a str>,
    exclude_authrole: HashSet<&'a str>,
    eligible_authid: Option<HashSet<&'a str>>,
    eligible_authrole: Option<HashSet<&'a str>>,
}

impl AuthFilter<'_> {
    /// Whether a subscriber with this authid and authrole receives the event.
    ///
    /// ```
    /// use tower_wamp::core::AuthLists;
    /// let mut lists = AuthLists::default();
    /// lists.eligible_authid = Some(vec!["ada".into()]);
    /// assert!(lists.filter().admits(Some("ada"), None));
    /// assert!(!lists.filter().admits(None, None));
    /// ```
    #[must_use]
    pub fn admits(&self, authid: Option<&str>, authrole: Option<&str>) -> bool {
        let listed =
            |set: &HashSet<&str>, value: Option<&str>| value.is_some_and(|v| set.contains(v));
        !listed(&self.exclude_authid, authid)
            && !listed(&self.exclude_authrole, authrole)
            && self
                .eligible_authid
                .as_ref()
                .is_none_or(|set| listed(set, authid))
            && self
                .eligible_authrole
                .as_ref()
                .is_none_or(|set| listed(set, authrole))
    }
}

/// Well-known error URIs.
pub mod error_uri {
    /// `http://api.wamp.ws/error#generic`, "generic error".
    pub const GENERIC: &str = "http://api.wamp.ws/error#generic";
    /// `http://api.wamp.ws/error#internal`, "internal error": a handler panicked or failed.
    pub const INTERNAL: &str = "http://api.wamp.ws/error#internal";
    /// `http://api.wamp.ws/error#notfound`, "not found error": no such procedure.
    pub const NOT_FOUND: &str = "http://api.wamp.ws/error#notfound";
    /// `http://api.wamp.ws/error#unauthorized`, "unauthorized".
    pub const UNAUTHORIZED: &str = "http://api.wamp.ws/error#unauthorized";
    /// `http://api.wamp.ws/error#invalid-argument`: a CALL whose arguments (or shape) are
    /// not what the procedure takes.
    pub const INVALID_ARGUMENT: &str = "http://api.wamp.ws/error#invalid-argument";
    /// `http://api.wamp.ws/error#timeout`, "call timed out": a procedure missed its
    /// deadline.
    pub const TIMEOUT: &str = "http://api.wamp.ws/error#timeout";
    /// `http://api.wamp.ws/error#too-many-calls`: the session already has as many calls in
    /// flight as it may (by count or by bytes); the call was not run.
    pub const TOO_MANY_CALLS: &str = "http://api.wamp.ws/error#too-many-calls";
}

/// An error's WAMP v2 `args` and `kwargs`.
type V2Arguments = (Vec<Value>, serde_json::Map<String, Value>);

/// The error a procedure answers with: a CALLERROR on the wire.
///
/// `details` becomes the optional fifth element (omitted when `None`, never `null`).
/// [`kill`](Self::kill) asks the router to close the connection after sending the error,
/// like clj-wamp's `:kill`.
///
/// ```
/// use tower_wamp::RpcError;
/// use serde_json::json;
///
/// let err = RpcError::new("http://example.com/error#busy", "try later")
///     .with_details(json!({"retry_ms": 500}));
/// assert_eq!(err.uri(), "http://example.com/error#busy");
/// assert_eq!(err.details(), Some(&json!({"retry_ms": 500})));
/// ```
#[derive(Clone, PartialEq)]
pub struct RpcError {
    uri: Cow<'static, str>,
    description: String,
    details: Option<Value>,
    kill: bool,
    /// WAMP v2 positional and keyword arguments, when given (boxed: errors stay small).
    v2: Option<Box<V2Arguments>>,
}

impl RpcError {
    /// An error with this URI and human-readable description.
    pub fn new(uri: impl Into<Cow<'static, str>>, description: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            description: description.into(),
            details: None,
            kill: false,
            v2: None,
        }
    }

    /// Sets the WAMP v2 `args` of the error (by default a v2 caller gets
    /// `[description, details]`).
    ///
    /// ```
    /// use serde_json::json;
    /// let e = tower_wamp::RpcError::new("com.example.error.busy", "busy").with_args(vec![json!(1)]);
    /// assert_eq!(e.args(), &[json!(1)]);
    /// ```
    #[must_use]
    pub fn with_args(mut self, args: Vec<Value>) -> Self {
        self.v2.get_or_insert_with(Box::default).0 = args;
        self
    }

    /// Sets the WAMP v2 `kwargs` of the error.
    #[must_use]
    pub fn with_kwargs(mut self, kwargs: serde_json::Map<String, Value>) -> Self {
        self.v2.get_or_insert_with(Box::default).1 = kwargs;
        self
    }

    /// The WAMP v2 `args`, if set.
    #[must_use]
    pub fn args(&self) -> &[Value] {
        self.v2.as_ref().map_or(&[], |v2| &v2.0)
    }

    /// The WAMP v2 `kwargs`, if set.
    #[must_use]
    pub fn kwargs(&self) -> &serde_json::Map<String, Value> {
        static EMPTY: std::sync::OnceLock<serde_json::Map<String, Value>> =
            std::sync::OnceLock::new();
        self.v2
            .as_ref()
            .map_or_else(|| EMPTY.get_or_init(serde_json::Map::new), |v2| &v2.1)
    }

    /// `http://api.wamp.ws/error#generic` / `generic error`.
    ///
    /// ```
    /// assert_eq!(tower_wamp::RpcError::generic().description(), "generic error");
    /// ```
    #[must_use]
    pub fn generic() -> Self {
        Self::new(error_uri::GENERIC, "generic error")
    }

    /// `http://api.wamp.ws/error#internal` / `internal error`, with `detail` as details.
    ///
    /// ```
    /// let e = tower_wamp::RpcError::internal("boom");
    /// assert_eq!(e.details(), Some(&serde_json::json!("boom")));
    /// ```
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(error_uri::INTERNAL, "internal error").with_details(Value::String(detail.into()))
    }

    /// `http://api.wamp.ws/error#notfound` / `not found error`.
    ///
    /// ```
    /// assert!(tower_wamp::RpcError::not_found().details().is_none());
    /// ```
    #[must_use]
    pub fn not_found() -> Self {
        Self::new(error_uri::NOT_FOUND, "not found error")
    }

    /// `http://api.wamp.ws/error#unauthorized` / `unauthorized`.
    ///
    /// ```
    /// assert_eq!(tower_wamp::RpcError::unauthorized().description(), "unauthorized");
    /// ```
    #[must_use]
    pub fn unauthorized() -> Self {
        Self::new(error_uri::UNAUTHORIZED, "unauthorized")
    }

    /// `http://api.wamp.ws/error#invalid-argument` with a description naming the problem.
    ///
    /// ```
    /// let e = tower_wamp::RpcError::invalid_argument("expected a number");
    /// assert_eq!(e.description(), "expected a number");
    /// ```
    pub fn invalid_argument(description: impl Into<String>) -> Self {
        Self::new(error_uri::INVALID_ARGUMENT, description)
    }

    /// Adds the optional fifth element.
    #[must_use]
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Asks the router to close the connection (code 1002) once this error is sent.
    ///
    /// ```
    /// assert!(tower_wamp::RpcError::generic().kill().kills());
    /// ```
    #[must_use]
    pub fn kill(mut self) -> Self {
        self.kill = true;
        self
    }

    /// The error URI.
    #[must_use]
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The description.
    #[must_use]
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The details, if any.
    #[must_use]
    pub fn details(&self) -> Option<&Value> {
        self.details.as_ref()
    }

    /// Whether the connection is closed after this error is sent.
    #[must_use]
    pub fn kills(&self) -> bool {
        self.kill
    }
}

impl fmt::Debug for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcError")
            .field("uri", &self.uri)
            .field("description", &self.description)
            .field("details", &self.details)
            .field("kill", &self.kill)
            .finish()
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.uri, self.description)
    }
}

impl std::error::Error for RpcError {}

impl From<std::convert::Infallible> for RpcError {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}
