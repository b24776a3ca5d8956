//! WAMP v2 match policies (`exact`, `prefix`, `wildcard`) and an index that finds every
//! pattern a topic matches without looking at every pattern.
//!
//! - `exact`: the URI itself.
//! - `prefix`: a plain string prefix: `com.myapp` matches `com.myapp`, `com.myapp.x` and
//!   `com.myapp2` (as the spec and AutobahnJS's tests have it).
//! - `wildcard`: an empty component matches exactly one non-empty component, and the
//!   component counts must be equal: `com.myapp..update` matches `com.myapp.a.update`, not
//!   `com.myapp.a.b.update`.
//!
//! Lookup cost: one hash lookup for the exact entry; one walk of the topic's bytes down a
//! trie of the prefixes (time in the topic's length, whatever the number of prefixes), and a
//! hash lookup per prefix found; and one hash lookup per distinct wildcard *shape*
//! (component count and which components are wildcards) with that topic's component count.
//! Wildcard patterns of the same shape cost nothing more, however many there are; distinct
//! shapes are bounded by the patterns there are (which the router budgets per session).
//!
//! ```
//! use tower_wamp::core::matching::MatchPolicy;
//!
//! assert!(MatchPolicy::Prefix.matches("com.myapp", "com.myapp2.x"));
//! assert!(MatchPolicy::Wildcard.matches("com..update", "com.a.update"));
//! assert!(!MatchPolicy::Wildcard.matches("com..update", "com.a.b.update"));
//! assert_eq!(MatchPolicy::parse(Some("wildcard")), Some(MatchPolicy::Wildcard));
//! ```

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

/// How a subscription (or registration) URI matches topics (or procedures).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
#[non_exhaustive]
pub enum MatchPolicy {
    /// The URI itself (the default).
    #[default]
    Exact,
    /// Every URI that starts with it.
    Prefix,
    /// Empty components match any one component.
    Wildcard,
}

/// The most components a wildcard pattern may have (its shape is a 64-bit mask).
pub const MAX_WILDCARD_COMPONENTS: usize = 64;

impl MatchPolicy {
    /// The policy named by `Options.match` (absent: exact); `None` for an unknown name.
    #[must_use]
    pub fn parse(name: Option<&str>) -> Option<Self> {
        match name {
            None | Some("exact") => Some(Self::Exact),
            Some("prefix") => Some(Self::Prefix),
            Some("wildcard") => Some(Self::Wildcard),
            Some(_) => None,
        }
    }

    /// The spec's name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Prefix => "prefix",
            Self::Wildcard => "wildcard",
        }
    }

    /// Whether `uri` is a valid pattern under this policy: no `#` or whitespace anywhere;
    /// exact: no empty component; prefix: only the last may be empty (`com.myapp.`);
    /// wildcard: any may be empty, at most [`MAX_WILDCARD_COMPONENTS`], not all of them.
    #[must_use]
    pub fn valid(self, uri: &str) -> bool {
        if uri.is_empty() || uri.chars().any(|c| c == '#' || c.is_whitespace()) {
            return false;
        }
        let mut components = uri.split('.');
        match self {
            Self::Exact => components.all(|c| !c.is_empty()),
            Self::Prefix => {
                let n = uri.split('.').count();
                components.take(n - 1).all(|c| !c.is_empty())
            }
            Self::Wildcard => {
                let n = uri.split('.').count();
                n <= MAX_WILDCARD_COMPONENTS && components.any(|c| !c.is_empty())
            }
        }
    }

    /// Whether `pattern` under this policy matches `topic`.
    #[must_use]
    pub fn matches(self, pattern: &str, topic: &str) -> bool {
        match self {
            Self::Exact => pattern == topic,
            Self::Prefix => topic.starts_with(pattern),
            Self::Wildcard => {
                let mut p = pattern.split('.');
                let mut t = topic.split('.');
                loop {
                    match (p.next(), t.next()) {
                        (None, None) => return true,
                        (Some(pc), Some(tc)) if !tc.is_empty() && (pc.is_empty() || pc == tc) => {}
                        _ => return false,
                    }
                }
            }
        }
    }
}

/// The shape of a wildcard pattern: its component count and which components are empty.
type Shape = (usize, u64);

