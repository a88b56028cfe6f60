//! [`Subscription`]: a stream of [`Message`]s matching a pattern.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::message::Message;
use crate::state::State;

/// What a subscription needs of its client to end itself: the client's send queue and shared
/// state (not the `Client`, which would make the two modules import each other).
#[derive(Debug)]
pub(crate) struct Handle {
    pub(crate) tx: mpsc::Sender<Bytes>,
    pub(crate) state: Arc<State>,
}

impl Handle {
    /// Forgets subscription `id`; the last one of its (pattern, group) sends `$unsub`.
    async fn remove(&self, id: u64) -> Result<()> {
        let Some(key) = self.state.router().remove(id) else {
            return Ok(());
        };
        let (frame, _ack) = self.state.request("$unsub", &key)?;
        if self.state.is_finished() {
            return Ok(());
        }
        if self.state.closing.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        self.tx.send(frame).await.map_err(|_| Error::Closed)
    }

    /// `remove` for `Drop`: never waits; a full send queue hands the `$unsub` to a task.
    fn remove_now(&self, id: u64) {
        let Some(key) = self.state.router().remove(id) else {
            return;
        };
        let Ok((frame, _ack)) = self.state.request("$unsub", &key) else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(frame)) = self.tx.try_send(frame) {
            let tx = self.tx.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { tx.send(frame).await });
            }
        }
    }
}

/// Messages whose topic matches a pattern, in arrival order. A [`futures_core::Stream`], or use
/// [`Subscription::next`]. Ends (`None`) once unsubscribed or when the client closes for good.
///
/// Its queue holds `max_pending` messages; past that, new ones are dropped and counted in
/// [`Subscription::dropped`] (and logged when dropping starts). Dropping the `Subscription`
/// unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    pub(crate) rx: mpsc::Receiver<Message>,
    pub(crate) id: u64,
    pub(crate) pattern: String,
    pub(crate) group: Option<String>,
    pub(crate) dropped: Arc<AtomicU64>,
    pub(crate) handle: Handle,
    pub(crate) active: bool,
}

impl Subscription {
    /// The next message; `None` once the subscription has ended and its queue is empty.
    ///
    /// Cancel safety: safe; no message is lost if the future is dropped.
    pub async fn next(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// Messages received and waiting in the queue.
    pub fn pending(&self) -> usize {
        self.rx.len()
    }

    /// Messages dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The pattern subscribed to.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The queue group, if this is a member of one.
    pub fn group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// Stops the subscription; messages already queued can still be taken with `next`.
    pub async fn unsubscribe(&mut self) -> Result<()> {
        if std::mem::take(&mut self.active) {
            self.handle.remove(self.id).await?;
        }
        Ok(())
    }
}

impl futures_core::Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.active {
            self.handle.remove_now(self.id);
        }
    }
}
