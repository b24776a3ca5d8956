//! WAMP-CRA authentication and per-URI authorization for a router.
//!
//! ```
//! use tower_wamp::{WampRouter, auth::{Secret, WampCra}, core::auth::{AuthKey, Permissions}};
//!
//! let cra = WampCra::new(
//!     // Look up the secret of an auth key (a user name).
//!     |_session, key: String, _extra| async move {
//!         (key == "ada").then(|| Secret::plain("secret"))
//!     },
//!     // What an authenticated key may do; consulted for every action.
//!     |_session, key: AuthKey| async move {
//!         match key {
//!             AuthKey::Key(_) => Permissions::all(),
//!             _ => Permissions::none().allow_subscribe("http://example.com/event#*"),
//!         }
//!     },
//! )
//! .allow_anonymous(true);
//! let router: WampRouter = WampRouter::new().auth(cra);
//! ```

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    net::{IpAddr, SocketAddr},
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use futures_util::FutureExt as _;
use http::request::Parts;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use crate::{
    Call, PublishRule, RpcError, Session, SubscribeRule,
    clip::Clip,
    core::{
        auth::{
            Action, AuthKey, AuthState, Permissions, Salt, autobahn_challenge, cljwamp_challenge,
            cljwamp_signature, derive_key, sign, signature_matches, utc_timestamp,
        },
        codec::v1,
        random_token,
    },
    handler::BoxFuture,
    router::{Inner, panic_message},
};

/// `http://api.wamp.ws/procedure#authreq`.
pub const AUTHREQ: &str = "http://api.wamp.ws/procedure#authreq";
/// `http://api.wamp.ws/procedure#auth`.
pub const AUTH: &str = "http://api.wamp.ws/procedure#auth";

/// The secret of an auth key.
///
/// ```
/// use tower_wamp::auth::Secret;
/// // Store the password and let the router derive the key ...
/// let s = Secret::salted("secret", "salt123", 1000, 32);
/// // ... or store only the derived key.
/// let d = Secret::derived("MDS8Yxpu4J/vkHJ8dNEgqECYsI0uRDh2oZ5eN0vYPvo=", "salt123", 1000, 32);
/// assert_eq!(s.signing_key(), d.signing_key());
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Secret {
    /// A plain secret: the HMAC key itself.
    Plain(String),
    /// A password and the salt to derive the HMAC key with (PBKDF2-HMAC-SHA256).
    Salted {
        /// The password.
        password: String,
        /// How to derive.
        salt: Salt,
    },
    /// An already derived key (the base64 text) and the salt it was derived with.
    Derived {
        /// `derive_key(password, salt, iterations, keylen)`.
        key: String,
        /// How it was derived (sent to the client).
        salt: Salt,
    },
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets never appear in logs.
        f.write_str(match self {
            Self::Plain(_) => "Secret::Plain(<redacted>)",
            Self::Salted { .. } => "Secret::Salted(<redacted>)",
            Self::Derived { .. } => "Secret::Derived(<redacted>)",
        })
    }
}

impl Secret {
    /// A plain secret.
    pub fn plain(secret: impl Into<String>) -> Self {
        Self::Plain(secret.into())
    }

    /// A salted password.
    pub fn salted(
        password: impl Into<String>,
        salt: impl Into<String>,
        iterations: u32,
        keylen: usize,
    ) -> Self {
        Self::Salted {
            password: password.into(),
            salt: Salt {
                salt: salt.into(),
                iterations,
                keylen,
            },
        }
    }

    /// A key derived with [`derive_key`].
    pub fn derived(
        key: impl Into<String>,
        salt: impl Into<String>,
        iterations: u32,
        keylen: usize,
    ) -> Self {
        Self::Derived {
            key: key.into(),
            salt: Salt {
                salt: salt.into(),
                iterations,
                keylen,
            },
        }
    }

    /// The HMAC key signatures are made with.
    #[must_use]
    pub fn signing_key(&self) -> String {
        match self {
            Self::Plain(s) => s.clone(),
            Self::Salted { password, salt } => {
                derive_key(password, &salt.salt, salt.iterations, salt.keylen)
            }
            Self::Derived { key, .. } => key.clone(),
        }
    }

    pub(crate) fn salt(&self) -> Option<&Salt> {
        match self {
            Self::Plain(_) => None,
            Self::Salted { salt, .. } | Self::Derived { salt, .. } => Some(salt),
        }
    }
}

/// Which WAMP-CRA the router speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CraFlavor {
    /// Autobahn's (default): JSON challenge, `HMAC(key = secret, message = challenge)`,
    /// salted secrets.
    #[default]
    Autobahn,
    /// clj-wamp's: `HMAC(key = secret-ms-session, message = authKey)` challenge, expected
    /// signature `HMAC(key = challenge, message = secret)`; for front ends built from
    /// clj-wamp's template.
    CljWamp,
}

type SecretFn = Arc<dyn Fn(Session, String, Value) -> BoxFuture<Option<Secret>> + Send + Sync>;
type PermissionsFn = Arc<dyn Fn(Session, AuthKey) -> BoxFuture<Permissions> + Send + Sync>;
type IdentityFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;
type CryptosignFn =
    Arc<dyn Fn(Session, Option<String>, [u8; 32]) -> BoxFuture<Option<String>> + Send + Sync>;

/// WAMP-CRA configuration: where secrets and permissions come from, and the rules.
///
/// With it, the router answers `http://api.wamp.ws/procedure#authreq` and `#auth`
/// (through the same pipeline and hooks as user procedures) and nothing else is permitted
/// until the signature is verified: CALLs get `http://api.wamp.ws/error#unauthorized`,
/// SUBSCRIBE and PUBLISH are dropped with a `tracing` event.
#[derive(Clone)]
pub struct WampCra {
    pub(crate) secret: SecretFn,
    pub(crate) permissions: PermissionsFn,
    pub(crate) identity: Option<IdentityFn>,
    /// WAMP v2 cryptosign: whose a public key is.
    pub(crate) cryptosign: Option<CryptosignFn>,
    pub(crate) allow_anonymous: bool,
    pub(crate) timeout: Duration,
    pub(crate) flavor: CraFlavor,
    pub(crate) cache_permissions: bool,
    pub(crate) max_failures: u32,
    pub(crate) throttle: Arc<Throttle>,
    derived: Arc<DerivedKeys>,
    /// One PBKDF2 run at a time for tickets checked against a derived key (never cached:
    /// the input is the client's).
    ticket_derivations: Arc<tokio::sync::Semaphore>,
}

