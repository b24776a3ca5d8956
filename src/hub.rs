//! Shared runtime tables (open sessions, subscriptions) and the public server handle.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use serde::Serialize;

use std::{
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::Duration,
};

use tokio::sync::Notify;

use serde_json::Value;

use crate::{
    core::{
        SessionId,
        auth::{Action, Permissions},
        broker::{Broker, Budget, Recipients, SubKey, Subscribed},
        codec::{v1, v2},
        matching::MatchPolicy,
        random_id,
        retained::{RetainBudget, RetainedStore},
    },
    metrics::{Metrics, MetricsSnapshot},
    session::{Frame, Outbox, SendError},
    wire::{Payload, Proto},
};

#[derive(Debug)]
pub(crate) struct Hub {
    sessions: RwLock<HashMap<SessionId, Outbox>>,
    broker: RwLock<Broker<Subscriber>>,
    pub(crate) metrics: Arc<Metrics>,
    /// Sessions accepted (from the upgrade on) and not yet ended.
    slots: AtomicUsize,
    shutting_down: AtomicBool,
    /// Woken when shutdown begins (for sessions still in their handshake).
    shutdown_begun: Notify,
    session_gone: Notify,
    /// Procedures registered by WAMP v2 clients.
    registrations: RwLock<crate::dealer::Registrations>,
    /// Which topics pattern subscriptions may receive from the server handle: those whose
    /// rule plainly allows subscribing (set when a layer is built from the router; until
    /// then, none).
    pattern_topics: RwLock<Option<Arc<crate::core::pattern::PatternTable<bool>>>>,
    /// The retained event of each topic (written under the broker's read lock as it is
    /// delivered, read under its write lock by a SUBSCRIBE, so a subscriber gets a
    /// publication either as the retained event or live, never both).
    retained: Mutex<RetainedStore<Retained>>,
    /// The last events of the topics with an event history, and how many each keeps (a
    /// topic pattern's; set when a layer is built from the router).
    history: Mutex<RetainedStore<Arc<HistoryEvent>>>,
    history_rules: RwLock<crate::core::pattern::PatternTable<usize>>,
    history_on: AtomicBool,
    /// Held from a change of the subscriptions or registrations to its meta events, so that
    /// meta events come in the order of the changes (only with the meta API on).
    pub(crate) meta_order: Mutex<()>,
    /// The backplane to other nodes: configured, then started once in a runtime.
    backplane: Mutex<BackplaneState>,
    /// Whether a backplane is configured or server-side subscribers installed: without
    /// either, a publication takes neither lock.
    beyond_sessions: AtomicBool,
    /// The router's meta API is on: the other nodes' sessions are kept (to tell their
    /// `on_leave` when their node is lost) and this node's are told to them.
    pub(crate) meta_api: AtomicBool,
    /// The router's server-side subscribers (`WampRouter::on_event`).
    server_subscribers: RwLock<Arc<crate::core::matching::MatchIndex<Vec<Arc<ServerSubscriber>>>>>,
}

/// A router's backplane: none, configured and not yet started, or started (this node's id
/// and the queue to it).
#[derive(Debug, Default)]
enum BackplaneState {
    #[default]
    None,
    Configured(crate::backplane::Backplane),
    Started {
        queue: tokio::sync::mpsc::Sender<(Option<u64>, Vec<u8>)>,
        cluster: Arc<crate::cluster::Cluster>,
    },
}

/// A server-side subscriber: its handler, and the queue its events wait in (its worker
/// task starts with the first event, as a runtime is needed).
pub(crate) struct ServerSubscriber {
    handler: crate::router::ErasedRpc<()>,
    queue: Mutex<Option<tokio::sync::mpsc::Sender<ServerEvent>>>,
}

impl fmt::Debug for ServerSubscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSubscriber").finish_non_exhaustive()
    }
}

/// One event for a server-side subscriber.
struct ServerEvent {
    topic: Arc<str>,
    payload: Payload,
    publisher: Option<crate::Session>,
    publication: u64,
}

/// How many events a server-side subscriber may have waiting.
const SERVER_QUEUE: usize = 1024;

impl ServerSubscriber {
    /// Queues an event; `false` (dropped) when the handler has fallen [`SERVER_QUEUE`]
    /// events behind.
    fn push(self: &Arc<Self>, event: ServerEvent, hub: &Arc<Hub>) -> bool {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        // Its task needs a runtime: an event published outside one (the server handle in a
        // plain thread) before the task started is dropped and counted.
        if queue.is_none() && tokio::runtime::Handle::try_current().is_err() {
            return false;
        }
        let tx = queue.get_or_insert_with(|| {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<ServerEvent>(SERVER_QUEUE);
            let (me, hub) = (Arc::downgrade(self), Arc::downgrade(hub));
            tokio::spawn(async move {
                while let Some(event) = rx.recv().await {
                    let (Some(me), Some(hub)) = (me.upgrade(), hub.upgrade()) else {
                        return;
                    };
                    me.handle(event, hub).await;
                }
            });
            tx
        });
        tx.try_send(event).is_ok()
    }

    async fn handle(&self, event: ServerEvent, hub: Arc<Hub>) {
        use futures_util::FutureExt as _;
        let session = event
            .publisher
            .unwrap_or_else(|| crate::Session::detached(SessionId::random()));
        let mut call = crate::Call::new(&*event.topic, event.payload.args)
            .with_kwargs(event.payload.kwargs)
            .with_call_id(event.publication.to_string())
            .with_session(session);
        call.hub = Some(hub);
        let running = (self.handler)(call, ());
        match std::panic::AssertUnwindSafe(running).catch_unwind().await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "event handler failed"),
            Err(p) => {
                tracing::error!(
                    panic = %crate::clip::Clip(&crate::router::panic_message(&*p)),
                    "event handler panicked"
                );
            }
        }
    }
}

/// A publication kept as its topic's retained event: its arguments encoded once for each
/// serializer (what a late subscriber gets is a header around them), and who may receive
/// it.
#[derive(Debug)]
struct Retained {
    publication: u64,
    /// Indexed by `serializer_index`.
    payloads: [v2::EncodedPayload; 3],
    details: Option<v2::Dict>,
    audience: Arc<Audience>,
}

impl Retained {
    /// What it holds, in bytes, roughly as the allocator sees it (what the budget counts).
    fn bytes(&self, topic: &str) -> usize {
        256 + topic.len()
            + self
                .payloads
                .iter()
                .map(v2::EncodedPayload::len)
                .sum::<usize>()
            + details_bytes(self.details.as_ref())
            + self.audience.bytes()
    }
}

fn details_bytes(details: Option<&v2::Dict>) -> usize {
    details.map_or(0, |d| serde_json::to_vec(d).map_or(0, |v| v.len() * 4))
}

/// Who may receive a publication kept for later (a retained event, an event in history):
/// its lists as sets, built once.
#[derive(Debug)]
pub(crate) struct Audience {
    exclude: HashSet<u64>,
    eligible: Option<HashSet<u64>>,
    exclude_authid: HashSet<String>,
    exclude_authrole: HashSet<String>,
    eligible_authid: Option<HashSet<String>>,
    eligible_authrole: Option<HashSet<String>>,
}

