//! Retained events: the last event published with `retain` on each topic (and, for event
//! history, the last few of each topic), kept within a budget of topics and bytes; past it,
//! the events kept longest ago are forgotten first.
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

/// The retained event of each topic (or, for event history, its last few events), within a
/// [`RetainBudget`].
#[derive(Debug)]
pub struct RetainedStore<E> {
    /// Each topic's events, oldest first.
    by_topic: HashMap<Arc<str>, VecDeque<Entry<E>>>,
    /// Events in the order they were kept; an entry no longer at the front of its topic's
    /// queue when reached is stale and skipped.
    order: VecDeque<(u64, Arc<str>)>,
    entries: usize,
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
            entries: 0,
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
        self.push(topic, event, bytes, 1)
    }

    /// Keeps `event` (of `bytes`) as `topic`'s newest, and at most `keep` of the topic's
    /// events; `false` if it is larger than the whole budget (or `keep` is 0): it is not
    /// kept, and neither are the topic's older ones (what is kept has no gaps).
    ///
    /// ```
    /// use tower_wamp::core::retained::{RetainBudget, RetainedStore};
    /// let mut history = RetainedStore::new(RetainBudget { topics: 10, bytes: 100 });
    /// for i in 0..5 {
    ///     history.push("t", i, 1, 3);
    /// }
    /// assert_eq!(history.recent("t").copied().collect::<Vec<_>>(), [4, 3, 2]);
    /// ```
    pub fn push(&mut self, topic: &str, event: E, bytes: usize, keep: usize) -> bool {
        if self.budget.topics == 0 || bytes > self.budget.bytes || keep == 0 {
            self.forget(topic);
            return false;
        }
        self.seq += 1;
        let key: Arc<str> = match self.by_topic.get_key_value(topic) {
            Some((k, _)) => k.clone(),
            None => topic.into(),
        };
        let queue = self.by_topic.entry(key.clone()).or_default();
        queue.push_back(Entry {
            seq: self.seq,
            event,
            bytes,
        });
        self.bytes += bytes;
        self.entries += 1;
        while queue.len() > keep {
            let old = queue.pop_front().expect("longer than keep");
            self.bytes -= old.bytes;
            self.entries -= 1;
        }
        self.order.push_back((self.seq, key));
        self.evict();
        // Stale order entries are dropped when they outnumber the live ones.
        if self.order.len() > 2 * self.entries + 16 {
            let by_topic = &self.by_topic;
            // Each topic's events are in sequence order: a binary search each.
            self.order.retain(|(seq, t)| {
                by_topic
                    .get(t)
                    .is_some_and(|q| q.binary_search_by_key(seq, |e| e.seq).is_ok())
            });
        }
        true
    }

    fn forget(&mut self, topic: &str) {
        if let Some(old) = self.by_topic.remove(topic) {
            self.entries -= old.len();
            self.bytes -= old.iter().map(|e| e.bytes).sum::<usize>();
        }
    }

    fn evict(&mut self) {
        while self.by_topic.len() > self.budget.topics || self.bytes > self.budget.bytes {
            let Some((seq, topic)) = self.order.pop_front() else {
                break;
            };
            let Some(queue) = self.by_topic.get_mut(&topic) else {
                continue;
            };
            if queue.front().is_some_and(|e| e.seq == seq) {
                let old = queue.pop_front().expect("just seen");
                self.bytes -= old.bytes;
                self.entries -= 1;
                self.evicted += 1;
                if queue.is_empty() {
                    self.by_topic.remove(&topic);
                }
            }
        }
    }

    /// `topic`'s retained (newest) event.
    #[must_use]
    pub fn get(&self, topic: &str) -> Option<&E> {
        self.by_topic
            .get(topic)
            .and_then(VecDeque::back)
            .map(|e| &e.event)
    }

    /// `topic`'s kept events, newest first.
    pub fn recent(&self, topic: &str) -> impl Iterator<Item = &E> {
        self.by_topic
            .get(topic)
            .into_iter()
            .flat_map(|q| q.iter().rev().map(|e| &e.event))
    }

    /// The topics with kept events that `wanted` accepts.
    pub fn topics_where(&self, wanted: impl Fn(&str) -> bool) -> Vec<Arc<str>> {
        self.by_topic
            .keys()
            .filter(|t| wanted(t))
            .cloned()
            .collect()
    }

    /// The newest `limit` events of `topics` that `accept` takes, newest first, as
    /// (topic, event): merged from each topic's own order, looking at no more events than
    /// it takes to find them.
    pub fn newest<'a>(
        &'a self,
        topics: &[Arc<str>],
        accept: impl Fn(&E) -> bool,
        limit: usize,
    ) -> Vec<(&'a str, &'a E)> {
        use std::collections::BinaryHeap;
        let mut iters: Vec<(
            &'a str,
            std::iter::Rev<std::collections::vec_deque::Iter<'a, Entry<E>>>,
        )> = topics
            .iter()
            .filter_map(|t| self.by_topic.get_key_value(&**t))
            .map(|(t, q)| (&**t, q.iter().rev()))
            .collect();
        // (seq, which topic) of each topic's next newest event.
        let mut heap = BinaryHeap::new();
        let mut heads: Vec<Option<&'a Entry<E>>> = Vec::with_capacity(iters.len());
        for (i, (_, it)) in iters.iter_mut().enumerate() {
            let head = it.next();
            if let Some(e) = head {
                heap.push((e.seq, i));
            }
            heads.push(head);
        }
        let mut found = Vec::new();
        while found.len() < limit {
            let Some((_, i)) = heap.pop() else {
                break;
            };
            let entry = heads[i].take().expect("on the heap");
            if accept(&entry.event) {
                found.push((iters[i].0, &entry.event));
            }
            heads[i] = iters[i].1.next();
            if let Some(e) = heads[i] {
                heap.push((e.seq, i));
            }
        }
        found
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

    #[test]
    fn history_keeps_the_last_few_of_each_topic_within_the_budget() {
        let mut store = RetainedStore::new(RetainBudget {
            topics: 2,
            bytes: 10,
        });
        for i in 0..4 {
            assert!(store.push("a", i, 1, 3));
        }
        assert!(store.push("b", 10, 1, 3));
        assert_eq!(store.recent("a").copied().collect::<Vec<_>>(), [3, 2, 1]);
        assert_eq!(store.get("a"), Some(&3));
        // Newest first across topics, as many as asked, those accepted.
        let topics = store.topics_where(|_| true);
        assert_eq!(
            store.newest(&topics, |_| true, 10),
            [("b", &10), ("a", &3), ("a", &2), ("a", &1)]
        );
        assert_eq!(
            store.newest(&topics, |e| *e != 3, 2),
            [("b", &10), ("a", &2)]
        );
        let only_a = store.topics_where(|t| t == "a");
        assert_eq!(store.newest(&only_a, |_| true, 1), [("a", &3)]);
        // Bytes: 4 + 7 > 10, the oldest events go first, whatever their topic.
        assert!(store.push("b", 11, 7, 3));
        assert_eq!(store.recent("a").copied().collect::<Vec<_>>(), [3, 2]);
        assert_eq!(store.recent("b").copied().collect::<Vec<_>>(), [11, 10]);
        assert_eq!(store.evicted(), 1);
        // A third topic: the oldest topic's events go until a topic is gone.
        assert!(store.push("c", 20, 1, 3));
        assert_eq!(store.recent("a").count(), 0);
        assert_eq!(store.len(), 2);
        // Too large: the topic's older events go too, no gap.
        assert!(!store.push("b", 12, 11, 3));
        assert_eq!(store.recent("b").count(), 0);
        for i in 0..1000 {
            store.push("c", i, 1, 3);
        }
        assert!(store.order.len() <= 2 * store.entries + 17);
        assert_eq!(store.entries, 3);
        assert_eq!(store.bytes, 3);
    }
}
