//! The subscription index: which connections want a topic.
//!
//! A token trie, as nats-server's sublist (`trie.rs`): literal children in a map, `*` and `>`
//! in their own slots. Lookups go through a bounded match cache keyed by topic; any change to
//! the trie clears it. Publishers on both cores share the cache without a global lock (it is
//! sharded); the trie itself sits behind a read-write lock that only a cache miss or a
//! (un)subscribe takes.
//!
//! Queue groups are grouped by name across every matching pattern, as NATS does: a message goes
//! to one member of each distinct group, chosen round-robin. The turn belongs to the group, not
//! to a cached match: one counter per group name lives beside the trie for as long as the group
//! has a member anywhere, and every cached match of that group shares it. So the group is
//! shared fairly over everything published to it, whatever the topics (each topic its own cache
//! entry) and however often the cache is rebuilt.
//!
//! Every change says whether a (pattern, group) gained its first subscriber or lost its last
//! ([`InterestChange`]), so a bridge to other nodes can follow local interest.

mod trie;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use dashmap::DashMap;

use crate::outbox::Outbox;
use trie::{Map, Node, Sink};

/// Most topics kept in the match cache; past it the cache starts over.
pub const CACHE_LIMIT: usize = 16_384;

/// One queue group's members for a topic.
#[derive(Debug)]
pub struct Group {
    pub name: Box<str>,
    pub members: Vec<Arc<Outbox>>,
    /// The group's turn, shared with every other match of the same group.
    turn: Arc<AtomicUsize>,
}

impl Group {
    /// The member to deliver the next message to: round-robin over the group's turn.
    pub fn pick(&self) -> Option<&Arc<Outbox>> {
        if self.members.is_empty() {
            return None;
        }
        let i = self.turn.fetch_add(1, Ordering::Relaxed) % self.members.len();
        self.members.get(i)
    }
}

/// Who gets a message on one topic.
#[derive(Debug, Default)]
pub struct Matches {
    /// Plain subscribers, each connection once.
    pub plain: Vec<Arc<Outbox>>,
    /// Queue groups, each once.
    pub groups: Vec<Group>,
}

/// A change in interest, for whoever follows it (a bridge to other nodes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterestChange {
    /// The first local subscriber (or group member) of `pattern` arrived.
    Gained {
        pattern: String,
        group: Option<String>,
    },
    /// The last one left.
    Lost {
        pattern: String,
        group: Option<String>,
    },
    /// Connection `member` joined queue group `group` through `pattern` (told for every member,
    /// not only the first: a bridge weighs a node's share of a group by its members).
    Joined {
        member: u64,
        pattern: String,
        group: String,
    },
    /// Connection `member` left queue group `group` on `pattern`.
    Left {
        member: u64,
        pattern: String,
        group: String,
    },
}

/// A queue group's turn and how many memberships (pattern, connection) it has.
#[derive(Debug)]
struct Turn {
    memberships: u64,
    next: Arc<AtomicUsize>,
}

/// What the read-write lock guards: the trie and the groups' turns.
#[derive(Debug, Default)]
struct Trie {
    root: Node,
    turns: Map<Box<str>, Turn>,
}

/// Gathers a topic's subscribers from the trie, each connection once.
#[derive(Default)]
struct Collect {
    plain: HashMap<u64, Arc<Outbox>>,
    groups: HashMap<Box<str>, HashMap<u64, Arc<Outbox>>>,
}

impl Sink for Collect {
    fn plain(&mut self, subs: &[Arc<Outbox>]) {
        for p in subs {
            self.plain.entry(p.id).or_insert_with(|| p.clone());
        }
    }

    fn group(&mut self, name: &str, members: &[Arc<Outbox>]) {
        let g = match self.groups.get_mut(name) {
            Some(g) => g,
            None => self.groups.entry(name.into()).or_default(),
        };
        for p in members {
            g.entry(p.id).or_insert_with(|| p.clone());
        }
    }
}

impl Collect {
    fn finish(self, turns: &Map<Box<str>, Turn>) -> Matches {
        let mut plain: Vec<_> = self.plain.into_values().collect();
        plain.sort_by_key(|p| p.id);
        let mut groups: Vec<Group> = self
            .groups
            .into_iter()
            .map(|(name, m)| {
                let mut members: Vec<_> = m.into_values().collect();
                members.sort_by_key(|p| p.id);
                // Every group with a member has a turn; a fresh one would only be unfair.
                let turn = turns.get(&name).map(|t| t.next.clone()).unwrap_or_default();
                Group {
                    name,
                    members,
                    turn,
                }
            })
            .collect();
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        Matches { plain, groups }
    }
}

/// Told of every [`InterestChange`] change, under the index's write lock, so changes arrive in the
/// order they happened. It must not block (the cluster bridge records and wakes a task).
pub type Follower = Box<dyn Fn(&InterestChange) + Send + Sync>;

