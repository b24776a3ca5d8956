//! The per-connection task. After WELCOME it runs two halves side by side until one ends:
//!
//! - the reader takes frames off the socket and acts on them (calls, subscriptions,
//!   publications, which may await user callbacks);
//! - the writer drains the outbound queue, sends pings, and keeps the session's deadlines
//!   (authentication, keepalive, idle). Every write has a deadline, and a close request
//!   that does not drain abandons a write in progress.
//!
//! Neither half can hold the other up: a client that stops reading is dropped by the write
//! deadline or the slow-consumer policy while the reader waits, and a reader that awaits a
//! permission provider or broker function does not stop the queue from draining.
//! Cleanup (tables, slot, `on_close`) runs in drop guards, so it happens even if something
//! in the task panics.

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use axum::extract::ws::{CloseFrame, Message as WsMessage};
use futures_util::{SinkExt as _, StreamExt as _};
use http::request::Parts;
use tokio::{task::JoinSet, time::Instant};
use tracing::Instrument as _;

use crate::{
    Call, CallReply, RpcError, Session,
    clip::Clip,
    core::{
        Exclude, SessionId,
        auth::AuthKey,
        codec::{
            v1,
            v2::{self as v2c, Dict},
        },
        error_uri,
        matching::MatchPolicy,
        random_id,
        session::{Action, SessionState, v2 as v2s},
    },
    extract::CallIdText,
    layer::Config,
    metrics::Metrics,
    router::{Inner, Refused, panic_message},
    session::{CloseReason, CloseRequest, Frame, Next, Outbox, Queued},
    wire::{Payload, Proto, v2_error_uri},
};

/// How long a closing session may take to send its close frame (and, with a draining
/// close, what is queued before it).
const CLOSE_DEADLINE: Duration = Duration::from_secs(2);
/// How long to wait for the client's answer to our close frame before dropping the socket.
const CLOSE_ANSWER: Duration = Duration::from_secs(1);
/// The size below which the cancel senders of ended calls are not swept out.
const MIN_CANCEL_SWEEP: usize = 64;

/// The sending half of a session's transport: a WebSocket's, or a RawSocket connection
/// made to look like one (`crate::rawsocket`).
pub(crate) type Sink =
    std::pin::Pin<Box<dyn futures_util::Sink<WsMessage, Error = axum::Error> + Send>>;
/// The receiving half of a session's transport.
pub(crate) type Stream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<WsMessage, axum::Error>> + Send>>;

/// The protocol state machine of a session.
enum ProtoState {
    V1(SessionState),
    V2(v2s::State),
}

/// The session's task. Not an async fn: an async fn keeps room for its arguments in its
/// future for its whole life, moved out or not, and the WebSocket is split here.
pub(crate) fn run(
    upgraded: hyper::upgrade::Upgraded,
    router: Arc<Inner<()>>,
    config: Arc<Config>,
    parts: Arc<Parts>,
    proto: Proto,
) -> impl Future<Output = ()> {
    let (sink, stream) = crate::ws::split(
        hyper_util::rt::TokioIo::new(upgraded),
        config.read_buffer_size,
        config.max_message_size,
    );
    run_on(
        Box::pin(sink),
        Box::pin(stream),
        router,
        config,
        parts,
        proto,
    )
}

/// [`run`] on any transport with a WebSocket's shape.
pub(crate) fn run_on(
    sink: Sink,
    stream: Stream,
    router: Arc<Inner<()>>,
    config: Arc<Config>,
    parts: Arc<Parts>,
    proto: Proto,
) -> impl Future<Output = ()> {
    // Frees the `max_sessions` slot however the task ends, a panic included.
    let slot = SlotGuard(router.clone());
    // A router built outside a runtime starts its backplane with its first session.
    router.wamp().hub.start_backplane();
    let id = match proto {
        Proto::V1 => SessionId::random(),
        // WAMP v2 session ids are numbers, drawn at random in [1, 2^53].
        Proto::V2(_) => SessionId::numeric(random_id()),
    };
    let span = session_span(config.session_span_level, &id, proto);
    let session = session(slot, sink, stream, id, router, config, parts, proto);
    // A disabled span is not entered and left on every poll of the session.
    if span.is_disabled() {
        futures_util::future::Either::Left(session)
    } else {
        futures_util::future::Either::Right(session.instrument(span))
    }
}

/// The session's span, at the layer's level (`tracing`'s macros take a constant one).
fn session_span(level: tracing::Level, id: &SessionId, proto: Proto) -> tracing::Span {
    use tracing::Level;
    match level {
        Level::ERROR => tracing::error_span!("wamp_session", session_id = %id, protocol = ?proto),
        Level::WARN => tracing::warn_span!("wamp_session", session_id = %id, protocol = ?proto),
        Level::INFO => tracing::info_span!("wamp_session", session_id = %id, protocol = ?proto),
        Level::DEBUG => tracing::debug_span!("wamp_session", session_id = %id, protocol = ?proto),
        _ => tracing::trace_span!("wamp_session", session_id = %id, protocol = ?proto),
    }
}

struct SlotGuard(Arc<Inner<()>>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.wamp().hub.release_slot();
    }
}

/// Removes an open session from the router's tables and runs its `on_close` hook when
/// dropped, with the reason set before (a panic leaves the default).
struct OpenSession {
    router: Arc<Inner<()>>,
    session: Session,
    outbox: Outbox,
    /// As a v2 callee: its invocations in flight, failed when it ends.
    pending: Arc<crate::dealer::Pending>,
    reason: CloseReason,
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        // Ended first: a subscribe or register racing with this close is refused under the
        // broker's (registrations') lock, then the entries are removed under it.
        self.outbox.end();
        let registrations = self
            .router
            .wamp()
            .hub
            .remove_registrations(self.session.id());
        self.pending.close();
        tracing::info!(session_id = %self.session.id(), reason = ?self.reason, "session closed");
        self.router
            .closed(&self.session, &self.reason, &registrations);
        // Whatever ended it (GOODBYE too, as the spec has it; not `kill_all`), what it left
        // is published now, in order, as it would have published it.
        let testaments = self.outbox.take_testaments();
        if !testaments.is_empty() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let (router, session) = (self.router.clone(), self.session.clone());
                    runtime.spawn(async move {
                        router.publish_testaments(&session, testaments).await;
                    });
                }
                Err(_) => tracing::debug!("no runtime: testaments dropped"),
            }
        }
    }
}

/// When the session last received anything (for keepalive) and last received a WAMP
/// message (for the idle timeout), shared by the two halves.
struct Clock {
    base: Instant,
    last_read: AtomicU64,
    last_message: AtomicU64,
    /// The reader is awaiting a callback (a permission provider, a subscribe predicate, a
    /// broker function) and reads nothing meanwhile: no pong can be seen, so none is due.
    busy: AtomicBool,
}

impl Clock {
    fn new(base: Instant) -> Self {
        Self {
            base,
            last_read: AtomicU64::new(0),
            last_message: AtomicU64::new(0),
            busy: AtomicBool::new(false),
        }
    }

