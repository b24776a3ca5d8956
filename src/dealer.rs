//! Procedures registered by WAMP v2 clients: the table of registrations and, per callee
//! session, its invocations awaiting a YIELD or ERROR.
//!
//! A call to such a procedure, from a v1 or a v2 caller, becomes an INVOCATION queued for
//! the callee (never dropped by a slow-consumer policy: it is a request). The caller awaits
//! the answer; a callee that leaves fails every pending call with `wamp.error.canceled`. A
//! caller that goes away (its session closed, its call timed out) removes its invocation,
//! so a late YIELD is discarded, and the callee, if it announced `call_canceling`, gets an
//! INTERRUPT `killnowait`. A CANCEL does what its mode says (see [`invoke`]).
//!
//! Progressive results go straight from the callee's YIELD to the caller's queue, in the
//! callee's order and before the final answer, which comes through the caller's task. They
//! are refused rather than make room in a caller's queue that is three quarters full: the
//! call then ends with an ERROR to the caller and an INTERRUPT to the callee, so a callee
//! that streams faster than its caller reads cannot push the caller's events out or get it
//! disconnected.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use serde_json::Value;
use tokio::sync::oneshot;

use crate::{
    RpcError,
    core::{
        SessionId,
        broker::Budget,
        codec::v2::{Dict, MAX_ID, Message, Serializer},
        matching::{MatchIndex, MatchPolicy},
        session::v2::{CalleeFeatures, CancelMode, InvokePolicy},
    },
    session::{Outbox, SendError},
    wire::{Frame, Payload, Proto},
};

/// `wamp.error.canceled`.
pub(crate) const CANCELED: &str = "wamp.error.canceled";

/// What a callee answered.
#[derive(Debug)]
pub(crate) enum Yielded {
    Result(Payload),
    Error {
        error: String,
        args: Vec<Value>,
        kwargs: Dict,
    },
}

/// Where a call's progressive results go: a v2 caller that asked for them
/// (`receive_progress`). Closed when the call ends, so nothing follows the final answer.
#[derive(Debug, Clone)]
pub(crate) struct ProgressSink(Arc<Mutex<Option<SinkTo>>>);

#[derive(Debug)]
struct SinkTo {
    target: Target,
    /// When the last progressive result was queued (a call's timeout runs from it).
    last: Option<tokio::time::Instant>,
}

/// Where a progressive result goes.
enum Target {
    /// A caller on this node: a RESULT with `progress` for its request.
    Local {
        outbox: Outbox,
        serializer: Serializer,
        request: u64,
    },
    /// A caller on another node: through the backplane.
    Remote(Arc<dyn Fn(Payload) -> Sent + Send + Sync>),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local { request, .. } => {
                f.debug_struct("Local").field("request", request).finish()
            }
            Self::Remote(_) => f.write_str("Remote"),
        }
    }
}

/// What became of a progressive result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    Queued,
    /// The call has ended, or the caller is gone.
    Ended,
    /// The caller's queue is three quarters full: not queued.
    Refused,
}

impl ProgressSink {
    pub(crate) fn new(outbox: Outbox, serializer: Serializer, request: u64) -> Self {
        Self(Arc::new(Mutex::new(Some(SinkTo {
            target: Target::Local {
                outbox,
                serializer,
                request,
            },
            last: None,
        }))))
    }

