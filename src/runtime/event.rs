//! A single-threaded "notify all" event: futures wait for a condition and are woken when the
//! owner signals that the condition may have changed (appends, completed flushes).
//!
//! Lives inside a log on its shard; !Send. Waiters deregister on drop, so abandoned long-poll
//! fetches leave nothing behind; the number of registered wakers is bounded by the number of
//! live waiting futures.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
pub(crate) struct Event {
    waiters: RefCell<BTreeMap<u64, Waker>>,
    next_key: Cell<u64>,
}

impl Event {
    pub(crate) fn notify_all(&self) {
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for (_, waker) in waiters {
            waker.wake();
        }
    }

    /// Resolves with the first `Some` that `check` returns, re-checking after each notify.
    pub(crate) fn wait_for<T, F: FnMut() -> Option<T>>(&self, check: F) -> WaitFor<'_, F> {
        WaitFor {
            event: self,
            check,
            key: None,
        }
    }
}

pub(crate) struct WaitFor<'a, F> {
    event: &'a Event,
    check: F,
    key: Option<u64>,
}

impl<T, F: FnMut() -> Option<T> + Unpin> Future for WaitFor<'_, F> {
    type Output = T;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        if let Some(v) = (self.check)() {
            if let Some(key) = self.key.take() {
                self.event.waiters.borrow_mut().remove(&key);
            }
            return Poll::Ready(v);
        }
        let key = match self.key {
            Some(k) => k,
            None => {
                let k = self.event.next_key.get();
                self.event.next_key.set(k + 1);
                self.key = Some(k);
                k
            }
        };
        self.event
            .waiters
            .borrow_mut()
            .insert(key, cx.waker().clone());
        Poll::Pending
    }
}

impl<F> Drop for WaitFor<'_, F> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.event.waiters.borrow_mut().remove(&key);
        }
    }
}
