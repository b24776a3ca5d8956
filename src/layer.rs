//! The tower `Layer` and `Service`: the handshake (Origin, subprotocol, upgrade) in front
//! of the socket task.

use std::{
    convert::Infallible,
    fmt,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body,
    extract::{FromRequestParts, ws::WebSocketUpgrade},
    response::{IntoResponse, Response},
};
use futures_util::{
    FutureExt as _, TryFutureExt as _,
    future::{Either, MapOk, Ready, ready},
};
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use tower::{Layer, Service};

use crate::{
    OriginPolicy, SlowConsumerPolicy, Wamp, WampRouter,
    core::{
        broker::Budget,
        codec::{v1::SUBPROTOCOL, v2::Serializer},
        session::SessionLimits,
    },
    router::Inner,
    session::QueueLimits,
    wire::Proto,
};

/// What one session may hold at once of calls in flight: entries and bytes of the CALL
/// frames.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallBudget {
    pub(crate) calls: usize,
    pub(crate) bytes: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) origin: OriginPolicy,
    pub(crate) server_ident: String,
    pub(crate) read_buffer_size: usize,
    pub(crate) max_message_size: usize,
    pub(crate) queue: QueueLimits,
    pub(crate) close_on_protocol_violation: bool,
    pub(crate) strict_request_ids: bool,
    pub(crate) ping_interval: Option<Duration>,
    pub(crate) pong_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) max_sessions: Option<usize>,
    pub(crate) write_timeout: Duration,
    pub(crate) limits: SessionLimits,
    pub(crate) subscriptions: Budget,
    pub(crate) calls: CallBudget,
    pub(crate) allowed_hosts: Option<Vec<String>>,
    /// The subprotocols served, in the router's order of preference.
    pub(crate) protocols: Vec<Proto>,
    /// The level of the `wamp_session` span.
    pub(crate) session_span_level: tracing::Level,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            origin: OriginPolicy::default(),
            server_ident: concat!("tower-wamp/", env!("CARGO_PKG_VERSION")).to_owned(),
            read_buffer_size: 4096,
            max_message_size: 1 << 20,
            queue: QueueLimits::default(),
            close_on_protocol_violation: false,
            strict_request_ids: false,
            ping_interval: Some(Duration::from_secs(30)),
            pong_timeout: Duration::from_secs(20),
            idle_timeout: None,
            rate_limit: None,
            max_sessions: None,
            write_timeout: Duration::from_secs(10),
            session_span_level: tracing::Level::DEBUG,
            limits: SessionLimits::default(),
            subscriptions: Budget {
                entries: 1024,
                bytes: 256 << 10,
                patterns: 64,
            },
            calls: CallBudget {
                calls: 128,
                bytes: 4 << 20,
            },
            allowed_hosts: None,
            protocols: vec![
                Proto::V2(Serializer::Json),
                Proto::V2(Serializer::MsgPack),
                Proto::V2(Serializer::Cbor),
                Proto::V1,
            ],
        }
    }
}

fn subprotocol(proto: Proto) -> &'static str {
    match proto {
        Proto::V1 => SUBPROTOCOL,
        Proto::V2(s) => s.subprotocol(),
    }
}

/// A per-session limit on incoming messages: a token bucket refilled at `per_second`
/// holding at most `burst`. A session that goes over it is closed (1008, `rate limit
/// exceeded`).
///
/// ```
/// let limit = tower_wamp::RateLimit::new(100, 200);
/// assert_eq!((limit.per_second, limit.burst), (100, 200));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Sustained messages per second.
    pub per_second: u32,
    /// Messages allowed in a burst.
    pub burst: u32,
}

impl RateLimit {
    /// `per_second` sustained, `burst` at once.
    #[must_use]
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second,
            burst: burst.max(1),
        }
    }
}