    fn since_base(&self, now: Instant) -> u64 {
        u64::try_from(now.duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    fn read(&self, now: Instant, message: bool) {
        let t = self.since_base(now);
        self.last_read.store(t, Ordering::Relaxed);
        if message {
            self.last_message.store(t, Ordering::Relaxed);
        }
    }

    fn last_read(&self) -> Instant {
        self.base + Duration::from_nanos(self.last_read.load(Ordering::Relaxed))
    }

    fn last_message(&self) -> Instant {
        self.base + Duration::from_nanos(self.last_message.load(Ordering::Relaxed))
    }
}

#[allow(clippy::too_many_arguments)]
async fn session(
    _slot: SlotGuard,
    mut sink: Sink,
    mut stream: Stream,
    id: SessionId,
    router: Arc<Inner<()>>,
    config: Arc<Config>,
    parts: Arc<Parts>,
    proto: Proto,
) {
    let hub = router.wamp().hub.clone();
    if hub.is_shutting_down() {
        Box::pin(going_away(&mut sink, proto, false)).await;
        return;
    }
    let outbox = Outbox::new(config.queue, hub.metrics.clone(), proto);
    let session = Session::connected(id.clone(), outbox.clone(), &hub);
    let state = match proto {
        Proto::V1 => {
            let welcome = v1::encode_welcome(&id, &config.server_ident);
            match tokio::time::timeout(
                config.write_timeout,
                sink.send(WsMessage::Text(welcome.into())),
            )
            .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "client left before WELCOME");
                    return;
                }
                Err(_) => {
                    tracing::debug!("WELCOME not written in time");
                    return;
                }
            }
            ProtoState::V1(SessionState::with_limits(
                config.close_on_protocol_violation,
                config.limits,
            ))
        }
        Proto::V2(serializer) => {
            // The handshake's future is boxed: it is over once the session runs, and
            // inline it would size every session's task for its whole life.
            let opened = Box::pin(crate::v2::open(
                &mut sink,
                &mut stream,
                &router,
                &config,
                &parts,
                &session,
                serializer,
            ));
            match opened.await {
                crate::v2::Opened::Welcome { state } => ProtoState::V2(state),
                crate::v2::Opened::Refused => return,
            }
        }
    };
    // (A v2 session is listed by its handshake, before WELCOME.)
    if proto == Proto::V1 && !hub.add_session(id.clone(), outbox.clone()) {
        // Shutdown began while this session was being set up.
        Box::pin(going_away(&mut sink, proto, true)).await;
        return;
    }
    let pending: Arc<crate::dealer::Pending> = Arc::default();
    let mut open = OpenSession {
        router: router.clone(),
        session: session.clone(),
        outbox: outbox.clone(),
        pending: pending.clone(),
        reason: CloseReason::Error("the session task panicked".into()),
    };
    let mut auth_deadline = None;
    // A v2 session authenticated in its handshake.
    if let (Some(cra), Proto::V1) = (router.auth_config(), proto) {
        let identity = cra.identity.as_ref().and_then(|identity| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| identity(&parts)))
                .unwrap_or_else(|p| {
                    tracing::error!(session_id = %session.id(), panic = %panic_message(&*p), "identity_from panicked: WAMP-CRA is required");
                    None
                })
        });
        if let Some(key) = identity {
            tracing::info!(session_id = %session.id(), auth_key = %Clip(&key), "authenticated by the upgrade request");
            let key = AuthKey::Key(key);
            session.auth_slot().assigned_role = router.role_of(&key).map(Into::into);
            session.mark_authenticated(key);
        } else if !cra.timeout.is_zero() {
            auth_deadline = Some(Instant::now() + cra.timeout);
        }
    }
    tracing::info!(session_id = %session.id(), protocol = ?proto, "session opened");
    router.opened(&session);
    let metrics = hub.metrics.clone();
    let clock = Clock::new(Instant::now());
    let mut conn = Conn {
        router: router.clone(),
        state,
        rate: RateState::new(&config),
        config: config.clone(),
        parts,
        session: session.clone(),
        outbox: outbox.clone(),
        metrics: metrics.clone(),
        calls: JoinSet::new(),
        in_flight: Arc::default(),
        pending,
        cancels: HashMap::new(),
        sweep_cancels_at: MIN_CANCEL_SWEEP,
        streams: HashMap::new(),
    };

    let (reason, ended_by) = {
        // The reader is polled only on its own wake-ups, not on every write.
        // Pinned where they are made: a future moved into `pin!` would keep its first
        // place in this task's future as well.
        let mut reader =
            std::pin::pin!(crate::gate::Gated::new(conn.read_loop(&mut stream, &clock)));
        let mut writer = std::pin::pin!(write_loop(
            &mut sink,
            &outbox,
            &config,
            &clock,
            &session,
            auth_deadline
        ));
        // The reader first, then the writer, in the same poll: what the reader queues is
        // written at once, and wakes no one (which would only poll this task again).
        std::future::poll_fn(|cx| {
            outbox.set_in_poll(true);
            let read = reader.as_mut().poll(cx);
            outbox.set_in_poll(false);
            if let Poll::Ready(reason) = read {
                return Poll::Ready((reason, EndedBy::Reader));
            }
            writer
                .as_mut()
                .poll(cx)
                .map(|(reason, sent)| (reason, EndedBy::Writer { close_sent: sent }))
        })
        .await
    };
    // The session's calls end with it; its tables are cleaned up and `on_close` runs now,
    // before the last I/O of the close handshake. Calls to its procedures fail.
    conn.calls.abort_all();
    drop(conn);
    let client_closed = matches!(reason, CloseReason::Client { .. });
    open.reason = reason;
    drop(open);
    Box::pin(finish(&mut sink, &mut stream, client_closed, ended_by)).await;
}