    /// Progressive results for a caller on another node, handed to `send`.
    pub(crate) fn remote(send: Arc<dyn Fn(Payload) -> Sent + Send + Sync>) -> Self {
        Self(Arc::new(Mutex::new(Some(SinkTo {
            target: Target::Remote(send),
            last: None,
        }))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<SinkTo>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a progressive RESULT.
    pub(crate) fn send(&self, payload: Payload) -> Sent {
        let mut to = self.lock();
        let Some(to) = &mut *to else {
            return Sent::Ended;
        };
        let sent = match &to.target {
            Target::Local {
                outbox,
                serializer,
                request,
            } => {
                let mut details = Dict::new();
                details.insert("progress".into(), Value::Bool(true));
                let frame = Frame::v2(
                    *serializer,
                    &Message::Result {
                        request: *request,
                        details,
                        args: payload.args,
                        kwargs: payload.kwargs,
                    },
                );
                match outbox.push_unless_busy(frame) {
                    Ok(()) => Sent::Queued,
                    Err(SendError::QueueFull) => Sent::Refused,
                    Err(_) => Sent::Ended,
                }
            }
            Target::Remote(send) => send(payload),
        };
        if sent == Sent::Queued {
            to.last = Some(tokio::time::Instant::now());
        }
        sent
    }

    /// When the last progressive result was queued.
    pub(crate) fn last_sent(&self) -> Option<tokio::time::Instant> {
        self.lock().as_ref().and_then(|to| to.last)
    }

    /// Ends the stream: later sends do nothing (a send in progress finishes first).
    pub(crate) fn close(&self) {
        self.lock().take();
    }
}

/// What a v2 caller adds to a call: where its progressive results go, and its CANCELs (the
/// latest mode; a `kill` may be followed by a `skip` or `killnowait` while the callee
/// does not answer).
#[derive(Debug, Default)]
pub(crate) struct CallControl {
    pub(crate) progress: Option<ProgressSink>,
    pub(crate) cancel: Option<crate::cancel::Receiver>,
    /// A progressive call invocation's later chunks (its first CALL had `progress`).
    pub(crate) chunks: Option<tokio::sync::mpsc::Receiver<Chunk>>,
}

/// A later CALL of a progressive call invocation.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub(crate) args: Vec<Value>,
    pub(crate) kwargs: Dict,
    /// The caller sends no more.
    pub(crate) last: bool,
}

/// The error of a progressive call invocation to a callee that cannot take one.
pub(crate) fn streams_unsupported() -> RpcError {
    RpcError::new(
        "wamp.error.feature_not_supported",
        "the callee does not take progressive call invocations",
    )
}

/// An invocation awaiting its answer.
#[derive(Debug)]
struct Waiting {
    answer: oneshot::Sender<Yielded>,
    progress: Option<ProgressSink>,
}

/// One callee session's invocations in flight.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// The last INVOCATION request id issued (they count 1, 2, 3 … per callee session).
    last: AtomicU64,
    calls: Mutex<HashMap<u64, Waiting>>,
    closed: std::sync::atomic::AtomicBool,
}

/// The most invocations one callee may have unanswered; beyond, calls to it are refused
/// with `wamp.error.too_many_calls` (its callers' own budgets bound each of them).
pub(crate) const MAX_PENDING: usize = 4096;

/// Why an invocation was not started.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The registration is gone.
    Unregistered,
    /// The callee is leaving.
    Gone,
    /// The callee has too many invocations unanswered or queued.
    Busy,
}

/// What became of a YIELD or ERROR from a callee.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answered {
    Delivered,
    /// A progressive result the caller's queue had no room for: the call ended with an
    /// ERROR to the caller; the callee is to be interrupted.
    Overflowed,
    /// For an invocation whose caller is gone: discarded.
    Late,
    /// For an invocation never issued: a protocol violation.
    Unknown,
}

