//! The subscription tables: which sessions are subscribed to which topics.
//!
//! Generic over `H`, the handle the transport uses to reach a session (its outbound
//! queue), so that publishing walks one table and needs no second lookup per recipient.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use super::{
    SessionId,
    matching::{MatchIndex, MatchPolicy},
};

/// A subscription's key: its match policy and URI (a topic or a pattern).
pub(crate) type SubKey = (MatchPolicy, Arc<str>);

#[derive(Debug)]
pub(crate) struct Broker<H> {
    subscriptions: MatchIndex<Subscription<H>>,
    sessions: HashMap<SessionId, SessionTopics>,
    /// Subscription id → key, for WAMP v2's UNSUBSCRIBE.
    ids: HashMap<u64, SubKey>,
    next_id: u64,
}

/// One subscription (a topic or pattern with its policy): its id, the same for every
/// subscriber as WAMP v2 asks, and its subscribers.
#[derive(Debug)]
pub(crate) struct Subscription<H> {
    id: u64,
    subs: HashMap<SessionId, H>,
    /// When it was created, in milliseconds since the Unix epoch (the meta API's `created`).
    created: u64,
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What the meta API tells of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubscriptionInfo {
    pub(crate) id: u64,
    pub(crate) policy: MatchPolicy,
    pub(crate) uri: Arc<str>,
    pub(crate) created: u64,
    pub(crate) subscribers: Vec<SessionId>,
}

impl<H> Subscription<H> {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Calls `deliver` for every subscriber that `recipients` admits. Returns how many were
    /// called.
    pub(crate) fn for_each_recipient(
        &self,
        recipients: &Recipients<'_>,
        mut deliver: impl FnMut(&SessionId, &H),
    ) -> usize {
        let mut count = 0;
        match &recipients.eligible {
            // The shorter side is walked: the eligible list, or the subscribers.
            Some(eligible) if eligible.len() < self.subs.len() => {
                for id in eligible {
                    if let Some((id, h)) = self.subs.get_key_value(*id)
                        && !recipients.excluded.contains(id.as_str())
                    {
                        deliver(id, h);
                        count += 1;
                    }
                }
            }
            eligible => {
                for (id, h) in &self.subs {
                    if eligible.as_ref().is_none_or(|e| e.contains(id.as_str()))
                        && !recipients.excluded.contains(id.as_str())
                    {
                        deliver(id, h);
                        count += 1;
                    }
                }
            }
        }
        count
    }
}

#[derive(Debug, Default)]
struct SessionTopics {
    keys: HashSet<SubKey>,
    bytes: usize,
    /// How many of `keys` are prefix or wildcard patterns.
    patterns: usize,
}

/// A subscription a session lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Removed {
    pub(crate) policy: MatchPolicy,
    pub(crate) uri: Arc<str>,
    pub(crate) id: u64,
    /// It had no other subscriber: it is gone.
    pub(crate) deleted: bool,
}

/// A session's budget of subscriptions: entries, bytes of topic URIs, and how many of the
/// entries may be patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    pub(crate) entries: usize,
    pub(crate) bytes: usize,
    pub(crate) patterns: usize,
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
            subscriptions: MatchIndex::default(),
            sessions: HashMap::new(),
            ids: HashMap::new(),
            next_id: 0,
        }
    }
}

impl<H> Broker<H> {
    /// Subscribes to `uri` under `policy` within `budget` (none: no limit).
    pub(crate) fn subscribe(
        &mut self,
        policy: MatchPolicy,
        uri: &str,
        session: &SessionId,
        handle: H,
        budget: Option<Budget>,
    ) -> Subscribed {
        let key: Arc<str> = match self.subscriptions.key(policy, uri) {
            Some(k) => k.clone(),
            None => uri.into(),
        };
        let mine = self.sessions.entry(session.clone()).or_default();
        if mine.keys.contains(&(policy, key.clone())) {
            return Subscribed::Already;
        }
        let pattern = policy != MatchPolicy::Exact;
        if let Some(budget) = budget
            && (mine.keys.len() >= budget.entries
                || mine.bytes + uri.len() > budget.bytes
                || (pattern && mine.patterns >= budget.patterns))
        {
            if mine.keys.is_empty() {
                self.sessions.remove(session);
            }
            return Subscribed::OverBudget;
        }
        mine.keys.insert((policy, key.clone()));
        mine.bytes += uri.len();
        mine.patterns += usize::from(pattern);
        if self.subscriptions.get(policy, uri).is_none() {
            self.next_id += 1;
            self.ids.insert(self.next_id, (policy, key.clone()));
            self.subscriptions.insert(
                policy,
                key,
                Subscription {
                    id: self.next_id,
                    subs: HashMap::new(),
                    created: now_ms(),
                },
            );
        }
        if let Some(entry) = self.subscriptions.get_mut(policy, uri) {
            entry.subs.insert(session.clone(), handle);
        }
        Subscribed::New
    }

