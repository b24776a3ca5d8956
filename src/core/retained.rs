//! Retained events: the last event published with `retain` on each topic, kept within a
//! budget of topics and bytes; past it, the topics retained longest ago are forgotten first.
//!
//! ```
//! use tower_wamp::core::retained::{RetainBudget, RetainedStore};
//!
//! let mut store = RetainedStore::new(RetainBudget { topics: 2, bytes: 100 });
//! store.retain("a", "first", 10);
//! store.retain("a", "second", 10); // replaces
//! store.retain("b", "b", 10);
//! store.retain("c", "c", 10); // two topics at most: "a" goes
//! assert_eq!(store.get("a"), None);
//! assert_eq!(store.get("c"), Some(&"c"));
//! ```

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

/// How much a router keeps of retained events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetainBudget {
    /// How many topics may have a retained event (0: none is kept).
    pub topics: usize,
    /// How many bytes the retained events may take in all (as their sizes are given).
    pub bytes: usize,
}

impl Default for RetainBudget {
    /// 1024 topics, 8 MiB.
    fn default() -> Self {
        Self {
            topics: 1024,
            bytes: 8 << 20,
        }
    }
}

/// The retained event of each topic, within a [`RetainBudget`].
#[derive(Debug)]
pub struct RetainedStore<E> {
    by_topic: HashMap<Arc<str>, Entry<E>>,
    /// Topics in the order they were retained; an entry whose `seq` is not the topic's
    /// current one is stale and skipped.
    order: VecDeque<(u64, Arc<str>)>,
    bytes: usize,
    budget: RetainBudget,
    seq: u64,
    evicted: u64,
}

#[derive(Debug)]
struct Entry<E> {
    seq: u64,
    event: E,
    bytes: usize,
}

impl<E> RetainedStore<E> {
    /// An empty store.
    #[must_use]
    pub fn new(budget: RetainBudget) -> Self {
        Self {
            by_topic: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            budget,
            seq: 0,
            evicted: 0,
        }
    }

    /// Changes the budget (what no longer fits is forgotten, oldest first).
    pub fn set_budget(&mut self, budget: RetainBudget) {
        self.budget = budget;
        self.evict();
    }

    /// Keeps `event` (of `bytes`) as `topic`'s retained event; `false` if it is larger than
    /// the whole budget: it is not kept, and neither is the topic's older one (a later
    /// subscriber must not get an event older than the last one retained).
    pub fn retain(&mut self, topic: &str, event: E, bytes: usize) -> bool {
        if self.budget.topics == 0 || bytes > self.budget.bytes {
            if let Some(old) = self.by_topic.remove(topic) {
                self.bytes -= old.bytes;
            }
            return false;
        }
        self.seq += 1;
        let key: Arc<str> = match self.by_topic.get_key_value(topic) {
            Some((k, _)) => k.clone(),
            None => topic.into(),
        };
        let entry = Entry {
            seq: self.seq,
            event,
            bytes,
        };
        if let Some(old) = self.by_topic.insert(key.clone(), entry) {
            self.bytes -= old.bytes;
        }
        self.bytes += bytes;
        self.order.push_back((self.seq, key));
        self.evict();
        // Stale order entries are dropped when they outnumber the live ones.
        if self.order.len() > 2 * self.by_topic.len() + 16 {
            let by_topic = &self.by_topic;
            self.order
                .retain(|(seq, t)| by_topic.get(t).is_some_and(|e| e.seq == *seq));
        }
        true
    }

    fn evict(&mut self) {
        while self.by_topic.len() > self.budget.topics || self.bytes > self.budget.bytes {
            let Some((seq, topic)) = self.order.pop_front() else {
                break;
            };
            if self.by_topic.get(&topic).is_some_and(|e| e.seq == seq)
                && let Some(old) = self.by_topic.remove(&topic)
            {
                self.bytes -= old.bytes;
                self.evicted += 1;
            }
        }
    }

    /// `topic`'s retained event.
    #[must_use]
    pub fn get(&self, topic: &str) -> Option<&E> {
        self.by_topic.get(topic).map(|e| &e.event)
    }

    /// How many topics have a retained event.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_topic.len()
    }

    /// Whether none has.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_topic.is_empty()
    }

    /// How many retained events were forgotten to stay within the budget.
    #[must_use]
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_bound_the_store_and_the_oldest_go_first() {
        let mut store = RetainedStore::new(RetainBudget {
            topics: 10,
            bytes: 30,
        });
        assert!(store.retain("a", 1, 10));
        assert!(store.retain("b", 2, 10));
        assert!(store.retain("a", 3, 15)); // replaces a: 25 bytes
        assert!(store.retain("c", 4, 10)); // 35 > 30: b, the oldest, goes
        assert_eq!(
            (store.get("a"), store.get("b"), store.get("c")),
            (Some(&3), None, Some(&4))
        );
        assert_eq!(store.evicted(), 1);
        assert!(!store.retain("d", 5, 31), "larger than the budget");
        assert_eq!(store.get("d"), None);
        // Too large for the budget: the older event of the topic goes too.
        assert!(!store.retain("c", 6, 31));
        assert_eq!(store.get("c"), None);
        // Many retains on one topic do not grow the order queue without bound.
        for i in 0..1000 {
            store.retain("a", i, 1);
        }
        assert!(store.order.len() <= 2 * store.len() + 17);
        store.set_budget(RetainBudget {
            topics: 0,
            bytes: 0,
        });
        assert!(store.is_empty());
        assert!(!store.retain("a", 1, 0), "a budget of no topics keeps none");
    }
}
