//! Which `Origin`s may open a WAMP session.
//!
//! Browsers send `Origin` with every WebSocket handshake and do not apply the same-origin
//! policy to WebSockets, so without a check any web page can open a session with the
//! user's cookies (cross-site WebSocket hijacking). The default is same-origin: the
//! `Origin`'s host and port must equal the request's `Host`.
//!
//! A request without `Origin` comes from a non-browser client; it is allowed unless
//! [`OriginPolicy::require_origin`] is set.

use std::{fmt, sync::Arc};

use http::{HeaderMap, header};
use regex::Regex;

/// The scheme the request arrived with, as a proxy reports it.
fn forwarded_scheme(headers: &HeaderMap) -> Option<String> {
    if let Some(proto) = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        // The first proxy's view, for a list.
        return proto
            .split(',')
            .next()
            .map(|p| p.trim().to_ascii_lowercase());
    }
    let forwarded = headers.get("forwarded").and_then(|v| v.to_str().ok())?;
    forwarded
        .split([',', ';'])
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("proto"))
        .map(|(_, v)| v.trim().trim_matches('"').to_ascii_lowercase())
}

fn scheme_allowed(origin_scheme: &str, required: Option<&str>, headers: &HeaderMap) -> bool {
    let origin_scheme = origin_scheme.to_ascii_lowercase();
    if let Some(required) = required {
        return origin_scheme == required;
    }
    if origin_scheme != "http" && origin_scheme != "https" {
        return false;
    }
    forwarded_scheme(headers).is_none_or(|s| s == origin_scheme)
}

#[derive(Clone)]
enum Rule {
    Any,
    /// Same host and port; the scheme given, or else http/https as the request says.
    SameOrigin(Option<String>),
    Regex(Regex),
    List(Vec<String>),
    Predicate(Arc<dyn Fn(&str) -> bool + Send + Sync>),
}

/// The origin check of the WebSocket handshake.
///
/// ```
/// use tower_wamp::OriginPolicy;
///
/// // As in clj-wamp: a regex that must match the whole Origin.
/// let p = OriginPolicy::regex(r"https?://(localhost|127\.0\.0\.1)(:\d+)?").unwrap();
/// assert!(p.allows("http://localhost:8080"));
/// assert!(!p.allows("http://localhost.evil.com"));
///
/// let p = OriginPolicy::list(["https://app.example.com"]);
/// assert!(p.allows("https://app.example.com") && !p.allows("https://example.com"));
///
/// let p = OriginPolicy::predicate(|o| o.ends_with(".example.com"));
/// assert!(p.allows("https://a.example.com"));
/// ```
#[derive(Clone)]
pub struct OriginPolicy {
    rule: Rule,
    require: bool,
}

impl fmt::Debug for OriginPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = match &self.rule {
            Rule::Any => "any".to_owned(),
            Rule::SameOrigin(None) => "same-origin".to_owned(),
            Rule::SameOrigin(Some(scheme)) => format!("same-origin ({scheme})"),
            Rule::Regex(r) => format!("regex {}", r.as_str()),
            Rule::List(l) => format!("list {l:?}"),
            Rule::Predicate(_) => "predicate".to_owned(),
        };
        f.debug_struct("OriginPolicy")
            .field("rule", &rule)
            .field("require_origin", &self.require)
            .finish()
    }
}

impl Default for OriginPolicy {
    fn default() -> Self {
        Self::same_origin()
    }
}

/// Why the handshake's `Origin` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OriginRejection {
    /// No `Origin` header, and the policy requires one.
    Missing,
    /// The `Origin` is not allowed.
    NotAllowed(String),
}

impl fmt::Display for OriginRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("missing Origin header: this endpoint requires one"),
            Self::NotAllowed(o) => {
                write!(
                    f,
                    "origin {:?} is not allowed to open a WAMP session",
                    crate::clip::Clip(o)
                )
            }
        }
    }
}

impl OriginPolicy {
    /// The origin's host and port must equal the `Host` header (the default), and its
    /// scheme must be `http` or `https`; when a proxy says which scheme the request came in
    /// with (`X-Forwarded-Proto`, or `proto=` in `Forwarded`), the origin's must be the
    /// same, so a page served over plain http cannot open a session on the https site.
    /// Browsers cannot set those headers on a WebSocket handshake.
    ///
    /// ```
    /// use tower_wamp::OriginPolicy;
    /// use http::HeaderMap;
    ///
    /// let mut h = HeaderMap::new();
    /// h.insert("host", "example.com".parse().unwrap());
    /// h.insert("origin", "http://example.com".parse().unwrap());
    /// assert!(OriginPolicy::same_origin().check(&h).is_ok());
    /// h.insert("x-forwarded-proto", "https".parse().unwrap());
    /// assert!(OriginPolicy::same_origin().check(&h).is_err());
    /// h.insert("origin", "https://example.com".parse().unwrap());
    /// assert!(OriginPolicy::same_origin().check(&h).is_ok());
    /// ```
    #[must_use]
    pub fn same_origin() -> Self {
        Self {
            rule: Rule::SameOrigin(None),
            require: false,
        }
    }

