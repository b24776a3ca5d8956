//! Calls across nodes, with a backplane: a v2 client's procedure registered on one node is
//! callable from every other.
//!
//! Every node tells the others its registrations (on each change, and with every heartbeat,
//! once a second). A call on a node with no local registration for the procedure goes to a
//! node that has one: the caller's node sends the invocation on that node's own channel,
//! the callee's node invokes its callee as for a local caller and sends back progressive
//! results, the result or the error; CANCELs follow the same way. The caller's node owns
//! the call: its timeout, its cancel modes, and its end when the other node is lost (no
//! heartbeat for [`DEAD_AFTER`], or its goodbye): every call pending there then fails with
//! `wamp.error.canceled` at once.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::{
    RpcError,
    backplane::{Carrier, DirOp, Envelope},
    core::{
        codec::v2::Dict,
        matching::{MatchIndex, MatchPolicy, precedence},
        session::v2::{CancelMode, InvokePolicy},
    },
    dealer::{CallControl, Disclosure, ProgressSink, Sent},
    hub::Hub,
    metrics::Metrics,
    wire::Payload,
};

/// How often a node tells the others it is alive (and what it has registered).
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node not heard from for this long is lost.
pub(crate) const DEAD_AFTER: Duration = Duration::from_secs(5);

/// What nodes send each other, after the frame header (node id, sequence number).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum Wire {
    /// A publication, to every node.
    Event(Box<Envelope>),
    /// The sender's registrations, all of them (to every node), in `parts` messages (of
    /// about [`REGS_PER_PART_BYTES`]) numbered from 0: the list holds once the last came.
    Registrations {
        regs: Vec<Reg>,
        #[serde(default)]
        part: u32,
        #[serde(default = "one")]
        parts: u32,
        /// Counts the sender's lists: the same list is told again only to a node that asks.
        #[serde(default)]
        version: u64,
    },
    /// The sender's heartbeat when its registrations did not change: the version of its
    /// list (a node that does not have that one asks with [`Wire::Resend`]).
    Alive {
        version: u64,
    },
    /// Asks the receiver for its list of registrations (to the sender only).
    Resend,
    /// The sender stops (to every node).
    Leaving,
    /// The calls of the receiving node the sender is running (every heartbeat, to each
    /// node), and the newest call of the receiver's it has received (`upto`): a call at or
    /// below it that it does not run was lost on the way (or its answer was).
    Serving {
        calls: Vec<u64>,
        #[serde(default)]
        upto: u64,
    },
    /// A call for a callee on the receiving node.
    Invoke {
        call: u64,
        /// The procedure's name (routed by), and the name as the caller called it (told to
        /// a pattern's callee) when an alias made them differ.
        procedure: String,
        #[serde(default)]
        called: Option<String>,
        args: Vec<Value>,
        kwargs: Dict,
        /// Who calls (`caller`, `caller_authid`, `caller_authrole`), and whether every
        /// callee is told (else only one that asked).
        caller: Option<Dict>,
        disclose: bool,
        receive_progress: bool,
    },
    /// A progressive result of a call (to the caller's node).
    Progress {
        call: u64,
        args: Vec<Value>,
        kwargs: Dict,
    },
    /// The result of a call.
    Result {
        call: u64,
        args: Vec<Value>,
        kwargs: Dict,
    },
    /// The error that ends a call.
    Error {
        call: u64,
        error: String,
        description: String,
        args: Vec<Value>,
        kwargs: Dict,
        details: Option<Value>,
    },
    /// The caller canceled (or timed out, or left): to the callee's node.
    Cancel {
        call: u64,
        mode: String,
    },
    /// A question about the receiving node's sessions (the meta API), answered with
    /// [`Wire::Answer`].
    Query {
        id: u64,
        query: Query,
    },
    Answer {
        id: u64,
        value: Value,
    },
    /// Asks the receiving node for its sessions, answered with [`Wire::Present`]s: what
    /// the sender tells its sessions' subscribers left if the receiver is lost.
    Presence,
    /// Some of the sender's sessions: id, authid, authrole; `first` starts a new list
    /// (replacing what the receiver kept of the sender's sessions).
    Present {
        sessions: Vec<(u64, Option<String>, Option<String>)>,
        #[serde(default)]
        first: bool,
    },
}

/// The other nodes' sessions, as their `on_join` and `on_leave` meta events and their
/// answers to [`Wire::Presence`] told them: `on_leave` for each when their node is lost.
#[derive(Debug, Default)]
struct Presence {
    by_node: HashMap<u64, NodeSessions>,
    /// Sessions in `by_node`, at most [`MAX_PRESENT`].
    entries: usize,
}

/// One node's sessions.
#[derive(Debug)]
struct NodeSessions {
    sessions: HashMap<u64, Identity>,
    /// Sessions not kept for want of room (their `on_leave` is not told).
    untracked: u64,
    /// When the node last told of them.
    seen: Instant,
}

/// A session's authid and authrole.
type Identity = (Option<String>, Option<String>);

/// How many sessions of other nodes are kept (about 100 bytes each).
const MAX_PRESENT: usize = 250_000;

/// Sessions per [`Wire::Present`].
const PRESENT_CHUNK: usize = 5_000;

/// How soon a node tells the same other node its sessions again.
const PRESENCE_AGAIN: Duration = Duration::from_secs(5);

/// Heartbeats between two askings of every node's sessions.
pub(crate) const PRESENCE_EVERY: u64 = 60;

/// How many `on_leave`s of lost nodes' sessions are told per heartbeat (the rest at the
/// next ones): a lost node with many sessions does not hold up the heartbeat.
const LEAVES_PER_BEAT: usize = 10_000;

impl Presence {
    fn node(&mut self, node: u64) -> &mut NodeSessions {
        let entry = self.by_node.entry(node).or_insert_with(|| NodeSessions {
            sessions: HashMap::new(),
            untracked: 0,
            seen: Instant::now(),
        });
        entry.seen = Instant::now();
        entry
    }

    fn join(&mut self, node: u64, session: u64, who: Identity) {
        let full = self.entries >= MAX_PRESENT;
        let of = self.node(node);
        if let Some(known) = of.sessions.get_mut(&session) {
            *known = who;
        } else if full {
            of.untracked += 1;
        } else {
            of.sessions.insert(session, who);
            self.entries += 1;
        }
    }

    fn leave(&mut self, node: u64, session: u64) {
        let of = self.node(node);
        if of.sessions.remove(&session).is_some() {
            self.entries -= 1;
        }
    }

    /// A new list of `node`'s sessions begins: the old one goes.
    fn restart(&mut self, node: u64) {
        let of = self.node(node);
        let gone = std::mem::take(&mut of.sessions).len();
        of.untracked = 0;
        self.entries -= gone;
    }

    /// Up to `most` sessions of nodes not in `live` and not heard of for `quiet`: they left
    /// with their node. How many more were not kept is in the second value.
    fn take_orphans(
        &mut self,
        live: &std::collections::HashSet<u64>,
        quiet: Duration,
        most: usize,
    ) -> (Vec<(u64, Identity)>, u64) {
        let (mut taken, mut untracked) = (Vec::new(), 0);
        let orphans: Vec<u64> = self
            .by_node
            .iter()
            .filter(|(node, of)| !live.contains(node) && of.seen.elapsed() > quiet)
            .map(|(node, _)| *node)
            .collect();
        for node in orphans {
            let Some(of) = self.by_node.get_mut(&node) else {
                continue;
            };
            let ids: Vec<u64> = of
                .sessions
                .keys()
                .copied()
                .take(most - taken.len())
                .collect();
            for id in ids {
                if let Some(who) = of.sessions.remove(&id) {
                    taken.push((id, who));
                    self.entries -= 1;
                }
            }
            if of.sessions.is_empty() {
                untracked += of.untracked;
                self.by_node.remove(&node);
            }
            if taken.len() >= most {
                break;
            }
        }
        (taken, untracked)
    }
}