    /// Unsubscribes; `false` if the session was not subscribed.
    pub(crate) fn unsubscribe(
        &mut self,
        policy: MatchPolicy,
        uri: &str,
        session: &SessionId,
    ) -> bool {
        let Some(mine) = self.sessions.get_mut(session) else {
            return false;
        };
        let Some(key) = self.subscriptions.key(policy, uri).cloned() else {
            return false;
        };
        if !mine.keys.remove(&(policy, key)) {
            return false;
        }
        mine.bytes -= uri.len();
        mine.patterns -= usize::from(policy != MatchPolicy::Exact);
        if mine.keys.is_empty() {
            self.sessions.remove(session);
        }
        self.remove_subscriber(policy, uri, session);
        true
    }

    fn remove_subscriber(&mut self, policy: MatchPolicy, uri: &str, session: &SessionId) {
        if let Some(entry) = self.subscriptions.get_mut(policy, uri) {
            entry.subs.remove(session);
            if entry.subs.is_empty() {
                let id = entry.id;
                self.subscriptions.remove(policy, uri);
                self.ids.remove(&id);
            }
        }
    }

    /// Removes every subscription of a session: each one's key, id and whether it went
    /// with its last subscriber, sorted by URI.
    pub(crate) fn remove_session(&mut self, session: &SessionId) -> Vec<Removed> {
        let keys: Vec<SubKey> = self
            .sessions
            .remove(session)
            .map(|t| t.keys.into_iter().collect())
            .unwrap_or_default();
        let mut removed = Vec::with_capacity(keys.len());
        for (policy, uri) in keys {
            let Some(id) = self.subscription_id(policy, &uri) else {
                continue;
            };
            self.remove_subscriber(policy, &uri, session);
            let deleted = self.subscription_id(policy, &uri).is_none();
            removed.push(Removed {
                policy,
                uri,
                id,
                deleted,
            });
        }
        removed.sort_by(|a, b| (&a.uri, a.policy).cmp(&(&b.uri, b.policy)));
        removed
    }

    pub(crate) fn is_subscribed(
        &self,
        policy: MatchPolicy,
        uri: &str,
        session: &SessionId,
    ) -> bool {
        self.subscriptions
            .get(policy, uri)
            .is_some_and(|entry| entry.subs.contains_key(session))
    }

    /// The id of the subscription to `uri` under `policy`, while it has subscribers.
    pub(crate) fn subscription_id(&self, policy: MatchPolicy, uri: &str) -> Option<u64> {
        self.subscriptions.get(policy, uri).map(|entry| entry.id)
    }

    /// The policy and URI of a subscription id.
    pub(crate) fn key_of(&self, id: u64) -> Option<&SubKey> {
        self.ids.get(&id)
    }

    /// The sessions subscribed to exactly `topic`.
    pub(crate) fn subscribers(&self, topic: &str) -> impl Iterator<Item = &SessionId> {
        self.subscriptions
            .get(MatchPolicy::Exact, topic)
            .into_iter()
            .flat_map(|entry| entry.subs.keys())
    }

    /// The topics a session is subscribed to exactly (not its patterns).
    pub(crate) fn topics_of(&self, session: &SessionId) -> impl Iterator<Item = &Arc<str>> {
        self.sessions
            .get(session)
            .into_iter()
            .flat_map(|t| t.keys.iter())
            .filter(|(policy, _)| *policy == MatchPolicy::Exact)
            .map(|(_, uri)| uri)
    }

    /// Calls `f` with every subscription that matches `topic`: the exact one, then prefix
    /// and wildcard ones.
    pub(crate) fn for_each_match(
        &self,
        topic: &str,
        mut f: impl FnMut(MatchPolicy, &Subscription<H>),
    ) {
        self.subscriptions
            .for_each_match(topic, |policy, _, sub| f(policy, sub));
    }

    /// Every subscription: its id, policy and URI.
    pub(crate) fn list(&self) -> Vec<(u64, MatchPolicy, Arc<str>)> {
        self.subscriptions
            .iter()
            .map(|(policy, uri, sub)| (sub.id, policy, uri.clone()))
            .collect()
    }

