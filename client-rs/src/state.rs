//! What the client's handles and its driver task share: subscriptions, waiters, flags.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{Error, Result};
use crate::message::Message;
use crate::wire;

/// (pattern, group): what the broker knows a subscription by.
pub(crate) type Key = (String, Option<String>);

/// Where a subscription's messages go.
#[derive(Debug)]
pub(crate) enum Target {
    /// A [`Subscription`](crate::Subscription)'s bounded queue.
    Queue {
        tx: mpsc::Sender<Message>,
        dropped: Arc<AtomicU64>,
        dropping: AtomicBool,
    },
    /// Replies to this client's requests.
    Inbox,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    key: Key,
    target: Target,
}

/// Local subscriptions and a topic -> entries cache cleared on every change.
#[derive(Debug, Default)]
pub(crate) struct Router {
    entries: Vec<Entry>,
    keys: HashMap<Key, usize>,
    cache: HashMap<Arc<str>, Arc<[Route]>>,
    /// Round-robin position per queue group with several local members.
    turns: HashMap<Key, usize>,
    next_id: u64,
}

/// Where one topic's messages go: each plain subscription, and one member per queue group
/// (the broker sends one copy per group that picked this connection).
#[derive(Debug)]
enum Route {
    Plain(usize),
    Group(Key, Vec<usize>),
}

const CACHE_LIMIT: usize = 4096;

impl Router {
    /// Adds a subscription; true if its key is new (the broker must hear of it).
    pub(crate) fn add(&mut self, key: Key, target: Target) -> (u64, bool) {
        self.next_id += 1;
        let count = self.keys.entry(key.clone()).or_insert(0);
        *count += 1;
        let first = *count == 1;
        self.entries.push(Entry {
            id: self.next_id,
            key,
            target,
        });
        self.cache.clear();
        (self.next_id, first)
    }

    /// Removes a subscription; its key if that was the key's last one.
    pub(crate) fn remove(&mut self, id: u64) -> Option<Key> {
        let at = self.entries.iter().position(|e| e.id == id)?;
        let entry = self.entries.remove(at);
        self.cache.clear();
        let count = self.keys.get_mut(&entry.key)?;
        *count -= 1;
        if *count == 0 {
            self.keys.remove(&entry.key);
            return Some(entry.key);
        }
        None
    }

    pub(crate) fn keys(&self) -> Vec<Key> {
        self.keys.keys().cloned().collect()
    }

    pub(crate) fn clear(&mut self) {
        self.turns.clear();
        self.entries.clear();
        self.keys.clear();
        self.cache.clear();
    }

    fn routes(&mut self, topic: &str) -> Arc<[Route]> {
        if let Some(hit) = self.cache.get(topic) {
            return hit.clone();
        }
        let mut routes: Vec<Route> = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            if !mphub_protocol::topic::matches(&e.key.0, topic) {
                continue;
            }
            if e.key.1.is_none() {
                routes.push(Route::Plain(i));
                continue;
            }
            match routes
                .iter_mut()
                .find(|r| matches!(r, Route::Group(k, _) if *k == e.key))
            {
                Some(Route::Group(_, members)) => members.push(i),
                _ => routes.push(Route::Group(e.key.clone(), vec![i])),
            }
        }
        let routes: Arc<[Route]> = routes.into();
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(topic.into(), routes.clone());
        routes
    }

    /// The entries that get this topic's message: plain ones, and one member of each group.
    fn targets(&mut self, topic: &str) -> Vec<usize> {
        let routes = self.routes(topic);
        let mut out = Vec::with_capacity(routes.len());
        for r in routes.iter() {
            match r {
                Route::Plain(i) => out.push(*i),
                Route::Group(key, members) => {
                    let turn = self.turns.entry(key.clone()).or_insert(0);
                    out.push(members[*turn % members.len()]);
                    *turn = turn.wrapping_add(1);
                }
            }
        }
        out
    }
}

/// One request that the broker answers with `$ok` or `$error`.
#[derive(Debug)]
pub(crate) struct Ack {
    op: &'static str,
    key: Key,
    tx: Option<oneshot::Sender<Result<()>>>,
}

/// Shared by every [`Client`](crate::Client) clone and the driver task.
#[derive(Debug)]
pub(crate) struct State {
    router: Mutex<Router>,
    acks: Mutex<VecDeque<Ack>>,
    pongs: Mutex<HashMap<i64, oneshot::Sender<()>>>,
    pub(crate) requests: Mutex<HashMap<String, oneshot::Sender<Message>>>,
    pub(crate) tokens: AtomicI64,
    pub(crate) connected: watch::Sender<bool>,
    pub(crate) closing: AtomicBool,
    pub(crate) finished: watch::Sender<bool>,
    /// Frames taken for writing when a connection broke: sent into a dead socket, so lost.
    pub(crate) lost_frames: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    pub(crate) fn new() -> State {
        State {
            router: Mutex::new(Router::default()),
            acks: Mutex::new(VecDeque::new()),
            pongs: Mutex::new(HashMap::new()),
            requests: Mutex::new(HashMap::new()),
            tokens: AtomicI64::new(1),
            connected: watch::Sender::new(false),
            closing: AtomicBool::new(false),
            finished: watch::Sender::new(false),
            lost_frames: AtomicU64::new(0),
        }
    }