/// What the meta API asks the other nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "q", rename_all = "snake_case")]
pub(crate) enum Query {
    /// The ids of its sessions (of these authroles, if given).
    Sessions { roles: Option<Vec<String>> },
    /// One session's details, or null.
    Session { id: u64 },
    /// Every session id (v1 ones too), as strings.
    AllSessions,
    /// The ids of the sessions subscribed to a topic, as strings.
    Subscribers { topic: String },
}

/// How long a REGISTER waits for the directory.
const CLAIM_WAIT: Duration = Duration::from_secs(6);

/// How long the meta API waits for the other nodes' answers.
const GATHER: Duration = Duration::from_secs(1);

/// One registration as nodes tell each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Reg {
    pub(crate) uri: String,
    #[serde(rename = "match")]
    pub(crate) policy: String,
    pub(crate) invoke: String,
    /// How many callees the sender has for it (0 from a node that does not tell: taken as
    /// one), and when its first and its last joined (milliseconds since the Unix epoch):
    /// what a shared policy chooses by across nodes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) callees: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) first: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) last: u64,
    /// A pattern registration with a callee whose permissions may not let it serve every
    /// procedure the pattern catches: a node with its own match for a call keeps it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) restricted: bool,
}

/// The most callees a node is taken to have for one registration (what a peer announces is
/// capped: its weight in `roundrobin` and `random`).
const MAX_CALLEES: u64 = 1 << 20;

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn one() -> u32 {
    1
}

/// About how many bytes of registrations go in one [`Wire::Registrations`] (far below the
/// 16 MiB a node takes from the backplane, however many registrations a node has).
const REGS_PER_PART_BYTES: usize = 1 << 20;

/// The most registrations a node takes of another's list in parts (more: the list is not
/// taken, and logged).
const MAX_ASSEMBLED: usize = 1_000_000;

/// One node's callees of a registration: what a call chooses among.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Holder {
    node: u64,
    invoke: InvokePolicy,
    callees: u64,
    first: u64,
    last: u64,
    restricted: bool,
}

/// The nodes with callees of one registration (by node id, the same order on every
/// node), and its round-robin cursor.
#[derive(Debug, Default)]
struct Holders {
    nodes: Vec<Holder>,
    next: AtomicUsize,
}

/// Where a call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Choice {
    /// To a callee on this node.
    Local,
    /// To this node's.
    Node(u64),
}

/// Another node, as this one knows it.
#[derive(Debug)]
struct Peer {
    seen: Instant,
    regs: Vec<Reg>,
    /// The version of its list of registrations.
    version: u64,
}

/// A call of ours pending on another node.
#[derive(Debug)]
struct OutCall {
    node: u64,
    /// When it was sent, in milliseconds since the Unix epoch.
    sent_ms: u64,
    answer: oneshot::Sender<Result<Payload, RpcError>>,
    progress: Option<ProgressSink>,
}

/// Where a call's CANCELs go.
type CancelSender = crate::cancel::Sender;

/// This node's side of the cluster.
#[derive(Debug)]
pub(crate) struct Cluster {
    queue: mpsc::Sender<(Option<u64>, Vec<u8>)>,
    metrics: Arc<Metrics>,
    peers: Mutex<HashMap<u64, Peer>>,
    /// The other nodes' registrations: (policy, uri) → the nodes, with their invoke policy.
    index: RwLock<MatchIndex<Holders>>,
    calls: Mutex<HashMap<u64, OutCall>>,
    next_call: AtomicU64,
    /// Calls of other nodes running here: (node, call) → their CANCEL.
    served: Mutex<HashMap<(u64, u64), CancelSender>>,
    /// Questions of ours awaiting the other nodes' answers.
    queries: Mutex<HashMap<u64, mpsc::UnboundedSender<(u64, Value)>>>,
    /// This node's id, and the deployment's directory of registration names.
    node: u64,
    directory: mpsc::Sender<DirOp>,
    carrier: Arc<dyn Carrier>,
    /// The names this node holds in the directory: key → value.
    held: Mutex<HashMap<String, String>>,
    /// The names being claimed (a REGISTER between its claim and its registration): kept.
    claiming: Mutex<HashMap<String, usize>>,
    /// The backplane's reconnections last seen: any new one may have lost messages.
    reconnects_seen: AtomicU64,
    /// Wakes the announcer: this node's registrations changed.
    pub(crate) changed: Arc<tokio::sync::Notify>,
    /// The newest call received from each node.
    received: Mutex<HashMap<u64, u64>>,
    /// The other nodes' sessions.
    presence: Mutex<Presence>,
    /// When this node last told each other node its sessions.
    told: Mutex<HashMap<u64, Instant>>,
    /// When this node last sent each other node its list on request.
    resent: Mutex<HashMap<u64, Instant>>,
    /// The version of this node's list of registrations last told, and the list.
    announced: Mutex<(u64, Vec<Reg>)>,
    /// Other nodes' lists of registrations coming in parts: the next part, and the list.
    assembling: Mutex<HashMap<u64, (u32, Vec<Reg>)>>,
    /// Set by `Wamp::shutdown`: this node no longer announces registrations.
    leaving: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `node` may be answered now: not within [`PRESENCE_AGAIN`] of the last answer
/// (`last` holds when each node was last answered, for at most 1024 nodes).
fn now_and_again(last: &Mutex<HashMap<u64, Instant>>, node: u64) -> bool {
    let mut last = lock(last);
    if last
        .get(&node)
        .is_some_and(|at| at.elapsed() < PRESENCE_AGAIN)
    {
        return false;
    }
    if last.len() >= 1024 {
        last.clear();
    }
    last.insert(node, Instant::now());
    true
}

/// How many calls of ours may be pending on other nodes at once.
const MAX_CALLS: usize = 65_536;

fn network_failure(why: &str) -> RpcError {
    RpcError::new("wamp.error.network_failure", why)
}

impl Cluster {
    pub(crate) fn new(
        queue: mpsc::Sender<(Option<u64>, Vec<u8>)>,
        metrics: Arc<Metrics>,
        (node, directory, carrier): (u64, mpsc::Sender<DirOp>, Arc<dyn Carrier>),
    ) -> Self {
        Self {
            node,
            directory,
            carrier,
            held: Mutex::default(),
            claiming: Mutex::default(),
            reconnects_seen: AtomicU64::new(0),
            changed: Arc::new(tokio::sync::Notify::new()),
            received: Mutex::default(),
            presence: Mutex::default(),
            told: Mutex::default(),
            assembling: Mutex::default(),
            announced: Mutex::default(),
            resent: Mutex::default(),
            leaving: std::sync::atomic::AtomicBool::new(false),
            queue,
            metrics,
            peers: Mutex::default(),
            index: RwLock::default(),
            calls: Mutex::default(),
            next_call: AtomicU64::new(0),
            served: Mutex::default(),
            queries: Mutex::default(),
        }
    }

