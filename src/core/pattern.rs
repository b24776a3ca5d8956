//! Topic patterns and the table that finds the rule for a topic.
//!
//! A pattern is an exact URI, a prefix written with a trailing `*` (`"http://x/ev#chat*"`
//! matches `http://x/ev#chat` and every longer topic), or `"*"` for every topic.
//!
//! Lookup precedence is deterministic: an exact entry beats every prefix (so an exact
//! rule that denies is never overridden by a wildcard), and among prefixes the longest
//! wins. Prefixes live in a byte trie, so a lookup costs time in the length of the topic,
//! not in the number of patterns.

use std::collections::{HashMap, hash_map::Entry};

/// A parsed topic pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    /// Parses a pattern, or says why it is malformed.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("a topic pattern must not be empty".into());
        }
        if s.chars().any(char::is_whitespace) {
            return Err(format!("topic pattern {s:?} contains whitespace"));
        }
        match s.find('*') {
            None => Ok(Self::Exact(s.to_owned())),
            Some(i) if i == s.len() - 1 => Ok(Self::Prefix(s[..i].to_owned())),
            Some(_) => Err(format!(
                "topic pattern {s:?} has a `*` that is not at the end"
            )),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Node {
    /// Sorted by byte, binary-searched.
    children: Vec<(u8, u32)>,
    value: Option<usize>,
}

/// Maps topics to values by exact URI or longest prefix.
#[derive(Debug, Clone)]
pub(crate) struct PatternTable<T> {
    exact: HashMap<String, usize>,
    trie: Vec<Node>,
    values: Vec<T>,
}

impl<T> Default for PatternTable<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            trie: vec![Node::default()],
            values: Vec::new(),
        }
    }
}

impl<T> PatternTable<T> {
    /// Adds (or replaces) the value for `pattern`.
    pub(crate) fn insert(&mut self, pattern: Pattern, value: T) {
        let next = self.values.len();
        let existing = match pattern {
            Pattern::Exact(uri) => match self.exact.entry(uri) {
                Entry::Occupied(e) => Some(*e.get()),
                Entry::Vacant(e) => {
                    e.insert(next);
                    None
                }
            },
            Pattern::Prefix(prefix) => {
                let node = self.trie_node(prefix.as_bytes());
                let slot = &mut self.trie[node].value;
                let existing = *slot;
                slot.get_or_insert(next);
                existing
            }
        };
        match existing {
            Some(i) => self.values[i] = value,
            None => self.values.push(value),
        }
    }

    /// The trie node for `prefix`, created with its path if missing.
    fn trie_node(&mut self, prefix: &[u8]) -> usize {
        let mut node = 0usize;
        for &b in prefix {
            node = match self.trie[node].children.binary_search_by_key(&b, |c| c.0) {
                Ok(i) => self.trie[node].children[i].1 as usize,
                Err(i) => {
                    let next = self.trie.len();
                    let id = u32::try_from(next).expect("fewer than 2^32 trie nodes");
                    self.trie.push(Node::default());
                    self.trie[node].children.insert(i, (b, id));
                    next
                }
            };
        }
        node
    }

    /// The value for `topic`: its exact entry, else its longest matching prefix.
    pub(crate) fn get(&self, topic: &str) -> Option<&T> {
        if let Some(&i) = self.exact.get(topic) {
            return Some(&self.values[i]);
        }
        let mut best = self.trie[0].value;
        let mut node = 0usize;
        for b in topic.bytes() {
            let children = &self.trie[node].children;
            match children.binary_search_by_key(&b, |c| c.0) {
                Ok(i) => {
                    node = children[i].1 as usize;
                    if let Some(v) = self.trie[node].value {
                        best = Some(v);
                    }
                }
                Err(_) => break,
            }
        }
        best.map(|i| &self.values[i])
    }

