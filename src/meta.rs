//! The WAMP v2 meta API, when [`WampRouter::meta_api`](crate::WampRouter::meta_api) turns it
//! on: the router answers the `wamp.session.*`, `wamp.subscription.*` and
//! `wamp.registration.*` procedures and publishes their meta events.
//!
//! Sessions are told by their numeric WAMP v2 id; WAMP v1 sessions, which have none, are
//! not listed, and their subscriptions cause no meta events. Subscriptions and
//! registrations under `wamp.` (the meta topics themselves) cause none either, as in
//! Crossbar. Meta events go out after the SUBSCRIBED, REGISTERED, UNSUBSCRIBED or
//! UNREGISTERED that caused them.

use serde_json::{Value, json};

use crate::{
    Call, RpcError, Session,
    core::{
        SessionId,
        auth::Action,
        codec::v2::Dict,
        matching::MatchPolicy,
        random_id,
        session::v2::{InvokePolicy, PublishOptions, valid_uri},
        testament::{OverBudget, Scope},
    },
    hub::Outgoing,
    router::Inner,
    session::Outbox,
    wire::Payload,
};

/// A meta procedure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Meta {
    SessionCount,
    SessionList,
    SessionGet,
    SessionKill,
    SessionKillByAuthid,
    SessionKillByAuthrole,
    SessionKillAll,
    SubscriptionList,
    SubscriptionLookup,
    SubscriptionMatch,
    SubscriptionGet,
    SubscriptionListSubscribers,
    SubscriptionCountSubscribers,
    RegistrationList,
    RegistrationLookup,
    RegistrationMatch,
    RegistrationGet,
    RegistrationListCallees,
    RegistrationCountCallees,
    AddTestament,
    FlushTestaments,
    SubscriptionGetEvents,
}

impl Meta {
    pub(crate) fn of(procedure: &str) -> Option<Self> {
        Some(match procedure {
            "wamp.session.count" => Self::SessionCount,
            "wamp.session.list" => Self::SessionList,
            "wamp.session.get" => Self::SessionGet,
            "wamp.session.kill" => Self::SessionKill,
            "wamp.session.kill_by_authid" => Self::SessionKillByAuthid,
            "wamp.session.kill_by_authrole" => Self::SessionKillByAuthrole,
            "wamp.session.kill_all" => Self::SessionKillAll,
            "wamp.subscription.list" => Self::SubscriptionList,
            "wamp.subscription.lookup" => Self::SubscriptionLookup,
            "wamp.subscription.match" => Self::SubscriptionMatch,
            "wamp.subscription.get" => Self::SubscriptionGet,
            "wamp.subscription.list_subscribers" => Self::SubscriptionListSubscribers,
            "wamp.subscription.count_subscribers" => Self::SubscriptionCountSubscribers,
            "wamp.registration.list" => Self::RegistrationList,
            "wamp.registration.lookup" => Self::RegistrationLookup,
            "wamp.registration.match" => Self::RegistrationMatch,
            "wamp.registration.get" => Self::RegistrationGet,
            "wamp.registration.list_callees" => Self::RegistrationListCallees,
            "wamp.registration.count_callees" => Self::RegistrationCountCallees,
            "wamp.session.add_testament" => Self::AddTestament,
            "wamp.session.flush_testaments" => Self::FlushTestaments,
            "wamp.subscription.get_events" => Self::SubscriptionGetEvents,
            _ => return None,
        })
    }

    fn kills(self) -> bool {
        matches!(
            self,
            Self::SessionKill
                | Self::SessionKillByAuthid
                | Self::SessionKillByAuthrole
                | Self::SessionKillAll
        )
    }
}

/// The meta topics a router with the meta API lets clients subscribe to (and nobody
/// publish to).
pub(crate) const META_TOPICS: [&str; 10] = [
    "wamp.session.on_join",
    "wamp.session.on_leave",
    "wamp.subscription.on_create",
    "wamp.subscription.on_subscribe",
    "wamp.subscription.on_unsubscribe",
    "wamp.subscription.on_delete",
    "wamp.registration.on_create",
    "wamp.registration.on_register",
    "wamp.registration.on_unregister",
    "wamp.registration.on_delete",
];

fn no_such(what: &str) -> RpcError {
    RpcError::new(
        format!("wamp.error.no_such_{what}"),
        format!("no such {what}"),
    )
}

