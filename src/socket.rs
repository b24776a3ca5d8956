//! The per-connection task: WELCOME, then a loop over incoming frames, the outbound
//! queue, timers and close requests; cleanup when it ends.

use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Waker},
    time::Duration,
};

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use futures_util::SinkExt as _;
use http::request::Parts;
use tokio::time::{Instant, Interval, Sleep};
use tracing::Instrument as _;

use crate::{
    Call, CallReply, Session,
    core::{
        SessionId,
        auth::AuthKey,
        codec::v1,
        error_uri,
        session::{Action, SessionState},
    },
    layer::Config,
    metrics::Metrics,
    router::Inner,
    session::{CloseReason, CloseRequest, Frame, Next, Outbox},
};

/// How long a closing session may take to flush what is queued.
const CLOSE_DEADLINE: Duration = Duration::from_secs(2);

pub(crate) async fn run(
    ws: WebSocket,
    router: Arc<Inner<()>>,
    config: Arc<Config>,
    parts: Arc<Parts>,
) {
    let id = SessionId::random();
    let span = tracing::info_span!("wamp_session", session_id = %id);
    session(ws, id, router.clone(), config, parts)
        .instrument(span)
        .await;
    router.wamp().hub.release_slot();
}

struct Conn {
    router: Arc<Inner<()>>,
    config: Arc<Config>,
    parts: Arc<Parts>,
    session: Session,
    outbox: Outbox,
    state: SessionState,
    metrics: Arc<Metrics>,
}

/// Keepalive, idle and rate-limit bookkeeping.
struct Timers {
    tick: Option<Interval>,
    last_message: Instant,
    ping_sent: Option<Instant>,
    next_ping: Option<Instant>,
    tokens: f64,
    refilled: Instant,
}

