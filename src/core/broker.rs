//! The subscription tables: which sessions are subscribed to which topics.
//!
//! Generic over `H`, the handle the transport uses to reach a session (its outbound
//! queue), so that publishing walks one table and needs no second lookup per recipient.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use super::SessionId;

#[derive(Debug)]
pub(crate) struct Broker<H> {
    topics: HashMap<Arc<str>, TopicSubs<H>>,
    sessions: HashMap<SessionId, SessionTopics>,
    /// Subscription id → topic, for WAMP v2's UNSUBSCRIBE.
    ids: HashMap<u64, Arc<str>>,
    next_id: u64,
}

/// One topic's subscription: its id (the same for every subscriber, as WAMP v2 asks) and
/// its subscribers.
#[derive(Debug)]
struct TopicSubs<H> {
    id: u64,
    subs: HashMap<SessionId, H>,
}

#[derive(Debug, Default)]
struct SessionTopics {
    topics: HashSet<Arc<str>>,
    bytes: usize,
}

/// A session's budget of subscriptions: entries and bytes of topic URIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    pub(crate) entries: usize,
    pub(crate) bytes: usize,
}

/// What a subscribe did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subscribed {
    New,
    Already,
    /// The session's budget is spent: nothing changed.
    OverBudget,
}

impl<H> Default for Broker<H> {
    fn default() -> Self {
        Self {
            topics: HashMap::new(),
            sessions: HashMap::new(),
            ids: HashMap::new(),
            next_id: 0,
        }
    }
}

impl<H> Broker<H> {
    /// Subscribes within `budget` (none: no limit).
    pub(crate) fn subscribe(
        &mut self,
        topic: &str,
        session: &SessionId,
        handle: H,
        budget: Option<Budget>,
    ) -> Subscribed {
        let mine = self.sessions.entry(session.clone()).or_default();
        if mine.topics.contains(topic) {
            return Subscribed::Already;
        }
        if let Some(budget) = budget
            && (mine.topics.len() >= budget.entries || mine.bytes + topic.len() > budget.bytes)
        {
            if mine.topics.is_empty() {
                self.sessions.remove(session);
            }
            return Subscribed::OverBudget;
        }
        let key: Arc<str> = match self.topics.get_key_value(topic) {
            Some((k, _)) => k.clone(),
            None => topic.into(),
        };
        mine.topics.insert(key.clone());
        mine.bytes += topic.len();
        let (ids, next_id) = (&mut self.ids, &mut self.next_id);
        let entry = self.topics.entry(key.clone()).or_insert_with(|| {
            *next_id += 1;
            ids.insert(*next_id, key);
            TopicSubs {
                id: *next_id,
                subs: HashMap::new(),
            }
        });
        entry.subs.insert(session.clone(), handle);
        Subscribed::New
    }

    /// Unsubscribes; `false` if the session was not subscribed.
    pub(crate) fn unsubscribe(&mut self, topic: &str, session: &SessionId) -> bool {
        let Some(mine) = self.sessions.get_mut(session) else {
            return false;
        };
        if !mine.topics.remove(topic) {
            return false;
        }
        mine.bytes -= topic.len();
        if mine.topics.is_empty() {
            self.sessions.remove(session);
        }
        self.remove_from_topic(topic, session);
        true
    }

    fn remove_from_topic(&mut self, topic: &str, session: &SessionId) {
        if let Some(entry) = self.topics.get_mut(topic) {
            entry.subs.remove(session);
            if entry.subs.is_empty() {
                let id = entry.id;
                self.topics.remove(topic);
                self.ids.remove(&id);
            }
        }
    }

    /// Removes every subscription of a session and returns the topics it had, sorted.
    pub(crate) fn remove_session(&mut self, session: &SessionId) -> Vec<Arc<str>> {
        let mut topics: Vec<Arc<str>> = self
            .sessions
            .remove(session)
            .map(|t| t.topics.into_iter().collect())
            .unwrap_or_default();
        topics.sort();
        for topic in &topics {
            self.remove_from_topic(topic, session);
        }
        topics
    }