    /// What the meta API tells of subscription `id`.
    pub(crate) fn info(&self, id: u64) -> Option<SubscriptionInfo> {
        let (policy, uri) = self.ids.get(&id)?;
        let sub = self.subscriptions.get(*policy, uri)?;
        Some(SubscriptionInfo {
            id,
            policy: *policy,
            uri: uri.clone(),
            created: sub.created,
            subscribers: sub.subs.keys().cloned().collect(),
        })
    }

    /// The ids of every subscription that matches `topic`.
    pub(crate) fn matching(&self, topic: &str) -> Vec<u64> {
        let mut ids = Vec::new();
        self.for_each_match(topic, |_, sub| ids.push(sub.id));
        ids
    }

    /// How many topics have exact subscriptions.
    pub(crate) fn topic_count(&self) -> usize {
        self.subscriptions.len_of(MatchPolicy::Exact)
    }

    #[cfg(test)]
    pub(crate) fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

/// Who may receive a publication by session id: its exclude and eligible lists made into
/// sets once, however many subscriptions it reaches.
#[derive(Debug)]
pub(crate) struct Recipients<'a> {
    excluded: Excluded<'a>,
    eligible: Option<HashSet<&'a str>>,
}

impl<'a> Recipients<'a> {
    pub(crate) fn new(exclude: &'a [SessionId], eligible: Option<&'a [SessionId]>) -> Self {
        Self {
            excluded: Excluded::new(exclude),
            eligible: eligible.map(|e| e.iter().map(SessionId::as_str).collect()),
        }
    }
}

/// An exclude list: a linear scan while short (`exclude_me` is one entry), a set when long.
#[derive(Debug)]
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

    fn contains(&self, id: &str) -> bool {
        match self {
            Self::Few(list) => list.iter().any(|x| same_id(x.as_str(), id)),
            Self::Many(set) => set.contains(id),
        }
    }
}

