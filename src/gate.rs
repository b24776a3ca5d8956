//! A future that is polled only when it was woken: two halves of one task (the session's
//! reader and writer) each run only on their own wake-ups, not on each other's.
//!
//! Polling the reader costs even when no data has come (the WebSocket prepares its read
//! buffer before it learns that the socket is not ready), and in one task every wake-up of
//! the writer polled it too.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
};

use futures_util::task::AtomicWaker;

/// Whether the inner future was woken, and the task to wake.
#[derive(Debug, Default)]
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Polls `F` on its first poll and then only after `F` woke its waker.
pub(crate) struct Gated<F> {
    inner: Pin<Box<F>>,
    flag: Arc<Flag>,
    waker: Waker,
}

impl<F: Future> Gated<F> {
    pub(crate) fn new(inner: F) -> Self {
        let flag = Arc::new(Flag {
            // The first poll goes through.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            inner: Box::pin(inner),
            waker: Waker::from(flag.clone()),
            flag,
        }
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Registered before the flag is read, so that a wake in between is not lost.
        self.flag.task.register(cx.waker());
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let this = &mut *self;
        this.inner
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready on the third, waking itself on the first.
    struct Probe(Arc<AtomicUsize>);

    impl Future for Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            match self.0.fetch_add(1, Ordering::SeqCst) {
                0 => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                1 => Poll::Pending,
                _ => Poll::Ready(()),
            }
        }
    }

    #[test]
    fn only_its_own_wake_ups_poll_the_inner_future() {
        let polls = Arc::new(AtomicUsize::new(0));
        let mut gated = Gated::new(Probe(polls.clone()));
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        // First poll: through; it wakes itself, so the second goes through as well.
        assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
        // Not woken since: polls of the task (for someone else) do not reach it.
        for _ in 0..3 {
            assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 2);
        // Woken through the waker it was given: polled again.
        gated.waker.wake_by_ref();
        assert!(Pin::new(&mut gated).poll(&mut cx).is_ready());
    }
}