    pub(crate) fn is_subscribed(&self, topic: &str, session: &SessionId) -> bool {
        self.topics
            .get(topic)
            .is_some_and(|entry| entry.subs.contains_key(session))
    }

    /// The id of the subscription to `topic`, while it has subscribers.
    pub(crate) fn subscription_id(&self, topic: &str) -> Option<u64> {
        self.topics.get(topic).map(|entry| entry.id)
    }

    /// The topic of a subscription id.
    pub(crate) fn topic_of(&self, id: u64) -> Option<&Arc<str>> {
        self.ids.get(&id)
    }

    /// The sessions subscribed to `topic`.
    pub(crate) fn subscribers(&self, topic: &str) -> impl Iterator<Item = &SessionId> {
        self.topics
            .get(topic)
            .into_iter()
            .flat_map(|entry| entry.subs.keys())
    }

    /// The topics a session is subscribed to.
    pub(crate) fn topics_of(&self, session: &SessionId) -> impl Iterator<Item = &Arc<str>> {
        self.sessions
            .get(session)
            .into_iter()
            .flat_map(|t| t.topics.iter())
    }

    /// Calls `deliver` for every subscriber of `topic` that is in `eligible` (when given)
    /// and not in `exclude`. Returns how many were called.
    pub(crate) fn for_each_recipient(
        &self,
        topic: &str,
        exclude: &[SessionId],
        eligible: Option<&[SessionId]>,
        deliver: impl FnMut(&SessionId, &H),
    ) -> usize {
        match self.topics.get(topic) {
            Some(entry) => for_each_recipient(&entry.subs, exclude, eligible, deliver),
            None => 0,
        }
    }

    pub(crate) fn topic_count(&self) -> usize {
        self.topics.len()
    }

