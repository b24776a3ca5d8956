//! WAMP-CRA, sans-IO: signatures, key derivation, challenges, permissions and the
//! per-session authentication state.
//!
//! Two flavours exist in the wild:
//!
//! - **Autobahn** (the reference, and what autobahn clients do): the challenge is a JSON
//!   text; the client signs `base64(HMAC-SHA256(key = secret, message = challenge))`. With a
//!   salted secret the HMAC key is the base64 text of `PBKDF2-HMAC-SHA256(password, salt,
//!   iterations, keylen)` ([`derive_key`]).
//! - **clj-wamp**: the challenge is `base64(HMAC-SHA256(key = secret-ms-sessionId, message
//!   = authKey))` and the expected signature is `base64(HMAC-SHA256(key = challenge,
//!   message = secret))`.
//!
//! ```
//! use tower_wamp::core::auth::{sign, derive_key};
//!
//! let challenge = r#"{"authid": "Rn3p8k4uLz0tGqXa", "authkey": "foobar", "timestamp": "2013-07-06T19:00:00.000Z", "sessionid": "v59mbCGDXZ7WTyxB", "extra": {}, "permissions": {"pubsub": [], "rpc": []}}"#;
//! assert_eq!(sign("secret", challenge), "ZPK1hhQoDZsnFSxrzNIVr5W5AeXfFS4DiqJhnDW8/0Q=");
//! assert_eq!(derive_key("secret", "salt123", 100, 16), "EX1Y3Q9BMM2oGLxsGqDgFQ==");
//! ```

use std::{
    fmt,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{
    matching::{MatchIndex, MatchPolicy},
    pattern::{Pattern, PatternTable},
};

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// `base64(HMAC-SHA256(key, message))`: the Autobahn WAMP-CRA signature of `challenge`
/// with `key` (the secret, or the derived key for salted secrets).
#[must_use]
pub fn sign(key: &str, challenge: &str) -> String {
    STANDARD.encode(hmac(key.as_bytes(), challenge.as_bytes()))
}

/// `base64(PBKDF2-HMAC-SHA256(password, salt, iterations, keylen))`: the salted key
/// derivation of Autobahn's WAMP-CRA. Store either the password with its salt, or this
/// derived key.
///
/// ```
/// assert_eq!(
///     tower_wamp::core::auth::derive_key("secret", "salt123", 10000, 32),
///     "VT+3GaFfYgfIOH/PsY9oIv9PPYQXU8v1Gc1nCzLQjwE="
/// );
/// ```
#[must_use]
pub fn derive_key(password: &str, salt: &str, iterations: u32, keylen: usize) -> String {
    let mut out = vec![0u8; keylen];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt.as_bytes(), iterations, &mut out);
    STANDARD.encode(out)
}

/// The clj-wamp challenge: `base64(HMAC-SHA256(key = secret-epochMs-sessionId, message
/// = authKey))`.
///
/// ```
/// use tower_wamp::core::auth::{cljwamp_challenge, cljwamp_signature};
/// let c = cljwamp_challenge("secret", 1372019248579, "1372019248579-1", "username");
/// assert_eq!(c, "1Dg1mHdzyOB7Il8JYS18Dlh3n5c2MyknzNwMf5L5WMQ=");
/// assert_eq!(cljwamp_signature(&c, "secret"), "s116flcFj9+PSkmAOHTpUn11nvFuadzlLR+IExiwCWo=");
/// ```
#[must_use]
pub fn cljwamp_challenge(secret: &str, epoch_ms: u128, session_id: &str, auth_key: &str) -> String {
    let key = format!("{secret}-{epoch_ms}-{session_id}");
    STANDARD.encode(hmac(key.as_bytes(), auth_key.as_bytes()))
}

/// The signature clj-wamp expects: `base64(HMAC-SHA256(key = challenge, message = secret))`
/// (key and message swapped relative to Autobahn).
#[must_use]
pub fn cljwamp_signature(challenge: &str, secret: &str) -> String {
    STANDARD.encode(hmac(challenge.as_bytes(), secret.as_bytes()))
}

/// Compares a client's base64 signature with the expected one in constant time.
#[must_use]
pub fn signature_matches(expected: &str, given: &str) -> bool {
    let (Ok(a), Ok(b)) = (STANDARD.decode(expected), STANDARD.decode(given.trim())) else {
        return false;
    };
    a.len() == b.len() && bool::from(a.ct_eq(&b))
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC), as in Autobahn's challenges.
#[must_use]
pub fn utc_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil-from-days.
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// How a salted secret was derived, sent to the client as the challenge's `authextra`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salt {
    /// The salt.
    pub salt: String,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// Derived key length in bytes.
    pub keylen: usize,
}