impl Pending {
    fn calls(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiting>> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts an invocation: `send` queues it under the next request id; `Err` once the
    /// callee left, while it has [`MAX_PENDING`] invocations unanswered, or when `send`
    /// finds no room (the id is then not used: INVOCATION ids stay sequential).
    /// Progressive results go to `progress`.
    pub(crate) fn start(
        &self,
        send: impl FnOnce(u64) -> Result<(), SendError>,
        progress: Option<ProgressSink>,
    ) -> Result<(u64, oneshot::Receiver<Yielded>), Refused> {
        let mut calls = self.calls();
        if self.closed.load(Ordering::SeqCst) {
            return Err(Refused::Gone);
        }
        if calls.len() >= MAX_PENDING {
            return Err(Refused::Busy);
        }
        let id = match self.last.load(Ordering::SeqCst) {
            MAX_ID => 1,
            last => last + 1,
        };
        match send(id) {
            Ok(()) => {}
            Err(SendError::QueueFull) => return Err(Refused::Busy),
            Err(_) => return Err(Refused::Gone),
        }
        self.last.store(id, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        calls.insert(
            id,
            Waiting {
                answer: tx,
                progress,
            },
        );
        Ok((id, rx))
    }

    fn unanswered(&self, request: u64) -> Answered {
        if request != 0 && request <= self.last.load(Ordering::SeqCst) {
            Answered::Late
        } else {
            Answered::Unknown
        }
    }

    /// Delivers a callee's final answer.
    pub(crate) fn answer(&self, request: u64, answer: Yielded) -> Answered {
        match self.calls().remove(&request) {
            Some(waiting) => {
                let _ = waiting.answer.send(answer);
                Answered::Delivered
            }
            None => self.unanswered(request),
        }
    }

    /// Forwards a callee's progressive result to its caller, if the caller asked for them
    /// (else it is dropped: a callee may send them unasked only by ignoring the spec).
    /// Sent under the lock, so it cannot overtake a final answer handled meanwhile. One the
    /// caller has no room for ends the call.
    pub(crate) fn progress(&self, request: u64, payload: Payload) -> Answered {
        let mut calls = self.calls();
        let Some(waiting) = calls.get(&request) else {
            drop(calls);
            return self.unanswered(request);
        };
        let refused = waiting
            .progress
            .as_ref()
            .is_some_and(|sink| sink.send(payload) == Sent::Refused);
        if !refused {
            return Answered::Delivered;
        }
        if let Some(waiting) = calls.remove(&request) {
            let _ = waiting.answer.send(Yielded::Error {
                error: CANCELED.into(),
                args: vec![Value::from(
                    "the caller did not keep up with the call's progressive results",
                )],
                kwargs: Dict::new(),
            });
        }
        Answered::Overflowed
    }

    /// Whether the invocation still awaits its answer.
    fn is_waiting(&self, request: u64) -> bool {
        self.calls().contains_key(&request)
    }

    /// Forgets an invocation whose caller went away; `true` if it was still unanswered.
    pub(crate) fn forget(&self, request: u64) -> bool {
        self.calls().remove(&request).is_some()
    }

    /// The callee left: every pending call fails.
    pub(crate) fn close(&self) {
        let mut calls = self.calls();
        self.closed.store(true, Ordering::SeqCst);
        calls.clear();
    }
}

/// A session that registered procedures.
#[derive(Debug, Clone)]
pub(crate) struct Callee {
    pub(crate) session: SessionId,
    pub(crate) outbox: Outbox,
    pub(crate) pending: Arc<Pending>,
    /// The callee asked (REGISTER's `disclose_caller`) to be told who calls.
    pub(crate) disclose_caller: bool,
    /// What it announced in HELLO (INTERRUPT, progressive results).
    pub(crate) features: CalleeFeatures,
    /// For a pattern registration under authentication: the permissions it had when it
    /// registered, against which each procedure the pattern catches is checked.
    pub(crate) permissions: Option<Arc<crate::core::auth::Permissions>>,
    /// When it joined its registration, in milliseconds since the Unix epoch (set by
    /// [`Registrations::register`]): the order `first` and `last` go by across nodes.
    pub(crate) joined: u64,
}

impl Callee {
    /// Whether it may serve `procedure` (a pattern must not catch calls its session may
    /// not register for).
    fn may_serve(&self, procedure: &str) -> bool {
        self.permissions
            .as_ref()
            .is_none_or(|p| p.allows(crate::core::auth::Action::Register, procedure))
    }
}

/// Why a REGISTER was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RegisterError {
    /// Registered already: by another callee without a shared policy, with another policy,
    /// or by this callee.
    Exists,
    OverBudget,
    /// The callee's session is closing.
    Closing,
}

/// One registration (a procedure or pattern under its match policy): its id, shared by
/// its callees as WAMP v2 asks, and its callees in the order they registered.
#[derive(Debug)]
struct Registration {
    id: u64,
    invoke: InvokePolicy,
    callees: Vec<Callee>,
    /// The round-robin cursor.
    next: AtomicUsize,
    /// When it was created, in milliseconds since the Unix epoch.
    created: u64,
}

/// What the meta API tells of a registration.
#[derive(Debug, Clone)]
pub(crate) struct RegistrationInfo {
    pub(crate) id: u64,
    pub(crate) policy: MatchPolicy,
    pub(crate) uri: Arc<str>,
    pub(crate) invoke: InvokePolicy,
    pub(crate) created: u64,
    pub(crate) callees: Vec<SessionId>,
}

/// A registration as the other nodes are told of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) policy: MatchPolicy,
    pub(crate) uri: Arc<str>,
    pub(crate) invoke: InvokePolicy,
    /// How many callees it has, and when the first and the last joined (milliseconds since
    /// the Unix epoch).
    pub(crate) callees: usize,
    pub(crate) first: u64,
    pub(crate) last: u64,
    /// A pattern with a callee whose permissions may keep it from some procedures.
    pub(crate) restricted: bool,
}