/// The WAMP endpoint (v1 and v2) as a tower [`Layer`].
///
/// The service it makes answers WebSocket upgrade requests itself (Origin check,
/// subprotocol (`wamp.2.json`, `wamp.2.msgpack`, `wamp.2.cbor` or `wamp`), upgrade, then the WAMP session) and passes every other request
/// to the inner service unchanged.
///
/// ```no_run
/// use axum::{Router, routing::get};
/// use tower_wamp::{Args, WampLayer, WampRouter};
///
/// async fn add(Args(n): Args<Vec<f64>>) -> f64 { n.iter().sum() }
///
/// # #[tokio::main] async fn main() {
/// let wamp = WampLayer::new(WampRouter::new().rpc("http://example.com/api#add", add));
/// let app = Router::new()
///     // Upgrades on /ws go to WAMP; a plain GET gets this handler's answer.
///     .route("/ws", get(|| async { "WAMP endpoint: connect with a WebSocket" }))
///     .route_layer(wamp);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.unwrap();
/// axum::serve(listener, app).await.unwrap();
/// # }
/// ```
///
/// Security defaults: same-origin Origin check ([`OriginPolicy`]), unguessable session
/// ids, 1 MiB maximum message size, bounded outbound queue (1024 frames, 4 MiB: a client
/// that does not read is disconnected with 1008 rather than buffered without end),
/// 4 KiB read buffer, a ping every 30 s.
#[derive(Clone)]
pub struct WampLayer {
    router: Arc<Inner<()>>,
    config: Arc<Config>,
}

impl fmt::Debug for WampLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WampLayer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl WampLayer {
    /// A layer serving this router with the default settings.
    #[must_use]
    pub fn new(router: WampRouter) -> Self {
        Self {
            router: router.core(),
            config: Arc::new(Config::default()),
        }
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Serves WAMP v2 over RawSocket (the WAMP TCP framing, for back-end services that do
    /// not want HTTP) on `listener`, with this layer's router and settings (message size,
    /// queues, keepalive, session cap; no `Origin` or `Host` to check), until accepting
    /// fails. Spawn it beside the HTTP server:
    ///
    /// ```no_run
    /// # async fn run() -> std::io::Result<()> {
    /// use tower_wamp::{WampLayer, WampRouter};
    /// let layer = WampLayer::new(WampRouter::new().realm("realm1"));
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:8181").await?;
    /// tokio::spawn(layer.serve_rawsocket(listener));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// When accepting a connection fails.
    pub fn serve_rawsocket(
        &self,
        listener: tokio::net::TcpListener,
    ) -> impl Future<Output = std::io::Result<()>> + Send + 'static {
        crate::rawsocket::serve(listener, self.router.clone(), self.config.clone())
    }

    /// Which `Origin`s may connect (default: same-origin, missing `Origin` allowed).
    #[must_use]
    pub fn allowed_origins(mut self, policy: OriginPolicy) -> Self {
        self.config_mut().origin = policy;
        self
    }

    /// The server ident sent in WELCOME (default `tower-wamp/<version>`).
    #[must_use]
    pub fn server_ident(mut self, ident: impl Into<String>) -> Self {
        self.config_mut().server_ident = ident.into();
        self
    }

    /// The most read from a WebSocket at once (default 4 KiB). A connection reads 512
    /// bytes at a time, and keeps that much, until a read fills its room; from then on it
    /// reads this much at a time. A frame larger than it is read into room made as its bytes
    /// arrive (up to [`max_message_size`](Self::max_message_size)), let go once it is read.
    #[must_use]
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.config_mut().read_buffer_size = bytes;
        self
    }

