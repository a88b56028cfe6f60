//! The subscription index: which connections want a topic.
//!
//! A token trie, as nats-server's sublist (`trie.rs`): literal children in a map, `*` and `>`
//! in their own slots. Lookups go through a bounded match cache keyed by topic. A change to the
//! trie drops only the cached topics it can alter, as nats-server's sublist does: a literal
//! pattern its own entry, a wildcard every cached topic it matches. Unlike the sublist, which
//! scans its cache for a wildcard, the cached topics are also kept as a token trie
//! (`cached.rs`), so finding them costs the pattern's tokens, not the cache's size: a
//! connection making and dropping `_INBOX.<id>.>` subscriptions all day leaves the hot topics'
//! entries alone and costs them nothing. Publishers on both cores share the cache without a
//! global lock (it is sharded); the trie itself sits behind a read-write lock that only a cache
//! miss or a (un)subscribe takes.
//!
//! The cache hashes topics with foldhash (randomly seeded per process and per map), not SipHash:
//! a hit costs one hash of the topic per publish, and foldhash is several times cheaper on short
//! keys. Its DoS resistance is the "minimal" kind (a peer who cannot observe hashes cannot aim
//! collisions); the cache is bounded by [`CACHE_LIMIT`] besides. The trie's literal children,
//! read only on a miss, keep SipHash.
//!
//! Queue groups are grouped by name across every matching pattern, as NATS does: a message goes
//! to one member of each distinct group, the one of the topic's members that the group has given
//! the fewest messages so far (ties: the lowest connection id, so equal members take turns). The
//! counts belong to the group, not to a cached match: one counter per member lives beside the
//! trie for as long as the member is in the group (a newcomer starts level with the least served
//! member), and every cached match of that group shares them. So the group is shared fairly over
//! everything published to it, whatever the topics, even when members subscribed to different
//! patterns (each topic its own cache
//! entry) and however often the cache is rebuilt.
//!
//! Every change says whether a (pattern, group) gained its first subscriber or lost its last
//! ([`InterestChange`]), so a bridge to other nodes can follow local interest.

mod cached;
mod trie;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use dashmap::DashMap;

use crate::outbox::Outbox;
use cached::CachedTopics;
use trie::{Map, Node, Sink};

/// Most topics kept in the match cache; past it the cache starts over.
pub const CACHE_LIMIT: usize = 16_384;

/// One queue group's members for a topic.
#[derive(Debug)]
pub struct Group {
    pub name: Box<str>,
    pub members: Vec<Arc<Outbox>>,
    /// Messages the group has given each member (one per entry of `members`), shared with every
    /// other match of the same group.
    served: Vec<Arc<AtomicU64>>,
}

impl Group {
    /// The member to deliver the next message to: the least served one (ties: the first, the
    /// lowest id), counted as served.
    pub fn pick(&self) -> Option<&Arc<Outbox>> {
        self.pick_where(|_| true)
    }