impl Audience {
    fn of(
        exclude: &[SessionId],
        eligible: Option<&[SessionId]>,
        lists: Option<&crate::core::AuthLists>,
    ) -> Self {
        let ids = |list: &[SessionId]| list.iter().filter_map(SessionId::as_u64).collect();
        let strings = |list: &[String]| list.iter().cloned().collect::<HashSet<String>>();
        let lists = lists.cloned().unwrap_or_default();
        Self {
            exclude: ids(exclude),
            eligible: eligible.map(ids),
            exclude_authid: strings(&lists.exclude_authid),
            exclude_authrole: strings(&lists.exclude_authrole),
            eligible_authid: lists.eligible_authid.as_deref().map(strings),
            eligible_authrole: lists.eligible_authrole.as_deref().map(strings),
        }
    }

    fn bytes(&self) -> usize {
        let strings = |set: &HashSet<String>| set.iter().map(|s| s.len() + 48).sum::<usize>();
        16 * (self.exclude.len() + self.eligible.as_ref().map_or(0, HashSet::len))
            + strings(&self.exclude_authid)
            + strings(&self.exclude_authrole)
            + self.eligible_authid.as_ref().map_or(0, strings)
            + self.eligible_authrole.as_ref().map_or(0, strings)
    }

    /// Whether a session would have been eligible for it.
    pub(crate) fn admits(
        &self,
        id: &SessionId,
        authid: Option<&str>,
        authrole: Option<&str>,
    ) -> bool {
        let listed = |set: &HashSet<String>, v: Option<&str>| v.is_some_and(|v| set.contains(v));
        let n = id.as_u64();
        n.is_none_or(|n| !self.exclude.contains(&n))
            && self
                .eligible
                .as_ref()
                .is_none_or(|e| n.is_some_and(|n| e.contains(&n)))
            && !listed(&self.exclude_authid, authid)
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

/// A publication kept in its topic's event history (`WampRouter::event_history`).
#[derive(Debug)]
pub(crate) struct HistoryEvent {
    /// When it was published, in milliseconds since the Unix epoch.
    pub(crate) timestamp: u64,
    pub(crate) publication: u64,
    pub(crate) payload: Payload,
    /// The EVENT's details (the publisher, when disclosed).
    pub(crate) details: Option<v2::Dict>,
    /// Whether pattern subscriptions could receive it.
    pub(crate) to_patterns: bool,
    pub(crate) audience: Arc<Audience>,
}

/// A v2 SUBSCRIBE's acknowledgement, and whether the retained event follows it.
#[derive(Clone, Copy)]
pub(crate) struct V2Ack<'a> {
    pub(crate) subscribed: &'a (dyn Fn(u64) -> Frame + Sync),
    pub(crate) get_retained: bool,
}

/// A subscriber as the broker holds it: its queue and, for a pattern subscription of an
/// authenticated session, the permissions it had when it subscribed, against which every
/// topic the pattern matches is checked (a pattern must not reach topics its session may
/// not subscribe to).
#[derive(Debug, Clone)]
pub(crate) struct Subscriber {
    outbox: Outbox,
    permissions: Option<Arc<Permissions>>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            sessions: RwLock::default(),
            broker: RwLock::default(),
            metrics: Arc::default(),
            slots: AtomicUsize::default(),
            shutting_down: AtomicBool::default(),
            shutdown_begun: Notify::default(),
            session_gone: Notify::default(),
            registrations: RwLock::default(),
            pattern_topics: RwLock::default(),
            retained: Mutex::new(RetainedStore::new(RetainBudget::default())),
            history: Mutex::new(RetainedStore::new(RetainBudget::default())),
            history_rules: RwLock::default(),
            history_on: AtomicBool::new(false),
            meta_order: Mutex::new(()),
            server_subscribers: RwLock::default(),
            backplane: Mutex::default(),
            beyond_sessions: AtomicBool::new(false),
            meta_api: AtomicBool::new(false),
        }
    }
}