/// A registration a session lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Detached {
    pub(crate) id: u64,
    pub(crate) uri: Arc<str>,
    /// It had no other callee: it is gone.
    pub(crate) deleted: bool,
}

#[derive(Debug, Default)]
struct SessionRegistrations {
    ids: Vec<u64>,
    bytes: usize,
    /// How many of `ids` are prefix or wildcard registrations.
    patterns: usize,
}

/// The procedures registered by clients.
#[derive(Debug, Default)]
pub(crate) struct Registrations {
    procedures: MatchIndex<Registration>,
    by_id: HashMap<u64, (MatchPolicy, Arc<str>)>,
    /// Per session: its registrations, and the bytes of their URIs.
    per_session: HashMap<SessionId, SessionRegistrations>,
    next_id: u64,
}

/// The callee a call goes to.
#[derive(Debug, Clone)]
pub(crate) struct Routed {
    pub(crate) registration: u64,
    pub(crate) callee: Callee,
    /// A prefix or wildcard registration: INVOCATION names the procedure called.
    pub(crate) pattern: bool,
    /// A shared registration: another of its callees may take the call if this one cannot.
    pub(crate) shared: bool,
}

impl Registrations {
    /// Registers `callee` for `uri` under `policy`; a registration with a shared `invoke`
    /// policy takes more callees with the same policy (the same id for all).
    pub(crate) fn register(
        &mut self,
        (policy, uri): (MatchPolicy, &str),
        invoke: InvokePolicy,
        callee: &Callee,
        budget: Budget,
    ) -> Result<u64, RegisterError> {
        let existing = self.procedures.get(policy, uri);
        if let Some(reg) = existing
            && (reg.invoke == InvokePolicy::Single
                || reg.invoke != invoke
                || reg.callees.iter().any(|c| c.session == callee.session))
        {
            return Err(RegisterError::Exists);
        }
        let mine = self.per_session.entry(callee.session.clone()).or_default();
        let pattern = policy != MatchPolicy::Exact;
        if mine.ids.len() >= budget.entries
            || mine.bytes + uri.len() > budget.bytes
            || (pattern && mine.patterns >= budget.patterns)
        {
            if mine.ids.is_empty() {
                self.per_session.remove(&callee.session);
            }
            return Err(RegisterError::OverBudget);
        }
        let callee = Callee {
            joined: crate::core::broker::now_ms(),
            ..callee.clone()
        };
        let id = match self.procedures.get_mut(policy, uri) {
            Some(reg) => {
                reg.callees.push(callee);
                reg.id
            }
            None => {
                self.next_id += 1;
                let key: Arc<str> = uri.into();
                self.by_id.insert(self.next_id, (policy, key.clone()));
                self.procedures.insert(
                    policy,
                    key,
                    Registration {
                        id: self.next_id,
                        invoke,
                        callees: vec![callee],
                        next: AtomicUsize::new(0),
                        created: crate::core::broker::now_ms(),
                    },
                );
                self.next_id
            }
        };
        mine.ids.push(id);
        mine.bytes += uri.len();
        mine.patterns += usize::from(pattern);
        Ok(id)
    }

    /// Removes `session` from registration `id`; the registration goes with its last
    /// callee. `None` if the session is not one of its callees, else the URI's length and
    /// whether it is a pattern.
    fn detach(&mut self, id: u64, session: &SessionId) -> Option<(usize, bool)> {
        let (policy, uri) = self.by_id.get(&id)?.clone();
        let reg = self.procedures.get_mut(policy, &uri)?;
        let at = reg.callees.iter().position(|c| &c.session == session)?;
        reg.callees.remove(at);
        if reg.callees.is_empty() {
            self.procedures.remove(policy, &uri);
            self.by_id.remove(&id);
        }
        Some((uri.len(), policy != MatchPolicy::Exact))
    }

    /// Removes a registration of `session`; `false` if it has no such registration.
    pub(crate) fn unregister(&mut self, id: u64, session: &SessionId) -> bool {
        let Some((len, pattern)) = self.detach(id, session) else {
            return false;
        };
        if let Some(mine) = self.per_session.get_mut(session) {
            mine.ids.retain(|&i| i != id);
            mine.bytes -= len;
            mine.patterns -= usize::from(pattern);
            if mine.ids.is_empty() {
                self.per_session.remove(session);
            }
        }
        true
    }