/// Whether two session ids are one. Asked for every subscriber of a publication that
/// excludes someone (a v2 publisher excludes itself by default), and nearly always no:
/// random ids differ in their first eight bytes, compared as one word before the rest.
fn same_id(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.as_bytes().first_chunk::<8>() == b.as_bytes().first_chunk::<8>()
        && a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<SessionId> {
        (0..n).map(|i| SessionId::from(format!("s{i}"))).collect()
    }

    const E: MatchPolicy = MatchPolicy::Exact;

    #[test]
    fn session_ids_are_the_same_only_when_all_their_bytes_are() {
        for (a, b) in [
            ("1234567890123456", "1234567890123456"),
            ("1234567890123456", "1234567890123457"),
            ("1234567890123456", "2234567890123456"),
            ("12345678", "1234567"),
            ("abc", "abc"),
            ("abc", "abd"),
            ("", ""),
        ] {
            assert_eq!(same_id(a, b), a == b, "{a} {b}");
        }
    }

    fn recipients(
        b: &Broker<usize>,
        topic: &str,
        ex: &[SessionId],
        el: Option<&[SessionId]>,
    ) -> Vec<usize> {
        let mut got = vec![];
        let recipients = Recipients::new(ex, el);
        b.for_each_match(topic, |_, sub| {
            sub.for_each_recipient(&recipients, |_, h| got.push(*h));
        });
        got.sort_unstable();
        got
    }

    #[test]
    fn subscribe_is_idempotent_and_tables_empty_out() {
        let s = ids(2);
        let mut b = Broker::default();
        assert_eq!(b.subscribe(E, "t", &s[0], 0, None), Subscribed::New);
        assert_eq!(b.subscribe(E, "t", &s[0], 0, None), Subscribed::Already);
        assert_eq!(b.subscribe(E, "t", &s[1], 1, None), Subscribed::New);
        assert_eq!(b.subscribe(E, "u", &s[0], 0, None), Subscribed::New);
        assert!(b.is_subscribed(E, "t", &s[1]));
        assert!(!b.unsubscribe(E, "nope", &s[0]));
        assert!(b.unsubscribe(E, "t", &s[1]));
        assert!(!b.unsubscribe(E, "t", &s[1]));
        let removed = b.remove_session(&s[0]);
        let uris: Vec<&str> = removed.iter().map(|r| &*r.uri).collect();
        assert_eq!(uris, vec!["t", "u"]);
        assert!(removed.iter().all(|r| r.deleted));
        assert_eq!(b.topic_count(), 0);
        assert_eq!(b.session_count(), 0);
        assert!(b.ids.is_empty());
    }

    #[test]
    fn a_topic_has_one_subscription_id_for_all_its_subscribers() {
        let s = ids(2);
        let mut b = Broker::default();
        b.subscribe(E, "t", &s[0], 0, None);
        b.subscribe(E, "t", &s[1], 1, None);
        b.subscribe(E, "u", &s[0], 0, None);
        let (t, u) = (
            b.subscription_id(E, "t").unwrap(),
            b.subscription_id(E, "u").unwrap(),
        );
        assert_ne!(t, u);
        assert_eq!(b.key_of(t).map(|k| &*k.1), Some("t"));
        b.unsubscribe(E, "t", &s[0]);
        assert_eq!(b.subscription_id(E, "t"), Some(t), "still subscribed by s1");
        b.unsubscribe(E, "t", &s[1]);
        assert_eq!((b.subscription_id(E, "t"), b.key_of(t)), (None, None));
    }

    #[test]
    fn budgets_bound_entries_and_bytes() {
        let s = ids(1);
        let mut b = Broker::default();
        let budget = Some(Budget {
            entries: 2,
            bytes: 10,
            patterns: 1,
        });
        assert_eq!(b.subscribe(E, "aaaa", &s[0], 0, budget), Subscribed::New);
        assert_eq!(
            b.subscribe(E, "bbbbbbb", &s[0], 0, budget),
            Subscribed::OverBudget
        );
        assert_eq!(b.subscribe(E, "bbbbbb", &s[0], 0, budget), Subscribed::New);
        assert_eq!(
            b.subscribe(E, "c", &s[0], 0, budget),
            Subscribed::OverBudget
        );
        assert!(b.unsubscribe(E, "aaaa", &s[0]));
        assert_eq!(b.subscribe(E, "c", &s[0], 0, budget), Subscribed::New);
        // A session with nothing left is forgotten, also after a refused first subscribe.
        b.remove_session(&s[0]);
        assert_eq!(
            b.subscribe(E, "x".repeat(11).as_str(), &s[0], 0, budget),
            Subscribed::OverBudget
        );
        assert_eq!(b.session_count(), 0);
    }

    #[test]
    fn exclude_and_eligible_intersect() {
        let s = ids(20);
        let mut b = Broker::default();
        for (i, id) in s.iter().enumerate().take(4) {
            b.subscribe(E, "t", id, i, None);
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

    #[test]
    fn every_matching_subscription_has_its_own_id_and_the_same_session_gets_each() {
        let s = ids(2);
        let mut b = Broker::default();
        b.subscribe(E, "a.b.c", &s[0], 0, None);
        b.subscribe(MatchPolicy::Prefix, "a.", &s[0], 1, None);
        b.subscribe(MatchPolicy::Prefix, "a.", &s[1], 2, None);
        b.subscribe(MatchPolicy::Wildcard, "a..c", &s[0], 3, None);
        // The same URI under two policies is two subscriptions.
        b.subscribe(MatchPolicy::Prefix, "a.b.c", &s[1], 4, None);
        let mut seen = vec![];
        b.for_each_match("a.b.c", |policy, sub| seen.push((policy, sub.id())));
        assert_eq!(seen.len(), 4);
        let ids: HashSet<u64> = seen.iter().map(|(_, id)| *id).collect();
        assert_eq!(ids.len(), 4, "one id per subscription");
        assert_eq!(recipients(&b, "a.b.c", &[], None), vec![0, 1, 2, 3, 4]);
        assert_eq!(recipients(&b, "a.x.c", &[], None), vec![1, 2, 3]);
        assert_eq!(recipients(&b, "a.x.y", &[], None), vec![1, 2]);
        assert_eq!(b.topic_count(), 1);
        assert_eq!(b.topics_of(&s[0]).count(), 1, "patterns are not topics");
        assert!(b.unsubscribe(MatchPolicy::Prefix, "a.", &s[0]));
        assert!(!b.unsubscribe(E, "a.", &s[0]));
        assert_eq!(recipients(&b, "a.x.y", &[], None), vec![2]);
        // Patterns and topics, each with whether it went with its last subscriber.
        let removed = b.remove_session(&s[0]);
        assert_eq!(removed.len(), 2);
        assert!(removed.iter().all(|r| r.deleted), "{removed:?}");
        assert_eq!(b.remove_session(&s[1]).len(), 2);
        assert!(b.ids.is_empty() && b.subscriptions.is_empty());
    }
}
