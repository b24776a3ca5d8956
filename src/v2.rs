//! The opening of a WAMP v2 session: HELLO, the realm, authentication, WELCOME or ABORT.
//! After WELCOME the session runs in the same socket task as a v1 session.

use std::{sync::Arc, time::Duration};

use axum::extract::ws::Message as WsMessage;
use futures_util::{SinkExt as _, StreamExt as _};
use http::request::Parts;
use serde_json::Value;
use tokio::time::Instant;

use crate::{
    Session,
    auth::{Expected, V2Auth},
    clip::Clip,
    core::{
        codec::v2::{Dict, Message, Serializer},
        session::v2::{Action, State},
    },
    layer::Config,
    router::Inner,
    socket::{Sink, Stream},
    wire::Frame,
};

/// How long a client may take to send HELLO (and AUTHENTICATE) without authentication
/// configured; with it, the authentication timeout applies.
const HELLO_TIMEOUT: Duration = Duration::from_secs(20);

/// What the handshake ends with.
pub(crate) enum Opened {
    /// WELCOME is sent.
    Welcome { state: State },
    /// ABORT or a close was sent, or the client left.
    Refused,
}

async fn send(sink: &mut Sink, config: &Config, serializer: Serializer, message: &Message) -> bool {
    let frame = Frame::v2(serializer, message).into_message();
    matches!(
        tokio::time::timeout(config.write_timeout, sink.send(frame)).await,
        Ok(Ok(()))
    )
}

async fn refuse(sink: &mut Sink, config: &Config, state: &mut State, reason: &str, message: &str) {
    refuse_with(sink, config, state, reason, message, 1000).await;
}

/// ABORT `wamp.close.system_shutdown`, then the close frame 1001.
async fn refuse_shutdown(sink: &mut Sink, config: &Config, state: &mut State) {
    let reason = crate::core::session::v2::uri::SYSTEM_SHUTDOWN;
    refuse_with(sink, config, state, reason, "server shutting down", 1001).await;
}

/// ABORT, then the close frame with `code`.
async fn refuse_with(
    sink: &mut Sink,
    config: &Config,
    state: &mut State,
    reason: &str,
    message: &str,
    code: u16,
) {
    tracing::info!(reason, message = %Clip(message), "session refused");
    let abort = state.abort(reason, message);
    // A connection that failed the ABORT is not sent more.
    if !send(sink, config, state.serializer(), &abort).await {
        return;
    }
    let _ = tokio::time::timeout(
        config.write_timeout,
        sink.send(WsMessage::Close(Some(axum::extract::ws::CloseFrame {
            code,
            reason: "".into(),
        }))),
    )
    .await;
}

/// A feature the router announces in WELCOME, and the test that shows it (checked by
/// `tests/features.rs`, which also checks that WELCOME announces exactly these, and that
/// the README's feature table lists them).
pub(crate) struct Feature {
    pub(crate) role: &'static str,
    pub(crate) name: &'static str,
    /// Announced only with the meta API on.
    pub(crate) meta: bool,
    /// `file::test`.
    pub(crate) test: &'static str,
}

const fn feature(role: &'static str, name: &'static str, test: &'static str) -> Feature {
    Feature {
        role,
        name,
        meta: false,
        test,
    }
}

const fn meta(role: &'static str, name: &'static str, test: &'static str) -> Feature {
    Feature {
        role,
        name,
        meta: true,
        test,
    }
}