    /// Removes every registration of a session.
    pub(crate) fn remove_session(&mut self, session: &SessionId) -> Vec<Detached> {
        let Some(mine) = self.per_session.remove(session) else {
            return Vec::new();
        };
        let mut detached = Vec::with_capacity(mine.ids.len());
        for id in mine.ids {
            let Some(uri) = self.by_id.get(&id).map(|(_, uri)| uri.clone()) else {
                continue;
            };
            if self.detach(id, session).is_some() {
                detached.push(Detached {
                    id,
                    uri,
                    deleted: !self.by_id.contains_key(&id),
                });
            }
        }
        detached
    }

    /// Whether registration `id` exists.
    pub(crate) fn exists(&self, id: u64) -> bool {
        self.by_id.contains_key(&id)
    }

    /// Every registration, as the other nodes are told of it.
    pub(crate) fn summary(&self) -> Vec<Summary> {
        self.procedures
            .iter()
            .map(|(policy, uri, reg)| Summary {
                policy,
                uri: uri.clone(),
                invoke: reg.invoke,
                callees: reg.callees.len(),
                first: reg.callees.first().map_or(0, |c| c.joined),
                last: reg.callees.last().map_or(0, |c| c.joined),
                restricted: policy != MatchPolicy::Exact
                    && reg.callees.iter().any(|c| c.permissions.is_some()),
            })
            .collect()
    }

    /// Every registration: (id, policy, URI).
    pub(crate) fn list(&self) -> Vec<(u64, MatchPolicy, Arc<str>)> {
        self.procedures
            .iter()
            .map(|(policy, uri, reg)| (reg.id, policy, uri.clone()))
            .collect()
    }

    /// What the meta API tells of registration `id`.
    pub(crate) fn info(&self, id: u64) -> Option<RegistrationInfo> {
        let (policy, uri) = self.by_id.get(&id)?;
        let reg = self.procedures.get(*policy, uri)?;
        Some(RegistrationInfo {
            id,
            policy: *policy,
            uri: uri.clone(),
            invoke: reg.invoke,
            created: reg.created,
            callees: reg.callees.iter().map(|c| c.session.clone()).collect(),
        })
    }

    /// The id of the registration of `uri` under `policy`.
    pub(crate) fn lookup(&self, policy: MatchPolicy, uri: &str) -> Option<u64> {
        self.procedures.get(policy, uri).map(|r| r.id)
    }

    /// The id of the registration a call of `procedure` would go to (without moving a
    /// round-robin cursor).
    pub(crate) fn best(&self, procedure: &str) -> Option<u64> {
        let reserved = procedure == "wamp" || procedure.starts_with("wamp.");
        self.procedures
            .best_match_where(procedure, |policy, _, reg| {
                policy == MatchPolicy::Exact
                    || (!reserved && reg.callees.iter().any(|c| c.may_serve(procedure)))
            })
            .map(|(_, _, reg)| reg.id)
    }

    /// The registration a call of `procedure` would go to (without moving a round-robin
    /// cursor), as [`summary`](Self::summary) tells it, with only the callees that may
    /// serve `procedure` counted.
    pub(crate) fn best_summary(&self, procedure: &str) -> Option<Summary> {
        let reserved = procedure == "wamp" || procedure.starts_with("wamp.");
        let (policy, uri, reg) =
            self.procedures
                .best_match_where(procedure, |policy, _, reg| {
                    policy == MatchPolicy::Exact
                        || (!reserved && reg.callees.iter().any(|c| c.may_serve(procedure)))
                })?;
        let pattern = policy != MatchPolicy::Exact;
        let mut serving = reg
            .callees
            .iter()
            .filter(|c| !pattern || c.may_serve(procedure));
        let first = serving.next()?.joined;
        let (callees, last) = serving.fold((1, first), |(n, _), c| (n + 1, c.joined));
        Some(Summary {
            policy,
            uri: uri.clone(),
            invoke: reg.invoke,
            callees,
            first,
            last,
            restricted: false,
        })
    }