/// The session ids the other nodes told (lists of strings).
fn gathered_ids(answers: Vec<Value>) -> impl Iterator<Item = SessionId> {
    answers
        .into_iter()
        .filter_map(|a| match a {
            Value::Array(ids) => Some(ids),
            _ => None,
        })
        .flatten()
        .filter_map(|id| id.as_str().map(SessionId::from))
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl Hub {
    /// Registers an open session; `false` once shutdown has begun (the check and the
    /// insert happen under the lock that [`Wamp::shutdown`] takes to list the sessions, so
    /// a session is either listed and closed by it, or refused here).
    pub(crate) fn add_session(&self, id: SessionId, outbox: Outbox) -> bool {
        let mut sessions = write(&self.sessions);
        if self.shutting_down.load(Ordering::SeqCst) {
            return false;
        }
        sessions.insert(id, outbox);
        drop(sessions);
        Metrics::add(&self.metrics.sessions_open, 1);
        Metrics::add(&self.metrics.sessions_total, 1);
        true
    }

    /// Configures the backplane (started by [`Hub::start_backplane`]).
    pub(crate) fn set_backplane(&self, backplane: crate::backplane::Backplane) {
        *self
            .backplane
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = BackplaneState::Configured(backplane);
        self.beyond_sessions.store(true, Ordering::SeqCst);
    }

    /// Starts the configured backplane, once, when a Tokio runtime is there (when a layer is
    /// built, or with the first session).
    pub(crate) fn start_backplane(self: &Arc<Self>) {
        let mut state = self
            .backplane
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let BackplaneState::Configured(backplane) = &*state else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let node = random_id();
        let (queue, outgoing) = tokio::sync::mpsc::channel(crate::backplane::QUEUE);
        let (directory, requests) = tokio::sync::mpsc::channel(crate::backplane::QUEUE);
        let cluster = Arc::new(crate::cluster::Cluster::new(
            queue.clone(),
            self.metrics.clone(),
            (node, directory, backplane.0.clone()),
        ));
        let hub = Arc::downgrade(self);
        let peers = Mutex::new(crate::backplane::Peers::default());
        // Weak: the carrier's task must not keep the cluster (and its queues) alive once
        // the router is gone.
        let to_cluster = Arc::downgrade(&cluster);
        let incoming = Arc::new(move |frame: Vec<u8>| {
            let Some(hub) = hub.upgrade() else {
                return false;
            };
            let Some((from, seq, bytes)) = crate::backplane::unframe(&frame) else {
                Metrics::add(&hub.metrics.backplane_lost, 1);
                return true;
            };
            if from == node {
                return true;
            }
            // Messages to every node are numbered; those to one node are not (0).
            if seq != 0 {
                let missed = peers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .missed(from, seq);
                if missed > 0 {
                    Metrics::add(&hub.metrics.backplane_lost, missed);
                    static WARNED: std::sync::atomic::AtomicU64 =
                        std::sync::atomic::AtomicU64::new(0);
                    if crate::metrics::now_and_then(&WARNED) {
                        tracing::warn!(
                            missed,
                            "messages of another node missed (the backplane was down?)"
                        );
                    }
                }
            }
            if bytes.len() > crate::backplane::MAX_ENVELOPE {
                Metrics::add(&hub.metrics.backplane_lost, 1);
                static WARNED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                if crate::metrics::now_and_then(&WARNED) {
                    tracing::warn!(bytes = bytes.len(), "oversized backplane message dropped");
                }
                return true;
            }
            match serde_json::from_slice::<crate::cluster::Wire>(bytes) {
                Ok(crate::cluster::Wire::Event(envelope)) => {
                    if envelope.topic.starts_with("wamp.session.on_")
                        && let Some(cluster) = to_cluster.upgrade()
                    {
                        cluster.track(&hub, from, &envelope.topic, &envelope.args);
                    }
                    hub.deliver_remote(*envelope);
                }
                Ok(wire) => match to_cluster.upgrade() {
                    Some(cluster) => cluster.receive(&hub, from, wire),
                    None => return false,
                },
                Err(e) => {
                    Metrics::add(&hub.metrics.backplane_lost, 1);
                    static WARNED: std::sync::atomic::AtomicU64 =
                        std::sync::atomic::AtomicU64::new(0);
                    if crate::metrics::now_and_then(&WARNED) {
                        tracing::warn!(error = %e, "undecodable backplane message dropped");
                    }
                }
            }
            true
        });
        backplane
            .0
            .start(node, outgoing, requests, incoming, self.metrics.clone());
        // The heartbeat: this node's registrations, and the loss of silent nodes.
        let (hub, beat) = (Arc::downgrade(self), cluster.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::cluster::HEARTBEAT);
            for beats in 0u64.. {
                tick.tick().await;
                let Some(hub) = hub.upgrade() else {
                    return;
                };
                if hub.metrics.backplane_up.load(Ordering::Relaxed) == 1 {
                    beat.announce(&hub);
                    // Holds on the registrations' names are renewed every 3 s (they lapse
                    // after 10 s).
                    beat.sync_holds(&hub, beats % 3 == 0);
                    beat.beat();
                    // The other nodes' sessions asked anew now and then: what their joins
                    // and leaves did not tell (lost on the way, or quiet) is set right.
                    if beats % crate::cluster::PRESENCE_EVERY == 0 {
                        beat.ask_presence(&hub);
                    }
                } else {
                    // What was sent to other nodes may be lost: their calls fail now.
                    beat.disconnected();
                }
                beat.sweep(&hub);
            }
        });
        // The announcer: this node's registrations once they changed, at most every 50 ms
        // (a snapshot per change would cost the square of their number).
        let (hub, announcer) = (Arc::downgrade(self), Arc::downgrade(&cluster));
        let changed = cluster.changed.clone();
        tokio::spawn(async move {
            // At most every 50 ms, and at most a tenth of the time: with many registrations
            // an announcement takes long, and registering goes on meanwhile.
            let mut pace = std::time::Duration::from_millis(50);
            loop {
                // (A router dropped while nothing changes leaves this task waiting: it
                // holds neither the router nor the cluster.)
                changed.notified().await;
                tokio::time::sleep(pace).await;
                let (Some(hub), Some(cluster)) = (hub.upgrade(), announcer.upgrade()) else {
                    return;
                };
                let started = std::time::Instant::now();
                cluster.announce(&hub);
                cluster.sync_holds(&hub, false);
                pace = (started.elapsed() * 10).clamp(
                    std::time::Duration::from_millis(50),
                    std::time::Duration::from_secs(5),
                );
            }
        });
        *state = BackplaneState::Started { queue, cluster };
    }

    /// This node's side of the cluster, once its backplane started.
    pub(crate) fn cluster(&self) -> Option<Arc<crate::cluster::Cluster>> {
        match &*self
            .backplane
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            BackplaneState::Started { cluster, .. } => Some(cluster.clone()),
            _ => None,
        }
    }

    /// Tells the other nodes this node's registrations changed.
    fn registrations_changed(&self) {
        if self.beyond_sessions.load(Ordering::Relaxed)
            && let Some(cluster) = self.cluster()
        {
            // Told by the announcer, at most every 50 ms whatever the churn.
            cluster.changed.notify_one();
        }
    }

    /// A publication from another node: delivered here, not forwarded again.
    fn deliver_remote(self: &Arc<Self>, envelope: crate::backplane::Envelope) {
        Metrics::add(&self.metrics.backplane_received, 1);
        let payload = Payload {
            args: envelope.args.clone(),
            kwargs: envelope.kwargs.clone(),
        };
        let lists = envelope.auth_lists();
        let exclude: Vec<SessionId> = envelope
            .exclude
            .iter()
            .cloned()
            .map(SessionId::from)
            .collect();
        let eligible: Option<Vec<SessionId>> = envelope
            .eligible
            .as_ref()
            .map(|e| e.iter().cloned().map(SessionId::from).collect());
        let out = Outgoing {
            topic: &envelope.topic,
            event: &envelope.event,
            payload: &payload,
            publication: envelope.publication,
            details: envelope.details.as_ref(),
            auth_lists: Some(&lists),
            // This node's rules decide too (nodes may be configured apart, mid-upgrade).
            to_patterns: envelope.to_patterns && self.patterns_may_receive(&envelope.topic),
            retain: envelope.retain,
            publisher: None,
            forward: false,
            history: envelope.history,
        };
        self.deliver(&out, &exclude, eligible.as_deref());
    }

    /// `wamp.session.on_leave` for a session of a lost node, to this node's subscribers.
    pub(crate) fn left_elsewhere(
        self: &Arc<Self>,
        id: u64,
        authid: Option<String>,
        authrole: Option<String>,
    ) {
        let payload = Payload {
            args: vec![id.into(), authid.into(), authrole.into()],
            kwargs: v2::Dict::new(),
        };
        let event = payload.to_event();
        let out = Outgoing {
            topic: "wamp.session.on_leave",
            event: &event,
            payload: &payload,
            publication: crate::core::random_id(),
            details: None,
            auth_lists: None,
            to_patterns: false,
            retain: false,
            publisher: None,
            forward: false,
            history: false,
        };
        self.deliver(&out, &[], None);
    }

    /// Hands a local publication to the backplane, serialized once.
    fn forward(
        self: &Arc<Self>,
        out: &Outgoing<'_>,
        exclude: &[SessionId],
        eligible: Option<&[SessionId]>,
    ) {
        let started = |state: &BackplaneState| match state {
            BackplaneState::Started { queue, .. } => Some(queue.clone()),
            _ => None,
        };
        let queue = {
            let state = self
                .backplane
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if matches!(*state, BackplaneState::None) {
                return;
            }
            started(&state)
        };
        // Not started yet (no layer built, no session): now, if a runtime is here.
        let queue = queue.or_else(|| {
            self.start_backplane();
            started(
                &self
                    .backplane
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            )
        });
        let Some(queue) = queue else {
            Metrics::add(&self.metrics.backplane_lost, 1);
            return;
        };
        let lists = out.auth_lists.cloned().unwrap_or_default();
        let envelope = crate::backplane::Envelope {
            topic: out.topic.to_owned(),
            publication: out.publication,
            event: out.event.clone(),
            args: out.payload.args.clone(),
            kwargs: out.payload.kwargs.clone(),
            details: out.details.cloned(),
            exclude: exclude.iter().map(|s| s.as_str().to_owned()).collect(),
            eligible: eligible.map(|e| e.iter().map(|s| s.as_str().to_owned()).collect()),
            exclude_authid: lists.exclude_authid,
            exclude_authrole: lists.exclude_authrole,
            eligible_authid: lists.eligible_authid,
            eligible_authrole: lists.eligible_authrole,
            to_patterns: out.to_patterns,
            retain: out.retain,
            history: out.history,
        };
        let Ok(bytes) = serde_json::to_vec(&crate::cluster::Wire::Event(Box::new(envelope))) else {
            return;
        };
        // The last places are kept for calls and their answers: a burst of publications
        // does not push those out.
        if queue.capacity() <= crate::backplane::CONTROL_RESERVE
            || queue.try_send((None, bytes)).is_err()
        {
            Metrics::add(&self.metrics.backplane_lost, 1);
            static WARNED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            if crate::metrics::now_and_then(&WARNED) {
                tracing::warn!(topic = %crate::clip::Clip(out.topic), "backplane queue full: publication not carried to other nodes (logged at most once a second; counted in backplane_lost)");
            }
        }
    }

    /// Installs the router's server-side subscribers (anew each time a layer is built).
    pub(crate) fn set_server_subscribers(
        &self,
        subscribers: &[(MatchPolicy, String, crate::router::ErasedRpc<()>)],
    ) {
        let mut index: crate::core::matching::MatchIndex<Vec<Arc<ServerSubscriber>>> =
            crate::core::matching::MatchIndex::default();
        for (policy, uri, handler) in subscribers {
            let sub = Arc::new(ServerSubscriber {
                handler: handler.clone(),
                queue: Mutex::new(None),
            });
            match index.get_mut(*policy, uri) {
                Some(list) => list.push(sub),
                None => {
                    index.insert(*policy, uri.as_str().into(), vec![sub]);
                }
            }
        }
        if !index.is_empty() {
            self.beyond_sessions.store(true, Ordering::SeqCst);
        }
        *write(&self.server_subscribers) = Arc::new(index);
    }

    /// Hands an event to the server-side subscribers whose topic or pattern matches.
    fn deliver_to_server(self: &Arc<Self>, out: &Outgoing<'_>) -> usize {
        let index = read(&self.server_subscribers).clone();
        if index.is_empty() {
            return 0;
        }
        let topic: Arc<str> = out.topic.into();
        let mut delivered = 0;
        index.for_each_match(out.topic, |_, _, subs| {
            for sub in subs {
                let event = ServerEvent {
                    topic: topic.clone(),
                    payload: out.payload.clone(),
                    publisher: out.publisher.cloned(),
                    publication: out.publication,
                };
                if sub.push(event, self) {
                    delivered += 1;
                } else {
                    Metrics::add(&self.metrics.events_dropped, 1);
                    static WARNED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                    if crate::metrics::now_and_then(&WARNED) {
                        tracing::warn!(topic = %crate::clip::Clip(out.topic), "event handler behind: event dropped (logged at most once a second; counted in events_dropped)");
                    }
                }
            }
        });
        delivered
    }

    pub(crate) fn set_pattern_topics(&self, table: crate::core::pattern::PatternTable<bool>) {
        *write(&self.pattern_topics) = Some(Arc::new(table));
    }

    /// Whether pattern subscriptions may receive a server publication on `topic`.
    fn patterns_may_receive(&self, topic: &str) -> bool {
        read(&self.pattern_topics)
            .as_ref()
            .is_some_and(|t| t.get(topic).copied().unwrap_or(false))
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Resolves once shutdown has begun (at once if it has).
    pub(crate) async fn shutdown_begun(&self) {
        let begun = self.shutdown_begun.notified();
        tokio::pin!(begun);
        begun.as_mut().enable();
        if self.is_shutting_down() {
            return;
        }
        begun.await;
    }

    /// Hands `tell` this node's sessions (id, authid, authrole) with the session table
    /// held: a session that leaves meanwhile has its `on_leave` queued after what `tell`
    /// queues.
    pub(crate) fn tell_sessions(
        &self,
        tell: impl FnOnce(&[(u64, Option<String>, Option<String>)]),
    ) {
        let sessions = read(&self.sessions);
        let list: Vec<(u64, Option<String>, Option<String>)> = sessions
            .iter()
            .filter_map(|(id, outbox)| {
                let who = outbox.identity();
                Some((id.as_u64()?, who.authid, who.authrole))
            })
            .collect();
        tell(&list);
        drop(sessions);
    }

    pub(crate) fn remove_session(&self, id: &SessionId) {
        if write(&self.sessions).remove(id).is_some() {
            Metrics::sub(&self.metrics.sessions_open, 1);
        }
    }

    /// Reserves a session slot for an upgrade; `false` when the cap is reached or the
    /// router is shutting down.
    pub(crate) fn reserve_slot(&self, max: Option<usize>) -> Result<(), &'static str> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err("the server is shutting down");
        }
        let before = self.slots.fetch_add(1, Ordering::SeqCst);
        if max.is_some_and(|max| before >= max) {
            self.slots.fetch_sub(1, Ordering::SeqCst);
            return Err("too many sessions: try again later");
        }
        Ok(())
    }

    pub(crate) fn release_slot(&self) {
        self.slots.fetch_sub(1, Ordering::SeqCst);
        self.session_gone.notify_waiters();
    }

    pub(crate) fn session_count(&self) -> usize {
        read(&self.sessions).len()
    }

    pub(crate) fn outbox(&self, id: &SessionId) -> Option<Outbox> {
        read(&self.sessions).get(id).cloned()
    }

    /// Subscribes an open session to `uri` under `policy`. A session that is closing or
    /// closed is refused under the broker's lock, and its close removes its subscriptions
    /// under the same lock after marking it closed, so no subscription outlives its session.
    /// `permissions` (pattern subscriptions under authentication) filter what it receives.
    pub(crate) fn subscribe(
        &self,
        (policy, uri): (MatchPolicy, &str),
        id: &SessionId,
        outbox: &Outbox,
        permissions: Option<Arc<Permissions>>,
        budget: Option<Budget>,
        ack: Option<V2Ack<'_>>,
    ) -> (Subscribed, Option<u64>, bool) {
        let mut broker = write(&self.broker);
        if outbox.is_closed() {
            return (Subscribed::Already, None, false);
        }
        let subscriber = Subscriber {
            outbox: outbox.clone(),
            permissions,
        };
        let existed = broker.subscription_id(policy, uri).is_some();
        let outcome = broker.subscribe(policy, uri, id, subscriber, budget);
        let subscription = broker.subscription_id(policy, uri);
        // The acknowledgement goes out before any event of the subscription, then the
        // topic's retained event if asked and eligible.
        if let (Some(ack), Some(sid), Subscribed::New | Subscribed::Already) =
            (ack, subscription, outcome)
        {
            let _ = outbox.push_reply((ack.subscribed)(sid));
            // Only to a new subscriber: one subscribed already may have had it live.
            if ack.get_retained
                && outcome == Subscribed::New
                && policy == MatchPolicy::Exact
                && let Some(frame) = self.retained_event(uri, id, outbox, sid)
            {
                let _ = outbox.push(frame);
            }
        }
        let created = !existed && subscription.is_some();
        (outcome, subscription, created)
    }

    /// `topic`'s retained event for a new subscriber, if it would have been eligible.
    fn retained_event(
        &self,
        topic: &str,
        id: &SessionId,
        outbox: &Outbox,
        subscription: u64,
    ) -> Option<Frame> {
        let Proto::V2(serializer) = outbox.proto() else {
            return None;
        };
        let store = self.retained.lock().unwrap_or_else(PoisonError::into_inner);
        let r = store.get(topic)?;
        if !outbox.with_identity(|authid, authrole| r.audience.admits(id, authid, authrole)) {
            return None;
        }
        let mut details = r.details.clone().unwrap_or_default();
        details.insert("retained".into(), Value::Bool(true));
        let payload = &r.payloads[serializer_index(serializer)];
        let bytes = v2::encode_event(subscription, r.publication, &details, payload);
        Some(Frame::v2_bytes(serializer, bytes))
    }

    /// Sets how much is kept of retained events.
    pub(crate) fn set_retain_budget(&self, budget: RetainBudget) {
        self.retained
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_budget(budget);
    }

    /// Keeps the last `keep` events of the topics `pattern` matches.
    pub(crate) fn keep_history(&self, pattern: crate::core::pattern::Pattern, keep: usize) {
        write(&self.history_rules).insert(pattern, keep);
        self.history_on.store(true, Ordering::Relaxed);
    }

    /// Whether some topic keeps an event history.
    pub(crate) fn keeps_history(&self) -> bool {
        self.history_on.load(Ordering::Relaxed)
    }

    /// Sets how much is kept of event history.
    pub(crate) fn set_history_budget(&self, budget: RetainBudget) {
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_budget(budget);
    }

    /// Whether a history rule covers `uri` (a topic, or a pattern judged as one).
    pub(crate) fn history_covers(&self, uri: &str) -> bool {
        read(&self.history_rules).get(uri).is_some()
    }

    /// Runs `f` on the kept history.
    pub(crate) fn with_history<R>(
        &self,
        f: impl FnOnce(&RetainedStore<Arc<HistoryEvent>>) -> R,
    ) -> R {
        f(&self.history.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Unsubscribes; `ack` (a v2 UNSUBSCRIBED) is queued under the broker's lock, after
    /// every event of the subscription. `Some((id, deleted))` if it was subscribed.
    pub(crate) fn unsubscribe(
        &self,
        (policy, uri): (MatchPolicy, &str),
        id: &SessionId,
        ack: Option<Frame>,
    ) -> Option<(u64, bool)> {
        let mut broker = write(&self.broker);
        let subscription = broker.subscription_id(policy, uri)?;
        if !broker.unsubscribe(policy, uri, id) {
            return None;
        }
        if let Some(ack) = ack
            && let Some(outbox) = read(&self.sessions).get(id)
        {
            let _ = outbox.push_reply(ack);
        }
        Some((subscription, broker.subscription_id(policy, uri).is_none()))
    }

    pub(crate) fn is_subscribed(&self, (policy, uri): (MatchPolicy, &str), id: &SessionId) -> bool {
        read(&self.broker).is_subscribed(policy, uri, id)
    }

    pub(crate) fn remove_subscriptions(&self, id: &SessionId) -> Vec<crate::core::broker::Removed> {
        write(&self.broker).remove_session(id)
    }

    /// Every subscription: id, policy, URI.
    pub(crate) fn subscription_list(&self) -> Vec<(u64, MatchPolicy, Arc<str>)> {
        read(&self.broker).list()
    }

    /// What the meta API tells of subscription `id`.
    pub(crate) fn subscription_info(
        &self,
        id: u64,
    ) -> Option<crate::core::broker::SubscriptionInfo> {
        read(&self.broker).info(id)
    }

    /// The id of the subscription to `uri` under `policy`.
    pub(crate) fn subscription_lookup(&self, policy: MatchPolicy, uri: &str) -> Option<u64> {
        read(&self.broker).subscription_id(policy, uri)
    }

    /// The ids of every subscription that matches `topic`.
    pub(crate) fn subscriptions_matching(&self, topic: &str) -> Vec<u64> {
        read(&self.broker).matching(topic)
    }

    /// The sessions subscribed to `topic` on this node, sorted.
    pub(crate) fn subscribers_of(&self, topic: &str) -> Vec<SessionId> {
        let mut ids: Vec<SessionId> = read(&self.broker).subscribers(topic).cloned().collect();
        ids.sort();
        ids
    }

    /// Every open session with its outbox.
    pub(crate) fn session_outboxes(&self) -> Vec<(SessionId, Outbox)> {
        read(&self.sessions)
            .iter()
            .map(|(id, o)| (id.clone(), o.clone()))
            .collect()
    }

    /// Queues the publication for every recipient, encoded once per protocol that a
    /// recipient speaks; returns how many got it.
    pub(crate) fn deliver(
        self: &Arc<Self>,
        out: &Outgoing<'_>,
        exclude: &[SessionId],
        eligible: Option<&[SessionId]>,
    ) -> usize {
        // Frames are queued under the broker's read lock: a subscription's SUBSCRIBED and
        // UNSUBSCRIBED are queued under its write lock, so a v2 client never gets an EVENT
        // before SUBSCRIBED or after UNSUBSCRIBED. Queuing never waits (the outbox applies
        // its policy), so the lock is held for the fan-out's CPU time only; `cargo bench
        // --bench churn` measured no difference in delivery latency against queuing after
        // releasing it.
        // A publisher's lists become sets before the lock is taken: however long they are,
        // they cost its own task, not the broker's lock.
        let filter = out
            .auth_lists
            .filter(|lists| !lists.is_empty())
            .map(crate::core::AuthLists::filter);
        let recipients = Recipients::new(exclude, eligible);
        // What does not depend on the subscription is encoded once per protocol: the v1
        // frame, and the v2 arguments; each matching subscription then costs an EVENT head
        // around those bytes, per serializer its subscribers speak.
        let mut v1_frame: Option<Frame> = None;
        let mut payloads: [Option<v2::EncodedPayload>; 3] = Default::default();
        let broker = read(&self.broker);
        let mut delivered = 0;
        // Every matching subscription gets the event, each under its own id (a session
        // with several receives it once per subscription).
        broker.for_each_match(out.topic, |policy, subscription| {
            let pattern = policy != MatchPolicy::Exact;
            if pattern && !out.to_patterns {
                return;
            }
            let mut frames: [Option<Frame>; 3] = Default::default();
            subscription.for_each_recipient(&recipients, |_, subscriber| {
                let outbox = &subscriber.outbox;
                if outbox.is_closed() {
                    return;
                }
                if let Some(filter) = &filter
                    && !outbox.with_identity(|authid, authrole| filter.admits(authid, authrole))
                {
                    return;
                }
                if let Some(permissions) = &subscriber.permissions
                    && !permissions.allows(Action::Subscribe, out.topic)
                {
                    return;
                }
                let frame = match outbox.proto() {
                    Proto::V1 => v1_frame
                        .get_or_insert_with(|| Frame::from(v1::encode_event(out.topic, out.event))),
                    Proto::V2(serializer) => {
                        let i = serializer_index(serializer);
                        frames[i].get_or_insert_with(|| {
                            let payload = payloads[i].get_or_insert_with(|| {
                                v2::EncodedPayload::new(
                                    serializer,
                                    &out.payload.args,
                                    &out.payload.kwargs,
                                )
                            });
                            out.encode_v2(serializer, subscription.id(), pattern, payload)
                        })
                    }
                };
                if outbox.push(frame.clone()).is_ok() {
                    delivered += 1;
                }
            });
        });
        // Retained and history events share who may receive them.
        let mut audience: Option<Arc<Audience>> = None;
        let mut audience = || {
            audience
                .get_or_insert_with(|| Arc::new(Audience::of(exclude, eligible, out.auth_lists)))
                .clone()
        };
        if out.retain {
            // Kept under the broker's read lock: see `retained`.
            let encode = |serializer| {
                v2::EncodedPayload::new(serializer, &out.payload.args, &out.payload.kwargs)
            };
            let retained = Retained {
                publication: out.publication,
                payloads: [
                    encode(v2::Serializer::Json),
                    encode(v2::Serializer::MsgPack),
                    encode(v2::Serializer::Cbor),
                ],
                details: out.details.cloned(),
                audience: audience(),
            };
            let bytes = retained.bytes(out.topic);
            self.retained
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(out.topic, retained, bytes);
        }
        if out.history
            && self.history_on.load(Ordering::Relaxed)
            && let Some(keep) = read(&self.history_rules).get(out.topic).copied()
        {
            let event = HistoryEvent {
                timestamp: crate::core::broker::now_ms(),
                publication: out.publication,
                payload: out.payload.clone(),
                details: out.details.cloned(),
                to_patterns: out.to_patterns,
                audience: audience(),
            };
            // Values take several times their JSON length once decoded.
            let bytes = 256
                + out.topic.len()
                + 8 * (serde_json::to_vec(&out.payload.args).map_or(0, |v| v.len())
                    + serde_json::to_vec(&out.payload.kwargs).map_or(0, |v| v.len()))
                + details_bytes(event.details.as_ref())
                + event.audience.bytes();
            self.history
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(out.topic, Arc::new(event), bytes, keep);
        }
        drop(broker);
        if self.beyond_sessions.load(Ordering::Relaxed) {
            // Server-side subscribers (not counted: they are not sessions).
            self.deliver_to_server(out);
            if out.forward {
                self.forward(out, exclude, eligible);
            }
        }
        delivered
    }

    /// Registers; `ack` (REGISTERED) is queued under the registrations' lock, before any
    /// INVOCATION of the registration.
    pub(crate) fn register(
        &self,
        key: (MatchPolicy, &str),
        invoke: crate::core::session::v2::InvokePolicy,
        callee: &crate::dealer::Callee,
        budget: crate::core::broker::Budget,
        ack: &(dyn Fn(u64) -> Frame + Sync),
    ) -> Result<(u64, bool), crate::dealer::RegisterError> {
        let mut registrations = write(&self.registrations);
        // Refused under the lock once the callee's session is closing (its registrations are
        // removed under the same lock after it is marked closed).
        if callee.outbox.is_closed() {
            return Err(crate::dealer::RegisterError::Closing);
        }
        if let Some(cluster) = self.cluster()
            && cluster.conflicts(key.0, key.1, invoke)
        {
            // Another node has it, for itself or with another policy.
            return Err(crate::dealer::RegisterError::Exists);
        }
        let created = registrations.lookup(key.0, key.1).is_none();
        let id = registrations.register(key, invoke, callee, budget)?;
        let _ = callee.outbox.push_reply(ack(id));
        drop(registrations);
        // A new callee too: the other nodes share calls by how many each node has.
        self.registrations_changed();
        Ok((id, created))
    }

    /// Unregisters; `ack` (UNREGISTERED) is queued under the lock, after every INVOCATION.
    /// `Some(deleted)` if it was the session's.
    pub(crate) fn unregister(
        &self,
        id: u64,
        session: &SessionId,
        outbox: &Outbox,
        ack: Frame,
    ) -> Option<bool> {
        let mut registrations = write(&self.registrations);
        if !registrations.unregister(id, session) {
            return None;
        }
        let _ = outbox.push_reply(ack);
        let deleted = !registrations.exists(id);
        drop(registrations);
        self.registrations_changed();
        Some(deleted)
    }

    /// Queues an INVOCATION while `registration` is still the callee's: its request id and
    /// the receiver of the answer, or `None` (unregistered, or the callee left).
    pub(crate) fn start_invocation(
        &self,
        procedure: &str,
        routed: &crate::dealer::Routed,
        invocation: &dyn Fn(&crate::dealer::Callee, u64) -> Option<Frame>,
        progress: Option<&crate::dealer::ProgressSink>,
    ) -> Result<
        (
            u64,
            tokio::sync::oneshot::Receiver<crate::dealer::Yielded>,
            crate::dealer::Callee,
        ),
        crate::dealer::Refused,
    > {
        // Under the registrations' lock: the routed callee if it is still one of the
        // registration's, else (a shared registration) the next that takes it.
        let registrations = read(&self.registrations);
        crate::dealer::start_on(
            registrations.candidates(routed, procedure),
            invocation,
            progress,
        )
    }

    pub(crate) fn remove_registrations(&self, session: &SessionId) -> Vec<crate::dealer::Detached> {
        let removed = write(&self.registrations).remove_session(session);
        if !removed.is_empty() {
            self.registrations_changed();
        }
        removed
    }

    /// The registrations, read (for the meta API).
    pub(crate) fn registrations(&self) -> RwLockReadGuard<'_, crate::dealer::Registrations> {
        read(&self.registrations)
    }

    /// The callee a call of `procedure` goes to.
    pub(crate) fn route(&self, procedure: &str) -> Option<crate::dealer::Routed> {
        read(&self.registrations).route(procedure)
    }

    /// Where a call of a client's procedure goes: with a backplane (and `nodes`), to the
    /// best match in the whole cluster, by its shared policy over the callees of every node
    /// ([`Cluster::choose`](crate::cluster::Cluster::choose)); else to this node's. With
    /// `keep_local` (a call whose arguments stream: they do not cross nodes) a local match is
    /// kept, as it is while the backplane is down.
    pub(crate) fn route_anywhere(
        &self,
        procedure: &str,
        nodes: bool,
        keep_local: bool,
    ) -> Option<Routing> {
        let cluster = if nodes && self.beyond_sessions.load(Ordering::Relaxed) {
            self.cluster()
        } else {
            None
        };
        let Some(cluster) = cluster else {
            return self.route(procedure).map(Routing::Here);
        };
        let keep_local = keep_local || self.metrics.backplane_up.load(Ordering::Relaxed) == 0;
        let local = read(&self.registrations).best_summary(procedure);
        match cluster.choose(procedure, local.as_ref(), keep_local)? {
            crate::cluster::Choice::Local => match self.route(procedure) {
                Some(routed) => Some(Routing::Here(routed)),
                // Its callee left meanwhile: another node's, if one has it.
                None => match cluster.choose(procedure, None, false)? {
                    crate::cluster::Choice::Node(node) => Some(Routing::Node(cluster, node)),
                    crate::cluster::Choice::Local => None,
                },
            },
            crate::cluster::Choice::Node(node) => Some(Routing::Node(cluster, node)),
        }
    }

    /// The policy and URI of a subscription id.
    pub(crate) fn subscription_key(&self, id: u64) -> Option<SubKey> {
        read(&self.broker).key_of(id).cloned()
    }
}

