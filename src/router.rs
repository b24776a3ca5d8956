//! The handler router: procedures, topic rules and hooks.

use std::{
    any::Any,
    convert::Infallible,
    fmt,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::FutureExt as _;
use serde_json::Value;

use crate::{
    Call, RpcError, Session, Wamp,
    auth::{AUTH, AUTHREQ, Granted, WampCra},
    clip::Clip,
    core::random_id,
    core::{
        Exclude, SessionId,
        auth::Action,
        broker::{Budget, Subscribed},
        error_uri,
        matching::MatchPolicy,
        pattern::{Pattern, PatternTable},
    },
    handler::{BoxFuture, RpcHandler},
    hub::Outgoing,
    session::CloseReason,
    wire::Payload,
};

pub(crate) type ErasedRpc<S> =
    Arc<dyn Fn(Call, S) -> BoxFuture<Result<Value, RpcError>> + Send + Sync>;
type SubscribePredicate = Arc<dyn Fn(Session, String) -> BoxFuture<bool> + Send + Sync>;
type BrokerFn = Arc<dyn Fn(Session, Publication) -> BoxFuture<Option<Publication>> + Send + Sync>;
type BeforeCall = Arc<dyn Fn(Call) -> BoxFuture<Result<Call, RpcError>> + Send + Sync>;
type SessionHook = Arc<dyn Fn(&Session) + Send + Sync>;
type CloseHook = Arc<dyn Fn(&Session, &CloseReason) + Send + Sync>;
type TopicHook = Arc<dyn Fn(&Session, &str) + Send + Sync>;
type PublishHook = Arc<dyn Fn(&Session, &Publication) + Send + Sync>;
type SuccessHook = Arc<dyn Fn(&CallInfo, Value) -> Option<Value> + Send + Sync>;
type ErrorHook = Arc<dyn Fn(&CallInfo, RpcError) -> Option<RpcError> + Send + Sync>;

/// A publication on its way to subscribers: what a broker function sees and may rewrite.
///
/// `exclude` is already normalised: `excludeMe = true` (or the router's default for the
/// three-element PUBLISH) puts the publisher in it. Recipients are the subscribers of
/// `topic` that are in `eligible` (when it is `Some`) and not in `exclude`.
///
/// ```
/// use tower_wamp::Publication;
/// use serde_json::json;
///
/// let p = Publication::new("http://example.com/chat", json!("hi"));
/// assert!(p.exclude.is_empty() && p.eligible.is_none());
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Publication {
    /// The full topic URI; a broker may rewrite it.
    pub topic: String,
    /// The event payload.
    pub event: Value,
    /// Sessions that must not receive it.
    pub exclude: Vec<SessionId>,
    /// When `Some`, only these sessions may receive it.
    pub eligible: Option<Vec<SessionId>>,
    /// Who may receive it by authid and authrole (what a v2 publisher asked for; a broker
    /// may change it).
    pub auth_lists: crate::core::AuthLists,
}

impl Publication {
    /// A publication to every subscriber.
    pub fn new(topic: impl Into<String>, event: Value) -> Self {
        Self {
            topic: topic.into(),
            event,
            exclude: Vec::new(),
            eligible: None,
            auth_lists: crate::core::AuthLists::default(),
        }
    }
}

/// Who may subscribe to a topic.
#[derive(Clone)]
#[non_exhaustive]
pub enum SubscribeRule {
    /// Anyone.
    Allow,
    /// No one (SUBSCRIBE is ignored: WAMP v1 has no error for it).
    Deny,
    /// Those for whom the async predicate `(session, topic)` answers `true`.
    Predicate(SubscribePredicateFn),
}

/// Who may publish to a topic.
#[derive(Clone)]
#[non_exhaustive]
pub enum PublishRule {
    /// Anyone; the event passes as it is.
    Allow,
    /// No one (PUBLISH is dropped).
    Deny,
    /// A broker function that may rewrite the publication, or deny it with `None`.
    Broker(BrokerFunction),
}

/// An async subscribe predicate (see [`Topic::subscribe_if`]).
#[derive(Clone)]
pub struct SubscribePredicateFn(SubscribePredicate);

/// An async broker function (see [`Topic::broker`]).
#[derive(Clone)]
pub struct BrokerFunction(BrokerFn);

impl fmt::Debug for SubscribeRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "Allow",
            Self::Deny => "Deny",
            Self::Predicate(_) => "Predicate(..)",
        })
    }
}

impl fmt::Debug for PublishRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "Allow",
            Self::Deny => "Deny",
            Self::Broker(_) => "Broker(..)",
        })
    }
}

impl fmt::Debug for SubscribePredicateFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubscribePredicateFn")
    }
}

impl fmt::Debug for BrokerFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BrokerFunction")
    }
}

/// The rules of one topic pattern: who may subscribe and who may publish.
///
/// ```
/// use tower_wamp::{Publication, Session, Topic, WampRouter};
///
/// let router: WampRouter = WampRouter::new()
///     // Anyone may subscribe and publish.
///     .topic("http://example.com/event#open", Topic::new())
///     // Every topic under this prefix, subscribe only.
///     .topic("http://example.com/event#news.*", Topic::subscribe_only())
///     // Subscribers are vetted; events are rewritten by a broker function.
///     .topic(
///         "http://example.com/event#chat",
///         Topic::new()
///             .subscribe_if(|session: Session, _topic: String| async move { !session.id().as_str().is_empty() })
///             .broker(|_session: Session, mut p: Publication| async move {
///                 p.event = serde_json::json!({ "said": p.event });
///                 Some(p)
///             }),
///     );
/// ```
#[derive(Debug, Clone)]
pub struct Topic {
    subscribe: SubscribeRule,
    publish: PublishRule,
}

impl Default for Topic {
    fn default() -> Self {
        Self::new()
    }
}

impl Topic {
    /// Anyone may subscribe and publish.
    #[must_use]
    pub fn new() -> Self {
        Self {
            subscribe: SubscribeRule::Allow,
            publish: PublishRule::Allow,
        }
    }

    /// Subscribing allowed, publishing denied.
    #[must_use]
    pub fn subscribe_only() -> Self {
        Self::new().deny_publish()
    }

    /// Publishing allowed, subscribing denied.
    #[must_use]
    pub fn publish_only() -> Self {
        Self::new().deny_subscribe()
    }

    /// Denies subscribing.
    #[must_use]
    pub fn deny_subscribe(mut self) -> Self {
        self.subscribe = SubscribeRule::Deny;
        self
    }

    /// Denies publishing.
    #[must_use]
    pub fn deny_publish(mut self) -> Self {
        self.publish = PublishRule::Deny;
        self
    }

    /// Sets the subscribe rule.
    #[must_use]
    pub fn with_subscribe_rule(mut self, rule: SubscribeRule) -> Self {
        self.subscribe = rule;
        self
    }

    /// Sets the publish rule.
    #[must_use]
    pub fn with_publish_rule(mut self, rule: PublishRule) -> Self {
        self.publish = rule;
        self
    }

    /// Allows a subscription when the async predicate `(session, topic)` returns `true`.
    /// A predicate that panics denies.
    #[must_use]
    pub fn subscribe_if<F, Fut>(mut self, predicate: F) -> Self
    where
        F: Fn(Session, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.subscribe = SubscribeRule::Predicate(SubscribePredicateFn(Arc::new(move |s, t| {
            Box::pin(predicate(s, t))
        })));
        self
    }

    /// Routes publications through an async broker function `(publisher, publication)`
    /// that returns the publication to deliver (possibly rewritten: event, topic, exclude,
    /// eligible) or `None` to deny it. A broker that panics denies.
    #[must_use]
    pub fn broker<F, Fut>(mut self, broker: F) -> Self
    where
        F: Fn(Session, Publication) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<Publication>> + Send + 'static,
    {
        self.publish =
            PublishRule::Broker(BrokerFunction(Arc::new(move |s, p| Box::pin(broker(s, p)))));
        self
    }

    /// The subscribe rule.
    #[must_use]
    pub fn subscribe_rule(&self) -> &SubscribeRule {
        &self.subscribe
    }

    /// The publish rule.
    #[must_use]
    pub fn publish_rule(&self) -> &PublishRule {
        &self.publish
    }
}

/// What the after-call hooks see of a call.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CallInfo {
    /// The calling session.
    pub session_id: SessionId,
    /// The procedure URI (resolved).
    pub procedure: String,
    /// The client's call id.
    pub call_id: String,
}

/// The router's answer to a call.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CallReply {
    /// A CALLRESULT with this result.
    Result(Value),
    /// A CALLERROR.
    Error(RpcError),
    /// An after-hook suppressed the reply: nothing is sent.
    Suppressed,
    /// The result of a procedure that a WAMP v2 client registered: its positional and
    /// keyword arguments (a v1 caller gets them as one value, see the README's mapping).
    Arguments {
        /// Positional results.
        args: Vec<Value>,
        /// Keyword results.
        kwargs: serde_json::Map<String, Value>,
    },
}