    /// Sends `wire` to one node or (`None`) to all; `false` if the backplane's queue is full.
    pub(crate) fn send(&self, to: Option<u64>, wire: &Wire) -> bool {
        let Ok(bytes) = serde_json::to_vec(wire) else {
            return false;
        };
        let sent = self.queue.try_send((to, bytes)).is_ok();
        if !sent {
            Metrics::add(&self.metrics.backplane_lost, 1);
        }
        sent
    }

    /// What this node holds a registration's name for: itself (`single`), or the shared
    /// policy (every node with a callee holds it for the same).
    fn hold_value(&self, invoke: InvokePolicy) -> String {
        match invoke {
            InvokePolicy::Single => format!("single:{}", self.node),
            shared => format!("shared:{}", shared.as_str()),
        }
    }

    /// Takes a registration's name in the deployment's directory before a first local
    /// callee registers it: `Ok(false)` when another node holds it (for itself, or for
    /// another policy), `Err` when the directory cannot be reached.
    pub(crate) async fn claim(
        &self,
        policy: MatchPolicy,
        uri: &str,
        invoke: InvokePolicy,
    ) -> (Result<bool, RpcError>, Claiming<'_>) {
        let key = self.carrier.key(policy.as_str(), uri);
        let value = self.hold_value(invoke);
        let (reply, answer) = oneshot::channel();
        // A burst of REGISTERs waits for room in the directory's queue (within the claim's
        // time), rather than fail.
        let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
        let permit = tokio::time::timeout_at(deadline, self.directory.reserve())
            .await
            .ok()
            .and_then(Result::ok);
        // Marked as being claimed, and the request queued, under `held` (as `sync_holds`
        // reads and queues): a release it queues for an older view of the registrations
        // comes before this hold, or sees the claim.
        let queued = {
            let mut held = lock(&self.held);
            // Still held from a registration of it under another policy that just ended
            // here (let go at the announcer's pace): let go first.
            let claimed_now = lock(&self.claiming).contains_key(&key);
            if let Some(stale) = held
                .get(&key)
                .filter(|v| **v != value && !claimed_now)
                .cloned()
            {
                held.remove(&key);
                if stale.starts_with("single:") {
                    let op = DirOp::Release {
                        key: key.clone(),
                        value: stale,
                    };
                    let _ = self.directory.try_send(op);
                }
            }
            *lock(&self.claiming).entry(key.clone()).or_default() += 1;
            let op = DirOp::Hold {
                key: key.clone(),
                value: value.clone(),
                reply: Some(reply),
            };
            permit.map(|permit| permit.send(op)).is_some()
        };
        let guard = Claiming {
            cluster: self,
            key: key.clone(),
        };
        let unreachable = || network_failure("the registration directory cannot be reached");
        if !queued {
            return (Err(unreachable()), guard);
        }
        let claimed = match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(Ok(true))) => {
                lock(&self.held).insert(key, value);
                Ok(true)
            }
            Ok(Ok(Ok(false))) => Ok(false),
            _ => Err(unreachable()),
        };
        (claimed, guard)
    }

    /// Brings the directory in line with this node's registrations: lets go of the names it
    /// no longer registers (a shared one only when no other node has it) and, with
    /// `renew`, renews the others (taking them again after a Redis restart lost them; a
    /// name another node took meanwhile is logged).
    pub(crate) fn sync_holds(&self, hub: &Hub, renew: bool) {
        // The registrations and the claims are read, and the directory's requests queued,
        // under `held`: two of these running at once queue in the order they saw the
        // registrations (a renewal of an older view never follows the release of a newer
        // one), and a claim queues its hold before or after, never between.
        let mut held = lock(&self.held);
        let wanted: HashMap<String, String> = hub
            .registrations()
            .summary()
            .into_iter()
            .map(|reg| {
                (
                    self.carrier.key(reg.policy.as_str(), &reg.uri),
                    self.hold_value(reg.invoke),
                )
            })
            .collect();
        // Names being claimed now are kept, whatever the registrations say yet.
        let claiming: std::collections::HashSet<String> =
            lock(&self.claiming).keys().cloned().collect();
        let gone: Vec<(String, String)> = held
            .iter()
            .filter(|(k, _)| !wanted.contains_key(*k) && !claiming.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, _) in &gone {
            held.remove(k);
        }
        for (k, v) in &wanted {
            held.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (key, value) in gone {
            // A shared name may be held by other nodes too: it lapses when none renews it.
            if value.starts_with("single:") {
                let _ = self.directory.try_send(DirOp::Release { key, value });
            }
        }
        if renew && !wanted.is_empty() {
            // One request (one pipeline, one round trip) for them all.
            let holds: Vec<(String, String)> = wanted.into_iter().collect();
            // In pipelines of at most 1000, not to hold up the connection.
            for chunk in holds.chunks(1000) {
                let op = DirOp::Renew {
                    holds: chunk.to_vec(),
                };
                if self.directory.try_send(op).is_err() {
                    Metrics::add(&self.metrics.backplane_lost, 1);
                    tracing::warn!("registration names not renewed: the directory queue is full");
                }
            }
        }
        drop(held);
    }

    /// Tells the other nodes this node's registrations.
    pub(crate) fn announce(&self, hub: &Hub) {
        if self.leaving.load(Ordering::Relaxed) {
            return;
        }
        // Read under `announced`: two announcements (the heartbeat's, the announcer's) tell
        // their lists in the order they read them.
        let mut told = lock(&self.announced);
        let regs: Vec<Reg> = hub
            .registrations()
            .summary()
            .into_iter()
            .map(|reg| Reg {
                uri: reg.uri.to_string(),
                policy: reg.policy.as_str().to_owned(),
                invoke: reg.invoke.as_str().to_owned(),
                callees: reg.callees as u64,
                first: reg.first,
                last: reg.last,
                restricted: reg.restricted,
            })
            .collect();
        // Unchanged since last told: only the version (a node that does not have it asks
        // for the list).
        if told.0 > 0 && told.1 == regs {
            self.send(None, &Wire::Alive { version: told.0 });
            return;
        }
        told.0 += 1;
        told.1 = regs;
        self.send_registrations(None, &told.1, told.0);
    }

    /// Sends a list of registrations in parts of about [`REGS_PER_PART_BYTES`] (the caller
    /// holds `announced`: the parts of two lists never mix).
    fn send_registrations(&self, to: Option<u64>, regs: &[Reg], version: u64) {
        let parts = parts_of(regs, REGS_PER_PART_BYTES);
        let count = u32::try_from(parts.len()).unwrap_or(u32::MAX);
        for (part, regs) in (0..count).zip(parts) {
            let wire = Wire::Registrations {
                regs: regs.to_vec(),
                part,
                parts: count,
                version,
            };
            self.send(to, &wire);
        }
    }

    /// Whether another node has a registration that a REGISTER of `(policy, uri)` with
    /// `invoke` conflicts with (a `single` one, or another policy).
    pub(crate) fn conflicts(&self, policy: MatchPolicy, uri: &str, invoke: InvokePolicy) -> bool {
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        index.get(policy, uri).is_some_and(|holders| {
            holders.nodes.iter().any(|theirs| {
                invoke == InvokePolicy::Single
                    || theirs.invoke == InvokePolicy::Single
                    || theirs.invoke != invoke
            })
        })
    }

    /// Where a call of `procedure` goes, given `local`, the registration it would go to on
    /// this node ([`Registrations::best_summary`](crate::dealer::Registrations::best_summary)):
    /// to the best matching registration in the whole cluster (a better match on another
    /// node wins over a local one), and for a registration with callees on several nodes,
    /// by its shared policy over all of them: `roundrobin` in turn over every callee (this
    /// node's as a block at its place by node id), `random` weighted by the callees of each
    /// node, `first` (`last`) to the node of the callee that joined first (last). With
    /// `keep_local` (a call whose arguments stream, or the backplane down) a local match
    /// is kept; so it is over another node's pattern registration whose callees may not all
    /// serve every procedure it catches. `None`: no node has one.
    pub(crate) fn choose(
        &self,
        procedure: &str,
        local: Option<&crate::dealer::Summary>,
        keep_local: bool,
    ) -> Option<Choice> {
        if keep_local && local.is_some() {
            return Some(Choice::Local);
        }
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        let reserved = procedure == "wamp" || procedure.starts_with("wamp.");
        let remote = index.best_match_where(procedure, |policy, _, _| {
            policy == MatchPolicy::Exact || !reserved
        });
        let (local, (theirs, their_uri, holders)) = match (local, remote) {
            (None, None) => return None,
            (Some(_), None) => return Some(Choice::Local),
            (None, Some((_, _, holders))) => {
                return pick(holders, None, false).map(Choice::Node);
            }
            (Some(local), Some(remote)) => (local, remote),
        };
        // Where a pattern's callee there may not be allowed this procedure, ours serves.
        let pattern = theirs != MatchPolicy::Exact;
        match precedence(local.policy, &local.uri).cmp(&precedence(theirs, their_uri)) {
            std::cmp::Ordering::Greater => Some(Choice::Local),
            std::cmp::Ordering::Less if pattern && holders.nodes.iter().any(|h| h.restricted) => {
                Some(Choice::Local)
            }
            std::cmp::Ordering::Less => pick(holders, None, false).map(Choice::Node),
            std::cmp::Ordering::Equal => {
                let me = Holder {
                    node: self.node,
                    invoke: local.invoke,
                    callees: (local.callees as u64).min(MAX_CALLEES),
                    first: local.first,
                    last: local.last,
                    restricted: false,
                };
                Some(match pick(holders, Some(me), pattern) {
                    Some(node) if node != self.node => Choice::Node(node),
                    _ => Choice::Local,
                })
            }
        }
    }

    /// Indexes the other nodes' registrations anew; each registration keeps its
    /// round-robin cursor.
    fn rebuild(&self, peers: &HashMap<u64, Peer>) {
        let old = self.index.read().unwrap_or_else(PoisonError::into_inner);
        let index = index_of(peers, &old);
        drop(old);
        *self.index.write().unwrap_or_else(PoisonError::into_inner) = index;
    }

    /// Takes what another node sent.
    pub(crate) fn receive(self: &Arc<Self>, hub: &Arc<Hub>, from: u64, wire: Wire) {
        if let Some(peer) = lock(&self.peers).get_mut(&from) {
            peer.seen = Instant::now();
        }
        match wire {
            Wire::Event(_) => {}
            Wire::Alive { version } => {
                self.touch_presence(from);
                let known = lock(&self.peers).get(&from).map(|p| p.version);
                let coming = lock(&self.assembling).contains_key(&from);
                if known != Some(version) && !coming {
                    self.send(Some(from), &Wire::Resend);
                }
            }
            Wire::Resend => {
                // Not from a node that is leaving (it would be taken as alive again), and
                // to one asker at most every few seconds.
                if self.leaving.load(Ordering::Relaxed) || !now_and_again(&self.resent, from) {
                    return;
                }
                let told = lock(&self.announced);
                if told.0 > 0 {
                    self.send_registrations(Some(from), &told.1, told.0);
                }
            }
            Wire::Registrations {
                regs,
                part,
                parts,
                version,
            } => {
                let assembled = assemble(&mut lock(&self.assembling), from, regs, (part, parts));
                let Some(regs) = assembled else {
                    return;
                };
                let mut peers = lock(&self.peers);
                if !peers.contains_key(&from) && hub.meta_api.load(Ordering::Relaxed) {
                    // A node new to us: its sessions that joined before we listened.
                    self.send(Some(from), &Wire::Presence);
                }
                let changed = peers.get(&from).is_none_or(|p| p.regs != regs);
                peers.insert(
                    from,
                    Peer {
                        seen: Instant::now(),
                        regs,
                        version,
                    },
                );
                if changed {
                    self.rebuild(&peers);
                }
            }
            Wire::Leaving => {
                // Its sessions' leaves follow: they are told as left only if it then falls
                // silent (see `leave_orphans`).
                self.touch_presence(from);
                self.lost(from);
            }
            Wire::Presence => {
                // Told only with the meta API on (else no joins or leaves follow), and to
                // one asker at most every few seconds.
                if !hub.meta_api.load(Ordering::Relaxed) || !now_and_again(&self.told, from) {
                    return;
                }
                // In order with this node's `on_leave`s: a session that leaves after it was
                // listed has its leave queued after the list.
                hub.tell_sessions(|sessions| {
                    let mut chunks = sessions.chunks(PRESENT_CHUNK);
                    let first = chunks.next().unwrap_or_default().to_vec();
                    self.send(
                        Some(from),
                        &Wire::Present {
                            sessions: first,
                            first: true,
                        },
                    );
                    for chunk in chunks {
                        let sessions = chunk.to_vec();
                        self.send(
                            Some(from),
                            &Wire::Present {
                                sessions,
                                first: false,
                            },
                        );
                    }
                });
            }
            Wire::Present { sessions, first } => {
                if !hub.meta_api.load(Ordering::Relaxed) {
                    return;
                }
                let mut presence = lock(&self.presence);
                if first {
                    presence.restart(from);
                }
                for (id, authid, authrole) in sessions {
                    presence.join(from, id, (authid, authrole));
                }
                self.count_presence(&presence);
            }
            Wire::Serving { calls, upto } => {
                // Calls of ours that node received (at or below `upto`: the ids of a node's
                // calls grow) and does not run, and whose answer came before this list (it
                // is sent first, on the same channel), were lost.
                let running: std::collections::HashSet<u64> = calls.into_iter().collect();
                let lost: Vec<OutCall> = {
                    let mut ours = lock(&self.calls);
                    let ids: Vec<u64> = ours
                        .iter()
                        .filter(|(id, c)| c.node == from && **id <= upto && !running.contains(id))
                        .map(|(id, _)| *id)
                        .collect();
                    ids.into_iter().filter_map(|id| ours.remove(&id)).collect()
                };
                self.fail(lost, "the call was lost between the nodes");
            }
            Wire::Invoke {
                call,
                procedure,
                called,
                args,
                kwargs,
                caller,
                disclose,
                receive_progress,
            } => {
                // Known as served before anything else is read: a CANCEL right behind it
                // finds it.
                let (cancel_tx, cancel) = crate::cancel::channel();
                lock(&self.served).insert((from, call), cancel_tx);
                let mut upto = lock(&self.received);
                let newest = upto.entry(from).or_default();
                *newest = (*newest).max(call);
                let me = self.clone();
                let hub = hub.clone();
                tokio::spawn(async move {
                    let payload = Payload { args, kwargs };
                    let disclosure = Disclosure {
                        details: caller,
                        always: disclose,
                    };
                    let names = (procedure.as_str(), called.as_deref());
                    let options = (receive_progress, cancel);
                    me.serve(&hub, (from, call), names, payload, disclosure, options)
                        .await;
                });
            }
            Wire::Progress { call, args, kwargs } => {
                let sink = lock(&self.calls)
                    .get(&call)
                    .filter(|c| c.node == from)
                    .and_then(|c| c.progress.clone());
                if let Some(sink) = sink
                    && sink.send(Payload { args, kwargs }) == Sent::Refused
                {
                    // The caller does not keep up: its call ends, as for a local callee.
                    self.end(
                        call,
                        Err(RpcError::new(
                            crate::dealer::CANCELED,
                            "the caller's queue is full",
                        )),
                    );
                    self.send(
                        Some(from),
                        &Wire::Cancel {
                            call,
                            mode: "killnowait".into(),
                        },
                    );
                }
            }
            Wire::Result { call, args, kwargs } => {
                self.answer(from, call, Ok(Payload { args, kwargs }));
            }
            Wire::Error {
                call,
                error,
                description,
                args,
                kwargs,
                details,
            } => {
                let mut e = RpcError::new(error, description)
                    .with_args(args)
                    .with_kwargs(kwargs);
                if let Some(d) = details {
                    e = e.with_details(d);
                }
                self.answer(from, call, Err(e));
            }
            Wire::Query { id, query } => {
                // Answered off the backplane's reader.
                let (me, hub) = (self.clone(), hub.clone());
                tokio::spawn(async move { me.answer_query(&hub, from, id, query) });
            }
            Wire::Answer { id, value } => {
                if let Some(tx) = lock(&self.queries).get(&id) {
                    let _ = tx.send((from, value));
                }
            }
            Wire::Cancel { call, mode } => {
                let mode = match mode.as_str() {
                    "skip" => CancelMode::Skip,
                    "kill" => CancelMode::Kill,
                    _ => CancelMode::KillNoWait,
                };
                if let Some(tx) = lock(&self.served).get(&(from, call)) {
                    tx.send_replace(Some(mode));
                }
            }
        }
    }

    fn answer_query(&self, hub: &Hub, from: u64, id: u64, query: Query) {
        let value = match query {
            Query::Sessions { roles } => {
                serde_json::json!(crate::meta::local_session_ids(hub, roles.as_deref()))
            }
            Query::Session { id } => crate::meta::local_session(hub, id).unwrap_or(Value::Null),
            Query::AllSessions => serde_json::json!(
                hub.session_outboxes()
                    .into_iter()
                    .map(|(id, _)| id.as_str().to_owned())
                    .collect::<Vec<_>>()
            ),
            Query::Subscribers { topic } => serde_json::json!(
                hub.subscribers_of(&topic)
                    .into_iter()
                    .map(|id| id.as_str().to_owned())
                    .collect::<Vec<_>>()
            ),
        };
        self.send(Some(from), &Wire::Answer { id, value });
    }

    /// Ends calls of ours with `wamp.error.network_failure`, counted.
    fn fail(&self, calls: Vec<OutCall>, why: &str) {
        if calls.is_empty() {
            return;
        }
        tracing::warn!(calls = calls.len(), why, "calls on other nodes failed");
        Metrics::add(
            &self.metrics.backplane_calls_failed,
            u64::try_from(calls.len()).unwrap_or(u64::MAX),
        );
        for c in calls {
            let _ = c.answer.send(Err(network_failure(why)));
        }
    }

    /// Each heartbeat: tells every other node which of its calls this one runs, and, if the
    /// backplane reconnected since the last beat (messages may have been lost), fails the
    /// calls pending elsewhere and ends those it runs for others.
    pub(crate) fn beat(&self) {
        if self.leaving.load(Ordering::Relaxed) {
            self.send(None, &Wire::Leaving);
            return;
        }
        let reconnects = self.metrics.backplane_reconnects.load(Ordering::Relaxed);
        if self.reconnects_seen.swap(reconnects, Ordering::Relaxed) != reconnects {
            // Only what was on its way across the reconnect may be lost: the calls sent
            // before it fail; those sent since stand.
            let at = self.metrics.backplane_connected_at.load(Ordering::Relaxed);
            let failed: Vec<OutCall> = {
                let mut ours = lock(&self.calls);
                let ids: Vec<u64> = ours
                    .iter()
                    .filter(|(_, c)| c.sent_ms < at)
                    .map(|(id, _)| *id)
                    .collect();
                ids.into_iter().filter_map(|id| ours.remove(&id)).collect()
            };
            self.fail(
                failed,
                "the backplane reconnected: the call's messages may be lost",
            );
        }
        let received = lock(&self.received).clone();
        let mut by_node: HashMap<u64, Vec<u64>> =
            lock(&self.peers).keys().map(|n| (*n, Vec::new())).collect();
        for (node, call) in lock(&self.served).keys() {
            by_node.entry(*node).or_default().push(*call);
        }
        for (node, calls) in by_node {
            let upto = received.get(&node).copied().unwrap_or(0);
            self.send(Some(node), &Wire::Serving { calls, upto });
        }
    }

    /// This node shuts down: it stops announcing its registrations and says it leaves,
    /// with every heartbeat from now on.
    pub(crate) fn leave(&self) {
        self.leaving.store(true, Ordering::Relaxed);
        self.send(None, &Wire::Leaving);
    }

    fn answer(&self, from: u64, call: u64, answer: Result<Payload, RpcError>) {
        let mut calls = lock(&self.calls);
        if calls.get(&call).is_some_and(|c| c.node == from) {
            let c = calls.remove(&call).expect("just seen");
            drop(calls);
            let _ = c.answer.send(answer);
        }
    }

    fn end(&self, call: u64, answer: Result<Payload, RpcError>) {
        if let Some(c) = lock(&self.calls).remove(&call) {
            let _ = c.answer.send(answer);
        }
    }

    /// A node is lost: its registrations are forgotten, the calls pending there fail at
    /// once, and the calls it made here are canceled.
    pub(crate) fn lost(&self, node: u64) {
        let regs = {
            let mut peers = lock(&self.peers);
            let Some(peer) = peers.remove(&node) else {
                return;
            };
            self.rebuild(&peers);
            peer.regs
        };
        lock(&self.received).remove(&node);
        lock(&self.assembling).remove(&node);
        tracing::warn!(node, "another node is lost");
        // Its names are let go now rather than when their hold lapses (up to 10 s later), so
        // that another node may take its procedures: only those still held for it and not
        // renewed for longer than a live node lets pass (a node only this one lost sight of
        // keeps its names), in one request; every node that saw it go sends the same.
        // Not while the backplane is down or just back: then no node could renew, and
        // every hold looks stale.
        let held_for = format!("single:{node}");
        let holds: Vec<(String, String)> = regs
            .iter()
            .filter(|r| r.invoke == InvokePolicy::Single.as_str())
            .map(|reg| (self.carrier.key(&reg.policy, &reg.uri), held_for.clone()))
            .collect();
        if !holds.is_empty()
            && self.steadily_up()
            && self
                .directory
                .try_send(DirOp::ReleaseStale { holds })
                .is_err()
        {
            Metrics::add(&self.metrics.backplane_lost, 1);
        }
        Metrics::add(&self.metrics.backplane_nodes_lost, 1);
        let failed: Vec<OutCall> = {
            let mut calls = lock(&self.calls);
            let ids: Vec<u64> = calls
                .iter()
                .filter(|(_, c)| c.node == node)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter().filter_map(|id| calls.remove(&id)).collect()
        };
        Metrics::add(
            &self.metrics.backplane_calls_failed,
            u64::try_from(failed.len()).unwrap_or(u64::MAX),
        );
        for c in failed {
            let _ = c.answer.send(Err(RpcError::new(
                crate::dealer::CANCELED,
                "the node of the callee was lost",
            )));
        }
        for (key, tx) in lock(&self.served).iter() {
            if key.0 == node {
                tx.send_replace(Some(CancelMode::KillNoWait));
            }
        }
        // Its sessions are told as left by `sweep` once nothing more comes of them (a node
        // that said goodbye tells its sessions' leaves itself, after).
    }

    /// Tells this node's subscribers `on_leave` for the sessions of nodes gone (lost, or
    /// said goodbye) that nothing was heard of for [`DEAD_AFTER`]: never while the
    /// backplane is down or just back (a node unheard of then may be alive; its sessions
    /// are asked anew when it is heard again).
    fn leave_orphans(&self, hub: &Arc<Hub>) {
        if !self.steadily_up() {
            return;
        }
        let live: std::collections::HashSet<u64> = lock(&self.peers).keys().copied().collect();
        let (sessions, untracked) = {
            let mut presence = lock(&self.presence);
            let taken = presence.take_orphans(&live, DEAD_AFTER, LEAVES_PER_BEAT);
            self.count_presence(&presence);
            taken
        };
        if untracked > 0 {
            tracing::warn!(
                untracked,
                "sessions of a lost node were not kept: their on_leave is not told"
            );
        }
        if hub.meta_api.load(Ordering::Relaxed) {
            for (id, (authid, authrole)) in sessions {
                hub.left_elsewhere(id, authid, authrole);
            }
        }
    }

    /// Whether the backplane is up, and has been for [`DEAD_AFTER`] (every live node was
    /// heard since it came back).
    fn steadily_up(&self) -> bool {
        let connected_ms = self.metrics.backplane_connected_at.load(Ordering::Relaxed);
        let up_for = crate::core::broker::now_ms().saturating_sub(connected_ms);
        self.metrics.backplane_up.load(Ordering::Relaxed) == 1
            && up_for >= u64::try_from(DEAD_AFTER.as_millis()).unwrap_or(u64::MAX)
    }

    /// Asks every other node for its sessions (with the meta API on).
    pub(crate) fn ask_presence(&self, hub: &Hub) {
        if hub.meta_api.load(Ordering::Relaxed) {
            self.send(None, &Wire::Presence);
        }
    }

    /// Marks `node` as heard of now, for its sessions (if any are kept).
    fn touch_presence(&self, node: u64) {
        if let Some(of) = lock(&self.presence).by_node.get_mut(&node) {
            of.seen = Instant::now();
        }
    }

    fn count_presence(&self, presence: &Presence) {
        self.metrics
            .backplane_sessions_elsewhere
            .store(presence.entries as u64, Ordering::Relaxed);
    }

    /// Keeps track of another node's sessions by its `wamp.session.on_join` and
    /// `on_leave` meta events.
    pub(crate) fn track(&self, hub: &Hub, from: u64, topic: &str, args: &[Value]) {
        if !hub.meta_api.load(Ordering::Relaxed) {
            return;
        }
        match topic {
            "wamp.session.on_join" => {
                let Some(details) = args.first() else { return };
                let Some(id) = details.get("session").and_then(Value::as_u64) else {
                    return;
                };
                let text = |key: &str| details.get(key).and_then(Value::as_str).map(str::to_owned);
                let mut presence = lock(&self.presence);
                presence.join(from, id, (text("authid"), text("authrole")));
                self.count_presence(&presence);
            }
            "wamp.session.on_leave" => {
                if let Some(id) = args.first().and_then(Value::as_u64) {
                    let mut presence = lock(&self.presence);
                    presence.leave(from, id);
                    self.count_presence(&presence);
                }
            }
            _ => {}
        }
    }

    /// Asks every live node; their answers within [`GATHER`] (a node that does not answer
    /// in time is left out, and logged).
    pub(crate) async fn gather(&self, query: Query) -> Vec<Value> {
        let mut waiting: std::collections::HashSet<u64> =
            lock(&self.peers).keys().copied().collect();
        if waiting.is_empty() {
            return Vec::new();
        }
        let id = self.next_call.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, mut rx) = mpsc::unbounded_channel();
        lock(&self.queries).insert(id, tx);
        let mut answers = Vec::with_capacity(waiting.len());
        if self.send(None, &Wire::Query { id, query }) {
            let deadline = tokio::time::Instant::now() + GATHER;
            while !waiting.is_empty() {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some((node, value))) => {
                        if waiting.remove(&node) {
                            answers.push(value);
                        }
                    }
                    _ => break,
                }
            }
        }
        lock(&self.queries).remove(&id);
        if !waiting.is_empty() {
            tracing::warn!(
                nodes = waiting.len(),
                "other nodes did not answer the meta API in time"
            );
        }
        answers
    }

    /// The backplane is down: the calls pending on other nodes fail at once (their answers
    /// may be lost), with `wamp.error.network_failure`.
    pub(crate) fn disconnected(&self) {
        let failed: Vec<OutCall> = lock(&self.calls).drain().map(|(_, c)| c).collect();
        self.fail(failed, "the backplane to the callee's node is down");
    }

    /// Forgets the nodes not heard from for [`DEAD_AFTER`].
    pub(crate) fn sweep(&self, hub: &Arc<Hub>) {
        let dead: Vec<u64> = lock(&self.peers)
            .iter()
            .filter(|(_, p)| p.seen.elapsed() > DEAD_AFTER)
            .map(|(id, _)| *id)
            .collect();
        for node in dead {
            self.lost(node);
        }
        self.leave_orphans(hub);
    }

    /// Calls `procedure` on `node`, as its caller's node: its timeout (the caller's future
    /// is dropped), its CANCELs, and the loss of `node` end it here.
    pub(crate) async fn call(
        &self,
        node: u64,
        (procedure, called): (&str, Option<&str>),
        payload: Payload,
        caller: Disclosure,
        control: CallControl,
    ) -> Result<Payload, RpcError> {
        if control.chunks.is_some() {
            return Err(crate::dealer::streams_unsupported());
        }
        if self.metrics.backplane_up.load(Ordering::Relaxed) == 0 {
            return Err(network_failure(
                "the backplane to the callee's node is down",
            ));
        }
        let call = self.next_call.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, mut answer) = oneshot::channel();
        {
            let mut calls = lock(&self.calls);
            if calls.len() >= MAX_CALLS {
                return Err(RpcError::new(
                    crate::core::error_uri::TOO_MANY_CALLS,
                    "too many calls pending on other nodes",
                ));
            }
            calls.insert(
                call,
                OutCall {
                    node,
                    sent_ms: crate::core::broker::now_ms(),
                    answer: tx,
                    progress: control.progress.clone(),
                },
            );
        }
        // Unanswered when dropped (a timeout, the caller gone, a CANCEL): forgotten here,
        // and the callee's node told to interrupt.
        let mut pending = PendingCall {
            cluster: self,
            node,
            call,
            mode: Some(CancelMode::KillNoWait),
        };
        let sent = self.send(
            Some(node),
            &Wire::Invoke {
                call,
                procedure: procedure.to_owned(),
                called: called.map(str::to_owned),
                args: payload.args,
                kwargs: payload.kwargs,
                caller: caller.details,
                disclose: caller.always,
                receive_progress: control.progress.is_some(),
            },
        );
        if !sent {
            pending.mode = None;
            return Err(network_failure("the backplane is not keeping up"));
        }
        let mut cancel = control.cancel;
        let mut killed = false;
        let answered = loop {
            if let Some(c) = cancel.as_mut() {
                match c.borrow_and_update() {
                    // Once; its answer, whatever it is, goes to the caller.
                    Some(CancelMode::Kill) if !killed => {
                        killed = true;
                        self.send(
                            Some(node),
                            &Wire::Cancel {
                                call,
                                mode: "kill".into(),
                            },
                        );
                    }
                    None | Some(CancelMode::Kill) => {}
                    Some(mode) => {
                        // skip: the other node is not told (its answer is dropped here).
                        pending.mode = (mode == CancelMode::KillNoWait).then_some(mode);
                        return Err(RpcError::new(
                            crate::dealer::CANCELED,
                            "the call was canceled",
                        ));
                    }
                }
            }
            tokio::select! {
                biased;
                a = &mut answer => break a,
                changed = crate::dealer::cancel_changed(&mut cancel) => {
                    if changed.is_err() {
                        cancel = None;
                    }
                }
            }
        };
        pending.mode = None;
        answered.unwrap_or_else(|_| Err(RpcError::new(crate::dealer::CANCELED, "the call ended")))
    }

    /// Runs another node's call here, and sends its answer back.
    async fn serve(
        self: &Arc<Self>,
        hub: &Arc<Hub>,
        (from, call): (u64, u64),
        (procedure, called): (&str, Option<&str>),
        payload: Payload,
        caller: Disclosure,
        (receive_progress, cancel): (bool, crate::cancel::Receiver),
    ) {
        let Some(routed) = hub.route(procedure) else {
            lock(&self.served).remove(&(from, call));
            let e = RpcError::new("wamp.error.no_such_procedure", "no such procedure");
            self.send(Some(from), &error_wire(call, &e));
            return;
        };
        let progress = receive_progress.then(|| {
            let me = Arc::downgrade(self);
            ProgressSink::remote(Arc::new(move |p: Payload| match me.upgrade() {
                Some(me)
                    if me.send(
                        Some(from),
                        &Wire::Progress {
                            call,
                            args: p.args,
                            kwargs: p.kwargs,
                        },
                    ) =>
                {
                    Sent::Queued
                }
                _ => Sent::Refused,
            }))
        });
        let control = CallControl {
            progress: progress.clone(),
            cancel: Some(cancel),
            chunks: None,
        };
        let answer = crate::dealer::invoke(
            hub,
            called.unwrap_or(procedure),
            routed,
            payload.args,
            payload.kwargs,
            caller,
            control,
        )
        .await;
        if let Some(p) = progress {
            p.close();
        }
        let wire = match answer {
            Ok(p) => Wire::Result {
                call,
                args: p.args,
                kwargs: p.kwargs,
            },
            Err(e) => error_wire(call, &e),
        };
        // The answer goes first: a list of what this node runs sent after it no longer has
        // the call, and arrives after the answer (one channel).
        self.send(Some(from), &wire);
        lock(&self.served).remove(&(from, call));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The announcer wakes, finds the cluster gone, and ends.
        self.changed.notify_one();
    }
}

