//! Extractors: how an RPC handler's arguments are taken from the incoming call.
//!
//! A handler is an `async fn` whose arguments all implement [`FromCall`]. Built in:
//!
//! | extractor | what it gives |
//! |---|---|
//! | [`Args<T>`] | the positional arguments, deserialized into `T` (a tuple, a `Vec`, a struct from a sequence) |
//! | [`Session`] | the calling session: its id, a way to send it events |
//! | [`Caller`] | who calls: session id, authid, authrole, protocol |
//! | [`Procedure`] | the procedure URI, CURIE already resolved |
//! | [`CallId`] | the client's call id |
//! | [`State<T>`](State) | shared state, `T: FromRef<S>`: the same state type as your axum app |
//! | [`Extension<T>`](Extension) | a value an upstream tower layer put into the upgrade request's extensions |
//! | [`HeaderMap`](http::HeaderMap) | the upgrade request's headers |
//!
//! The parts a session keeps hold every header of the upgrade request except the WebSocket
//! handshake's own (`Connection`, `Upgrade`, `Sec-WebSocket-Key`, `Sec-WebSocket-Version`,
//! `Sec-WebSocket-Extensions`), which mean nothing once the connection is upgraded; every
//! session keeps its copy for its whole life. `Sec-WebSocket-Protocol` is kept.
//! | [`UpgradeRequest`] | the HTTP parts of the upgrade request |
//! | [`Wamp`] | the server handle |
//! | `Option<T>` | `T` if it extracts, else `None` |
//!
//! Write your own by implementing [`FromCall`]:
//!
//! ```
//! use tower_wamp::{Call, FromCall, RpcError};
//!
//! /// The caller's user name, set by an upstream login layer.
//! struct User(String);
//!
//! impl<S: Sync> FromCall<S> for User {
//!     type Rejection = RpcError;
//!     async fn from_call(call: &Call, _state: &S) -> Result<Self, RpcError> {
//!         call.parts()
//!             .headers
//!             .get("x-user")
//!             .and_then(|v| v.to_str().ok())
//!             .map(|u| User(u.to_owned()))
//!             .ok_or_else(RpcError::unauthorized)
//!     }
//! }
//! ```

use std::{fmt, future::Future, sync::Arc};

pub use axum::extract::{Extension, FromRef, State};
use http::{HeaderMap, request::Parts};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{RpcError, Session, Wamp, core::SessionId, hub::Hub};

/// An incoming CALL as handlers see it: the call id, the resolved procedure URI, the
/// arguments, the calling session and the HTTP parts of the upgrade request.
///
/// Build one yourself to test a handler without a socket:
///
/// ```
/// use tower_wamp::Call;
/// use serde_json::json;
///
/// let call = Call::new("http://example.com/api#add", vec![json!(1), json!(2)])
///     .with_call_id("c1")
///     .with_header("x-user", "ada");
/// assert_eq!(call.args(), &[json!(1), json!(2)]);
/// assert_eq!(call.parts().headers["x-user"], "ada");
/// ```
pub struct Call {
    pub(crate) call_id: CallIdText,
    pub(crate) procedure: String,
    pub(crate) args: Value,
    /// Keyword arguments (WAMP v2; always empty for v1 calls).
    pub(crate) kwargs: Value,
    pub(crate) session: Session,
    pub(crate) parts: Arc<Parts>,
    pub(crate) hub: Option<Arc<Hub>>,
    /// A v2 caller's `disclose_me`: name it to a client callee whatever the router's policy.
    pub(crate) disclose_me: bool,
    /// A v2 caller's progressive results and CANCEL.
    pub(crate) control: crate::dealer::CallControl,
}

/// A call's id as text: a v1 client's own, or a v2 request id, written out only when
/// something asks for it (most calls are answered without).
#[derive(Debug)]
pub(crate) enum CallIdText {
    Text(String),
    Request(u64, std::sync::OnceLock<String>),
}

impl CallIdText {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Self::Text(id) => id,
            Self::Request(request, text) => text.get_or_init(|| request.to_string()),
        }
    }
}

fn empty_parts() -> Arc<Parts> {
    Arc::new(http::Request::new(()).into_parts().0)
}