impl CallReply {
    /// The result, if this is a CALLRESULT.
    #[must_use]
    pub fn result(&self) -> Option<&Value> {
        match self {
            Self::Result(v) => Some(v),
            _ => None,
        }
    }

    /// The error, if this is a CALLERROR.
    #[must_use]
    pub fn error(&self) -> Option<&RpcError> {
        match self {
            Self::Error(e) => Some(e),
            _ => None,
        }
    }
}

#[derive(Clone, Default)]
struct Hooks {
    on_open: Option<SessionHook>,
    on_close: Option<CloseHook>,
    on_unsubscribe: Option<TopicHook>,
    after_subscribe: Option<TopicHook>,
    after_publish: Option<PublishHook>,
    before_call: Option<BeforeCall>,
    after_call_success: Option<SuccessHook>,
    after_call_error: Option<ErrorHook>,
}

pub(crate) struct Inner<S> {
    pub(crate) procedures: crate::core::hash::FastMap<String, ErasedRpc<S>>,
    topics: PatternTable<Topic>,
    /// The topic patterns as written, for the permission summary of a successful auth.
    pub(crate) topic_patterns: Vec<(String, Topic)>,
    hooks: Hooks,
    publisher_receives_own_events: bool,
    /// Realm policy: name every publisher to v2 subscribers, every caller to client callees.
    disclose_publishers: bool,
    disclose_callers: bool,
    pub(crate) auth: Option<Arc<WampCra>>,
    call_timeout: Option<Duration>,
    procedure_timeouts: crate::core::hash::FastMap<String, Duration>,
    /// The WAMP v2 realms served (empty: any realm name opens the one realm).
    realms: Vec<String>,
    /// Other names of procedures and topics: alias → the URI they are registered under.
    aliases: crate::core::hash::FastMap<String, String>,
    /// The WAMP v2 meta API is on.
    pub(crate) meta_api: bool,
    /// Authorization as data: permissions and disclosure by authrole.
    pub(crate) roles: Option<Arc<crate::core::roles::RoleTable>>,
    /// Server-side subscribers: handlers run for the events on a topic or pattern.
    subscribers: Vec<(MatchPolicy, String, ErasedRpc<S>)>,
    wamp: Wamp,
}

impl<S> Clone for Inner<S> {
    fn clone(&self) -> Self {
        Self {
            procedures: self.procedures.clone(),
            topics: self.topics.clone(),
            topic_patterns: self.topic_patterns.clone(),
            hooks: self.hooks.clone(),
            publisher_receives_own_events: self.publisher_receives_own_events,
            disclose_publishers: self.disclose_publishers,
            disclose_callers: self.disclose_callers,
            auth: self.auth.clone(),
            call_timeout: self.call_timeout,
            procedure_timeouts: self.procedure_timeouts.clone(),
            realms: self.realms.clone(),
            aliases: self.aliases.clone(),
            meta_api: self.meta_api,
            roles: self.roles.clone(),
            subscribers: self.subscribers.clone(),
            wamp: self.wamp.clone(),
        }
    }
}

/// Something that registers itself on a router: what `#[rpc]` and `#[topic]` generate.
///
/// ```
/// use tower_wamp::{Route, WampRouter};
///
/// /// A bundle of procedures, registered with one call.
/// struct Maths;
///
/// impl<S: Clone + Send + Sync + 'static> Route<S> for Maths {
///     fn register(self, router: WampRouter<S>) -> WampRouter<S> {
///         router.rpc("urn:maths:one", || async { 1 })
///     }
/// }
///
/// let router: WampRouter = WampRouter::new().route(Maths);
/// ```
pub trait Route<S> {
    /// Adds this route to the router.
    fn register(self, router: WampRouter<S>) -> WampRouter<S>;
}

/// The WAMP handler router: procedures, topic rules and hooks, plus the shared state
/// handlers extract with [`State`](crate::State).
///
/// Build it with builder methods, hand it to [`WampLayer::new`](crate::WampLayer::new),
/// and keep [`handle`](Self::handle) to publish from elsewhere. It is itself a
/// `tower::Service<Call>`, so handlers can be tested without a socket:
///
/// ```
/// use tower_wamp::{Args, Call, RpcError, WampRouter};
/// use tower::ServiceExt;
/// use serde_json::json;
///
/// async fn div(Args((a, b)): Args<(f64, f64)>) -> Result<f64, RpcError> {
///     if b == 0.0 { Err(RpcError::new("http://example.com/error#div0", "division by zero")) } else { Ok(a / b) }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let router = WampRouter::new().rpc("http://example.com/api#div", div);
/// let ok = router.clone().oneshot(Call::new("http://example.com/api#div", vec![json!(6), json!(3)])).await.unwrap();
/// assert_eq!(ok.result(), Some(&json!(2.0)));
/// let err = router.oneshot(Call::new("http://example.com/api#div", vec![json!(1), json!(0)])).await.unwrap();
/// assert_eq!(err.error().unwrap().description(), "division by zero");
/// # }
/// ```
pub struct WampRouter<S = ()> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for WampRouter<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S> fmt::Debug for WampRouter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut procedures: Vec<&String> = self.inner.procedures.keys().collect();
        procedures.sort();
        f.debug_struct("WampRouter")
            .field("procedures", &procedures)
            .field("topics", &self.inner.topics.values().count())
            .finish_non_exhaustive()
    }
}

