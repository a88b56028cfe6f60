//! Introspection as JSON, after NATS's monitoring endpoints (`/connz`, `/subsz`, `/varz`):
//!
//! - `GET /connections?sort=&offset=&limit=&user=&name=`: the open connections;
//! - `GET /subscriptions?sort=&offset=&limit=&topic=`: each (pattern, group) and its
//!   subscriber count;
//! - `GET /topics?limit=`: the busiest topics, estimated by sampling ([`crate::topics`]);
//! - `GET /status`: the broker at a glance (totals, limits, the NATS bridge).
//!
//! As NATS does, a page holds at most `limit` items (default 1,024) starting at `offset`, and
//! says how many there are in all (`total`), so a broker with 10,000 connections answers with
//! what was asked for. Each answer is built on a blocking-pool thread from a snapshot of the
//! connection registry (atomics, and each connection's subscription set locked in turn for a
//! copy): routing takes none of those locks, and the runtime's workers keep routing while a
//! page is built. Figures are as of each connection's last read batch.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::Sources;
use crate::connections::{unheld, Entry, Held};

/// Items per page when `limit` is not given (NATS's `/connz` default).
pub const DEFAULT_LIMIT: usize = 1024;

/// `sort` of `/connections`: `id` and `since` oldest first, every other key largest first
/// (NATS's `cid`, `start`, `pending`, `msgs_from`, `msgs_to`, `bytes_from`, `bytes_to`, `subs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionSort {
    /// Connection id (the default).
    #[default]
    Id,
    /// When the connection opened; the same order as `id`.
    Since,
    /// Bytes queued for it now.
    QueuedBytes,
    /// Frames it sent the broker.
    MessagesIn,
    /// Frames the broker wrote to it.
    MessagesOut,
    /// Bytes it sent.
    BytesIn,
    /// Bytes written to it.
    BytesOut,
    /// Subscriptions it holds.
    Subscriptions,
    /// Messages dropped for it (`slow_consumer = "drop"`).
    Dropped,
}

/// The query of `/connections`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionsQuery {
    /// Order of the list.
    pub sort: ConnectionSort,
    /// Items skipped first.
    pub offset: usize,
    /// Most items returned (default [`DEFAULT_LIMIT`]).
    pub limit: Option<usize>,
    /// Only this user's connections.
    pub user: Option<String>,
    /// Only connections with this `$hello` name.
    pub name: Option<String>,
}

/// `sort` of `/subscriptions`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionSort {
    /// Most subscribers first (the default).
    #[default]
    Subscribers,
    /// By pattern, then group.
    Pattern,
}

/// The query of `/subscriptions`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubscriptionsQuery {
    /// Order of the list.
    pub sort: SubscriptionSort,
    /// Items skipped first.
    pub offset: usize,
    /// Most items returned (default [`DEFAULT_LIMIT`]).
    pub limit: Option<usize>,
    /// Only patterns that match this topic (who would get a message published on it).
    pub topic: Option<String>,
}

/// The query of `/topics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicsQuery {
    /// Most topics returned (default 10).
    pub limit: usize,
}

impl Default for TopicsQuery {
    fn default() -> Self {
        TopicsQuery { limit: 10 }
    }
}

/// One subscription of a connection, or one line of `/subscriptions` without its count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionJson {
    /// The pattern.
    pub pattern: String,
    /// The queue group, or `null`.
    pub group: Option<String>,
}

/// One connection in `/connections`.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionJson {
    /// Connection id, unique for the broker's life (the `id` of its log lines).
    pub id: u64,
    /// Its user (`default` for the shared key or no key).
    pub user: String,
    /// The name it gave with `$hello`, or `null`.
    pub name: Option<String>,
    /// Remote address (`unix` for a Unix socket).
    pub peer: String,
    /// When its handshake finished, RFC 3339 UTC.
    pub since: String,
    /// Its subscriptions, by pattern then group.
    pub subscriptions: Vec<SubscriptionJson>,
    /// Bytes queued for it and not yet written.
    pub queued_bytes: u64,
    /// Frames it sent (publishes and control messages).
    pub messages_in: u64,
    /// Frames written to it (messages and the broker's replies).
    pub messages_out: u64,
    /// Bytes it sent, headers included.
    pub bytes_in: u64,
    /// Bytes written to it, headers included.
    pub bytes_out: u64,
    /// Messages dropped for it by the `drop` slow-consumer policy.
    pub dropped: u64,
}

#[derive(Debug, Serialize)]
struct Page<T> {
    total: usize,
    offset: usize,
    limit: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    outbound_limit: Option<u64>,
    #[serde(flatten)]
    items: T,
}

#[derive(Debug, Serialize)]
struct Connections {
    connections: Vec<ConnectionJson>,
}