async fn session(
    mut ws: WebSocket,
    id: SessionId,
    router: Arc<Inner<()>>,
    config: Arc<Config>,
    parts: Arc<Parts>,
) {
    let hub = router.wamp().hub.clone();
    let outbox = Outbox::new(config.queue, hub.metrics.clone());
    let welcome = v1::encode_welcome(&id, &config.server_ident);
    if let Err(e) = ws.send(WsMessage::Text(welcome.into())).await {
        tracing::debug!(error = %e, "client left before WELCOME");
        return;
    }
    hub.add_session(id.clone(), outbox.clone());
    let mut conn = Conn {
        session: Session::connected(id, outbox.clone()),
        router: router.clone(),
        metrics: hub.metrics.clone(),
        config: config.clone(),
        parts,
        outbox,
        state: SessionState::new(config.close_on_protocol_violation),
    };
    let mut auth_deadline = None;
    if let Some(cra) = router.auth_config() {
        if let Some(key) = cra
            .identity
            .as_ref()
            .and_then(|identity| identity(&conn.parts))
        {
            tracing::info!(auth_key = %key, "authenticated by the upgrade request");
            conn.session = conn.session.clone().authenticated_as(AuthKey::Key(key));
        } else if !cra.timeout.is_zero() {
            auth_deadline = Some(Box::pin(tokio::time::sleep(cra.timeout)));
        }
    }
    let now = Instant::now();
    let housekeeping = [config.ping_interval, config.idle_timeout.map(|d| d / 4)]
        .into_iter()
        .flatten()
        .min()
        .map(|d| {
            let mut i = tokio::time::interval_at(now + d, d.max(Duration::from_millis(1)));
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
    let mut timers = Timers {
        tick: housekeeping,
        last_message: now,
        ping_sent: None,
        next_ping: config.ping_interval.map(|d| now + d),
        tokens: config.rate_limit.map_or(0.0, |r| f64::from(r.burst)),
        refilled: now,
    };
    tracing::info!("session opened");
    router.opened(&conn.session);
    let mut batch = VecDeque::new();

    let reason = loop {
        tokio::select! {
            () = until(&mut auth_deadline) => {
                auth_deadline = None;
                if conn.session.auth_key().is_none() {
                    tracing::warn!("not authenticated in time: closing");
                    conn.outbox.close(1008, "authentication timeout", false);
                }
            }
            () = tick(&mut timers.tick) => conn.housekeeping(&mut ws, &mut timers).await,
            next = conn.outbox.next() => match next {
                Next::Frames => {
                    conn.outbox.take_into(&mut batch);
                    let n = batch.len() as u64;
                    if let Err(e) = write_all(&mut ws, &mut batch).await {
                        break CloseReason::Error(e.to_string());
                    }
                    Metrics::add(&conn.metrics.messages_out, n);
                }
                Next::Close(request) => break close(&mut ws, &conn.outbox, request).await,
            },
            incoming = ws.recv() => {
                timers.ping_sent = None;
                match incoming {
                    None => break CloseReason::Disconnected,
                    Some(Err(e)) => break transport_error(&mut ws, e).await,
                    Some(Ok(WsMessage::Text(text))) => {
                        timers.last_message = Instant::now();
                        if !conn.within_rate_limit(&mut timers) {
                            tracing::warn!("rate limit exceeded: closing");
                            conn.outbox.close(1008, "rate limit exceeded", false);
                            continue;
                        }
                        Metrics::add(&conn.metrics.messages_in, 1);
                        let action = conn.state.handle_text(text.as_str());
                        conn.act(action).await;
                    }
                    Some(Ok(WsMessage::Binary(_))) => {
                        let action = conn.state.handle_binary();
                        conn.act(action).await;
                    }
                    Some(Ok(WsMessage::Close(frame))) => {
                        break match frame {
                            Some(f) => CloseReason::Client { code: Some(f.code), reason: f.reason.to_string() },
                            None => CloseReason::Client { code: None, reason: String::new() },
                        };
                    }
                    Some(Ok(_)) => {} // ping and pong: tungstenite answers pings itself
                }
            }
        }
    };
    conn.outbox.end();
    tracing::info!(?reason, "session closed");
    router.closed(&conn.session, &reason);
}

/// Waits for the deadline if there is one, else forever.
async fn until(deadline: &mut Option<Pin<Box<Sleep>>>) {
    match deadline {
        Some(sleep) => sleep.await,
        None => std::future::pending().await,
    }
}

/// Waits for the next housekeeping tick if there is a timer, else forever.
async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Writes every queued frame, then flushes once; leaves `frames` empty, capacity kept.
async fn write_all(ws: &mut WebSocket, frames: &mut VecDeque<Frame>) -> Result<(), axum::Error> {
    while let Some(frame) = frames.pop_front() {
        ws.feed(WsMessage::Text(frame)).await?;
    }
    ws.flush().await
}

async fn close(ws: &mut WebSocket, outbox: &Outbox, request: CloseRequest) -> CloseReason {
    let CloseRequest {
        code,
        reason,
        drain,
    } = request;
    let goodbye = async {
        if drain {
            for frame in outbox.take_remaining() {
                ws.feed(WsMessage::Text(frame)).await?;
            }
        }
        ws.send(WsMessage::Close(Some(CloseFrame {
            code,
            reason: reason.clone().into(),
        })))
        .await
    };
    match tokio::time::timeout(CLOSE_DEADLINE, goodbye).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "close frame not delivered"),
        Err(_) => tracing::debug!("close deadline passed before the close frame was sent"),
    }
    CloseReason::Server { code, reason }
}

async fn transport_error(ws: &mut WebSocket, error: axum::Error) -> CloseReason {
    let capacity = std::error::Error::source(&error)
        .and_then(|s| s.downcast_ref::<tungstenite::Error>())
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)));
    if capacity {
        let reason = "message too big".to_owned();
        tracing::warn!(%error, "oversize message: closing with 1009");
        let _ = tokio::time::timeout(
            CLOSE_DEADLINE,
            ws.send(WsMessage::Close(Some(CloseFrame {
                code: 1009,
                reason: reason.clone().into(),
            }))),
        )
        .await;
        return CloseReason::Server { code: 1009, reason };
    }
    tracing::debug!(%error, "transport error");
    CloseReason::Error(error.to_string())
}