impl<S: Clone + Send + Sync + 'static> Default for WampRouter<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone + Send + Sync + 'static> WampRouter<S> {
    /// An empty router.
    #[must_use]
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                procedures: crate::core::hash::FastMap::default(),
                topics: PatternTable::default(),
                topic_patterns: Vec::new(),
                hooks: Hooks::default(),
                publisher_receives_own_events: true,
                disclose_publishers: false,
                disclose_callers: false,
                auth: None,
                call_timeout: None,
                procedure_timeouts: crate::core::hash::FastMap::default(),
                realms: Vec::new(),
                aliases: crate::core::hash::FastMap::default(),
                meta_api: false,
                roles: None,
                subscribers: Vec::new(),
                wamp: Wamp::default(),
            }),
        }
    }

    fn inner_mut(&mut self) -> &mut Inner<S> {
        Arc::make_mut(&mut self.inner)
    }

    /// Registers a procedure under an exact URI (RPC lookup never matches prefixes).
    ///
    /// # Panics
    /// If `uri` is empty or contains whitespace, or is already registered.
    #[must_use]
    pub fn rpc<H, T>(mut self, uri: &str, handler: H) -> Self
    where
        H: RpcHandler<T, S>,
        T: 'static,
    {
        assert!(
            !uri.is_empty() && !uri.chars().any(char::is_whitespace),
            "procedure URI {uri:?} must be non-empty and contain no whitespace"
        );
        let erased: ErasedRpc<S> = Arc::new(move |call, state| handler.clone().call(call, state));
        let previous = self.inner_mut().procedures.insert(uri.to_owned(), erased);
        assert!(previous.is_none(), "procedure {uri:?} is registered twice");
        self
    }

    /// Runs `handler` for every event published to `topic` (the v2 counterpart of
    /// `#[topic]` subscribers): an `async fn` with the extractors an RPC handler has, where
    /// [`Args`](crate::Args) and [`Kwargs`](crate::Kwargs) are the event's arguments,
    /// [`Procedure`](crate::Procedure) is the topic and [`Caller`](crate::Caller) the
    /// publisher (a detached session for the server handle's publications). What it returns
    /// is ignored; a panic is caught and logged.
    ///
    /// Each handler gets its events in publication order, one at a time, from a queue of
    /// 1024: a handler that falls further behind loses events (logged and counted in
    /// `events_dropped`), never holding up the publishers or other subscribers. It receives
    /// every event on its topics, whatever the publication's exclude and eligible lists
    /// (those name sessions; it is the application itself).
    ///
    /// ```
    /// use tower_wamp::{Args, Procedure, WampRouter};
    ///
    /// async fn log_chat(Procedure(topic): Procedure, Args(args): Args<Vec<serde_json::Value>>) {
    ///     tracing::info!(%topic, ?args, "chat");
    /// }
    ///
    /// let router: WampRouter = WampRouter::new().on_event("com.example.chat", log_chat);
    /// ```
    #[must_use]
    pub fn on_event<H, T>(self, topic: &str, handler: H) -> Self
    where
        H: RpcHandler<T, S>,
        T: 'static,
    {
        self.on_events(MatchPolicy::Exact, topic, handler)
    }

    /// [`on_event`](Self::on_event) for every topic that `pattern` matches under `policy`
    /// (WAMP v2's prefix and wildcard matching).
    ///
    /// ```
    /// use tower_wamp::{Procedure, WampRouter, core::matching::MatchPolicy};
    /// let router: WampRouter = WampRouter::new().on_events(
    ///     MatchPolicy::Prefix,
    ///     "com.example.",
    ///     |Procedure(topic): Procedure| async move { tracing::debug!(%topic, "event") },
    /// );
    /// ```
    ///
    /// # Panics
    /// If `pattern` is not valid under `policy`.
    #[must_use]
    pub fn on_events<H, T>(mut self, policy: MatchPolicy, pattern: &str, handler: H) -> Self
    where
        H: RpcHandler<T, S>,
        T: 'static,
    {
        assert!(
            !pattern.is_empty()
                && !pattern.chars().any(char::is_whitespace)
                && (policy == MatchPolicy::Exact || policy.valid(pattern)),
            "{pattern:?} is not a valid {} pattern",
            policy.as_str()
        );
        let erased: ErasedRpc<S> = Arc::new(move |call, state| handler.clone().call(call, state));
        self.inner_mut()
            .subscribers
            .push((policy, pattern.to_owned(), erased));
        self
    }

    /// Serves WAMP v2 clients that join the realm `name` (call it once per name; every name
    /// opens the same procedures, topics and sessions). Without it, any realm name is
    /// accepted. A HELLO for another realm gets ABORT `wamp.error.no_such_realm`. WAMP v1
    /// has no realms.
    ///
    /// ```
    /// use tower_wamp::WampRouter;
    /// let router: WampRouter = WampRouter::new().realm("realm1");
    /// ```
    ///
    /// # Panics
    /// If `name` is not a valid WAMP v2 URI.
    #[must_use]
    pub fn realm(mut self, name: &str) -> Self {
        assert!(
            crate::core::session::v2::valid_uri(name),
            "realm {name:?} is not a valid WAMP v2 URI"
        );
        self.inner_mut().realms.push(name.to_owned());
        self
    }

    /// Another name for a procedure or topic URI: calls, subscriptions and publications to
    /// `alias` are those of `uri`, with its handler, rules, hooks and permissions (checked
    /// against `uri`). WAMP v1 URIs such as `http://example.com/api#add` are not valid WAMP
    /// v2 URIs (`#` is forbidden there): give v2 clients a dotted name for them.
    ///
    /// ```
    /// use tower_wamp::{Args, Topic, WampRouter};
    /// let router: WampRouter = WampRouter::new()
    ///     .rpc("http://example.com/api#add", |Args(n): Args<Vec<i64>>| async move { n.iter().sum::<i64>() })
    ///     .alias("com.example.add", "http://example.com/api#add")
    ///     .topic("http://example.com/event#chat", Topic::new())
    ///     .alias("com.example.chat", "http://example.com/event#chat");
    /// ```
    ///
    /// # Panics
    /// If `alias` is already an alias, is itself registered as a procedure, or names
    /// another alias (or `uri` is an alias: aliases do not chain).
    #[must_use]
    pub fn alias(mut self, alias: &str, uri: &str) -> Self {
        assert!(
            !self.inner.procedures.contains_key(alias),
            "{alias:?} is a procedure of its own"
        );
        assert!(
            !self.inner.aliases.contains_key(uri)
                && !self.inner.aliases.values().any(|target| target == alias),
            "aliases do not chain: {alias:?} -> {uri:?}"
        );
        let previous = self
            .inner_mut()
            .aliases
            .insert(alias.to_owned(), uri.to_owned());
        assert!(previous.is_none(), "alias {alias:?} is given twice");
        self
    }

    /// Registers a [`Route`]: a handler declared with `#[rpc]` or `#[topic]`, or your own
    /// bundle.
    #[must_use]
    pub fn route(self, route: impl Route<S>) -> Self {
        route.register(self)
    }

    /// Serves the realm together with other routers (nodes) through `backplane`: a
    /// publication on any node, from a v1 or v2 client or the server handle, reaches every
    /// matching subscriber on every node once, with its exclude, eligible and
    /// authid/authrole lists applied to the sessions of every node, in publication order
    /// per publisher. See [`backplane`](crate::backplane) (Redis: cargo feature `redis`).
    /// RPC, presence and the meta API stay per node for now.
    ///
    /// ```no_run
    /// # #[cfg(feature = "redis")] {
    /// use tower_wamp::{WampRouter, backplane::Redis};
    /// let router: WampRouter = WampRouter::new().backplane(Redis::new("redis://127.0.0.1:6379"));
    /// # }
    /// ```
    #[must_use]
    pub fn backplane(self, backplane: impl Into<crate::backplane::Backplane>) -> Self {
        self.inner.wamp.hub.set_backplane(backplane.into());
        self
    }

    /// Authorizes by role, as data (a role table like Crossbar's): every session is
    /// permitted what its authrole's rules permit (an exact URI, else the longest matching
    /// prefix, else the best wildcard decides; a URI no rule matches is refused), and a
    /// rule may disclose callers to callees and publishers to subscribers. A session's
    /// authrole is `anonymous` without authentication (or when it signed in anonymously),
    /// the table's role for its authid when it authenticated (`principals`), else `user`.
    /// The table takes the place of the permissions function of
    /// [`WampCra`](crate::auth::WampCra); sessions still authenticate through it, and
    /// nothing is permitted before they did. Topic and procedure rules of the router still
    /// apply.
    ///
    /// ```
    /// use tower_wamp::{WampRouter, core::{auth::Action, roles::{RoleTable, Rule}}};
    /// let roles = RoleTable::new()
    ///     .permit("anonymous", Rule::prefix("com.example.").allow(Action::Call).allow(Action::Subscribe))
    ///     .permit("backend", Rule::prefix("").allow_all().disclose_caller())
    ///     .assign("svc", "backend");
    /// let router: WampRouter = WampRouter::new().roles(roles);
    /// ```
    #[must_use]
    pub fn roles(mut self, table: crate::core::roles::RoleTable) -> Self {
        self.inner_mut().roles = Some(Arc::new(table));
        self
    }

    /// Turns the WAMP v2 meta API on (off by default): the router answers
    /// `wamp.session.count`, `list`, `get`, `kill`, `kill_by_authid`, `kill_by_authrole`,
    /// `kill_all`, `wamp.subscription.list`, `lookup`, `match`, `get`, `list_subscribers`,
    /// `count_subscribers` and the `wamp.registration.*` counterparts, and publishes
    /// `wamp.session.on_join`/`on_leave` and the subscription and registration meta events
    /// (which clients may subscribe to, and nobody publish). Calls to them need the
    /// permission to call their URIs like any other; the `kill` procedures are refused
    /// without authentication configured, since anyone could end anyone's session.
    ///
    /// ```
    /// use tower_wamp::WampRouter;
    /// let router: WampRouter = WampRouter::new().realm("realm1").meta_api(true);
    /// ```
    #[must_use]
    pub fn meta_api(mut self, yes: bool) -> Self {
        let inner = self.inner_mut();
        inner.meta_api = yes;
        for topic in crate::meta::META_TOPICS {
            if yes {
                inner
                    .topics
                    .insert(Pattern::Exact(topic.to_owned()), Topic::subscribe_only());
                inner
                    .topic_patterns
                    .push((topic.to_owned(), Topic::subscribe_only()));
            }
        }
        self
    }

    /// How much is kept of retained events (WAMP v2 `PUBLISH.Options.retain`, sent to a
    /// subscriber that asks with `SUBSCRIBE.Options.get_retained` if it would have been
    /// eligible, with `retained: true` in its details): the last such event of each topic,
    /// within `budget` (default 1024 topics and 8 MiB in all; past it the topics retained
    /// longest ago are forgotten first; no topics: none is kept). The budget covers the
    /// router's realms together.
    ///
    /// ```
    /// use tower_wamp::{WampRouter, core::retained::RetainBudget};
    /// let router: WampRouter =
    ///     WampRouter::new().retain_events(RetainBudget { topics: 100, bytes: 1 << 20 });
    /// ```
    #[must_use]
    pub fn retain_events(self, budget: crate::core::retained::RetainBudget) -> Self {
        self.inner.wamp.hub.set_retain_budget(budget);
        self
    }

    /// Keeps the last `keep` events published on each topic `pattern` matches (an exact
    /// URI, a prefix ending in `*`, or `"*"`; the longest matching pattern decides), for
    /// `wamp.subscription.get_events` (with [`meta_api`](Self::meta_api)). The events of
    /// all topics share one budget, [`event_history_budget`](Self::event_history_budget).
    ///
    /// ```
    /// use tower_wamp::{Topic, WampRouter};
    /// let router: WampRouter = WampRouter::new()
    ///     .topic("com.example.*", Topic::new())
    ///     .meta_api(true)
    ///     .event_history("com.example.chat", 100);
    /// ```
    ///
    /// # Panics
    /// If the pattern is empty, contains whitespace, or has a `*` anywhere but at the end.
    #[must_use]
    pub fn event_history(self, pattern: &str, keep: usize) -> Self {
        let parsed = Pattern::parse(pattern).unwrap_or_else(|e| panic!("{e}"));
        self.inner.wamp.hub.keep_history(parsed, keep);
        self
    }

    /// How much event history is kept in all (default: 1024 topics and 8 MiB, counted as
    /// for retained events); past it, the oldest events are forgotten first.
    ///
    /// ```
    /// use tower_wamp::{WampRouter, core::retained::RetainBudget};
    /// let router: WampRouter = WampRouter::new()
    ///     .event_history("*", 10)
    ///     .event_history_budget(RetainBudget { topics: 100, bytes: 1 << 20 });
    /// ```
    #[must_use]
    pub fn event_history_budget(self, budget: crate::core::retained::RetainBudget) -> Self {
        self.inner.wamp.hub.set_history_budget(budget);
        self
    }

    /// Adds the rules for a topic pattern: an exact URI, a prefix ending in `*`, or `"*"`.
    ///
    /// Precedence: an exact pattern beats every prefix (so an exact topic that denies is
    /// never opened by a wildcard), and the longest matching prefix beats shorter ones.
    /// Topics matching no pattern are ignored. A later call with the same pattern replaces
    /// the earlier rules.
    ///
    /// # Panics
    /// If the pattern is empty, contains whitespace, or has a `*` anywhere but at the end.
    #[must_use]
    pub fn topic(mut self, pattern: &str, rules: Topic) -> Self {
        let parsed = Pattern::parse(pattern).unwrap_or_else(|e| panic!("{e}"));
        let inner = self.inner_mut();
        inner.topics.insert(parsed, rules.clone());
        inner.topic_patterns.retain(|(p, _)| p != pattern);
        inner.topic_patterns.push((pattern.to_owned(), rules));
        self
    }

    /// A deadline for every call (off by default): a procedure that has not answered in
    /// time gets the CALLERROR `http://api.wamp.ws/error#timeout` and is cancelled.
    #[must_use]
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.inner_mut().call_timeout = Some(timeout);
        self
    }

    /// A deadline for one procedure, overriding [`call_timeout`](Self::call_timeout).
    #[must_use]
    pub fn procedure_timeout(mut self, uri: &str, timeout: Duration) -> Self {
        self.inner_mut()
            .procedure_timeouts
            .insert(uri.to_owned(), timeout);
        self
    }

    /// Turns on WAMP-CRA authentication and per-URI authorization (see
    /// [`WampCra`]). Without it, every session may do everything its topic rules allow and
    /// the `authreq`/`auth` procedures are unknown.
    #[must_use]
    pub fn auth(mut self, cra: WampCra) -> Self {
        self.inner_mut().auth = Some(Arc::new(cra));
        self
    }

    /// Whether the three-element `[7, topic, event]` delivers the event to the publisher
    /// too (when it is subscribed). `true` by default, as in clj-wamp and the WAMP v1 spec;
    /// Autobahn 0.8's routers and WAMP v2 use `false`.
    #[must_use]
    pub fn publisher_receives_own_events(mut self, yes: bool) -> Self {
        self.inner_mut().publisher_receives_own_events = yes;
        self
    }

    /// Names the publisher of every event to WAMP v2 subscribers (`publisher`,
    /// `publisher_authid`, `publisher_authrole` in the EVENT's details), in every realm the
    /// router serves, as Crossbar's role setting `disclose` does. Off by default: then only a v2 publisher that asks
    /// (`disclose_me`) is named. A v1 publisher has no numeric session id: its authid and
    /// authrole are given, when it has them.
    ///
    /// ```
    /// let router: tower_wamp::WampRouter = tower_wamp::WampRouter::new().disclose_publishers(true);
    /// ```
    #[must_use]
    pub fn disclose_publishers(mut self, yes: bool) -> Self {
        self.inner_mut().disclose_publishers = yes;
        self
    }

    /// Names the caller of every call to the v2 client that registered the procedure
    /// (`caller`, `caller_authid`, `caller_authrole` in the INVOCATION's details), in every
    /// realm the router serves. Off by default: then a caller is named when it asks
    /// (CALL's `disclose_me`) or the callee does (REGISTER's `disclose_caller`). A v1
    /// caller has no numeric session id: only its authid and authrole are given.
    /// Server-side handlers always know their caller (the [`Caller`](crate::Caller)
    /// extractor).
    ///
    /// ```
    /// let router: tower_wamp::WampRouter = tower_wamp::WampRouter::new().disclose_callers(true);
    /// ```
    #[must_use]
    pub fn disclose_callers(mut self, yes: bool) -> Self {
        self.inner_mut().disclose_callers = yes;
        self
    }

    /// Called after WELCOME is sent.
    #[must_use]
    pub fn on_open(mut self, hook: impl Fn(&Session) + Send + Sync + 'static) -> Self {
        self.inner_mut().hooks.on_open = Some(Arc::new(hook));
        self
    }

    /// Called once when a session ends, however it ends, before its subscriptions are
    /// removed (each removal then calls [`on_unsubscribe`](Self::on_unsubscribe)).
    #[must_use]
    pub fn on_close(
        mut self,
        hook: impl Fn(&Session, &CloseReason) + Send + Sync + 'static,
    ) -> Self {
        self.inner_mut().hooks.on_close = Some(Arc::new(hook));
        self
    }

    /// Called when a subscription ends: an UNSUBSCRIBE of a subscribed topic, or, for each
    /// topic, when the session closes.
    #[must_use]
    pub fn on_unsubscribe(mut self, hook: impl Fn(&Session, &str) + Send + Sync + 'static) -> Self {
        self.inner_mut().hooks.on_unsubscribe = Some(Arc::new(hook));
        self
    }

    /// Called after a SUBSCRIBE was allowed and recorded.
    #[must_use]
    pub fn after_subscribe(
        mut self,
        hook: impl Fn(&Session, &str) + Send + Sync + 'static,
    ) -> Self {
        self.inner_mut().hooks.after_subscribe = Some(Arc::new(hook));
        self
    }

    /// Called after an allowed PUBLISH was dispatched (even to nobody), with the
    /// publication as delivered.
    #[must_use]
    pub fn after_publish(
        mut self,
        hook: impl Fn(&Session, &Publication) + Send + Sync + 'static,
    ) -> Self {
        self.inner_mut().hooks.after_publish = Some(Arc::new(hook));
        self
    }

    /// Runs before every handler of a registered procedure (not for unknown ones): return
    /// the call, possibly with rewritten arguments ([`Call::set_args`]), or an error that
    /// the client receives as its CALLERROR; the handler then does not run.
    #[must_use]
    pub fn before_call<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Call) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Call, RpcError>> + Send + 'static,
    {
        self.inner_mut().hooks.before_call = Some(Arc::new(move |c| Box::pin(hook(c))));
        self
    }

    /// Runs after a successful call: return the result to send (possibly rewritten) or
    /// `None` to send no reply.
    #[must_use]
    pub fn after_call_success(
        mut self,
        hook: impl Fn(&CallInfo, Value) -> Option<Value> + Send + Sync + 'static,
    ) -> Self {
        self.inner_mut().hooks.after_call_success = Some(Arc::new(hook));
        self
    }

    /// Runs after a failed call (including unknown procedures): return the error to send
    /// (possibly rewritten) or `None` to send no reply.
    #[must_use]
    pub fn after_call_error(
        mut self,
        hook: impl Fn(&CallInfo, RpcError) -> Option<RpcError> + Send + Sync + 'static,
    ) -> Self {
        self.inner_mut().hooks.after_call_error = Some(Arc::new(hook));
        self
    }

    /// Provides the state that [`State`](crate::State) extracts, turning a
    /// `WampRouter<S>` into a router that needs no more state.
    ///
    /// ```
    /// use tower_wamp::{State, WampRouter};
    ///
    /// #[derive(Clone)]
    /// struct AppState { greeting: String }
    ///
    /// async fn greet(State(s): State<AppState>) -> String { s.greeting }
    ///
    /// let router: WampRouter = WampRouter::<AppState>::new()
    ///     .rpc("http://example.com/greet", greet)
    ///     .with_state(AppState { greeting: "hi".into() });
    /// ```
    #[must_use]
    pub fn with_state<S2: Clone + Send + Sync + 'static>(self, state: S) -> WampRouter<S2> {
        let inner = Arc::unwrap_or_clone(self.inner);
        let procedures = inner
            .procedures
            .into_iter()
            .map(|(uri, h)| {
                let state = state.clone();
                let bound: ErasedRpc<S2> = Arc::new(move |call, _: S2| h(call, state.clone()));
                (uri, bound)
            })
            .collect();
        let subscribers = inner
            .subscribers
            .into_iter()
            .map(|(policy, uri, h)| {
                let state = state.clone();
                let bound: ErasedRpc<S2> = Arc::new(move |call, _: S2| h(call, state.clone()));
                (policy, uri, bound)
            })
            .collect();
        WampRouter {
            inner: Arc::new(Inner {
                procedures,
                subscribers,
                topics: inner.topics,
                topic_patterns: inner.topic_patterns,
                hooks: inner.hooks,
                publisher_receives_own_events: inner.publisher_receives_own_events,
                disclose_publishers: inner.disclose_publishers,
                disclose_callers: inner.disclose_callers,
                auth: inner.auth,
                call_timeout: inner.call_timeout,
                procedure_timeouts: inner.procedure_timeouts,
                realms: inner.realms,
                aliases: inner.aliases,
                meta_api: inner.meta_api,
                roles: inner.roles,
                wamp: inner.wamp,
            }),
        }
    }

    /// The server handle of this router's sessions and subscriptions.
    #[must_use]
    pub fn handle(&self) -> Wamp {
        self.inner.wamp.clone()
    }
}

