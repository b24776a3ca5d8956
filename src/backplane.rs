//! Scale-out: several routers (nodes) serve one realm, their publications carried between
//! them by a backplane. Without one (the default) a router is alone, and nothing here runs.
//!
//! A publication is delivered on its own node as always, then handed to the backplane once,
//! serialized once (an [`Envelope`]), and every other node delivers it to its own
//! subscribers with the publication's exclude, eligible and authid/authrole lists, so a
//! session on any node is treated as if it were on the publishing one. A node skips what it
//! published itself, so every subscriber gets an event once. Publications from one node
//! leave it in order through one queue and one connection, and Redis delivers them in that
//! order, so every subscriber sees one publisher's events in publication order.
//!
//! With Redis ([`Redis`], cargo feature `redis`): one channel per deployment (default
//! `tower-wamp:events`). When Redis cannot be reached, local delivery goes on, what could
//! not be carried is counted (`backplane_lost`) and logged, and the node reconnects and
//! resubscribes (`backplane_reconnects`).

use std::{fmt, sync::Arc};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::{AuthLists, codec::v2::Dict};

/// A publication on its way between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub(crate) topic: String,
    pub(crate) publication: u64,
    /// The v1 event (a broker function may have made it differ from the arguments).
    pub(crate) event: Value,
    pub(crate) args: Vec<Value>,
    pub(crate) kwargs: Dict,
    pub(crate) details: Option<Dict>,
    pub(crate) exclude: Vec<String>,
    pub(crate) eligible: Option<Vec<String>>,
    pub(crate) exclude_authid: Vec<String>,
    pub(crate) exclude_authrole: Vec<String>,
    pub(crate) eligible_authid: Option<Vec<String>>,
    pub(crate) eligible_authrole: Option<Vec<String>>,
    pub(crate) to_patterns: bool,
    pub(crate) retain: bool,
    /// It may be kept in event history.
    #[serde(default)]
    pub(crate) history: bool,
}

impl Envelope {
    pub(crate) fn auth_lists(&self) -> AuthLists {
        let mut lists = AuthLists::default();
        lists.exclude_authid.clone_from(&self.exclude_authid);
        lists.exclude_authrole.clone_from(&self.exclude_authrole);
        lists.eligible_authid.clone_from(&self.eligible_authid);
        lists.eligible_authrole.clone_from(&self.eligible_authrole);
        lists
    }
}

/// How many serialized publications may wait for the backplane; past it they are counted as
/// lost (the backplane is down or too slow), never held in memory without bound.
pub(crate) const QUEUE: usize = 4096;

/// Of [`QUEUE`], the places publications leave to what nodes send each other for calls
/// (invocations, results, cancels, the lists of running calls): publications are dropped
/// (and counted) before those are.
pub(crate) const CONTROL_RESERVE: usize = 1024;

/// The largest envelope a node takes from the backplane (a bigger one is dropped and
/// counted): the backplane is trusted, but not to be without bound.
pub(crate) const MAX_ENVELOPE: usize = 16 << 20;

/// On the backplane an envelope travels behind a header: the publishing node's id (drawn at
/// random when its backplane starts; a node skips its own without reading further) and
/// its publications counted 1, 2, 3 … (a receiver counts the gaps as missed).
#[cfg_attr(not(feature = "redis"), allow(dead_code))] // Used by the Redis backplane.
pub(crate) fn frame(node: u64, seq: u64, envelope: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(16 + envelope.len());
    frame.extend_from_slice(&node.to_le_bytes());
    frame.extend_from_slice(&seq.to_le_bytes());
    frame.extend_from_slice(envelope);
    frame
}

/// The node, sequence number and envelope of a frame.
pub(crate) fn unframe(frame: &[u8]) -> Option<(u64, u64, &[u8])> {
    let node = u64::from_le_bytes(frame.get(..8)?.try_into().ok()?);
    let seq = u64::from_le_bytes(frame.get(8..16)?.try_into().ok()?);
    Some((node, seq, &frame[16..]))
}

/// What a receiving node knows of the others: the last sequence number seen of each, to
/// count what it missed (while its own connection was down, say).
#[derive(Debug, Default)]
pub(crate) struct Peers {
    last: std::collections::HashMap<u64, u64>,
}