/// The last I/O of a session: the close handshake's end.
async fn finish(sink: &mut Sink, stream: &mut Stream, client_closed: bool, ended_by: EndedBy) {
    if client_closed && matches!(ended_by, EndedBy::Reader) {
        // Answer the close handshake: the WebSocket queued our close frame when it read the
        // client's; flush it before dropping the socket.
        let flushed = tokio::time::timeout(CLOSE_DEADLINE, sink.close()).await;
        if flushed.is_err() {
            tracing::debug!("close answer not delivered in time");
        }
    } else if let EndedBy::Reader = ended_by {
        // A protocol error: the close frame that tells the client why is queued; it goes
        // out before the connection is dropped.
        let _ = tokio::time::timeout(CLOSE_DEADLINE, sink.flush()).await;
    } else if let EndedBy::Writer { close_sent: true } = ended_by {
        // Our close frame is out: give the client a moment to answer it, so that the
        // connection ends with a clean handshake rather than a reset.
        let answer = async {
            while let Some(Ok(message)) = stream.next().await {
                if matches!(message, WsMessage::Close(_)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_ANSWER, answer).await;
    }
}

#[derive(Clone, Copy)]
enum EndedBy {
    Reader,
    Writer { close_sent: bool },
}

/// Sends a 1001 close to a session that arrives during shutdown; a v2 client is told
/// first, with GOODBYE once `welcomed`, else with ABORT (`wamp.close.system_shutdown`).
async fn going_away(sink: &mut Sink, proto: Proto, welcomed: bool) {
    const REASON: &str = "server shutting down";
    let goodbye = async {
        if let Proto::V2(serializer) = proto {
            let uri = crate::core::session::v2::uri::SYSTEM_SHUTDOWN;
            let leave = Frame::v2_leave(serializer, welcomed, uri, REASON);
            sink.feed(leave.into_message()).await?;
        }
        let frame = WsMessage::Close(Some(CloseFrame {
            code: 1001,
            reason: REASON.into(),
        }));
        sink.send(frame).await
    };
    let _ = tokio::time::timeout(CLOSE_DEADLINE, goodbye).await;
}

/// Keepalive, idle and authentication deadlines, kept by the writer.
struct Timers {
    auth_deadline: Option<Instant>,
    ping_interval: Option<Duration>,
    pong_timeout: Duration,
    idle: Option<Duration>,
    next_ping: Option<Instant>,
    ping_sent: Option<Instant>,
}

impl Timers {
    fn new(config: &Config, start: Instant, auth_deadline: Option<Instant>) -> Self {
        Self {
            auth_deadline,
            ping_interval: config.ping_interval,
            pong_timeout: config.pong_timeout,
            idle: config.idle_timeout,
            next_ping: config.ping_interval.map(|d| start + d),
            ping_sent: None,
        }
    }

    /// A ping that the client has not answered yet: its answer is due at this instant.
    fn pong_due(&self, clock: &Clock) -> Option<Instant> {
        let sent = self.ping_sent?;
        (clock.last_read() < sent && !clock.busy.load(Ordering::Relaxed))
            .then(|| sent + self.pong_timeout)
    }

    fn next_deadline(&self, clock: &Clock) -> Option<Instant> {
        [
            self.auth_deadline,
            self.idle.map(|d| clock.last_message() + d),
            self.pong_due(clock),
            self.next_ping,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Acts on every deadline that has passed; `true` when a ping is due.
    fn fire(&mut self, now: Instant, clock: &Clock, outbox: &Outbox, session: &Session) -> bool {
        if self.auth_deadline.is_some_and(|d| now >= d) {
            self.auth_deadline = None;
            if session.auth_key().is_none() {
                tracing::warn!(session_id = %session.id(), "not authenticated in time: closing");
                outbox.close(1008, "authentication timeout", false);
            }
        }
        // A deadline that fired is disarmed (the session is closing): the writer looks at
        // its timers first, and one that stayed due would be all it did.
        if let Some(idle) = self.idle
            && now >= clock.last_message() + idle
        {
            self.idle = None;
            tracing::info!(session_id = %session.id(), "idle timeout: closing");
            outbox.close_with_goodbye(1000, "idle timeout", crate::session::KILLED);
        }
        if let Some(sent) = self.ping_sent {
            if clock.last_read() >= sent {
                self.ping_sent = None;
            } else if now >= sent + self.pong_timeout && !clock.busy.load(Ordering::Relaxed) {
                self.ping_sent = None;
                self.ping_interval = None;
                self.next_ping = None;
                tracing::warn!(session_id = %session.id(), "no pong before the deadline: closing");
                outbox.close(1008, "keepalive timeout: no pong", false);
            }
        }
        if let (Some(interval), Some(next)) = (self.ping_interval, self.next_ping)
            && now >= next
        {
            self.next_ping = Some(now + interval);
            // A session that is closing is not pinged (its close would wait behind it).
            if outbox.is_closed() {
                return false;
            }
            if self.ping_sent.is_none() {
                self.ping_sent = Some(now);
            }
            return true;
        }
        false
    }
}

enum WriteError {
    /// No progress within the write timeout.
    Timeout,
    /// A close that does not drain was requested meanwhile.
    Abandoned,
    Io(axum::Error),
}

/// One write step under the write deadline.
async fn step(
    deadline: Duration,
    write: impl Future<Output = Result<(), axum::Error>>,
) -> Result<(), WriteError> {
    let mut write = std::pin::pin!(write);
    // Most writes finish at once (the socket has room): the deadline's timer is made only
    // for one that has to wait.
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    if let Poll::Ready(written) = first {
        return written.map_err(WriteError::Io);
    }
    match tokio::time::timeout(deadline, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(WriteError::Io(e)),
        Err(_) => Err(WriteError::Timeout),
    }
}

/// Writes every frame of `batch`, then flushes once; each step has the write deadline.
async fn write_batch(
    sink: &mut Sink,
    batch: &mut VecDeque<Queued>,
    deadline: Duration,
) -> Result<u64, WriteError> {
    let n = batch.len() as u64;
    while let Some(queued) = batch.pop_front() {
        step(deadline, sink.feed(queued.frame.into_message())).await?;
    }
    step(deadline, sink.flush()).await?;
    Ok(n)
}

/// The writer half: returns why the session ends and whether a close frame went out.
async fn write_loop(
    sink: &mut Sink,
    outbox: &Outbox,
    config: &Config,
    clock: &Clock,
    session: &Session,
    auth_deadline: Option<Instant>,
) -> (CloseReason, bool) {
    let metrics = outbox.metrics().clone();
    let mut timers = Timers::new(config, clock.base, auth_deadline);
    let mut batch = VecDeque::new();
    let far = clock.base + Duration::from_secs(86400 * 365);
    let sleep = tokio::time::sleep_until(timers.next_deadline(clock).unwrap_or(far));
    tokio::pin!(sleep);
    // The waker the timer holds for its current deadline: while it is this task's, the
    // timer need not be polled again until it fires (it was polled on each of the writer's
    // wake-ups, twice per call).
    let mut armed: Option<Waker> = None;
    loop {
        let deadline = timers.next_deadline(clock).unwrap_or(far);
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
            // tokio's timer keeps its waker through a reset; one that replaced its entry
            // would not, so the next poll registers it again.
            armed = None;
        }
        // The deadlines first: a queue that is never empty (a busy topic, a client that
        // reads just fast enough) must not keep the idle, keepalive and authentication
        // deadlines from firing.
        tokio::select! {
            biased;
            () = std::future::poll_fn(|cx| poll_deadline(sleep.as_mut(), &mut armed, cx)) => {
                if timers.fire(Instant::now(), clock, outbox, session) {
                    // Boxed: a ping is rare, and this future lives as long as the session.
                    let ping = Box::pin(async {
                        tokio::select! {
                            biased;
                            r = step(config.write_timeout, sink.send(WsMessage::Ping(Default::default()))) => r,
                            () = outbox.abandoned() => Err(WriteError::Abandoned),
                        }
                    })
                    .await;
                    match ping {
                        Ok(()) | Err(WriteError::Abandoned) => {}
                        Err(WriteError::Timeout) => return write_timed_out(&metrics, config),
                        Err(WriteError::Io(e)) => return (CloseReason::Error(e.to_string()), false),
                    }
                }
            }
            next = outbox.next_into(&mut batch) => match next {
                Next::Frames => {
                    let written = tokio::select! {
                        biased;
                        r = write_batch(sink, &mut batch, config.write_timeout) => r,
                        () = outbox.abandoned() => Err(WriteError::Abandoned),
                    };
                    batch.clear();
                    match written {
                        Ok(n) => Metrics::add(&metrics.messages_out, n),
                        // The close request is taken on the next turn.
                        Err(WriteError::Abandoned) => {}
                        Err(WriteError::Timeout) => return write_timed_out(&metrics, config),
                        Err(WriteError::Io(e)) => return (CloseReason::Error(e.to_string()), false),
                    }
                }
                // Boxed, as the session's other one-off steps: see `session`.
                Next::Close(request) => return Box::pin(close(sink, outbox, request)).await,
            },
        }
    }
}

/// Polls the writer's deadline only when it has to be: after each new deadline, when the
/// task's waker is not the one the timer holds, and once the timer has fired. A poll that
/// tokio's cooperative budget turned away registered nothing, so the next one polls again
/// (`select!` itself yields first when the budget is spent: this only makes sure).
fn poll_deadline(
    sleep: Pin<&mut tokio::time::Sleep>,
    armed: &mut Option<Waker>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    if armed.as_ref().is_some_and(|w| w.will_wake(cx.waker())) && !sleep.is_elapsed() {
        return Poll::Pending;
    }
    let budget = tokio::task::coop::has_budget_remaining();
    let polled = sleep.poll(cx);
    *armed = (polled.is_pending() && budget).then(|| cx.waker().clone());
    polled
}

fn write_timed_out(metrics: &Metrics, config: &Config) -> (CloseReason, bool) {
    Metrics::add(&metrics.write_timeouts, 1);
    tracing::warn!(timeout = ?config.write_timeout, "client did not drain its socket in time: dropped");
    (CloseReason::Error("write timeout".into()), false)
}

/// Sends the close frame (after what is queued, for a draining close) within the close
/// deadline.
async fn close(sink: &mut Sink, outbox: &Outbox, request: CloseRequest) -> (CloseReason, bool) {
    let CloseRequest {
        code,
        reason,
        drain,
        goodbye,
    } = request;
    let goodbye = match (goodbye, outbox.proto()) {
        (Some(uri), Proto::V2(serializer)) => {
            Some(Frame::v2_leave(serializer, true, &uri, &reason))
        }
        _ => None,
    };
    let goodbye = async {
        if drain {
            for queued in outbox.take_remaining() {
                sink.feed(queued.frame.into_message()).await?;
            }
        }
        if let Some(frame) = goodbye {
            sink.feed(frame.into_message()).await?;
        }
        sink.send(WsMessage::Close(Some(CloseFrame {
            code,
            reason: close_reason(&reason).into(),
        })))
        .await
    };
    let sent = match tokio::time::timeout(CLOSE_DEADLINE, goodbye).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "close frame not delivered");
            false
        }
        Err(_) => {
            tracing::debug!("close deadline passed before the close frame was sent");
            false
        }
    };
    (CloseReason::Server { code, reason }, sent)
}