    /// The callee a call of `procedure` goes to: the best-matching registration (exact,
    /// then the longest prefix, then the wildcard with the longest literal portions) with a
    /// callee that may serve it, and its callee by the registration's invoke policy.
    /// Procedures under `wamp.` are the router's: no pattern reaches them.
    pub(crate) fn route(&self, procedure: &str) -> Option<Routed> {
        let reserved = procedure == "wamp" || procedure.starts_with("wamp.");
        let (policy, _, reg) = self
            .procedures
            .best_match_where(procedure, |policy, _, reg| {
                policy == MatchPolicy::Exact
                    || (!reserved && reg.callees.iter().any(|c| c.may_serve(procedure)))
            })?;
        let pattern = policy != MatchPolicy::Exact;
        let serving: Vec<usize> = (0..reg.callees.len())
            .filter(|&i| !pattern || reg.callees[i].may_serve(procedure))
            .collect();
        let n = serving.len();
        let at = match reg.invoke {
            InvokePolicy::Single | InvokePolicy::First => 0,
            InvokePolicy::Last => n - 1,
            InvokePolicy::RoundRobin => reg.next.fetch_add(1, Ordering::Relaxed) % n,
            _ => usize::try_from(crate::core::random_id() % n as u64).unwrap_or(0),
        };
        Some(Routed {
            registration: reg.id,
            callee: reg.callees[*serving.get(at)?].clone(),
            pattern,
            shared: reg.invoke != InvokePolicy::Single,
        })
    }

    /// The callees of a registration that may serve `procedure`: `first` (if it still is
    /// one), then, for a shared registration, the others in their order.
    pub(crate) fn candidates<'a>(
        &'a self,
        routed: &'a Routed,
        procedure: &'a str,
    ) -> impl Iterator<Item = &'a Callee> + 'a {
        let reg = self
            .by_id
            .get(&routed.registration)
            .and_then(|(policy, uri)| self.procedures.get(*policy, uri));
        let callees = reg.map_or(&[][..], |r| r.callees.as_slice());
        let chosen = callees
            .iter()
            .filter(|c| c.session == routed.callee.session);
        let others = callees
            .iter()
            .filter(move |c| routed.shared && c.session != routed.callee.session);
        chosen
            .chain(others)
            .filter(move |c| !routed.pattern || c.may_serve(procedure))
    }
}