impl Peers {
    /// Takes `seq` of `node`: how many of that node's publications were missed before it.
    pub(crate) fn missed(&mut self, node: u64, seq: u64) -> u64 {
        // Bounded: nodes that come and go (each start draws a new id) are forgotten once
        // there are many.
        if self.last.len() >= 1024 && !self.last.contains_key(&node) {
            self.last.clear();
        }
        let last = self.last.insert(node, seq);
        match last {
            Some(last) if seq > last + 1 => seq - last - 1,
            _ => 0,
        }
    }
}

/// A request to the deployment's directory: who holds a registration's name.
#[derive(Debug)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))] // Read by the Redis backplane.
pub(crate) enum DirOp {
    /// Holds `key` for `value` for [`HOLD_FOR`] (takes it if free, keeps it if held for the
    /// same value); answers whether it is held for `value`, or an error when the directory
    /// cannot be reached.
    Hold {
        key: String,
        value: String,
        reply: Option<tokio::sync::oneshot::Sender<Result<bool, String>>>,
    },
    /// Lets `key` go if it is held for `value`.
    Release { key: String, value: String },
    /// Lets each key go if it is held for its value and was not renewed for longer than a
    /// live holder lets pass ([`STALE_AFTER`]): the names of a node lost from sight.
    ReleaseStale { holds: Vec<(String, String)> },
    /// Holds (renews) every key for its value, in one round trip; a key held for another
    /// value meanwhile is logged.
    Renew { holds: Vec<(String, String)> },
}

/// How long a hold lasts unless renewed (a node renews its holds every few seconds; a dead
/// node's lapse).
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) const HOLD_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// A hold not renewed for this long is stale: its node renews every 3 s (the heartbeat's
/// third beat), so a live one's hold has 7 s or more left (5.5 s with a heartbeat 1.5 s
/// late), and a node lost (silent for 5 s) renewed its own 5 s ago or more.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) const STALE_AFTER: std::time::Duration = std::time::Duration::from_millis(4500);

/// What carries serialized publications between the nodes of a deployment.
pub(crate) trait Carrier: fmt::Debug + Send + Sync + 'static {
    /// Starts carrying, in the Tokio runtime the router runs in: send what arrives on
    /// `outgoing` to the other nodes, and hand what they send to `incoming` (which returns
    /// `false` once the router is gone: stop then); answer `directory` requests. Called
    /// once per router.
    fn start(
        &self,
        node: u64,
        outgoing: tokio::sync::mpsc::Receiver<(Option<u64>, Vec<u8>)>,
        directory: tokio::sync::mpsc::Receiver<DirOp>,
        incoming: Arc<dyn Fn(Vec<u8>) -> bool + Send + Sync>,
        metrics: Arc<crate::metrics::Metrics>,
    );

    /// The directory key of a registration.
    fn key(&self, policy: &str, uri: &str) -> String;
}

/// A backplane for [`WampRouter::backplane`](crate::WampRouter::backplane): what carries
/// publications between the routers (nodes) that serve one realm. The in-process default
/// is having none; [`Redis`] (cargo feature `redis`) is one.
#[derive(Debug, Clone)]
pub struct Backplane(pub(crate) Arc<dyn Carrier>);

#[cfg(feature = "redis")]
pub use redis_backplane::Redis;

#[cfg(feature = "redis")]
mod redis_backplane {
    use std::{
        sync::Arc,
        time::{Duration, Instant},
    };

    use futures_util::StreamExt as _;

    use crate::metrics::Metrics;

    /// A Redis backplane: publications go out on one pub/sub channel, and each node
    /// subscribes to it. Redis is trusted: whoever may publish on the channel can inject
    /// events into the realm (use Redis's ACLs, a private network, and a channel per
    /// deployment).
    ///
    /// ```no_run
    /// use tower_wamp::{WampRouter, backplane::Redis};
    /// let router: WampRouter = WampRouter::new()
    ///     .realm("realm1")
    ///     .backplane(Redis::new("redis://127.0.0.1:6379"));
    /// ```
    #[derive(Clone)]
    pub struct Redis {
        url: String,
        channel: String,
    }