impl WampRouter<()> {
    pub(crate) fn core(&self) -> Arc<Inner<()>> {
        // The server handle's publications reach pattern subscribers only on topics whose
        // rule plainly allows subscribing, as clients' do.
        let mut plain = PatternTable::default();
        for (pattern, rules) in &self.inner.topic_patterns {
            if let Ok(parsed) = Pattern::parse(pattern) {
                plain.insert(parsed, matches!(rules.subscribe, SubscribeRule::Allow));
            }
        }
        self.inner.wamp.hub.set_pattern_topics(plain);
        self.inner
            .wamp
            .hub
            .meta_api
            .store(self.inner.meta_api, std::sync::atomic::Ordering::Relaxed);
        self.inner
            .wamp
            .hub
            .set_server_subscribers(&self.inner.subscribers);
        self.inner.wamp.hub.start_backplane();
        self.inner.clone()
    }
}

enum Target<'a> {
    User(&'a ErasedRpc<()>),
    /// A procedure a WAMP v2 client registered.
    Remote(crate::dealer::Routed),
    /// A procedure a client of another node registered (with a backplane).
    Node(Arc<crate::cluster::Cluster>, u64),
    /// A meta procedure the router answers.
    Meta(crate::meta::Meta),
    AuthReq,
    Auth,
}

