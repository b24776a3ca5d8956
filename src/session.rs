//! The session handle that handlers, hooks and the server handle use to reach one
//! connected client.

use std::{
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use tokio::sync::{Notify, mpsc};

use crate::core::{
    SessionId,
    auth::{AuthKey, AuthState, Permissions},
    codec::v1,
};

/// One encoded text frame, shared cheaply between recipients.
pub(crate) type Frame = Utf8Bytes;

/// A request to close a session, read by its socket task.
#[derive(Debug, Clone)]
pub(crate) struct CloseRequest {
    pub(crate) code: u16,
    pub(crate) reason: String,
    /// Send what is already queued before the close frame.
    pub(crate) drain: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Control {
    close: Mutex<Option<CloseRequest>>,
    pub(crate) notify: Notify,
}

impl Control {
    pub(crate) fn take_close(&self) -> Option<CloseRequest> {
        self.close
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// The sending side of a session's bounded outbound queue.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Frame>,
    ctl: Arc<Control>,
}

impl Outbox {
    pub(crate) fn new(capacity: usize) -> (Self, mpsc::Receiver<Frame>, Arc<Control>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let ctl = Arc::new(Control::default());
        (
            Self {
                tx,
                ctl: ctl.clone(),
            },
            rx,
            ctl,
        )
    }

    /// Queues a frame without waiting. A full queue means the client does not keep up:
    /// the session is closed (1008) rather than letting memory grow or stalling the sender.
    pub(crate) fn push(&self, frame: Frame) -> Result<(), SendError> {
        match self.tx.try_send(frame) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("outbound queue full: closing slow consumer");
                self.close(1008, "slow consumer: outbound queue full", false);
                Err(SendError::QueueFull)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Closed),
        }
    }

    /// Asks the socket task to close the connection; the first request wins.
    pub(crate) fn close(&self, code: u16, reason: &str, drain: bool) {
        {
            let mut slot = self
                .ctl
                .close
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if slot.is_none() {
                *slot = Some(CloseRequest {
                    code,
                    reason: reason.to_owned(),
                    drain,
                });
            }
        }
        self.ctl.notify.notify_one();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Why sending to a session failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The session has closed.
    Closed,
    /// The session's outbound queue was full: the session is being closed as a slow
    /// consumer.
    QueueFull,
    /// The session has no connection (a [`Call`](crate::Call) built in a test).
    NotConnected,
    /// No open session has this id.
    NoSuchSession,
    /// The event could not be serialized to JSON.
    Serialize(String),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("the session is closed"),
            Self::QueueFull => f.write_str("the session's outbound queue is full"),
            Self::NotConnected => f.write_str("the session has no connection"),
            Self::NoSuchSession => f.write_str("no open session has this id"),
            Self::Serialize(e) => write!(f, "the event does not serialize: {e}"),
        }
    }
}

impl std::error::Error for SendError {}

pub(crate) fn event_frame(topic: &str, event: &impl Serialize) -> Result<Frame, SendError> {
    let value = serde_json::to_value(event).map_err(|e| SendError::Serialize(e.to_string()))?;
    Ok(Frame::from(v1::encode_event(topic, &value)))
}

/// A handle to one WAMP session: its id, and a way to send it events or close it.
///
/// Cheap to clone. Handlers get it with the [`Session`] extractor, hooks get a reference.
///
/// ```
/// use tower_wamp::{Call, Session};
///
/// // A session built for a test has an id but no connection.
/// let call = Call::new("http://example.com/api#f", vec![]);
/// let session: &Session = call.session();
/// assert_eq!(session.id().as_str().len(), 16);
/// assert!(session.send_event("http://example.com/t", &1).is_err());
/// ```
#[derive(Clone)]
pub struct Session {
    id: SessionId,
    outbox: Option<Outbox>,
    auth: Arc<Mutex<AuthSlot>>,
}

/// A session's WAMP-CRA state.
#[derive(Debug, Default)]
pub(crate) struct AuthSlot {
    pub(crate) state: AuthState,
    pub(crate) failures: u32,
    pub(crate) cached: Option<Arc<Permissions>>,
}

impl Session {
    pub(crate) fn connected(id: SessionId, outbox: Outbox) -> Self {
        Self {
            id,
            outbox: Some(outbox),
            auth: Arc::default(),
        }
    }

    pub(crate) fn auth_slot(&self) -> MutexGuard<'_, AuthSlot> {
        self.auth.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Who the session is authenticated as, or `None` before authentication (and when
    /// the router has no authentication configured).
    ///
    /// ```
    /// assert_eq!(tower_wamp::Session::detached("s".into()).auth_key(), None);
    /// ```
    #[must_use]
    pub fn auth_key(&self) -> Option<AuthKey> {
        match &self.auth_slot().state {
            AuthState::Authenticated(key) => Some(key.clone()),
            _ => None,
        }
    }

    /// Marks the session authenticated as `key` (for tests of handlers that look at
    /// [`auth_key`](Self::auth_key); the router does this itself after WAMP-CRA).
    ///
    /// ```
    /// use tower_wamp::{Session, core::auth::AuthKey};
    /// let s = Session::detached("s".into()).authenticated_as(AuthKey::Key("ada".into()));
    /// assert_eq!(s.auth_key(), Some(AuthKey::Key("ada".into())));
    /// ```
    #[must_use]
    pub fn authenticated_as(self, key: AuthKey) -> Self {
        self.auth_slot().state = AuthState::Authenticated(key);
        self
    }

    /// A session with this id and no connection, for tests of handlers.
    ///
    /// ```
    /// let s = tower_wamp::Session::detached("abc".into());
    /// assert_eq!(s.id().as_str(), "abc");
    /// assert!(!s.is_connected());
    /// ```
    #[must_use]
    pub fn detached(id: SessionId) -> Self {
        Self {
            id,
            outbox: None,
            auth: Arc::default(),
        }
    }

    /// The session id, as sent in WELCOME.
    #[must_use]
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// Whether the session still has an open connection.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.outbox.as_ref().is_some_and(|o| !o.is_closed())
    }

    /// Sends `[8, topic, event]` to this session alone, whether or not it is subscribed.
    ///
    /// # Errors
    /// [`SendError`] if the session is gone, not connected, or its queue is full.
    pub fn send_event(&self, topic: &str, event: &impl Serialize) -> Result<(), SendError> {
        let outbox = self.outbox.as_ref().ok_or(SendError::NotConnected)?;
        outbox.push(event_frame(topic, event)?)
    }

    /// Closes the connection with a normal close (1000) after what is queued is sent.
    pub fn close(&self) {
        if let Some(o) = &self.outbox {
            o.close(1000, "closed by the server", true);
        }
    }

    pub(crate) fn outbox(&self) -> Option<&Outbox> {
        self.outbox.as_ref()
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// Why a session ended, as passed to the `on_close` hook.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client sent a close frame.
    Client {
        /// The close code, if the client gave one.
        code: Option<u16>,
        /// The close reason text.
        reason: String,
    },
    /// The connection ended without a close frame.
    Disconnected,
    /// The server closed the session (a killing error, [`Session::close`], a slow
    /// consumer, a protocol violation, an oversize message).
    Server {
        /// The close code sent.
        code: u16,
        /// The reason sent.
        reason: String,
    },
    /// A transport error ended the session.
    Error(String),
}