#[derive(Debug, Serialize)]
struct SubscriptionLine {
    pattern: String,
    group: Option<String>,
    subscribers: u64,
}

#[derive(Debug, Serialize)]
struct Subscriptions {
    subscriptions: Vec<SubscriptionLine>,
}

#[derive(Debug, Serialize)]
struct Topic {
    topic: String,
    messages_per_second: f64,
    share: f64,
}

#[derive(Debug, Serialize)]
struct Topics {
    window_seconds: f64,
    samples: u64,
    sampled_one_in: u32,
    topics: Vec<Topic>,
}

#[derive(Debug, Serialize)]
struct Dropped {
    slow_consumer: u64,
    closed: u64,
}

#[derive(Debug, Serialize)]
struct ClusterJson {
    connected: bool,
    urls: Vec<String>,
    last_error: Option<String>,
    max_payload: Option<u64>,
    queued_bytes: u64,
    outbound_limit: u64,
    reconnect_buffer: u64,
    interest: u64,
    retiring: u64,
    sent: u64,
    received: u64,
    not_forwarded: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Serialize)]
struct Status {
    version: &'static str,
    started: String,
    uptime_seconds: f64,
    connections: usize,
    subscriptions: u64,
    messages_received: u64,
    messages_delivered: u64,
    bytes_received: u64,
    bytes_delivered: u64,
    messages_dropped: Dropped,
    slow_consumers: u64,
    outbound_limit: u64,
    max_connections: usize,
    cluster: Option<ClusterJson>,
}

