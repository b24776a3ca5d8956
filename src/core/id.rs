use std::{borrow::Borrow, fmt, sync::Arc};

use base64::Engine as _;

/// A WAMP session id: an unguessable string of 16 URL-safe characters.
///
/// clj-wamp used `<epoch-ms>-<counter>` ids, which anyone can predict; tower-wamp draws
/// 96 bits from the operating system's CSPRNG for each session. Cloning is cheap (the
/// text is shared).
///
/// ```
/// use tower_wamp::core::SessionId;
///
/// let a = SessionId::random();
/// let b = SessionId::random();
/// assert_eq!(a.as_str().len(), 16);
/// assert_ne!(a, b);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(Arc<str>);

impl SessionId {
    /// A fresh random session id.
    #[must_use]
    pub fn random() -> Self {
        Self(random_token(12).into())
    }

    /// The id as text, as it appears on the wire.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `bytes` random bytes from the OS CSPRNG, as unpadded URL-safe base64 text.
///
/// Used for session ids and WAMP-CRA challenge ids.
///
/// ```
/// assert_eq!(tower_wamp::core::random_token(12).len(), 16);
/// ```
///
/// # Panics
/// If the operating system has no random source (it always has on supported platforms).
#[must_use]
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random number generator is unavailable");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// A random WAMP v2 id, uniform in [1, 2^53] (session and publication ids must be drawn
/// so), from the OS CSPRNG.
///
/// ```
/// let id = tower_wamp::core::random_id();
/// assert!((1..=1 << 53).contains(&id));
/// ```
///
/// # Panics
/// If the operating system has no random source.
#[must_use]
pub fn random_id() -> u64 {
    let mut buf = [0u8; 8];
    getrandom::fill(&mut buf).expect("the OS random number generator is unavailable");
    // 53 random bits, shifted into [1, 2^53].
    (u64::from_le_bytes(buf) >> 11) + 1
}

impl SessionId {
    /// The text form of a WAMP v2 session id: its decimal digits.
    ///
    /// ```
    /// assert_eq!(tower_wamp::core::SessionId::numeric(42).as_str(), "42");
    /// ```
    #[must_use]
    pub fn numeric(id: u64) -> Self {
        Self(id.to_string().into())
    }

    /// The WAMP v2 session id, for a session that has one.
    #[must_use]
    pub fn as_u64(&self) -> Option<u64> {
        self.0.parse().ok()
    }
}

impl From<&str> for SessionId {
    fn from(s: &str) -> Self {
        Self(s.into())
    }
}

impl From<String> for SessionId {
    fn from(s: String) -> Self {
        Self(s.into())
    }
}

impl Borrow<str> for SessionId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for SessionId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl serde::Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_url_safe() {
        let ids: HashSet<SessionId> = (0..10_000).map(|_| SessionId::random()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            assert!(
                id.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{id}"
            );
        }
    }
}