/// A name being claimed: not let go by a sync until the registration is made (or not),
/// when this is dropped, however the REGISTER ends.
pub(crate) struct Claiming<'a> {
    cluster: &'a Cluster,
    key: String,
}

impl Drop for Claiming<'_> {
    fn drop(&mut self) {
        // Under `held`, as the claim began (see `Cluster::claim`).
        let _held = lock(&self.cluster.held);
        let mut claiming = lock(&self.cluster.claiming);
        if let Some(n) = claiming.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                claiming.remove(&self.key);
            }
        }
    }
}

fn error_wire(call: u64, e: &RpcError) -> Wire {
    Wire::Error {
        call,
        error: e.uri().to_owned(),
        description: e.description().to_owned(),
        args: e.args().to_vec(),
        kwargs: e.kwargs().clone(),
        details: e.details().cloned(),
    }
}

/// `regs` in parts of about `bytes` each (at least one part, at least one registration in
/// each but an empty list's).
fn parts_of(regs: &[Reg], bytes: usize) -> Vec<&[Reg]> {
    let mut parts: Vec<&[Reg]> = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, reg) in regs.iter().enumerate() {
        let this = reg.uri.len() + 128;
        if size + this > bytes && i > start {
            parts.push(&regs[start..i]);
            (start, size) = (i, 0);
        }
        size += this;
    }
    parts.push(&regs[start..]);
    parts
}

