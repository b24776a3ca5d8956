//! A call's CANCEL signal: the latest mode a caller asked for, from the session (or the
//! backplane) to the call running it. One small allocation and a lock taken only when
//! something happens; tokio's `watch` channel, which this replaced, set up eight wait
//! lists per call and woke them all when the call ended, for a signal that almost never
//! fires.

use std::{
    future::poll_fn,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll, Waker},
};

use crate::core::session::v2::CancelMode;

#[derive(Debug, Default)]
struct State {
    mode: Option<CancelMode>,
    /// Counts the modes sent.
    version: u32,
    sender_gone: bool,
    /// The one task waiting (a call has one receiver, polled by one task).
    waker: Option<Waker>,
}

#[derive(Debug, Default)]
struct Shared(Mutex<State>);

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A new signal: the sender stays with whoever may cancel, the receiver goes with the call.
pub(crate) fn channel() -> (Sender, Receiver) {
    let shared = Arc::new(Shared::default());
    (Sender(shared.clone()), Receiver { shared, seen: 0 })
}

/// Cancels a call.
#[derive(Debug)]
pub(crate) struct Sender(Arc<Shared>);

impl Sender {
    /// Whether the call has ended (its receiver is gone).
    pub(crate) fn is_closed(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }

    /// Asks for `mode` (the latest request wins).
    pub(crate) fn send_replace(&self, mode: Option<CancelMode>) {
        let waker = {
            let mut state = self.0.state();
            state.mode = mode;
            state.version = state.version.wrapping_add(1);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.0.state();
            state.sender_gone = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// What a call sees of its CANCELs.
#[derive(Debug)]
pub(crate) struct Receiver {
    shared: Arc<Shared>,
    seen: u32,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // The ended call's waker would keep its task's memory while the sender lives.
        self.shared.state().waker = None;
    }
}

/// No more CANCELs can come: the sender is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

impl Receiver {
    /// The latest mode asked for, marked seen.
    pub(crate) fn borrow_and_update(&mut self) -> Option<CancelMode> {
        let state = self.shared.state();
        self.seen = state.version;
        state.mode
    }

    fn wait(state: &mut State, cx: &Context<'_>) {
        match &mut state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
    }

    /// Whether the call has been canceled (in any mode).
    pub(crate) fn is_canceled(&self) -> bool {
        self.shared.state().mode.is_some()
    }

    /// Ready once a mode not seen yet is sent (`Err` once none can come any more).
    pub(crate) fn poll_changed(&mut self, cx: &Context<'_>) -> Poll<Result<(), Closed>> {
        let mut state = self.shared.state();
        if state.version != self.seen {
            self.seen = state.version;
            Poll::Ready(Ok(()))
        } else if state.sender_gone {
            Poll::Ready(Err(Closed))
        } else {
            Self::wait(&mut state, cx);
            Poll::Pending
        }
    }

    /// Waits for a mode not seen yet.
    pub(crate) async fn changed(&mut self) -> Result<(), Closed> {
        poll_fn(|cx| self.poll_changed(cx)).await
    }

    /// Ready once the call is canceled (in any mode); pending for ever once the sender is
    /// gone without.
    pub(crate) fn poll_canceled(&mut self, cx: &Context<'_>) -> Poll<()> {
        let mut state = self.shared.state();
        if state.mode.is_some() {
            return Poll::Ready(());
        }
        if !state.sender_gone {
            Self::wait(&mut state, cx);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Count(AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_mode_wakes_the_waiting_call_and_reads_once() {
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(woken.clone());
        let cx = Context::from_waker(&waker);
        let (tx, mut rx) = channel();
        assert!(rx.poll_changed(&cx).is_pending());
        assert!(rx.poll_canceled(&cx).is_pending());
        assert!(!tx.is_closed());
        tx.send_replace(Some(CancelMode::Kill));
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert_eq!(rx.poll_changed(&cx), Poll::Ready(Ok(())));
        assert!(rx.poll_changed(&cx).is_pending());
        assert_eq!(rx.borrow_and_update(), Some(CancelMode::Kill));
        assert!(rx.poll_canceled(&cx).is_ready());
        tx.send_replace(Some(CancelMode::Skip));
        assert_eq!(rx.borrow_and_update(), Some(CancelMode::Skip));
        assert!(rx.poll_changed(&cx).is_pending());
        assert_eq!(woken.0.load(Ordering::SeqCst), 2);
        drop(tx);
        assert_eq!(woken.0.load(Ordering::SeqCst), 3);
        assert_eq!(rx.poll_changed(&cx), Poll::Ready(Err(Closed)));
    }

    #[test]
    fn a_mode_sent_before_the_sender_left_is_still_seen() {
        let (tx, mut rx) = channel();
        tx.send_replace(Some(CancelMode::Skip));
        drop(tx);
        let cx = Context::from_waker(Waker::noop());
        assert_eq!(rx.poll_changed(&cx), Poll::Ready(Ok(())));
        assert_eq!(rx.poll_changed(&cx), Poll::Ready(Err(Closed)));
        let (tx, rx) = channel();
        drop(rx);
        assert!(tx.is_closed());
        let (tx, mut rx) = channel();
        drop(tx);
        // Never canceled: pending for ever, not an error.
        assert!(rx.poll_canceled(&cx).is_pending());
    }
}