/// Starts a handler: a panic in its synchronous part is raised again from its future, where
/// the call's panics are caught.
fn start(
    handler: &ErasedRpc<()>,
    call: Call,
) -> crate::handler::BoxFuture<Result<Value, RpcError>> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| handler(call, ()))) {
        Ok(running) => running,
        Err(panic) => Box::pin(async move { std::panic::resume_unwind(panic) }),
    }
}

/// A call on its way: a handler's own future, or any other target's.
enum Running<'a> {
    Handler(crate::handler::BoxFuture<Result<Value, RpcError>>),
    /// A v2 caller's call to a handler: dropped when canceled (whatever the mode), and not
    /// started when canceled before.
    Cancelable(
        crate::handler::BoxFuture<Result<Value, RpcError>>,
        crate::cancel::Receiver,
    ),
    Other(Pin<Box<dyn Future<Output = Result<Outcome, RpcError>> + Send + 'a>>),
}

impl Future for Running<'_> {
    type Output = Result<Outcome, RpcError>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Handler(running) => running.as_mut().poll(cx).map(|r| r.map(Outcome::Value)),
            Self::Cancelable(running, cancel) => {
                if cancel.poll_canceled(cx).is_ready() {
                    return Poll::Ready(Err(RpcError::new(
                        crate::dealer::CANCELED,
                        "the call was canceled",
                    )));
                }
                running.as_mut().poll(cx).map(|r| r.map(Outcome::Value))
            }
            Self::Other(running) => running.as_mut().poll(cx),
        }
    }
}

/// A call to one of the router's handlers, started by [`Inner::try_start`]: a future that
/// is not pinned (it can be polled once where it is made and moved into a task only if it
/// waits) and answers as [`Inner::dispatch`] would.
pub(crate) struct Started {
    router: Arc<Inner<()>>,
    /// `None` once it answered (or panicked): it is not polled again.
    running: Option<Running<'static>>,
    info: Option<Box<CallInfo>>,
}

impl Started {
    /// Makes a call that waits cancelable: the sender of its CANCEL, unless it answered
    /// already or has its channel.
    pub(crate) fn cancelable(&mut self) -> Option<crate::cancel::Sender> {
        match self.running.take() {
            Some(Running::Handler(running)) => {
                let (cancel, canceled) = crate::cancel::channel();
                self.running = Some(Running::Cancelable(running, canceled));
                Some(cancel)
            }
            other => {
                self.running = other;
                None
            }
        }
    }
}

impl Future for Started {
    type Output = CallReply;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<CallReply> {
        let this = self.get_mut();
        debug_assert!(this.running.is_some(), "polled after it answered");
        let outcome = std::task::ready!(poll_guarded(&mut this.running, cx));
        Poll::Ready(this.router.finish(this.info.as_deref(), outcome))
    }
}

/// Polls a call's target under the panic guard, and lets it go (once it answered or
/// panicked) under the guard too: its drop may panic as well.
fn poll_guarded(
    slot: &mut Option<Running<'_>>,
    cx: &mut std::task::Context<'_>,
) -> Poll<std::thread::Result<Result<Outcome, RpcError>>> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| {
        let Some(running) = slot.as_mut() else {
            return Poll::Pending;
        };
        let result = std::task::ready!(Pin::new(running).poll(cx));
        *slot = None;
        Poll::Ready(result)
    })) {
        Ok(Poll::Pending) => Poll::Pending,
        Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
        Err(panic) => {
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| *slot = None));
            Poll::Ready(Err(panic))
        }
    }
}

/// What a procedure returned: one value (the router's handlers), or v2 arguments (a
/// client's procedure).
enum Outcome {
    Value(Value),
    Arguments(Payload),
}

/// Describes a caught panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "handler panicked".to_owned()
    }
}

/// Runs a synchronous hook, turning a panic into a logged error.
fn guarded<R>(name: &str, f: impl FnOnce() -> R) -> Option<R> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(p) => {
            tracing::error!(hook = name, panic = %Clip(&panic_message(&*p)), "hook panicked");
            None
        }
    }
}

impl Inner<()> {
    pub(crate) fn wamp(&self) -> &Wamp {
        &self.wamp
    }