/// Whether a transport error is an oversize message.
fn is_oversize(error: &axum::Error) -> bool {
    crate::ws::is_oversize(error)
}

/// The per-session token bucket of incoming messages.
struct RateState {
    tokens: f64,
    refilled: Instant,
}

impl RateState {
    fn new(config: &Config) -> Self {
        Self {
            tokens: config.rate_limit.map_or(0.0, |r| f64::from(r.burst)),
            refilled: Instant::now(),
        }
    }
}

/// Calls of one session in flight: how many, and the bytes of their CALL frames.
#[derive(Debug, Default)]
struct InFlight {
    calls: AtomicUsize,
    bytes: AtomicUsize,
}

/// One call's share of [`InFlight`], returned when the call ends or is cancelled.
struct InFlightGuard {
    in_flight: Arc<InFlight>,
    metrics: Arc<Metrics>,
    bytes: usize,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.in_flight.calls.fetch_sub(1, Ordering::Relaxed);
        self.in_flight
            .bytes
            .fetch_sub(self.bytes, Ordering::Relaxed);
        Metrics::sub(&self.metrics.calls_in_flight, 1);
    }
}

/// The reader half's state.
struct Conn {
    router: Arc<Inner<()>>,
    config: Arc<Config>,
    parts: Arc<Parts>,
    session: Session,
    outbox: Outbox,
    state: ProtoState,
    rate: RateState,
    metrics: Arc<Metrics>,
    /// Calls that awaited: aborted when the session ends.
    calls: JoinSet<()>,
    in_flight: Arc<InFlight>,
    /// As a WAMP v2 callee: the invocations it was sent and has not answered.
    pending: Arc<crate::dealer::Pending>,
    /// As a WAMP v2 caller: how to cancel its calls in flight, by request id. Ended calls
    /// are swept out when the map has doubled since the last sweep.
    cancels: HashMap<u64, crate::cancel::Sender>,
    sweep_cancels_at: usize,
    /// As a WAMP v2 caller: where the later chunks of its progressive call invocations go,
    /// by request id (at most `v2s::MAX_STREAMING_CALLS`).
    streams: HashMap<u64, tokio::sync::mpsc::Sender<crate::dealer::Chunk>>,
}