    /// The largest incoming message and frame (default 1 MiB). A larger one closes the
    /// connection with 1009.
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config_mut().max_message_size = bytes;
        self
    }

    /// How many frames may wait in a session's outbound queue (default 1024). A session
    /// whose queue is full is a slow consumer: see
    /// [`slow_consumer_policy`](Self::slow_consumer_policy).
    #[must_use]
    pub fn outbound_queue_capacity(mut self, frames: usize) -> Self {
        self.config_mut().queue.frames = frames.max(1);
        self
    }

    /// How many bytes may wait in a session's outbound queue (default 4 MiB).
    #[must_use]
    pub fn outbound_queue_bytes(mut self, bytes: usize) -> Self {
        self.config_mut().queue.bytes = bytes.max(1);
        self
    }

    /// What happens when a session's outbound queue is full (default: disconnect it with
    /// 1008). Publishers never wait for a slow subscriber.
    #[must_use]
    pub fn slow_consumer_policy(mut self, policy: SlowConsumerPolicy) -> Self {
        self.config_mut().queue.policy = policy;
        self
    }

    /// WebSocket ping interval (default 30 s; `None` turns keepalive off). A session that
    /// sends nothing, not even a pong, within [`pong_timeout`](Self::pong_timeout) of a
    /// ping is closed (1008, `keepalive timeout: no pong`).
    #[must_use]
    pub fn ping_interval(mut self, interval: Option<Duration>) -> Self {
        self.config_mut().ping_interval = interval.filter(|d| !d.is_zero());
        self
    }

    /// How long after a ping an answer may take (default 20 s).
    #[must_use]
    pub fn pong_timeout(mut self, timeout: Duration) -> Self {
        self.config_mut().pong_timeout = timeout;
        self
    }

    /// Close sessions that send no WAMP message for this long (1000, `idle timeout`).
    /// Off by default.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config_mut().idle_timeout = timeout.filter(|d| !d.is_zero());
        self
    }

    /// Limit incoming messages per session (off by default).
    #[must_use]
    pub fn rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.config_mut().rate_limit = limit;
        self
    }

    /// At most this many sessions at once (default: no cap). Upgrades beyond it get
    /// `503 Service Unavailable`.
    #[must_use]
    pub fn max_sessions(mut self, max: Option<usize>) -> Self {
        self.config_mut().max_sessions = max;
        self
    }

    /// How long one write to a client may make no progress (default 10 s). A client that
    /// does not drain its socket within it is dropped and counted
    /// ([`MetricsSnapshot::write_timeouts`](crate::MetricsSnapshot::write_timeouts)); the
    /// session ends, its `max_sessions` slot is freed. Writes never hold up reading,
    /// keepalive, timeouts or close requests.
    #[must_use]
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.config_mut().write_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The longest procedure or topic URI a session may use, after CURIE expansion, and
    /// the longest PREFIX URI (default 4096 bytes). A longer one in a CALL gets a CALLERROR
    /// (`#invalid-argument`); in PREFIX, SUBSCRIBE, UNSUBSCRIBE or PUBLISH it closes the
    /// session (1008).
    #[must_use]
    pub fn max_uri_length(mut self, bytes: usize) -> Self {
        self.config_mut().limits.max_uri_length = bytes.max(1);
        self
    }

    /// How many CURIE prefixes a session may define (default 1024); one more closes the
    /// session (1008).
    #[must_use]
    pub fn max_prefixes(mut self, prefixes: usize) -> Self {
        self.config_mut().limits.max_prefixes = prefixes;
        self
    }

    /// How many bytes a session's CURIE prefixes may take, names and URIs together
    /// (default 64 KiB); more closes the session (1008).
    #[must_use]
    pub fn max_prefix_bytes(mut self, bytes: usize) -> Self {
        self.config_mut().limits.max_prefix_bytes = bytes;
        self
    }

    /// How many topics one session may subscribe to (default 1024); one more closes the
    /// session (1008, `too many subscriptions`). [`Wamp::subscribe`] is not limited. The
    /// same number bounds a v2 callee's registrations (counted apart).
    #[must_use]
    pub fn max_subscriptions(mut self, topics: usize) -> Self {
        self.config_mut().subscriptions.entries = topics;
        self
    }

    /// How many of one session's subscriptions may be WAMP v2 patterns (`match: prefix` or
    /// `wildcard`; default 64, within [`max_subscriptions`](Self::max_subscriptions)); one
    /// more closes the session (1008). Each pattern that matches a topic costs every
    /// publication on it a frame of its own (an EVENT names its subscription), where exact
    /// subscribers share one; and the index's lookup cost grows with the distinct shapes of
    /// wildcard patterns.
    #[must_use]
    pub fn max_pattern_subscriptions(mut self, patterns: usize) -> Self {
        self.config_mut().subscriptions.patterns = patterns;
        self
    }

    /// How many bytes of topic URIs one session's subscriptions may take (default 256 KiB);
    /// more closes the session (1008). The same bound applies to the URIs of a v2
    /// callee's registrations (counted apart).
    #[must_use]
    pub fn max_subscription_bytes(mut self, bytes: usize) -> Self {
        self.config_mut().subscriptions.bytes = bytes;
        self
    }

    /// The most memory one message may take once decoded, estimated before decoding
    /// (default 16 MiB; see [`decoded_size`](crate::core::codec::v1::decoded_size)). A
    /// frame of small JSON objects decodes to about a hundred times its length; a message
    /// beyond this is not decoded and closes the session (1009).
    #[must_use]
    pub fn max_decoded_size(mut self, bytes: usize) -> Self {
        self.config_mut().limits.max_decoded_size = bytes;
        self
    }

    /// How many calls of one session may be in flight at once (default 128). A CALL beyond
    /// it is answered at once with `http://api.wamp.ws/error#too-many-calls`. A session's
    /// calls are cancelled when it closes.
    #[must_use]
    pub fn max_calls_in_flight(mut self, calls: usize) -> Self {
        self.config_mut().calls.calls = calls.max(1);
        self
    }

    /// How many bytes the calls of one session in flight may hold (default 4 MiB), counted
    /// as their messages' decoded size (see [`max_decoded_size`](Self::max_decoded_size)).
    /// A CALL beyond it is answered with `http://api.wamp.ws/error#too-many-calls`.
    #[must_use]
    pub fn max_call_bytes(mut self, bytes: usize) -> Self {
        self.config_mut().calls.bytes = bytes;
        self
    }

    /// Accepts handshakes only when the `Host` header names one of these hosts (compared
    /// without the port and without case); others get `403`. Off by default. Use it on
    /// services for `localhost`: DNS rebinding lets a web page reach them under its own
    /// host name, which a same-origin check alone accepts.
    ///
    /// ```
    /// use tower_wamp::{WampLayer, WampRouter};
    /// let layer = WampLayer::new(WampRouter::new()).allowed_hosts(["localhost", "127.0.0.1", "[::1]"]);
    /// ```
    #[must_use]
    pub fn allowed_hosts<I, T>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.config_mut().allowed_hosts = Some(
            hosts
                .into_iter()
                .map(|h| h.into().to_ascii_lowercase())
                .collect(),
        );
        self
    }

    /// The WebSocket subprotocols served, in order of preference: a client that offers
    /// several gets the first of these that it offers. Default: `wamp.2.json`,
    /// `wamp.2.msgpack`, `wamp.2.cbor`, `wamp` (WAMP v1).
    ///
    /// ```
    /// use tower_wamp::{WampLayer, WampRouter};
    /// // WAMP v1 only, as before WAMP v2 was served.
    /// let v1 = WampLayer::new(WampRouter::new()).subprotocols(["wamp"]);
    /// // Prefer MessagePack.
    /// let v2 = WampLayer::new(WampRouter::new()).subprotocols(["wamp.2.msgpack", "wamp.2.json"]);
    /// ```
    ///
    /// # Panics
    /// If a name is not one of the four, or the list is empty.
    #[must_use]
    pub fn subprotocols<'a>(mut self, names: impl IntoIterator<Item = &'a str>) -> Self {
        let protocols: Vec<Proto> = names
            .into_iter()
            .map(|name| {
                if name.eq_ignore_ascii_case(SUBPROTOCOL) {
                    Proto::V1
                } else {
                    Proto::V2(Serializer::from_subprotocol(name).unwrap_or_else(|| {
                        panic!("unknown WAMP subprotocol {name:?}: wamp, wamp.2.json, wamp.2.msgpack or wamp.2.cbor")
                    }))
                }
            })
            .collect();
        assert!(!protocols.is_empty(), "serve at least one subprotocol");
        self.config_mut().protocols = protocols;
        self
    }

    /// Close the connection (1002, or 1003 for binary frames) on frames that are not
    /// WAMP v1, instead of logging and ignoring them (the default, as clj-wamp did). WAMP
    /// v2 violations are always answered with ABORT, as the spec asks.
    #[must_use]
    pub fn close_on_protocol_violation(mut self, yes: bool) -> Self {
        self.config_mut().close_on_protocol_violation = yes;
        self
    }

    /// Make a WAMP v2 request id out of sequence (not the previous one plus one) a protocol
    /// violation (ABORT). Off by default: such ids are only counted, since older clients
    /// draw random ones.
    ///
    /// ```
    /// # use tower_wamp::{WampLayer, WampRouter};
    /// let layer = WampLayer::new(WampRouter::new()).strict_request_ids(true);
    /// ```
    #[must_use]
    pub fn strict_request_ids(mut self, yes: bool) -> Self {
        self.config_mut().strict_request_ids = yes;
        self
    }

    /// The level of the `wamp_session` span (default `DEBUG`, as tower-http's `TraceLayer`
    /// has its request span).
    ///
    /// A session's task enters its span every time it runs, that is once or more per
    /// message, and an enabled span costs an enter and an exit in the subscriber each time.
    /// At `DEBUG`, an application whose subscriber is at `INFO` pays nothing per message;
    /// the router's own lines about a session (opened, closed, authenticated, refused,
    /// timed out, closing) carry its `session_id`, but the lines your handlers write are
    /// in no session's span. At `INFO`, what the session's task writes and what its calls
    /// write (a handler's lines, also after it waited) are in a span with the session's
    /// `session_id` and `protocol`, for that cost. Server-side event subscribers
    /// ([`WampRouter::on_event`]) run outside any session.
    ///
    /// ```
    /// # use tower_wamp::{WampLayer, WampRouter};
    /// let layer = WampLayer::new(WampRouter::new()).session_span_level(tracing::Level::INFO);
    /// ```
    #[must_use]
    pub fn session_span_level(mut self, level: tracing::Level) -> Self {
        self.config_mut().session_span_level = level;
        self
    }

    /// The server handle (the same as [`WampRouter::handle`]).
    #[must_use]
    pub fn handle(&self) -> Wamp {
        self.router.wamp().clone()
    }

    /// A standalone service: non-upgrade requests get `400 Bad Request` with a body
    /// that says why. Mount it with `Router::route_service`.
    ///
    /// ```
    /// use axum::Router;
    /// use tower_wamp::{WampLayer, WampRouter};
    ///
    /// let app: Router = Router::new().route_service("/ws", WampLayer::new(WampRouter::new()).into_service());
    /// ```
    #[must_use]
    pub fn into_service(self) -> WampService<NotUpgrade> {
        WampService {
            inner: NotUpgrade,
            layer: self,
        }
    }

    fn upgrade<B>(&self, req: Request<B>) -> Response {
        let (mut parts, _body) = req.into_parts();
        if let Some(hosts) = &self.config.allowed_hosts
            && !host_allowed(&parts.headers, hosts)
        {
            let host = parts
                .headers
                .get(header::HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
                .unwrap_or_default();
            tracing::warn!(host = %crate::clip::Clip(&host), "WebSocket handshake refused: host not allowed");
            return (
                StatusCode::FORBIDDEN,
                format!(
                    "host {:?} is not allowed to open a WAMP session",
                    crate::clip::Clip(&host)
                ),
            )
                .into_response();
        }
        if let Err(rejection) = self.config.origin.check(&parts.headers) {
            tracing::warn!(%rejection, "WebSocket handshake refused");
            return (StatusCode::FORBIDDEN, rejection.to_string()).into_response();
        }
        let Some((protocol, proto)) = chosen_protocol(&parts.headers, &self.config.protocols)
        else {
            tracing::warn!("WebSocket handshake without a WAMP subprotocol refused");
            let served: Vec<&str> = self
                .config
                .protocols
                .iter()
                .map(|p| subprotocol(*p))
                .collect();
            return (
                StatusCode::BAD_REQUEST,
                format!(
                    "this endpoint speaks WAMP: offer a WebSocket subprotocol it serves \
                     (Sec-WebSocket-Protocol); supported subprotocols: {}",
                    served.join(", ")
                ),
            )
                .into_response();
        };
        // axum's extractor checks the handshake and answers a bad one as it would; the
        // connection is then taken over by this crate's transport (`crate::ws`), so the
        // upgrade is kept from before the extractor takes it.
        let on_upgrade = parts.extensions.get::<hyper::upgrade::OnUpgrade>().cloned();
        match WebSocketUpgrade::from_request_parts(&mut parts, &()).now_or_never() {
            Some(Ok(_checked)) => {}
            Some(Err(rejection)) => return rejection.into_response(),
            None => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
        let Some(on_upgrade) = on_upgrade else {
            return StatusCode::UPGRADE_REQUIRED.into_response();
        };
        // HTTP/1.1 answers 101 with the accept key; HTTP/2 (RFC 8441, when the application
        // turns it on) answers 200 with neither.
        let accept = if parts.version <= http::Version::HTTP_11 {
            let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY) else {
                return StatusCode::BAD_REQUEST.into_response();
            };
            Some(accept_key(key.as_bytes()))
        } else {
            None
        };
        let hub = self.router.wamp().hub.clone();
        if let Err(why) = hub.reserve_slot(self.config.max_sessions) {
            tracing::warn!(why, "WebSocket handshake refused");
            return (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
        }
        let config = self.config.clone();
        let router = self.router.clone();
        let parts = Arc::new(detach(parts));
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => crate::socket::run(upgraded, router, config, parts, proto).await,
                Err(e) => {
                    tracing::warn!(error = %e, "WebSocket upgrade failed");
                    hub.release_slot();
                }
            }
        });
        let mut response = Response::new(Body::empty());
        let headers = response.headers_mut();
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
        if let Some(accept) = accept {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        }
        response
    }
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 4.2.2).
fn accept_key(key: &[u8]) -> HeaderValue {
    use base64::Engine as _;
    use sha1::Digest as _;
    let mut sha1 = sha1::Sha1::new();
    sha1.update(key);
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha1.finalize());
    HeaderValue::from_str(&accept).expect("base64 is a valid header value")
}