/// Failed signatures counted across sessions, per auth key and per peer address (IPv6 by
/// /64 network, since one host commonly has a whole /64), in fixed windows. Keys are stored
/// as SHA-256 digests, so the tables' size does not depend on what clients send; each holds
/// at most [`Throttle::MAX_ENTRIES`] entries, and a full table evicts the entry with the
/// fewest failures among a few, so a flood of new names cannot switch the throttle off.
#[derive(Debug)]
pub(crate) struct Throttle {
    max: u32,
    window: Duration,
    tables: Mutex<ThrottleTables>,
}

#[derive(Debug, Default)]
struct ThrottleTables {
    keys: HashMap<[u8; 32], (u32, Instant)>,
    addresses: HashMap<[u8; 32], (u32, Instant)>,
    pruned: Option<Instant>,
}

impl Throttle {
    const MAX_ENTRIES: usize = 65_536;

    fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            tables: Mutex::default(),
        }
    }

    fn digest(value: &[u8]) -> [u8; 32] {
        Sha256::digest(value).into()
    }

    fn address(peer: IpAddr) -> [u8; 32] {
        match peer {
            IpAddr::V4(v4) => Self::digest(&v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::digest(&v4.octets()),
                None => Self::digest(&v6.octets()[..8]),
            },
        }
    }

    fn live(&self, entry: Option<&(u32, Instant)>, now: Instant) -> bool {
        entry.is_some_and(|(n, start)| *n >= self.max && now.duration_since(*start) < self.window)
    }

    /// Whether the key or the address has used up its failures in the current window.
    fn exhausted(&self, key: &str, peer: Option<IpAddr>) -> bool {
        self.exhausted_by(Some(key), peer)
    }

    /// [`exhausted`](Self::exhausted), with the key left out when `None` (cryptosign: a
    /// public key is public, so failures against it must not lock its owner out).
    fn exhausted_by(&self, key: Option<&str>, peer: Option<IpAddr>) -> bool {
        if self.max == 0 {
            return false;
        }
        let now = Instant::now();
        let tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        key.is_some_and(|key| self.live(tables.keys.get(&Self::digest(key.as_bytes())), now))
            || peer.is_some_and(|ip| self.live(tables.addresses.get(&Self::address(ip)), now))
    }

    fn record_failure(&self, key: &str, peer: Option<IpAddr>) {
        self.record_failure_by(Some(key), peer);
    }

    fn record_failure_by(&self, key: Option<&str>, peer: Option<IpAddr>) {
        if self.max == 0 {
            return;
        }
        let now = Instant::now();
        let mut tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        let tables = &mut *tables;
        let full =
            tables.keys.len() >= Self::MAX_ENTRIES || tables.addresses.len() >= Self::MAX_ENTRIES;
        if full
            && tables
                .pruned
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            tables.pruned = Some(now);
            for table in [&mut tables.keys, &mut tables.addresses] {
                table.retain(|_, (_, start)| now.duration_since(*start) < self.window);
            }
        }
        let names = [
            (
                &mut tables.keys,
                key.map(|key| Self::digest(key.as_bytes())),
            ),
            (&mut tables.addresses, peer.map(Self::address)),
        ];
        for (table, name) in names {
            let Some(name) = name else { continue };
            if table.len() >= Self::MAX_ENTRIES && !table.contains_key(&name) {
                let victim = table
                    .iter()
                    .take(64)
                    .min_by_key(|(_, (n, _))| *n)
                    .map(|(k, _)| *k);
                if let Some(victim) = victim {
                    table.remove(&victim);
                }
            }
            let (n, start) = table.entry(name).or_insert((0, now));
            if now.duration_since(*start) >= self.window {
                (*n, *start) = (0, now);
            }
            *n += 1;
        }
    }

    /// Takes back a failure recorded for an attempt that then succeeded.
    fn refund(&self, key: &str, peer: Option<IpAddr>) {
        let mut tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        let tables = &mut *tables;
        let names = [
            (&mut tables.keys, Some(Self::digest(key.as_bytes()))),
            (&mut tables.addresses, peer.map(Self::address)),
        ];
        for (table, name) in names {
            if let Some((n, _)) = name.and_then(|name| table.get_mut(&name)) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

/// Keys derived from salted secrets, so that PBKDF2 runs once per password and salt, off
/// the runtime's workers, at most two at a time. The blocking task holds its permit and
/// fills the cache itself, so a caller that gives up (its session closed) neither frees a
/// permit early nor loses the result.
#[derive(Debug)]
struct DerivedKeys {
    cache: Arc<Mutex<HashMap<[u8; 32], String>>>,
    running: Arc<tokio::sync::Semaphore>,
}

impl Default for DerivedKeys {
    fn default() -> Self {
        Self {
            cache: Arc::default(),
            running: Arc::new(tokio::sync::Semaphore::new(2)),
        }
    }
}

impl DerivedKeys {
    const MAX_ENTRIES: usize = 4096;

    fn cached(&self, id: &[u8; 32]) -> Option<String> {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    async fn signing_key(&self, secret: &Secret) -> Option<String> {
        let Secret::Salted { password, salt } = secret else {
            return Some(secret.signing_key());
        };
        let mut h = Sha256::new();
        for part in [password.as_bytes(), &[0], salt.salt.as_bytes(), &[0]] {
            h.update(part);
        }
        h.update(salt.iterations.to_le_bytes());
        h.update((salt.keylen as u64).to_le_bytes());
        let id: [u8; 32] = h.finalize().into();
        if let Some(key) = self.cached(&id) {
            return Some(key);
        }
        let permit = self.running.clone().acquire_owned().await.ok()?;
        // Another session may have derived it while this one waited.
        if let Some(key) = self.cached(&id) {
            return Some(key);
        }
        let (password, salt, cache) = (password.clone(), salt.clone(), self.cache.clone());
        tokio::task::spawn_blocking(move || {
            let key = derive_key(&password, &salt.salt, salt.iterations, salt.keylen);
            let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.len() >= Self::MAX_ENTRIES {
                cache.clear();
            }
            cache.insert(id, key.clone());
            drop(permit);
            key
        })
        .await
        .ok()
    }
}

impl fmt::Debug for WampCra {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WampCra")
            .field("allow_anonymous", &self.allow_anonymous)
            .field("timeout", &self.timeout)
            .field("flavor", &self.flavor)
            .field("cache_permissions", &self.cache_permissions)
            .field("max_failures", &self.max_failures)
            .field(
                "failure_throttle",
                &(self.throttle.max, self.throttle.window),
            )
            .finish_non_exhaustive()
    }
}

impl WampCra {
    /// WAMP-CRA with an async secret provider `(session, auth_key, auth_extra) ->
    /// Option<Secret>` and an async permissions provider `(session, auth_key) ->
    /// Permissions`.
    pub fn new<SF, SFut, PF, PFut>(secret: SF, permissions: PF) -> Self
    where
        SF: Fn(Session, String, Value) -> SFut + Send + Sync + 'static,
        SFut: Future<Output = Option<Secret>> + Send + 'static,
        PF: Fn(Session, AuthKey) -> PFut + Send + Sync + 'static,
        PFut: Future<Output = Permissions> + Send + 'static,
    {
        Self {
            secret: Arc::new(move |s, k, e| Box::pin(secret(s, k, e))),
            permissions: Arc::new(move |s, k| Box::pin(permissions(s, k))),
            identity: None,
            cryptosign: None,
            allow_anonymous: false,
            timeout: Duration::from_secs(20),
            flavor: CraFlavor::Autobahn,
            cache_permissions: false,
            max_failures: 5,
            throttle: Arc::new(Throttle::new(20, Duration::from_secs(600))),
            derived: Arc::default(),
            ticket_derivations: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// Whether `authreq` without a key authenticates as anonymous (default: no).
    #[must_use]
    pub fn allow_anonymous(mut self, yes: bool) -> Self {
        self.allow_anonymous = yes;
        self
    }

    /// Close sessions that have not authenticated after this long (default 20 s; zero
    /// disables). The close is 1008 with the reason `authentication timeout`.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The WAMP-CRA flavour (default [`CraFlavor::Autobahn`]).
    #[must_use]
    pub fn flavor(mut self, flavor: CraFlavor) -> Self {
        self.flavor = flavor;
        self
    }

    /// Ask the permissions provider once per session and keep the answer (default: ask for
    /// every action, so permissions can change while a session is open).
    #[must_use]
    pub fn cache_permissions(mut self, yes: bool) -> Self {
        self.cache_permissions = yes;
        self
    }

    /// After this many invalid signatures a session is closed (default 5): the last one is
    /// answered at once and the session closes with 1008; nothing it sends after is
    /// accepted. Every failure after the first is answered after a growing delay (0.5 s per
    /// failure, at most 2 s), and an `authreq` sent before that delay has passed is refused
    /// with `http://api.wamp.ws/error#too-many-attempts` and counts as a failure, so the
    /// limit holds for a client that does not wait for the answers.
    #[must_use]
    pub fn max_failures(mut self, failures: u32) -> Self {
        self.max_failures = failures.max(1);
        self
    }

    /// Failed signatures allowed per auth key, and per peer IP address, across sessions, in
    /// each `window` (default 20 per 10 minutes; `max` 0 turns it off). Beyond it, `authreq`
    /// for that key or from that address is refused with
    /// `http://api.wamp.ws/error#too-many-attempts` until the window ends, since a limit per
    /// session alone resets on every reconnect.
    ///
    /// The peer address is known when the server runs with
    /// `into_make_service_with_connect_info::<SocketAddr>()`; without it only the key is
    /// counted. Counting per key lets anyone lock a known user out for a window: pick the
    /// window with that in mind.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_wamp::{auth::{Secret, WampCra}, core::auth::{AuthKey, Permissions}};
    /// let cra = WampCra::new(
    ///     |_s, _k: String, _e| async { None::<Secret> },
    ///     |_s, _k: AuthKey| async { Permissions::none() },
    /// )
    /// .failure_throttle(50, Duration::from_secs(300));
    /// ```
    #[must_use]
    pub fn failure_throttle(mut self, max: u32, window: Duration) -> Self {
        self.throttle = Arc::new(Throttle::new(max, window));
        self
    }

    /// Authenticates sessions without CRA from the upgrade request, for identities an
    /// upstream tower layer established (a cookie session, a bearer token): return the
    /// auth key, or `None` to require WAMP-CRA. The parts are those handlers see, without
    /// the WebSocket handshake's own headers (see [`extract`](crate::extract)).
    #[must_use]
    pub fn identity_from(
        mut self,
        identity: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.identity = Some(Arc::new(identity));
        self
    }

    /// Turns on WAMP v2 cryptosign (Ed25519): a client that offers `cryptosign` with its
    /// public key (`authextra.pubkey`, 64 hex digits) and optionally an `authid` is asked to
    /// sign a random 32-byte challenge. `keys(session, authid, public_key)` says whose the
    /// key is: the authid to welcome it as (authrole `user`, then the permissions provider
    /// decides what it may do), or `None` for a key it does not know (ABORT
    /// `wamp.error.no_such_principal`). A wrong signature gets ABORT
    /// `wamp.error.authentication_denied` and counts against the failure throttle. TLS
    /// channel binding is not offered (the CHALLENGE says `channel_binding: null`).
    ///
    /// ```
    /// use tower_wamp::auth::WampCra;
    /// use tower_wamp::core::auth::Permissions;
    ///
    /// const ERIN: &str = "59004fedebf606ec1e61de7cf058b72325798eda820942b3dfd90e315b364c5d";
    /// let cra = WampCra::new(|_s, _key, _extra| async { None }, |_s, _key| async { Permissions::all() })
    ///     .cryptosign(|_session, _authid, key: [u8; 32]| async move {
    ///         let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    ///         (hex == ERIN).then(|| "erin".to_owned())
    ///     });
    /// ```
    #[must_use]
    pub fn cryptosign<F, Fut>(mut self, keys: F) -> Self
    where
        F: Fn(Session, Option<String>, [u8; 32]) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<String>> + Send + 'static,
    {
        self.cryptosign = Some(Arc::new(move |s, a, k| Box::pin(keys(s, a, k))));
        self
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `N` bytes from exactly `2 * N` hex digits.
pub(crate) fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Whether `signature` (192 hex digits: the Ed25519 signature, then the message signed) is
/// `public_key`'s signature of exactly `challenge`.
pub(crate) fn cryptosign_valid(
    public_key: &[u8; 32],
    challenge: &[u8; 32],
    signature: &str,
) -> bool {
    let Some(both) = unhex::<96>(signature) else {
        return false;
    };
    let (sig, message) = both.split_at(64);
    if message != challenge {
        return false;
    }
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(public_key) else {
        return false;
    };
    let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
        return false;
    };
    key.verify_strict(message, &sig).is_ok()
}

/// What a session is permitted.
pub(crate) enum Granted {
    Everything,
    Nothing,
    These(Arc<Permissions>),
}

/// The router's side of WAMP-CRA: the two procedures and the permission checks.
impl Inner<()> {
    /// Whether every session may do everything (no authentication, no role table): then
    /// [`permitted`](Self::permitted) is always `true`.
    pub(crate) fn open_to_all(&self) -> bool {
        self.roles.is_none() && self.auth.is_none()
    }

    /// Whether the session may do `action` on `uri`: always without authentication
    /// configured; otherwise only once authenticated and permitted.
    pub(crate) async fn permitted(&self, session: &Session, action: Action, uri: &str) -> bool {
        match self.permissions(session).await {
            Granted::Everything => true,
            Granted::Nothing => false,
            Granted::These(permissions) => permissions.allows(action, uri),
        }
    }

    /// Whether the session's role (with a role table) discloses it on `uri` to the other
    /// side of `action`.
    pub(crate) async fn role_discloses(
        &self,
        session: &Session,
        action: Action,
        uri: &str,
    ) -> bool {
        if self.roles.is_none() {
            return false;
        }
        match self.permissions(session).await {
            Granted::These(p) => p.discloses(action, uri),
            _ => false,
        }
    }

    /// What the session is permitted: everything without authentication configured,
    /// nothing before it authenticated (or when its provider panicked).
    pub(crate) async fn permissions(&self, session: &Session) -> Granted {
        if let Some(table) = &self.roles {
            // Nothing before authentication, when it is configured.
            if self.auth.is_some()
                && !matches!(session.auth_slot().state, AuthState::Authenticated(_))
            {
                return Granted::Nothing;
            }
            let role = session.authrole();
            return match table.permissions(role.as_deref().unwrap_or("anonymous")) {
                Some(p) => Granted::These(p),
                None => Granted::Nothing,
            };
        }
        let Some(cra) = &self.auth else {
            return Granted::Everything;
        };
        let (key, cached) = {
            let slot = session.auth_slot();
            match &slot.state {
                AuthState::Authenticated(key) => (key.clone(), slot.cached.clone()),
                _ => return Granted::Nothing,
            }
        };
        match cached {
            Some(p) => Granted::These(p),
            // Boxed: asked once per session, and every check's future would be as large.
            None => match Box::pin(self.permissions_of(cra, session, key)).await {
                Some(p) => Granted::These(p),
                None => Granted::Nothing,
            },
        }
    }

    async fn permissions_of(
        &self,
        cra: &WampCra,
        session: &Session,
        key: AuthKey,
    ) -> Option<Arc<Permissions>> {
        match // Inside the async block, a panic before the future exists is caught too.
        AssertUnwindSafe(async { (cra.permissions)(session.clone(), key).await })
            .catch_unwind()
            .await
        {
            Ok(p) => {
                let p = Arc::new(p);
                if cra.cache_permissions {
                    session.auth_slot().cached = Some(p.clone());
                }
                Some(p)
            }
            Err(p) => {
                tracing::error!(session_id = %session.id(), panic = %Clip(&panic_message(&*p)), "permissions provider panicked");
                None
            }
        }
    }

    /// `http://api.wamp.ws/procedure#authreq`.
    pub(crate) async fn authreq(&self, call: Call) -> Result<Value, RpcError> {
        let cra = self
            .auth
            .as_deref()
            .expect("authreq is routed only with auth configured");
        let session = &call.session;
        {
            let mut slot = session.auth_slot();
            if slot.locked {
                return Err(too_many_attempts());
            }
            if slot.retry_after.is_some_and(|t| Instant::now() < t) {
                // Only a client that does not wait for the answer to its last failure gets
                // here: the attempt counts as a failure.
                slot.failures += 1;
                slot.locked = slot.failures >= cra.max_failures;
                let locked = slot.locked;
                drop(slot);
                tracing::debug!("authreq before the last failure's delay passed: refused");
                let error = too_many_attempts();
                if locked {
                    close_after_failures(session, call.call_id.as_str(), &error);
                }
                return Err(error);
            }
            check_can_request(&slot.state)?;
        }
        let args = call.args();
        let key = match args.first() {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => {
                return Err(auth_error(
                    "invalid-argument",
                    "authentication key must be a string",
                ));
            }
        };
        let extra = match args.get(1) {
            None | Some(Value::Null) => Value::Object(serde_json::Map::new()),
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => {
                return Err(auth_error(
                    "invalid-argument",
                    "authentication extra must be an object",
                ));
            }
        };
        if let Some(key) = &key
            && cra.throttle.exhausted(key, peer_ip(&call.parts))
        {
            tracing::warn!(session_id = %session.id(), auth_key = %Clip(key), "authreq refused: too many failed attempts for this key or address");
            return Err(too_many_attempts());
        }
        let Some(key) = key else {
            if !cra.allow_anonymous {
                return Err(auth_error(
                    "anonymous-auth-forbidden",
                    "authentication as anonymous is forbidden",
                ));
            }
            set_pending(session, AuthKey::Anonymous, None)?;
            tracing::info!(session_id = %session.id(), "anonymous authentication requested");
            return Ok(Value::Null);
        };
        let secret = match AssertUnwindSafe(async {
            (cra.secret)(session.clone(), key.clone(), extra.clone()).await
        })
        .catch_unwind()
        .await
        {
            Ok(Some(secret)) => secret,
            Ok(None) => {
                return Err(auth_error(
                    "no-such-authkey",
                    "authentication key does not exist",
                ));
            }
            Err(p) => {
                tracing::error!(session_id = %session.id(), panic = %Clip(&panic_message(&*p)), "secret provider panicked");
                return Err(RpcError::internal("secret provider failed"));
            }
        };
        let Some(signing_key) = cra.derived.signing_key(&secret).await else {
            return Err(RpcError::internal("key derivation failed"));
        };
        let (challenge, expected) = match cra.flavor {
            CraFlavor::CljWamp => {
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis();
                let c = cljwamp_challenge(&signing_key, now_ms, session.id().as_str(), &key);
                let expected = cljwamp_signature(&c, &signing_key);
                (c, expected)
            }
            CraFlavor::Autobahn => {
                let c = autobahn_challenge(
                    &random_token(12),
                    &key,
                    &utc_timestamp(std::time::SystemTime::now()),
                    session.id().as_str(),
                    &extra,
                    secret.salt(),
                );
                let expected = sign(&signing_key, &c);
                (c, expected)
            }
        };
        set_pending(session, AuthKey::Key(key), Some(expected))?;
        tracing::info!(session_id = %session.id(), "authentication challenge issued");
        Ok(Value::String(challenge))
    }

    /// `http://api.wamp.ws/procedure#auth`.
    pub(crate) async fn authenticate(&self, call: Call) -> Result<Value, RpcError> {
        let cra = self
            .auth
            .as_deref()
            .expect("auth is routed only with auth configured");
        let session = &call.session;
        let signature = call.args().first().and_then(Value::as_str);
        let outcome = {
            let mut slot = session.auth_slot();
            if slot.locked {
                return Err(too_many_attempts());
            }
            // Another session may have used up this key's or address's failures since the
            // challenge was issued: the signature is not even compared.
            if let AuthState::Pending {
                key: AuthKey::Key(k),
                ..
            } = &slot.state
                && cra.throttle.exhausted(k, peer_ip(&call.parts))
            {
                slot.state = AuthState::Unauthenticated;
                return Err(too_many_attempts());
            }
            match &slot.state {
                AuthState::Authenticated(_) => return Err(already_authenticated()),
                AuthState::Unauthenticated => {
                    return Err(auth_error(
                        "no-authentication-requested",
                        "no authentication previously requested",
                    ));
                }
                AuthState::Pending { key, expected } => {
                    let ok = match expected {
                        None => true,
                        Some(expected) => signature.is_some_and(|s| signature_matches(expected, s)),
                    };
                    if ok {
                        let key = key.clone();
                        slot.state = AuthState::Authenticated(key.clone());
                        slot.assigned_role = self.role_of(&key).map(Into::into);
                        Ok(key)
                    } else {
                        // The challenge is single-use: a new authreq issues a fresh one. The
                        // failure counts now, when it is made, not when it is answered.
                        let key = match key {
                            AuthKey::Key(k) => Some(k.clone()),
                            _ => None,
                        };
                        slot.state = AuthState::Unauthenticated;
                        slot.failures += 1;
                        let delay = failure_delay(slot.failures);
                        slot.retry_after = Some(Instant::now() + delay);
                        slot.locked = slot.failures >= cra.max_failures;
                        Err((slot.failures, slot.locked, delay, key))
                    }
                }
            }
        };
        match outcome {
            Ok(key) => {
                tracing::info!(session_id = %session.id(), auth_key = %Clip(&key.to_string()), "authenticated");
                Ok(self.permission_summary(cra, session, key).await)
            }
            Err((failures, locked, delay, key)) => {
                tracing::warn!(session_id = %session.id(), failures, "invalid WAMP-CRA signature");
                if let Some(key) = &key {
                    cra.throttle.record_failure(key, peer_ip(&call.parts));
                }
                let error = auth_error(
                    "invalid-signature",
                    "signature for authentication request is invalid",
                );
                if locked {
                    // The last attempt: answer at once and close without waiting.
                    close_after_failures(session, call.call_id.as_str(), &error);
                    return Err(error);
                }
                tokio::time::sleep(delay).await;
                Err(error)
            }
        }
    }

    /// `{"rpc": {uri: true}, "subscribe": {pattern: true}, "publish": {pattern: true}}` for
    /// the registered procedures and topic patterns this session may use.
    async fn permission_summary(&self, cra: &WampCra, session: &Session, key: AuthKey) -> Value {
        let Some(permissions) = self.permissions_of(cra, session, key).await else {
            return serde_json::json!({"rpc": {}, "subscribe": {}, "publish": {}});
        };
        let mut rpc = serde_json::Map::new();
        let mut procedures: Vec<&String> = self.procedures.keys().collect();
        procedures.sort();
        for uri in procedures {
            if permissions.allows(Action::Call, uri) {
                rpc.insert(uri.clone(), Value::Bool(true));
            }
        }
        let mut subscribe = serde_json::Map::new();
        let mut publish = serde_json::Map::new();
        for (pattern, rules) in &self.topic_patterns {
            let uri = pattern.strip_suffix('*').unwrap_or(pattern);
            if !matches!(rules.subscribe_rule(), SubscribeRule::Deny)
                && permissions.allows(Action::Subscribe, uri)
            {
                subscribe.insert(pattern.clone(), Value::Bool(true));
            }
            if !matches!(rules.publish_rule(), PublishRule::Deny)
                && permissions.allows(Action::Publish, uri)
            {
                publish.insert(pattern.clone(), Value::Bool(true));
            }
        }
        serde_json::json!({"rpc": rpc, "subscribe": subscribe, "publish": publish})
    }
}

/// The router's answer to a WAMP v2 HELLO, or to an AUTHENTICATE.
#[derive(Debug)]
pub(crate) enum V2Auth {
    /// Open the session as this identity (`None`: no authentication configured).
    Welcome {
        key: Option<AuthKey>,
        authid: String,
        authrole: String,
        authmethod: &'static str,
        authprovider: &'static str,
    },
    /// Send CHALLENGE for `method` with this extra; AUTHENTICATE must match `expected`.
    Challenge {
        method: &'static str,
        extra: serde_json::Map<String, Value>,
        expected: Expected,
        key: String,
    },
    /// Refuse with ABORT.
    Abort {
        reason: &'static str,
        message: String,
    },
}

/// What a v2 AUTHENTICATE must carry.
pub(crate) enum Expected {
    /// The WAMP-CRA signature of the challenge.
    Signature(String),
    /// The ticket itself.
    Ticket(String),
    /// A ticket whose PBKDF2 derivation with `salt` is `key` (a stored derived key).
    DerivedTicket { key: String, salt: Salt },
    /// The Ed25519 signature of `challenge` by `public_key`.
    Cryptosign {
        public_key: [u8; 32],
        challenge: [u8; 32],
    },
}

impl fmt::Debug for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Tickets and keys never appear in logs.
        f.write_str(match self {
            Self::Signature(_) => "Expected::Signature(<redacted>)",
            Self::Ticket(_) => "Expected::Ticket(<redacted>)",
            Self::DerivedTicket { .. } => "Expected::DerivedTicket(<redacted>)",
            Self::Cryptosign { .. } => "Expected::Cryptosign",
        })
    }
}

/// WAMP v2 authentication: anonymous, the upstream identity, and WAMP-CRA with the same
/// secret provider, throttle and key derivation as v1.
impl Inner<()> {
    /// The authrole the role table assigns to an authenticated key, if any.
    pub(crate) fn role_of(&self, key: &AuthKey) -> Option<&str> {
        match (&self.roles, key) {
            (Some(table), AuthKey::Key(k)) => table.role_of(k),
            _ => None,
        }
    }

    /// The authrole of a session that authenticated with `key`.
    fn authrole_for(&self, key: &str) -> String {
        self.role_of(&AuthKey::Key(key.to_owned()))
            .unwrap_or("user")
            .to_owned()
    }

    pub(crate) async fn v2_hello(
        &self,
        session: &Session,
        parts: &Parts,
        authid: Option<String>,
        authmethods: &[String],
        authextra: &serde_json::Map<String, Value>,
    ) -> V2Auth {
        let Some(cra) = self.auth.as_deref() else {
            return V2Auth::Welcome {
                key: None,
                authid: random_token(12),
                authrole: "anonymous".into(),
                authmethod: "anonymous",
                authprovider: "static",
            };
        };
        let identity = cra.identity.as_ref().and_then(|identity| {
            std::panic::catch_unwind(AssertUnwindSafe(|| identity(parts))).unwrap_or_else(|p| {
                tracing::error!(session_id = %session.id(), panic = %Clip(&panic_message(&*p)), "identity_from panicked: WAMP-CRA is required");
                None
            })
        });
        if let Some(key) = identity {
            return V2Auth::Welcome {
                key: Some(AuthKey::Key(key.clone())),
                authrole: self.authrole_for(&key),
                authid: key,
                authmethod: "upstream",
                authprovider: "identity_from",
            };
        }
        let anonymous = || V2Auth::Welcome {
            key: Some(AuthKey::Anonymous),
            authid: random_token(12),
            authrole: "anonymous".into(),
            authmethod: "anonymous",
            authprovider: "static",
        };
        let offered: Vec<&str> = if authmethods.is_empty() {
            vec!["anonymous"]
        } else {
            authmethods.iter().map(String::as_str).collect()
        };
        for method in offered {
            match method {
                "wampcra" => {
                    let Some(key) = authid.clone() else { continue };
                    return self.v2_challenge(cra, session, parts, key).await;
                }
                "ticket" => {
                    let Some(key) = authid.clone() else { continue };
                    return self.v2_ticket(cra, session, parts, key).await;
                }
                "cryptosign" => {
                    let Some(keys) = &cra.cryptosign else {
                        continue;
                    };
                    // Without a public key, the client's next method.
                    if !authextra.contains_key("pubkey") {
                        continue;
                    }
                    return self
                        .v2_cryptosign(keys, session, parts, authid.clone(), authextra)
                        .await;
                }
                "anonymous" if cra.allow_anonymous => return anonymous(),
                _ => {}
            }
        }
        V2Auth::Abort {
            reason: "wamp.error.no_matching_auth_method",
            message: "offer wampcra with an authid".into(),
        }
    }

    async fn v2_challenge(
        &self,
        cra: &WampCra,
        session: &Session,
        parts: &Parts,
        key: String,
    ) -> V2Auth {
        let secret = match v2_secret(cra, session, parts, &key).await {
            Ok(secret) => secret,
            Err(abort) => return abort,
        };
        let Some(signing_key) = cra.derived.signing_key(&secret).await else {
            return V2Auth::Abort {
                reason: "wamp.error.authentication_failed",
                message: "key derivation failed".into(),
            };
        };
        let challenge = serde_json::json!({
            "authid": key,
            "authrole": self.authrole_for(&key),
            "authmethod": "wampcra",
            "authprovider": "static",
            "nonce": random_token(16),
            "timestamp": utc_timestamp(std::time::SystemTime::now()),
            "session": session.id().as_u64(),
        })
        .to_string();
        let expected = sign(&signing_key, &challenge);
        let mut extra = serde_json::Map::new();
        extra.insert("challenge".into(), Value::String(challenge));
        if let Some(salt) = secret.salt() {
            extra.insert("salt".into(), Value::String(salt.salt.clone()));
            extra.insert("iterations".into(), Value::from(salt.iterations));
            extra.insert("keylen".into(), Value::from(salt.keylen));
        }
        tracing::info!(session_id = %session.id(), "authentication challenge issued");
        V2Auth::Challenge {
            method: "wampcra",
            extra,
            expected: Expected::Signature(expected),
            key,
        }
    }

    /// Cryptosign: whose the offered public key is, then a random challenge to sign.
    async fn v2_cryptosign(
        &self,
        keys: &CryptosignFn,
        session: &Session,
        parts: &Parts,
        authid: Option<String>,
        authextra: &serde_json::Map<String, Value>,
    ) -> V2Auth {
        let Some(public_key) = authextra
            .get("pubkey")
            .and_then(Value::as_str)
            .and_then(unhex::<32>)
        else {
            return V2Auth::Abort {
                reason: "wamp.error.invalid_argument",
                message: "cryptosign needs authextra.pubkey: 64 hex digits".into(),
            };
        };
        let cra = self
            .auth
            .as_deref()
            .expect("cryptosign is configured on WampCra");
        // Failures count against the address only: a public key is public, and anyone
        // could otherwise lock its owner out.
        if cra.throttle.exhausted_by(None, peer_ip(parts)) {
            return V2Auth::Abort {
                reason: "wamp.error.authentication_denied",
                message: "too many failed authentication attempts: try again later".into(),
            };
        }
        let asked = authid.clone();
        let owner = match AssertUnwindSafe(async {
            keys(session.clone(), authid, public_key).await
        })
        .catch_unwind()
        .await
        {
            Ok(owner) => owner,
            Err(p) => {
                tracing::error!(session_id = %session.id(), panic = %Clip(&panic_message(&*p)), "cryptosign key provider panicked");
                return V2Auth::Abort {
                    reason: "wamp.error.authentication_failed",
                    message: "key provider failed".into(),
                };
            }
        };
        let Some(key) = owner else {
            return V2Auth::Abort {
                reason: "wamp.error.no_such_principal",
                message: "unknown public key".into(),
            };
        };
        // A client that names itself must be the key's owner.
        if asked.is_some_and(|asked| asked != key) {
            return V2Auth::Abort {
                reason: "wamp.error.authentication_denied",
                message: "the key is not the authid's".into(),
            };
        }
        let mut challenge = [0u8; 32];
        getrandom::fill(&mut challenge).expect("the OS has a random source");
        let mut extra = serde_json::Map::new();
        extra.insert("challenge".into(), Value::String(hex(&challenge)));
        extra.insert("channel_binding".into(), Value::Null);
        V2Auth::Challenge {
            method: "cryptosign",
            extra,
            expected: Expected::Cryptosign {
                public_key,
                challenge,
            },
            key,
        }
    }

    /// Ticket authentication: the ticket is the secret the secret provider gives for the
    /// authid (a plain secret, or a salted secret's password; for a derived key, the
    /// password it was derived from).
    async fn v2_ticket(
        &self,
        cra: &WampCra,
        session: &Session,
        parts: &Parts,
        key: String,
    ) -> V2Auth {
        let expected = match v2_secret(cra, session, parts, &key).await {
            Ok(
                Secret::Plain(ticket)
                | Secret::Salted {
                    password: ticket, ..
                },
            ) => Expected::Ticket(ticket),
            Ok(Secret::Derived { key, salt }) => Expected::DerivedTicket { key, salt },
            Err(abort) => return abort,
        };
        V2Auth::Challenge {
            method: "ticket",
            extra: serde_json::Map::new(),
            expected,
            key,
        }
    }

    /// Checks the AUTHENTICATE of a v2 session: one attempt per session.
    pub(crate) async fn v2_authenticate(
        &self,
        parts: &Parts,
        method: &'static str,
        key: String,
        expected: Expected,
        signature: &str,
    ) -> V2Auth {
        let Some(cra) = self.auth.as_deref() else {
            return V2Auth::Abort {
                reason: "wamp.error.authentication_failed",
                message: "no authentication configured".into(),
            };
        };
        let peer = peer_ip(parts);
        // Cryptosign failures count against the address only (see `v2_cryptosign`).
        let throttled = (method != "cryptosign").then_some(key.as_str());
        if cra.throttle.exhausted_by(throttled, peer) {
            return V2Auth::Abort {
                reason: "wamp.error.authentication_denied",
                message: "too many failed authentication attempts: try again later".into(),
            };
        }
        // Equal in constant time, whatever the lengths (digests of both are compared).
        let equal = |a: &str, b: &str| {
            use subtle::ConstantTimeEq as _;
            bool::from(Sha256::digest(a.as_bytes()).ct_eq(&Sha256::digest(b.as_bytes())))
        };
        let matches = match expected {
            Expected::Signature(expected) => signature_matches(&expected, signature),
            Expected::Cryptosign {
                public_key,
                challenge,
            } => cryptosign_valid(&public_key, &challenge, signature),
            Expected::Ticket(ticket) => equal(&ticket, signature),
            Expected::DerivedTicket { key: stored, salt } => {
                // The attempt counts before the work, so that a client who gives up (or
                // is cut off by the deadline) while PBKDF2 runs has still paid for it.
                cra.throttle.record_failure(&key, peer);
                let Ok(permit) = cra.ticket_derivations.clone().try_acquire_owned() else {
                    tracing::warn!("ticket refused: another ticket is being checked");
                    return V2Auth::Abort {
                        reason: "wamp.error.authentication_failed",
                        message: "busy: try again".into(),
                    };
                };
                let ticket = signature.to_owned();
                let derived = tokio::task::spawn_blocking(move || {
                    let derived = derive_key(&ticket, &salt.salt, salt.iterations, salt.keylen);
                    drop(permit);
                    derived
                })
                .await;
                let ok = derived.is_ok_and(|derived| equal(&derived, &stored));
                if ok {
                    cra.throttle.refund(&key, peer);
                } else {
                    tracing::warn!("invalid ticket");
                    return V2Auth::Abort {
                        reason: "wamp.error.authentication_denied",
                        message: "invalid ticket".into(),
                    };
                }
                ok
            }
        };
        if matches {
            tracing::info!(auth_key = %Clip(&key), method, "authenticated");
            V2Auth::Welcome {
                key: Some(AuthKey::Key(key.clone())),
                authrole: self.authrole_for(&key),
                authid: key,
                authmethod: method,
                authprovider: "static",
            }
        } else {
            tracing::warn!(method, "invalid signature");
            cra.throttle.record_failure_by(throttled, peer);
            V2Auth::Abort {
                reason: "wamp.error.authentication_denied",
                message: "invalid signature".into(),
            }
        }
    }
}

/// The secret of a v2 authid, unless the throttle refuses it, it is unknown, or the
/// provider fails: then the ABORT to send.
async fn v2_secret(
    cra: &WampCra,
    session: &Session,
    parts: &Parts,
    key: &str,
) -> Result<Secret, V2Auth> {
    if cra.throttle.exhausted(key, peer_ip(parts)) {
        tracing::warn!(session_id = %session.id(), auth_key = %Clip(key), "HELLO refused: too many failed attempts for this key or address");
        return Err(V2Auth::Abort {
            reason: "wamp.error.authentication_denied",
            message: "too many failed authentication attempts: try again later".into(),
        });
    }
    let extra = Value::Object(serde_json::Map::new());
    match AssertUnwindSafe(async { (cra.secret)(session.clone(), key.to_owned(), extra).await })
        .catch_unwind()
        .await
    {
        Ok(Some(secret)) => Ok(secret),
        Ok(None) => Err(V2Auth::Abort {
            reason: "wamp.error.no_such_principal",
            message: "no such authid".into(),
        }),
        Err(p) => {
            tracing::error!(session_id = %session.id(), panic = %Clip(&panic_message(&*p)), "secret provider panicked");
            Err(V2Auth::Abort {
                reason: "wamp.error.authentication_failed",
                message: "secret provider failed".into(),
            })
        }
    }
}

fn auth_error(name: &str, description: &str) -> RpcError {
    RpcError::new(format!("http://api.wamp.ws/error#{name}"), description)
}

/// Answers the attempt that used up the session's failures and closes the session (1008)
/// without waiting.
fn close_after_failures(session: &Session, call_id: &str, error: &RpcError) {
    tracing::warn!(session_id = %session.id(), "too many failed authentication attempts: closing");
    if let Some(outbox) = session.outbox() {
        let _ = outbox.push_reply(v1::encode_call_error(call_id, error).into());
        outbox.close(1008, "too many failed authentication attempts", true);
    }
}

fn too_many_attempts() -> RpcError {
    auth_error(
        "too-many-attempts",
        "too many failed authentication attempts: try again later",
    )
}

/// How long the answer to the `failures`-th failed signature waits: nothing for the first,
/// then 0.5 s more for each, at most 2 s.
fn failure_delay(failures: u32) -> Duration {
    Duration::from_millis(500 * u64::from(failures.saturating_sub(1))).min(Duration::from_secs(2))
}

/// The peer's IP address, when the server runs with connect info.
fn peer_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
}

fn already_authenticated() -> RpcError {
    auth_error("already-authenticated", "already authenticated")
}

fn check_can_request(state: &AuthState) -> Result<(), RpcError> {
    match state {
        AuthState::Unauthenticated => Ok(()),
        AuthState::Authenticated(_) => Err(already_authenticated()),
        AuthState::Pending { .. } => Err(auth_error(
            "authentication-already-requested",
            "authentication request already issued - authentication pending",
        )),
    }
}

/// Records a pending authentication, unless another authreq got there first.
fn set_pending(session: &Session, key: AuthKey, expected: Option<String>) -> Result<(), RpcError> {
    let mut slot = session.auth_slot();
    check_can_request(&slot.state)?;
    slot.state = AuthState::Pending { key, expected };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_derivation_whose_caller_gave_up_still_fills_the_cache() {
        let keys = Arc::new(DerivedKeys::default());
        let secret = Secret::salted("pw", "salt", 200_000, 32);
        let caller = tokio::spawn({
            let (keys, secret) = (keys.clone(), secret.clone());
            async move { keys.signing_key(&secret).await }
        });
        // Wait until the derivation runs, then give up on it (as a closing session does).
        while keys.running.available_permits() == 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        caller.abort();
        // The permit stays taken until the derivation is done, and the result is kept.
        assert_eq!(keys.running.available_permits(), 1);
        for _ in 0..2000 {
            if keys.running.available_permits() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(keys.running.available_permits(), 2);
        let id_count = keys.cache.lock().unwrap().len();
        assert_eq!(id_count, 1);
        assert_eq!(keys.signing_key(&secret).await, Some(secret.signing_key()));
    }

    /// The spec's cryptosign vectors without a channel id.
    #[test]
    fn cryptosign_signatures_as_the_spec_vectors_have_them() {
        use ed25519_dalek::Signer as _;
        for (private, challenge, signature) in [
            (
                "4d57d97a68f555696620a6d849c0ce582568518d729eb753dc7c732de2804510",
                "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
                "b32675b221f08593213737bef8240e7c15228b07028e19595294678c90d11c0cae80a357331bfc5cc9fb71081464e6e75013517c2cf067ad566a6b7b728e5d03ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            ),
            (
                "d511fe78e23934b3dadb52fcd022974b80bd92bccc7c5cf404e46cc0a8a2f5cd",
                "b26c1f87c13fc1da14997f1b5a71995dff8fbe0a62fae8473c7bdbd05bfb607d",
                "d4209ad10d5aff6bfbc009d7e924795de138a63515efc7afc6b01b7fe5201372190374886a70207b042294af5bd64ce725cd8dceb344e6d11c09d1aaaf4d660fb26c1f87c13fc1da14997f1b5a71995dff8fbe0a62fae8473c7bdbd05bfb607d",
            ),
            (
                "6e1fde9cf9e2359a87420b65a87dc0c66136e66945196ba2475990d8a0c3a25b",
                "b05e6b8ad4d69abf74aa3be3c0ee40ae07d66e1895b9ab09285a2f1192d562d2",
                "7beb282184baadd08f166f16dd683b39cab53816ed81e6955def951cb2ddad1ec184e206746fd82bda075af03711d3d5658fc84a76196b0fa8d1ebc92ef9f30bb05e6b8ad4d69abf74aa3be3c0ee40ae07d66e1895b9ab09285a2f1192d562d2",
            ),
        ] {
            let signing = ed25519_dalek::SigningKey::from_bytes(&unhex::<32>(private).unwrap());
            let public = signing.verifying_key().to_bytes();
            let challenge = unhex::<32>(challenge).unwrap();
            // Our signing of the challenge is the vector's (Ed25519 is deterministic).
            let ours = format!(
                "{}{}",
                hex(&signing.sign(&challenge).to_bytes()),
                hex(&challenge)
            );
            assert_eq!(ours, signature);
            assert!(cryptosign_valid(&public, &challenge, signature));
            // Another challenge, a changed signature, or garbage: refused.
            let mut other = challenge;
            other[0] ^= 1;
            assert!(!cryptosign_valid(&public, &other, signature));
            let mut changed = signature.to_owned();
            changed.replace_range(0..2, if &signature[0..2] == "00" { "01" } else { "00" });
            assert!(!cryptosign_valid(&public, &challenge, &changed));
            assert!(!cryptosign_valid(&public, &challenge, "zz"));
        }
    }
}