    #[cfg(test)]
    pub(crate) fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

fn for_each_recipient<H>(
    subs: &HashMap<SessionId, H>,
    exclude: &[SessionId],
    eligible: Option<&[SessionId]>,
    mut deliver: impl FnMut(&SessionId, &H),
) -> usize {
    {
        let excluded = Excluded::new(exclude);
        let mut count = 0;
        match eligible {
            Some(eligible) => {
                let mut seen = HashSet::new();
                for id in eligible {
                    if let Some((id, h)) = subs.get_key_value(id)
                        && !excluded.contains(id)
                        && seen.insert(id)
                    {
                        deliver(id, h);
                        count += 1;
                    }
                }
            }
            None => {
                for (id, h) in subs {
                    if !excluded.contains(id) {
                        deliver(id, h);
                        count += 1;
                    }
                }
            }
        }
        count
    }
}

/// An exclude list: a linear scan while short, a set when long.
enum Excluded<'a> {
    Few(&'a [SessionId]),
    Many(HashSet<&'a str>),
}

impl<'a> Excluded<'a> {
    fn new(list: &'a [SessionId]) -> Self {
        if list.len() <= 8 {
            Self::Few(list)
        } else {
            Self::Many(list.iter().map(SessionId::as_str).collect())
        }
    }

    fn contains(&self, id: &SessionId) -> bool {
        match self {
            Self::Few(list) => list.contains(id),
            Self::Many(set) => set.contains(id.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<SessionId> {
        (0..n).map(|i| SessionId::from(format!("s{i}"))).collect()
    }

    fn recipients(
        b: &Broker<usize>,
        topic: &str,
        ex: &[SessionId],
        el: Option<&[SessionId]>,
    ) -> Vec<usize> {
        let mut got = vec![];
        b.for_each_recipient(topic, ex, el, |_, h| got.push(*h));
        got.sort_unstable();
        got
    }

    #[test]
    fn subscribe_is_idempotent_and_tables_empty_out() {
        let s = ids(2);
        let mut b = Broker::default();
        assert_eq!(b.subscribe("t", &s[0], 0, None), Subscribed::New);
        assert_eq!(b.subscribe("t", &s[0], 0, None), Subscribed::Already);
        assert_eq!(b.subscribe("t", &s[1], 1, None), Subscribed::New);
        assert_eq!(b.subscribe("u", &s[0], 0, None), Subscribed::New);
        assert!(b.is_subscribed("t", &s[1]));
        assert!(!b.unsubscribe("nope", &s[0]));
        assert!(b.unsubscribe("t", &s[1]));
        assert!(!b.unsubscribe("t", &s[1]));
        assert_eq!(
            b.remove_session(&s[0]),
            vec![Arc::<str>::from("t"), Arc::from("u")]
        );
        assert_eq!(b.topic_count(), 0);
        assert_eq!(b.session_count(), 0);
        assert!(b.ids.is_empty());
    }

    #[test]
    fn a_topic_has_one_subscription_id_for_all_its_subscribers() {
        let s = ids(2);
        let mut b = Broker::default();
        b.subscribe("t", &s[0], 0, None);
        b.subscribe("t", &s[1], 1, None);
        b.subscribe("u", &s[0], 0, None);
        let (t, u) = (
            b.subscription_id("t").unwrap(),
            b.subscription_id("u").unwrap(),
        );
        assert_ne!(t, u);
        assert_eq!(b.topic_of(t).map(|t| &**t), Some("t"));
        b.unsubscribe("t", &s[0]);
        assert_eq!(b.subscription_id("t"), Some(t), "still subscribed by s1");
        b.unsubscribe("t", &s[1]);
        assert_eq!((b.subscription_id("t"), b.topic_of(t)), (None, None));
    }

    #[test]
    fn budgets_bound_entries_and_bytes() {
        let s = ids(1);
        let mut b = Broker::default();
        let budget = Some(Budget {
            entries: 2,
            bytes: 10,
        });
        assert_eq!(b.subscribe("aaaa", &s[0], 0, budget), Subscribed::New);
        assert_eq!(
            b.subscribe("bbbbbbb", &s[0], 0, budget),
            Subscribed::OverBudget
        );
        assert_eq!(b.subscribe("bbbbbb", &s[0], 0, budget), Subscribed::New);
        assert_eq!(b.subscribe("c", &s[0], 0, budget), Subscribed::OverBudget);
        assert!(b.unsubscribe("aaaa", &s[0]));
        assert_eq!(b.subscribe("c", &s[0], 0, budget), Subscribed::New);
        // A session with nothing left is forgotten, also after a refused first subscribe.
        b.remove_session(&s[0]);
        assert_eq!(
            b.subscribe("x".repeat(11).as_str(), &s[0], 0, budget),
            Subscribed::OverBudget
        );
        assert_eq!(b.session_count(), 0);
    }

    #[test]
    fn exclude_and_eligible_intersect() {
        let s = ids(20);
        let mut b = Broker::default();
        for (i, id) in s.iter().enumerate().take(4) {
            b.subscribe("t", id, i, None);
        }
        assert_eq!(recipients(&b, "t", &[], None), vec![0, 1, 2, 3]);
        assert_eq!(recipients(&b, "t", &s[..1], None), vec![1, 2, 3]);
        let eligible = [s[1].clone(), s[2].clone(), s[9].clone(), s[1].clone()];
        assert_eq!(recipients(&b, "t", &[], Some(&eligible)), vec![1, 2]);
        assert_eq!(recipients(&b, "t", &s[2..3], Some(&eligible)), vec![1]);
        assert_eq!(recipients(&b, "t", &[], Some(&[])), Vec::<usize>::new());
        // A long exclude list takes the set path.
        assert_eq!(recipients(&b, "t", &s[1..15], None), vec![0]);
        assert_eq!(recipients(&b, "nobody", &[], None), Vec::<usize>::new());
    }
}
