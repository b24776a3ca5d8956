//! Procedures registered by WAMP v2 clients: the table of registrations and, per callee
//! session, its invocations awaiting a YIELD or ERROR.
//!
//! A call to such a procedure, from a v1 or a v2 caller, becomes an INVOCATION queued for
//! the callee (never dropped by a slow-consumer policy: it is a request). The caller awaits
//! the answer; a callee that leaves fails every pending call with `wamp.error.canceled`, and a
//! caller that goes away (its session closed, its call timed out) removes its invocation, so
//! a late YIELD is discarded.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use serde_json::Value;
use tokio::sync::oneshot;

use crate::{
    RpcError,
    core::{
        SessionId,
        broker::Budget,
        codec::v2::{Dict, MAX_ID, Message},
    },
    session::{Outbox, SendError},
    wire::{Frame, Payload, Proto},
};

/// `wamp.error.canceled`.
pub(crate) const CANCELED: &str = "wamp.error.canceled";

/// What a callee answered.
#[derive(Debug)]
pub(crate) enum Yielded {
    Result(Payload),
    Error {
        error: String,
        args: Vec<Value>,
        kwargs: Dict,
    },
}

/// One callee session's invocations in flight.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// The last INVOCATION request id issued (they count 1, 2, 3 … per callee session).
    last: AtomicU64,
    calls: Mutex<HashMap<u64, oneshot::Sender<Yielded>>>,
    closed: std::sync::atomic::AtomicBool,
}

/// The most invocations one callee may have unanswered; beyond, calls to it are refused
/// with `wamp.error.too_many_calls` (its callers' own budgets bound each of them).
pub(crate) const MAX_PENDING: usize = 4096;

/// Why an invocation was not started.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The registration is gone.
    Unregistered,
    /// The callee is leaving.
    Gone,
    /// The callee has too many invocations unanswered or queued.
    Busy,
}

/// What became of a YIELD or ERROR from a callee.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answered {
    Delivered,
    /// For an invocation whose caller is gone: discarded.
    Late,
    /// For an invocation never issued: a protocol violation.
    Unknown,
}

impl Pending {
    fn calls(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Yielded>>> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts an invocation: `send` queues it under the next request id; `Err` once the
    /// callee left, while it has [`MAX_PENDING`] invocations unanswered, or when `send`
    /// finds no room (the id is then not used: INVOCATION ids stay sequential).
    pub(crate) fn start(
        &self,
        send: impl FnOnce(u64) -> Result<(), SendError>,
    ) -> Result<(u64, oneshot::Receiver<Yielded>), Refused> {
        let mut calls = self.calls();
        if self.closed.load(Ordering::SeqCst) {
            return Err(Refused::Gone);
        }
        if calls.len() >= MAX_PENDING {
            return Err(Refused::Busy);
        }
        let id = match self.last.load(Ordering::SeqCst) {
            MAX_ID => 1,
            last => last + 1,
        };
        match send(id) {
            Ok(()) => {}
            Err(SendError::QueueFull) => return Err(Refused::Busy),
            Err(_) => return Err(Refused::Gone),
        }
        self.last.store(id, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        calls.insert(id, tx);
        Ok((id, rx))
    }

    /// Delivers a callee's answer.
    pub(crate) fn answer(&self, request: u64, answer: Yielded) -> Answered {
        match self.calls().remove(&request) {
            Some(tx) => {
                let _ = tx.send(answer);
                Answered::Delivered
            }
            None if request != 0 && request <= self.last.load(Ordering::SeqCst) => Answered::Late,
            None => Answered::Unknown,
        }
    }

    /// Forgets an invocation whose caller went away.
    pub(crate) fn forget(&self, request: u64) {
        self.calls().remove(&request);
    }

    /// The callee left: every pending call fails.
    pub(crate) fn close(&self) {
        let mut calls = self.calls();
        self.closed.store(true, Ordering::SeqCst);
        calls.clear();
    }
}

/// A session that registered procedures.
#[derive(Debug, Clone)]
pub(crate) struct Callee {
    pub(crate) session: SessionId,
    pub(crate) outbox: Outbox,
    pub(crate) pending: Arc<Pending>,
    /// The callee asked (REGISTER's `disclose_caller`) to be told who calls.
    pub(crate) disclose_caller: bool,
}

/// Why a REGISTER was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RegisterError {
    Exists,
    OverBudget,
    /// The callee's session is closing.
    Closing,
}

/// The procedures registered by clients.
#[derive(Debug, Default)]
pub(crate) struct Registrations {
    by_uri: HashMap<String, (u64, Callee)>,
    by_id: HashMap<u64, String>,
    /// Per session: how many registrations, and the bytes of their URIs.
    per_session: HashMap<SessionId, (usize, usize)>,
    next_id: u64,
}

impl Registrations {
    pub(crate) fn register(
        &mut self,
        uri: &str,
        callee: &Callee,
        budget: Budget,
    ) -> Result<u64, RegisterError> {
        if self.by_uri.contains_key(uri) {
            return Err(RegisterError::Exists);
        }
        let (count, bytes) = self.per_session.entry(callee.session.clone()).or_default();
        if *count >= budget.entries || *bytes + uri.len() > budget.bytes {
            return Err(RegisterError::OverBudget);
        }
        *count += 1;
        *bytes += uri.len();
        self.next_id += 1;
        let id = self.next_id;
        self.by_uri.insert(uri.to_owned(), (id, callee.clone()));
        self.by_id.insert(id, uri.to_owned());
        Ok(id)
    }