/// The Autobahn-flavour challenge text.
#[must_use]
pub fn autobahn_challenge(
    auth_id: &str,
    auth_key: &str,
    timestamp: &str,
    session_id: &str,
    extra: &Value,
    salt: Option<&Salt>,
) -> String {
    let mut challenge = json!({
        "authid": auth_id,
        "authkey": auth_key,
        "timestamp": timestamp,
        "sessionid": session_id,
        "extra": extra,
        "permissions": {"pubsub": [], "rpc": []},
    });
    if let Some(s) = salt {
        challenge["authextra"] =
            json!({"salt": s.salt, "iterations": s.iterations, "keylen": s.keylen});
    }
    challenge.to_string()
}

/// Who a session is authenticated as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthKey {
    /// Anonymous authentication (authreq without a key).
    Anonymous,
    /// An auth key (a user or application name), proven by WAMP-CRA or established by an
    /// upstream layer.
    Key(String),
}

impl AuthKey {
    /// The key, or `None` when anonymous.
    #[must_use]
    pub fn as_key(&self) -> Option<&str> {
        match self {
            Self::Anonymous => None,
            Self::Key(k) => Some(k),
        }
    }
}

impl fmt::Display for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous => f.write_str("anonymous"),
            Self::Key(k) => f.write_str(k),
        }
    }
}

/// A session's authentication state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AuthState {
    /// Nothing requested yet.
    #[default]
    Unauthenticated,
    /// A challenge was issued (or anonymous was requested); nothing is permitted yet.
    Pending {
        /// Who is authenticating.
        key: AuthKey,
        /// The signature that proves it (`None` for anonymous).
        expected: Option<String>,
    },
    /// Authenticated.
    Authenticated(AuthKey),
}

/// What a session wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// CALL a procedure.
    Call,
    /// SUBSCRIBE to a topic.
    Subscribe,
    /// PUBLISH to a topic.
    Publish,
    /// REGISTER a procedure (WAMP v2 callees).
    Register,
}

#[derive(Debug, Clone, Default)]
enum Grant {
    #[default]
    Nothing,
    Everything,
    Uris(PatternTable<bool>),
    /// A role table's: the best matching rule decides.
    Matched(Arc<MatchIndex<bool>>),
}

impl Grant {
    fn allows(&self, uri: &str) -> bool {
        match self {
            Self::Nothing => false,
            Self::Everything => true,
            Self::Uris(t) => t.get(uri).copied().unwrap_or(false),
            Self::Matched(index) => index
                .best_match(uri)
                .is_some_and(|(_, _, allowed)| *allowed),
        }
    }

    fn set(&mut self, pattern: &str, allow: bool) {
        let parsed = Pattern::parse(pattern).unwrap_or_else(|e| panic!("{e}"));
        match self {
            Self::Uris(t) => t.insert(parsed, allow),
            Self::Everything if allow => {}
            Self::Matched(index) => {
                // Code amends a role's rules: a pattern of ours is exact or a prefix.
                let (policy, uri) = match &parsed {
                    Pattern::Exact(u) => (MatchPolicy::Exact, u.as_str()),
                    Pattern::Prefix(p) => (MatchPolicy::Prefix, p.as_str()),
                };
                Arc::make_mut(index).insert(policy, uri.into(), allow);
            }
            other => {
                let mut t = PatternTable::default();
                if matches!(other, Self::Everything) {
                    t.insert(Pattern::Prefix(String::new()), true);
                }
                t.insert(parsed, allow);
                *other = Self::Uris(t);
            }
        }
    }
}

/// What an authenticated session may do: everything, a whole category, or per URI with
/// exact URIs and prefix patterns (`"http://x/api#*"`), matched like topics (an exact
/// entry beats prefixes, the longest prefix wins).
///
/// ```
/// use tower_wamp::core::auth::{Action, Permissions};
///
/// let p = Permissions::none()
///     .allow_call("http://x/api#*")
///     .deny_call("http://x/api#admin")
///     .allow_subscribe("http://x/event#chat")
///     .allow_all(Action::Publish);
/// assert!(p.allows(Action::Call, "http://x/api#add"));
/// assert!(!p.allows(Action::Call, "http://x/api#admin"));
/// assert!(p.allows(Action::Subscribe, "http://x/event#chat"));
/// assert!(!p.allows(Action::Subscribe, "http://x/event#other"));
/// assert!(p.allows(Action::Publish, "anything"));
/// assert!(Permissions::all().allows(Action::Call, "x"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    call: Grant,
    subscribe: Grant,
    publish: Grant,
    register: Grant,
    /// A role table's disclosure of callers and publishers.
    disclose_caller: Grant,
    disclose_publisher: Grant,
}