impl Call {
    /// A call of `procedure` with `args` from a detached session with a random id.
    pub fn new(procedure: impl Into<String>, args: Vec<Value>) -> Self {
        Self {
            call_id: CallIdText::Text("call".into()),
            procedure: procedure.into(),
            args: Value::Array(args),
            kwargs: Value::Object(serde_json::Map::new()),
            session: Session::detached(SessionId::random()),
            parts: empty_parts(),
            hub: None,
            disclose_me: false,
            control: crate::dealer::CallControl::default(),
        }
    }

    /// A call as a client made it, built in place (each builder step would move it again,
    /// and drop an empty map).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_wire(
        call_id: CallIdText,
        procedure: String,
        args: Vec<Value>,
        kwargs: serde_json::Map<String, Value>,
        session: Session,
        parts: Arc<Parts>,
        disclose_me: bool,
        control: crate::dealer::CallControl,
    ) -> Self {
        Self {
            call_id,
            procedure,
            args: Value::Array(args),
            kwargs: Value::Object(kwargs),
            session,
            parts,
            hub: None,
            disclose_me,
            control,
        }
    }

    /// Sets the keyword arguments (what a WAMP v2 caller sends as `kwargs`).
    ///
    /// ```
    /// use tower_wamp::Call;
    /// let call = Call::new("com.example.greet", vec![])
    ///     .with_kwargs(serde_json::json!({"name": "ada"}).as_object().unwrap().clone());
    /// assert_eq!(call.kwargs()["name"], "ada");
    /// ```
    #[must_use]
    pub fn with_kwargs(mut self, kwargs: serde_json::Map<String, Value>) -> Self {
        self.kwargs = Value::Object(kwargs);
        self
    }

    /// The keyword arguments (empty for WAMP v1 calls).
    #[must_use]
    pub fn kwargs(&self) -> &serde_json::Map<String, Value> {
        static EMPTY: std::sync::OnceLock<serde_json::Map<String, Value>> =
            std::sync::OnceLock::new();
        match &self.kwargs {
            Value::Object(map) => map,
            _ => EMPTY.get_or_init(serde_json::Map::new),
        }
    }

    /// Sets the call id.
    #[must_use]
    pub fn with_call_id(mut self, call_id: impl Into<String>) -> Self {
        self.call_id = CallIdText::Text(call_id.into());
        self
    }

    /// Sets the calling session.
    #[must_use]
    pub fn with_session(mut self, session: Session) -> Self {
        self.session = session;
        self
    }

    /// Sets the HTTP parts of the upgrade request.
    #[must_use]
    pub fn with_parts(mut self, parts: Parts) -> Self {
        self.parts = Arc::new(parts);
        self
    }

    /// Adds a header to the upgrade request's parts.
    ///
    /// # Panics
    /// If the name or value is not a valid HTTP header.
    #[must_use]
    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        parts_mut(&mut self.parts)
            .headers
            .insert(name, value.parse().expect("a valid header value"));
        self
    }

    /// Adds an extension to the upgrade request's parts, as an upstream layer would.
    #[must_use]
    pub fn with_extension<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        parts_mut(&mut self.parts).extensions.insert(value);
        self
    }

    /// The client's call id.
    #[must_use]
    pub fn call_id(&self) -> &str {
        self.call_id.as_str()
    }

    /// The procedure URI (CURIEs resolved).
    #[must_use]
    pub fn procedure(&self) -> &str {
        &self.procedure
    }

    /// The positional arguments.
    #[must_use]
    pub fn args(&self) -> &[Value] {
        match &self.args {
            Value::Array(a) => a,
            _ => &[],
        }
    }

    /// Replaces the arguments (for a `before_call` hook).
    pub fn set_args(&mut self, args: Vec<Value>) {
        self.args = Value::Array(args);
    }

    /// The calling session.
    #[must_use]
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The HTTP parts of the upgrade request (without the WebSocket handshake's own
    /// headers: see the [module docs](self)).
    #[must_use]
    pub fn parts(&self) -> &Parts {
        &self.parts
    }
}

