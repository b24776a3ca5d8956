//! Counters a user can read ([`Wamp::metrics`](crate::Wamp::metrics)) or export.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

/// How many distinct error URIs [`MetricsSnapshot::errors_by_uri`] keeps.
const MAX_ERROR_URIS: usize = 256;
/// Where errors with further URIs are counted.
const OTHER_ERRORS: &str = "(other)";

/// Whether a warning that may repeat per message is logged now: at most once a second per
/// `slot` (the time it was last logged, in milliseconds since the Unix epoch), so that a
/// flood of bad messages does not flood the log too (the counters count every one).
pub(crate) fn now_and_then(slot: &AtomicU64) -> bool {
    let now = crate::core::broker::now_ms();
    let last = slot.load(Relaxed);
    now >= last.saturating_add(1000) && slot.compare_exchange(last, now, Relaxed, Relaxed).is_ok()
}

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) sessions_open: AtomicU64,
    pub(crate) sessions_total: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) events_dropped: AtomicU64,
    pub(crate) slow_consumers_disconnected: AtomicU64,
    pub(crate) write_timeouts: AtomicU64,
    pub(crate) calls_in_flight: AtomicU64,
    pub(crate) calls_total: AtomicU64,
    pub(crate) backplane_sent: AtomicU64,
    pub(crate) backplane_received: AtomicU64,
    pub(crate) backplane_lost: AtomicU64,
    pub(crate) backplane_reconnects: AtomicU64,
    pub(crate) backplane_nodes_lost: AtomicU64,
    pub(crate) backplane_calls_failed: AtomicU64,
    pub(crate) backplane_sessions_elsewhere: AtomicU64,
    /// 1 while the backplane is connected.
    pub(crate) backplane_up: AtomicU64,
    /// When the backplane last connected, in milliseconds since the Unix epoch.
    pub(crate) backplane_connected_at: AtomicU64,
    errors: Mutex<HashMap<String, u64>>,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Relaxed);
    }

    /// Counts an error by URI. The table holds at most [`MAX_ERROR_URIS`] URIs (a handler
    /// may build error URIs from what clients send); the rest count under [`OTHER_ERRORS`].
    pub(crate) fn error(&self, uri: &str) {
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = errors.get_mut(uri) {
            *n += 1;
        } else if errors.len() < MAX_ERROR_URIS && uri.len() <= 256 {
            errors.insert(uri.to_owned(), 1);
        } else {
            *errors.entry(OTHER_ERRORS.to_owned()).or_default() += 1;
        }
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            sessions_open: self.sessions_open.load(Relaxed),
            sessions_total: self.sessions_total.load(Relaxed),
            messages_in: self.messages_in.load(Relaxed),
            messages_out: self.messages_out.load(Relaxed),
            events_dropped: self.events_dropped.load(Relaxed),
            slow_consumers_disconnected: self.slow_consumers_disconnected.load(Relaxed),
            write_timeouts: self.write_timeouts.load(Relaxed),
            calls_in_flight: self.calls_in_flight.load(Relaxed),
            calls_total: self.calls_total.load(Relaxed),
            backplane_sent: self.backplane_sent.load(Relaxed),
            backplane_received: self.backplane_received.load(Relaxed),
            backplane_lost: self.backplane_lost.load(Relaxed),
            backplane_reconnects: self.backplane_reconnects.load(Relaxed),
            backplane_nodes_lost: self.backplane_nodes_lost.load(Relaxed),
            backplane_calls_failed: self.backplane_calls_failed.load(Relaxed),
            backplane_sessions_elsewhere: self.backplane_sessions_elsewhere.load(Relaxed),
            backplane_up: self.backplane_up.load(Relaxed) == 1,
            errors_by_uri: self
                .errors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        }
    }
}

/// A copy of the router's counters at one moment.
///
/// ```
/// let wamp = tower_wamp::Wamp::default();
/// let m = wamp.metrics();
/// assert_eq!((m.sessions_open, m.messages_in, m.events_dropped), (0, 0, 0));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Sessions open now.
    pub sessions_open: u64,
    /// Sessions opened since start.
    pub sessions_total: u64,
    /// WAMP messages received.
    pub messages_in: u64,
    /// WAMP messages written to sockets.
    pub messages_out: u64,
    /// Frames dropped by a `DropOldest`/`DropNewest` slow-consumer policy.
    pub events_dropped: u64,
    /// Sessions closed because their outbound queue was full.
    pub slow_consumers_disconnected: u64,
    /// Connections dropped because a write made no progress within the write timeout.
    pub write_timeouts: u64,
    /// Calls running now.
    pub calls_in_flight: u64,
    /// Calls received since start.
    pub calls_total: u64,
    /// Publications handed to the backplane for the other nodes.
    pub backplane_sent: u64,
    /// Publications of other nodes received through the backplane.
    pub backplane_received: u64,
    /// Publications the backplane could not carry to the other nodes (its queue was full,
    /// or the connection to it failed): counted, never silent. Local delivery goes on.
    pub backplane_lost: u64,
    /// Times the backplane connection was made anew after a failure.
    pub backplane_reconnects: u64,
    /// Other nodes lost (no heartbeat in time, or their goodbye): the calls pending there
    /// failed at once.
    pub backplane_nodes_lost: u64,
    /// Calls on other nodes that failed because their node was lost, the backplane went
    /// down or reconnected, or their messages were lost on the way.
    pub backplane_calls_failed: u64,
    /// Sessions of the other nodes this node knows of (from their joins and leaves): told
    /// `wamp.session.on_leave` here if their node is lost. At most 250,000 are kept.
    pub backplane_sessions_elsewhere: u64,
    /// Whether the backplane is connected (a health signal: false while Redis cannot be
    /// reached, and without a backplane).
    pub backplane_up: bool,
    /// CALLERRORs sent, by error URI: at most 256 URIs (of at most 256 bytes), the rest
    /// under `"(other)"`.
    pub errors_by_uri: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_uris_are_bounded() {
        let m = Metrics::default();
        for i in 0..1000 {
            m.error(&format!("urn:e{i}"));
        }
        m.error(&"x".repeat(1000));
        m.error("urn:e0");
        let errors = m.snapshot().errors_by_uri;
        assert_eq!(errors.len(), MAX_ERROR_URIS + 1);
        assert_eq!(errors["urn:e0"], 2);
        assert_eq!(errors[OTHER_ERRORS], 1000 - MAX_ERROR_URIS as u64 + 1);
    }
}

#[cfg(test)]
mod throttle_tests {
    use super::*;

    #[test]
    fn a_repeated_warning_is_logged_at_most_once_a_second() {
        let slot = AtomicU64::new(0);
        assert!(now_and_then(&slot));
        assert!(!now_and_then(&slot));
        slot.store(crate::core::broker::now_ms() - 1000, Relaxed);
        assert!(now_and_then(&slot));
    }
}