fn shape(pattern: &str) -> Shape {
    let mut mask = 0u64;
    let mut n = 0;
    for (i, c) in pattern.split('.').enumerate() {
        if c.is_empty() && i < MAX_WILDCARD_COMPONENTS {
            mask |= 1 << i;
        }
        n = i + 1;
    }
    (n, mask)
}

/// The prefixes as a byte trie: a walk down a topic's bytes finds every prefix of it.
/// Removal only unmarks a node; once as many have been removed as are left, the trie is
/// built anew from the live prefixes, so churn cannot grow it without bound.
#[derive(Debug, Clone)]
struct PrefixTrie {
    nodes: Vec<TrieNode>,
    live: usize,
    removed: usize,
}

#[derive(Debug, Clone, Default)]
struct TrieNode {
    /// Sorted by byte, binary-searched.
    children: Vec<(u8, u32)>,
    terminal: bool,
}

impl Default for PrefixTrie {
    fn default() -> Self {
        Self {
            nodes: vec![TrieNode::default()],
            live: 0,
            removed: 0,
        }
    }
}

impl PrefixTrie {
    fn insert(&mut self, prefix: &str) {
        let mut node = 0usize;
        for &b in prefix.as_bytes() {
            node = match self.nodes[node].children.binary_search_by_key(&b, |c| c.0) {
                Ok(i) => self.nodes[node].children[i].1 as usize,
                Err(i) => {
                    let next = self.nodes.len();
                    self.nodes.push(TrieNode::default());
                    let id = u32::try_from(next).expect("fewer than 2^32 trie nodes");
                    self.nodes[node].children.insert(i, (b, id));
                    next
                }
            };
        }
        if !self.nodes[node].terminal {
            self.nodes[node].terminal = true;
            self.live += 1;
        }
    }

    /// Unmarks `prefix`; `true` when the trie should be rebuilt.
    fn remove(&mut self, prefix: &str) -> bool {
        let mut node = 0usize;
        for &b in prefix.as_bytes() {
            match self.nodes[node].children.binary_search_by_key(&b, |c| c.0) {
                Ok(i) => node = self.nodes[node].children[i].1 as usize,
                Err(_) => return false,
            }
        }
        if self.nodes[node].terminal {
            self.nodes[node].terminal = false;
            self.live -= 1;
            self.removed += 1;
        }
        self.removed > 64 && self.removed > self.live
    }

    /// Calls `f` with the length of every prefix of `topic` in the trie, shortest first.
    fn for_each_prefix(&self, topic: &str, mut f: impl FnMut(usize)) {
        let mut node = 0usize;
        if self.nodes[0].terminal {
            f(0);
        }
        for (depth, &b) in topic.as_bytes().iter().enumerate() {
            let children = &self.nodes[node].children;
            match children.binary_search_by_key(&b, |c| c.0) {
                Ok(i) => node = children[i].1 as usize,
                Err(_) => return,
            }
            if self.nodes[node].terminal {
                f(depth + 1);
            }
        }
    }
}

/// Values keyed by (policy, pattern), found by the topics their patterns match.
#[derive(Debug, Clone)]
pub struct MatchIndex<V> {
    /// One map per policy, in the order of [`MatchPolicy`]'s variants (looked up by `&str`,
    /// so a lookup allocates nothing).
    maps: [HashMap<Arc<str>, V>; 3],
    prefixes: PrefixTrie,
    /// How many wildcard patterns there are of each shape.
    shapes: BTreeMap<Shape, usize>,
}

impl<V> Default for MatchIndex<V> {
    fn default() -> Self {
        Self {
            maps: Default::default(),
            prefixes: PrefixTrie::default(),
            shapes: BTreeMap::new(),
        }
    }
}

fn count_up<K: Ord>(map: &mut BTreeMap<K, usize>, key: K) {
    *map.entry(key).or_default() += 1;
}

fn count_down<K: Ord>(map: &mut BTreeMap<K, usize>, key: K) {
    if let std::collections::btree_map::Entry::Occupied(mut e) = map.entry(key) {
        *e.get_mut() -= 1;
        if *e.get() == 0 {
            e.remove();
        }
    }
}