/// `Arc::make_mut` for `Parts`, which is not `Clone`.
fn parts_mut(parts: &mut Arc<Parts>) -> &mut Parts {
    if Arc::get_mut(parts).is_none() {
        let mut fresh = http::Request::new(()).into_parts().0;
        fresh.method = parts.method.clone();
        fresh.uri = parts.uri.clone();
        fresh.version = parts.version;
        fresh.headers = parts.headers.clone();
        fresh.extensions = parts.extensions.clone();
        *parts = Arc::new(fresh);
    }
    Arc::get_mut(parts).expect("just made unique")
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("call_id", &self.call_id.as_str())
            .field("procedure", &self.procedure)
            .field("args", &self.args)
            .field("session", &self.session.id())
            .finish_non_exhaustive()
    }
}

/// Types that can be taken from an incoming call: the arguments of an RPC handler.
///
/// `S` is the router's state type. A failed extraction answers the call with the
/// rejection as a CALLERROR; the handler does not run.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used as an argument of a WAMP RPC handler",
    label = "not a WAMP call extractor",
    note = "every argument must implement `FromCall<S>`: `Args<T>`, `Kwargs<T>`, `Session`, `Caller`, `Procedure`, `CallId`, `Progress`, `State<T>`, `Extension<T>`, `HeaderMap`, `UpgradeRequest`, `Wamp`, `Option<T>`, or your own type"
)]
pub trait FromCall<S>: Sized {
    /// The error sent back when extraction fails.
    type Rejection: Into<RpcError>;

    /// Extracts `Self` from the call.
    fn from_call(
        call: &Call,
        state: &S,
    ) -> impl Future<Output = Result<Self, Self::Rejection>> + Send;

    /// Extracts `Self` from the call when it is the handler's last argument: the call is
    /// its own then (as axum's `FromRequest` takes the body), so it may take parts of it
    /// rather than copy them ([`Args`] and [`Kwargs`] deserialize the arguments by value).
    /// By default, [`from_call`](Self::from_call).
    ///
    /// ```
    /// use tower_wamp::{Call, FromCall, RpcError};
    ///
    /// struct First(serde_json::Value);
    ///
    /// impl<S: Sync> FromCall<S> for First {
    ///     type Rejection = RpcError;
    ///     async fn from_call(call: &Call, _: &S) -> Result<Self, RpcError> {
    ///         Ok(First(call.args().first().cloned().unwrap_or_default()))
    ///     }
    /// }
    /// # let _ = First(serde_json::Value::Null);
    /// ```
    fn from_call_owned(
        call: Call,
        state: &S,
    ) -> impl Future<Output = Result<Self, Self::Rejection>> + Send
    where
        S: Sync,
    {
        async move { Self::from_call(&call, state).await }
    }
}

/// The positional arguments of the call, deserialized into `T`.
///
/// A tuple takes exactly that many arguments; `Vec<T>` takes any number. Arguments that do
/// not deserialize get a CALLERROR `http://api.wamp.ws/error#invalid-argument` whose
/// description names the problem.
///
/// ```
/// use tower_wamp::{Args, Call, WampRouter};
/// use tower::ServiceExt;
/// use serde_json::json;
///
/// async fn add(Args((a, b)): Args<(i64, i64)>) -> i64 { a + b }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let router = WampRouter::new().rpc("http://example.com/add", add);
/// let reply = router.oneshot(Call::new("http://example.com/add", vec![json!(2), json!(3)])).await.unwrap();
/// assert_eq!(reply.result(), Some(&json!(5)));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Args<T>(pub T);

impl<S: Sync, T: DeserializeOwned + Send> FromCall<S> for Args<T> {
    type Rejection = RpcError;

    async fn from_call(call: &Call, _state: &S) -> Result<Self, RpcError> {
        T::deserialize(&call.args)
            .map(Args)
            .map_err(|e| RpcError::invalid_argument(format!("invalid arguments: {e}")))
    }

    async fn from_call_owned(call: Call, _state: &S) -> Result<Self, RpcError> {
        // The arguments moved, not copied: their strings become `T`'s.
        T::deserialize(call.args)
            .map(Args)
            .map_err(|e| RpcError::invalid_argument(format!("invalid arguments: {e}")))
    }
}

