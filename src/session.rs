//! The session handle that handlers, hooks and the server handle use to reach one
//! connected client.

use std::{
    collections::VecDeque,
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    task::{Poll, Waker},
};

use serde::Serialize;
use tokio::sync::Notify;

use crate::core::{
    SessionId,
    auth::{AuthKey, AuthState, Permissions},
    codec::v1,
    testament::{TestamentBudget, Testaments},
};
use crate::metrics::Metrics;
pub(crate) use crate::wire::Frame;
use crate::wire::Proto;

/// A request to close a session, read by its socket task.
#[derive(Debug, Clone)]
pub(crate) struct CloseRequest {
    pub(crate) code: u16,
    pub(crate) reason: String,
    /// Send what is already queued before the close frame.
    pub(crate) drain: bool,
    /// For a v2 session: the GOODBYE reason to send before the close frame (a close
    /// the router starts, not one the session machine answers).
    pub(crate) goodbye: Option<Arc<str>>,
}

/// What a session does when its outbound queue is full.
///
/// ```
/// use tower_wamp::SlowConsumerPolicy;
/// assert_eq!(SlowConsumerPolicy::default(), SlowConsumerPolicy::Disconnect);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowConsumerPolicy {
    /// Close the session (1008, `slow consumer: outbound queue full`) and count it: the
    /// client learns it missed events and can reconnect. The default.
    #[default]
    Disconnect,
    /// Drop the oldest queued frames to make room, and count them.
    DropOldest,
    /// Drop the frame that does not fit, and count it.
    DropNewest,
}

/// Bounds of one session's outbound queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    pub(crate) frames: usize,
    pub(crate) bytes: usize,
    pub(crate) policy: SlowConsumerPolicy,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            frames: 1024,
            bytes: 4 << 20,
            policy: SlowConsumerPolicy::Disconnect,
        }
    }
}

/// One queued frame and whether it answers a call (replies are never dropped by a
/// [`SlowConsumerPolicy`]: only events are).
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    pub(crate) frame: Frame,
    pub(crate) reply: bool,
}

#[derive(Debug, Default)]
struct QueueState {
    frames: VecDeque<Queued>,
    bytes: usize,
    close: Option<CloseRequest>,
    ended: bool,
    /// The writer, waiting for frames.
    writer: Option<Waker>,
}