/// Puts another node's list of registrations together from its parts (in `assembling`: per
/// node, the next part and what came): the whole list once its last part came, in order; a
/// part out of order drops what was gathered.
fn assemble(
    assembling: &mut HashMap<u64, (u32, Vec<Reg>)>,
    from: u64,
    regs: Vec<Reg>,
    (part, parts): (u32, u32),
) -> Option<Vec<Reg>> {
    if part == 0 && parts <= 1 {
        assembling.remove(&from);
        return Some(regs);
    }
    if part == 0 {
        if assembling.len() >= 1024 {
            assembling.clear();
        }
        assembling.insert(from, (0, Vec::new()));
    }
    let gathered = match assembling.get_mut(&from) {
        Some(gathered) if gathered.0 == part => gathered,
        _ => {
            assembling.remove(&from);
            return None;
        }
    };
    if gathered.1.len() + regs.len() > MAX_ASSEMBLED {
        assembling.remove(&from);
        tracing::warn!(
            node = from,
            "another node's registrations are too many: not taken"
        );
        return None;
    }
    gathered.1.extend(regs);
    gathered.0 = part + 1;
    if part + 1 < parts {
        return None;
    }
    assembling.remove(&from).map(|(_, regs)| regs)
}

/// The other nodes' registrations, indexed: by node id within each (the same order on every
/// node), what each announced sanitized (callees capped, an unknown `first` last in line,
/// one entry per node), each registration's round-robin cursor carried over from `old`.
fn index_of(peers: &HashMap<u64, Peer>, old: &MatchIndex<Holders>) -> MatchIndex<Holders> {
    let mut index: MatchIndex<Holders> = MatchIndex::default();
    let mut nodes: Vec<(&u64, &Peer)> = peers.iter().collect();
    nodes.sort_unstable_by_key(|(id, _)| **id);
    for (node, peer) in nodes {
        for reg in &peer.regs {
            let (Some(policy), Some(invoke)) = (
                MatchPolicy::parse(Some(&reg.policy)),
                InvokePolicy::parse(Some(&reg.invoke)),
            ) else {
                continue;
            };
            let holder = Holder {
                node: *node,
                invoke,
                callees: reg.callees.clamp(1, MAX_CALLEES),
                // A node that does not tell (older ones) comes last for `first` and `last`.
                first: if reg.first == 0 { u64::MAX } else { reg.first },
                last: reg.last,
                restricted: reg.restricted,
            };
            match index.get_mut(policy, &reg.uri) {
                Some(holders) if holders.nodes.last().is_some_and(|h| h.node == *node) => {}
                Some(holders) => holders.nodes.push(holder),
                None => {
                    let next = old
                        .get(policy, &reg.uri)
                        .map_or(0, |h| h.next.load(Ordering::Relaxed));
                    let holders = Holders {
                        nodes: vec![holder],
                        next: AtomicUsize::new(next),
                    };
                    index.insert(policy, reg.uri.as_str().into(), holders);
                }
            }
        }
    }
    index
}