/// Where a call of a client's procedure goes.
#[derive(Debug)]
pub(crate) enum Routing {
    /// To a callee of this node.
    Here(crate::dealer::Routed),
    /// To another node.
    Node(Arc<crate::cluster::Cluster>, u64),
}

/// One publication on its way to subscribers, in both versions' forms.
pub(crate) struct Outgoing<'a> {
    pub(crate) topic: &'a str,
    /// The v1 event.
    pub(crate) event: &'a Value,
    /// The v2 arguments.
    pub(crate) payload: &'a Payload,
    /// The v2 publication id.
    pub(crate) publication: u64,
    /// The v2 EVENT's details (the publisher, when disclosed).
    pub(crate) details: Option<&'a v2::Dict>,
    /// Who may receive it by authid and authrole (a v2 publisher's lists).
    pub(crate) auth_lists: Option<&'a crate::core::AuthLists>,
    /// Whether prefix and wildcard subscriptions get it: not when the topic's rule guards
    /// subscribing with anything but a plain allow (a pattern subscriber never passed it).
    pub(crate) to_patterns: bool,
    /// Keep it as the topic's retained event.
    pub(crate) retain: bool,
    /// The publishing session (for server-side subscribers' `Caller`).
    pub(crate) publisher: Option<&'a crate::Session>,
    /// Hand it to the backplane for the other nodes (not for what came from there).
    pub(crate) forward: bool,
    /// It may be kept in event history: not when it names its audience by session id
    /// (ids change on reconnect; the spec says such events are not kept).
    pub(crate) history: bool,
}