    /// The whole call pipeline: authorization, lookup, before hook, handler, after hooks.
    pub(crate) async fn dispatch(&self, mut call: Call) -> CallReply {
        call.hub = Some(self.wamp.hub.clone());
        // The name the caller called, when an alias changes it (a pattern's callee is told it).
        let mut called = None;
        if let Some(canonical) = self.alias_of(&call.procedure) {
            called = Some(std::mem::replace(&mut call.procedure, canonical.clone()));
        }
        let info = self.call_info(&call);
        let info = info.as_deref();
        let deadline = self
            .procedure_timeouts
            .get(&call.procedure)
            .copied()
            .or(self.call_timeout);
        let target = match (&self.auth, call.procedure.as_str()) {
            (Some(_), AUTHREQ) => Target::AuthReq,
            (Some(_), AUTH) => Target::Auth,
            _ => {
                // Without authentication or roles everything is permitted: not asked.
                if !self.open_to_all()
                    && !self
                        .permitted(&call.session, Action::Call, &call.procedure)
                        .await
                {
                    tracing::debug!("CALL not permitted");
                    return self.after_error(info, RpcError::unauthorized());
                }
                match self.procedures.get(&call.procedure) {
                    _ if self.meta_api && crate::meta::Meta::of(&call.procedure).is_some() => {
                        Target::Meta(crate::meta::Meta::of(&call.procedure).expect("just seen"))
                    }
                    Some(handler) => Target::User(handler),
                    None => match self.wamp.hub.route_anywhere(
                        &call.procedure,
                        !is_auth_procedure(&call.procedure),
                        call.control.chunks.is_some(),
                    ) {
                        // WAMP-CRA's procedure names are no pattern's, configured or not.
                        Some(crate::hub::Routing::Here(routed))
                            if !(routed.pattern && is_auth_procedure(&call.procedure)) =>
                        {
                            Target::Remote(routed)
                        }
                        // Another node's.
                        Some(crate::hub::Routing::Node(cluster, node)) => {
                            Target::Node(cluster, node)
                        }
                        _ => {
                            tracing::debug!("unknown procedure");
                            return self.after_error(info, RpcError::not_found());
                        }
                    },
                }
            }
        };
        if call.control.chunks.is_some() && !matches!(target, Target::Remote(_)) {
            // Our handlers take their arguments once.
            return self.after_error(info, crate::dealer::streams_unsupported());
        }
        if let Some(before) = &self.hooks.before_call {
            // The caller's progress and CANCEL stay with the call, whatever Call the hook
            // gives back.
            let control = std::mem::take(&mut call.control);
            // Inside an async block, a panic before the future exists is caught too.
            // Boxed: it holds the call, which every call's future would hold twice.
            match Box::pin(AssertUnwindSafe(async move { before(call).await }).catch_unwind()).await
            {
                Ok(Ok(rewritten)) => {
                    call = rewritten;
                    call.control = control;
                }
                Ok(Err(denied)) => return self.after_error(info, denied),
                Err(p) => {
                    let msg = panic_message(&*p);
                    tracing::error!(panic = %Clip(&msg), "before_call hook panicked");
                    return self.after_error(info, RpcError::internal(msg));
                }
            }
        }
        let value = |r: Result<Value, RpcError>| r.map(Outcome::Value);
        // A v2 caller's CANCEL: a client callee is interrupted as the mode says (in
        // `dealer::invoke`); a handler of ours is dropped whatever the mode, and does not
        // start once canceled.
        let cancel = call.control.cancel.take();
        let mut running: Running<'_> = match target {
            // The handler's own future, not boxed again (most calls).
            Target::User(handler) => match cancel {
                None => Running::Handler(start(handler, call)),
                // Canceled before it started: it does not start.
                Some(cancel) if cancel.is_canceled() => Running::Other(Box::pin(async {
                    Err(RpcError::new(
                        crate::dealer::CANCELED,
                        "the call was canceled",
                    ))
                })),
                // Not boxed again: the CANCEL is looked at before each poll.
                Some(cancel) => Running::Cancelable(start(handler, call), cancel),
            },
            target => Running::Other(match target {
                Target::User(handler) => Box::pin(async move { value(handler(call, ()).await) }),
                Target::Remote(routed) => Box::pin(async move {
                    let control = crate::dealer::CallControl {
                        progress: call.control.progress.take(),
                        cancel,
                        chunks: call.control.chunks.take(),
                    };
                    let always = self.always_disclose_caller(&call).await;
                    let Payload { args, kwargs } = arguments(call.args, call.kwargs);
                    // The caller is named to callees by policy, as it asks, or as a callee
                    // asks (which may be another callee of a shared registration).
                    let caller = crate::dealer::Disclosure {
                        details: (always || routed.callee.disclose_caller || routed.shared)
                            .then(|| disclosed(&call.session, "caller")),
                        always,
                    };
                    // A pattern's callee is told the procedure as the caller called it.
                    let procedure = called.as_deref().unwrap_or(&call.procedure);
                    crate::dealer::invoke(
                        &self.wamp.hub,
                        procedure,
                        routed,
                        args,
                        kwargs,
                        caller,
                        control,
                    )
                    .await
                    .map(Outcome::Arguments)
                }),
                Target::Node(cluster, node) => Box::pin(async move {
                    let control = crate::dealer::CallControl {
                        progress: call.control.progress.take(),
                        cancel,
                        chunks: call.control.chunks.take(),
                    };
                    let always = self.always_disclose_caller(&call).await;
                    let payload = arguments(call.args, call.kwargs);
                    // Who calls goes along; the callee's node tells whom its rules say.
                    let caller = crate::dealer::Disclosure {
                        details: Some(disclosed(&call.session, "caller")),
                        always,
                    };
                    // Routed there by its name; a pattern's callee is told the name called.
                    let names = (call.procedure.as_str(), called.as_deref());
                    cluster
                        .call(node, names, payload, caller, control)
                        .await
                        .map(Outcome::Arguments)
                }),
                Target::Meta(
                    meta @ (crate::meta::Meta::SessionCount
                    | crate::meta::Meta::SessionList
                    | crate::meta::Meta::SessionGet),
                ) => Box::pin(async move {
                    self.meta_sessions(meta, &call)
                        .await
                        .map(Outcome::Arguments)
                }),
                Target::Meta(crate::meta::Meta::AddTestament) => {
                    Box::pin(async move { self.add_testament(&call).await.map(Outcome::Arguments) })
                }
                Target::Meta(crate::meta::Meta::SubscriptionGetEvents) => {
                    Box::pin(async move { self.get_events(&call).await.map(Outcome::Arguments) })
                }
                Target::Meta(meta) => {
                    Box::pin(async move { self.meta_call(meta, &call).map(Outcome::Arguments) })
                }
                Target::AuthReq => Box::pin(async move { value(self.authreq(call).await) }),
                Target::Auth => Box::pin(async move { value(self.authenticate(call).await) }),
            }),
        };
        if let Some(deadline) = deadline {
            running = Running::Other(Box::pin(async move {
                tokio::time::timeout(deadline, running)
                    .await
                    .unwrap_or_else(|_| {
                        tracing::debug!(?deadline, "call timed out");
                        Err(RpcError::new(error_uri::TIMEOUT, "call timed out"))
                    })
            }));
        }
        let mut running = Some(running);
        let outcome = std::future::poll_fn(|cx| poll_guarded(&mut running, cx)).await;
        self.finish(info, outcome)
    }

    /// Starts `call` at once when nothing before its handler has to wait: no
    /// authentication or roles, no `before_call` hook, no timeout, a handler of the router's
    /// own (not the meta API's, a client's or another node's, under its name or an alias),
    /// no stream of arguments, no CANCEL channel yet (a call that waits is given one by
    /// [`Started::cancelable`]). Gives the call back untouched
    /// otherwise, for [`dispatch`](Self::dispatch). What it starts answers as `dispatch`
    /// would have.
    // The call is given back as it came, by value: boxing it would cost the allocation this
    // path saves.
    #[allow(clippy::result_large_err)]
    pub(crate) fn try_start(self: &Arc<Self>, mut call: Call) -> Result<Started, Call> {
        if !self.open_to_all()
            || self.hooks.before_call.is_some()
            || self.call_timeout.is_some()
            || call.control.chunks.is_some()
            || call.control.cancel.is_some()
        {
            return Err(call);
        }
        let canonical = self.alias_of(&call.procedure);
        let name = canonical.unwrap_or(&call.procedure);
        let handler = match self.procedures.get(name) {
            Some(handler)
                if !(self.procedure_timeouts.contains_key(name)
                    || self.meta_api && crate::meta::Meta::of(name).is_some()) =>
            {
                handler
            }
            _ => return Err(call),
        };
        if let Some(canonical) = canonical {
            call.procedure = canonical.clone();
        }
        call.hub = Some(self.wamp.hub.clone());
        let info = self.call_info(&call);
        Ok(Started {
            router: self.clone(),
            running: Some(Running::Handler(start(handler, call))),
            info,
        })
    }

    /// The name `procedure` is an alias of, if it is one (of another name: an alias to
    /// itself is none). One level, for [`dispatch`](Self::dispatch) and
    /// [`try_start`](Self::try_start) alike.
    fn alias_of(&self, procedure: &str) -> Option<&String> {
        self.aliases
            .get(procedure)
            .filter(|canonical| canonical.as_str() != procedure)
    }

    /// What the after-call hooks see of `call`; made only when there are such hooks, and
    /// boxed (it lives across every await of the call, and most routers have no hooks).
    fn call_info(&self, call: &Call) -> Option<Box<CallInfo>> {
        let hooks = &self.hooks;
        (hooks.after_call_success.is_some() || hooks.after_call_error.is_some()).then(|| {
            Box::new(CallInfo {
                session_id: call.session.id().clone(),
                procedure: call.procedure.clone(),
                call_id: call.call_id.as_str().to_owned(),
            })
        })
    }

    /// The answer to a call from what its target returned (or the panic it raised), through
    /// the after-call hooks.
    fn finish(
        &self,
        info: Option<&CallInfo>,
        outcome: std::thread::Result<Result<Outcome, RpcError>>,
    ) -> CallReply {
        match outcome {
            Ok(Ok(Outcome::Arguments(payload))) => match &self.hooks.after_call_success {
                Some(hook) => match guarded("after_call_success", || {
                    hook(info.expect("built when hooks are set"), payload.to_event())
                }) {
                    // Passed through unchanged: the callee's own args and kwargs.
                    Some(Some(result)) if result == payload.to_event() => CallReply::Arguments {
                        args: payload.args,
                        kwargs: payload.kwargs,
                    },
                    Some(Some(result)) => CallReply::Result(result),
                    Some(None) => CallReply::Suppressed,
                    None => {
                        CallReply::Error(RpcError::internal("after_call_success hook panicked"))
                    }
                },
                None => CallReply::Arguments {
                    args: payload.args,
                    kwargs: payload.kwargs,
                },
            },
            Ok(Ok(Outcome::Value(result))) => match &self.hooks.after_call_success {
                Some(hook) => match guarded("after_call_success", || {
                    hook(info.expect("built when hooks are set"), result)
                }) {
                    Some(Some(result)) => CallReply::Result(result),
                    Some(None) => CallReply::Suppressed,
                    None => {
                        CallReply::Error(RpcError::internal("after_call_success hook panicked"))
                    }
                },
                None => CallReply::Result(result),
            },
            Ok(Err(error)) => self.after_error(info, error),
            Err(p) => {
                let msg = panic_message(&*p);
                tracing::error!(panic = %Clip(&msg), "procedure panicked");
                self.after_error(info, RpcError::internal(msg))
            }
        }
    }

    /// Whether every callee is told who calls: the realm's policy, the caller's
    /// `disclose_me`, or its role's rule.
    async fn always_disclose_caller(&self, call: &Call) -> bool {
        self.disclose_callers
            || call.disclose_me
            || self
                .role_discloses(&call.session, Action::Call, &call.procedure)
                .await
    }

    /// Whether `topic` has a rule that does not deny publishing (before permissions).
    pub(crate) fn may_publish_to(&self, topic: &str) -> bool {
        self.topics
            .get(topic)
            .is_some_and(|rules| !matches!(rules.publish, PublishRule::Deny))
    }

    /// The URI an alias stands for, or the URI itself.
    pub(crate) fn canonical(&self, uri: String) -> String {
        match self.aliases.get(&uri) {
            Some(target) => target.clone(),
            None => uri,
        }
    }

    /// A v2 client's REGISTER: permission, then the table (a procedure of the router's own,
    /// or another client's, is `procedure_already_exists`).
    pub(crate) async fn register(
        &self,
        session: &Session,
        (policy, procedure): (MatchPolicy, String),
        invoke: crate::core::session::v2::InvokePolicy,
        callee: &crate::dealer::Callee,
        budget: crate::core::broker::Budget,
        ack: &(dyn Fn(u64) -> crate::wire::Frame + Sync),
    ) -> Result<u64, &'static str> {
        let exact = policy == MatchPolicy::Exact;
        let procedure = if exact {
            self.canonical(procedure)
        } else {
            procedure
        };
        let granted = self.permissions(session).await;
        let permitted = match &granted {
            Granted::Everything => true,
            Granted::Nothing => false,
            Granted::These(p) => p.allows(Action::Register, &procedure),
        };
        if !permitted {
            return Err("wamp.error.not_authorized");
        }
        // A pattern catches many procedures: each call is checked against the permissions
        // it had.
        let mut callee = callee.clone();
        if let (false, Granted::These(p)) = (exact, granted) {
            callee.permissions = Some(p);
        }
        // The router's own procedures are exact names that no pattern reaches (they are
        // looked up first).
        if exact
            && (self.procedures.contains_key(&procedure)
                || procedure == AUTH
                || procedure == AUTHREQ)
        {
            return Err("wamp.error.procedure_already_exists");
        }
        // With a backplane, the first local callee takes the name in the deployment's
        // directory: another node's `single` registration (or another policy) refuses it.
        let cluster = self.wamp.hub.cluster();
        // Kept as being claimed until the registration is made (or not).
        let mut _claiming = None;
        if let Some(cluster) = cluster.as_ref()
            && self
                .wamp
                .hub
                .registrations()
                .lookup(policy, &procedure)
                .is_none()
        {
            let (claimed, guard) = cluster.claim(policy, &procedure, invoke).await;
            _claiming = Some(guard);
            match claimed {
                Ok(true) => {}
                Ok(false) => return Err("wamp.error.procedure_already_exists"),
                Err(_) => return Err("wamp.error.network_failure"),
            }
        }
        let _order = self.meta_order();
        match self
            .wamp
            .hub
            .register((policy, &procedure), invoke, &callee, budget, ack)
        {
            Ok((id, created)) => {
                self.meta_attached(
                    crate::meta::Kind::Registration,
                    session.id(),
                    (policy, &procedure),
                    id,
                    created,
                );
                Ok(id)
            }
            Err(crate::dealer::RegisterError::Exists) => Err("wamp.error.procedure_already_exists"),
            Err(crate::dealer::RegisterError::OverBudget) => Err("budget"),
            Err(crate::dealer::RegisterError::Closing) => Err("closing"),
        }
    }

    pub(crate) fn serves_realm(&self, realm: &str) -> bool {
        self.realms.is_empty() || self.realms.iter().any(|r| r == realm)
    }

    pub(crate) fn auth_config(&self) -> Option<&WampCra> {
        self.auth.as_deref()
    }

    fn after_error(&self, info: Option<&CallInfo>, error: RpcError) -> CallReply {
        match &self.hooks.after_call_error {
            Some(hook) => match guarded("after_call_error", || {
                hook(info.expect("built when hooks are set"), error)
            }) {
                Some(Some(error)) => CallReply::Error(error),
                Some(None) => CallReply::Suppressed,
                None => CallReply::Error(RpcError::internal("after_call_error hook panicked")),
            },
            None => CallReply::Error(error),
        }
    }

    pub(crate) fn opened(&self, session: &Session) {
        if let Some(hook) = &self.hooks.on_open {
            guarded("on_open", || hook(session));
        }
        if let Some(outbox) = session.outbox() {
            self.meta_joined(session.id(), outbox);
        }
    }

    /// Runs `on_close`, then removes every subscription with one `on_unsubscribe` each;
    /// `registrations` are the ones the session lost, with their URIs (for the meta events).
    pub(crate) fn closed(
        &self,
        session: &Session,
        reason: &CloseReason,
        registrations: &[crate::dealer::Detached],
    ) {
        if let Some(hook) = &self.hooks.on_close {
            guarded("on_close", || hook(session, reason));
        }
        let order = self.meta_order();
        let removed = self.wamp.hub.remove_subscriptions(session.id());
        if let Some(hook) = &self.hooks.on_unsubscribe {
            // The hooks are about topics: exact subscriptions only.
            for r in removed.iter().filter(|r| r.policy == MatchPolicy::Exact) {
                guarded("on_unsubscribe", || hook(session, &r.uri));
            }
        }
        // Sessions ended by `kill_all` leave without meta events (the spec).
        let quiet = session
            .outbox()
            .is_some_and(crate::session::Outbox::is_quiet);
        for r in removed.iter().filter(|_| !quiet) {
            self.meta_detached(
                crate::meta::Kind::Subscription,
                session.id(),
                &r.uri,
                r.id,
                r.deleted,
            );
        }
        for r in registrations.iter().filter(|_| !quiet) {
            self.meta_detached(
                crate::meta::Kind::Registration,
                session.id(),
                &r.uri,
                r.id,
                r.deleted,
            );
        }
        drop(order);
        // Gone from the lists before its leave is told.
        self.wamp.hub.remove_session(session.id());
        if let Some(outbox) = session.outbox().filter(|_| !quiet) {
            self.meta_left(session.id(), outbox);
        }
    }

    /// Orders meta events as the changes that cause them (nothing without the meta API).
    fn meta_order(&self) -> Option<std::sync::MutexGuard<'_, ()>> {
        self.meta_api.then(|| {
            self.wamp
                .hub
                .meta_order
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        })
    }

    /// A client's SUBSCRIBE to `topic` under `policy` (v1: always exact), within the
    /// session's `budget` of subscriptions: returns the subscription id, or why not.
    ///
    /// A prefix or wildcard subscription is judged as a topic by the rule that covers its
    /// URI, which must plainly allow subscribing (a predicate is written for topics, not
    /// patterns); it then receives events only on topics whose own rule plainly allows
    /// subscribing and, under authentication, that its session may subscribe to.
    pub(crate) async fn subscribe(
        &self,
        session: &Session,
        (policy, topic): (MatchPolicy, String),
        budget: Option<Budget>,
        ack: Option<crate::hub::V2Ack<'_>>,
    ) -> Result<u64, Refused> {
        let topic = if policy == MatchPolicy::Exact {
            self.canonical(topic)
        } else {
            topic
        };
        let Some(outbox) = session.outbox() else {
            return Err(Refused::Closing);
        };
        let granted = self.permissions(session).await;
        let permitted = match &granted {
            Granted::Everything => true,
            Granted::Nothing => false,
            Granted::These(p) => p.allows(Action::Subscribe, &topic),
        };
        if !permitted {
            tracing::debug!(topic = %Clip(&topic), "SUBSCRIBE not permitted: dropped");
            return Err(Refused::NotAuthorized);
        }
        let Some(rules) = self.topics.get(&topic) else {
            tracing::debug!(topic = %Clip(&topic), "SUBSCRIBE to an unmapped topic ignored");
            return Err(Refused::NotAuthorized);
        };
        let allowed = match &rules.subscribe {
            SubscribeRule::Allow => true,
            SubscribeRule::Deny => false,
            SubscribeRule::Predicate(_) if policy != MatchPolicy::Exact => false,
            SubscribeRule::Predicate(p) => {
                match AssertUnwindSafe(async { (p.0)(session.clone(), topic.clone()).await })
                    .catch_unwind()
                    .await
                {
                    Ok(allowed) => allowed,
                    Err(p) => {
                        tracing::error!(session_id = %session.id(), panic = %Clip(&panic_message(&*p)), "subscribe predicate panicked");
                        false
                    }
                }
            }
        };
        if !allowed {
            tracing::debug!(topic = %Clip(&topic), "SUBSCRIBE denied");
            return Err(Refused::NotAuthorized);
        }
        // A pattern reaches many topics: each is checked against the permissions it had.
        let permissions = match granted {
            Granted::These(p) if policy != MatchPolicy::Exact => Some(p),
            _ => None,
        };
        // Meta events in the order of the changes that cause them.
        let order = self.meta_order();
        let (outcome, id, created) = self.wamp.hub.subscribe(
            (policy, &topic),
            session.id(),
            outbox,
            permissions,
            budget,
            ack,
        );
        if let (Subscribed::New, Some(sid)) = (outcome, id) {
            self.meta_attached(
                crate::meta::Kind::Subscription,
                session.id(),
                (policy, &topic),
                sid,
                created,
            );
        }
        drop(order);
        match outcome {
            // The hooks are about topics: a pattern subscription runs none.
            Subscribed::New if policy == MatchPolicy::Exact => {
                if let Some(hook) = &self.hooks.after_subscribe {
                    guarded("after_subscribe", || hook(session, &topic));
                }
            }
            Subscribed::New => {}
            Subscribed::Already => {}
            Subscribed::OverBudget => {
                let budget = budget.expect("only a budget can be spent");
                tracing::warn!(session_id = %session.id(),
                    limit = budget.entries,
                    bytes = budget.bytes,
                    "too many subscriptions: closing"
                );
                outbox.close(
                    1008,
                    &format!(
                        "too many subscriptions (limit {} topics, {} bytes)",
                        budget.entries, budget.bytes
                    ),
                    true,
                );
                return Err(Refused::Closing);
            }
        }
        id.ok_or(Refused::Closing)
    }

    /// A client's UNSUBSCRIBE; `ack` is a v2 UNSUBSCRIBED. Returns whether it was subscribed.
    pub(crate) fn unsubscribe(
        &self,
        session: &Session,
        (policy, topic): (MatchPolicy, &str),
        ack: Option<crate::wire::Frame>,
    ) -> bool {
        let topic = match policy {
            MatchPolicy::Exact => self.aliases.get(topic).map_or(topic, String::as_str),
            _ => topic,
        };
        let order = self.meta_order();
        let Some((id, deleted)) = self
            .wamp
            .hub
            .unsubscribe((policy, topic), session.id(), ack)
        else {
            return false;
        };
        self.meta_detached(
            crate::meta::Kind::Subscription,
            session.id(),
            topic,
            id,
            deleted,
        );
        drop(order);
        if policy == MatchPolicy::Exact
            && let Some(hook) = &self.hooks.on_unsubscribe
        {
            guarded("on_unsubscribe", || hook(session, topic));
        }
        true
    }

    /// A client's UNREGISTER: `false` if the registration is not the session's.
    pub(crate) fn unregister(&self, session: &Session, id: u64, ack: crate::wire::Frame) -> bool {
        let Some(outbox) = session.outbox() else {
            return false;
        };
        let _order = self.meta_order();
        let uri = self.wamp.hub.registrations().info(id).map(|info| info.uri);
        let Some(deleted) = self.wamp.hub.unregister(id, session.id(), outbox, ack) else {
            return false;
        };
        if let Some(uri) = uri {
            self.meta_detached(
                crate::meta::Kind::Registration,
                session.id(),
                &uri,
                id,
                deleted,
            );
        }
        true
    }

    /// A client's PUBLISH: permissions, topic rules, broker function, fan-out. `payload` is
    /// the v2 form when a v2 client published. Returns the publication id, or why not.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn publish(
        &self,
        session: &Session,
        topic: String,
        event: Value,
        payload: Option<Payload>,
        exclude: Exclude,
        eligible: Option<Vec<SessionId>>,
        v2: PublishOptions,
    ) -> Result<u64, Refused> {
        let topic = self.canonical(topic);
        if !self.open_to_all() && !self.permitted(session, Action::Publish, &topic).await {
            tracing::debug!(topic = %Clip(&topic), "PUBLISH not permitted: dropped");
            return Err(Refused::NotAuthorized);
        }
        let Some(rules) = self.topics.get(&topic) else {
            tracing::debug!(topic = %Clip(&topic), "PUBLISH to an unmapped topic dropped");
            return Err(Refused::NotAuthorized);
        };
        let exclude = match exclude {
            Exclude::List(list) => list,
            Exclude::ExcludeMe(true) => vec![session.id().clone()],
            Exclude::ExcludeMe(false) => Vec::new(),
            Exclude::Unspecified if self.publisher_receives_own_events => Vec::new(),
            Exclude::Unspecified => vec![session.id().clone()],
        };
        let publication = Publication {
            topic,
            event,
            exclude,
            eligible,
            auth_lists: v2.auth_lists,
        };
        // Only a broker function can rewrite the event: keep a copy to tell, then.
        let rewritable = matches!(rules.publish, PublishRule::Broker(_));
        let original = payload.map(|p| (rewritable.then(|| publication.event.clone()), p));
        let publication = match &rules.publish {
            PublishRule::Allow => publication,
            PublishRule::Deny => {
                tracing::debug!(topic = %Clip(&publication.topic), "PUBLISH denied");
                return Err(Refused::NotAuthorized);
            }
            PublishRule::Broker(broker) => {
                match AssertUnwindSafe(async { (broker.0)(session.clone(), publication).await })
                    .catch_unwind()
                    .await
                {
                    Ok(Some(p)) => p,
                    Ok(None) => {
                        tracing::debug!("PUBLISH denied by the broker function");
                        return Err(Refused::NotAuthorized);
                    }
                    Err(p) => {
                        tracing::error!(session_id = %session.id(), panic = %Clip(&panic_message(&*p)), "broker function panicked");
                        return Err(Refused::NotAuthorized);
                    }
                }
            }
        };
        // A v2 publisher's args and kwargs go to v2 subscribers as they were, unless a broker
        // function rewrote the event.
        let payload = match original {
            Some((None, payload)) => payload,
            Some((Some(event), payload)) if event == publication.event => payload,
            _ => Payload::from_event(publication.event.clone()),
        };
        let publisher = (self.disclose_publishers
            || v2.disclose_me
            || self
                .role_discloses(session, Action::Publish, &publication.topic)
                .await)
            .then(|| disclosed(session, "publisher"));
        let out = Outgoing {
            topic: &publication.topic,
            event: &publication.event,
            payload: &payload,
            publication: random_id(),
            details: publisher.as_ref(),
            auth_lists: Some(&publication.auth_lists),
            // A broker function may have changed the topic: the rule of the one delivered.
            to_patterns: self
                .topics
                .get(&publication.topic)
                .is_some_and(|r| matches!(r.subscribe, SubscribeRule::Allow)),
            retain: v2.retain,
            publisher: Some(session),
            forward: true,
            // Not kept in history when its audience is named by session id (beyond the
            // publisher itself, excluded by default).
            history: publication.eligible.is_none()
                && publication.exclude.iter().all(|s| s == session.id()),
        };
        let delivered =
            self.wamp
                .hub
                .deliver(&out, &publication.exclude, publication.eligible.as_deref());
        tracing::trace!(topic = %Clip(&publication.topic), delivered, "event dispatched");
        if let Some(hook) = &self.hooks.after_publish {
            guarded("after_publish", || hook(session, &publication));
        }
        Ok(out.publication)
    }
}