impl Permissions {
    /// Nothing is permitted.
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// Everything is permitted.
    #[must_use]
    pub fn all() -> Self {
        Self {
            call: Grant::Everything,
            subscribe: Grant::Everything,
            publish: Grant::Everything,
            register: Grant::Everything,
            disclose_caller: Grant::Nothing,
            disclose_publisher: Grant::Nothing,
        }
    }

    /// A role's rules (see [`crate::core::roles`]): per action (call, register, publish,
    /// subscribe) and disclosure (caller, publisher), every rule's URI with its flag.
    pub(crate) fn matched(
        [call, register, publish, subscribe]: [MatchIndex<bool>; 4],
        [disclose_caller, disclose_publisher]: [MatchIndex<bool>; 2],
    ) -> Self {
        let grant = |index| Grant::Matched(Arc::new(index));
        Self {
            call: grant(call),
            subscribe: grant(subscribe),
            publish: grant(publish),
            register: grant(register),
            disclose_caller: grant(disclose_caller),
            disclose_publisher: grant(disclose_publisher),
        }
    }

    /// Whether the session's role discloses it to the other side of `action` on `uri`:
    /// the caller to the callee of a call, the publisher to subscribers (only a role
    /// table's rules disclose).
    #[must_use]
    pub fn discloses(&self, action: Action, uri: &str) -> bool {
        match action {
            Action::Call => self.disclose_caller.allows(uri),
            Action::Publish => self.disclose_publisher.allows(uri),
            _ => false,
        }
    }

    fn grant(&mut self, action: Action) -> &mut Grant {
        match action {
            Action::Call => &mut self.call,
            Action::Subscribe => &mut self.subscribe,
            Action::Publish => &mut self.publish,
            Action::Register => &mut self.register,
        }
    }

    /// Permits or forbids a whole category.
    #[must_use]
    pub fn with_category(mut self, action: Action, allowed: bool) -> Self {
        *self.grant(action) = if allowed {
            Grant::Everything
        } else {
            Grant::Nothing
        };
        self
    }

    /// Permits a whole category.
    #[must_use]
    pub fn allow_all(self, action: Action) -> Self {
        self.with_category(action, true)
    }

    /// Permits `action` on a URI or prefix pattern.
    ///
    /// # Panics
    /// If the pattern is malformed (empty, whitespace, `*` not at the end).
    #[must_use]
    pub fn allow(mut self, action: Action, pattern: &str) -> Self {
        self.grant(action).set(pattern, true);
        self
    }

    /// Forbids `action` on a URI or prefix pattern (beats shorter allowing patterns).
    ///
    /// # Panics
    /// If the pattern is malformed.
    #[must_use]
    pub fn deny(mut self, action: Action, pattern: &str) -> Self {
        self.grant(action).set(pattern, false);
        self
    }

    /// `allow(Action::Call, pattern)`.
    #[must_use]
    pub fn allow_call(self, pattern: &str) -> Self {
        self.allow(Action::Call, pattern)
    }

    /// `deny(Action::Call, pattern)`.
    #[must_use]
    pub fn deny_call(self, pattern: &str) -> Self {
        self.deny(Action::Call, pattern)
    }

    /// `allow(Action::Subscribe, pattern)`.
    #[must_use]
    pub fn allow_subscribe(self, pattern: &str) -> Self {
        self.allow(Action::Subscribe, pattern)
    }

    /// `allow(Action::Publish, pattern)`.
    #[must_use]
    pub fn allow_publish(self, pattern: &str) -> Self {
        self.allow(Action::Publish, pattern)
    }

    /// `allow(Action::Register, pattern)`: WAMP v2 clients may register procedures there.
    #[must_use]
    pub fn allow_register(self, pattern: &str) -> Self {
        self.allow(Action::Register, pattern)
    }