/// Whether the `Host` header, without its port, is one of `hosts` (lower case).
fn host_allowed(headers: &HeaderMap, hosts: &[String]) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = if host.starts_with('[') {
        // An IPv6 literal: `[::1]:8080`.
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(name, _port)| name)
    };
    hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// A copy of the request parts that owns its bytes. hyper's header values and URI are
/// slices of the connection's read buffer: keeping them for the session's lifetime would
/// keep that whole buffer (about 9 KiB) alive per session. The WebSocket handshake's own
/// headers, which mean nothing once the connection is upgraded, are left out: every
/// session keeps its copy for its whole life.
fn detach(parts: http::request::Parts) -> http::request::Parts {
    let kept = |name: &header::HeaderName| !HANDSHAKE_ONLY.contains(name);
    let mut copy = Request::new(()).into_parts().0;
    copy.method = parts.method;
    copy.version = parts.version;
    copy.uri = owned_uri(&parts.uri);
    copy.headers
        .reserve(parts.headers.keys().filter(|name| kept(name)).count());
    for (name, value) in parts.headers.iter().filter(|(name, _)| kept(name)) {
        if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
            copy.headers.append(name.clone(), value);
        }
    }
    copy.extensions = parts.extensions;
    // axum keeps the request URI in an extension too.
    if let Some(axum::extract::OriginalUri(uri)) = copy.extensions.get_mut() {
        *uri = owned_uri(uri);
    }
    copy
}