/// Why the router refused a SUBSCRIBE or PUBLISH (v1 drops it; v2 answers with an ERROR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not permitted, denied by a rule, predicate or broker function, or an unmapped topic.
    NotAuthorized,
    /// The session is closing or spent its budget.
    Closing,
}

impl tower::Service<Call> for WampRouter<()> {
    type Response = CallReply;
    type Error = Infallible;
    type Future = BoxFuture<Result<CallReply, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move { Ok(inner.dispatch(call).await) })
    }
}

/// What only a v2 PUBLISH can ask for (none of it for v1).
#[derive(Debug, Default)]
pub(crate) struct PublishOptions {
    /// The audience by authid and authrole.
    pub(crate) auth_lists: crate::core::AuthLists,
    /// Name the publisher to subscribers.
    pub(crate) disclose_me: bool,
    /// Keep it as the topic's retained event.
    pub(crate) retain: bool,
}

/// The details that name `session` to a subscriber or callee: `{role}` (its v2 session id;
/// a v1 session has none that is a number), `{role}_authid` and `{role}_authrole` when it
/// has them.
fn disclosed(session: &Session, role: &str) -> crate::core::codec::v2::Dict {
    let mut details = crate::core::codec::v2::Dict::new();
    let v2 = session
        .protocol()
        .is_some_and(|p| p != crate::session::Protocol::V1);
    if let (true, Some(id)) = (v2, session.id().as_u64()) {
        details.insert(role.to_owned(), id.into());
    }
    if let Some(authid) = session.authid() {
        details.insert(format!("{role}_authid"), authid.into());
    }
    if let Some(authrole) = session.authrole() {
        details.insert(format!("{role}_authrole"), authrole.into());
    }
    details
}

/// WAMP-CRA's procedures, which no other node answers.
fn is_auth_procedure(procedure: &str) -> bool {
    procedure == AUTH || procedure == AUTHREQ
}

/// A call's arguments in v2's form (a v1 call's value is one positional argument).
fn arguments(args: Value, kwargs: Value) -> Payload {
    Payload {
        args: match args {
            Value::Array(args) => args,
            other => vec![other],
        },
        kwargs: match kwargs {
            Value::Object(kwargs) => kwargs,
            _ => serde_json::Map::new(),
        },
    }
}