    /// Whether `action` on `uri` is permitted.
    #[must_use]
    pub fn allows(&self, action: Action, uri: &str) -> bool {
        match action {
            Action::Call => self.call.allows(uri),
            Action::Subscribe => self.subscribe.allows(uri),
            Action::Publish => self.publish.allows(uri),
            Action::Register => self.register.allows(uri),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn test_vectors() {
        assert_eq!(
            derive_key("secret", "salt123", 10000, 32),
            "VT+3GaFfYgfIOH/PsY9oIv9PPYQXU8v1Gc1nCzLQjwE="
        );
        assert_eq!(
            derive_key("secret", "salt123", 100, 16),
            "EX1Y3Q9BMM2oGLxsGqDgFQ=="
        );
        assert_eq!(
            derive_key("L3L1YUE8Txlw", "salt123", 1000, 32),
            "qzcdsr9uu/L5hnss3kjNTRe490ETgA70ZBaB5rvnJ5Y="
        );
        assert_eq!(
            derive_key("secret", "salt123", 1000, 32),
            "MDS8Yxpu4J/vkHJ8dNEgqECYsI0uRDh2oZ5eN0vYPvo="
        );
        let v3 = r#"{"authid": "Rn3p8k4uLz0tGqXa", "authkey": "foobar", "timestamp": "2013-07-06T19:00:00.000Z", "sessionid": "v59mbCGDXZ7WTyxB", "extra": {}, "permissions": {"pubsub": [], "rpc": []}}"#;
        assert_eq!(
            sign("secret", v3),
            "ZPK1hhQoDZsnFSxrzNIVr5W5AeXfFS4DiqJhnDW8/0Q="
        );
        let v4d = format!(
            "{}, \"authextra\": {{\"salt\": \"salt123\", \"iterations\": 100, \"keylen\": 16}}}}",
            &v3[..v3.len() - 1]
        );
        assert_eq!(
            sign("EX1Y3Q9BMM2oGLxsGqDgFQ==", &v4d),
            "nQauTiKZO25GzTQ0gS8Kt+CZy6opBmp9r532F5CU104="
        );
        assert_eq!(
            sign("L3L1YUE8Txlw", "[1, 2, 3]"),
            "1njQtmmeYO41N5EWEzD2kAjjEKRZ5kPZt/TzpYXOzR0="
        );
        let c = cljwamp_challenge("secret", 1_372_019_248_579, "1372019248579-1", "username");
        assert_eq!(c, "1Dg1mHdzyOB7Il8JYS18Dlh3n5c2MyknzNwMf5L5WMQ=");
        assert_eq!(
            cljwamp_signature(&c, "secret"),
            "s116flcFj9+PSkmAOHTpUn11nvFuadzlLR+IExiwCWo="
        );
        // The Autobahn order over the clj-wamp challenge is a different signature.
        assert_eq!(
            sign("secret", &c),
            "pxjl9uEbQYCU5EzGOtX8pykBwnzdgFr8hhwJUV+X5d0="
        );
        assert_eq!(
            cljwamp_signature(
                "5Ah6fWOs1wC+1ApXtc5Q3UOmJtjMY3VA6JCMl0MnvqE=",
                "secret-password"
            ),
            "2Oxmohn5CQYLENhb7uuPDXpCNXBidePqs6upJVT78SE="
        );
        assert_eq!(
            cljwamp_signature("abc", "pässwörd"),
            "sxugkmMJow4G9r/CVApOlSJDYB/aFXLtLxTzH1W2bH8="
        );
    }

    #[test]
    fn signatures_compare_exactly() {
        let good = sign("k", "m");
        assert!(signature_matches(&good, &good));
        assert!(!signature_matches(&good, &sign("k", "n")));
        assert!(!signature_matches(&good, "not base64!"));
        assert!(!signature_matches(&good, ""));
    }

    #[test]
    fn timestamps() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_373_137_200_123);
        assert_eq!(utc_timestamp(t), "2013-07-06T19:00:00.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&utc_timestamp(leap)[..10], "2000-02-29");
    }

    #[test]
    fn challenge_is_json_with_authextra_when_salted() {
        let salt = Salt {
            salt: "s".into(),
            iterations: 10,
            keylen: 16,
        };
        let c = autobahn_challenge("id", "k", "ts", "sess", &json!({}), Some(&salt));
        let v: Value = serde_json::from_str(&c).unwrap();
        assert_eq!(v["authkey"], "k");
        assert_eq!(v["sessionid"], "sess");
        assert_eq!(
            v["authextra"],
            json!({"salt": "s", "iterations": 10, "keylen": 16})
        );
    }

    #[test]
    fn permission_precedence() {
        let p = Permissions::all().deny(Action::Call, "urn:a:secret");
        assert!(p.allows(Action::Call, "urn:a:open"));
        assert!(!p.allows(Action::Call, "urn:a:secret"));
        let p = Permissions::none()
            .allow_call("urn:*")
            .deny_call("urn:x*")
            .allow_call("urn:xy*");
        assert!(p.allows(Action::Call, "urn:a"));
        assert!(!p.allows(Action::Call, "urn:xa"));
        assert!(p.allows(Action::Call, "urn:xyz"));
        assert!(!p.allows(Action::Subscribe, "urn:a"));
        let p = Permissions::all().with_category(Action::Publish, false);
        assert!(!p.allows(Action::Publish, "urn:a") && p.allows(Action::Subscribe, "urn:a"));
    }
}