impl QueueState {
    /// Drops queued events, oldest first, while `over` holds; replies stay. Returns how
    /// many were dropped.
    fn drop_oldest_events(&mut self, over: impl Fn(&Self) -> bool) -> u64 {
        let mut dropped = 0;
        while over(self) {
            let Some(at) = self.frames.iter().position(|f| !f.reply) else {
                break;
            };
            let old = self.frames.remove(at).expect("position is in range");
            self.bytes -= old.frame.len();
            dropped += 1;
        }
        dropped
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<QueueState>,
    notify: Notify,
    limits: QueueLimits,
    metrics: Arc<Metrics>,
    /// What the session speaks: how events for it are encoded.
    proto: Proto,
    /// The session's authentication (the session shares it), for publications that name
    /// their audience by authid or authrole.
    auth: Arc<Mutex<AuthSlot>>,
    /// Its testaments (`wamp.session.add_testament`), made when the first is added.
    testaments: Mutex<Option<Box<Testaments<crate::meta::Testament>>>>,
    /// Ended by `wamp.session.kill_all`: it leaves without meta events or testaments.
    quiet: std::sync::atomic::AtomicBool,
    /// `ended || close.is_some()` of the state, which never goes back: set under its lock,
    /// read without it (every read frame and every delivery asks).
    closed: std::sync::atomic::AtomicBool,
    /// The session's task is polling its reader, and polls its writer right after: a frame
    /// queued meanwhile needs no wake-up (which would only poll the task once more). Set
    /// by that task alone, without the lock; read under it (so that an `enqueue` that
    /// comes after the writer looked at the queue sees it cleared).
    in_poll: std::sync::atomic::AtomicBool,
}

/// What the socket task does next.
pub(crate) enum Next {
    /// Frames were queued: [`Outbox::next_into`] moved them into its batch.
    Frames,
    Close(CloseRequest),
}

const SLOW_CONSUMER: &str = "slow consumer: outbound queue full";
/// The GOODBYE reason of a v2 session the router closes (the application, an idle timeout).
pub(crate) use crate::core::session::v2::uri::KILLED;

/// One session's bounded outbound queue (frames and bytes) and its close signal. Producers
/// never wait: a full queue applies the [`SlowConsumerPolicy`] to events; a reply that
/// does not fit displaces queued events, and closes the session when only replies are
/// left.
#[derive(Debug, Clone)]
pub(crate) struct Outbox(Arc<Shared>);

impl Outbox {
    pub(crate) fn new(limits: QueueLimits, metrics: Arc<Metrics>, proto: Proto) -> Self {
        Self(Arc::new(Shared {
            state: Mutex::default(),
            notify: Notify::new(),
            limits,
            metrics,
            proto,
            auth: Arc::default(),
            testaments: Mutex::default(),
            quiet: std::sync::atomic::AtomicBool::new(false),
            closed: std::sync::atomic::AtomicBool::new(false),
            in_poll: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// Ends the session without meta events or testaments (`wamp.session.kill_all`).
    pub(crate) fn quiet(&self) {
        self.0
            .quiet
            .store(true, std::sync::atomic::Ordering::Relaxed);
        drop(self.take_testaments());
    }

    /// Whether it leaves without meta events.
    pub(crate) fn is_quiet(&self) -> bool {
        self.0.quiet.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs `f` on the session's testaments (made empty, within the default budget, when
    /// there are none yet).
    pub(crate) fn with_testaments<R>(
        &self,
        f: impl FnOnce(&mut Testaments<crate::meta::Testament>) -> R,
    ) -> R {
        let mut slot = self
            .0
            .testaments
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(slot.get_or_insert_with(|| Box::new(Testaments::new(TestamentBudget::default()))))
    }

    /// Takes the session's testaments, to publish them (none once taken or forgotten).
    /// Once taken, none can be added (an add still awaiting its permission when the session
    /// ended finds no room).
    pub(crate) fn take_testaments(&self) -> Vec<crate::meta::Testament> {
        let sealed = Testaments::new(TestamentBudget {
            entries: 0,
            bytes: 0,
        });
        let mut slot = self
            .0
            .testaments
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match slot.replace(Box::new(sealed)) {
            Some(mut t) => t.take(),
            None => Vec::new(),
        }
    }

    /// Asks `f` about the authid and authrole of the session this outbox belongs to (see
    /// [`Session::authid`] and [`Session::authrole`]), without copying them.
    pub(crate) fn with_identity<R>(&self, f: impl FnOnce(Option<&str>, Option<&str>) -> R) -> R {
        let slot = self.0.auth.lock().unwrap_or_else(PoisonError::into_inner);
        f(authid_of(&slot), authrole_of(&slot))
    }

    pub(crate) fn proto(&self) -> Proto {
        self.0.proto
    }

    /// Who the session is (for the meta API).
    pub(crate) fn identity(&self) -> Identity {
        let slot = self.0.auth.lock().unwrap_or_else(PoisonError::into_inner);
        Identity {
            authid: authid_of(&slot)
                .map(str::to_owned)
                .or_else(|| slot.welcomed_authid.clone()),
            authrole: authrole_of(&slot).map(str::to_owned),
            authmethod: slot.welcomed_by.map(|(m, _)| m),
            authprovider: slot.welcomed_by.map(|(_, p)| p),
        }
    }

    fn state(&self) -> MutexGuard<'_, QueueState> {
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.0.metrics
    }

    /// Queues an event frame without waiting.
    pub(crate) fn push(&self, frame: Frame) -> Result<(), SendError> {
        self.enqueue(Queued {
            frame,
            reply: false,
        })
    }

    /// Queues the answer to a call without waiting: never dropped by a policy.
    pub(crate) fn push_reply(&self, frame: Frame) -> Result<(), SendError> {
        self.enqueue(Queued { frame, reply: true })
    }

    /// Queues an INVOCATION unless the queue is three quarters full (in frames or bytes):
    /// a busy callee is not disconnected for the calls others make, and the last quarter
    /// stays for its replies and events. The caller is refused instead. Once queued it is
    /// never dropped (as a reply).
    pub(crate) fn push_invocation(&self, frame: Frame) -> Result<(), SendError> {
        self.enqueue_or_refuse(Queued { frame, reply: true }, true)
    }

    /// Queues a reply that may be refused rather than make room (a progressive result, an
    /// INTERRUPT): unless the queue is three quarters full, as an INVOCATION. Once queued
    /// it is never dropped.
    pub(crate) fn push_unless_busy(&self, frame: Frame) -> Result<(), SendError> {
        self.enqueue_or_refuse(Queued { frame, reply: true }, true)
    }

    /// Closes the session as a slow consumer (the queue lock is held by the caller).
    fn disconnect_slow(&self, mut q: MutexGuard<'_, QueueState>) -> Result<(), SendError> {
        self.mark_closed();
        q.close = Some(CloseRequest {
            code: 1008,
            reason: SLOW_CONSUMER.into(),
            drain: false,
            goodbye: None,
        });
        q.frames.clear();
        q.bytes = 0;
        let writer = q.writer.take();
        drop(q);
        Metrics::add(&self.0.metrics.slow_consumers_disconnected, 1);
        tracing::warn!("outbound queue full: closing slow consumer");
        self.0.notify.notify_one();
        if let Some(writer) = writer {
            writer.wake();
        }
        Err(SendError::QueueFull)
    }

    fn enqueue(&self, item: Queued) -> Result<(), SendError> {
        self.enqueue_or_refuse(item, false)
    }

    /// Queues `item`; with `refuse`, a full queue refuses it instead of applying the
    /// slow-consumer policy.
    fn enqueue_or_refuse(&self, item: Queued, refuse: bool) -> Result<(), SendError> {
        let limits = self.0.limits;
        let len = item.frame.len();
        let mut q = self.state();
        if q.ended || q.close.is_some() {
            return Err(SendError::Closed);
        }
        // One frame always fits into an empty queue, however large: the byte limit bounds a
        // backlog, not a single message.
        let over = |q: &QueueState| {
            !q.frames.is_empty()
                && (q.frames.len() >= limits.frames || q.bytes + len > limits.bytes)
        };
        if refuse
            && !q.frames.is_empty()
            && (q.frames.len() >= limits.frames - limits.frames / 4
                || q.bytes + len > limits.bytes - limits.bytes / 4)
        {
            return Err(SendError::QueueFull);
        }
        if over(&q) {
            match (limits.policy, item.reply) {
                (SlowConsumerPolicy::Disconnect, _) => return self.disconnect_slow(q),
                (SlowConsumerPolicy::DropNewest, false) => {
                    drop(q);
                    Metrics::add(&self.0.metrics.events_dropped, 1);
                    tracing::debug!("outbound queue full: frame dropped");
                    return Err(SendError::QueueFull);
                }
                (SlowConsumerPolicy::DropOldest, false) => {
                    let mut dropped = q.drop_oldest_events(over);
                    if over(&q) {
                        // Only replies are left, or the frame alone is larger than the limit.
                        dropped += 1;
                        Metrics::add(&self.0.metrics.events_dropped, dropped);
                        return Err(SendError::QueueFull);
                    }
                    Metrics::add(&self.0.metrics.events_dropped, dropped);
                    tracing::debug!(dropped, "outbound queue full: oldest frames dropped");
                }
                (SlowConsumerPolicy::DropNewest | SlowConsumerPolicy::DropOldest, true) => {
                    // Make room for the reply by dropping events, oldest first; a client
                    // whose queue holds only replies it does not read is a slow consumer.
                    let dropped = q.drop_oldest_events(over);
                    Metrics::add(&self.0.metrics.events_dropped, dropped);
                    if over(&q) && !q.frames.is_empty() {
                        return self.disconnect_slow(q);
                    }
                }
            }
        }
        let was_empty = q.frames.is_empty();
        q.bytes += len;
        q.frames.push_back(item);
        // The socket task drains the whole queue on each wake-up: only the first frame
        // of a batch needs to wake it.
        let writer = if was_empty && !self.0.in_poll.load(std::sync::atomic::Ordering::Relaxed) {
            q.writer.take()
        } else {
            None
        };
        drop(q);
        if let Some(writer) = writer {
            writer.wake();
        }
        Ok(())
    }

    /// Asks the socket task to close the connection; the first request wins.
    pub(crate) fn close(&self, code: u16, reason: &str, drain: bool) {
        self.close_request(code, reason, drain, None);
    }

    /// Closes after the queued frames; a v2 session is told GOODBYE with `goodbye` (for
    /// example `wamp.close.system_shutdown`) and `reason` as its message first.
    pub(crate) fn close_with_goodbye(&self, code: u16, reason: &str, goodbye: &str) {
        self.close_request(code, reason, true, Some(goodbye.into()));
    }

    fn close_request(&self, code: u16, reason: &str, drain: bool, goodbye: Option<Arc<str>>) {
        let writer = {
            let mut q = self.state();
            if q.ended || q.close.is_some() {
                return;
            }
            if !drain {
                // Nothing queued will be sent: free it now.
                q.frames = VecDeque::new();
                q.bytes = 0;
            }
            self.mark_closed();
            q.close = Some(CloseRequest {
                code,
                reason: reason.to_owned(),
                drain,
                goodbye,
            });
            q.writer.take()
        };
        self.0.notify.notify_one();
        if let Some(writer) = writer {
            writer.wake();
        }
    }

    /// Marks the session's task as polling its reader (see `Shared::in_poll`).
    pub(crate) fn set_in_poll(&self, in_poll: bool) {
        self.0
            .in_poll
            .store(in_poll, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the session is closing or closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.0.closed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records (under the state's lock) that the session is closing or closed.
    fn mark_closed(&self) {
        self.0
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Waits for frames to write or a close request (the socket task's side). Frames are
    /// moved into `batch` (an empty buffer whose capacity is reused: no allocation in the
    /// steady state), under the same lock that found them.
    pub(crate) async fn next_into(&self, batch: &mut VecDeque<Queued>) -> Next {
        std::future::poll_fn(|cx| {
            let mut q = self.state();
            if let Some(close) = q.close.take() {
                q.ended = true;
                if !close.drain {
                    q.frames = VecDeque::new();
                    q.bytes = 0;
                }
                return Poll::Ready(Next::Close(close));
            }
            if !q.frames.is_empty() {
                q.bytes = 0;
                std::mem::swap(&mut q.frames, batch);
                return Poll::Ready(Next::Frames);
            }
            match &q.writer {
                Some(waiting) if waiting.will_wake(cx.waker()) => {}
                _ => q.writer = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    /// Waits until a close that does not drain is requested: the writer stops writing
    /// what is queued (a slow consumer, a keepalive or authentication timeout).
    pub(crate) async fn abandoned(&self) {
        loop {
            if self.state().close.as_ref().is_some_and(|c| !c.drain) {
                return;
            }
            self.0.notify.notified().await;
        }
    }

    /// What is left to send once closing (only with a draining close).
    pub(crate) fn take_remaining(&self) -> VecDeque<Queued> {
        let mut q = self.state();
        q.bytes = 0;
        std::mem::take(&mut q.frames)
    }

    /// Marks the session ended: later pushes fail, queued frames are freed.
    pub(crate) fn end(&self) {
        let mut q = self.state();
        self.mark_closed();
        q.ended = true;
        q.close = None;
        q.frames = VecDeque::new();
        q.bytes = 0;
        // Its task's waker would keep the ended task's memory for as long as a clone of
        // this queue lives.
        q.writer = None;
    }
}

/// Why sending to a session failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The session has closed.
    Closed,
    /// The session's outbound queue was full: the session is being closed as a slow
    /// consumer.
    QueueFull,
    /// The session has no connection (a [`Call`](crate::Call) built in a test).
    NotConnected,
    /// No open session has this id.
    NoSuchSession,
    /// The event could not be serialized to JSON.
    Serialize(String),
    /// A WAMP v2 session receives events only on its subscriptions (an EVENT names one).
    NoSubscription,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("the session is closed"),
            Self::QueueFull => f.write_str("the session's outbound queue is full"),
            Self::NotConnected => f.write_str("the session has no connection"),
            Self::NoSuchSession => f.write_str("no open session has this id"),
            Self::Serialize(e) => write!(f, "the event does not serialize: {e}"),
            Self::NoSubscription => {
                f.write_str("a WAMP v2 session receives events only on its subscriptions")
            }
        }
    }
}

impl std::error::Error for SendError {}

pub(crate) fn event_frame(topic: &str, event: &impl Serialize) -> Result<Frame, SendError> {
    let value = serde_json::to_value(event).map_err(|e| SendError::Serialize(e.to_string()))?;
    Ok(Frame::from(v1::encode_event(topic, &value)))
}

/// A handle to one WAMP session: its id, and a way to send it events or close it.
///
/// Cheap to clone. Handlers get it with the [`Session`] extractor, hooks get a reference.
///
/// ```
/// use tower_wamp::{Call, Session};
///
/// // A session built for a test has an id but no connection.
/// let call = Call::new("http://example.com/api#f", vec![]);
/// let session: &Session = call.session();
/// assert_eq!(session.id().as_str().len(), 16);
/// assert!(session.send_event("http://example.com/t", &1).is_err());
/// ```
#[derive(Clone)]
pub struct Session {
    id: SessionId,
    outbox: Option<Outbox>,
    auth: Arc<Mutex<AuthSlot>>,
    /// The router, for a v2 session's subscription ids (weak: a handle kept by the
    /// application does not keep the router alive).
    hub: Weak<crate::hub::Hub>,
}

/// A session's WAMP-CRA state.
#[derive(Debug, Default)]
pub(crate) struct AuthSlot {
    pub(crate) state: AuthState,
    pub(crate) failures: u32,
    /// The session made as many failed attempts as it may: nothing more is accepted.
    pub(crate) locked: bool,
    /// No new `authreq` before this instant (the penalty of the last failure).
    pub(crate) retry_after: Option<tokio::time::Instant>,
    pub(crate) cached: Option<Arc<Permissions>>,
    /// The authrole a v2 session was welcomed with.
    pub(crate) welcomed_as: Option<Arc<str>>,
    /// The authrole a role table assigned to its authid when it authenticated.
    pub(crate) assigned_role: Option<Arc<str>>,
    /// The authmethod and authprovider of its WELCOME.
    pub(crate) welcomed_by: Option<(&'static str, &'static str)>,
    /// The authid of its WELCOME (for an anonymous session, a random one that names no one:
    /// only the meta API tells it).
    pub(crate) welcomed_authid: Option<String>,
}

/// Who a session is, as the meta API tells it.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) authid: Option<String>,
    pub(crate) authrole: Option<String>,
    pub(crate) authmethod: Option<&'static str>,
    pub(crate) authprovider: Option<&'static str>,
}

fn authid_of(slot: &AuthSlot) -> Option<&str> {
    match &slot.state {
        AuthState::Authenticated(AuthKey::Key(key)) => Some(key),
        _ => None,
    }
}

fn authrole_of(slot: &AuthSlot) -> Option<&str> {
    if let Some(authrole) = slot.welcomed_as.as_deref() {
        return Some(authrole);
    }
    match &slot.state {
        AuthState::Authenticated(AuthKey::Key(_)) if slot.assigned_role.is_some() => {
            slot.assigned_role.as_deref()
        }
        AuthState::Authenticated(AuthKey::Key(_)) => Some("user"),
        AuthState::Authenticated(_) => Some("anonymous"),
        _ => None,
    }
}

/// The WAMP version (and, for v2, the serializer) a session speaks.
///
/// ```
/// use tower_wamp::{Protocol, Session};
/// assert_eq!(Session::detached("s".into()).protocol(), None);
/// assert_eq!(Protocol::V1.subprotocol(), "wamp");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// WAMP v1, subprotocol `wamp`.
    V1,
    /// WAMP v2 over JSON (`wamp.2.json`).
    V2Json,
    /// WAMP v2 over MessagePack (`wamp.2.msgpack`).
    V2MsgPack,
    /// WAMP v2 over CBOR (`wamp.2.cbor`).
    V2Cbor,
}

impl Protocol {
    /// The WebSocket subprotocol name.
    #[must_use]
    pub fn subprotocol(self) -> &'static str {
        match self {
            Self::V1 => "wamp",
            Self::V2Json => "wamp.2.json",
            Self::V2MsgPack => "wamp.2.msgpack",
            Self::V2Cbor => "wamp.2.cbor",
        }
    }

    /// Whether this is WAMP v2.
    #[must_use]
    pub fn is_v2(self) -> bool {
        self != Self::V1
    }
}

impl From<Proto> for Protocol {
    fn from(proto: Proto) -> Self {
        use crate::core::codec::v2::Serializer;
        match proto {
            Proto::V1 => Self::V1,
            Proto::V2(Serializer::Json) => Self::V2Json,
            Proto::V2(Serializer::MsgPack) => Self::V2MsgPack,
            Proto::V2(Serializer::Cbor) => Self::V2Cbor,
        }
    }
}

impl Session {
    pub(crate) fn connected(id: SessionId, outbox: Outbox, hub: &Arc<crate::hub::Hub>) -> Self {
        Self {
            id,
            auth: outbox.0.auth.clone(),
            outbox: Some(outbox),
            hub: Arc::downgrade(hub),
        }
    }

    pub(crate) fn auth_slot(&self) -> MutexGuard<'_, AuthSlot> {
        self.auth.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Who the session is authenticated as, or `None` before authentication (and when
    /// the router has no authentication configured).
    ///
    /// ```
    /// assert_eq!(tower_wamp::Session::detached("s".into()).auth_key(), None);
    /// ```
    #[must_use]
    pub fn auth_key(&self) -> Option<AuthKey> {
        match &self.auth_slot().state {
            AuthState::Authenticated(key) => Some(key.clone()),
            _ => None,
        }
    }

    /// A handle to this session that is authenticated as `key` (for tests of handlers that
    /// look at [`auth_key`](Self::auth_key); the router authenticates sessions itself).
    ///
    /// Only the returned handle carries the identity: the live session, and every other
    /// handle to it, keep theirs, so a handler cannot elevate its client.
    ///
    /// ```
    /// use tower_wamp::{Session, core::auth::AuthKey};
    /// let live = Session::detached("s".into());
    /// let s = live.clone().authenticated_as(AuthKey::Key("ada".into()));
    /// assert_eq!(s.auth_key(), Some(AuthKey::Key("ada".into())));
    /// assert_eq!(live.auth_key(), None);
    /// ```
    #[must_use]
    pub fn authenticated_as(mut self, key: AuthKey) -> Self {
        self.auth = Arc::new(Mutex::new(AuthSlot {
            state: AuthState::Authenticated(key),
            ..AuthSlot::default()
        }));
        self
    }

    /// Authenticates the live session (every handle to it).
    pub(crate) fn mark_authenticated(&self, key: AuthKey) {
        self.auth_slot().state = AuthState::Authenticated(key);
    }

    /// Records the authrole of a v2 session's WELCOME.
    pub(crate) fn mark_welcomed(
        &self,
        authid: &str,
        authrole: &str,
        authmethod: &'static str,
        authprovider: &'static str,
    ) {
        let mut slot = self.auth_slot();
        slot.welcomed_as = Some(authrole.into());
        slot.welcomed_by = Some((authmethod, authprovider));
        slot.welcomed_authid = Some(authid.to_owned());
    }

    /// The session's authid: the auth key it authenticated with (WAMP-CRA or ticket, or
    /// the upstream identity), in either version. `None` for anonymous sessions (a v2
    /// anonymous session's WELCOME carries a random authid, which names no one), before
    /// authentication, and without authentication configured. So `authid().is_some()`
    /// means "authenticated as someone".
    ///
    /// ```
    /// use tower_wamp::{Session, core::auth::AuthKey};
    /// let s = Session::detached("s".into()).authenticated_as(AuthKey::Key("ada".into()));
    /// assert_eq!(s.authid().as_deref(), Some("ada"));
    /// assert_eq!(s.authrole().as_deref(), Some("user"));
    /// ```
    #[must_use]
    pub fn authid(&self) -> Option<String> {
        authid_of(&self.auth_slot()).map(str::to_owned)
    }

    /// The session's authrole: `user` for an auth key, `anonymous` otherwise, as a v2
    /// WELCOME says; `None` for a WAMP v1 session before it authenticates or without
    /// authentication configured (v1 has no roles).
    #[must_use]
    pub fn authrole(&self) -> Option<String> {
        authrole_of(&self.auth_slot()).map(str::to_owned)
    }

    /// The protocol the session speaks; `None` for a session without a connection.
    #[must_use]
    pub fn protocol(&self) -> Option<Protocol> {
        self.outbox.as_ref().map(|o| o.proto().into())
    }

    /// A session with this id and no connection, for tests of handlers.
    ///
    /// ```
    /// let s = tower_wamp::Session::detached("abc".into());
    /// assert_eq!(s.id().as_str(), "abc");
    /// assert!(!s.is_connected());
    /// ```
    #[must_use]
    pub fn detached(id: SessionId) -> Self {
        Self {
            id,
            outbox: None,
            auth: Arc::default(),
            hub: Weak::new(),
        }
    }

    /// The session id, as sent in WELCOME.
    #[must_use]
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// Whether the session still has an open connection.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.outbox.as_ref().is_some_and(|o| !o.is_closed())
    }

    /// Sends `event` on `topic` to this session alone: a WAMP v1 session gets
    /// `[8, topic, event]` whether or not it is subscribed; a WAMP v2 session gets an EVENT
    /// with `args = [event]` if it is subscribed to `topic` (an EVENT names a
    /// subscription), as [`Wamp::send`](crate::Wamp::send) does.
    ///
    /// # Errors
    /// [`SendError`] if the session is gone, not connected, its queue is full, or it is a
    /// v2 session not subscribed to `topic` ([`SendError::NoSubscription`]).
    pub fn send_event(&self, topic: &str, event: &impl Serialize) -> Result<(), SendError> {
        let outbox = self.outbox.as_ref().ok_or(SendError::NotConnected)?;
        if outbox.proto() == Proto::V1 {
            return outbox.push(event_frame(topic, event)?);
        }
        let hub = self.hub.upgrade().ok_or(SendError::Closed)?;
        crate::Wamp { hub }.send(&self.id, topic, event)
    }

    /// Closes the connection with a normal close (1000) after what is queued is sent; a
    /// WAMP v2 session is told GOODBYE `wamp.close.killed` first.
    pub fn close(&self) {
        if let Some(o) = &self.outbox {
            o.close_with_goodbye(1000, "closed by the server", KILLED);
        }
    }

    pub(crate) fn outbox(&self) -> Option<&Outbox> {
        self.outbox.as_ref()
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// Why a session ended, as passed to the `on_close` hook.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client sent a close frame.
    Client {
        /// The close code, if the client gave one.
        code: Option<u16>,
        /// The close reason text.
        reason: String,
    },
    /// The connection ended without a close frame.
    Disconnected,
    /// The server closed the session (a killing error, [`Session::close`], a slow
    /// consumer, a protocol violation, an oversize message).
    Server {
        /// The close code sent.
        code: u16,
        /// The reason sent.
        reason: String,
    },
    /// A transport error ended the session.
    Error(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(frames: usize, bytes: usize, policy: SlowConsumerPolicy) -> Outbox {
        Outbox::new(
            QueueLimits {
                frames,
                bytes,
                policy,
            },
            Arc::default(),
            Proto::V1,
        )
    }

    fn queued(o: &Outbox) -> Vec<String> {
        o.take_remaining()
            .iter()
            .map(|f| f.frame.to_string())
            .collect()
    }

    struct Wakes(std::sync::atomic::AtomicUsize);
    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_frame_queued_while_the_reader_polls_wakes_no_one_and_is_still_taken() {
        let o = outbox(100, 1 << 20, SlowConsumerPolicy::DropNewest);
        let wakes = Arc::new(Wakes(Default::default()));
        let waker = Waker::from(wakes.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let woken = || wakes.0.load(std::sync::atomic::Ordering::SeqCst);
        let mut batch = VecDeque::new();
        let mut next = Box::pin(o.next_into(&mut batch));
        assert!(next.as_mut().poll(&mut cx).is_pending());
        // Queued by the reader (or by another task while the reader is polled): the writer
        // is polled next, and takes it without a wake-up.
        o.set_in_poll(true);
        o.push_reply(Frame::from("a")).unwrap();
        o.set_in_poll(false);
        assert_eq!(woken(), 0);
        assert!(matches!(
            next.as_mut().poll(&mut cx),
            Poll::Ready(Next::Frames)
        ));
        drop(next);
        assert_eq!(batch.len(), 1);
        batch.clear();
        // Queued from elsewhere while the task waits: it is woken.
        let mut next = Box::pin(o.next_into(&mut batch));
        assert!(next.as_mut().poll(&mut cx).is_pending());
        o.push_reply(Frame::from("b")).unwrap();
        assert_eq!(woken(), 1);
        assert!(matches!(
            next.as_mut().poll(&mut cx),
            Poll::Ready(Next::Frames)
        ));
        drop(next);
        assert_eq!(batch.len(), 1);
        batch.clear();
        // And a close wakes it whatever the task is doing.
        let mut next = Box::pin(o.next_into(&mut batch));
        assert!(next.as_mut().poll(&mut cx).is_pending());
        o.set_in_poll(true);
        o.close(1000, "bye", true);
        assert_eq!(woken(), 2);
        assert!(matches!(
            next.as_mut().poll(&mut cx),
            Poll::Ready(Next::Close(_))
        ));
    }

    #[test]
    fn every_way_of_closing_shows_in_is_closed() {
        let fresh = || outbox(1, 1 << 20, SlowConsumerPolicy::Disconnect);
        let o = fresh();
        assert!(!o.is_closed());
        o.close(1000, "bye", true);
        assert!(o.is_closed());
        let o = fresh();
        o.close_with_goodbye(1001, "going", "wamp.close.system_shutdown");
        assert!(o.is_closed());
        let o = fresh();
        o.end();
        assert!(o.is_closed());
        // A slow consumer: its second frame does not fit.
        let o = fresh();
        o.push(Frame::from("a")).unwrap();
        assert_eq!(o.push(Frame::from("b")), Err(SendError::QueueFull));
        assert!(o.is_closed());
    }

    #[test]
    fn the_byte_limit_applies_as_well_as_the_frame_limit() {
        let o = outbox(100, 10, SlowConsumerPolicy::DropNewest);
        assert!(o.push(Frame::from("aaaa")).is_ok());
        assert!(o.push(Frame::from("bbbb")).is_ok());
        assert_eq!(o.push(Frame::from("cccc")), Err(SendError::QueueFull));
        assert_eq!(queued(&o), ["aaaa", "bbbb"]);
        assert_eq!(o.0.metrics.snapshot().events_dropped, 1);
    }

    #[test]
    fn drop_oldest_makes_room() {
        let o = outbox(2, 1 << 20, SlowConsumerPolicy::DropOldest);
        for f in ["1", "2", "3", "4"] {
            assert!(o.push(Frame::from(f)).is_ok());
        }
        assert_eq!(queued(&o), ["3", "4"]);
        assert_eq!(o.0.metrics.snapshot().events_dropped, 2);
        // A frame larger than the byte limit is queued alone, never beside others.
        let small = outbox(10, 3, SlowConsumerPolicy::DropOldest);
        assert!(small.push(Frame::from("toolong")).is_ok());
        assert_eq!(small.push(Frame::from("x")), Ok(()));
        assert_eq!(queued(&small), ["x"], "the large one made room");
        for policy in [
            SlowConsumerPolicy::Disconnect,
            SlowConsumerPolicy::DropNewest,
        ] {
            let o = outbox(10, 3, policy);
            assert!(o.push(Frame::from("toolong")).is_ok(), "{policy:?}");
            assert!(o.push(Frame::from("x")).is_err(), "{policy:?}");
        }
    }

    #[test]
    fn disconnect_closes_and_refuses_more() {
        let o = outbox(1, 1 << 20, SlowConsumerPolicy::Disconnect);
        assert!(o.push(Frame::from("1")).is_ok());
        assert_eq!(o.push(Frame::from("2")), Err(SendError::QueueFull));
        assert!(o.is_closed());
        assert_eq!(o.push(Frame::from("3")), Err(SendError::Closed));
        assert_eq!(o.0.metrics.snapshot().slow_consumers_disconnected, 1);
        assert!(queued(&o).is_empty(), "a slow consumer's backlog is freed");
    }

    #[test]
    fn policies_drop_events_never_replies() {
        for policy in [
            SlowConsumerPolicy::DropNewest,
            SlowConsumerPolicy::DropOldest,
        ] {
            let o = outbox(3, 1 << 20, policy);
            assert!(o.push(Frame::from("e1")).is_ok());
            assert!(o.push_reply(Frame::from("r1")).is_ok());
            assert!(o.push(Frame::from("e2")).is_ok());
            // Full: a reply displaces the oldest event.
            assert!(o.push_reply(Frame::from("r2")).is_ok(), "{policy:?}");
            let left = queued(&o);
            assert_eq!(left, ["r1", "e2", "r2"], "{policy:?}");
            // Full of replies: the next reply closes the session as a slow consumer.
            let o = outbox(2, 1 << 20, policy);
            assert!(o.push_reply(Frame::from("r1")).is_ok());
            assert!(o.push_reply(Frame::from("r2")).is_ok());
            assert_eq!(o.push_reply(Frame::from("r3")), Err(SendError::QueueFull));
            assert!(o.is_closed(), "{policy:?}");
            // An event never displaces a reply.
            let o = outbox(1, 1 << 20, policy);
            assert!(o.push_reply(Frame::from("r1")).is_ok());
            assert_eq!(o.push(Frame::from("e1")), Err(SendError::QueueFull));
            assert_eq!(queued(&o), ["r1"], "{policy:?}");
        }
    }
}
