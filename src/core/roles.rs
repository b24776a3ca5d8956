//! Authorization as data: a role table like Crossbar's. Each role lists permissions (a
//! URI, how it matches, the actions it allows, whether callers and publishers are
//! disclosed); a session's permissions are those of its authrole, and the table may assign
//! roles to authids.
//!
//! The permission that decides for a URI is the best match, as for registrations: an exact
//! URI, else the longest matching prefix, else the wildcard with the longest literal
//! portions. A URI that no permission matches is not permitted.
//!
//! ```
//! use tower_wamp::core::{auth::Action, roles::RoleTable};
//!
//! let table = RoleTable::from_json(r#"{
//!     "roles": [
//!         {"name": "frontend", "permissions": [
//!             {"uri": "com.example.", "match": "prefix",
//!              "allow": {"call": true, "subscribe": true},
//!              "disclose": {"caller": true}},
//!             {"uri": "com.example.admin", "allow": {}}
//!         ]},
//!         {"name": "backend", "permissions": [
//!             {"uri": "", "match": "prefix",
//!              "allow": {"call": true, "register": true, "publish": true, "subscribe": true}}
//!         ]}
//!     ],
//!     "principals": {"joe": "frontend"}
//! }"#).unwrap();
//! let frontend = table.permissions("frontend").unwrap();
//! assert!(frontend.allows(Action::Call, "com.example.add"));
//! assert!(!frontend.allows(Action::Call, "com.example.admin"));
//! assert!(!frontend.allows(Action::Register, "com.example.add"));
//! assert!(frontend.discloses(Action::Call, "com.example.add"));
//! assert!(table.permissions("backend").unwrap().allows(Action::Register, "anything"));
//! assert_eq!(table.role_of("joe"), Some("frontend"));
//! assert!(table.permissions("nobody").is_none());
//! ```

use std::{collections::HashMap, fmt, sync::Arc};

use serde::Deserialize;

use super::{
    auth::{Action, Permissions},
    matching::{MatchIndex, MatchPolicy},
};

/// One permission of a role.
///
/// ```
/// use tower_wamp::core::{auth::Action, roles::Rule};
/// let rule = Rule::prefix("com.example.").allow(Action::Call).disclose_caller();
/// # let _ = rule;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    policy: MatchPolicy,
    uri: String,
    allow: [bool; 4],
    disclose_caller: bool,
    disclose_publisher: bool,
}

fn index(action: Action) -> usize {
    match action {
        Action::Call => 0,
        Action::Register => 1,
        Action::Publish => 2,
        Action::Subscribe => 3,
    }
}

impl Rule {
    fn new(policy: MatchPolicy, uri: &str) -> Self {
        Self {
            policy,
            uri: uri.to_owned(),
            allow: [false; 4],
            disclose_caller: false,
            disclose_publisher: false,
        }
    }

    /// A permission for exactly `uri`.
    #[must_use]
    pub fn exact(uri: &str) -> Self {
        Self::new(MatchPolicy::Exact, uri)
    }

    /// A permission for every URI that starts with `prefix` (`""`: every URI).
    #[must_use]
    pub fn prefix(prefix: &str) -> Self {
        Self::new(MatchPolicy::Prefix, prefix)
    }

    /// A permission for the URIs a wildcard pattern matches (`com..add`).
    #[must_use]
    pub fn wildcard(pattern: &str) -> Self {
        Self::new(MatchPolicy::Wildcard, pattern)
    }

    /// Allows `action`.
    #[must_use]
    pub fn allow(mut self, action: Action) -> Self {
        self.allow[index(action)] = true;
        self
    }

    /// Allows every action.
    #[must_use]
    pub fn allow_all(mut self) -> Self {
        self.allow = [true; 4];
        self
    }

    /// Names the caller to callees of these procedures.
    #[must_use]
    pub fn disclose_caller(mut self) -> Self {
        self.disclose_caller = true;
        self
    }

    /// Names the publisher to subscribers of these topics.
    #[must_use]
    pub fn disclose_publisher(mut self) -> Self {
        self.disclose_publisher = true;
        self
    }
}