    /// Every value, in insertion order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.values.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, &'static str)]) -> PatternTable<&'static str> {
        let mut t = PatternTable::default();
        for (p, v) in entries {
            t.insert(Pattern::parse(p).unwrap(), *v);
        }
        t
    }

    #[test]
    fn parses_patterns() {
        assert_eq!(Pattern::parse("a#b"), Ok(Pattern::Exact("a#b".into())));
        assert_eq!(Pattern::parse("a#b*"), Ok(Pattern::Prefix("a#b".into())));
        assert_eq!(Pattern::parse("*"), Ok(Pattern::Prefix(String::new())));
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("a*b").is_err());
        assert!(Pattern::parse("a b").is_err());
    }

    #[test]
    fn exact_beats_prefix_and_longest_prefix_wins() {
        let t = table(&[
            ("*", "any"),
            ("http://x/ev#*", "ev"),
            ("http://x/ev#chat*", "chat-prefix"),
            ("http://x/ev#chat", "chat-exact"),
        ]);
        assert_eq!(t.get("http://x/ev#chat"), Some(&"chat-exact"));
        assert_eq!(t.get("http://x/ev#chatroom"), Some(&"chat-prefix"));
        assert_eq!(t.get("http://x/ev#other"), Some(&"ev"));
        assert_eq!(t.get("http://x/ev"), Some(&"any"));
        assert_eq!(t.get(""), Some(&"any"));
    }

    #[test]
    fn a_bare_prefix_matches_itself_and_nothing_shorter() {
        let t = table(&[("http://x/ev#prefix*", "p")]);
        assert_eq!(t.get("http://x/ev#prefix"), Some(&"p"));
        assert_eq!(t.get("http://x/ev#prefix123"), Some(&"p"));
        assert_eq!(t.get("http://x/ev#prefi"), None);
        assert_eq!(t.get("http://y"), None);
    }

    #[test]
    fn replacing_keeps_one_value() {
        let t = table(&[("a", "1"), ("a", "2"), ("b*", "3"), ("b*", "4")]);
        assert_eq!(t.get("a"), Some(&"2"));
        assert_eq!(t.get("bz"), Some(&"4"));
        assert_eq!(t.values().count(), 2);
    }

    proptest::proptest! {
        /// The trie answers like a brute-force scan: exact first, then longest prefix.
        #[test]
        fn lookup_matches_a_brute_force_scan(
            patterns in proptest::collection::vec("[ab]{0,4}\\*?", 0..12),
            topics in proptest::collection::vec("[ab]{0,6}", 1..12),
        ) {
            let mut t = PatternTable::default();
            let mut parsed = vec![];
            for (i, p) in patterns.iter().enumerate() {
                if let Ok(pat) = Pattern::parse(p) {
                    parsed.retain(|(q, _)| q != &pat);
                    parsed.push((pat.clone(), i));
                    t.insert(pat, i);
                }
            }
            for topic in &topics {
                let exact = parsed.iter().find(|(p, _)| *p == Pattern::Exact(topic.clone()));
                let expected = exact.map(|e| e.1).or_else(|| {
                    parsed
                        .iter()
                        .filter_map(|(p, v)| match p {
                            Pattern::Prefix(pre) if topic.starts_with(pre.as_str()) => Some((pre.len(), *v)),
                            _ => None,
                        })
                        .max_by_key(|(len, _)| *len)
                        .map(|(_, v)| v)
                });
                proptest::prop_assert_eq!(t.get(topic).copied(), expected, "topic {:?}", topic);
            }
        }
    }

    #[test]
    fn thousands_of_prefixes() {
        let mut t = PatternTable::default();
        for i in 0..2000 {
            t.insert(Pattern::Prefix(format!("http://x/{i}/")), i);
        }
        assert_eq!(t.get("http://x/1234/abc"), Some(&1234));
        assert_eq!(t.get("http://x/12/abc"), Some(&12));
        assert_eq!(t.get("http://x/99999"), None);
    }
}