impl Conn {
    /// The reader half: returns when the client closes or the connection ends. After the
    /// server asked to close, frames are read and dropped until the writer has finished.
    async fn read_loop(&mut self, stream: &mut Stream, clock: &Clock) -> CloseReason {
        loop {
            let Some(incoming) = stream.next().await else {
                return CloseReason::Disconnected;
            };
            let now = Instant::now();
            let message = match incoming {
                Err(e) if is_oversize(&e) => {
                    tracing::warn!(session_id = %self.session.id(), error = %e, "oversize message: closing with 1009");
                    self.outbox.close(1009, "message too big", false);
                    // The writer sends the close frame and ends the session.
                    return std::future::pending().await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "transport error");
                    return CloseReason::Error(e.to_string());
                }
                Ok(message) => message,
            };
            clock.read(
                now,
                matches!(message, WsMessage::Text(_) | WsMessage::Binary(_)),
            );
            if self.outbox.is_closed() {
                // Closing: nothing more is acted on.
                if let WsMessage::Close(frame) = message {
                    return client_close(frame);
                }
                continue;
            }
            // Every frame counts against the rate limit, control frames included (a ping
            // makes the server write a pong).
            if !self.within_rate_limit(now) {
                continue;
            }
            // Progressive call invocations that ended (answered, canceled, timed out) free
            // their place before the session machine counts them.
            if !self.streams.is_empty() {
                self.sweep_streams();
            }
            match message {
                WsMessage::Text(text) => {
                    Metrics::add(&self.metrics.messages_in, 1);
                    match &mut self.state {
                        ProtoState::V1(state) => {
                            // Calls are charged what their arguments take once decoded.
                            let (action, size) = state.handle_text_sized(text.as_str());
                            self.act_v1_now(action, size, clock).await;
                        }
                        ProtoState::V2(state) => {
                            let (action, size) = state.handle_text_sized(text.as_str());
                            self.act_v2_now(action, size, clock).await;
                        }
                    }
                }
                WsMessage::Binary(bytes) => {
                    Metrics::add(&self.metrics.messages_in, 1);
                    match &mut self.state {
                        ProtoState::V1(state) => {
                            let action = state.handle_binary();
                            self.act_v1_now(action, 0, clock).await;
                        }
                        ProtoState::V2(state) => {
                            let (action, size) = state.handle_sized(&bytes, true);
                            self.act_v2_now(action, size, clock).await;
                        }
                    }
                }
                WsMessage::Close(frame) => return client_close(frame),
                // Pings are answered by the WebSocket itself; pongs only count as life.
                WsMessage::Ping(_) | WsMessage::Pong(_) => {}
            }
        }
    }

    fn within_rate_limit(&mut self, now: Instant) -> bool {
        let Some(limit) = self.config.rate_limit else {
            return true;
        };
        let rate = &mut self.rate;
        let refill = now.duration_since(rate.refilled).as_secs_f64() * f64::from(limit.per_second);
        rate.tokens = (rate.tokens + refill).min(f64::from(limit.burst));
        rate.refilled = now;
        if rate.tokens >= 1.0 {
            rate.tokens -= 1.0;
            true
        } else {
            tracing::warn!(session_id = %self.session.id(), "rate limit exceeded: closing");
            self.outbox.close(1008, "rate limit exceeded", false);
            false
        }
    }

    /// Carries out a v1 action: a call, like everything that needs no waiting, is done
    /// right here (most calls answer without waiting); what may await (subscribe, publish)
    /// runs boxed, so that the reader's future, which every session keeps for its whole
    /// life, is sized for reading and calling only.
    async fn act_v1_now(&mut self, action: Action, size: usize, clock: &Clock) {
        if let Some(action) = self.act_sync(action, size) {
            Box::pin(self.act_marked(action, size, clock)).await;
        }
    }

    /// [`act_v1_now`](Self::act_v1_now) for v2.
    async fn act_v2_now(&mut self, action: v2s::Action, size: usize, clock: &Clock) {
        if let Some(action) = self.act_v2_sync(action, size) {
            Box::pin(self.act_v2_marked(action, size, clock)).await;
        }
    }

    /// [`act`](Self::act), with the keepalive's pong deadline suspended while it awaits.
    async fn act_marked(&mut self, action: Action, size: usize, clock: &Clock) {
        clock.busy.store(true, Ordering::Relaxed);
        self.act(action, size).await;
        clock.busy.store(false, Ordering::Relaxed);
        // Whatever arrived meanwhile is read next: count the wait as life.
        clock.read(Instant::now(), false);
    }

    async fn act(&mut self, action: Action, size: usize) {
        match action {
            Action::Subscribe { topic } => {
                let _ = self
                    .router
                    .subscribe(
                        &self.session,
                        (MatchPolicy::Exact, topic),
                        Some(self.config.subscriptions),
                        None,
                    )
                    .await;
            }
            Action::Publish {
                topic,
                event,
                exclude,
                eligible,
            } => {
                let _ = self
                    .router
                    .publish(
                        &self.session,
                        topic,
                        event,
                        None,
                        exclude,
                        eligible,
                        crate::router::PublishOptions::default(),
                    )
                    .await;
            }
            other => {
                let _ = self.act_sync(other, size);
            }
        }
    }

    /// The v1 actions that need no waiting, carried out at once; those that do (subscribe,
    /// publish) are given back, to be awaited.
    fn act_sync(&mut self, action: Action, size: usize) -> Option<Action> {
        match action {
            Action::None => {}
            Action::Call {
                call_id,
                procedure,
                args,
            } => {
                self.spawn_call(
                    ReplyTo::V1(call_id),
                    procedure,
                    args,
                    Dict::new(),
                    size,
                    None,
                    false,
                    crate::dealer::CallControl::default(),
                );
            }
            Action::Unsubscribe { topic } => {
                self.router
                    .unsubscribe(&self.session, (MatchPolicy::Exact, &topic), None);
            }
            Action::Reply(frame) => {
                tracing::debug!("malformed CALL answered with an error");
                self.metrics.error(error_uri::INVALID_ARGUMENT);
                let _ = self.outbox.push_reply(frame.into());
            }
            Action::Ignore(reason) => tracing::debug!(reason = %Clip(&reason), "frame ignored"),
            Action::Close { code, reason } => {
                tracing::warn!(session_id = %self.session.id(), code, reason = %Clip(&reason), "closing");
                self.outbox.close(code, &reason, true);
            }
            other @ (Action::Subscribe { .. } | Action::Publish { .. }) => return Some(other),
        }
        None
    }

    /// Reserves room for one more call in flight, or answers it with `#too-many-calls`.
    fn admit(&self, reply_to: &ReplyTo, size: usize) -> Option<InFlightGuard> {
        let budget = self.config.calls;
        let calls = self.in_flight.calls.load(Ordering::Relaxed);
        let bytes = self.in_flight.bytes.load(Ordering::Relaxed);
        if calls >= budget.calls || bytes + size > budget.bytes {
            tracing::debug!(calls, bytes, "too many calls in flight");
            self.metrics.error(error_uri::TOO_MANY_CALLS);
            let error = RpcError::new(
                error_uri::TOO_MANY_CALLS,
                format!(
                    "too many calls in flight (limit {} calls, {} bytes)",
                    budget.calls, budget.bytes
                ),
            );
            let _ = self.outbox.push_reply(reply_to.error(&error));
            return None;
        }
        self.in_flight.calls.fetch_add(1, Ordering::Relaxed);
        self.in_flight.bytes.fetch_add(size, Ordering::Relaxed);
        Metrics::add(&self.metrics.calls_in_flight, 1);
        Some(InFlightGuard {
            in_flight: self.in_flight.clone(),
            metrics: self.metrics.clone(),
            bytes: size,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn_call(
        &mut self,
        reply_to: ReplyTo,
        procedure: String,
        args: Vec<serde_json::Value>,
        kwargs: Dict,
        size: usize,
        timeout: Option<Duration>,
        disclose_me: bool,
        control: crate::dealer::CallControl,
    ) -> Ran {
        Metrics::add(&self.metrics.calls_total, 1);
        let Some(guard) = self.admit(&reply_to, size) else {
            return Ran::Answered;
        };
        // A v2 call can be canceled while it waits: its CANCEL's channel is made once it is
        // known to wait (no CANCEL can come in between: the session reads nothing meanwhile).
        let cancelable = matches!(reply_to, ReplyTo::V2 { .. });
        let progress = control.progress.clone();
        let call_id = reply_to.call_id();
        // The call's span is entered only when it is recorded: a disabled one would still
        // cost an enter and an exit per poll.
        let span = tracing::debug_span!("wamp_call", call_id = %Clip(call_id.as_str()), procedure = %Clip(&procedure));
        let span = (!span.is_disabled()).then_some(span);
        let call = Call::from_wire(
            call_id,
            procedure,
            args,
            kwargs,
            self.session.clone(),
            self.parts.clone(),
            disclose_me,
            control,
        );
        // Most calls: a handler of the router's own that starts at once. Not boxed: polled
        // here once, and moved into a task only if it waits.
        let mut call = match (timeout, &span) {
            (None, None) => match self.router.try_start(call) {
                Ok(started) => {
                    let mut call = Answering {
                        started,
                        guard: Some(guard),
                        progress,
                        reply_to: Some(reply_to),
                        outbox: self.outbox.clone(),
                    };
                    let mut cx = Context::from_waker(Waker::noop());
                    if Pin::new(&mut call).poll(&mut cx).is_pending() {
                        let cancel = cancelable.then(|| call.started.cancelable());
                        // A v2 call that waits can be canceled (its CANCEL has a sender).
                        debug_assert!(cancel.as_ref().is_none_or(Option::is_some));
                        self.go_on_waiting(call);
                        return Ran::Waiting(cancel.flatten());
                    }
                    return Ran::Answered;
                }
                Err(call) => call,
            },
            _ => call,
        };
        let cancel = cancelable.then(|| {
            let (cancel, canceled) = crate::cancel::channel();
            call.control.cancel = Some(canceled);
            cancel
        });
        let router = self.router.clone();
        let outbox = self.outbox.clone();
        let call = async move {
            // A v2 caller's `timeout` option: the call (and a client callee's
            // invocation with it) ends at the deadline, which, once progressive results
            // flow, runs from the last one (as the spec has it).
            let reply = match timeout {
                // Boxed: a timer is large, and most calls have none.
                Some(limit) => {
                    Box::pin(async {
                        let mut running = std::pin::pin!(router.dispatch(call));
                        let mut deadline = tokio::time::Instant::now() + limit;
                        loop {
                            if let Ok(reply) = tokio::time::timeout_at(deadline, &mut running).await
                            {
                                break reply;
                            }
                            match progress.as_ref().and_then(|p| p.last_sent()) {
                                Some(last) if last + limit > deadline => deadline = last + limit,
                                _ => {
                                    break CallReply::Error(RpcError::new(
                                        error_uri::TIMEOUT,
                                        "call timed out",
                                    ));
                                }
                            }
                        }
                    })
                    .await
                }
                None => router.dispatch(call).await,
            };
            answer(reply, guard, progress, &reply_to, &outbox);
        };
        let mut call: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = match span {
            Some(span) => Box::pin(call.instrument(span)),
            None => Box::pin(call),
        };
        // Most procedures answer without waiting: run the call once right here and spawn a
        // task only for those that are still pending (the task polls it again with its own
        // waker, so nothing registered with the no-op waker is lost). Spawned calls belong
        // to the session: they are aborted when it ends.
        let mut cx = Context::from_waker(Waker::noop());
        if call.as_mut().poll(&mut cx).is_pending() {
            self.go_on_waiting(call);
            return Ran::Waiting(cancel);
        }
        Ran::Answered
    }

    /// Moves a call that waits into a task of the session's (aborted when it ends), still
    /// in the session's span when that is on (a call's own span has it for parent).
    fn go_on_waiting(&mut self, call: impl Future<Output = ()> + Send + 'static) {
        while self.calls.try_join_next().is_some() {}
        self.calls.spawn(call.in_current_span());
    }

    #[allow(clippy::too_many_arguments)]
    fn call_v2(
        &mut self,
        request: u64,
        (procedure, args, kwargs): (String, Vec<serde_json::Value>, Dict),
        timeout_ms: u64,
        disclose_me: bool,
        (receive_progress, progress): (bool, bool),
        size: usize,
    ) {
        let serializer = self.serializer();
        let reply_to = ReplyTo::V2 {
            serializer,
            request,
        };
        // A CALL may not reuse the id of one still running (the spec's protocol violation):
        // both would answer under one id, and the first could no longer be canceled.
        if self.cancels.get(&request).is_some_and(|tx| !tx.is_closed()) {
            self.violation("a CALL with the request id of a call still running");
            return;
        }
        let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms));
        let mut stream = None;
        let chunks = progress.then(|| {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            stream = Some(tx);
            rx
        });
        let control = crate::dealer::CallControl {
            progress: receive_progress.then(|| {
                crate::dealer::ProgressSink::new(self.outbox.clone(), serializer, request)
            }),
            cancel: None,
            chunks,
        };
        let ran = self.spawn_call(
            reply_to,
            procedure,
            args,
            kwargs,
            size,
            timeout,
            disclose_me,
            control,
        );
        let pending = matches!(ran, Ran::Waiting(_));
        if let Ran::Waiting(Some(cancel)) = ran {
            // Only a call still running can be canceled; the senders of ended calls are
            // swept out once the map has doubled, so it stays within twice the calls in
            // flight (which `admit` bounds).
            if self.cancels.len() >= self.sweep_cancels_at {
                self.cancels.retain(|_, tx| !tx.is_closed());
                self.sweep_cancels_at = (self.cancels.len() * 2).max(MIN_CANCEL_SWEEP);
            }
            self.cancels.insert(request, cancel);
        }
        match stream {
            Some(tx) if pending => {
                self.streams.insert(request, tx);
            }
            Some(_) => self.stream_ended(request),
            None => {}
        }
    }

    /// Forgets the progressive call invocations that ended (at most 64 are looked at).
    fn sweep_streams(&mut self) {
        let ended: Vec<u64> = self
            .streams
            .iter()
            .filter(|(_, tx)| tx.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in ended {
            self.streams.remove(&id);
            self.stream_ended(id);
        }
    }

    /// Tells the session machine that a progressive call invocation takes no more chunks.
    fn stream_ended(&mut self, request: u64) {
        if let ProtoState::V2(state) = &mut self.state {
            state.stream_ended(request);
        }
    }

    /// A caller's CANCEL: ignored for a call that is not running. The sender stays until
    /// the call ends: after a `kill`, a `skip` or `killnowait` may still end the wait.
    fn cancel(&mut self, request: u64, mode: v2s::CancelMode) {
        if let Some(tx) = self.cancels.get(&request)
            && !tx.is_closed()
        {
            tracing::debug!(request, mode = mode.as_str(), "call canceled");
            tx.send_replace(Some(mode));
        }
    }

    /// [`act_v2`](Self::act_v2), with the keepalive's pong deadline suspended while it awaits.
    async fn act_v2_marked(&mut self, action: v2s::Action, size: usize, clock: &Clock) {
        clock.busy.store(true, Ordering::Relaxed);
        self.act_v2(action, size).await;
        clock.busy.store(false, Ordering::Relaxed);
        clock.read(Instant::now(), false);
    }

    fn callee_features(&self) -> v2s::CalleeFeatures {
        match &self.state {
            ProtoState::V2(state) => state.callee_features(),
            ProtoState::V1(_) => v2s::CalleeFeatures::default(),
        }
    }

    fn serializer(&self) -> v2c::Serializer {
        match &self.state {
            ProtoState::V2(state) => state.serializer(),
            ProtoState::V1(_) => v2c::Serializer::Json,
        }
    }

    fn reply_v2(&self, message: &v2c::Message) {
        let _ = self
            .outbox
            .push_reply(Frame::v2(self.serializer(), message));
    }

    fn error_v2(&self, request_type: u64, request: u64, error: &str, message: &str) {
        self.reply_v2(&v2c::Message::Error {
            request_type,
            request,
            details: Dict::new(),
            error: error.to_owned(),
            args: vec![serde_json::Value::from(message)],
            kwargs: Dict::new(),
        });
    }

    /// A callee's YIELD or ERROR: to its caller, discarded when late, a protocol violation
    /// for an invocation never issued.
    fn answered(&mut self, request: u64, answer: crate::dealer::Yielded) {
        let answered = self.pending.answer(request, answer);
        self.violation_if_unknown(answered);
    }

    fn violation_if_unknown(&mut self, answered: crate::dealer::Answered) {
        if answered != crate::dealer::Answered::Unknown {
            return;
        }
        self.violation("a YIELD or ERROR for an invocation that was never issued");
    }

    /// Aborts a v2 session for a protocol violation.
    fn violation(&mut self, why: &str) {
        if let ProtoState::V2(state) = &mut self.state {
            let abort = state.abort(v2s::uri::PROTOCOL_VIOLATION, why);
            let _ = self
                .outbox
                .push_reply(Frame::v2(state.serializer(), &abort));
            self.outbox.close(1002, why, true);
        }
    }

    /// Carries out what the v2 state machine decided.
    async fn act_v2(&mut self, action: v2s::Action, size: usize) {
        use v2c::{Message as M, code};
        use v2s::Action as A;
        match action {
            A::Subscribe {
                request,
                topic,
                policy,
                get_retained,
            } => {
                // SUBSCRIBED is queued under the broker's lock, before any EVENT.
                let serializer = self.serializer();
                let ack = move |subscription| {
                    Frame::v2(
                        serializer,
                        &M::Subscribed {
                            request,
                            subscription,
                        },
                    )
                };
                match self
                    .router
                    .subscribe(
                        &self.session,
                        (policy, topic),
                        Some(self.config.subscriptions),
                        Some(crate::hub::V2Ack {
                            subscribed: &ack,
                            get_retained,
                        }),
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(Refused::NotAuthorized) => self.error_v2(
                        code::SUBSCRIBE,
                        request,
                        "wamp.error.not_authorized",
                        "not authorized to subscribe to this topic",
                    ),
                    Err(Refused::Closing) => {}
                }
            }
            A::Publish {
                request,
                topic,
                args,
                kwargs,
                acknowledge,
                exclude_me,
                exclude,
                eligible,
                auth_lists,
                disclose_me,
                retain,
            } => {
                let payload = Payload { args, kwargs };
                let event = payload.to_event();
                let mut excluded: Vec<SessionId> =
                    exclude.into_iter().map(SessionId::numeric).collect();
                if exclude_me {
                    excluded.push(self.session.id().clone());
                }
                let eligible =
                    eligible.map(|ids| ids.into_iter().map(SessionId::numeric).collect());
                let outcome = self
                    .router
                    .publish(
                        &self.session,
                        topic,
                        event,
                        Some(payload),
                        Exclude::List(excluded),
                        eligible,
                        crate::router::PublishOptions {
                            auth_lists,
                            disclose_me,
                            retain,
                        },
                    )
                    .await;
                match (acknowledge, outcome) {
                    (false, _) => {}
                    (true, Ok(publication)) => self.reply_v2(&M::Published {
                        request,
                        publication,
                    }),
                    (true, Err(_)) => self.error_v2(
                        code::PUBLISH,
                        request,
                        "wamp.error.not_authorized",
                        "not authorized to publish to this topic",
                    ),
                }
            }
            A::Register {
                request,
                procedure,
                disclose_caller,
                policy,
                invoke,
            } => {
                let callee = crate::dealer::Callee {
                    session: self.session.id().clone(),
                    outbox: self.outbox.clone(),
                    pending: self.pending.clone(),
                    disclose_caller,
                    features: self.callee_features(),
                    permissions: None,
                    joined: 0,
                };
                // Registrations share the subscriptions' budget (entries and URI bytes).
                let budget = self.config.subscriptions;
                // REGISTERED is queued under the registrations' lock, before any INVOCATION.
                let serializer = self.serializer();
                let ack = move |registration| {
                    Frame::v2(
                        serializer,
                        &M::Registered {
                            request,
                            registration,
                        },
                    )
                };
                match self
                    .router
                    .register(
                        &self.session,
                        (policy, procedure),
                        invoke,
                        &callee,
                        budget,
                        &ack,
                    )
                    .await
                {
                    Ok(_) | Err("closing") => {}
                    Err("budget") => {
                        tracing::warn!(session_id = %self.session.id(),
                            entries = budget.entries,
                            bytes = budget.bytes,
                            "too many registrations: closing"
                        );
                        self.outbox.close(
                            1008,
                            &format!(
                                "too many registrations (limit {} procedures, {} bytes)",
                                budget.entries, budget.bytes
                            ),
                            true,
                        );
                    }
                    Err(error) => self.error_v2(
                        code::REGISTER,
                        request,
                        error,
                        "the procedure cannot be registered",
                    ),
                }
            }
            A::CallChunk {
                request,
                args,
                kwargs,
                last,
            } => {
                let tx = self.streams.get(&request).cloned();
                let sent = match tx {
                    // Waits while the call has 4 chunks it has not forwarded yet: a
                    // caller cannot queue more than that.
                    Some(tx) => tx
                        .send(crate::dealer::Chunk { args, kwargs, last })
                        .await
                        .is_ok(),
                    None => false,
                };
                if last || !sent {
                    self.streams.remove(&request);
                }
                if !sent {
                    tracing::debug!(request, "a chunk of a call that ended: discarded");
                    self.stream_ended(request);
                }
            }
            other => {
                let _ = self.act_v2_sync(other, size);
            }
        }
    }

    /// The v2 actions that need no waiting, carried out at once; those that do (subscribe,
    /// publish, register) are given back, to be awaited.
    fn act_v2_sync(&mut self, action: v2s::Action, size: usize) -> Option<v2s::Action> {
        use v2c::{Message as M, code};
        use v2s::Action as A;
        match action {
            A::None | A::Hello { .. } | A::Authenticate { .. } => {}
            A::Cancel { request, mode } => self.cancel(request, mode),
            A::Unsubscribe {
                request,
                subscription,
            } => {
                let hub = &self.router.wamp().hub;
                match hub.subscription_key(subscription) {
                    Some((policy, uri)) if hub.is_subscribed((policy, &uri), self.session.id()) => {
                        // UNSUBSCRIBED is queued under the broker's lock, after every EVENT.
                        let ack = Frame::v2(self.serializer(), &M::Unsubscribed { request });
                        if !self
                            .router
                            .unsubscribe(&self.session, (policy, &uri), Some(ack))
                        {
                            // Unsubscribed by the server meanwhile.
                            self.error_v2(
                                code::UNSUBSCRIBE,
                                request,
                                "wamp.error.no_such_subscription",
                                "no such subscription",
                            );
                        }
                    }
                    _ => self.error_v2(
                        code::UNSUBSCRIBE,
                        request,
                        "wamp.error.no_such_subscription",
                        "no such subscription",
                    ),
                }
            }
            A::Call {
                request,
                procedure,
                args,
                kwargs,
                timeout_ms,
                disclose_me,
                receive_progress,
                progress,
            } => self.call_v2(
                request,
                (procedure, args, kwargs),
                timeout_ms,
                disclose_me,
                (receive_progress, progress),
                size,
            ),
            A::Unregister {
                request,
                registration,
            } => {
                // UNREGISTERED is queued under the registrations' lock, after every INVOCATION.
                let ack = Frame::v2(self.serializer(), &M::Unregistered { request });
                if !self.router.unregister(&self.session, registration, ack) {
                    self.error_v2(
                        code::UNREGISTER,
                        request,
                        "wamp.error.no_such_registration",
                        "no such registration",
                    );
                }
            }
            A::Yield {
                request,
                args,
                kwargs,
                progress: true,
            } => match self.pending.progress(request, Payload { args, kwargs }) {
                crate::dealer::Answered::Overflowed => {
                    // Its caller was answered with an ERROR: the callee may stop.
                    tracing::debug!(request, "progressive results refused: call ended");
                    if self.callee_features().call_canceling {
                        let mut options = Dict::new();
                        options.insert("mode".into(), "killnowait".into());
                        let interrupt = M::Interrupt { request, options };
                        let _ = self
                            .outbox
                            .push_unless_busy(Frame::v2(self.serializer(), &interrupt));
                    }
                }
                answered => self.violation_if_unknown(answered),
            },
            A::Yield {
                request,
                args,
                kwargs,
                progress: false,
            } => {
                let answer = crate::dealer::Yielded::Result(Payload { args, kwargs });
                self.answered(request, answer);
            }
            A::InvocationError {
                request,
                error,
                args,
                kwargs,
            } => {
                let answer = crate::dealer::Yielded::Error {
                    error,
                    args,
                    kwargs,
                };
                self.answered(request, answer);
            }
            A::Reply(message) => self.reply_v2(&message),
            A::Close {
                message,
                code,
                reason,
            } => {
                if let Some(m) = message {
                    self.reply_v2(&m);
                }
                tracing::debug!(code, reason = %Clip(&reason), "closing");
                self.outbox.close(code, &reason, true);
            }
            other @ (A::Subscribe { .. }
            | A::Publish { .. }
            | A::Register { .. }
            | A::CallChunk { .. }) => {
                return Some(other);
            }
        }
        None
    }
}

/// How a call went on once made.
enum Ran {
    /// Answered already (or refused).
    Answered,
    /// Waiting, in a task of its own; a v2 call's CANCEL goes to this sender.
    Waiting(Option<crate::cancel::Sender>),
}

/// Sends a call's answer: its in-flight budget is given back and its progress closed
/// first (nothing of it may follow the answer).
fn answer(
    reply: CallReply,
    guard: InFlightGuard,
    progress: Option<crate::dealer::ProgressSink>,
    reply_to: &ReplyTo,
    outbox: &Outbox,
) {
    drop(guard);
    if let Some(progress) = progress {
        progress.close();
    }
    let frame = match reply {
        CallReply::Result(result) => reply_to.result(result),
        CallReply::Arguments { args, kwargs } => reply_to.arguments(Payload { args, kwargs }),
        CallReply::Error(error) => {
            outbox.metrics().error(error.uri());
            let frame = reply_to.error(&error);
            if error.kills() {
                let _ = outbox.push_reply(frame);
                outbox.close(1002, "closed after a fatal call error", true);
                return;
            }
            frame
        }
        CallReply::Suppressed => return,
    };
    let _ = outbox.push_reply(frame);
}

/// A call started at once ([`Inner::try_start`]), and where its answer goes.
struct Answering {
    started: crate::router::Started,
    /// Taken when it answers.
    guard: Option<InFlightGuard>,
    progress: Option<crate::dealer::ProgressSink>,
    reply_to: Option<ReplyTo>,
    outbox: Outbox,
}

impl Future for Answering {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let reply = std::task::ready!(Pin::new(&mut this.started).poll(cx));
        if let (Some(guard), Some(reply_to)) = (this.guard.take(), this.reply_to.take()) {
            answer(reply, guard, this.progress.take(), &reply_to, &this.outbox);
        }
        Poll::Ready(())
    }
}