    /// Removes a registration of `session`; `false` if it has no such registration.
    pub(crate) fn unregister(&mut self, id: u64, session: &SessionId) -> bool {
        let Some(uri) = self.by_id.get(&id) else {
            return false;
        };
        if self
            .by_uri
            .get(uri)
            .is_none_or(|(_, c)| &c.session != session)
        {
            return false;
        }
        let uri = self.by_id.remove(&id).expect("looked up above");
        self.by_uri.remove(&uri);
        if let Some((count, bytes)) = self.per_session.get_mut(session) {
            *count -= 1;
            *bytes -= uri.len();
            if *count == 0 {
                self.per_session.remove(session);
            }
        }
        true
    }

    /// Removes every registration of a session.
    pub(crate) fn remove_session(&mut self, session: &SessionId) {
        if self.per_session.remove(session).is_none() {
            return;
        }
        let by_id = &mut self.by_id;
        self.by_uri.retain(|_, (id, callee)| {
            let keep = &callee.session != session;
            if !keep {
                by_id.remove(id);
            }
            keep
        });
    }

    pub(crate) fn callee(&self, uri: &str) -> Option<(u64, Callee)> {
        self.by_uri.get(uri).cloned()
    }

    /// Whether `registration` is still `session`'s.
    pub(crate) fn holds(&self, registration: u64, session: &SessionId) -> bool {
        self.by_id
            .get(&registration)
            .and_then(|uri| self.by_uri.get(uri))
            .is_some_and(|(id, c)| *id == registration && &c.session == session)
    }
}

/// Runs one call on a client's procedure: the INVOCATION (queued under the registrations'
/// lock, only while the registration stands, so it never comes before REGISTERED or after
/// UNREGISTERED), then its answer.
pub(crate) async fn invoke(
    hub: &crate::hub::Hub,
    registration: u64,
    callee: Callee,
    args: Vec<Value>,
    kwargs: Dict,
    details: Dict,
) -> Result<Payload, RpcError> {
    let gone = || RpcError::new(CANCELED, "the callee left");
    let Proto::V2(serializer) = callee.outbox.proto() else {
        return Err(gone());
    };
    let invocation = |request| {
        Frame::v2(
            serializer,
            &Message::Invocation {
                request,
                registration,
                details: details.clone(),
                args: args.clone(),
                kwargs: kwargs.clone(),
            },
        )
    };
    let (request, answer) = match hub.start_invocation(registration, &callee, &invocation) {
        Ok(started) => started,
        Err(Refused::Unregistered) => {
            return Err(RpcError::new(
                "wamp.error.no_such_procedure",
                "the procedure was unregistered",
            ));
        }
        Err(Refused::Gone) => return Err(gone()),
        Err(Refused::Busy) => {
            return Err(RpcError::new(
                crate::core::error_uri::TOO_MANY_CALLS,
                "the callee is busy: too many invocations waiting for it",
            ));
        }
    };
    // If this call is dropped (its caller left, it timed out), the invocation is forgotten.
    struct Forget<'a>(&'a Pending, u64);
    impl Drop for Forget<'_> {
        fn drop(&mut self) {
            self.0.forget(self.1);
        }
    }
    let _forget = Forget(&callee.pending, request);
    match answer.await {
        Ok(Yielded::Result(payload)) => Ok(payload),
        Ok(Yielded::Error {
            error,
            args,
            kwargs,
        }) => {
            let description = match args.first() {
                Some(Value::String(s)) => s.clone(),
                _ => error.clone(),
            };
            let details = if !kwargs.is_empty() {
                Some(serde_json::json!({"args": args, "kwargs": kwargs}))
            } else if args.len() > 1 {
                Some(Value::Array(args.clone()))
            } else {
                None
            };
            let mut e = RpcError::new(error, description)
                .with_args(args)
                .with_kwargs(kwargs);
            if let Some(d) = details {
                e = e.with_details(d);
            }
            Err(e)
        }
        Err(_) => Err(gone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_delivered_once_and_late_ones_told_from_unknown_ones() {
        let p = Pending::default();
        let (id, mut rx) = p.start(|_| Ok(())).unwrap();
        assert_eq!(id, 1);
        assert_eq!(
            p.answer(id, Yielded::Result(Payload::default())),
            Answered::Delivered
        );
        assert!(matches!(rx.try_recv(), Ok(Yielded::Result(_))));
        assert_eq!(
            p.answer(id, Yielded::Result(Payload::default())),
            Answered::Late
        );
        assert_eq!(
            p.answer(99, Yielded::Result(Payload::default())),
            Answered::Unknown
        );
        let (id, _rx) = p.start(|_| Ok(())).unwrap();
        p.forget(id);
        assert_eq!(
            p.answer(id, Yielded::Result(Payload::default())),
            Answered::Late
        );
        let (_, mut rx) = p.start(|_| Ok(())).unwrap();
        p.close();
        assert!(
            rx.try_recv().is_err(),
            "the callee left: the caller's answer is gone"
        );
        assert_eq!(p.start(|_| Ok(())).err(), Some(Refused::Gone));
    }

    #[test]
    fn a_callee_has_a_bounded_number_of_invocations_waiting() {
        let p = Pending::default();
        let mut waiting: Vec<_> = (0..MAX_PENDING)
            .map(|_| p.start(|_| Ok(())).unwrap())
            .collect();
        assert_eq!(p.start(|_| Ok(())).err(), Some(Refused::Busy));
        // An answer makes room again.
        let (id, _rx) = waiting.pop().unwrap();
        assert_eq!(
            p.answer(id, Yielded::Result(Payload::default())),
            Answered::Delivered
        );
        assert!(p.start(|_| Ok(())).is_ok());
    }

    #[test]
    fn an_invocation_that_is_not_sent_does_not_use_up_its_id() {
        let p = Pending::default();
        let (first, _a) = p.start(|_| Ok(())).unwrap();
        assert_eq!(
            p.start(|_| Err(SendError::QueueFull)).err(),
            Some(Refused::Busy)
        );
        let (next, _b) = p.start(|_| Ok(())).unwrap();
        assert_eq!(next, first + 1);
    }
}
