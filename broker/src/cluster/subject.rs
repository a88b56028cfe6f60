//! How mphub names things in NATS: topics as subjects under a prefix, queue groups, and the
//! headers a forwarded message carries.
//!
//! - Topic `a.b` travels on subject `<prefix>a.b`; pattern `a.*` subscribes `<prefix>a.*`. The
//!   rules are NATS's own (PROTOCOL §5), so the mapping is one to one.
//! - Queue group `g` is NATS queue group `g`: NATS gives each message to one member cluster-wide.
//! - A node's plain interest is a plain NATS subscription per pattern. NATS sends a message once
//!   per matching subscription, so a node whose patterns overlap gets copies; it delivers the
//!   first and skips the rest by their `Mphub-Origin`.
//! - `Mphub-Origin: <node>:<seq>` numbers what a node forwards, so a receiver can restore the
//!   publisher's order across its NATS subscriptions and know a copy it already delivered.
//!   `Mphub-Served: g1 g2` names the queue groups the publishing node already delivered to (it
//!   prefers local members), so no other node delivers to them again.
//! - `Mphub-Group: g` and `Mphub-Hops: n` mark a group message a node handed back to NATS
//!   because none of its members could take it any more: it is for group `g` only, and has
//!   been handed back `n` times.

use async_nats::{HeaderMap, HeaderName};

use crate::route::Served;

/// Header numbering a node's forwarded messages: `<node id>:<sequence>`. (Built from a static
/// string, so using it allocates nothing.)
pub const ORIGIN: HeaderName = HeaderName::from_static("Mphub-Origin");
/// Header naming the queue groups already served by the publishing node, space-separated.
pub const SERVED: HeaderName = HeaderName::from_static("Mphub-Served");
/// Header on a group message handed back to NATS: the one group it is still for.
pub const GROUP: HeaderName = HeaderName::from_static("Mphub-Group");
/// Header on a group message handed back to NATS: how many times it was.
pub const HOPS: HeaderName = HeaderName::from_static("Mphub-Hops");

/// Subject names for one node.
#[derive(Debug, Clone)]
pub struct Naming {
    prefix: String,
    node: String,
}

impl Naming {
    /// Names for node `node` (a short random id) under `prefix`.
    pub fn new(prefix: &str, node: &str) -> Self {
        Naming {
            prefix: prefix.to_owned(),
            node: node.to_owned(),
        }
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The NATS subject for a topic or pattern.
    pub fn subject(&self, topic: &str) -> String {
        let mut s = String::with_capacity(self.prefix.len() + topic.len());
        s.push_str(&self.prefix);
        s.push_str(topic);
        s
    }

    /// The topic a NATS subject carries, if it is under the prefix.
    pub fn topic<'a>(&self, subject: &'a str) -> Option<&'a str> {
        subject.strip_prefix(self.prefix.as_str())
    }

    /// The most bytes the headers of a local publish that served no queue group here take on
    /// the wire (`NATS/1.0\r\n`, `Mphub-Origin: node:seq\r\n` with the longest seq, `\r\n`):
    /// NATS counts them against `max_payload` with the payload (async-nats' `check_payload_size`).
    pub fn header_room(&self) -> u64 {
        let origin = format!("{}:{}", self.node, u64::MAX);
        (b"NATS/1.0\r\n".len()
            + AsRef::<str>::as_ref(&ORIGIN).len()
            + b": ".len()
            + origin.len()
            + 2 * b"\r\n".len()) as u64
    }

    /// The headers for this node's `seq`-th forwarded message.
    pub fn headers(&self, seq: u64, served: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, format!("{}:{seq}", self.node));
        if let Some(s) = served {
            h.insert(SERVED, s);
        }
        h
    }
}

/// The headers for a group message handed back to NATS for `group`: its origin as it came
/// (`headers`, the message's own), the group, and one more hop.
pub fn handed_back(headers: Option<&HeaderMap>, group: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(o) = headers.and_then(|h| h.get(ORIGIN)) {
        h.insert(ORIGIN, o.clone());
    }
    h.insert(GROUP, group);
    h.insert(HOPS, (hops(headers) + 1).to_string());
    h
}

/// The group a message handed back to NATS is still for, if it is one.
pub fn only_for(headers: Option<&HeaderMap>) -> Option<&str> {
    Some(headers?.get(GROUP)?.as_str())
}

/// How many times a message was handed back to NATS (0 for a publish).
pub fn hops(headers: Option<&HeaderMap>) -> u32 {
    headers
        .and_then(|h| h.get(HOPS))
        .and_then(|v| v.as_str().parse().ok())
        .unwrap_or(0)
}

/// The `Mphub-Served` header value for the queue groups a publish was delivered to locally,
/// when there were any.
pub fn served_header(served: &Served<'_>) -> Option<String> {
    let names = served.names();
    (!names.is_empty()).then(|| names.join(" "))
}

/// Where a forwarded message came from: (node, sequence), if it says.
pub fn origin(headers: Option<&HeaderMap>) -> Option<(&str, u64)> {
    let v = headers?.get(ORIGIN)?.as_str();
    let (node, seq) = v.rsplit_once(':')?;
    Some((node, seq.parse().ok()?))
}

/// Whether the publishing node already delivered to `group`.
pub fn served(headers: Option<&HeaderMap>, group: &str) -> bool {
    headers
        .and_then(|h| h.get(SERVED))
        .is_some_and(|v| v.as_str().split(' ').any(|g| g == group))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_map_to_subjects_under_the_prefix_and_back() {
        let n = Naming::new("mphub.", "n1");
        assert_eq!(n.subject("a.*"), "mphub.a.*");
        assert_eq!(n.topic("mphub.a.b"), Some("a.b"));
        assert_eq!(n.topic("other.a.b"), None);
        let bare = Naming::new("", "n1");
        assert_eq!(bare.subject(">"), ">");
    }

    #[test]
    fn headers_round_trip() {
        let n = Naming::new("mphub.", "ab12");
        assert_eq!(served_header(&Served::default()), None);
        let h = n.headers(42, Some("w x"));
        let longest = n.headers(u64::MAX, None);
        let wire: usize = longest
            .iter()
            .map(|(k, vs)| {
                vs.iter()
                    .map(|v| AsRef::<str>::as_ref(k).len() + 2 + v.as_str().len() + 2)
                    .sum::<usize>()
            })
            .sum();
        assert_eq!(n.header_room(), (10 + wire + 2) as u64);
        assert_eq!(origin(Some(&h)), Some(("ab12", 42)));
        assert!(served(Some(&h), "x"));
        assert!(!served(Some(&h), "y"));
        assert!(!served(None, "x"));
        assert_eq!(origin(None), None);
    }

    #[test]
    fn a_message_handed_back_keeps_its_origin_and_counts_its_hops() {
        let n = Naming::new("mphub.", "ab12");
        let first = handed_back(Some(&n.headers(7, Some("g h"))), "g");
        assert_eq!(origin(Some(&first)), Some(("ab12", 7)));
        assert_eq!((only_for(Some(&first)), hops(Some(&first))), (Some("g"), 1));
        assert!(!served(Some(&first), "h"), "handed back for g alone");
        let second = handed_back(Some(&first), "g");
        assert_eq!(hops(Some(&second)), 2);
        assert_eq!((only_for(None), hops(None)), (None, 0));
    }
}
