//! The one call path for cross-shard work: `router.call(owner, request) -> response`.
//!
//! Owner: one `Router` per shard, inside the shard's context; created when the shard joins the
//! channel mesh and dropped when the shard stops.
//!
//! Generic over what it carries: the shard's context implements `Serve`, which names the
//! request, response and one-way post types (the broker's `ShardRequest`, `ShardResponse` and
//! `ShardPost`) and serves them. The router itself knows nothing of the services.
//!
//! A call to the local shard is a direct call of the shard's service (the mesh refuses
//! self-sends, and a local call should cost nothing). A call to another shard goes over the
//! bounded glommio channel mesh as an `Envelope::Call` carrying a call id; the owner runs the
//! request in a task of its own and sends back an `Envelope::Reply`, which the caller's mesh
//! receiver matches to the waiting call. A full channel makes the sender wait: backpressure,
//! never an unbounded queue. When a peer's channel closes (the peer stopped), every call still
//! waiting on that peer fails with `RouterError::ShardGone` instead of hanging.
//!
//! `Envelope::Post` is a one-way message applied *inline* by the receiver loop, in the order it
//! was sent. Metadata images travel this way, so every shard applies them in the order shard 0
//! produced them.
//!
//! Order: calls to one peer are sent in the order they were made (first polled), also when
//! the channel is full and several wait for space (a `Turnstile` per peer), because the receiver runs
//! them in arrival order and Kafka clients rely on a connection's requests to a partition
//! being applied in order. A call dropped while waiting gives its turn up.
//!
//! Deadlock freedom: a receiver loop never waits on a send. It spawns calls as tasks and
//! applies posts synchronously, so it always drains its channel, and a sender blocked on a full
//! channel is always eventually released.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::rc::{Rc, Weak};

use futures::channel::oneshot;
use glommio::TaskQueueHandle;
use glommio::channels::channel_mesh::{Receivers, Senders};
use tracing::{debug, warn};

use crate::limits;
use crate::runtime::ownership::ShardId;
use crate::runtime::turnstile::Turnstile;

/// What a shard serves over the router: the message types and the code that serves them.
/// Implemented by the shard's context (`broker::ShardContext`).
pub trait Serve: Sized + 'static {
    /// Work one shard asks of another. Crosses threads: owned data or `Bytes`, never copied.
    type Request: Send + fmt::Debug + 'static;
    /// The answer to a `Request`.
    type Response: Send + fmt::Debug + 'static;
    /// A one-way message, applied inline by the receiving shard in send order.
    type Post: Send + fmt::Debug + 'static;

    /// Serves a request addressed to this shard, whether it came over the mesh or from a
    /// local caller.
    fn serve(
        self: &Rc<Self>,
        from: ShardId,
        request: Self::Request,
    ) -> impl Future<Output = Self::Response>;

    /// Applies a one-way message from another shard, synchronously.
    fn apply_post(self: &Rc<Self>, post: Self::Post);

    /// This shard's router.
    fn router(&self) -> &Router<Self>;

    /// The task queue that runs calls from other shards.
    fn request_queue(&self) -> TaskQueueHandle;
}

/// What travels on the mesh.
#[derive(Debug)]
pub enum Envelope<S: Serve> {
    /// A request that expects a reply.
    Call {
        /// Matches the reply to the waiting caller; unique per calling shard.
        call_id: u64,
        /// The calling shard, where the reply goes.
        from: ShardId,
        /// The work.
        request: S::Request,
    },
    /// The reply to a `Call`.
    Reply {
        /// The `call_id` of the call.
        call_id: u64,
        /// The answer.
        response: S::Response,
    },
    /// A one-way message.
    Post(S::Post),
}

/// Why a cross-shard call did not produce a response.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The target shard has stopped (its channel is closed).
    #[error("{0} has stopped")]
    ShardGone(ShardId),
    /// The target shard does not exist.
    #[error("{shard} does not exist (shard count {shard_count})")]
    NoSuchShard {
        /// The target.
        shard: ShardId,
        /// How many shards there are.
        shard_count: usize,
    },
    /// Too many calls from this shard are already waiting for replies.
    #[error("too many cross-shard calls in flight ({0})")]
    Overloaded(usize),
}

/// See the module documentation.
pub struct Router<S: Serve> {
    shard: ShardId,
    shard_count: usize,
    senders: Senders<Envelope<S>>,
    /// Per peer: the order in which calls may send.
    send_order: Vec<Turnstile>,
    pending: RefCell<HashMap<u64, PendingCall<S::Response>>>,
    next_call_id: Cell<u64>,
    remote_calls: Cell<u64>,
    context: Weak<S>,
}

struct PendingCall<R> {
    target: ShardId,
    reply: oneshot::Sender<R>,
}

impl<S: Serve> std::fmt::Debug for Router<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("shard", &self.shard)
            .field("shard_count", &self.shard_count)
            .field("pending", &self.pending.borrow().len())
            .finish()
    }
}