/// The node of `holders` (and of `me`, this node's own callees, if any) a call goes to
/// by their shared policy.
fn pick(holders: &Holders, me: Option<Holder>, skip_restricted: bool) -> Option<u64> {
    // `me` at its place by node id: the same order the other nodes see.
    let at = me.map_or(0, |m| holders.nodes.partition_point(|h| h.node < m.node));
    let (before, after) = holders.nodes.split_at(at);
    // Other nodes' callees that may not be allowed the procedure (a pattern's) are passed
    // over when this node has its own.
    let all = || {
        before
            .iter()
            .copied()
            .chain(me)
            .chain(after.iter().copied())
            .filter(move |h| !(skip_restricted && h.restricted))
    };
    let weight = |h: &Holder| h.callees.clamp(1, MAX_CALLEES);
    let policy = me.map_or_else(
        || holders.nodes.first().map(|h| h.invoke),
        |m| Some(m.invoke),
    )?;
    let chosen = match policy {
        InvokePolicy::First | InvokePolicy::Single => all().min_by_key(|h| (h.first, h.node)),
        InvokePolicy::Last => all().max_by_key(|h| (h.last, h.node)),
        other => {
            let total: u64 = all().fold(0u64, |n, h| n.saturating_add(weight(&h)));
            if total == 0 {
                return None;
            }
            let mut at = if other == InvokePolicy::Random {
                crate::core::random_id() % total
            } else {
                holders.next.fetch_add(1, Ordering::Relaxed) as u64 % total
            };
            all().find(|h| {
                let w = weight(h);
                if at < w {
                    true
                } else {
                    at -= w;
                    false
                }
            })
        }
    };
    chosen.map(|h| h.node)
}

