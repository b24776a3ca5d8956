//! A session's testaments (`wamp.session.add_testament`): publications the router makes
//! for the session when it ends without saying GOODBYE, kept in two scopes within a
//! budget of entries and bytes.
//!
//! ```
//! use tower_wamp::core::testament::{Scope, TestamentBudget, Testaments};
//!
//! let mut t = Testaments::new(TestamentBudget { entries: 2, bytes: 100 });
//! t.add(Scope::Destroyed, "last words", 10).unwrap();
//! t.add(Scope::Detached, "gone", 10).unwrap();
//! assert!(t.add(Scope::Detached, "one too many", 10).is_err());
//! // Detached ones first, then destroyed ones, each in the order added.
//! assert_eq!(t.take(), vec!["gone", "last words"]);
//! ```

/// The two buckets of the spec: without session resumption both are published when the
/// session ends, `Detached` first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scope {
    /// When the session is detached from its transport.
    Detached,
    /// When the session is destroyed (the default).
    Destroyed,
}

impl Scope {
    /// The spec's name (`"detached"`, `"destroyed"`; absent means `Destroyed`).
    #[must_use]
    pub fn parse(name: Option<&str>) -> Option<Self> {
        match name {
            None | Some("destroyed") => Some(Self::Destroyed),
            Some("detached") => Some(Self::Detached),
            Some(_) => None,
        }
    }
}

/// How much one session may leave in testaments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestamentBudget {
    /// Testaments in both scopes together.
    pub entries: usize,
    /// Their sizes (as given to [`Testaments::add`]) together.
    pub bytes: usize,
}

impl Default for TestamentBudget {
    /// 32 testaments, 64 KiB.
    fn default() -> Self {
        Self {
            entries: 32,
            bytes: 64 << 10,
        }
    }
}

/// Past the budget: the testament was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget(pub TestamentBudget);

/// One session's testaments.
#[derive(Debug)]
pub struct Testaments<T> {
    detached: Vec<(T, usize)>,
    destroyed: Vec<(T, usize)>,
    bytes: usize,
    budget: TestamentBudget,
}

impl<T> Testaments<T> {
    /// None yet.
    #[must_use]
    pub fn new(budget: TestamentBudget) -> Self {
        Self {
            detached: Vec::new(),
            destroyed: Vec::new(),
            bytes: 0,
            budget,
        }
    }

    /// Keeps `testament` (of `bytes`) in `scope`, unless that would pass the budget.
    ///
    /// # Errors
    /// [`OverBudget`] when the entries or bytes would pass the budget.
    pub fn add(&mut self, scope: Scope, testament: T, bytes: usize) -> Result<(), OverBudget> {
        if self.len() >= self.budget.entries || self.bytes + bytes > self.budget.bytes {
            return Err(OverBudget(self.budget));
        }
        self.bytes += bytes;
        self.bucket(scope).push((testament, bytes));
        Ok(())
    }

    fn bucket(&mut self, scope: Scope) -> &mut Vec<(T, usize)> {
        match scope {
            Scope::Detached => &mut self.detached,
            Scope::Destroyed => &mut self.destroyed,
        }
    }

    /// Forgets the testaments of `scope`; returns how many there were.
    pub fn flush(&mut self, scope: Scope) -> usize {
        let gone = std::mem::take(self.bucket(scope));
        self.bytes -= gone.iter().map(|(_, b)| b).sum::<usize>();
        gone.len()
    }

    /// Forgets them all (the session left with GOODBYE).
    pub fn clear(&mut self) {
        self.detached.clear();
        self.destroyed.clear();
        self.bytes = 0;
    }

    /// Takes them all, to publish: the detached ones, then the destroyed ones, each in the
    /// order added.
    pub fn take(&mut self) -> Vec<T> {
        self.bytes = 0;
        let detached = std::mem::take(&mut self.detached);
        let destroyed = std::mem::take(&mut self.destroyed);
        detached
            .into_iter()
            .chain(destroyed)
            .map(|(t, _)| t)
            .collect()
    }

    /// How many are kept.
    #[must_use]
    pub fn len(&self) -> usize {
        self.detached.len() + self.destroyed.len()
    }

    /// Whether none is.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_holds_in_entries_and_bytes_and_flushing_frees_it() {
        let mut t = Testaments::new(TestamentBudget {
            entries: 3,
            bytes: 30,
        });
        t.add(Scope::Destroyed, 1, 10).unwrap();
        t.add(Scope::Detached, 2, 10).unwrap();
        assert_eq!(t.add(Scope::Destroyed, 3, 11), Err(OverBudget(t.budget)));
        t.add(Scope::Destroyed, 3, 10).unwrap();
        assert!(
            t.add(Scope::Detached, 4, 0).is_err(),
            "three entries at most"
        );
        assert_eq!(t.flush(Scope::Destroyed), 2);
        assert_eq!(t.flush(Scope::Destroyed), 0);
        t.add(Scope::Destroyed, 5, 20).unwrap();
        assert_eq!(t.take(), vec![2, 5]);
        assert!(t.is_empty());
        t.add(Scope::Destroyed, 6, 30).unwrap();
        t.clear();
        assert!(t.take().is_empty());
        t.add(Scope::Destroyed, 7, 30).unwrap();
    }

    #[test]
    fn scopes_have_the_spec_names() {
        assert_eq!(Scope::parse(None), Some(Scope::Destroyed));
        assert_eq!(Scope::parse(Some("destroyed")), Some(Scope::Destroyed));
        assert_eq!(Scope::parse(Some("detached")), Some(Scope::Detached));
        assert_eq!(Scope::parse(Some("gone")), None);
    }
}
