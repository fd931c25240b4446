//! A first-come, first-served turnstile for the tasks of one shard: each task joins when first
//! polled and proceeds when every task that joined before it has left. glommio's `Semaphore`
//! cannot give this order: a task arriving after a permit is released but before the woken
//! waiter runs takes the permit first.
//!
//! Owner: whatever structure needs the order, on its shard (!Send, no locks). Used where Kafka
//! clients rely on a connection's requests being applied in order: router sends to a peer
//! shard, and opening a partition that requests are already waiting on.
//!
//! A `Turn` that is dropped before its turn came (its future was cancelled) gives the turn up:
//! it is skipped when reached, so a cancelled waiter never blocks the ones behind it.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;

use crate::runtime::event::Event;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Turnstile {
    next_ticket: Cell<u64>,
    serving: Cell<u64>,
    /// Tickets of turns dropped before they came: skipped when reached.
    abandoned: RefCell<BTreeSet<u64>>,
    turn_passed: Event,
}

impl Turnstile {
    /// Takes the next place in line.
    pub fn join(&self) -> Turn<'_> {
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket + 1);
        Turn {
            turnstile: self,
            ticket,
        }
    }

    /// Whether anyone holds or waits for a turn.
    pub fn is_busy(&self) -> bool {
        self.serving.get() != self.next_ticket.get()
    }
}

/// A place in a `Turnstile`; dropping it (done, or cancelled) passes the turn on.
#[derive(Debug)]
pub struct Turn<'a> {
    turnstile: &'a Turnstile,
    ticket: u64,
}

impl Turn<'_> {
    /// Resolves when every earlier turn has been dropped.
    pub async fn wait(&self) {
        let turnstile = self.turnstile;
        if turnstile.serving.get() != self.ticket {
            turnstile
                .turn_passed
                .wait_for(|| (turnstile.serving.get() == self.ticket).then_some(()))
                .await;
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let turnstile = self.turnstile;
        if turnstile.serving.get() != self.ticket {
            turnstile.abandoned.borrow_mut().insert(self.ticket);
            return;
        }
        let mut next = self.ticket + 1;
        {
            let mut abandoned = turnstile.abandoned.borrow_mut();
            while abandoned.remove(&next) {
                next += 1;
            }
        }
        turnstile.serving.set(next);
        turnstile.turn_passed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use futures::FutureExt;

    use super::*;

    #[test]
    fn turns_come_in_order_and_cancelled_turns_are_skipped() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let turnstile = Rc::new(Turnstile::default());
                assert!(!turnstile.is_busy());
                let first = turnstile.join();
                first.wait().await; // nobody ahead: immediate
                let second = turnstile.join();
                let third = turnstile.join();
                let log = Rc::new(RefCell::new(Vec::new()));
                let waiting = {
                    let (turnstile, log) = (turnstile.clone(), log.clone());
                    glommio::spawn_local(async move {
                        let fourth = turnstile.join();
                        fourth.wait().await;
                        log.borrow_mut().push(4);
                    })
                };
                drop(second); // cancelled before its turn
                assert!(
                    third.wait().now_or_never().is_none(),
                    "must wait for its turn"
                );
                drop(first);
                assert_eq!(turnstile.serving.get(), 2, "the cancelled turn is skipped");
                third.wait().await;
                log.borrow_mut().push(3);
                drop(third);
                waiting.await;
                assert_eq!(*log.borrow(), vec![3, 4]);
                assert!(!turnstile.is_busy());
            })
            .expect("executor")
            .join()
            .expect("join");
    }
}