fn serializer_index(serializer: v2::Serializer) -> usize {
    match serializer {
        v2::Serializer::Json => 0,
        v2::Serializer::MsgPack => 1,
        _ => 2,
    }
}

impl Outgoing<'_> {
    /// The EVENT for one subscription around the arguments encoded once; `pattern`: a
    /// prefix or wildcard subscription, whose EVENT names the topic in its details.
    fn encode_v2(
        &self,
        serializer: v2::Serializer,
        subscription: u64,
        pattern: bool,
        payload: &v2::EncodedPayload,
    ) -> Frame {
        let empty = v2::Dict::new();
        let mut details = std::borrow::Cow::Borrowed(self.details.unwrap_or(&empty));
        if pattern {
            details
                .to_mut()
                .insert("topic".into(), serde_json::Value::from(self.topic));
        }
        let bytes = v2::encode_event(subscription, self.publication, &details, payload);
        Frame::v2_bytes(serializer, bytes)
    }
}

/// The server-side handle: send events, manage subscriptions and sessions from anywhere
/// (an axum HTTP handler, a background task, a WAMP handler through the `Wamp`
/// extractor).
///
/// Cheap to clone. Events sent through it skip the topic rules and hooks, as clj-wamp's
/// `send-event!`, `broadcast-event!` and `emit-event!` did.
///
/// ```
/// use tower_wamp::{WampRouter, Topic};
///
/// let router: WampRouter = WampRouter::new().topic("http://example.com/news", Topic::new());
/// let wamp = router.handle();
/// // Nobody is connected yet, so nobody receives it.
/// assert_eq!(wamp.publish("http://example.com/news", &"hello").unwrap(), 0);
/// assert!(wamp.sessions().is_empty());
/// ```
#[derive(Clone, Default)]
pub struct Wamp {
    pub(crate) hub: Arc<Hub>,
}