    pub(crate) fn router(&self) -> MutexGuard<'_, Router> {
        lock(&self.router)
    }

    pub(crate) fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    pub(crate) fn is_finished(&self) -> bool {
        *self.finished.borrow()
    }

    /// Registers a `$sub`/`$unsub` and returns its frame and the receiver of the answer.
    pub(crate) fn request(
        &self,
        op: &'static str,
        key: &Key,
    ) -> Result<(Bytes, oneshot::Receiver<Result<()>>)> {
        let frame = wire::interest(op, &key.0, key.1.as_deref())?;
        let (tx, rx) = oneshot::channel();
        lock(&self.acks).push_back(Ack {
            op,
            key: key.clone(),
            tx: Some(tx),
        });
        Ok((frame, rx))
    }

    /// What goes first on a new connection: the `$hello` naming it, then the `$sub` frames
    /// that restore every key. Their answers come back in this order.
    pub(crate) fn restore_frames(&self, name: &str) -> Result<Vec<u8>> {
        let keys = self.router().keys();
        let mut acks = lock(&self.acks);
        let mut out = wire::hello(name)?.to_vec();
        // A broker from before `$hello` answers `$error`, which this entry takes (and logs).
        acks.push_back(Ack {
            op: "$hello",
            key: (name.to_owned(), None),
            tx: None,
        });
        for key in keys {
            out.extend_from_slice(&wire::interest("$sub", &key.0, key.1.as_deref())?);
            acks.push_back(Ack {
                op: "$sub",
                key,
                tx: None,
            });
        }
        Ok(out)
    }

    pub(crate) fn register_pong(&self, token: i64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        lock(&self.pongs).insert(token, tx);
        rx
    }

    pub(crate) fn forget_pong(&self, token: i64) {
        lock(&self.pongs).remove(&token);
    }

    /// Everything waiting on the old connection hears it is gone.
    pub(crate) fn fail_waiters(&self) {
        for ack in lock(&self.acks).drain(..) {
            if let Some(tx) = ack.tx {
                let _ = tx.send(Err(Error::Disconnected));
            }
        }
        lock(&self.pongs).clear();
    }

    /// A publish from the broker: to every matching local subscription.
    pub(crate) fn deliver(&self, topic: &str, body: Bytes) {
        let mut router = self.router();
        let matching = router.targets(topic);
        if matching.is_empty() {
            return;
        }
        let topic: Arc<str> = topic.into();
        for &i in &matching {
            let Some(entry) = router.entries.get(i) else {
                continue;
            };
            match &entry.target {
                Target::Queue {
                    tx,
                    dropped,
                    dropping,
                } => match tx.try_send(Message::new(topic.clone(), body.clone())) {
                    Ok(()) => dropping.store(false, Ordering::Relaxed),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        let n = dropped.fetch_add(1, Ordering::Relaxed) + 1;
                        if !dropping.swap(true, Ordering::Relaxed) {
                            tracing::warn!(pattern = %entry.key.0, dropped = n,
                                "mphub: subscription queue full; dropping messages");
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                },
                Target::Inbox => {
                    if let Some(tx) = lock(&self.requests).remove(topic.as_ref()) {
                        let _ = tx.send(Message::new(topic.clone(), body.clone()));
                    }
                }
            }
        }
    }

    /// `("$ok", request)`: the first waiter for that request.
    pub(crate) fn ok(&self, op: &str, key: Key) {
        let mut acks = lock(&self.acks);
        if let Some(at) = acks.iter().position(|a| a.op == op && a.key == key) {
            if let Some(tx) = acks.remove(at).and_then(|a| a.tx) {
                let _ = tx.send(Ok(()));
            }
        }
    }

    /// `("$error", reason)`: the broker answers in order, so the oldest waiter.
    pub(crate) fn error(&self, reason: String) {
        match lock(&self.acks).pop_front() {
            Some(Ack { tx: Some(tx), .. }) => {
                let _ = tx.send(Err(Error::Broker(reason)));
            }
            _ => tracing::warn!(%reason, "mphub: the broker answered $error"),
        }
    }

    pub(crate) fn pong(&self, token: i64) {
        if let Some(tx) = lock(&self.pongs).remove(&token) {
            let _ = tx.send(());
        }
    }
}
