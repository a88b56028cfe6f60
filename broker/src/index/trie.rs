//! The subscription trie, laid out for memory: most nodes are leaves holding one subscriber, and
//! a broker may hold hundreds of thousands of them (request inboxes, one pattern each).
//!
//! A node is one pointer, null when empty; its parts live in one allocation, with the rarely
//! used ones (literal children, queue groups) behind pointers of their own. Subscribers are
//! short vectors searched by connection id (a pattern shared by thousands of connections costs
//! a linear scan on subscribe and unsubscribe, never on a publish). Literal children sit in a
//! map whose hasher carries no state of its own: one random key per process, so a map costs no
//! more than its table and topics chosen by a peer still cannot collide on purpose.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};

use crate::outbox::Outbox;

/// SipHash with one random key for the whole process: a zero-sized `BuildHasher`.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ProcessKeyed;

impl BuildHasher for ProcessKeyed {
    type Hasher = std::collections::hash_map::DefaultHasher;

    fn build_hasher(&self) -> Self::Hasher {
        static KEY: OnceLock<RandomState> = OnceLock::new();
        KEY.get_or_init(RandomState::new).build_hasher()
    }
}

/// A map keyed by what peers send, costing no per-map hasher state.
pub(super) type Map<K, V> = HashMap<K, V, ProcessKeyed>;

/// Connections subscribed at one node (plain, or one queue group's members).
pub(super) type Subscribers = Vec<Arc<Outbox>>;

/// One queue group's members at a node.
#[derive(Debug)]
pub(super) struct Members {
    pub(super) name: Box<str>,
    pub(super) members: Subscribers,
}

/// The queue groups at a node: rare, so behind a thin pointer of their own.
#[derive(Debug, Default)]
struct Groups(Vec<Members>);

/// A trie node: null while it holds nothing.
#[derive(Debug, Default)]
pub(super) struct Node(Option<Box<Inner>>);

#[derive(Debug, Default)]
struct Inner {
    literal: Option<Box<Map<Box<str>, Node>>>,
    star: Node,
    gt: Node,
    plain: Subscribers,
    groups: Option<Box<Groups>>,
}

impl Inner {
    fn is_empty(&self) -> bool {
        self.literal.is_none()
            && self.star.0.is_none()
            && self.gt.0.is_none()
            && self.plain.is_empty()
            && self.groups.is_none()
    }
}

/// Adds `outbox` to `subs` unless its connection is there; returns (it was empty, added).
fn add(subs: &mut Subscribers, outbox: &Arc<Outbox>) -> (bool, bool) {
    if subs.iter().any(|p| p.id == outbox.id) {
        return (false, false);
    }
    if subs.is_empty() {
        // Most patterns have one subscriber: no room for three more.
        subs.reserve_exact(1);
    }
    subs.push(outbox.clone());
    (subs.len() == 1, true)
}

/// Removes connection `id` from `subs`; returns whether it was there.
fn take(subs: &mut Subscribers, id: u64) -> bool {
    match subs.iter().position(|p| p.id == id) {
        Some(i) => {
            subs.swap_remove(i);
            if subs.capacity() > 4 * subs.len().max(1) {
                subs.shrink_to_fit();
            }
            true
        }
        None => false,
    }
}

/// What matching collects from the nodes a topic reaches.
pub(super) trait Sink {
    /// Plain subscribers at one node.
    fn plain(&mut self, subs: &[Arc<Outbox>]);
    /// One queue group's members at one node.
    fn group(&mut self, name: &str, members: &[Arc<Outbox>]);
}

impl Node {
    fn inner(&mut self) -> &mut Inner {
        self.0.get_or_insert_with(Default::default)
    }

    /// The node for `pattern`'s tokens below this one, created as needed.
    pub(super) fn descend(&mut self, pattern: &str) -> &mut Node {
        let mut node = self;
        for token in pattern.split('.') {
            let inner = node.inner();
            node = match token {
                "*" => &mut inner.star,
                ">" => &mut inner.gt,
                t => inner
                    .literal
                    .get_or_insert_with(Default::default)
                    .entry(t.into())
                    .or_default(),
            };
        }
        node
    }