fn invalid(message: &str) -> RpcError {
    RpcError::new("wamp.error.invalid_argument", message)
}

/// Positional argument `i` as an id.
fn id_arg(args: &[Value], i: usize) -> Result<u64, RpcError> {
    args.get(i)
        .and_then(crate::core::codec::v2::id_value)
        .ok_or_else(|| invalid("an id is expected"))
}

fn str_arg(args: &[Value], i: usize) -> Result<&str, RpcError> {
    args.get(i)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("a string is expected"))
}

/// `filter_authroles`: absent or null is no filter.
fn authroles_arg(args: &[Value]) -> Result<Option<Vec<String>>, RpcError> {
    match args.first() {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(roles)) => roles
            .iter()
            .map(|r| r.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| invalid("filter_authroles is a list of strings")),
        Some(_) => Err(invalid("filter_authroles is a list of strings")),
    }
}

/// `options.match` of a lookup: absent is exact.
fn match_option(args: &[Value]) -> Result<MatchPolicy, RpcError> {
    let name = args
        .get(1)
        .and_then(|o| o.get("match"))
        .and_then(Value::as_str);
    MatchPolicy::parse(name).ok_or_else(|| invalid("match is exact, prefix or wildcard"))
}

fn ids_or_null(ids: Vec<u64>) -> Value {
    if ids.is_empty() {
        Value::Null
    } else {
        json!(ids)
    }
}

/// `unix_ms` as an ISO 8601 UTC timestamp (`2026-12-02T01:00:00.000Z`).
pub(crate) fn iso8601(unix_ms: u64) -> String {
    crate::core::auth::utc_timestamp(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms),
    )
}

/// A session as `wamp.session.get` and `on_join` tell it.
fn session_details(id: u64, outbox: &Outbox) -> Value {
    let who = outbox.identity();
    let mut d = Dict::new();
    d.insert("session".into(), id.into());
    if let Some(authid) = who.authid {
        d.insert("authid".into(), authid.into());
    }
    if let Some(authrole) = who.authrole {
        d.insert("authrole".into(), authrole.into());
    }
    if let Some(m) = who.authmethod {
        d.insert("authmethod".into(), m.into());
    }
    if let Some(p) = who.authprovider {
        d.insert("authprovider".into(), p.into());
    }
    let protocol = crate::Protocol::from(outbox.proto());
    d.insert(
        "transport".into(),
        json!({"type": "websocket", "protocol": protocol.subprotocol()}),
    );
    Value::Object(d)
}

/// The most events one `wamp.subscription.get_events` returns.
pub(crate) const MAX_EVENTS: usize = 1000;

/// This node's open v2 sessions (of one of `roles`, if given), by numeric id, in order.
pub(crate) fn local_session_ids(hub: &crate::hub::Hub, roles: Option<&[String]>) -> Vec<u64> {
    let mut ids: Vec<u64> = hub
        .session_outboxes()
        .into_iter()
        .filter(|(_, outbox)| !outbox.is_closed())
        .filter_map(|(id, outbox)| id.as_u64().map(|n| (n, outbox)))
        .filter(|(_, o)| {
            roles.is_none_or(|roles| o.identity().authrole.is_some_and(|r| roles.contains(&r)))
        })
        .map(|(n, _)| n)
        .collect();
    ids.sort_unstable();
    ids
}

/// One of this node's open v2 sessions, as `wamp.session.get` tells it.
pub(crate) fn local_session(hub: &crate::hub::Hub, id: u64) -> Option<Value> {
    hub.outbox(&SessionId::numeric(id))
        .filter(|o| !o.is_closed())
        .map(|outbox| session_details(id, &outbox))
}

/// The longest testament topic (as a PUBLISH's URI by default).
const MAX_TOPIC: usize = 4096;

/// A publication a session leaves for when it ends.
#[derive(Debug)]
pub(crate) struct Testament {
    topic: String,
    payload: Payload,
    options: PublishOptions,
}

/// The `scope` keyword argument of the testament procedures.
fn scope_arg(kwargs: &Dict) -> Result<Scope, RpcError> {
    match kwargs.get("scope") {
        None | Some(Value::Null) => Some(Scope::Destroyed),
        Some(Value::String(name)) => Scope::parse(Some(name)),
        Some(_) => None,
    }
    .ok_or_else(|| invalid("scope must be \"destroyed\" or \"detached\""))
}