/// A call of ours on another node until it is answered: dropped unanswered, it is
/// forgotten and (with `mode`) the other node told to cancel it.
struct PendingCall<'a> {
    cluster: &'a Cluster,
    node: u64,
    call: u64,
    mode: Option<CancelMode>,
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        let pending = lock(&self.cluster.calls).remove(&self.call).is_some();
        if pending && let Some(mode) = self.mode {
            self.cluster.send(
                Some(self.node),
                &Wire::Cancel {
                    call: self.call,
                    mode: mode.as_str().into(),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(node: u64, invoke: InvokePolicy, callees: u64, first: u64, last: u64) -> Holder {
        Holder {
            node,
            invoke,
            callees,
            first,
            last,
            restricted: false,
        }
    }

    #[test]
    fn shared_policies_choose_over_the_callees_of_every_node() {
        use InvokePolicy::*;
        let others = |invoke| Holders {
            nodes: vec![holder(1, invoke, 1, 30, 30), holder(3, invoke, 2, 10, 50)],
            next: AtomicUsize::new(0),
        };
        // This node (2) has 2 callees, joined at 20 and 40.
        let me = |invoke| Some(holder(2, invoke, 2, 20, 40));
        let rr = others(RoundRobin);
        let turns: Vec<u64> = (0..10)
            .filter_map(|_| pick(&rr, me(RoundRobin), false))
            .collect();
        assert_eq!(
            turns,
            [1, 2, 2, 3, 3, 1, 2, 2, 3, 3],
            "by node id, each callee in turn"
        );
        assert_eq!(
            pick(&others(First), me(First), false),
            Some(3),
            "joined first, at 10"
        );
        assert_eq!(
            pick(&others(Last), me(Last), false),
            Some(3),
            "joined last, at 50"
        );
        let mine_last = Some(holder(2, Last, 1, 60, 60));
        assert_eq!(pick(&others(Last), mine_last, false), Some(2));
        let random = others(Random);
        let mut counts = HashMap::new();
        for _ in 0..5000 {
            *counts
                .entry(pick(&random, me(Random), false).unwrap())
                .or_insert(0) += 1;
        }
        // Weighted by callees: 1/5, 2/5, 2/5 (within a wide margin).
        assert!((700..1300).contains(&counts[&1]), "{counts:?}");
        assert!((1600..2400).contains(&counts[&2]), "{counts:?}");
        // Without a callee here: only the others.
        let rr = others(RoundRobin);
        let alone: Vec<u64> = (0..3).filter_map(|_| pick(&rr, None, false)).collect();
        assert_eq!(alone, [1, 3, 3]);
    }

    fn reg(uri: &str) -> Reg {
        Reg {
            uri: uri.into(),
            policy: "exact".into(),
            invoke: "single".into(),
            callees: 1,
            first: 1,
            last: 1,
            restricted: false,
        }
    }

    #[test]
    fn a_long_list_of_registrations_goes_in_parts_and_is_put_together() {
        let regs: Vec<Reg> = (0..10)
            .map(|i| reg(&format!("com.example.{i:0>100}")))
            .collect();
        let parts = parts_of(&regs, 3 * (112 + 128));
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [3, 3, 3, 1]
        );
        assert_eq!(parts_of(&[], 100).len(), 1, "an empty list is told too");
        assert_eq!(
            parts_of(&regs[..1], 1).len(),
            1,
            "a registration bigger than a part"
        );
        let n = parts.len() as u32;
        let mut assembling = HashMap::new();
        let mut whole = None;
        for (i, part) in parts.iter().enumerate() {
            assert!(whole.is_none());
            whole = assemble(&mut assembling, 7, part.to_vec(), (i as u32, n));
        }
        assert_eq!(whole, Some(regs.clone()));
        assert!(assembling.is_empty());
        // A part missed: nothing is taken until a whole list comes.
        assert!(assemble(&mut assembling, 7, parts[0].to_vec(), (0, n)).is_none());
        assert!(assemble(&mut assembling, 7, parts[2].to_vec(), (2, n)).is_none());
        assert!(assemble(&mut assembling, 7, parts[3].to_vec(), (3, n)).is_none());
        assert!(assembling.is_empty());
        // A new list starts over what was gathered.
        assert!(assemble(&mut assembling, 7, parts[0].to_vec(), (0, n)).is_none());
        assert_eq!(
            assemble(&mut assembling, 7, regs[..2].to_vec(), (0, 1)),
            Some(regs[..2].to_vec())
        );
    }

    #[test]
    fn other_nodes_sessions_are_kept_within_a_budget() {
        let mut presence = Presence::default();
        presence.join(7, 1, (Some("a".into()), None));
        presence.join(7, 1, (Some("a".into()), None));
        presence.join(7, 2, (None, None));
        presence.join(8, 3, (None, None));
        presence.leave(7, 2);
        presence.leave(8, 2);
        assert_eq!(presence.entries, 2);
        let none = std::collections::HashSet::new();
        // Nodes heard of just now are not orphans yet.
        assert!(presence.take_orphans(&none, DEAD_AFTER, 10).0.is_empty());
        let live: std::collections::HashSet<u64> = [8].into();
        let (gone, untracked) = presence.take_orphans(&live, Duration::ZERO, 10);
        assert_eq!(
            (gone.iter().map(|g| g.0).collect::<Vec<_>>(), untracked),
            (vec![1], 0)
        );
        assert_eq!(presence.entries, 1);
        // A new list replaces the old one.
        presence.restart(8);
        presence.join(8, 4, (None, None));
        assert_eq!(presence.entries, 1);
        presence.entries = MAX_PRESENT;
        presence.join(8, 4, (Some("b".into()), None));
        presence.join(8, 5, (None, None));
        assert_eq!(
            presence.by_node[&8].untracked, 1,
            "over the budget: counted, not kept"
        );
        assert_eq!(presence.by_node[&8].sessions[&4].0.as_deref(), Some("b"));
        presence.entries = 1;
        let (gone, untracked) = presence.take_orphans(&none, Duration::ZERO, 10);
        assert_eq!((gone.len(), untracked), (1, 1));
        assert!(presence.by_node.is_empty());
        assert_eq!(presence.entries, 0);
    }
}