/// Runs one call on a client's procedure: the INVOCATION (queued under the registrations'
/// lock, only while the registration stands, so it never comes before REGISTERED or after
/// UNREGISTERED), then its answer. `control` carries a v2 caller's progressive results and
/// CANCEL.
pub(crate) async fn invoke(
    hub: &crate::hub::Hub,
    procedure: &str,
    routed: Routed,
    args: Vec<Value>,
    kwargs: Dict,
    caller: Disclosure,
    control: CallControl,
) -> Result<Payload, RpcError> {
    let gone = || RpcError::new(CANCELED, "the callee left");
    let registration = routed.registration;
    // The INVOCATION for whichever callee takes it: progressive results only from a callee
    // that announced them (and canceling), the caller named by policy or as it asks.
    let invocation = |callee: &Callee, request| {
        let Proto::V2(serializer) = callee.outbox.proto() else {
            return None;
        };
        let mut details = match &caller.details {
            Some(d) if caller.always || callee.disclose_caller => d.clone(),
            _ => Dict::new(),
        };
        if routed.pattern {
            details.insert("procedure".into(), Value::from(procedure));
        }
        if control.progress.is_some() && callee.features.progressive_call_results {
            details.insert("receive_progress".into(), Value::Bool(true));
        }
        if control.chunks.is_some() {
            // Another callee of a shared registration may take it only if it can.
            if !callee.features.progressive_call_invocations {
                return None;
            }
            details.insert("progress".into(), Value::Bool(true));
        }
        Some(Frame::v2(
            serializer,
            &Message::Invocation {
                request,
                registration,
                details,
                args: args.clone(),
                kwargs: kwargs.clone(),
            },
        ))
    };
    if control.chunks.is_some() && !routed.callee.features.progressive_call_invocations {
        return Err(streams_unsupported());
    }
    let (request, mut answer, callee) =
        match hub.start_invocation(procedure, &routed, &invocation, control.progress.as_ref()) {
            Ok(started) => started,
            Err(Refused::Unregistered) => {
                return Err(RpcError::new(
                    "wamp.error.no_such_procedure",
                    "the procedure was unregistered",
                ));
            }
            Err(Refused::Gone) => return Err(gone()),
            Err(Refused::Busy) => {
                return Err(RpcError::new(
                    crate::core::error_uri::TOO_MANY_CALLS,
                    "the callee is busy: too many invocations waiting for it",
                ));
            }
        };
    let Proto::V2(serializer) = callee.outbox.proto() else {
        return Err(gone());
    };
    // If this call ends unanswered (its caller left, it timed out, it was canceled), the
    // invocation is forgotten and the callee, if it can be, interrupted.
    let mut forget = Forget {
        callee: &callee,
        serializer,
        request,
        interrupt: callee.features.call_canceling,
    };
    let (mut cancel, mut chunks) = (control.cancel, control.chunks);
    let answered = loop {
        if let Some(cancel) = cancel.as_mut() {
            // The latest CANCEL (one may have come before the INVOCATION went out).
            let mode = cancel.borrow_and_update();
            // A callee that cannot be interrupted is treated as `skip`.
            let mode = mode.map(|m| {
                if callee.features.call_canceling {
                    m
                } else {
                    CancelMode::Skip
                }
            });
            match mode {
                // The callee's answer, whatever it is, goes to the caller; a later CANCEL
                // in another mode may still end the wait.
                Some(CancelMode::Kill) if forget.interrupt => {
                    forget.interrupt_now(CancelMode::Kill);
                    // An interrupted callee is sent no more of the call's chunks.
                    chunks = None;
                }
                None | Some(CancelMode::Kill) => {}
                Some(mode) => {
                    forget.interrupt &= mode == CancelMode::KillNoWait;
                    return Err(RpcError::new(CANCELED, "the call was canceled"));
                }
            }
        }
        tokio::select! {
            biased;
            answered = &mut answer => break answered,
            changed = cancel_changed(&mut cancel) => {
                if changed.is_err() {
                    // No more CANCELs can come.
                    cancel = None;
                }
            }
            chunk = async {
                match chunks.as_mut() {
                    Some(c) => c.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let Some(chunk) = chunk else {
                    chunks = None;
                    continue;
                };
                if chunk.last {
                    chunks = None;
                }
                // The next INVOCATION under the same request id, to the same callee.
                let mut details = Dict::new();
                if !chunk.last {
                    details.insert("progress".into(), Value::Bool(true));
                }
                let frame = Frame::v2(
                    serializer,
                    &Message::Invocation {
                        request,
                        registration,
                        details,
                        args: chunk.args,
                        kwargs: chunk.kwargs,
                    },
                );
                if callee.pending.is_waiting(request)
                    && callee.outbox.push_invocation(frame).is_err()
                {
                    return Err(RpcError::new(
                        crate::core::error_uri::TOO_MANY_CALLS,
                        "the callee is busy: too many invocations waiting for it",
                    ));
                }
            }
        }
    };
    match answered {
        Ok(Yielded::Result(payload)) => Ok(payload),
        Ok(Yielded::Error {
            error,
            args,
            kwargs,
        }) => {
            let description = match args.first() {
                Some(Value::String(s)) => s.clone(),
                _ => error.clone(),
            };
            let details = if !kwargs.is_empty() {
                Some(serde_json::json!({"args": args, "kwargs": kwargs}))
            } else if args.len() > 1 {
                Some(Value::Array(args.clone()))
            } else {
                None
            };
            let mut e = RpcError::new(error, description)
                .with_args(args)
                .with_kwargs(kwargs);
            if let Some(d) = details {
                e = e.with_details(d);
            }
            Err(e)
        }
        Err(_) => Err(gone()),
    }
}

/// The next CANCEL of a call that may take some (never, for one that may not).
pub(crate) async fn cancel_changed(
    cancel: &mut Option<crate::cancel::Receiver>,
) -> Result<(), crate::cancel::Closed> {
    match cancel.as_mut() {
        Some(c) => c.changed().await,
        None => std::future::pending().await,
    }
}

/// Who the caller is, for the callees that are to be told.
#[derive(Debug, Default)]
pub(crate) struct Disclosure {
    /// `caller`, `caller_authid`, `caller_authrole`; `None` when no callee is to be told.
    pub(crate) details: Option<Dict>,
    /// Told to every callee (the realm's policy, or the caller's `disclose_me`); else only
    /// to one that asked (REGISTER's `disclose_caller`).
    pub(crate) always: bool,
}

/// Starts an invocation on the first of `candidates` that takes it; the refusal of the last
/// one otherwise (no candidate: the registration is gone).
pub(crate) fn start_on<'a>(
    candidates: impl Iterator<Item = &'a Callee>,
    invocation: &dyn Fn(&Callee, u64) -> Option<Frame>,
    progress: Option<&ProgressSink>,
) -> Result<(u64, oneshot::Receiver<Yielded>, Callee), Refused> {
    let mut refused = Refused::Unregistered;
    for callee in candidates {
        let sink = progress
            .filter(|_| callee.features.progressive_call_results)
            .cloned();
        let sent = callee.pending.start(
            |request| match invocation(callee, request) {
                Some(frame) => callee.outbox.push_invocation(frame),
                None => Err(SendError::Closed),
            },
            sink,
        );
        match sent {
            Ok((request, answer)) => return Ok((request, answer, callee.clone())),
            Err(why) => refused = why,
        }
    }
    Err(refused)
}