/// Headers of the upgrade handshake that handlers do not see (`Sec-WebSocket-Protocol`,
/// the subprotocol chosen, they do).
const HANDSHAKE_ONLY: [header::HeaderName; 5] = [
    header::CONNECTION,
    header::UPGRADE,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_EXTENSIONS,
];

fn owned_uri(uri: &http::Uri) -> http::Uri {
    uri.to_string().parse().unwrap_or_else(|_| uri.clone())
}

/// The first of `served` that the client offers in `Sec-WebSocket-Protocol` (a comma list,
/// compared without case, spaces tolerated), echoed as the client spelled it.
fn chosen_protocol(headers: &HeaderMap, served: &[Proto]) -> Option<(HeaderValue, Proto)> {
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    served.iter().find_map(|proto| {
        let name = subprotocol(*proto);
        offered
            .iter()
            .find(|o| o.eq_ignore_ascii_case(name))
            .and_then(|o| HeaderValue::from_str(o).ok())
            .map(|v| (v, *proto))
    })
}

fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    // HTTP/2 (RFC 8441): an extended CONNECT, whose `:protocol` axum's extractor checks (an
    // application gets these only if it turns on axum's `http2`).
    if req.version() >= http::Version::HTTP_2 && req.method() == http::Method::CONNECT {
        return true;
    }
    req.headers()
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}