    impl std::fmt::Debug for Redis {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            // The URL may hold a password: only the channel is shown.
            f.debug_struct("Redis")
                .field("channel", &self.channel)
                .finish_non_exhaustive()
        }
    }

    impl Redis {
        /// A backplane on the Redis server at `url` (`redis://host:port`).
        #[must_use]
        pub fn new(url: impl Into<String>) -> Self {
            Self {
                url: url.into(),
                channel: "tower-wamp:events".into(),
            }
        }

        /// The pub/sub channel (default `tower-wamp:events`): deployments sharing a Redis
        /// server must use different channels, or they share their events.
        #[must_use]
        pub fn channel(mut self, channel: impl Into<String>) -> Self {
            self.channel = channel.into();
            self
        }
    }

    impl From<Redis> for super::Backplane {
        fn from(redis: Redis) -> Self {
            Self(Arc::new(redis))
        }
    }

    impl super::Carrier for Redis {
        fn start(
            &self,
            node: u64,
            outgoing: tokio::sync::mpsc::Receiver<(Option<u64>, Vec<u8>)>,
            directory: tokio::sync::mpsc::Receiver<super::DirOp>,
            incoming: Arc<dyn Fn(Vec<u8>) -> bool + Send + Sync>,
            metrics: Arc<Metrics>,
        ) {
            let (url, channel) = (self.url.clone(), self.channel.clone());
            tokio::spawn(run(
                url,
                channel,
                node,
                (outgoing, directory),
                incoming,
                metrics,
            ));
        }

        fn key(&self, policy: &str, uri: &str) -> String {
            format!("{}:reg:{policy}:{uri}", self.channel)
        }
    }

    /// What a node sends: (to one node or all, the message).
    type Outgoing = tokio::sync::mpsc::Receiver<(Option<u64>, Vec<u8>)>;
    /// The directory requests of a node.
    type Directory = tokio::sync::mpsc::Receiver<super::DirOp>;
    type Queues = (Outgoing, Directory);

    /// How long a connection attempt or a batch of PUBLISHes may take before the
    /// connection counts as failed.
    const DEADLINE: Duration = Duration::from_secs(5);

    /// How many queued publications go out in one pipeline (one round trip).
    const BATCH: usize = 256;

    /// Connects, subscribes and carries until the router is gone; reconnects after a
    /// failure (at most every second).
    async fn run(
        url: String,
        channel: String,
        node: u64,
        (mut outgoing, mut directory): Queues,
        incoming: Arc<dyn Fn(Vec<u8>) -> bool + Send + Sync>,
        metrics: Arc<Metrics>,
    ) {
        let mut connected_before = false;
        // Every publication takes a number, carried or not: receivers see the gaps.
        let mut seq = 0u64;
        loop {
            let started = Instant::now();
            match carry(
                &url,
                &channel,
                (node, &mut seq),
                (&mut outgoing, &mut directory),
                &incoming,
                &metrics,
                &mut connected_before,
            )
            .await
            {
                Ok(()) => return,
                Err(e) => {
                    metrics
                        .backplane_up
                        .store(0, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(error = %e, "Redis backplane connection failed: reconnecting");
                }
            }
            // What waits while disconnected is lost, and counted: a node must not hold
            // publications without bound, nor deliver them late and out of order.
            while let Ok((to, _lost)) = outgoing.try_recv() {
                if to.is_none() {
                    seq += 1;
                }
                Metrics::add(&metrics.backplane_lost, 1);
            }
            // The directory cannot be asked meanwhile: said at once.
            while let Ok(op) = directory.try_recv() {
                if let super::DirOp::Hold {
                    reply: Some(reply), ..
                } = op
                {
                    let _ = reply.send(Err("Redis cannot be reached".into()));
                }
            }
            let elapsed = started.elapsed();
            if elapsed < Duration::from_secs(1) {
                tokio::time::sleep(Duration::from_secs(1) - elapsed).await;
            }
        }
    }

    /// Takes `KEYS[1]` for `ARGV[1]` if free, renews it if held for the same value: 1 if it is
    /// held for `ARGV[1]` now, 0 if for another.
    const HOLD: &str = "local v = redis.call('GET', KEYS[1]) \
        if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 \
        elseif v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 \
        else return 0 end";
    /// Deletes `KEYS[1]` if it is held for `ARGV[1]`.
    const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
        return redis.call('DEL', KEYS[1]) else return 0 end";

    /// Aborts a task when dropped.
    struct AbortOnDrop(tokio::task::JoinHandle<()>);

    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }

    /// Deletes `KEYS[1]` if it is held for `ARGV[1]` with less than `ARGV[2]` ms left.
    const RELEASE_STALE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] and \
        redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then \
        return redis.call('DEL', KEYS[1]) else return 0 end";

    /// Most directory requests sent in one pipeline.
    const DIRECTORY_BATCH: usize = 64;

    /// Runs the directory's requests in the order they came, pipelined: those waiting go
    /// out together in one round trip, the next batch after its answers.
    async fn directory_worker(
        mut conn: redis::aio::MultiplexedConnection,
        mut requests: tokio::sync::mpsc::Receiver<super::DirOp>,
    ) {
        use super::DirOp;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (ttl, stale) = (
            ms(super::HOLD_FOR),
            ms(super::HOLD_FOR - super::STALE_AFTER),
        );
        let mut ops = Vec::with_capacity(DIRECTORY_BATCH);
        while requests.recv_many(&mut ops, DIRECTORY_BATCH).await > 0 {
            let mut pipe = redis::pipe();
            let mut commands = 0;
            let mut hold =
                |pipe: &mut redis::Pipeline, script: &str, key: &str, value: &str, ms| {
                    pipe.cmd("EVAL")
                        .arg(script)
                        .arg(1)
                        .arg(key)
                        .arg(value)
                        .arg(ms);
                    commands += 1;
                };
            for op in &ops {
                match op {
                    DirOp::Hold { key, value, .. } => hold(&mut pipe, HOLD, key, value, ttl),
                    DirOp::Release { key, value } => hold(&mut pipe, RELEASE, key, value, 0),
                    DirOp::ReleaseStale { holds } => {
                        for (key, value) in holds {
                            hold(&mut pipe, RELEASE_STALE, key, value, stale);
                        }
                    }
                    DirOp::Renew { holds } => {
                        for (key, value) in holds {
                            hold(&mut pipe, HOLD, key, value, ttl);
                        }
                    }
                }
            }
            let answers = if commands == 0 {
                Ok(Vec::new())
            } else {
                match tokio::time::timeout(DEADLINE, pipe.query_async::<Vec<i64>>(&mut conn)).await
                {
                    Ok(Ok(answers)) => Ok(answers),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("Redis did not answer in time".to_owned()),
                }
            };
            if let Err(e) = &answers {
                tracing::warn!(error = %e, requests = ops.len(), "registration directory not reached");
            }
            let mut at = 0;
            for op in ops.drain(..) {
                match op {
                    DirOp::Hold { reply, .. } => {
                        let held = answers
                            .as_ref()
                            .map(|a| a.get(at) == Some(&1))
                            .map_err(Clone::clone);
                        at += 1;
                        if let Some(reply) = reply {
                            let _ = reply.send(held);
                        }
                    }
                    DirOp::Release { .. } => at += 1,
                    DirOp::ReleaseStale { holds } => at += holds.len(),
                    DirOp::Renew { holds } => {
                        if let Ok(answers) = &answers {
                            let taken = answers
                                .iter()
                                .skip(at)
                                .take(holds.len())
                                .filter(|n| **n != 1)
                                .count();
                            if taken > 0 {
                                tracing::warn!(
                                    taken,
                                    "registration names another node took while the directory was unreachable"
                                );
                            }
                        }
                        at += holds.len();
                    }
                }
            }
        }
    }

    fn timed_out() -> redis::RedisError {
        redis::RedisError::from((redis::ErrorKind::IoError, "Redis did not answer in time"))
    }

    /// One connection's life: `Ok` when the router is gone, `Err` when Redis failed.
    async fn carry(
        url: &str,
        channel: &str,
        (node, seq): (u64, &mut u64),
        (outgoing, directory): (&mut Outgoing, &mut Directory),
        incoming: &Arc<dyn Fn(Vec<u8>) -> bool + Send + Sync>,
        metrics: &Arc<Metrics>,
        connected_before: &mut bool,
    ) -> redis::RedisResult<()> {
        // Messages to one node go on its own channel.
        let direct = |to: u64| format!("{channel}:node:{to}");
        let client = redis::Client::open(url)?;
        let connect = async {
            let publisher = client.get_multiplexed_async_connection().await?;
            // The directory's own: a REGISTER's claim does not wait behind large pipelines
            // of publications.
            let directory = client.get_multiplexed_async_connection().await?;
            let mut subscriber = client.get_async_pubsub().await?;
            subscriber.subscribe(channel).await?;
            subscriber
                .subscribe(format!("{channel}:node:{node}"))
                .await?;
            Ok::<_, redis::RedisError>((publisher, directory, subscriber))
        };
        let (mut publisher, directory_conn, mut subscriber) =
            tokio::time::timeout(DEADLINE, connect)
                .await
                .map_err(|_| timed_out())??;
        if *connected_before {
            Metrics::add(&metrics.backplane_reconnects, 1);
        }
        *connected_before = true;
        metrics.backplane_connected_at.store(
            crate::core::broker::now_ms(),
            std::sync::atomic::Ordering::Relaxed,
        );
        metrics
            .backplane_up
            .store(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!("Redis backplane connected");
        // Publications queued while connecting were not seen by nodes that were down: they
        // go out now, in order (the receivers count gaps, not delays).
        let mut messages = subscriber.on_message();
        let mut batch = Vec::with_capacity(BATCH);
        // The directory's requests, on the multiplexed connection beside the publications,
        // in a task of their own (the carrier does not wait for their answers), one after
        // another: a release is never overtaken by a renewal sent before it.
        let (ordered, requests) = tokio::sync::mpsc::channel::<super::DirOp>(super::QUEUE);
        // Ended with this connection: a worker of an earlier one never runs beside the next.
        let worker = tokio::spawn(directory_worker(directory_conn, requests));
        let _worker = AbortOnDrop(worker);
        loop {
            tokio::select! {
                n = outgoing.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        return Ok(());
                    }
                    // One pipeline on one connection: one round trip, order kept.
                    let mut pipe = redis::pipe();
                    for (to, message) in &batch {
                        match to {
                            None => {
                                *seq += 1;
                                pipe.cmd("PUBLISH")
                                    .arg(channel)
                                    .arg(super::frame(node, *seq, message))
                                    .ignore();
                            }
                            // Not numbered: a receiver counts gaps among what all get.
                            Some(to) => {
                                pipe.cmd("PUBLISH")
                                    .arg(direct(*to))
                                    .arg(super::frame(node, 0, message))
                                    .ignore();
                            }
                        }
                    }
                    let sent = tokio::time::timeout(DEADLINE, pipe.query_async::<()>(&mut publisher))
                        .await
                        .map_err(|_| timed_out())
                        .and_then(|r| r);
                    let count = u64::try_from(batch.len()).unwrap_or(u64::MAX);
                    batch.clear();
                    match sent {
                        Ok(()) => Metrics::add(&metrics.backplane_sent, count),
                        Err(e) => {
                            Metrics::add(&metrics.backplane_lost, count);
                            return Err(e);
                        }
                    }
                }
                Some(op) = directory.recv() => {
                    if let Err(tokio::sync::mpsc::error::TrySendError::Full(op)) = ordered.try_send(op) {
                        Metrics::add(&metrics.backplane_lost, 1);
                        static WARNED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                        if crate::metrics::now_and_then(&WARNED) {
                            tracing::warn!("registration directory request dropped: too many waiting (counted in backplane_lost)");
                        }
                        if let super::DirOp::Hold { reply: Some(reply), .. } = op {
                            let _ = reply.send(Err("the registration directory is overloaded".into()));
                        }
                    }
                }
                message = messages.next() => {
                    let Some(message) = message else {
                        return Err(redis::RedisError::from((
                            redis::ErrorKind::IoError,
                            "the subscription ended",
                        )));
                    };
                    let payload: Vec<u8> = message.get_payload()?;
                    if !incoming(payload) {
                        return Ok(());
                    }
                }
            }
        }
    }
}