/// Everything WELCOME announces: the one table that switches the announcements on.
///
/// Broker: `disclose_me` is always honoured and a realm policy can disclose everyone;
/// patterns are prefix and wildcard, every matching subscription getting the event with the
/// topic in its details; `retain` and `get_retained` (exact subscriptions) within the
/// router's budget. Dealer: CALL's `timeout` ends the call with `wamp.error.timeout` and,
/// like a caller that leaves, interrupts (`killnowait`) a callee that announced
/// `call_canceling`; CANCEL in the three modes (default `killnowait`), a handler of ours
/// dropped; progressive results from client callees that announced them and from handlers
/// through the `Progress` extractor; pattern registrations with one best match per call;
/// shared registrations `single`, `roundrobin`, `random`, `first`, `last`.
pub(crate) const FEATURES: &[Feature] = &[
    feature(
        "broker",
        "publisher_exclusion",
        "tests/v2_pubsub.rs::the_publisher_is_excluded_unless_it_asks",
    ),
    feature(
        "broker",
        "publisher_identification",
        "tests/v2.rs::publishers_and_callers_are_named_when_they_ask_or_the_realm_discloses",
    ),
    feature(
        "broker",
        "subscriber_blackwhite_listing",
        "tests/v2.rs::a_publisher_picks_its_audience_by_authid_and_authrole",
    ),
    feature(
        "broker",
        "pattern_based_subscription",
        "tests/v2_pubsub.rs::every_matching_subscription_gets_the_event_under_its_own_id",
    ),
    feature(
        "broker",
        "event_retention",
        "tests/v2_pubsub.rs::a_retained_event_goes_to_a_later_subscriber_that_asks_and_may_have_it",
    ),
    meta(
        "broker",
        "event_history",
        "tests/v2_meta.rs::event_history_tells_a_subscriber_the_last_events_it_could_have_received",
    ),
    meta(
        "broker",
        "session_meta_api",
        "tests/v2_meta.rs::sessions_are_listed_told_and_their_joins_and_leaves_published",
    ),
    meta(
        "broker",
        "subscription_meta_api",
        "tests/v2_meta.rs::subscriptions_and_registrations_are_told_and_their_lives_published",
    ),
    feature(
        "dealer",
        "caller_identification",
        "tests/v2.rs::publishers_and_callers_are_named_when_they_ask_or_the_realm_discloses",
    ),
    feature(
        "dealer",
        "call_timeout",
        "tests/v2.rs::a_callers_timeout_ends_a_call_to_a_silent_callee_and_a_late_yield_is_dropped",
    ),
    feature(
        "dealer",
        "call_canceling",
        "tests/v2_rpc.rs::cancel_skip_kill_and_killnowait_do_what_the_spec_says",
    ),
    feature(
        "dealer",
        "progressive_call_results",
        "tests/v2_rpc.rs::progressive_results_stream_from_a_client_callee_to_a_caller_that_asked",
    ),
    feature(
        "dealer",
        "progressive_call_invocations",
        "tests/v2_rpc.rs::progressive_call_invocations_stream_a_callers_chunks_to_one_callee",
    ),
    feature(
        "dealer",
        "pattern_based_registration",
        "tests/v2_dealer.rs::a_call_goes_to_the_best_matching_registration",
    ),
    feature(
        "dealer",
        "shared_registration",
        "tests/v2_dealer.rs::shared_registrations_pick_their_callee_by_policy",
    ),
    meta(
        "dealer",
        "session_meta_api",
        "tests/v2_meta.rs::sessions_are_listed_told_and_their_joins_and_leaves_published",
    ),
    meta(
        "dealer",
        "testament_meta_api",
        "tests/v2_meta.rs::testaments_are_published_when_a_session_ends_unless_flushed",
    ),
    meta(
        "dealer",
        "registration_meta_api",
        "tests/v2_meta.rs::subscriptions_and_registrations_are_told_and_their_lives_published",
    ),
];

/// The WELCOME details: who the session is, and what the router implements (announced
/// only for what is implemented).
fn welcome_details(
    config: &Config,
    (meta_api, history): (bool, bool),
    authid: String,
    authrole: &str,
    authmethod: &str,
    authprovider: &str,
) -> Dict {
    let mut roles = Dict::new();
    for feature in FEATURES
        .iter()
        .filter(|f| meta_api || !f.meta)
        .filter(|f| history || f.name != "event_history")
    {
        let role = roles
            .entry(feature.role)
            .or_insert_with(|| serde_json::json!({"features": {}}));
        role["features"][feature.name] = Value::Bool(true);
    }
    let mut d = Dict::new();
    d.insert("agent".into(), Value::String(config.server_ident.clone()));
    d.insert("authid".into(), Value::String(authid));
    d.insert("authrole".into(), authrole.into());
    d.insert("authmethod".into(), authmethod.into());
    d.insert("authprovider".into(), authprovider.into());
    d.insert("roles".into(), Value::Object(roles));
    d
}