/// An RFC 3339 UTC timestamp, to the second.
fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A JSON answer, built on a blocking-pool thread.
async fn answer<T, F>(build: F) -> Response
where
    T: Serialize,
    F: FnOnce() -> T + Send + 'static,
{
    let built = tokio::task::spawn_blocking(move || serde_json::to_vec(&build())).await;
    match built {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `{"error": reason}` with `status`.
fn error(status: StatusCode, reason: &str) -> Response {
    let body = serde_json::json!({ "error": reason }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn bad_query(e: &QueryRejection) -> Response {
    error(StatusCode::BAD_REQUEST, &e.body_text())
}

/// `GET /connections`.
pub async fn connections(
    State(src): State<Arc<Sources>>,
    q: Result<Query<ConnectionsQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_query(&e),
    };
    answer(move || {
        let limit = src.config.borrow().settings.outbound_limit.bytes();
        let (total, connections) = connection_page(&src.connections.snapshot(), &q);
        Page {
            total,
            offset: q.offset,
            limit: q.limit.unwrap_or(DEFAULT_LIMIT),
            outbound_limit: Some(limit),
            items: Connections { connections },
        }
    })
    .await
}

/// The connections `q` asks for, and how many match its filters in all.
pub fn connection_page(all: &[Arc<Entry>], q: &ConnectionsQuery) -> (usize, Vec<ConnectionJson>) {
    let mut rows: Vec<(u64, &Arc<Entry>)> = all
        .iter()
        .filter(|e| q.user.as_ref().is_none_or(|u| *u == e.user))
        .filter(|e| {
            q.name
                .as_ref()
                .is_none_or(|n| e.name().is_some_and(|have| *have == *n))
        })
        .map(|e| (sort_key(e, q.sort), e))
        .collect();
    match q.sort {
        ConnectionSort::Id | ConnectionSort::Since => rows.sort_unstable_by_key(|(k, _)| *k),
        _ => rows.sort_unstable_by_key(|(k, e)| (Reverse(*k), e.id())),
    }
    let total = rows.len();
    let page = rows
        .into_iter()
        .skip(q.offset)
        .take(q.limit.unwrap_or(DEFAULT_LIMIT))
        .map(|(_, e)| connection_json(e))
        .collect();
    (total, page)
}

fn sort_key(e: &Entry, sort: ConnectionSort) -> u64 {
    match sort {
        ConnectionSort::Id | ConnectionSort::Since => e.id(),
        ConnectionSort::QueuedBytes => e.outbox.queued(),
        ConnectionSort::MessagesIn => e.received().0,
        ConnectionSort::MessagesOut => e.outbox.written_totals().0,
        ConnectionSort::BytesIn => e.received().1,
        ConnectionSort::BytesOut => e.outbox.written_totals().1,
        ConnectionSort::Subscriptions => e.subscriptions().len() as u64,
        ConnectionSort::Dropped => e.outbox.dropped(),
    }
}

fn connection_json(e: &Entry) -> ConnectionJson {
    let subscriptions = e
        .subscriptions()
        .iter()
        .map(|h| {
            let (pattern, group) = unheld(h);
            SubscriptionJson {
                pattern: pattern.to_owned(),
                group: group.map(str::to_owned),
            }
        })
        .collect();
    let (messages_in, bytes_in) = e.received();
    let (messages_out, bytes_out) = e.outbox.written_totals();
    ConnectionJson {
        id: e.id(),
        user: e.user.clone(),
        name: e.name().map(|n| n.as_ref().clone()),
        peer: e.peer.clone(),
        since: rfc3339(e.since),
        subscriptions,
        queued_bytes: e.outbox.queued(),
        messages_in,
        messages_out,
        bytes_in,
        bytes_out,
        dropped: e.outbox.dropped(),
    }
}

/// `GET /subscriptions`.
pub async fn subscriptions(
    State(src): State<Arc<Sources>>,
    q: Result<Query<SubscriptionsQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_query(&e),
    };
    if let Some(t) = &q.topic {
        if let Err(e) = mphub_protocol::topic::validate_topic(t) {
            return error(StatusCode::BAD_REQUEST, &format!("topic {t:?} {e}"));
        }
    }
    answer(move || {
        let mut counts: HashMap<Held, u64> = HashMap::new();
        for e in src.connections.snapshot() {
            for held in e.subscriptions().iter() {
                if let Some(n) = counts.get_mut(held) {
                    *n += 1;
                } else {
                    counts.insert(held.clone(), 1);
                }
            }
        }
        let mut lines: Vec<SubscriptionLine> = counts
            .into_iter()
            .filter(|(h, _)| {
                q.topic
                    .as_ref()
                    .is_none_or(|t| mphub_protocol::topic::matches(unheld(h).0, t))
            })
            .map(|(h, subscribers)| {
                let (pattern, group) = unheld(&h);
                SubscriptionLine {
                    pattern: pattern.to_owned(),
                    group: group.map(str::to_owned),
                    subscribers,
                }
            })
            .collect();
        let by_name = |a: &SubscriptionLine, b: &SubscriptionLine| {
            a.pattern
                .cmp(&b.pattern)
                .then_with(|| a.group.cmp(&b.group))
        };
        match q.sort {
            SubscriptionSort::Subscribers => {
                lines.sort_unstable_by(|a, b| b.subscribers.cmp(&a.subscribers).then(by_name(a, b)))
            }
            SubscriptionSort::Pattern => lines.sort_unstable_by(by_name),
        }
        let total = lines.len();
        let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
        let subscriptions = lines.into_iter().skip(q.offset).take(limit).collect();
        Page {
            total,
            offset: q.offset,
            limit,
            outbound_limit: None,
            items: Subscriptions { subscriptions },
        }
    })
    .await
}

/// `GET /topics`.
pub async fn topics(
    State(src): State<Arc<Sources>>,
    q: Result<Query<TopicsQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_query(&e),
    };
    answer(move || {
        let b = src.topics.busiest(q.limit);
        Topics {
            window_seconds: b.window,
            samples: b.samples,
            sampled_one_in: crate::topics::SAMPLE,
            topics: b
                .topics
                .into_iter()
                .map(|t| Topic {
                    topic: t.topic,
                    messages_per_second: t.rate,
                    share: t.share,
                })
                .collect(),
        }
    })
    .await
}

/// `GET /status`.
pub async fn status(State(src): State<Arc<Sources>>) -> Response {
    answer(move || {
        let m = &src.metrics;
        let (outbound_limit, max_connections) = {
            let config = src.config.borrow();
            let s = &config.settings;
            (s.outbound_limit.bytes(), s.max_connections.get())
        };
        let dropped = |reason: &str| m.messages_dropped.with_label_values(&[reason]).get();
        Status {
            version: env!("CARGO_PKG_VERSION"),
            started: rfc3339(src.started),
            uptime_seconds: src.started.elapsed().unwrap_or_default().as_secs_f64(),
            connections: src.connections.len(),
            subscriptions: src.index.len(),
            messages_received: m.messages_received.get(),
            messages_delivered: m.messages_delivered.get(),
            bytes_received: m.bytes_received.get(),
            bytes_delivered: m.bytes_delivered.get(),
            messages_dropped: Dropped {
                slow_consumer: dropped("slow_consumer"),
                closed: dropped("closed"),
            },
            slow_consumers: m.slow_consumers.get(),
            outbound_limit,
            max_connections,
            cluster: src.cluster.as_ref().map(|c| {
                let st = c.status();
                ClusterJson {
                    connected: st.connected,
                    urls: st.urls,
                    last_error: st.last_error.filter(|_| !st.connected),
                    max_payload: st.max_payload,
                    queued_bytes: st.queued_bytes,
                    outbound_limit: st.queue_limits.0,
                    reconnect_buffer: st.queue_limits.1,
                    interest: st.interest.0,
                    retiring: st.interest.1,
                    sent: st.sent,
                    received: st.received,
                    not_forwarded: st.not_forwarded.into_iter().collect(),
                }
            }),
        }
    })
    .await
}