impl fmt::Debug for Wamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wamp")
            .field("sessions", &self.hub.session_count())
            .finish_non_exhaustive()
    }
}

impl Wamp {
    /// Sends `[8, topic, event]` to every subscriber of `topic` (a v2 subscriber gets an
    /// EVENT with `args = [event]`). Returns how many events were queued: one per session
    /// subscribed to the topic, plus one per WAMP v2 pattern subscription that matches it.
    /// Pattern subscriptions receive it only when the topic's rule plainly allows
    /// subscribing, and only once a [`WampLayer`](crate::WampLayer) was built from the
    /// router.
    ///
    /// # Errors
    /// [`SendError::Serialize`] if `event` does not serialize to JSON.
    pub fn publish(&self, topic: &str, event: &impl Serialize) -> Result<usize, SendError> {
        self.send_out(topic, event, &[], None)
    }

    fn send_out(
        &self,
        topic: &str,
        event: &impl Serialize,
        exclude: &[SessionId],
        eligible: Option<&[SessionId]>,
    ) -> Result<usize, SendError> {
        let event = serde_json::to_value(event).map_err(|e| SendError::Serialize(e.to_string()))?;
        let payload = Payload::from_event(event.clone());
        let out = Outgoing {
            topic,
            event: &event,
            payload: &payload,
            publication: random_id(),
            details: None,
            auth_lists: None,
            to_patterns: self.hub.patterns_may_receive(topic),
            retain: false,
            publisher: None,
            forward: true,
            history: exclude.is_empty() && eligible.is_none(),
        };
        Ok(self.hub.deliver(&out, exclude, eligible))
    }