/// The index. Cheap to share: wrap it in an `Arc`.
#[derive(Default)]
pub struct Index {
    trie: RwLock<Trie>,
    follower: OnceLock<Follower>,
    cache: DashMap<Box<str>, Arc<Matches>>,
    subscriptions: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("subscriptions", &self.len())
            .field("cache", &self.cache_len())
            .field("followed", &self.follower.get().is_some())
            .finish_non_exhaustive()
    }
}

/// What an unsubscribe did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    /// The connection did not hold that subscription.
    NotHeld,
    /// Removed; `Some` when the pattern/group lost its last subscriber.
    Removed(Option<InterestChange>),
}

/// What a subscribe did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// New for this connection; `Some` when the pattern/group gained its first subscriber.
    New(Option<InterestChange>),
    /// The connection already held it.
    Already,
}

impl Index {
    /// Installs the one follower of interest changes; `false` if one was already installed.
    pub fn follow(&self, follower: Follower) -> bool {
        self.follower.set(follower).is_ok()
    }

    fn tell(&self, change: Option<InterestChange>) -> Option<InterestChange> {
        if let (Some(i), Some(f)) = (&change, self.follower.get()) {
            f(i);
        }
        change
    }

    /// Subscribes `outbox`'s connection to `pattern` (a valid pattern), in queue group `group` if given.
    pub fn subscribe(&self, outbox: &Arc<Outbox>, pattern: &str, group: Option<&str>) -> Added {
        let mut trie = self.trie.write().unwrap_or_else(|p| p.into_inner());
        let (first, new) = trie.root.descend(pattern).add(outbox, group);
        if !new {
            return Added::Already;
        }
        if let Some(g) = group {
            let turn = trie.turns.entry(g.into()).or_insert_with(|| Turn {
                memberships: 0,
                next: Arc::default(),
            });
            turn.memberships += 1;
        }
        self.subscriptions.fetch_add(1, Ordering::Relaxed);
        // Under the write lock: no reader can insert a stale result after this.
        self.cache.clear();
        let change = self.tell(first.then(|| InterestChange::Gained {
            pattern: pattern.to_owned(),
            group: group.map(str::to_owned),
        }));
        if let Some(g) = group {
            self.tell(Some(InterestChange::Joined {
                member: outbox.id,
                pattern: pattern.to_owned(),
                group: g.to_owned(),
            }));
        }
        Added::New(change)
    }

    /// Removes one subscription.
    pub fn unsubscribe(&self, id: u64, pattern: &str, group: Option<&str>) -> Removed {
        let tokens: Vec<&str> = pattern.split('.').collect();
        let mut trie = self.trie.write().unwrap_or_else(|p| p.into_inner());
        let (removed, still) = trie.root.remove(&tokens, id, group);
        if !removed {
            return Removed::NotHeld;
        }
        if let Some(g) = group {
            if let Some(turn) = trie.turns.get_mut(g) {
                turn.memberships -= 1;
                if turn.memberships == 0 {
                    trie.turns.remove(g);
                }
            }
        }
        self.subscriptions.fetch_sub(1, Ordering::Relaxed);
        self.cache.clear();
        if let Some(g) = group {
            self.tell(Some(InterestChange::Left {
                member: id,
                pattern: pattern.to_owned(),
                group: g.to_owned(),
            }));
        }
        Removed::Removed(self.tell((!still).then(|| InterestChange::Lost {
            pattern: pattern.to_owned(),
            group: group.map(str::to_owned),
        })))
    }

    /// Who gets a message published on `topic` (a valid topic).
    pub fn lookup(&self, topic: &str) -> Arc<Matches> {
        if let Some(hit) = self.cache.get(topic) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return hit.clone();
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let tokens: Vec<&str> = topic.split('.').collect();
        let trie = self.trie.read().unwrap_or_else(|p| p.into_inner());
        let mut c = Collect::default();
        trie.root.collect(&tokens, &mut c);
        let m = Arc::new(c.finish(&trie.turns));
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        // Still under the read lock, so no subscribe can clear the cache before this insert.
        self.cache.insert(topic.into(), m.clone());
        m
    }

    /// Subscriptions held now.
    pub fn len(&self) -> u64 {
        self.subscriptions.load(Ordering::Relaxed)
    }

    /// True with no subscription.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Topics in the match cache now.
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// Match-cache hits and misses since start.
    pub fn cache_stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::config::SlowConsumer;

    fn outbox(id: u64) -> Arc<Outbox> {
        Arc::new(Outbox::new(id, 1 << 20, SlowConsumer::Drop, CancellationToken::new()).0)
    }

    fn ids(m: &Matches) -> Vec<u64> {
        m.plain.iter().map(|p| p.id).collect()
    }