impl<S> Layer<S> for WampLayer {
    type Service = WampService<S>;

    fn layer(&self, inner: S) -> WampService<S> {
        WampService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`WampLayer`]: WebSocket upgrades become WAMP sessions, other
/// requests go to `S`.
#[derive(Clone)]
pub struct WampService<S> {
    inner: S,
    layer: WampLayer,
}

impl<S> fmt::Debug for WampService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WampService")
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

impl<S> WampService<S> {
    /// The server handle.
    #[must_use]
    pub fn handle(&self) -> Wamp {
        self.layer.handle()
    }
}

/// The future of [`WampService`].
pub type WampFuture<F, R, E> = Either<MapOk<F, fn(R) -> Response>, Ready<Result<Response, E>>>;

impl<S, B> Service<Request<B>> for WampService<S>
where
    S: Service<Request<B>>,
    S::Response: IntoResponse,
{
    type Response = Response;
    type Error = S::Error;
    type Future = WampFuture<S::Future, S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if is_websocket_upgrade(&req) {
            Either::Right(ready(Ok(self.layer.upgrade(req))))
        } else {
            let into: fn(S::Response) -> Response = IntoResponse::into_response;
            Either::Left(self.inner.call(req).map_ok(into))
        }
    }
}

/// The inner service of the standalone [`WampLayer::into_service`]: answers every
/// request that is not a WebSocket upgrade with `400 Bad Request`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NotUpgrade;

impl<B> Service<Request<B>> for NotUpgrade {
    type Response = Response;
    type Error = Infallible;
    type Future = Ready<Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<B>) -> Self::Future {
        ready(Ok((
            StatusCode::BAD_REQUEST,
            "not a WebSocket upgrade request: this endpoint speaks WAMP over WebSocket \
             (subprotocols `wamp.2.json`, `wamp.2.msgpack`, `wamp.2.cbor` and `wamp`)",
        )
            .into_response()))
    }
}