const POLICIES: [MatchPolicy; 3] = [
    MatchPolicy::Exact,
    MatchPolicy::Prefix,
    MatchPolicy::Wildcard,
];

impl<V> MatchIndex<V> {
    fn map(&self, policy: MatchPolicy) -> &HashMap<Arc<str>, V> {
        &self.maps[policy as usize]
    }

    /// The entry for exactly this policy and pattern.
    #[must_use]
    pub fn get(&self, policy: MatchPolicy, pattern: &str) -> Option<&V> {
        self.map(policy).get(pattern)
    }

    /// The entry for exactly this policy and pattern, mutably.
    pub fn get_mut(&mut self, policy: MatchPolicy, pattern: &str) -> Option<&mut V> {
        self.maps[policy as usize].get_mut(pattern)
    }

    /// The stored key for this policy and pattern (to share its allocation).
    #[must_use]
    pub fn key(&self, policy: MatchPolicy, pattern: &str) -> Option<&Arc<str>> {
        self.map(policy).get_key_value(pattern).map(|(k, _)| k)
    }

    /// Inserts or replaces the entry for `policy` and `pattern`.
    pub fn insert(&mut self, policy: MatchPolicy, pattern: Arc<str>, value: V) -> Option<V> {
        match policy {
            MatchPolicy::Exact => {}
            MatchPolicy::Prefix => self.prefixes.insert(&pattern),
            MatchPolicy::Wildcard if !self.map(policy).contains_key(&pattern) => {
                count_up(&mut self.shapes, shape(&pattern));
            }
            MatchPolicy::Wildcard => {}
        }
        self.maps[policy as usize].insert(pattern, value)
    }

    /// Removes the entry for `policy` and `pattern`.
    pub fn remove(&mut self, policy: MatchPolicy, pattern: &str) -> Option<V> {
        let old = self.maps[policy as usize].remove(pattern)?;
        match policy {
            MatchPolicy::Exact => {}
            MatchPolicy::Prefix => {
                if self.prefixes.remove(pattern) {
                    let mut fresh = PrefixTrie::default();
                    for p in self.maps[MatchPolicy::Prefix as usize].keys() {
                        fresh.insert(p);
                    }
                    self.prefixes = fresh;
                }
            }
            MatchPolicy::Wildcard => count_down(&mut self.shapes, shape(pattern)),
        }
        Some(old)
    }

