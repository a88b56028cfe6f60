//! [`Client`]: publish, subscribe, request and flush over one shared connection.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::{mpsc, OnceCell};
use tokio::time::{timeout, timeout_at, Instant};

use crate::address::Address;
use crate::connection::Connection;
use crate::driver;
use crate::error::{Error, Result};
use crate::options::ConnectOptions;
use crate::state::{Key, State, Target};
use crate::subscription::{Handle, Subscription};
use crate::wire;

/// A connection to an mphub broker. Clones are cheap and share the connection; publishing from
/// many tasks at once is safe, and what they send is written in batches.
///
/// ```no_run
/// # async fn demo() -> mphub_client::Result<()> {
/// use mphub_client::{Client, ConnectOptions};
/// let client = Client::connect("127.0.0.1:6000", ConnectOptions::new().authkey(b"secret")).await?;
/// let mut sub = client.subscribe("sensors.>").await?;
/// client.publish("sensors.temp", &21.5).await?;
/// let msg = sub.next().await.expect("a message");
/// assert_eq!(msg.decode::<f64>()?, 21.5);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<Bytes>,
    state: Arc<State>,
    opts: ConnectOptions,
    inbox: OnceCell<String>,
}

/// The body of a request (PROTOCOL §9): a dict `{"reply_to": ..., "body": ...}`.
#[derive(Serialize)]
struct Request<'a, T: ?Sized> {
    reply_to: &'a str,
    body: &'a T,
}

impl Client {
    /// Connects (and authenticates, with `opts.authkey`) to `address`: `host:port`,
    /// `unix:/path` or `unix:@name`. Fails at once if the broker cannot be reached; after
    /// that, a lost connection is re-established in the background.
    pub async fn connect(address: &str, opts: ConnectOptions) -> Result<Client> {
        let addr = Address::parse(address)?;
        mphub_protocol::name::check(&opts.name).map_err(|e| Error::Name(opts.name.clone(), e))?;
        let conn = Connection::open(
            &addr,
            opts.authkey.as_deref(),
            opts.connect_timeout,
            opts.tls.as_ref(),
        )
        .await?;
        let state = Arc::new(State::new());
        let (tx, rx) = mpsc::channel(opts.send_queue);
        let pings = tx.downgrade();
        tokio::spawn(driver::run(
            state.clone(),
            addr,
            opts.clone(),
            rx,
            pings,
            conn,
        ));
        let client = Client {
            inner: Arc::new(Inner {
                tx,
                state,
                opts,
                inbox: OnceCell::new(),
            }),
        };
        let mut up = client.inner.state.connected.subscribe();
        let _ = up.wait_for(|c| *c).await;
        Ok(client)
    }

    /// True while connected (false while reconnecting and after close).
    pub fn is_connected(&self) -> bool {
        self.inner.state.is_connected()
    }

    /// Frames that were being written when a connection broke, and so were lost.
    pub fn lost_frames(&self) -> u64 {
        self.inner.state.lost_frames.load(Ordering::Relaxed)
    }

    async fn send(&self, frame: Bytes) -> Result<()> {
        if self.inner.state.closing.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        self.inner.tx.send(frame).await.map_err(|_| Error::Closed)
    }

    /// Publishes `(topic, payload)`, the payload pickled by serde-pickle (a struct becomes a
    /// dict, a tuple a tuple, `serde_bytes` a `bytes`). Waits only if the send queue is full.
    pub async fn publish<T: Serialize + ?Sized>(&self, topic: &str, payload: &T) -> Result<()> {
        self.send(wire::publish(topic, payload)?).await
    }

    /// Publishes a payload that is already a pickle (from Python, or a message received
    /// earlier), without decoding it.
    pub async fn publish_pickled(&self, topic: &str, payload: impl AsRef<[u8]>) -> Result<()> {
        self.send(wire::publish_pickled(topic, payload.as_ref())?)
            .await
    }