/// Whom a call's answer goes to, and in which form.
enum ReplyTo {
    /// A v1 CALL: CALLRESULT or CALLERROR with this call id.
    V1(String),
    /// A v2 CALL: RESULT or ERROR for this request.
    V2 {
        serializer: v2c::Serializer,
        request: u64,
    },
}

impl ReplyTo {
    /// The call's id, for the call: a v2 request id is written out only if asked for.
    fn call_id(&self) -> CallIdText {
        match self {
            Self::V1(id) => CallIdText::Text(id.clone()),
            Self::V2 { request, .. } => CallIdText::Request(*request, Default::default()),
        }
    }

    fn result(&self, result: serde_json::Value) -> Frame {
        match self {
            Self::V1(id) => Frame::from(v1::encode_call_result(id, &result)),
            // v2: RESULT with `args = [result]`, written straight in JSON.
            Self::V2 {
                serializer: serializer @ v2c::Serializer::Json,
                request,
            } => Frame::v2_bytes(*serializer, v2c::encode_json_result(*request, &result)),
            Self::V2 { .. } => self.arguments(Payload::from_event(result)),
        }
    }

    /// The arguments of a client's procedure: as they are for v2, as one value for v1.
    fn arguments(&self, payload: Payload) -> Frame {
        match self {
            Self::V1(id) => Frame::from(v1::encode_call_result(id, &payload.to_event())),
            Self::V2 {
                serializer,
                request,
            } => Frame::v2(
                *serializer,
                &v2c::Message::Result {
                    request: *request,
                    details: Dict::new(),
                    args: payload.args,
                    kwargs: payload.kwargs,
                },
            ),
        }
    }