impl Inner<()> {
    /// `wamp.session.add_testament(topic, args, kwargs, publish_options=, scope=)`: checked
    /// now as a PUBLISH would be (the URI, the permission, the topic's rule), published by
    /// [`Inner::publish_testaments`].
    pub(crate) async fn add_testament(&self, call: &Call) -> Result<Payload, RpcError> {
        let Some(outbox) = call.session().outbox() else {
            return Err(invalid("testaments are left by connected sessions"));
        };
        if outbox.proto() == crate::wire::Proto::V1 {
            // A WAMP v1 session has no GOODBYE: it could not leave without them.
            return Err(invalid("testaments are for WAMP v2 sessions"));
        }
        let args = call.args();
        let topic = self.canonical(str_arg(args, 0)?.to_owned());
        // As a PUBLISH's topic: valid, not too long, not under the reserved `wamp.`.
        if !valid_uri(&topic)
            || topic.len() > MAX_TOPIC
            || topic == "wamp"
            || topic.starts_with("wamp.")
        {
            return Err(RpcError::new(
                "wamp.error.invalid_uri",
                "the topic is not a valid URI (or is under the reserved wamp.)",
            ));
        }
        let payload = Payload {
            args: match args.get(1) {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => a.clone(),
                Some(_) => return Err(invalid("args must be a list")),
            },
            kwargs: match args.get(2) {
                None | Some(Value::Null) => Dict::new(),
                Some(Value::Object(k)) => k.clone(),
                Some(_) => return Err(invalid("kwargs must be a dictionary")),
            },
        };
        let kwargs = call.kwargs();
        let scope = scope_arg(kwargs)?;
        let options = match kwargs.get("publish_options") {
            None | Some(Value::Null) => PublishOptions::parse(&Dict::new()),
            Some(Value::Object(o)) => PublishOptions::parse(o),
            Some(_) => Err("publish_options must be a dictionary"),
        }
        .map_err(invalid)?;
        if !self.may_publish_to(&topic)
            || !self
                .permitted(call.session(), Action::Publish, &topic)
                .await
        {
            return Err(RpcError::new(
                "wamp.error.not_authorized",
                "not authorized to publish to this topic",
            ));
        }
        // What it holds, roughly as the allocator sees it: decoded values take several
        // times their JSON length, and the options' lists count too.
        let strings = |list: &[String]| list.iter().map(|s| s.len() + 32).sum::<usize>();
        let lists = &options.auth_lists;
        let bytes = 64
            + topic.len()
            + 8 * (serde_json::to_vec(&payload.args).map_or(0, |v| v.len())
                + serde_json::to_vec(&payload.kwargs).map_or(0, |v| v.len()))
            + 8 * (options.exclude.len() + options.eligible.as_ref().map_or(0, Vec::len))
            + strings(&lists.exclude_authid)
            + strings(&lists.exclude_authrole)
            + lists.eligible_authid.as_deref().map_or(0, strings)
            + lists.eligible_authrole.as_deref().map_or(0, strings);
        let testament = Testament {
            topic,
            payload,
            options,
        };
        outbox
            .with_testaments(|t| t.add(scope, testament, bytes))
            .map_err(|OverBudget(budget)| {
                let message = if budget.entries == 0 {
                    "the session is ending".to_owned()
                } else {
                    format!(
                        "a session leaves at most {} testaments of {} bytes in all",
                        budget.entries, budget.bytes
                    )
                };
                RpcError::new("wamp.error.too_many_testaments", message)
            })?;
        Ok(Payload::default())
    }