    /// Adds a subscriber here; returns (the first for this pattern and group, added).
    pub(super) fn add(&mut self, outbox: &Arc<Outbox>, group: Option<&str>) -> (bool, bool) {
        let inner = self.inner();
        match group {
            None => add(&mut inner.plain, outbox),
            Some(g) => {
                let groups = &mut inner.groups.get_or_insert_with(Default::default).0;
                let i = match groups.iter().position(|m| &*m.name == g) {
                    Some(i) => i,
                    None => {
                        groups.push(Members {
                            name: g.into(),
                            members: Vec::new(),
                        });
                        groups.len() - 1
                    }
                };
                add(&mut groups[i].members, outbox)
            }
        }
    }

    /// Removes a subscription below this node, pruning nodes left empty; returns (removed, the
    /// pattern and group still have a subscriber).
    pub(super) fn remove(&mut self, tokens: &[&str], id: u64, group: Option<&str>) -> (bool, bool) {
        let Some(inner) = self.0.as_deref_mut() else {
            return (false, false);
        };
        let out = match tokens.split_first() {
            None => match group {
                None => (take(&mut inner.plain, id), !inner.plain.is_empty()),
                Some(g) => {
                    let Some(Groups(groups)) = inner.groups.as_deref_mut() else {
                        return (false, false);
                    };
                    let Some(i) = groups.iter().position(|m| &*m.name == g) else {
                        return (false, false);
                    };
                    let removed = take(&mut groups[i].members, id);
                    let still = !groups[i].members.is_empty();
                    if !still {
                        groups.swap_remove(i);
                        if groups.is_empty() {
                            inner.groups = None;
                        }
                    }
                    (removed, still)
                }
            },
            Some((first, rest)) => match *first {
                "*" => inner.star.remove(rest, id, group),
                ">" => inner.gt.remove(rest, id, group),
                t => {
                    let Some(literal) = inner.literal.as_deref_mut() else {
                        return (false, false);
                    };
                    let Some(child) = literal.get_mut(t) else {
                        return (false, false);
                    };
                    let out = child.remove(rest, id, group);
                    if child.0.is_none() {
                        literal.remove(t);
                        if literal.is_empty() {
                            inner.literal = None;
                        } else if literal.capacity() > 4 * literal.len() {
                            literal.shrink_to_fit();
                        }
                    }
                    out
                }
            },
        };
        if inner.is_empty() {
            self.0 = None;
        }
        out
    }

    /// Hands every subscriber of a pattern matching `tokens` (a topic) to `out`.
    pub(super) fn collect(&self, tokens: &[&str], out: &mut impl Sink) {
        let Some(inner) = self.0.as_deref() else {
            return;
        };
        let Some((first, rest)) = tokens.split_first() else {
            inner.give(out);
            return;
        };
        if let Some(gt) = inner.gt.0.as_deref() {
            gt.give(out);
        }
        inner.star.collect(rest, out);
        if let Some(child) = inner.literal.as_deref().and_then(|l| l.get(*first)) {
            child.collect(rest, out);
        }
    }
}

impl Inner {
    fn give(&self, out: &mut impl Sink) {
        if !self.plain.is_empty() {
            out.plain(&self.plain);
        }
        for m in self.groups.iter().flat_map(|g| g.0.iter()) {
            out.group(&m.name, &m.members);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_stay_small() {
        assert_eq!(std::mem::size_of::<Node>(), 8);
        assert!(
            std::mem::size_of::<Inner>() <= 56,
            "{}",
            std::mem::size_of::<Inner>()
        );
        assert_eq!(std::mem::size_of::<ProcessKeyed>(), 0);
    }

    #[test]
    fn removing_the_last_subscription_leaves_nothing_behind() {
        let o = Arc::new(
            Outbox::new(
                1,
                1,
                crate::config::SlowConsumer::Drop,
                tokio_util::sync::CancellationToken::new(),
            )
            .0,
        );
        let mut root = Node::default();
        for p in ["a.b.c", "a.*.c", "a.>", ">"] {
            assert_eq!(root.descend(p).add(&o, None), (true, true));
            assert_eq!(root.descend(p).add(&o, Some("g")), (true, true));
        }
        for p in ["a.b.c", "a.*.c", "a.>", ">"] {
            let tokens: Vec<&str> = p.split('.').collect();
            assert_eq!(root.remove(&tokens, 1, None), (true, false));
            assert_eq!(root.remove(&tokens, 1, Some("g")), (true, false));
            assert_eq!(root.remove(&tokens, 1, Some("g")), (false, false));
        }
        assert!(root.0.is_none());
    }
}