/// Runs the opening handshake of a v2 session whose id is `session`'s.
pub(crate) async fn open(
    sink: &mut Sink,
    stream: &mut Stream,
    router: &Arc<Inner<()>>,
    config: &Config,
    parts: &Parts,
    session: &Session,
    serializer: Serializer,
) -> Opened {
    // The whole handshake, a slow secret provider included, has one deadline: the
    // authentication timeout, or HELLO_TIMEOUT without one (or when it is turned off).
    let timeout = router
        .auth_config()
        .map(|cra| cra.timeout)
        .filter(|t| !t.is_zero())
        .unwrap_or(HELLO_TIMEOUT);
    let deadline = Instant::now() + timeout;
    let mut state =
        State::with_limits(serializer, config.limits).strict_request_ids(config.strict_request_ids);
    let outcome = tokio::time::timeout_at(
        deadline,
        handshake(
            sink, stream, router, config, parts, session, &mut state, deadline,
        ),
    )
    .await;
    match outcome {
        Ok(opened) => opened,
        Err(_) => {
            refuse(
                sink,
                config,
                &mut state,
                "wamp.error.authentication_failed",
                "the handshake took too long",
            )
            .await;
            Opened::Refused
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn handshake(
    sink: &mut Sink,
    stream: &mut Stream,
    router: &Arc<Inner<()>>,
    config: &Config,
    parts: &Parts,
    session: &Session,
    state: &mut State,
    deadline: Instant,
) -> Opened {
    let serializer = state.serializer();
    // The challenge issued: (method, auth key, what AUTHENTICATE must match).
    let mut pending: Option<(&'static str, String, Expected)> = None;
    let hub = router.wamp().hub.clone();
    loop {
        // Shutdown does not wait for a handshake: while waiting for the client (never in
        // the middle of a send), the client is refused at once.
        let next = tokio::select! {
            next = tokio::time::timeout_at(deadline, stream.next()) => next,
            () = hub.shutdown_begun() => {
                refuse_shutdown(sink, config, state).await;
                return Opened::Refused;
            }
        };
        let message = match next {
            Err(_) => {
                refuse(
                    sink,
                    config,
                    state,
                    "wamp.error.authentication_failed",
                    "no HELLO or AUTHENTICATE in time",
                )
                .await;
                return Opened::Refused;
            }
            Ok(None | Some(Err(_))) => return Opened::Refused,
            Ok(Some(Ok(m))) => m,
        };
        let action = match &message {
            WsMessage::Text(t) => state.handle(t.as_bytes(), false),
            WsMessage::Binary(b) => state.handle(b, true),
            WsMessage::Close(_) => return Opened::Refused,
            _ => continue,
        };
        let decision = match action {
            Action::Hello {
                realm,
                authid,
                authmethods,
                authextra,
                ..
            } => {
                if !router.serves_realm(&realm) {
                    refuse(
                        sink,
                        config,
                        state,
                        "wamp.error.no_such_realm",
                        "no such realm",
                    )
                    .await;
                    return Opened::Refused;
                }
                router
                    .v2_hello(session, parts, authid, &authmethods, &authextra)
                    .await
            }
            Action::Authenticate { signature, .. } => {
                let Some((method, key, expected)) = pending.take() else {
                    refuse(
                        sink,
                        config,
                        state,
                        "wamp.error.protocol_violation",
                        "AUTHENTICATE without a CHALLENGE",
                    )
                    .await;
                    return Opened::Refused;
                };
                router
                    .v2_authenticate(parts, method, key, expected, &signature)
                    .await
            }
            Action::Close { message, .. } => {
                if let Some(m) = message {
                    send(sink, config, serializer, &m).await;
                }
                return Opened::Refused;
            }
            _ => continue,
        };
        match decision {
            V2Auth::Welcome {
                key,
                authid,
                authrole,
                authmethod,
                authprovider,
            } => {
                // A role table that does not have the role refuses the session (as Crossbar).
                if router
                    .roles
                    .as_ref()
                    .is_some_and(|table| table.permissions(&authrole).is_none())
                {
                    refuse(
                        sink,
                        config,
                        state,
                        "wamp.error.no_such_role",
                        "the role table has no such role",
                    )
                    .await;
                    return Opened::Refused;
                }
                // Without authentication configured there is no key, and none is checked.
                if let Some(key) = key {
                    session.mark_authenticated(key);
                }
                session.mark_welcomed(&authid, &authrole, authmethod, authprovider);
                let details = welcome_details(
                    config,
                    (router.meta_api, router.wamp().hub.keeps_history()),
                    authid,
                    &authrole,
                    authmethod,
                    authprovider,
                );
                let id = session.id().as_u64().unwrap_or(1);
                // Listed before it is welcomed: a client told WELCOME is in the session
                // lists (the meta API, kills, `Wamp::sessions`).
                let listed = session
                    .outbox()
                    .is_some_and(|outbox| hub.add_session(session.id().clone(), outbox.clone()));
                if !listed {
                    // Shutdown began while it was being set up.
                    refuse_shutdown(sink, config, state).await;
                    return Opened::Refused;
                }
                let welcome = state.welcome(id, details);
                if !send(sink, config, serializer, &welcome).await {
                    hub.remove_session(session.id());
                    return Opened::Refused;
                }
                return Opened::Welcome {
                    state: state.clone(),
                };
            }
            V2Auth::Challenge {
                method,
                extra,
                expected,
                key,
            } => {
                pending = Some((method, key, expected));
                let challenge = state.challenge(method, extra);
                if !send(sink, config, serializer, &challenge).await {
                    return Opened::Refused;
                }
            }
            V2Auth::Abort { reason, message } => {
                refuse(sink, config, state, reason, &message).await;
                return Opened::Refused;
            }
        }
    }
}
