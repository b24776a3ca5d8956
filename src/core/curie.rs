//! Per-session CURIE prefixes (`[1, prefix, uri]`).
//!
//! A CURIE `p:rest` expands to `uri(p) + rest`, splitting at the **first** colon, so
//! `p:a:b` becomes `uri + "a:b"` (clj-wamp kept only `uri + "a"`: we fix that). A string
//! whose part before the first colon is not a known prefix passes unchanged, so full
//! URIs such as `http://…` stay as they are unless a client defines a prefix named
//! `http`.
//!
//! ```
//! use tower_wamp::core::curie::Prefixes;
//!
//! let mut p = Prefixes::default();
//! p.insert("calc", "http://example.com/calc#");
//! assert_eq!(p.resolve("calc:add"), "http://example.com/calc#add");
//! assert_eq!(p.resolve("calc:a:b"), "http://example.com/calc#a:b");
//! assert_eq!(p.resolve("other:x"), "other:x");
//! ```

use std::{borrow::Cow, collections::HashMap};

/// How many prefixes one session may define by default.
pub const MAX_PREFIXES: usize = 1024;

/// How many bytes (names and URIs together) one session's prefixes may take by default.
pub const MAX_PREFIX_BYTES: usize = 64 << 10;

/// The CURIE prefixes one session has defined, within a budget of entries and bytes.
#[derive(Debug, Clone)]
pub struct Prefixes {
    map: HashMap<String, String>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl Default for Prefixes {
    fn default() -> Self {
        Self::with_budget(MAX_PREFIXES, MAX_PREFIX_BYTES)
    }
}

impl Prefixes {
    /// An empty table that holds at most `entries` prefixes of at most `bytes` in all.
    ///
    /// ```
    /// let mut p = tower_wamp::core::curie::Prefixes::with_budget(8, 20);
    /// assert!(p.insert("a", "http://a/"));
    /// assert!(!p.insert("b", "http://example.com/"), "over 20 bytes in all");
    /// ```
    #[must_use]
    pub fn with_budget(entries: usize, bytes: usize) -> Self {
        Self {
            map: HashMap::new(),
            bytes: 0,
            max_entries: entries,
            max_bytes: bytes,
        }
    }

    /// Defines or redefines `prefix`. Returns `false` (and changes nothing) when that
    /// would take the table over its budget of entries or bytes.
    pub fn insert(&mut self, prefix: impl Into<String>, uri: impl Into<String>) -> bool {
        let (prefix, uri) = (prefix.into(), uri.into());
        let freed = self
            .map
            .get(&prefix)
            .map_or(0, |old| prefix.len() + old.len());
        if freed == 0 && self.map.len() >= self.max_entries {
            return false;
        }
        let bytes = self.bytes - freed + prefix.len() + uri.len();
        if bytes > self.max_bytes {
            return false;
        }
        self.bytes = bytes;
        self.map.insert(prefix, uri);
        true
    }

    /// The bytes the prefixes take (names and URIs).
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Expands a CURIE; anything that is not one is returned unchanged.
    #[must_use]
    pub fn resolve<'a>(&self, curie: &'a str) -> Cow<'a, str> {
        if self.map.is_empty() {
            return Cow::Borrowed(curie);
        }
        match curie.split_once(':') {
            Some((prefix, rest)) if !prefix.is_empty() => match self.map.get(prefix) {
                Some(uri) => {
                    let mut full = String::with_capacity(uri.len() + rest.len());
                    full.push_str(uri);
                    full.push_str(rest);
                    Cow::Owned(full)
                }
                None => Cow::Borrowed(curie),
            },
            _ => Cow::Borrowed(curie),
        }
    }

    /// [`resolve`](Self::resolve) for an owned string: no copy when nothing expands.
    #[must_use]
    pub fn resolve_owned(&self, curie: String) -> String {
        let expanded = match self.resolve(&curie) {
            Cow::Owned(full) => Some(full),
            Cow::Borrowed(_) => None,
        };
        expanded.unwrap_or(curie)
    }

    /// How many prefixes are defined.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no prefix is defined.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_prefix_overrides() {
        let mut p = Prefixes::default();
        p.insert("ev", "http://a/");
        p.insert("ev", "http://b/");
        assert_eq!(p.resolve("ev:x"), "http://b/x");
    }

    #[test]
    fn edge_cases() {
        let mut p = Prefixes::default();
        p.insert("ev", "http://a/e#");
        assert_eq!(p.resolve("ev:"), "http://a/e#");
        assert_eq!(p.resolve("ev"), "ev", "no colon: not a CURIE");
        assert_eq!(p.resolve(":x"), ":x", "empty prefix never expands");
        assert_eq!(p.resolve("http://x/y"), "http://x/y");
        p.insert("http", "https://evil/");
        assert_eq!(p.resolve("http://x/y"), "https://evil///x/y");
    }

    #[test]
    fn prefix_count_is_bounded() {
        let mut p = Prefixes::default();
        for i in 0..MAX_PREFIXES {
            assert!(p.insert(format!("p{i}"), "u"));
        }
        assert!(!p.insert("one-more", "u"));
        assert!(p.insert("p0", "redefined"), "redefining stays allowed");
        assert_eq!(p.len(), MAX_PREFIXES);
    }

    #[test]
    fn prefix_bytes_are_bounded_and_redefinition_frees_the_old_uri() {
        let mut p = Prefixes::with_budget(100, 30);
        assert!(p.insert("a", "x".repeat(19)));
        assert_eq!(p.bytes(), 20);
        assert!(!p.insert("b", "y".repeat(10)), "31 bytes");
        assert!(
            p.insert("a", "z".repeat(29)),
            "the old URI's bytes are freed"
        );
        assert_eq!(p.bytes(), 30);
        assert!(!p.insert("a", "z".repeat(30)));
        assert_eq!(p.resolve("a:"), "z".repeat(29));
    }
}