    /// Same-origin, and the origin's scheme must be `scheme` (for a site served only over
    /// `https`, behind a proxy that does not say so).
    ///
    /// Only meaningful on a same-origin policy; other rules are returned unchanged.
    ///
    /// ```
    /// use tower_wamp::OriginPolicy;
    /// use http::HeaderMap;
    ///
    /// let p = OriginPolicy::same_origin().with_scheme("https");
    /// let mut h = HeaderMap::new();
    /// h.insert("host", "example.com".parse().unwrap());
    /// h.insert("origin", "http://example.com".parse().unwrap());
    /// assert!(p.check(&h).is_err());
    /// h.insert("origin", "https://example.com".parse().unwrap());
    /// assert!(p.check(&h).is_ok());
    /// ```
    #[must_use]
    pub fn with_scheme(mut self, scheme: &str) -> Self {
        if let Rule::SameOrigin(s) = &mut self.rule {
            *s = Some(scheme.to_ascii_lowercase());
        }
        self
    }

    /// Every origin is allowed. Only for endpoints that use no ambient credentials.
    #[must_use]
    pub fn any() -> Self {
        Self {
            rule: Rule::Any,
            require: false,
        }
    }

    /// A regex that must match the whole `Origin` value.
    ///
    /// # Errors
    /// If `pattern` is not a valid regex.
    pub fn regex(pattern: &str) -> Result<Self, regex::Error> {
        Ok(Self {
            rule: Rule::Regex(Regex::new(&format!("^(?:{pattern})$"))?),
            require: false,
        })
    }

    /// An exact list of allowed origins (compared case-insensitively, as origins are).
    pub fn list<I, T>(origins: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Self {
            rule: Rule::List(
                origins
                    .into_iter()
                    .map(|o| o.into().to_ascii_lowercase())
                    .collect(),
            ),
            require: false,
        }
    }

    /// A predicate on the `Origin` value.
    pub fn predicate(f: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        Self {
            rule: Rule::Predicate(Arc::new(f)),
            require: false,
        }
    }

    /// Refuses handshakes without an `Origin` header (off by default, because
    /// non-browser clients send none).
    #[must_use]
    pub fn require_origin(mut self, yes: bool) -> Self {
        self.require = yes;
        self
    }

    /// Whether this origin value passes the rule (same-origin cannot be decided without
    /// the request, so this answers `false` for it).
    #[must_use]
    pub fn allows(&self, origin: &str) -> bool {
        match &self.rule {
            Rule::Any => true,
            Rule::SameOrigin(_) => false,
            Rule::Regex(r) => r.is_match(origin),
            Rule::List(l) => l.iter().any(|o| o.eq_ignore_ascii_case(origin)),
            Rule::Predicate(p) => p(origin),
        }
    }

    /// Checks a handshake's headers.
    ///
    /// ```
    /// use tower_wamp::OriginPolicy;
    /// use http::HeaderMap;
    ///
    /// let mut h = HeaderMap::new();
    /// h.insert("host", "example.com:8080".parse().unwrap());
    /// h.insert("origin", "http://example.com:8080".parse().unwrap());
    /// assert!(OriginPolicy::same_origin().check(&h).is_ok());
    /// h.insert("origin", "http://evil.com".parse().unwrap());
    /// assert!(OriginPolicy::same_origin().check(&h).is_err());
    /// ```
    ///
    /// # Errors
    /// An [`OriginRejection`] saying why the origin is refused.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), OriginRejection> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return if self.require {
                Err(OriginRejection::Missing)
            } else {
                Ok(())
            };
        };
        let Ok(origin) = origin.to_str() else {
            return Err(OriginRejection::NotAllowed(
                String::from_utf8_lossy(origin.as_bytes()).into_owned(),
            ));
        };
        let ok = match &self.rule {
            Rule::SameOrigin(scheme) => {
                let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
                match (host, origin.split_once("://")) {
                    (Some(host), Some((origin_scheme, authority))) => {
                        host.eq_ignore_ascii_case(authority)
                            && scheme_allowed(origin_scheme, scheme.as_deref(), headers)
                    }
                    _ => false,
                }
            }
            _ => self.allows(origin),
        };
        if ok {
            Ok(())
        } else {
            Err(OriginRejection::NotAllowed(origin.to_owned()))
        }
    }
}