    /// `wamp.subscription.get_events(subscription, limit=10)` (at most [`MAX_EVENTS`]): the subscription's last
    /// events, newest first, as the caller (one of its subscribers) would have received
    /// them; `wamp.error.history_unavailable` when no history rule covers its URI.
    pub(crate) async fn get_events(&self, call: &Call) -> Result<Payload, RpcError> {
        let args = call.args();
        let id = id_arg(args, 0)?;
        let limit = match args.get(1).or_else(|| call.kwargs().get("limit")) {
            None | Some(Value::Null) => 10,
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| invalid("limit must be a non-negative integer"))?,
        }
        .min(MAX_EVENTS);
        if let Some(option) = call.kwargs().keys().find(|k| *k != "limit") {
            // The spec's time and publication ranges are not implemented: said, not ignored.
            return Err(invalid(&format!("option {option:?} is not supported")));
        }
        let hub = &self.wamp().hub;
        let me = call.session().id();
        let info = hub
            .subscription_info(id)
            .ok_or_else(|| no_such("subscription"))?;
        if !info.subscribers.contains(me) {
            return Err(RpcError::new(
                "wamp.error.not_authorized",
                "only a subscriber gets a subscription's history",
            ));
        }
        if !hub.history_covers(&info.uri) {
            return Err(RpcError::new(
                "wamp.error.history_unavailable",
                "no event history is kept for this subscription",
            ));
        }
        let (uri, policy) = (&*info.uri, info.policy);
        let pattern = policy != MatchPolicy::Exact;
        let identity = call.session().outbox().map(Outbox::identity);
        let (authid, authrole) = identity.as_ref().map_or((None, None), |i| {
            (i.authid.as_deref(), i.authrole.as_deref())
        });
        // The topics it matches that it may subscribe to (a pattern reaches only those, as
        // live; an exact subscription was permitted when it was made).
        let mut topics =
            hub.with_history(|store| store.topics_where(|topic| policy.matches(uri, topic)));
        if pattern {
            match self.permissions(call.session()).await {
                crate::auth::Granted::Everything => {}
                crate::auth::Granted::Nothing => topics.clear(),
                crate::auth::Granted::These(p) => {
                    topics.retain(|t| p.allows(Action::Subscribe, t));
                }
            }
        }
        // Under the lock, only the newest `limit` it could have received are taken (shared);
        // they are told after.
        let found: Vec<(String, std::sync::Arc<crate::hub::HistoryEvent>)> =
            hub.with_history(|store| {
                store
                    .newest(
                        &topics,
                        |e| (!pattern || e.to_patterns) && e.audience.admits(me, authid, authrole),
                        limit,
                    )
                    .into_iter()
                    .map(|(t, e)| (t.to_owned(), e.clone()))
                    .collect()
            });
        let events: Vec<Value> = found
            .into_iter()
            .map(|(topic, e)| {
                let mut event = json!({
                    "timestamp": iso8601(e.timestamp),
                    "subscription": id,
                    "publication": e.publication,
                    "topic": topic,
                    "args": e.payload.args,
                });
                if !e.payload.kwargs.is_empty() {
                    event["kwargs"] = Value::Object(e.payload.kwargs.clone());
                }
                for (k, v) in e.details.iter().flatten() {
                    event[k] = v.clone();
                }
                event
            })
            .collect();
        Ok(Payload::from_event(Value::Array(events)))
    }

    /// `wamp.session.count`, `list` and `get`: this node's sessions and, with a backplane,
    /// those the other live nodes tell within a second.
    pub(crate) async fn meta_sessions(&self, meta: Meta, call: &Call) -> Result<Payload, RpcError> {
        let args = call.args();
        let hub = &self.wamp().hub;
        let cluster = hub.cluster();
        if meta == Meta::SessionGet {
            let id = id_arg(args, 0)?;
            let mut found = local_session(hub, id);
            if found.is_none()
                && let Some(cluster) = cluster
            {
                found = cluster
                    .gather(crate::cluster::Query::Session { id })
                    .await
                    .into_iter()
                    .find(Value::is_object);
            }
            return found
                .map(Payload::from_event)
                .ok_or_else(|| no_such("session"));
        }
        let roles = authroles_arg(args)?;
        let mut ids = local_session_ids(hub, roles.as_deref());
        if let Some(cluster) = cluster {
            for answer in cluster
                .gather(crate::cluster::Query::Sessions { roles })
                .await
            {
                ids.extend(
                    answer
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_u64),
                );
            }
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(Payload::from_event(if meta == Meta::SessionCount {
            ids.len().into()
        } else {
            json!(ids)
        }))
    }

    /// Publishes what a session left, as it would have published them, in order.
    pub(crate) async fn publish_testaments(&self, session: &Session, testaments: Vec<Testament>) {
        for t in testaments {
            let event = t.payload.to_event();
            let mut exclude: Vec<SessionId> = t
                .options
                .exclude
                .into_iter()
                .map(SessionId::numeric)
                .collect();
            if t.options.exclude_me {
                exclude.push(session.id().clone());
            }
            let eligible = t
                .options
                .eligible
                .map(|ids| ids.into_iter().map(SessionId::numeric).collect());
            let published = self
                .publish(
                    session,
                    t.topic,
                    event,
                    Some(t.payload),
                    crate::core::Exclude::List(exclude),
                    eligible,
                    crate::router::PublishOptions {
                        auth_lists: t.options.auth_lists,
                        disclose_me: t.options.disclose_me,
                        retain: t.options.retain,
                    },
                )
                .await;
            tracing::debug!(published = published.is_ok(), "testament published");
        }
    }

    /// Answers a meta procedure.
    pub(crate) fn meta_call(&self, meta: Meta, call: &Call) -> Result<Payload, RpcError> {
        let args = call.args();
        let one = |v: Value| Ok(Payload::from_event(v));
        let hub = &self.wamp().hub;
        if meta.kills() && self.auth.is_none() {
            // Without authentication anyone could end anyone's session.
            return Err(RpcError::new(
                "wamp.error.not_authorized",
                "killing sessions needs authentication configured",
            ));
        }
        // The open v2 sessions: numeric id, outbox.
        // (Sessions already closing are not told: they are on their way out.)
        let sessions = || {
            hub.session_outboxes()
                .into_iter()
                .filter(|(_, outbox)| !outbox.is_closed())
                .filter_map(|(id, outbox)| id.as_u64().map(|n| (n, id, outbox)))
                .collect::<Vec<_>>()
        };
        let caller = call.session().id().as_u64();
        match meta {
            Meta::AddTestament | Meta::SubscriptionGetEvents => {
                Err(invalid("answered asynchronously"))
            }
            Meta::FlushTestaments => {
                let scope = scope_arg(call.kwargs())?;
                let flushed = call
                    .session()
                    .outbox()
                    .map_or(0, |o| o.with_testaments(|t| t.flush(scope)));
                one(flushed.into())
            }
            Meta::SessionCount | Meta::SessionList | Meta::SessionGet => {
                Err(invalid("answered asynchronously"))
            }
            Meta::SessionKill
            | Meta::SessionKillByAuthid
            | Meta::SessionKillByAuthrole
            | Meta::SessionKillAll => {
                let kwargs = call.kwargs();
                let reason = match kwargs.get("reason") {
                    None | Some(Value::Null) => crate::session::KILLED,
                    Some(Value::String(r)) if valid_uri(r) => r.as_str(),
                    Some(_) => {
                        return Err(RpcError::new(
                            "wamp.error.invalid_uri",
                            "reason must be a valid URI",
                        ));
                    }
                };
                let message = kwargs.get("message").and_then(Value::as_str).unwrap_or("");
                let targets: Vec<(u64, Outbox)> = match meta {
                    Meta::SessionKill => {
                        let id = id_arg(args, 0)?;
                        match hub.outbox(&SessionId::numeric(id)) {
                            Some(o) if Some(id) != caller && !o.is_closed() => vec![(id, o)],
                            _ => return Err(no_such("session")),
                        }
                    }
                    _ => {
                        let wanted = match meta {
                            Meta::SessionKillByAuthid | Meta::SessionKillByAuthrole => {
                                Some(str_arg(args, 0)?.to_owned())
                            }
                            _ => None,
                        };
                        sessions()
                            .into_iter()
                            .filter(|(n, _, _)| Some(*n) != caller)
                            .filter(|(_, _, o)| {
                                let who = o.identity();
                                match (meta, &wanted) {
                                    (Meta::SessionKillByAuthid, Some(w)) => {
                                        who.authid.as_deref() == Some(w.as_str())
                                    }
                                    (Meta::SessionKillByAuthrole, Some(w)) => {
                                        who.authrole.as_deref() == Some(w.as_str())
                                    }
                                    _ => true,
                                }
                            })
                            .map(|(n, _, o)| (n, o))
                            .collect()
                    }
                };
                let mut killed: Vec<u64> = Vec::with_capacity(targets.len());
                for (n, outbox) in targets {
                    if meta == Meta::SessionKillAll {
                        // The spec: no meta events or testaments for sessions killed all
                        // at once.
                        outbox.quiet();
                    }
                    outbox.close_with_goodbye(1000, message, reason);
                    killed.push(n);
                }
                killed.sort_unstable();
                match meta {
                    Meta::SessionKill => Ok(Payload::default()),
                    Meta::SessionKillByAuthid => one(json!(killed)),
                    _ => one(killed.len().into()),
                }
            }
            Meta::SubscriptionList | Meta::RegistrationList => {
                let list = if meta == Meta::SubscriptionList {
                    hub.subscription_list()
                } else {
                    hub.registrations().list()
                };
                let mut by = [vec![], vec![], vec![]];
                for (id, policy, _) in list {
                    by[policy as usize].push(id);
                }
                for ids in &mut by {
                    ids.sort_unstable();
                }
                let [exact, prefix, wildcard] = by;
                one(json!({"exact": exact, "prefix": prefix, "wildcard": wildcard}))
            }
            Meta::SubscriptionLookup | Meta::RegistrationLookup => {
                let uri = str_arg(args, 0)?;
                let policy = match_option(args)?;
                let id = if meta == Meta::SubscriptionLookup {
                    hub.subscription_lookup(policy, uri)
                } else {
                    hub.registrations().lookup(policy, uri)
                };
                one(id.map_or(Value::Null, Value::from))
            }
            Meta::SubscriptionMatch => {
                one(ids_or_null(hub.subscriptions_matching(str_arg(args, 0)?)))
            }
            Meta::RegistrationMatch => one(hub
                .registrations()
                .best(str_arg(args, 0)?)
                .map_or(Value::Null, Value::from)),
            Meta::SubscriptionGet
            | Meta::SubscriptionListSubscribers
            | Meta::SubscriptionCountSubscribers => {
                let info = hub
                    .subscription_info(id_arg(args, 0)?)
                    .ok_or_else(|| no_such("subscription"))?;
                match meta {
                    Meta::SubscriptionGet => one(json!({
                        "id": info.id,
                        "created": iso8601(info.created),
                        "uri": &*info.uri,
                        "match": info.policy.as_str(),
                    })),
                    Meta::SubscriptionListSubscribers => {
                        let mut ids: Vec<u64> = info
                            .subscribers
                            .iter()
                            .filter_map(SessionId::as_u64)
                            .collect();
                        ids.sort_unstable();
                        one(json!(ids))
                    }
                    // As listed: WAMP v2 sessions.
                    _ => one(info
                        .subscribers
                        .iter()
                        .filter(|s| s.as_u64().is_some())
                        .count()
                        .into()),
                }
            }
            Meta::RegistrationGet
            | Meta::RegistrationListCallees
            | Meta::RegistrationCountCallees => {
                let info = hub
                    .registrations()
                    .info(id_arg(args, 0)?)
                    .ok_or_else(|| no_such("registration"))?;
                match meta {
                    Meta::RegistrationGet => one(json!({
                        "id": info.id,
                        "created": iso8601(info.created),
                        "uri": &*info.uri,
                        "match": info.policy.as_str(),
                        "invoke": info.invoke.as_str(),
                    })),
                    Meta::RegistrationListCallees => {
                        let mut ids: Vec<u64> =
                            info.callees.iter().filter_map(SessionId::as_u64).collect();
                        ids.sort_unstable();
                        one(json!(ids))
                    }
                    _ => one(info.callees.len().into()),
                }
            }
        }
    }

    /// Publishes a meta event (nothing without the meta API).
    fn meta_event(&self, topic: &str, args: Vec<Value>) {
        self.meta_event_to(topic, args, false);
    }

    /// A meta event, also to the other nodes' subscribers with `across` (with a backplane):
    /// session ids are the deployment's, subscription and registration ids are not.
    fn meta_event_to(&self, topic: &str, args: Vec<Value>, across: bool) {
        if !self.meta_api {
            return;
        }
        let payload = Payload {
            args,
            kwargs: Dict::new(),
        };
        let event = payload.to_event();
        let out = Outgoing {
            topic,
            event: &event,
            payload: &payload,
            publication: random_id(),
            details: None,
            auth_lists: None,
            to_patterns: false,
            retain: false,
            publisher: None,
            forward: across,
            history: false,
        };
        self.wamp().hub.deliver(&out, &[], None);
    }

    /// `wamp.session.on_join`.
    pub(crate) fn meta_joined(&self, id: &SessionId, outbox: &Outbox) {
        if let Some(n) = id.as_u64() {
            self.meta_event_to(
                "wamp.session.on_join",
                vec![session_details(n, outbox)],
                true,
            );
        }
    }

    /// `wamp.session.on_leave`.
    pub(crate) fn meta_left(&self, id: &SessionId, outbox: &Outbox) {
        if let Some(n) = id.as_u64() {
            let who = outbox.identity();
            self.meta_event_to(
                "wamp.session.on_leave",
                vec![n.into(), who.authid.into(), who.authrole.into()],
                true,
            );
        }
    }

    /// `on_create` (when `created`) then `on_subscribe` or `on_register`.
    pub(crate) fn meta_attached(
        &self,
        kind: Kind,
        session: &SessionId,
        (policy, uri): (MatchPolicy, &str),
        id: u64,
        created: bool,
    ) {
        let Some(n) = session.as_u64() else {
            return;
        };
        if !self.meta_api || uri.starts_with("wamp.") {
            return;
        }
        if created {
            let hub = &self.wamp().hub;
            // The creation time the router keeps (what `get` tells).
            let (at, invoke) = match kind {
                Kind::Subscription => (hub.subscription_info(id).map(|i| i.created), None),
                Kind::Registration => {
                    let info = hub.registrations().info(id);
                    (info.as_ref().map(|i| i.created), info.map(|i| i.invoke))
                }
            };
            let mut info = json!({
                "id": id,
                "created": iso8601(at.unwrap_or_else(crate::core::broker::now_ms)),
                "uri": uri,
                "match": policy.as_str(),
            });
            if let Some(invoke) = invoke {
                info["invoke"] = InvokePolicy::as_str(invoke).into();
            }
            self.meta_event(kind.topic("on_create"), vec![n.into(), info]);
        }
        let attached = match kind {
            Kind::Subscription => "on_subscribe",
            Kind::Registration => "on_register",
        };
        self.meta_event(kind.topic(attached), vec![n.into(), id.into()]);
    }

    /// `on_unsubscribe` or `on_unregister`, then `on_delete` (when `deleted`).
    pub(crate) fn meta_detached(
        &self,
        kind: Kind,
        session: &SessionId,
        uri: &str,
        id: u64,
        deleted: bool,
    ) {
        let Some(n) = session.as_u64() else {
            return;
        };
        if uri.starts_with("wamp.") {
            return;
        }
        let detached = match kind {
            Kind::Subscription => "on_unsubscribe",
            Kind::Registration => "on_unregister",
        };
        self.meta_event(kind.topic(detached), vec![n.into(), id.into()]);
        if deleted {
            self.meta_event(kind.topic("on_delete"), vec![n.into(), id.into()]);
        }
    }
}