    fn error(&self, error: &RpcError) -> Frame {
        match self {
            Self::V1(id) => Frame::from(v1::encode_call_error(id, error)),
            Self::V2 {
                serializer,
                request,
            } if !error.args().is_empty() || !error.kwargs().is_empty() => Frame::v2(
                *serializer,
                &v2c::Message::Error {
                    request_type: v2c::code::CALL,
                    request: *request,
                    details: Dict::new(),
                    error: v2_error_uri(error.uri()),
                    args: error.args().to_vec(),
                    kwargs: error.kwargs().clone(),
                },
            ),
            Self::V2 {
                serializer,
                request,
            } => {
                let mut args = vec![serde_json::Value::from(error.description())];
                args.extend(error.details().cloned());
                Frame::v2(
                    *serializer,
                    &v2c::Message::Error {
                        request_type: v2c::code::CALL,
                        request: *request,
                        details: Dict::new(),
                        error: v2_error_uri(error.uri()),
                        args,
                        kwargs: Dict::new(),
                    },
                )
            }
        }
    }
}

/// A close frame's reason: at most 123 bytes (RFC 6455 §5.5), cut at a character boundary
/// (the GOODBYE before it carries the whole message).
fn close_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

fn client_close(frame: Option<CloseFrame>) -> CloseReason {
    match frame {
        Some(f) => CloseReason::Client {
            code: Some(f.code),
            reason: f.reason.to_string(),
        },
        None => CloseReason::Client {
            code: None,
            reason: String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{session::QueueLimits, wire::Proto};
    use std::pin::Pin;

    /// A client that takes every frame at once and, as it takes one, has another queued
    /// (a busy topic): the writer's queue is never empty when it looks. Every other flush
    /// waits a millisecond, as a socket does now and then.
    struct Refilling {
        outbox: Outbox,
        flushes: usize,
        pause: Option<Pin<Box<tokio::time::Sleep>>>,
    }

    impl futures_util::Sink<WsMessage> for Refilling {
        type Error = axum::Error;

        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn start_send(self: Pin<&mut Self>, _: WsMessage) -> Result<(), Self::Error> {
            let _ = self.outbox.push(Frame::from("[8,\"t\",1]"));
            Ok(())
        }

        fn poll_flush(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Result<(), Self::Error>> {
            if self.pause.is_none() {
                self.flushes += 1;
                if self.flushes % 2 == 1 {
                    return Poll::Ready(Ok(()));
                }
                self.pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(1))));
            }
            let pause = self.pause.as_mut().expect("set above");
            std::task::ready!(pause.as_mut().poll(cx));
            self.pause = None;
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicU64);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_wakes_the_waker_it_was_last_polled_with() {
        let sleep = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(sleep);
        let mut armed = None;
        let (a, b) = (Arc::new(Wakes::default()), Arc::new(Wakes::default()));
        let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
        let mut poll = |waker: &Waker| {
            poll_deadline(sleep.as_mut(), &mut armed, &mut Context::from_waker(waker))
        };
        assert!(poll(&wa).is_pending());
        // The same waker again: the timer holds it already.
        assert!(poll(&wa).is_pending());
        // Another waker (the future moved to another task): the timer must be given it.
        assert!(poll(&wb).is_pending());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(b.0.load(Ordering::SeqCst), 1, "the latest waker is woken");
        assert!(poll(&wb).is_ready());
    }

    #[test]
    fn deadlines_fire_while_the_queue_never_runs_dry() {
        let (done, ended) = std::sync::mpsc::channel();
        // On a thread of its own: a writer that never looks at its timers would never end.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            rt.block_on(async {
                let outbox = Outbox::new(QueueLimits::default(), Arc::default(), Proto::V1);
                let _ = outbox.push(Frame::from("[8,\"t\",0]"));
                let mut sink: Sink = Box::pin(Refilling {
                    outbox: outbox.clone(),
                    flushes: 0,
                    pause: None,
                });
                let config = Config {
                    idle_timeout: Some(Duration::from_millis(100)),
                    ..Config::default()
                };
                let clock = Clock::new(Instant::now());
                let session = Session::detached(SessionId::random());
                let ended = write_loop(&mut sink, &outbox, &config, &clock, &session, None).await;
                let _ = done.send(ended);
            });
        });
        let (reason, close_sent) = ended
            .recv_timeout(Duration::from_secs(10))
            .expect("the idle timeout fired while frames kept coming");
        assert!(close_sent);
        assert!(
            matches!(&reason, CloseReason::Server { code: 1000, reason } if reason == "idle timeout"),
            "{reason:?}"
        );
    }
}