    /// How many entries there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.maps.iter().map(HashMap::len).sum()
    }

    /// How many entries there are under `policy`.
    #[must_use]
    pub fn len_of(&self, policy: MatchPolicy) -> usize {
        self.map(policy).len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.maps.iter().all(HashMap::is_empty)
    }

    /// Every entry: policy, pattern, value.
    pub fn iter(&self) -> impl Iterator<Item = (MatchPolicy, &Arc<str>, &V)> {
        POLICIES
            .iter()
            .flat_map(move |&p| self.map(p).iter().map(move |(k, v)| (p, k, v)))
    }

    /// Calls `f` for every entry whose pattern matches `topic`: the exact one, then prefixes
    /// from the shortest, then wildcards.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(MatchPolicy, &Arc<str>, &V)) {
        let mut visit = |policy: MatchPolicy, pattern: &str| {
            if let Some((k, v)) = self.map(policy).get_key_value(pattern) {
                f(policy, k, v);
            }
        };
        visit(MatchPolicy::Exact, topic);
        // A valid pattern ends on a character boundary; a trie path that does not is no
        // pattern's.
        self.prefixes.for_each_prefix(topic, |len| {
            if topic.is_char_boundary(len) {
                visit(MatchPolicy::Prefix, &topic[..len]);
            }
        });
        self.for_each_wildcard(topic, |k, v| f(MatchPolicy::Wildcard, k, v));
    }

    /// Calls `f` for every wildcard entry that matches `topic`.
    fn for_each_wildcard<'a>(&'a self, topic: &str, mut f: impl FnMut(&'a Arc<str>, &'a V)) {
        if self.shapes.is_empty() {
            return;
        }
        let n = topic.split('.').count();
        if n > MAX_WILDCARD_COMPONENTS || topic.split('.').any(str::is_empty) {
            return;
        }
        // Only with wildcard patterns of this component count: the key of each shape.
        let mut key = String::new();
        for &(_, mask) in self.shapes.range((n, 0)..=(n, u64::MAX)).map(|(s, _)| s) {
            key.clear();
            for (i, c) in topic.split('.').enumerate() {
                if i > 0 {
                    key.push('.');
                }
                if mask & (1 << i) == 0 {
                    key.push_str(c);
                }
            }
            if let Some((k, v)) = self.map(MatchPolicy::Wildcard).get_key_value(key.as_str()) {
                f(k, v);
            }
        }
    }

    /// The one entry a call of `topic` goes to, as the spec routes pattern-based
    /// registrations: the exact one; else the longest matching prefix; else the wildcard
    /// pattern whose literal portions (the runs of components between wildcards) are
    /// longest, compared portion by portion from the left.
    ///
    /// ```
    /// use tower_wamp::core::matching::{MatchIndex, MatchPolicy};
    /// let mut index = MatchIndex::default();
    /// index.insert(MatchPolicy::Wildcard, "a1.b2..d4.e5".into(), 4);
    /// index.insert(MatchPolicy::Wildcard, "a1.b2.c3..e5".into(), 5);
    /// assert_eq!(index.best_match("a1.b2.c3.d4.e5").map(|(_, _, v)| *v), Some(5));
    /// ```
    #[must_use]
    pub fn best_match(&self, topic: &str) -> Option<(MatchPolicy, &Arc<str>, &V)> {
        self.best_match_where(topic, |_, _, _| true)
    }

    /// [`best_match`](Self::best_match) among the entries `accept` takes: the best one it
    /// accepts, in the same order of precedence.
    pub fn best_match_where(
        &self,
        topic: &str,
        mut accept: impl FnMut(MatchPolicy, &Arc<str>, &V) -> bool,
    ) -> Option<(MatchPolicy, &Arc<str>, &V)> {
        if let Some((k, v)) = self.map(MatchPolicy::Exact).get_key_value(topic)
            && accept(MatchPolicy::Exact, k, v)
        {
            return Some((MatchPolicy::Exact, k, v));
        }
        let mut lengths: Vec<usize> = Vec::new();
        self.prefixes.for_each_prefix(topic, |len| {
            if topic.is_char_boundary(len) {
                lengths.push(len);
            }
        });
        for len in lengths.into_iter().rev() {
            if let Some((k, v)) = self.map(MatchPolicy::Prefix).get_key_value(&topic[..len])
                && accept(MatchPolicy::Prefix, k, v)
            {
                return Some((MatchPolicy::Prefix, k, v));
            }
        }
        let mut ranked: Vec<(Vec<usize>, &Arc<str>, &V)> = Vec::new();
        self.for_each_wildcard(topic, |k, v| ranked.push((portions(k), k, v)));
        ranked.sort_by(|a, b| b.0.cmp(&a.0));
        ranked
            .into_iter()
            .find(|(_, k, v)| accept(MatchPolicy::Wildcard, k, v))
            .map(|(_, k, v)| (MatchPolicy::Wildcard, k, v))
    }
}

/// How well a pattern matches a URI it matches, as [`MatchIndex::best_match`] ranks them:
/// of two patterns that match the same URI, the greater precedence wins (an exact one over
/// every prefix, a longer prefix over a shorter one and over every wildcard, a wildcard by
/// its literal portions from the left). Equal precedences for one URI mean the same pattern.
///
/// ```
/// use tower_wamp::core::matching::{MatchPolicy, precedence};
/// assert!(precedence(MatchPolicy::Exact, "a.b.c") > precedence(MatchPolicy::Prefix, "a.b"));
/// assert!(precedence(MatchPolicy::Prefix, "a.b") > precedence(MatchPolicy::Prefix, "a"));
/// assert!(precedence(MatchPolicy::Prefix, "a") > precedence(MatchPolicy::Wildcard, "a.b."));
/// assert!(precedence(MatchPolicy::Wildcard, "a.b.") > precedence(MatchPolicy::Wildcard, "a..c"));
/// ```
#[must_use]
pub fn precedence(policy: MatchPolicy, pattern: &str) -> Precedence {
    match policy {
        MatchPolicy::Exact => Precedence(2, 0, Vec::new()),
        MatchPolicy::Prefix => Precedence(1, pattern.len(), Vec::new()),
        _ => Precedence(0, 0, portions(pattern)),
    }
}

