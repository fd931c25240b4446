//! A one-way, level-triggered shutdown flag for the tasks of one shard.
//!
//! Owner: one per shard, inside its context (`broker::ShardContext`). Raised once (by the shard's handling of a
//! `Drain` request); every task that awaits `raised()` wakes then, and any task that asks later
//! sees it raised at once. Not `Send`: it never leaves its executor.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct ShutdownSignal {
    raised: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl ShutdownSignal {
    /// A signal that is not raised.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the signal and wakes every waiter. Idempotent.
    pub fn raise(&self) {
        self.raised.set(true);
        for waker in self.waiters.take() {
            waker.wake();
        }
    }

    /// Whether the signal has been raised.
    pub fn is_raised(&self) -> bool {
        self.raised.get()
    }

    /// Resolves once the signal is raised.
    pub fn raised(&self) -> Raised<'_> {
        Raised { signal: self }
    }
}

/// Future returned by [`ShutdownSignal::raised`].
#[derive(Debug)]
pub struct Raised<'a> {
    signal: &'a ShutdownSignal,
}

impl Future for Raised<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.raised.get() {
            return Poll::Ready(());
        }
        let mut waiters = self.signal.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn waiters_wake_on_raise_and_late_askers_see_it() {
        glommio::LocalExecutor::default().run(async {
            let signal = Rc::new(ShutdownSignal::new());
            let waiter = {
                let signal = signal.clone();
                glommio::spawn_local(async move { signal.raised().await })
            };
            glommio::yield_if_needed().await;
            assert!(!signal.is_raised());
            signal.raise();
            waiter.await;
            signal.raised().await;
            assert!(signal.is_raised());
        });
    }
}