    /// Like [`Group::pick`] among the members `eligible` accepts (it is asked about the least
    /// served first, then the next, so a check that costs something runs about once).
    pub fn pick_where(&self, eligible: impl Fn(&Outbox) -> bool) -> Option<&Arc<Outbox>> {
        let mut excluded: Vec<usize> = Vec::new(); // allocates only when a member is passed over
        loop {
            let mut best: Option<(u64, usize)> = None;
            for (i, served) in self.served.iter().enumerate() {
                let n = served.load(Ordering::Relaxed);
                if best.is_none_or(|(b, _)| n < b) && !excluded.contains(&i) {
                    best = Some((n, i));
                }
            }
            let (_, i) = best?;
            let member = self.members.get(i)?;
            if eligible(member) {
                self.served.get(i)?.fetch_add(1, Ordering::Relaxed);
                return Some(member);
            }
            excluded.push(i);
        }
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

/// A queue group's members: how many memberships (pattern, connection) each connection holds,
/// and how many messages the group has given it.
#[derive(Debug, Default)]
struct Turn {
    members: HashMap<u64, (u64, Arc<AtomicU64>)>,
}

impl Turn {
    /// Connection `id` joined through one more pattern. A newcomer starts level with the least
    /// served member, so it does not take every message until it has caught up.
    fn join(&mut self, id: u64) {
        let least = self
            .members
            .values()
            .map(|(_, n)| n.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0);
        let (memberships, _) = self
            .members
            .entry(id)
            .or_insert_with(|| (0, Arc::new(AtomicU64::new(least))));
        *memberships += 1;
    }

    /// Connection `id` left through one pattern; true when the group has no member left.
    fn leave(&mut self, id: u64) -> bool {
        if let Some((memberships, _)) = self.members.get_mut(&id) {
            *memberships -= 1;
            if *memberships == 0 {
                self.members.remove(&id);
            }
        }
        self.members.is_empty()
    }

    /// Member `id`'s count (a fresh one if it is not a member: only possible mid-change).
    fn served(&self, id: u64) -> Arc<AtomicU64> {
        self.members
            .get(&id)
            .map(|(_, n)| n.clone())
            .unwrap_or_default()
    }
}

/// What the read-write lock guards: the trie and the groups' turns.
#[derive(Debug, Default)]
struct Trie {
    root: Node,
    turns: Map<Box<str>, Turn>,
}

impl Trie {
    /// Who gets a message on `topic`, computed from the trie (no cache).
    fn matches(&self, topic: &str) -> Matches {
        let tokens: Vec<&str> = topic.split('.').collect();
        let mut c = Collect::default();
        self.root.collect(&tokens, &mut c);
        c.finish(&self.turns)
    }
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
                // Every group with a member has its counts; fresh ones would only be unfair.
                let turn = turns.get(&name);
                let served = members
                    .iter()
                    .map(|p| turn.map(|t| t.served(p.id)).unwrap_or_default())
                    .collect();
                Group {
                    name,
                    members,
                    served,
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
    cache: DashMap<Box<str>, Arc<Matches>, foldhash::fast::RandomState>,
    /// The cache's keys by token. Every key of `cache` is in it: both change together under
    /// this lock (taken after the trie's, only on a miss or a change).
    cached: Mutex<CachedTopics>,
    subscriptions: AtomicU64,
    /// Bumped by every change, after its invalidation: a copy of a lookup taken at generation
    /// `g` is still right while this reads `g` (see [`Recent`]).
    generation: AtomicU64,
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

/// One connection's last lookup, for [`Index::lookup_recent`]. The topic's buffer is reused, so
/// a publisher cycling over many topics allocates nothing here either.
#[derive(Debug, Default)]
pub struct Recent {
    topic: String,
    generation: u64,
    matches: Option<Arc<Matches>>,
    /// Lookups answered here since the last [`Index::fold_hits`].
    hits: u64,
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
            trie.turns.entry(g.into()).or_default().join(outbox.id);
        }
        self.subscriptions.fetch_add(1, Ordering::Relaxed);
        self.invalidate(pattern);
        self.generation.fetch_add(1, Ordering::Release);
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
            if trie.turns.get_mut(g).is_some_and(|turn| turn.leave(id)) {
                trie.turns.remove(g);
            }
        }
        self.subscriptions.fetch_sub(1, Ordering::Relaxed);
        self.invalidate(pattern);
        self.generation.fetch_add(1, Ordering::Release);
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

    /// Drops the cached matches a change to `pattern` can alter: those of the cached topics
    /// it matches (a literal pattern only its own topic), found by walking the cached topics'
    /// trie with the pattern. Queue-group turns live beside the trie, so no entry left in place
    /// can hold a stale turn either.
    ///
    /// Called with the trie's write lock held: a lookup inserts its result under the read lock,
    /// so no reader can put back a result computed before the change.
    fn invalidate(&self, pattern: &str) {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        cached.take_matching(pattern, &mut |topic| {
            self.cache.remove(&*topic);
        });
    }

    /// Who gets a message published on `topic` (a valid topic).
    pub fn lookup(&self, topic: &str) -> Arc<Matches> {
        if let Some(hit) = self.cache.get(topic) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return hit.clone();
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let trie = self.trie.read().unwrap_or_else(|p| p.into_inner());
        let m = Arc::new(trie.matches(topic));
        // Still under the read lock, so no change can invalidate before this insert; the
        // cached topics' lock keeps their trie and the cache's keys in step between lookups.
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
            cached.clear();
        }
        cached.insert(topic);
        self.cache.insert(topic.into(), m.clone());
        m
    }

    /// Who gets a message on `topic`, reusing `recent` (one connection's last lookup) while
    /// nothing in the index has changed since it was taken: a publisher sending on one topic
    /// skips the shared cache (its hash, its shard's lock, the hit counter's cache line that
    /// both cores write). Any subscribe or unsubscribe anywhere makes the next call go to the
    /// shared cache, which keeps its entries through changes that do not concern them.
    pub fn lookup_recent<'r>(&self, topic: &str, recent: &'r mut Recent) -> &'r Arc<Matches> {
        // Read before the lookup: a change landing in between leaves `recent` one generation
        // behind, so the next call looks again.
        let generation = self.generation.load(Ordering::Acquire);
        let fresh = recent.generation == generation && recent.topic == topic;
        if fresh && recent.matches.is_some() {
            recent.hits += 1;
        } else {
            recent.topic.clear();
            recent.topic.push_str(topic);
            recent.generation = generation;
            recent.matches = None;
        }
        recent.matches.get_or_insert_with(|| self.lookup(topic))
    }

    /// Adds the hits counted in `recent` to the cache's statistics (once per read batch).
    pub fn fold_hits(&self, recent: &mut Recent) {
        if recent.hits > 0 {
            self.hits.fetch_add(recent.hits, Ordering::Relaxed);
            recent.hits = 0;
        }
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
mod tests;