    /// Sends to every subscriber of `topic` except the sessions in `exclude`.
    ///
    /// # Errors
    /// [`SendError::Serialize`] if `event` does not serialize to JSON.
    pub fn publish_excluding(
        &self,
        topic: &str,
        event: &impl Serialize,
        exclude: &[SessionId],
    ) -> Result<usize, SendError> {
        self.send_out(topic, event, exclude, None)
    }

    /// Sends only to those subscribers of `topic` that are in `eligible`.
    ///
    /// # Errors
    /// [`SendError::Serialize`] if `event` does not serialize to JSON.
    pub fn publish_to(
        &self,
        topic: &str,
        event: &impl Serialize,
        eligible: &[SessionId],
    ) -> Result<usize, SendError> {
        self.send_out(topic, event, &[], Some(eligible))
    }

    /// Sends `[8, topic, event]` to one WAMP v1 session, subscribed or not; a WAMP v2
    /// session gets an EVENT with `args = [event]` only if it is subscribed to `topic`.
    ///
    /// # Errors
    /// [`SendError::NoSuchSession`] if no open session has this id,
    /// [`SendError::NoSubscription`] for a v2 session not subscribed to `topic`, or another
    /// [`SendError`] if the send fails.
    pub fn send(
        &self,
        session: &SessionId,
        topic: &str,
        event: &impl Serialize,
    ) -> Result<(), SendError> {
        let outbox = self.hub.outbox(session).ok_or(SendError::NoSuchSession)?;
        match outbox.proto() {
            Proto::V1 => outbox.push(crate::session::event_frame(topic, event)?),
            Proto::V2(serializer) => {
                let event =
                    serde_json::to_value(event).map_err(|e| SendError::Serialize(e.to_string()))?;
                // A v2 EVENT names a subscription: only a subscribed session can get one.
                // Looked up and queued under the broker's lock, as publications are, so
                // the EVENT never follows the session's UNSUBSCRIBED.
                let broker = read(&self.hub.broker);
                let exact = MatchPolicy::Exact;
                let subscription = match broker.subscription_id(exact, topic) {
                    Some(id) if broker.is_subscribed(exact, topic, session) => id,
                    _ => return Err(SendError::NoSubscription),
                };
                let frame = Frame::v2(
                    serializer,
                    &v2::Message::Event {
                        subscription,
                        publication: random_id(),
                        details: v2::Dict::new(),
                        args: vec![event],
                        kwargs: v2::Dict::new(),
                    },
                );
                outbox.push(frame)
            }
        }
    }

