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
    /// The publishing node.
    pub(crate) node: u64,
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

/// What carries serialized publications between the nodes of a deployment.
pub(crate) trait Carrier: fmt::Debug + Send + Sync + 'static {
    /// Starts carrying, in the Tokio runtime the router runs in: send what arrives on
    /// `outgoing` to the other nodes, and hand what they send to `incoming` (which returns
    /// `false` once the router is gone: stop then). Called once per router.
    fn start(
        &self,
        outgoing: tokio::sync::mpsc::Receiver<Vec<u8>>,
        incoming: Arc<dyn Fn(Vec<u8>) -> bool + Send + Sync>,
        metrics: Arc<crate::metrics::Metrics>,
    );
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
    /// subscribes to it.
    ///
    /// ```no_run
    /// use tower_wamp::{WampRouter, backplane::Redis};
    /// let router: WampRouter = WampRouter::new()
    ///     .realm("realm1")
    ///     .backplane(Redis::new("redis://127.0.0.1:6379"));
    /// ```
    #[derive(Debug, Clone)]
    pub struct Redis {
        url: String,
        channel: String,
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
        /// server use different channels.
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
            outgoing: tokio::sync::mpsc::Receiver<Vec<u8>>,
            incoming: Arc<dyn Fn(Vec<u8>) -> bool + Send + Sync>,
            metrics: Arc<Metrics>,
        ) {
            let (url, channel) = (self.url.clone(), self.channel.clone());
            tokio::spawn(run(url, channel, outgoing, incoming, metrics));
        }
    }

    /// Connects, subscribes and carries until the router is gone; reconnects after a
    /// failure (at most every second).
    async fn run(
        url: String,
        channel: String,
        mut outgoing: tokio::sync::mpsc::Receiver<Vec<u8>>,
        incoming: Arc<dyn Fn(Vec<u8>) -> bool + Send + Sync>,
        metrics: Arc<Metrics>,
    ) {
        let mut first = true;
        loop {
            let started = Instant::now();
            match carry(&url, &channel, &mut outgoing, &incoming, &metrics).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "Redis backplane connection failed: reconnecting");
                }
            }
            if !first {
                Metrics::add(&metrics.backplane_reconnects, 1);
            }
            first = false;
            // What waits while disconnected is lost, and counted: a node must not hold
            // publications without bound, nor deliver them late and out of order.
            while let Ok(_lost) = outgoing.try_recv() {
                Metrics::add(&metrics.backplane_lost, 1);
            }
            let elapsed = started.elapsed();
            if elapsed < Duration::from_secs(1) {
                tokio::time::sleep(Duration::from_secs(1) - elapsed).await;
            }
        }
    }

    /// One connection's life: `Ok` when the router is gone, `Err` when Redis failed.
    async fn carry(
        url: &str,
        channel: &str,
        outgoing: &mut tokio::sync::mpsc::Receiver<Vec<u8>>,
        incoming: &Arc<dyn Fn(Vec<u8>) -> bool + Send + Sync>,
        metrics: &Arc<Metrics>,
    ) -> redis::RedisResult<()> {
        let client = redis::Client::open(url)?;
        let mut publisher = client.get_multiplexed_async_connection().await?;
        let mut subscriber = client.get_async_pubsub().await?;
        subscriber.subscribe(channel).await?;
        tracing::info!("Redis backplane connected");
        let mut messages = subscriber.on_message();
        loop {
            tokio::select! {
                out = outgoing.recv() => {
                    let Some(envelope) = out else { return Ok(()) };
                    let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                        .arg(channel)
                        .arg(envelope)
                        .query_async(&mut publisher)
                        .await;
                    match sent {
                        Ok(_) => Metrics::add(&metrics.backplane_sent, 1),
                        Err(e) => {
                            Metrics::add(&metrics.backplane_lost, 1);
                            return Err(e);
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