/// The call's keyword arguments (WAMP v2 `kwargs`), deserialized into `T`; a WAMP v1 call
/// has none, so `T` sees an empty object. Deserialization errors are answered with
/// `http://api.wamp.ws/error#invalid-argument` (`wamp.error.invalid_argument` in v2).
///
/// ```
/// use tower_wamp::{Call, Kwargs, WampRouter};
/// use tower::ServiceExt;
///
/// #[derive(serde::Deserialize)]
/// struct Greeting { name: String }
///
/// async fn greet(Kwargs(g): Kwargs<Greeting>) -> String { format!("hello {}", g.name) }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let router = WampRouter::new().rpc("com.example.greet", greet);
/// let call = Call::new("com.example.greet", vec![])
///     .with_kwargs(serde_json::json!({"name": "ada"}).as_object().unwrap().clone());
/// let reply = router.oneshot(call).await.unwrap();
/// assert_eq!(reply.result(), Some(&serde_json::json!("hello ada")));
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Kwargs<T>(pub T);

impl<S: Sync, T: DeserializeOwned + Send> FromCall<S> for Kwargs<T> {
    type Rejection = RpcError;

    async fn from_call(call: &Call, _state: &S) -> Result<Self, RpcError> {
        T::deserialize(&call.kwargs)
            .map(Kwargs)
            .map_err(|e| RpcError::invalid_argument(format!("invalid keyword arguments: {e}")))
    }

    async fn from_call_owned(call: Call, _state: &S) -> Result<Self, RpcError> {
        T::deserialize(call.kwargs)
            .map(Kwargs)
            .map_err(|e| RpcError::invalid_argument(format!("invalid keyword arguments: {e}")))
    }
}

impl<S: Sync> FromCall<S> for Session {
    type Rejection = std::convert::Infallible;

    async fn from_call(call: &Call, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(call.session.clone())
    }
}

/// Who makes the call: the session id, its authid and authrole (see [`Session::authid`]
/// and [`Session::authrole`]: an authid only for a session authenticated as someone, in
/// either version) and the protocol it speaks. A router's handler always sees its caller (WAMP v2's caller disclosure is for
/// callees that are clients).
///
/// ```
/// use tower_wamp::{Call, Caller, WampRouter};
///
/// async fn whoami(caller: Caller) -> String {
///     format!("{} as {:?}", caller.session, caller.authrole)
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use tower::ServiceExt as _;
/// let router = WampRouter::new().rpc("com.example.whoami", whoami);
/// let reply = router.oneshot(Call::new("com.example.whoami", vec![])).await.unwrap();
/// assert!(reply.result().unwrap().as_str().unwrap().ends_with("as None"));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Caller {
    /// The caller's session id.
    pub session: SessionId,
    /// The auth key it authenticated with; `None` for anonymous sessions.
    pub authid: Option<String>,
    /// `user` or `anonymous` (`None` for a v1 session without authentication).
    pub authrole: Option<String>,
    /// The protocol it speaks (`None` for a [`Call`] built in a test).
    pub protocol: Option<crate::Protocol>,
}

impl<S: Sync> FromCall<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_call(call: &Call, _state: &S) -> Result<Self, Self::Rejection> {
        let s = &call.session;
        Ok(Self {
            session: s.id().clone(),
            authid: s.authid(),
            authrole: s.authrole(),
            protocol: s.protocol(),
        })
    }
}

/// Sends progressive results to a WAMP v2 caller that asked for them
/// (`CALL.Options.receive_progress`), each as a RESULT with `progress: true`, before the
/// handler's return value ends the call.
///
/// For a WAMP v1 caller, or a v2 caller that did not ask, [`send`](Self::send) does nothing
/// and returns `false`: the handler's return value is the answer either way. Once the call
/// has ended (answered, canceled, timed out) sends do nothing, so a `Progress` moved into
/// another task cannot speak after the final answer.
///
/// ```
/// use tower_wamp::{Call, Progress, WampRouter};
/// use tower::ServiceExt;
/// use serde_json::json;
///
/// async fn countdown(progress: Progress) -> &'static str {
///     for n in (1..=3).rev() {
///         progress.send(&n);
///     }
///     "liftoff"
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let router = WampRouter::new().rpc("com.example.countdown", countdown);
/// // A call built in a test has no caller to stream to: only the final result.
/// let reply = router.oneshot(Call::new("com.example.countdown", vec![])).await.unwrap();
/// assert_eq!(reply.result(), Some(&json!("liftoff")));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Progress(Option<crate::dealer::ProgressSink>);