/// Which meta events.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Subscription,
    Registration,
}

impl Kind {
    fn topic(self, event: &str) -> &'static str {
        let topic = match (self, event) {
            (Self::Subscription, "on_create") => "wamp.subscription.on_create",
            (Self::Subscription, "on_subscribe") => "wamp.subscription.on_subscribe",
            (Self::Subscription, "on_unsubscribe") => "wamp.subscription.on_unsubscribe",
            (Self::Subscription, _) => "wamp.subscription.on_delete",
            (Self::Registration, "on_create") => "wamp.registration.on_create",
            (Self::Registration, "on_register") => "wamp.registration.on_register",
            (Self::Registration, "on_unregister") => "wamp.registration.on_unregister",
            (Self::Registration, _) => "wamp.registration.on_delete",
        };
        debug_assert!(META_TOPICS.contains(&topic));
        topic
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_iso_8601_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso8601(1_796_173_200_000), "2026-12-02T01:00:00.000Z");
    }

    #[test]
    fn every_meta_procedure_has_its_spec_name() {
        for name in [
            "wamp.session.count",
            "wamp.session.list",
            "wamp.session.get",
            "wamp.session.kill",
            "wamp.session.kill_by_authid",
            "wamp.session.kill_by_authrole",
            "wamp.session.kill_all",
            "wamp.subscription.list",
            "wamp.subscription.lookup",
            "wamp.subscription.match",
            "wamp.subscription.get",
            "wamp.subscription.list_subscribers",
            "wamp.subscription.count_subscribers",
            "wamp.registration.list",
            "wamp.registration.lookup",
            "wamp.registration.match",
            "wamp.registration.get",
            "wamp.registration.list_callees",
            "wamp.registration.count_callees",
        ] {
            assert!(Meta::of(name).is_some(), "{name}");
        }
        assert_eq!(Meta::of("wamp.subscription.count_suscribers"), None);
    }
}