    /// Subscribes an open session to `topic`, bypassing the topic rules and hooks.
    /// Returns `false` if the session is not open or was already subscribed.
    pub fn subscribe(&self, session: &SessionId, topic: &str) -> bool {
        match self.hub.outbox(session) {
            Some(outbox) => {
                self.hub
                    .subscribe(
                        (MatchPolicy::Exact, topic),
                        session,
                        &outbox,
                        None,
                        None,
                        None,
                    )
                    .0
                    == Subscribed::New
            }
            None => false,
        }
    }

    /// Unsubscribes a session from `topic` (no hooks). Returns `false` if it was not
    /// subscribed.
    pub fn unsubscribe(&self, session: &SessionId, topic: &str) -> bool {
        self.hub
            .unsubscribe((MatchPolicy::Exact, topic), session, None)
            .is_some()
    }

    /// The sessions subscribed to `topic`, sorted (on this node; see
    /// [`subscribers_everywhere`](Self::subscribers_everywhere)).
    #[must_use]
    pub fn subscribers(&self, topic: &str) -> Vec<SessionId> {
        self.hub.subscribers_of(topic)
    }

    /// The sessions on every node subscribed to `topic`, sorted: with a backplane, the
    /// other live nodes are asked and those that answer within a second counted (without
    /// one, [`subscribers`](Self::subscribers)).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let wamp = tower_wamp::WampRouter::<()>::new().handle();
    /// assert!(wamp.subscribers_everywhere("com.example.chat").await.is_empty());
    /// # });
    /// ```
    pub async fn subscribers_everywhere(&self, topic: &str) -> Vec<SessionId> {
        let mut ids = self.hub.subscribers_of(topic);
        if let Some(cluster) = self.hub.cluster() {
            let query = crate::cluster::Query::Subscribers {
                topic: topic.to_owned(),
            };
            ids.extend(gathered_ids(cluster.gather(query).await));
        }
        ids.sort();
        ids.dedup();
        ids
    }

    /// Every open session on every node, sorted: with a backplane, the other live nodes are
    /// asked and those that answer within a second counted (without one,
    /// [`sessions`](Self::sessions)).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let wamp = tower_wamp::WampRouter::<()>::new().handle();
    /// assert!(wamp.sessions_everywhere().await.is_empty());
    /// # });
    /// ```
    pub async fn sessions_everywhere(&self) -> Vec<SessionId> {
        let mut ids = self.sessions();
        if let Some(cluster) = self.hub.cluster() {
            ids.extend(gathered_ids(
                cluster.gather(crate::cluster::Query::AllSessions).await,
            ));
        }
        ids.sort();
        ids.dedup();
        ids
    }

    /// The topics a session is subscribed to, sorted.
    #[must_use]
    pub fn topics_of(&self, session: &SessionId) -> Vec<String> {
        let mut topics: Vec<String> = read(&self.hub.broker)
            .topics_of(session)
            .map(|t| t.to_string())
            .collect();
        topics.sort();
        topics
    }

    /// The ids of all open sessions, sorted.
    #[must_use]
    pub fn sessions(&self) -> Vec<SessionId> {
        let mut ids: Vec<SessionId> = read(&self.hub.sessions).keys().cloned().collect();
        ids.sort();
        ids
    }

    /// How many topics have at least one subscriber.
    #[must_use]
    pub fn topic_count(&self) -> usize {
        read(&self.hub.broker).topic_count()
    }

    /// The router's counters.
    #[must_use]
    pub fn metrics(&self) -> MetricsSnapshot {
        self.hub.metrics.snapshot()
    }

    /// Graceful shutdown: refuses new upgrades (503), closes every open session with 1001
    /// (going away) after its queued frames (a WAMP v2 session gets GOODBYE
    /// `wamp.close.system_shutdown` first, a v2 client still in its handshake ABORT with
    /// that reason), runs their `on_close` hooks, and waits until all have ended or
    /// `deadline` passes. Returns `true` if all ended in time.
    ///
    /// Call it from axum's graceful shutdown signal, since upgraded WebSocket connections
    /// are not tracked by the HTTP server:
    ///
    /// ```no_run
    /// # async fn run(app: axum::Router, wamp: tower_wamp::Wamp, listener: tokio::net::TcpListener) {
    /// use std::time::Duration;
    /// axum::serve(listener, app)
    ///     .with_graceful_shutdown(async move {
    ///         tokio::signal::ctrl_c().await.ok();
    ///         wamp.shutdown(Duration::from_secs(5)).await;
    ///     })
    ///     .await
    ///     .unwrap();
    /// # }
    /// ```
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        let open: Vec<Outbox> = {
            // Under the lock that `add_session` checks the flag under: a session being
            // set up right now is either in this list or refused there.
            let sessions = write(&self.hub.sessions);
            self.hub.shutting_down.store(true, Ordering::SeqCst);
            sessions.values().cloned().collect()
        };
        // Sessions in their handshake are not listed yet: they refuse themselves.
        self.hub.shutdown_begun.notify_waiters();
        // The other nodes stop routing calls here at once (not after a heartbeat's silence).
        if let Some(cluster) = self.hub.cluster() {
            cluster.leave();
        }
        tracing::info!(sessions = open.len(), "shutting down");
        for outbox in open {
            outbox.close_with_goodbye(
                1001,
                "server shutting down",
                crate::core::session::v2::uri::SYSTEM_SHUTDOWN,
            );
        }
        let all_gone = async {
            loop {
                let gone = self.hub.session_gone.notified();
                if self.hub.slots.load(Ordering::SeqCst) == 0 {
                    return;
                }
                gone.await;
            }
        };
        tokio::time::timeout(deadline, all_gone).await.is_ok()
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.hub.shutting_down.load(Ordering::SeqCst)
    }

    /// Closes a session (1000, after its queued frames; GOODBYE `wamp.close.killed` first
    /// for WAMP v2). Returns `false` if no open
    /// session has this id.
    pub fn close(&self, session: &SessionId) -> bool {
        match self.hub.outbox(session) {
            Some(outbox) => {
                outbox.close_with_goodbye(1000, "closed by the server", crate::session::KILLED);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{session::QueueLimits, wire::Proto};

    #[test]
    fn a_closed_session_cannot_be_subscribed() {
        let hub = Hub::default();
        let id = SessionId::from("s");
        let outbox = Outbox::new(QueueLimits::default(), hub.metrics.clone(), Proto::V1);
        assert!(hub.add_session(id.clone(), outbox.clone()));
        // A task that looked the session up, then the session ended.
        outbox.end();
        hub.remove_subscriptions(&id);
        hub.remove_session(&id);
        assert_ne!(
            hub.subscribe((MatchPolicy::Exact, "t"), &id, &outbox, None, None, None)
                .0,
            Subscribed::New
        );
        assert!(!hub.is_subscribed((MatchPolicy::Exact, "t"), &id));
    }

    #[tokio::test]
    async fn sessions_added_after_shutdown_began_are_refused() {
        let wamp = Wamp::default();
        let outbox = Outbox::new(QueueLimits::default(), wamp.hub.metrics.clone(), Proto::V1);
        assert!(wamp.shutdown(std::time::Duration::ZERO).await);
        assert!(!wamp.hub.add_session(SessionId::from("late"), outbox));
        assert!(wamp.sessions().is_empty());
    }
}