/// The role table: roles with their rules, and roles assigned to authids.
#[derive(Clone, Default)]
pub struct RoleTable {
    roles: HashMap<String, Vec<Rule>>,
    compiled: HashMap<String, Arc<Permissions>>,
    principals: HashMap<String, String>,
}

impl fmt::Debug for RoleTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoleTable")
            .field("roles", &self.roles)
            .field("principals", &self.principals)
            .finish()
    }
}

/// A role table that could not be read.
#[derive(Debug)]
#[non_exhaustive]
pub enum RoleTableError {
    /// Not the expected JSON.
    Json(serde_json::Error),
    /// A permission's `match` is not exact, prefix or wildcard.
    Match(String),
}

impl fmt::Display for RoleTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Json(e) => write!(f, "role table: {e}"),
            Self::Match(m) => write!(f, "role table: unknown match policy {m:?}"),
        }
    }
}

impl std::error::Error for RoleTableError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableSpec {
    #[serde(default)]
    roles: Vec<RoleSpec>,
    #[serde(default)]
    principals: HashMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleSpec {
    name: String,
    #[serde(default)]
    permissions: Vec<PermissionSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PermissionSpec {
    uri: String,
    #[serde(rename = "match")]
    policy: Option<String>,
    #[serde(default)]
    allow: Flags,
    #[serde(default)]
    disclose: Disclose,
    /// Crossbar's caching hint: read and ignored.
    #[serde(default)]
    #[allow(dead_code)]
    cache: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Flags {
    #[serde(default)]
    call: bool,
    #[serde(default)]
    register: bool,
    #[serde(default)]
    publish: bool,
    #[serde(default)]
    subscribe: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Disclose {
    #[serde(default)]
    caller: bool,
    #[serde(default)]
    publisher: bool,
}

impl RoleTable {
    /// An empty table: no role is permitted anything.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a table in Crossbar's shape: `{"roles": [{"name", "permissions": [{"uri",
    /// "match", "allow": {"call", "register", "publish", "subscribe"}, "disclose":
    /// {"caller", "publisher"}}]}], "principals": {authid: role}}`.
    ///
    /// # Errors
    /// When the JSON does not have that shape, or a `match` is unknown.
    pub fn from_json(json: &str) -> Result<Self, RoleTableError> {
        let spec: TableSpec = serde_json::from_str(json).map_err(RoleTableError::Json)?;
        let mut table = Self::new();
        for role in spec.roles {
            // A role listed without permissions exists, and is permitted nothing.
            table.roles.entry(role.name.clone()).or_default();
            for p in role.permissions {
                let policy = MatchPolicy::parse(p.policy.as_deref())
                    .ok_or_else(|| RoleTableError::Match(p.policy.unwrap_or_default()))?;
                let mut rule = Rule::new(policy, &p.uri);
                rule.allow = [
                    p.allow.call,
                    p.allow.register,
                    p.allow.publish,
                    p.allow.subscribe,
                ];
                rule.disclose_caller = p.disclose.caller;
                rule.disclose_publisher = p.disclose.publisher;
                table = table.permit(&role.name, rule);
            }
        }
        for (authid, role) in spec.principals {
            table = table.assign(&authid, &role);
        }
        Ok(table)
    }

    /// Adds `rule` to `role` (a later rule for the same URI and policy replaces it).
    #[must_use]
    pub fn permit(mut self, role: &str, rule: Rule) -> Self {
        let rules = self.roles.entry(role.to_owned()).or_default();
        rules.retain(|r| (r.policy, &r.uri) != (rule.policy, &rule.uri));
        rules.push(rule);
        let compiled = compile(rules);
        self.compiled.insert(role.to_owned(), Arc::new(compiled));
        self
    }

    /// Gives `authid` the role `role` when it authenticates.
    #[must_use]
    pub fn assign(mut self, authid: &str, role: &str) -> Self {
        self.principals.insert(authid.to_owned(), role.to_owned());
        self
    }

    /// The role assigned to `authid`, if any.
    #[must_use]
    pub fn role_of(&self, authid: &str) -> Option<&str> {
        self.principals.get(authid).map(String::as_str)
    }

    /// What `role` is permitted; `None` for a role the table does not have.
    #[must_use]
    pub fn permissions(&self, role: &str) -> Option<Arc<Permissions>> {
        match self.compiled.get(role) {
            Some(p) => Some(p.clone()),
            None if self.roles.contains_key(role) => Some(Arc::new(Permissions::none())),
            None => None,
        }
    }
}

/// A role's rules as permissions: per action, every rule's URI with whether it allows the
/// action (so that the best match decides, whatever it allows).
fn compile(rules: &[Rule]) -> Permissions {
    let indexes: [MatchIndex<bool>; 6] = std::array::from_fn(|i| {
        let mut index = MatchIndex::default();
        for rule in rules {
            let value = match i {
                0..4 => rule.allow[i],
                4 => rule.disclose_caller,
                _ => rule.disclose_publisher,
            };
            index.insert(rule.policy, rule.uri.as_str().into(), value);
        }
        index
    });
    let [
        call,
        register,
        publish,
        subscribe,
        disclose_caller,
        disclose_publisher,
    ] = indexes;
    Permissions::matched(
        [call, register, publish, subscribe],
        [disclose_caller, disclose_publisher],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_matching_permission_decides() {
        let table = RoleTable::new()
            .permit("r", Rule::prefix("").allow(Action::Subscribe))
            .permit("r", Rule::prefix("com.").allow_all())
            .permit("r", Rule::prefix("com.example.secret.")) // nothing allowed
            .permit("r", Rule::wildcard("com..secret.open").allow(Action::Call))
            .permit(
                "r",
                Rule::exact("com.example.secret.key").allow(Action::Publish),
            );
        let p = table.permissions("r").unwrap();
        assert!(p.allows(Action::Subscribe, "org.x"));
        assert!(!p.allows(Action::Call, "org.x"));
        assert!(p.allows(Action::Register, "com.x"));
        // The longer prefix beats the wildcard, and allows nothing.
        assert!(!p.allows(Action::Call, "com.example.secret.open"));
        assert!(
            p.allows(Action::Call, "com.other.secret.open"),
            "prefix com. allows all"
        );
        assert!(p.allows(Action::Publish, "com.example.secret.key"));
        assert!(!p.allows(Action::Subscribe, "com.example.secret.key"));
        // A later rule for the same URI replaces the earlier one.
        let table = table.permit("r", Rule::prefix("com.example.secret.").allow(Action::Call));
        let p = table.permissions("r").unwrap();
        assert!(p.allows(Action::Call, "com.example.secret.open"));
        assert!(!p.discloses(Action::Call, "com.example.secret.open"));
    }

    #[test]
    fn crossbar_tables_are_read_and_bad_ones_refused() {
        let table = RoleTable::from_json(
            r#"{"roles": [{"name": "anonymous", "permissions": [{"uri": "", "match": "prefix",
            "allow": {"call": true, "register": false, "publish": true, "subscribe": true},
            "disclose": {"caller": false, "publisher": true}, "cache": true}]},
            {"name": "empty"}]}"#,
        )
        .unwrap();
        let p = table.permissions("anonymous").unwrap();
        assert!(p.allows(Action::Call, "x") && !p.allows(Action::Register, "x"));
        assert!(p.discloses(Action::Publish, "x") && !p.discloses(Action::Call, "x"));
        assert!(
            !table
                .permissions("empty")
                .unwrap()
                .allows(Action::Call, "x")
        );
        assert!(matches!(
            RoleTable::from_json(
                r#"{"roles": [{"name": "r", "permissions": [{"uri": "a", "match": "regex"}]}]}"#
            ),
            Err(RoleTableError::Match(_))
        ));
        assert!(matches!(
            RoleTable::from_json(
                r#"{"roles": [{"name": "r", "permissions": [{"uri": "a", "allow": {"fly": true}}]}]}"#
            ),
            Err(RoleTableError::Json(_))
        ));
    }
}