/// Forgets an invocation that ends unanswered, and interrupts its callee (`killnowait`)
/// when `interrupt` is set.
struct Forget<'a> {
    callee: &'a Callee,
    serializer: Serializer,
    request: u64,
    interrupt: bool,
}

impl Forget<'_> {
    /// Sends INTERRUPT while the invocation is unanswered, unless the callee's queue is
    /// three quarters full (INTERRUPT is advice: without it the call ends as with `skip`).
    fn interrupt_now(&mut self, mode: CancelMode) {
        // Interrupted at most once.
        self.interrupt = false;
        if !self.callee.pending.is_waiting(self.request) {
            return;
        }
        let mut options = Dict::new();
        options.insert("mode".into(), Value::from(mode.as_str()));
        let frame = Frame::v2(
            self.serializer,
            &Message::Interrupt {
                request: self.request,
                options,
            },
        );
        let _ = self.callee.outbox.push_unless_busy(frame);
    }
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if self.interrupt {
            self.interrupt_now(CancelMode::KillNoWait);
        }
        self.callee.pending.forget(self.request);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_delivered_once_and_late_ones_told_from_unknown_ones() {
        let p = Pending::default();
        let (id, mut rx) = p.start(|_| Ok(()), None).unwrap();
        assert_eq!(id, 1);
        assert_eq!(
            p.answer(id, Yielded::Result(Payload::default())),
            Answered::Delivered
        );
        assert!(matches!(rx.try_recv(), Ok(Yielded::Result(_))));
        assert_eq!(
            p.answer(id, Yielded::Result(Payload::default())),
            Answered::Late
        );
        assert_eq!(
            p.answer(99, Yielded::Result(Payload::default())),
            Answered::Unknown
        );
        let (id, _rx) = p.start(|_| Ok(()), None).unwrap();
        p.forget(id);
        assert_eq!(
            p.answer(id, Yielded::Result(Payload::default())),
            Answered::Late
        );
        let (_, mut rx) = p.start(|_| Ok(()), None).unwrap();
        p.close();
        assert!(
            rx.try_recv().is_err(),
            "the callee left: the caller's answer is gone"
        );
        assert_eq!(p.start(|_| Ok(()), None).err(), Some(Refused::Gone));
    }

    #[test]
    fn a_callee_has_a_bounded_number_of_invocations_waiting() {
        let p = Pending::default();
        let mut waiting: Vec<_> = (0..MAX_PENDING)
            .map(|_| p.start(|_| Ok(()), None).unwrap())
            .collect();
        assert_eq!(p.start(|_| Ok(()), None).err(), Some(Refused::Busy));
        // An answer makes room again.
        let (id, _rx) = waiting.pop().unwrap();
        assert_eq!(
            p.answer(id, Yielded::Result(Payload::default())),
            Answered::Delivered
        );
        assert!(p.start(|_| Ok(()), None).is_ok());
    }

    #[test]
    fn an_invocation_that_is_not_sent_does_not_use_up_its_id() {
        let p = Pending::default();
        let (first, _a) = p.start(|_| Ok(()), None).unwrap();
        assert_eq!(
            p.start(|_| Err(SendError::QueueFull), None).err(),
            Some(Refused::Busy)
        );
        let (next, _b) = p.start(|_| Ok(()), None).unwrap();
        assert_eq!(next, first + 1);
    }

    #[test]
    fn progress_goes_to_a_waiting_call_only() {
        let p = Pending::default();
        let (id, _rx) = p.start(|_| Ok(()), None).unwrap();
        // Unasked progress is dropped, but the invocation is known.
        assert_eq!(p.progress(id, Payload::default()), Answered::Delivered);
        assert_eq!(
            p.answer(id, Yielded::Result(Payload::default())),
            Answered::Delivered
        );
        assert_eq!(p.progress(id, Payload::default()), Answered::Late);
        assert_eq!(p.progress(id + 1, Payload::default()), Answered::Unknown);
        assert!(!p.forget(id), "already answered");
    }
}