impl Progress {
    /// Whether the caller asked for progressive results.
    #[must_use]
    pub fn wanted(&self) -> bool {
        self.0.is_some()
    }

    /// Sends `value` as a progressive result (`args = [value]`); `false` if the caller did
    /// not ask for them, the call has ended, `value` does not serialize, the caller is gone,
    /// or its outbound queue is three quarters full (progressive results do not push its
    /// events out: send less often, or end the call).
    pub fn send(&self, value: &impl serde::Serialize) -> bool {
        match (&self.0, serde_json::to_value(value)) {
            (Some(sink), Ok(value)) => {
                sink.send(crate::wire::Payload::from_event(value)) == crate::dealer::Sent::Queued
            }
            _ => false,
        }
    }

    /// Sends a progressive result with positional and keyword arguments as they are.
    pub fn send_arguments(&self, args: Vec<Value>, kwargs: serde_json::Map<String, Value>) -> bool {
        match &self.0 {
            Some(sink) => {
                sink.send(crate::wire::Payload { args, kwargs }) == crate::dealer::Sent::Queued
            }
            None => false,
        }
    }
}

impl<S: Sync> FromCall<S> for Progress {
    type Rejection = std::convert::Infallible;

    async fn from_call(call: &Call, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(call.control.progress.clone()))
    }
}

/// The procedure URI of the call, with CURIEs resolved.
///
/// ```
/// use tower_wamp::Procedure;
/// async fn whoami(Procedure(uri): Procedure) -> String { uri }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Procedure(pub String);

impl<S: Sync> FromCall<S> for Procedure {
    type Rejection = std::convert::Infallible;

    async fn from_call(call: &Call, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(call.procedure.clone()))
    }
}

/// The client's id for this call.
///
/// ```
/// use tower_wamp::CallId;
/// async fn echo_id(CallId(id): CallId) -> String { id }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallId(pub String);

impl<S: Sync> FromCall<S> for CallId {
    type Rejection = std::convert::Infallible;

    async fn from_call(call: &Call, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(call.call_id.as_str().to_owned()))
    }
}

impl<S: Sync, T: FromRef<S> + Send> FromCall<S> for State<T> {
    type Rejection = std::convert::Infallible;

    async fn from_call(_call: &Call, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(T::from_ref(state)))
    }
}

impl<S: Sync, T: Clone + Send + Sync + 'static> FromCall<S> for Extension<T> {
    type Rejection = RpcError;

    async fn from_call(call: &Call, _state: &S) -> Result<Self, RpcError> {
        call.parts
            .extensions
            .get::<T>()
            .cloned()
            .map(Extension)
            .ok_or_else(|| {
                tracing::error!(
                    extension = std::any::type_name::<T>(),
                    "missing request extension: is the layer that adds it in front of the WAMP layer?"
                );
                RpcError::internal("missing request extension")
            })
    }
}

impl<S: Sync> FromCall<S> for HeaderMap {
    type Rejection = std::convert::Infallible;

    async fn from_call(call: &Call, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(call.parts.headers.clone())
    }
}

/// The HTTP parts (method, URI, headers, extensions) of the WebSocket upgrade request,
/// without the WebSocket handshake's own headers (see the [module docs](self)).
///
/// ```
/// use tower_wamp::UpgradeRequest;
/// async fn path(UpgradeRequest(parts): UpgradeRequest) -> String { parts.uri.path().to_owned() }
/// ```
#[derive(Debug, Clone)]
pub struct UpgradeRequest(pub Arc<Parts>);

impl<S: Sync> FromCall<S> for UpgradeRequest {
    type Rejection = std::convert::Infallible;

    async fn from_call(call: &Call, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(call.parts.clone()))
    }
}

impl<S: Sync> FromCall<S> for Wamp {
    type Rejection = std::convert::Infallible;

    async fn from_call(call: &Call, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            hub: call.hub.clone().unwrap_or_default(),
        })
    }
}

impl<S: Sync, T: FromCall<S> + Send> FromCall<S> for Option<T> {
    type Rejection = std::convert::Infallible;

    async fn from_call(call: &Call, state: &S) -> Result<Self, Self::Rejection> {
        Ok(T::from_call(call, state).await.ok())
    }
}