    #[test]
    fn wildcards_and_literals_match_and_each_connection_gets_it_once() {
        let idx = Index::default();
        let (a, b) = (outbox(1), outbox(2));
        idx.subscribe(&a, "a.b", None);
        idx.subscribe(&a, "a.*", None);
        idx.subscribe(&a, "a.>", None);
        idx.subscribe(&b, ">", None);
        assert_eq!(ids(&idx.lookup("a.b")), vec![1, 2]);
        assert_eq!(ids(&idx.lookup("a.c.d")), vec![1, 2]);
        assert_eq!(ids(&idx.lookup("a")), vec![2]);
        assert_eq!(ids(&idx.lookup("x.y")), vec![2]);
    }

    #[test]
    fn interest_is_reported_on_first_and_last() {
        let idx = Index::default();
        let (a, b) = (outbox(1), outbox(2));
        assert!(matches!(
            idx.subscribe(&a, "a.*", None),
            Added::New(Some(InterestChange::Gained { .. }))
        ));
        assert_eq!(idx.subscribe(&b, "a.*", None), Added::New(None));
        assert_eq!(idx.subscribe(&b, "a.*", None), Added::Already);
        assert_eq!(idx.unsubscribe(1, "a.*", None), Removed::Removed(None));
        assert!(matches!(
            idx.unsubscribe(2, "a.*", None),
            Removed::Removed(Some(InterestChange::Lost { .. }))
        ));
        assert_eq!(idx.unsubscribe(2, "a.*", None), Removed::NotHeld);
        assert!(idx.is_empty());
        assert!(idx.lookup("a.b").plain.is_empty());
    }

    #[test]
    fn a_follower_hears_first_and_last_in_order_and_every_group_member() {
        let idx = Index::default();
        let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
        let h = heard.clone();
        assert!(idx.follow(Box::new(move |i| h.lock().unwrap().push(i.clone()))));
        let (a, b) = (outbox(1), outbox(2));
        idx.subscribe(&a, "x.>", Some("g"));
        idx.subscribe(&b, "x.>", Some("g"));
        idx.unsubscribe(1, "x.>", Some("g"));
        idx.unsubscribe(2, "x.>", Some("g"));
        let (pattern, g) = ("x.>".to_owned(), "g".to_owned());
        let member = |member, joined| {
            let (pattern, group) = (pattern.clone(), g.clone());
            if joined {
                InterestChange::Joined {
                    member,
                    pattern,
                    group,
                }
            } else {
                InterestChange::Left {
                    member,
                    pattern,
                    group,
                }
            }
        };
        let group = Some(g.clone());
        assert_eq!(
            *heard.lock().unwrap(),
            vec![
                InterestChange::Gained {
                    pattern: pattern.clone(),
                    group: group.clone()
                },
                member(1, true),
                member(2, true),
                member(1, false),
                member(2, false),
                InterestChange::Lost { pattern, group },
            ]
        );
    }

    #[test]
    fn the_cache_is_invalidated_on_change() {
        let idx = Index::default();
        let a = outbox(1);
        assert!(idx.lookup("t").plain.is_empty());
        idx.subscribe(&a, "t", None);
        assert_eq!(ids(&idx.lookup("t")), vec![1]);
        idx.unsubscribe(1, "t", None);
        assert!(idx.lookup("t").plain.is_empty());
    }

    #[test]
    fn queue_groups_merge_by_name_and_rotate() {
        let idx = Index::default();
        let (a, b, c) = (outbox(1), outbox(2), outbox(3));
        idx.subscribe(&a, "jobs.*", Some("w"));
        idx.subscribe(&b, "jobs.>", Some("w"));
        idx.subscribe(&c, "jobs.x", Some("other"));
        let m = idx.lookup("jobs.x");
        assert_eq!(m.groups.len(), 2);
        let w = m.groups.iter().find(|g| &*g.name == "w").unwrap();
        let picks: Vec<u64> = (0..4).map(|_| w.pick().unwrap().id).collect();
        assert_eq!(picks, vec![1, 2, 1, 2]);
    }

    #[test]
    fn a_group_takes_turns_across_topics_and_cache_rebuilds() {
        let idx = Index::default();
        let (a, b, c, d) = (outbox(1), outbox(2), outbox(3), outbox(4));
        for o in [&a, &b, &c] {
            idx.subscribe(o, "jobs.*", Some("w"));
        }
        let mut got = [0; 3];
        for i in 0..300 {
            let m = idx.lookup(&format!("jobs.t{i}"));
            got[m.groups[0].pick().unwrap().id as usize - 1] += 1;
            // A change elsewhere empties the cache between publishes.
            idx.subscribe(&d, &format!("other.{i}"), None);
        }
        assert_eq!(got, [100, 100, 100]);
        for o in [&a, &b, &c] {
            idx.unsubscribe(o.id, "jobs.*", Some("w"));
        }
        assert!(idx.trie.read().unwrap().turns.is_empty());
    }
}
