//! The per-connection task: WELCOME, then a loop over incoming frames, the outbound
//! queue and close requests; cleanup when it ends.

use std::{pin::Pin, sync::Arc, time::Duration};

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use futures_util::SinkExt as _;
use http::request::Parts;
use tokio::{sync::mpsc, time::Sleep};
use tracing::Instrument as _;

use crate::{
    Call, CallReply, RpcError, Session,
    core::{
        Message, SessionId,
        auth::AuthKey,
        codec::v1::{self, DecodeError},
        curie::Prefixes,
    },
    layer::Config,
    router::Inner,
    session::{CloseReason, CloseRequest, Frame, Outbox},
};

/// Frames written before one flush, at most.
const MAX_BATCH: usize = 256;
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
    session(ws, id, router, config, parts)
        .instrument(span)
        .await;
}

struct Conn {
    router: Arc<Inner<()>>,
    config: Arc<Config>,
    parts: Arc<Parts>,
    session: Session,
    outbox: Outbox,
    prefixes: Prefixes,
}

async fn session(
    mut ws: WebSocket,
    id: SessionId,
    router: Arc<Inner<()>>,
    config: Arc<Config>,
    parts: Arc<Parts>,
) {
    let (outbox, mut rx, ctl) = Outbox::new(config.queue_capacity);
    let welcome = v1::encode_welcome(&id, &config.server_ident);
    if let Err(e) = ws.send(WsMessage::Text(welcome.into())).await {
        tracing::debug!(error = %e, "client left before WELCOME");
        return;
    }
    let hub = &router.wamp().hub;
    hub.add_session(id.clone(), outbox.clone());
    let mut conn = Conn {
        session: Session::connected(id, outbox.clone()),
        router: router.clone(),
        config,
        parts,
        outbox,
        prefixes: Prefixes::default(),
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
    tracing::info!("session opened");
    router.opened(&conn.session);

    let reason = loop {
        tokio::select! {
            () = until(&mut auth_deadline) => {
                auth_deadline = None;
                if conn.session.auth_key().is_none() {
                    tracing::warn!("not authenticated in time: closing");
                    conn.outbox.close(1008, "authentication timeout", false);
                }
            }
            () = ctl.notify.notified() => {
                if let Some(request) = ctl.take_close() {
                    break close(&mut ws, &mut rx, request).await;
                }
            }
            Some(frame) = rx.recv() => {
                if let Err(e) = write_batch(&mut ws, frame, &mut rx).await {
                    break CloseReason::Error(e.to_string());
                }
            }
            incoming = ws.recv() => match incoming {
                None => break CloseReason::Disconnected,
                Some(Err(e)) => break transport_error(&mut ws, e).await,
                Some(Ok(WsMessage::Text(text))) => conn.handle_text(text.as_str()).await,
                Some(Ok(WsMessage::Binary(_))) => {
                    tracing::warn!("binary frame ignored: WAMP v1 uses text frames");
                    if conn.config.close_on_protocol_violation {
                        conn.outbox.close(1003, "binary frames are not WAMP v1", true);
                    }
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
    };
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

async fn write_batch(
    ws: &mut WebSocket,
    first: Frame,
    rx: &mut mpsc::Receiver<Frame>,
) -> Result<(), axum::Error> {
    ws.feed(WsMessage::Text(first)).await?;
    for _ in 1..MAX_BATCH {
        match rx.try_recv() {
            Ok(frame) => ws.feed(WsMessage::Text(frame)).await?,
            Err(_) => break,
        }
    }
    ws.flush().await
}

async fn close(
    ws: &mut WebSocket,
    rx: &mut mpsc::Receiver<Frame>,
    request: CloseRequest,
) -> CloseReason {
    let CloseRequest {
        code,
        reason,
        drain,
    } = request;
    let goodbye = async {
        if drain {
            while let Ok(frame) = rx.try_recv() {
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
    let capacity = error
        .source_tungstenite()
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

trait SourceTungstenite {
    fn source_tungstenite(&self) -> Option<&tungstenite::Error>;
}

impl SourceTungstenite for axum::Error {
    fn source_tungstenite(&self) -> Option<&tungstenite::Error> {
        std::error::Error::source(self).and_then(|s| s.downcast_ref())
    }
}

impl Conn {
    async fn handle_text(&mut self, text: &str) {
        match v1::decode(text) {
            Ok(Message::Prefix { prefix, uri }) => {
                if !self.prefixes.insert(prefix, uri) {
                    tracing::warn!("PREFIX ignored: too many prefixes on this session");
                }
            }
            Ok(Message::Call {
                call_id,
                procedure,
                args,
            }) => {
                let procedure = self.prefixes.resolve(&procedure).into_owned();
                self.spawn_call(call_id, procedure, args);
            }
            Ok(Message::Subscribe { topic }) => {
                let topic = self.prefixes.resolve(&topic).into_owned();
                self.router.subscribe(&self.session, topic).await;
            }
            Ok(Message::Unsubscribe { topic }) => {
                let topic = self.prefixes.resolve(&topic);
                self.router.unsubscribe(&self.session, &topic);
            }
            Ok(Message::Publish {
                topic,
                event,
                exclude,
                eligible,
            }) => {
                let topic = self.prefixes.resolve(&topic).into_owned();
                self.router
                    .publish(&self.session, topic, event, exclude, eligible)
                    .await;
            }
            Ok(other) => {
                tracing::warn!(type_id = other.type_id(), "unexpected message ignored");
            }
            Err(DecodeError::BadShape {
                call_id: Some(call_id),
                reason,
                ..
            }) => {
                tracing::warn!(%call_id, %reason, "malformed CALL answered with an error");
                let error = RpcError::invalid_argument(format!("malformed CALL: {reason}"));
                let _ = self
                    .outbox
                    .push(v1::encode_call_error(&call_id, &error).into());
            }
            Err(error) => {
                tracing::warn!(%error, "malformed frame ignored");
                if self.config.close_on_protocol_violation {
                    self.outbox.close(1002, &error.to_string(), true);
                }
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
        tokio::spawn(
            async move {
                let call_id = call.call_id.clone();
                let frame = match router.dispatch(call).await {
                    CallReply::Result(result) => v1::encode_call_result(&call_id, &result),
                    CallReply::Error(error) => {
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
    }
}