impl<S: Serve> Router<S> {
    /// A router for `shard`, sending through `senders`. `context` is the shard's own context,
    /// which serves local calls and remote requests alike.
    pub fn new(
        shard: ShardId,
        shard_count: usize,
        senders: Senders<Envelope<S>>,
        context: Weak<S>,
    ) -> Router<S> {
        Router {
            shard,
            shard_count,
            senders,
            send_order: (0..shard_count).map(|_| Turnstile::default()).collect(),
            pending: RefCell::new(HashMap::new()),
            next_call_id: Cell::new(0),
            remote_calls: Cell::new(0),
            context,
        }
    }

    /// The shard this router belongs to.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// Number of shards in the broker.
    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// Calls sent to other shards since start.
    pub fn remote_calls(&self) -> u64 {
        self.remote_calls.get()
    }

    /// Runs `request` on `owner` and returns its response.
    pub async fn call(
        &self,
        owner: ShardId,
        request: S::Request,
    ) -> Result<S::Response, RouterError> {
        if owner.0 >= self.shard_count {
            return Err(RouterError::NoSuchShard {
                shard: owner,
                shard_count: self.shard_count,
            });
        }
        if owner == self.shard {
            let context = self
                .context
                .upgrade()
                .ok_or(RouterError::ShardGone(owner))?;
            return Ok(context.serve(owner, request).await);
        }
        let pending_len = self.pending.borrow().len();
        if pending_len >= limits::ROUTER_PENDING_CALLS_MAX {
            return Err(RouterError::Overloaded(pending_len));
        }
        let turn = self.send_order[owner.0].join();
        turn.wait().await;
        let call_id = self.next_call_id.get();
        self.next_call_id.set(call_id + 1);
        self.remote_calls.set(self.remote_calls.get() + 1);
        let (reply, response) = oneshot::channel();
        self.pending.borrow_mut().insert(
            call_id,
            PendingCall {
                target: owner,
                reply,
            },
        );
        let envelope = Envelope::Call {
            call_id,
            from: self.shard,
            request,
        };
        let sent = self.senders.send_to(owner.0, envelope).await;
        drop(turn);
        if sent.is_err() {
            self.pending.borrow_mut().remove(&call_id);
            return Err(RouterError::ShardGone(owner));
        }
        response.await.map_err(|_| RouterError::ShardGone(owner))
    }

    /// Sends a one-way message to every other shard, in order, waiting for channel space.
    /// Shards that have stopped are skipped.
    pub async fn broadcast(&self, make: impl Fn() -> S::Post) {
        for peer in (0..self.shard_count).filter(|&p| p != self.shard.0) {
            if self
                .senders
                .send_to(peer, Envelope::Post(make()))
                .await
                .is_err()
            {
                debug!(peer, "post not delivered: shard stopped");
            }
        }
    }

    async fn send_reply(&self, to: ShardId, call_id: u64, response: S::Response) {
        let envelope = Envelope::Reply { call_id, response };
        if self.senders.send_to(to.0, envelope).await.is_err() {
            debug!(%to, call_id, "reply not delivered: caller stopped");
        }
    }

    fn complete(&self, call_id: u64, response: S::Response) {
        // The borrow ends before the reply is sent: the waiting task runs later, not here.
        let call = self.pending.borrow_mut().remove(&call_id);
        match call {
            Some(call) => {
                // The caller may have given up (its future dropped); that is not an error.
                let _ = call.reply.send(response);
            }
            None => warn!(call_id, "reply for a call that is not pending"),
        }
    }

    /// Fails every call still waiting on `peer`: its channel closed, so no reply will come.
    fn fail_calls_to(&self, peer: ShardId) {
        self.pending
            .borrow_mut()
            .retain(|_, call| call.target != peer);
    }
}

/// Runs the receive side of the mesh for one shard: one task per peer channel, until every
/// peer has closed its channel. Requests run as tasks in the shard's request queue; posts are
/// applied inline, in order.
pub async fn run_mesh_receivers<S: Serve>(context: Rc<S>, mut receivers: Receivers<Envelope<S>>) {
    let mut tasks = Vec::new();
    for (peer, receiver) in receivers.streams() {
        let context = context.clone();
        let peer = ShardId(peer);
        let queue = context.request_queue();
        let task = glommio::spawn_local_into(
            async move {
                while let Some(envelope) = receiver.recv().await {
                    dispatch_envelope(&context, peer, envelope);
                }
                context.router().fail_calls_to(peer);
            },
            queue,
        )
        .expect("the request queue exists for the life of the shard");
        tasks.push(task);
    }
    futures::future::join_all(tasks).await;
}

fn dispatch_envelope<S: Serve>(context: &Rc<S>, peer: ShardId, envelope: Envelope<S>) {
    match envelope {
        Envelope::Call {
            call_id,
            from,
            request,
        } => {
            let context = context.clone();
            let queue = context.request_queue();
            glommio::spawn_local_into(
                async move {
                    let response = context.serve(from, request).await;
                    context.router().send_reply(from, call_id, response).await;
                },
                queue,
            )
            .expect("the request queue exists for the life of the shard")
            .detach();
        }
        Envelope::Reply { call_id, response } => context.router().complete(call_id, response),
        Envelope::Post(post) => {
            debug!(%peer, "post received");
            context.apply_post(post);
        }
    }
}