    /// Sends worker-metric ops in one `$metrics` frame (PROTOCOL §10). Success is silent;
    /// a rejected op comes back as a `$error` the client logs (run `flush` to be sure the
    /// broker has applied them).
    pub async fn send_metrics(&self, ops: &[crate::MetricOp<'_>]) -> Result<()> {
        let body = crate::metrics::body(ops);
        self.send(mphub_protocol::frame::encode(&body)).await
    }

    /// Subscribes to `pattern` (`*` one token, `>` the rest); returns once the broker has it.
    pub async fn subscribe(&self, pattern: &str) -> Result<Subscription> {
        self.subscribe_key(pattern, None).await
    }

    /// Joins queue group `group` on `pattern`: each message goes to one member of the group.
    pub async fn subscribe_group(&self, pattern: &str, group: &str) -> Result<Subscription> {
        self.subscribe_key(pattern, Some(group)).await
    }

    async fn subscribe_key(&self, pattern: &str, group: Option<&str>) -> Result<Subscription> {
        wire::check_pattern(pattern, group)?;
        let (tx, rx) = mpsc::channel(self.inner.opts.max_pending);
        let dropped = Arc::new(AtomicU64::new(0));
        let target = Target::Queue {
            tx,
            dropped: dropped.clone(),
            dropping: AtomicBool::new(false),
        };
        let id = self
            .add((pattern.to_owned(), group.map(str::to_owned)), target)
            .await?;
        Ok(Subscription {
            rx,
            id,
            pattern: pattern.into(),
            group: group.map(str::to_owned),
            dropped,
            handle: Handle {
                tx: self.inner.tx.clone(),
                state: self.inner.state.clone(),
            },
            active: true,
        })
    }

    async fn add(&self, key: Key, target: Target) -> Result<u64> {
        let state = &self.inner.state;
        if state.is_finished() || state.closing.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        let (id, first) = state.router().add(key.clone(), target);
        if !first {
            return Ok(id);
        }
        let (frame, ack) = state.request("$sub", &key)?;
        if let Err(e) = self.send(frame).await {
            state.router().remove(id);
            return Err(e);
        }
        let wait = self.inner.opts.request_timeout;
        match timeout(wait, ack).await {
            Ok(Ok(Ok(()))) | Ok(Ok(Err(Error::Disconnected))) | Ok(Err(_)) => Ok(id),
            Ok(Ok(Err(e))) => {
                state.router().remove(id); // the broker never held it: nothing to undo there
                Err(e)
            }
            Err(_) => {
                state.router().remove(id);
                Err(Error::Timeout(wait))
            }
        }
    }

    /// Sends a request (PROTOCOL §9) and decodes the first reply into `R`.
    pub async fn request<T: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        topic: &str,
        body: &T,
        wait: Duration,
    ) -> Result<R> {
        let prefix = self
            .inner
            .inbox
            .get_or_try_init(|| async {
                let mut nonce = [0u8; 8];
                getrandom::fill(&mut nonce)
                    .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
                let hex: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
                let prefix = format!("_INBOX.{hex}");
                self.add((format!("{prefix}.>"), None), Target::Inbox)
                    .await?;
                Ok::<_, Error>(prefix)
            })
            .await?;
        let n = self.inner.state.tokens.fetch_add(1, Ordering::Relaxed);
        let reply_to = format!("{prefix}.{n}");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let requests = &self.inner.state.requests;
        let lock = || requests.lock().unwrap_or_else(|p| p.into_inner());
        lock().insert(reply_to.clone(), tx);
        let request = Request {
            reply_to: &reply_to,
            body,
        };
        if let Err(e) = self.publish(topic, &request).await {
            lock().remove(&reply_to);
            return Err(e);
        }
        let got = timeout(wait, rx).await;
        lock().remove(&reply_to);
        match got {
            Ok(Ok(msg)) => msg.decode(),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout(wait)),
        }
    }

    /// Returns once the broker has routed everything this client sent before (a `$ping`
    /// barrier). During a reconnect it waits for the new connection, within the options'
    /// `request_timeout`.
    pub async fn flush(&self) -> Result<()> {
        let state = &self.inner.state;
        let wait = self.inner.opts.request_timeout;
        let deadline = Instant::now() + wait;
        loop {
            let token = state.tokens.fetch_add(1, Ordering::Relaxed);
            let pong = state.register_pong(token);
            if let Err(e) = self.send(wire::pickled_frame(&("$ping", token))?).await {
                state.forget_pong(token);
                return Err(e);
            }
            match timeout_at(deadline, pong).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(_)) => {
                    // The connection dropped under us: wait for the next one, then ping again.
                    let mut up = state.connected.subscribe();
                    let mut done = state.finished.subscribe();
                    tokio::select! {
                        r = timeout_at(deadline, up.wait_for(|c| *c)) => if r.is_err() {
                            return Err(Error::Timeout(wait));
                        },
                        _ = done.wait_for(|f| *f) => return Err(Error::Closed),
                    }
                }
                Err(_) => {
                    state.forget_pong(token);
                    return Err(Error::Timeout(wait));
                }
            }
        }
    }

    /// Sends what is queued, says goodbye, and waits (up to a few seconds) for the broker to
    /// deliver what it still holds for this client. Subscriptions then end after their queues.
    pub async fn close(&self) -> Result<()> {
        let state = &self.inner.state;
        if !state.closing.swap(true, Ordering::Relaxed) {
            let _ = self.inner.tx.send(driver::close_marker()).await;
        }
        let mut done = state.finished.subscribe();
        let _ = timeout(Duration::from_secs(10), done.wait_for(|f| *f)).await;
        Ok(())
    }
}