impl Conn {
    async fn housekeeping(&self, ws: &mut WebSocket, timers: &mut Timers) {
        let now = Instant::now();
        if let Some(idle) = self.config.idle_timeout
            && now.duration_since(timers.last_message) >= idle
        {
            tracing::info!("idle timeout: closing");
            self.outbox.close(1000, "idle timeout", true);
            return;
        }
        let (Some(interval), Some(next_ping)) = (self.config.ping_interval, timers.next_ping)
        else {
            return;
        };
        if let Some(sent) = timers.ping_sent
            && now.duration_since(sent) >= self.config.pong_timeout
        {
            tracing::warn!("no pong before the deadline: closing");
            self.outbox.close(1008, "keepalive timeout: no pong", false);
            return;
        }
        if now >= next_ping {
            timers.next_ping = Some(now + interval);
            if timers.ping_sent.is_none() {
                timers.ping_sent = Some(now);
            }
            if let Err(e) = ws.send(WsMessage::Ping(Default::default())).await {
                tracing::debug!(error = %e, "ping not sent");
            }
        }
    }

    fn within_rate_limit(&self, timers: &mut Timers) -> bool {
        let Some(limit) = self.config.rate_limit else {
            return true;
        };
        let now = Instant::now();
        let refill =
            now.duration_since(timers.refilled).as_secs_f64() * f64::from(limit.per_second);
        timers.tokens = (timers.tokens + refill).min(f64::from(limit.burst));
        timers.refilled = now;
        if timers.tokens >= 1.0 {
            timers.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    async fn act(&mut self, action: Action) {
        match action {
            Action::None => {}
            Action::Call {
                call_id,
                procedure,
                args,
            } => self.spawn_call(call_id, procedure, args),
            Action::Subscribe { topic } => self.router.subscribe(&self.session, topic).await,
            Action::Unsubscribe { topic } => self.router.unsubscribe(&self.session, &topic),
            Action::Publish {
                topic,
                event,
                exclude,
                eligible,
            } => {
                self.router
                    .publish(&self.session, topic, event, exclude, eligible)
                    .await;
            }
            Action::Reply(frame) => {
                tracing::warn!("malformed CALL answered with an error");
                self.metrics.error(error_uri::INVALID_ARGUMENT);
                let _ = self.outbox.push(frame.into());
            }
            Action::Ignore(reason) => tracing::warn!(%reason, "frame ignored"),
            Action::Close { code, reason } => {
                tracing::warn!(code, %reason, "protocol violation: closing");
                self.outbox.close(code, &reason, true);
            }
        }
    }

    fn spawn_call(&self, call_id: String, procedure: String, args: Vec<serde_json::Value>) {
        let span = tracing::info_span!("wamp_call", %call_id, %procedure);
        let call = Call::from_wire(
            call_id,
            procedure,
            args,
            self.session.clone(),
            self.parts.clone(),
        );
        let router = self.router.clone();
        let outbox = self.outbox.clone();
        let metrics = self.metrics.clone();
        Metrics::add(&metrics.calls_total, 1);
        Metrics::add(&metrics.calls_in_flight, 1);
        let mut call = Box::pin(
            async move {
                let call_id = call.call_id.clone();
                let reply = router.dispatch(call).await;
                Metrics::sub(&metrics.calls_in_flight, 1);
                let frame = match reply {
                    CallReply::Result(result) => v1::encode_call_result(&call_id, &result),
                    CallReply::Error(error) => {
                        metrics.error(error.uri());
                        let frame = v1::encode_call_error(&call_id, &error);
                        if error.kills() {
                            let _ = outbox.push(frame.into());
                            outbox.close(1002, "closed after a fatal call error", true);
                            return;
                        }
                        frame
                    }
                    CallReply::Suppressed => return,
                };
                let _ = outbox.push(frame.into());
            }
            .instrument(span),
        );
        // Most procedures answer without waiting: run the call once right here and spawn a
        // task only for those that are still pending (the task polls it again with its own
        // waker, so nothing registered with the no-op waker is lost).
        let mut cx = Context::from_waker(Waker::noop());
        if call.as_mut().poll(&mut cx).is_pending() {
            tokio::spawn(call);
        }
    }
}