/// The rank of a matching pattern: see [`precedence`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Precedence(u8, usize, Vec<usize>);

/// The lengths (in components) of a wildcard pattern's literal portions, one before each
/// wildcard and one after the last: `a1.b2..d4.e5` is `[2, 2]`, `..c3` is `[0, 0, 1]`.
fn portions(pattern: &str) -> Vec<usize> {
    let mut runs = Vec::new();
    let mut run = 0;
    for c in pattern.split('.') {
        if c.is_empty() {
            runs.push(run);
            run = 0;
        } else {
            run += 1;
        }
    }
    runs.push(run);
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn validity_by_policy() {
        use MatchPolicy::*;
        for (policy, uri, ok) in [
            (Exact, "com.myapp.x", true),
            (Exact, "com.myapp.", false),
            (Exact, "com..x", false),
            (Prefix, "com.myapp.", true),
            (Prefix, "com.myapp", true),
            (Prefix, "com..x", false),
            (Prefix, "", false),
            (Wildcard, "com..x", true),
            (Wildcard, ".x", true),
            (Wildcard, "..", false),
            (Wildcard, "a#b..c", false),
            (Wildcard, "a b..c", false),
        ] {
            assert_eq!(policy.valid(uri), ok, "{policy:?} {uri:?}");
        }
        let long = vec!["a"; MAX_WILDCARD_COMPONENTS + 1].join(".");
        assert!(!Wildcard.valid(&long));
    }

    /// The spec's and AutobahnJS's examples.
    #[test]
    fn matching_as_the_spec_has_it() {
        use MatchPolicy::*;
        for (policy, pattern, topic, hit) in [
            (
                Prefix,
                "com.myapp.topic.emergency",
                "com.myapp.topic.emergency",
                true,
            ),
            (
                Prefix,
                "com.myapp.topic.emergency",
                "com.myapp.topic.emergency-low",
                true,
            ),
            (
                Prefix,
                "com.myapp.topic.emergency",
                "com.myapp.topic.emergency.11",
                true,
            ),
            (
                Prefix,
                "com.myapp.topic.emergency",
                "com.myapp.topic.emerg",
                false,
            ),
            (Prefix, "com.myapp", "com.myapp2.foobar", true),
            (
                Wildcard,
                "com.myapp..userevent",
                "com.myapp.foo.userevent",
                true,
            ),
            (
                Wildcard,
                "com.myapp..userevent",
                "com.myapp.foo.userevent.bar",
                false,
            ),
            (
                Wildcard,
                "com.myapp..userevent",
                "com.myapp.userevent",
                false,
            ),
            (
                Wildcard,
                "com.myapp..userevent",
                "com.myapp..userevent",
                false,
            ),
            (Wildcard, "..c", "a.b.c", true),
        ] {
            assert_eq!(
                policy.matches(pattern, topic),
                hit,
                "{policy:?} {pattern} {topic}"
            );
        }
    }

    /// The spec's worked examples of routing a call among pattern-based registrations.
    #[test]
    fn the_best_match_as_the_spec_routes_calls() {
        use MatchPolicy::*;
        let mut index = MatchIndex::default();
        for (policy, uri, n) in [
            (Exact, "a1.b2.c3.d4.e55", 1),
            (Prefix, "a1.b2.c3", 2),
            (Prefix, "a1.b2.c3.d4", 3),
            (Wildcard, "a1.b2..d4.e5", 4),
            (Wildcard, "a1.b2.c3..e5", 5),
            (Wildcard, "a1.b2..d4.e5..g7", 6),
            (Wildcard, "a1.b2..d4..f6.g7", 7),
        ] {
            index.insert(policy, uri.into(), n);
        }
        for (call, want) in [
            ("a1.b2.c3.d4.e55", Some(1)),
            ("a1.b2.c3.d98.e74", Some(2)),
            ("a1.b2.c3.d4.e325", Some(3)),
            ("a1.b2.c55.d4.e5", Some(4)),
            // The spec's example says RPC 5 ("no prefix match"), but prefixes 2 and 3 are
            // prefixes of this URI under its own rule, which checks prefixes before
            // wildcards: the rule wins, and RPC 5's tie-break is checked below.
            ("a1.b2.c3.d4.e5", Some(3)),
            ("a1.b2.c88.d4.e5.f6.g7", Some(6)),
            ("a2.b2.c2.d2.e2", None),
        ] {
            assert_eq!(index.best_match(call).map(|(_, _, v)| *v), want, "{call}");
        }
        // Without the prefixes, the spec's wildcard tie-break: RPC 5 over RPC 4.
        index.remove(Prefix, "a1.b2.c3");
        index.remove(Prefix, "a1.b2.c3.d4");
        assert_eq!(
            index.best_match("a1.b2.c3.d4.e5").map(|(_, _, v)| *v),
            Some(5)
        );
        assert_eq!(portions("..c3"), vec![0, 0, 1]);
        // The best one a filter accepts: the next in precedence.
        let next = index.best_match_where("a1.b2.c3.d4.e5", |_, _, v| *v != 5);
        assert_eq!(next.map(|(_, _, v)| *v), Some(4));
    }

    fn matches_of(index: &MatchIndex<u32>, topic: &str) -> Vec<u32> {
        let mut got = vec![];
        index.for_each_match(topic, |_, _, v| got.push(*v));
        got.sort_unstable();
        got
    }

    #[test]
    fn counts_empty_out() {
        let mut index = MatchIndex::default();
        index.insert(MatchPolicy::Prefix, "a.".into(), 1);
        index.insert(MatchPolicy::Wildcard, "a..c".into(), 2);
        assert_eq!(matches_of(&index, "a.b.c"), vec![1, 2]);
        assert_eq!(index.remove(MatchPolicy::Prefix, "a."), Some(1));
        assert_eq!(index.remove(MatchPolicy::Wildcard, "a..c"), Some(2));
        assert!(index.prefixes.live == 0 && index.shapes.is_empty());
        assert!(index.is_empty());
        assert_eq!(index.len(), 0);
        // Churn does not grow the trie: it is rebuilt from what is left.
        for i in 0..300 {
            index.insert(MatchPolicy::Prefix, format!("p{i}.").into(), i);
        }
        for i in 0..290 {
            index.remove(MatchPolicy::Prefix, &format!("p{i}."));
        }
        // At most the bytes of what is live plus what was removed since the last rebuild
        // (no more than 64 or as many as are live): here (10 + 64) prefixes of 5 bytes.
        assert!(
            index.prefixes.nodes.len() <= 74 * 5,
            "{}",
            index.prefixes.nodes.len()
        );
        assert_eq!(matches_of(&index, "p295.x"), vec![295]);
        assert_eq!(matches_of(&index, "p29.x"), Vec::<u32>::new());
        assert_eq!(index.len(), 10);
    }

    proptest! {
        /// The index finds exactly what a scan of every pattern with `matches` finds.
        #[test]
        fn the_index_agrees_with_a_scan(
            patterns in proptest::collection::vec((0..3u8, "[aü]{0,2}(\\.[aü]{0,2}){0,5}"), 0..24),
            topics in proptest::collection::vec("[aü]{0,2}(\\.[aü]{0,2}){0,5}", 1..8),
            removals in proptest::collection::vec(0..24usize, 0..12),
        ) {
            let mut index = MatchIndex::default();
            let mut all = vec![];
            for (i, (p, uri)) in patterns.iter().enumerate() {
                let policy = [MatchPolicy::Exact, MatchPolicy::Prefix, MatchPolicy::Wildcard][*p as usize];
                if policy.valid(uri) && index.get(policy, uri).is_none() {
                    index.insert(policy, uri.as_str().into(), i as u32);
                    all.push((policy, uri.clone(), i as u32));
                }
            }
            for r in removals {
                if r < all.len() {
                    let (policy, uri, _) = all.remove(r);
                    prop_assert!(index.remove(policy, &uri).is_some());
                }
            }
            for topic in &topics {
                let mut want: Vec<u32> = all
                    .iter()
                    .filter(|(p, uri, _)| p.matches(uri, topic))
                    .map(|(_, _, v)| *v)
                    .collect();
                want.sort_unstable();
                prop_assert_eq!(matches_of(&index, topic), want, "{}", topic);
            }
        }
    }
}
