//! The index's tests: matching, interest changes, queue groups, and the match cache staying
//! coherent under subscribe and unsubscribe.

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
        let m = idx.lookup(&format!("jobs.t{}", i % 7));
        got[m.groups[0].pick().unwrap().id as usize - 1] += 1;
        // A wildcard coming and going over the group's topics drops their cached matches
        // between publishes, so some picks come from rebuilt entries and some from kept ones.
        if i % 2 == 0 {
            idx.subscribe(&d, "jobs.>", None);
        } else {
            idx.unsubscribe(d.id, "jobs.>", None);
        }
    }
    assert_eq!(got, [100, 100, 100]);
    for o in [&a, &b, &c] {
        idx.unsubscribe(o.id, "jobs.*", Some("w"));
    }
    assert!(idx.trie.read().unwrap().turns.is_empty());
}

/// Topics the cache tests look up, and patterns they subscribe to.
const TOPICS: [&str; 8] = ["a", "a.b", "a.c", "a.b.c", "b.b", "b.c.d", "x", "inbox.7"];
const PATTERNS: [&str; 10] = [
    "a", "a.b", "a.*", "a.>", "*.b", "*.*.*", ">", "b.>", "inbox.7", "x",
];

fn cached(idx: &Index) -> Vec<String> {
    let mut v: Vec<String> = idx.cache.iter().map(|e| e.key().to_string()).collect();
    v.sort();
    v
}

fn look_everything_up(idx: &Index) {
    for t in TOPICS {
        idx.lookup(t);
    }
}

#[test]
fn a_literal_subscription_drops_only_its_own_cached_topic() {
    let idx = Index::default();
    let a = outbox(1);
    look_everything_up(&idx);
    idx.subscribe(&a, "inbox.7", None);
    let mut left: Vec<String> = TOPICS
        .iter()
        .filter(|t| **t != "inbox.7")
        .map(|t| t.to_string())
        .collect();
    left.sort();
    assert_eq!(cached(&idx), left);
    assert_eq!(ids(&idx.lookup("inbox.7")), vec![1]);
    idx.unsubscribe(1, "inbox.7", None);
    assert_eq!(cached(&idx), left);
    assert!(idx.lookup("inbox.7").plain.is_empty());
}

#[test]
fn a_wildcard_subscription_drops_the_cached_topics_it_matches_and_no_others() {
    let idx = Index::default();
    let a = outbox(1);
    look_everything_up(&idx);
    idx.subscribe(&a, "a.*", None);
    assert_eq!(
        cached(&idx),
        vec!["a", "a.b.c", "b.b", "b.c.d", "inbox.7", "x"]
    );
    assert_eq!(ids(&idx.lookup("a.c")), vec![1]);
    assert!(idx.lookup("a.b.c").plain.is_empty());
    look_everything_up(&idx);
    idx.unsubscribe(1, "a.*", None);
    assert_eq!(
        cached(&idx),
        vec!["a", "a.b.c", "b.b", "b.c.d", "inbox.7", "x"]
    );
    assert!(idx.lookup("a.b").plain.is_empty());
}

#[test]
fn cached_matches_always_equal_the_trie_under_random_subscribes_and_unsubscribes() {
    let idx = Index::default();
    let boxes: Vec<Arc<Outbox>> = (1..=4).map(outbox).collect();
    let groups = [None, Some("g"), Some("h")];
    // A fixed linear congruential sequence: the same run every time, no dependency.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: usize| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) as usize % n
    };
    let shape = |m: &Matches| {
        let groups: Vec<(String, Vec<u64>)> = m
            .groups
            .iter()
            .map(|g| (g.name.to_string(), g.members.iter().map(|p| p.id).collect()))
            .collect();
        (ids(m), groups)
    };
    for step in 0..3_000 {
        let o = &boxes[next(boxes.len())];
        let pattern = PATTERNS[next(PATTERNS.len())];
        let group = groups[next(groups.len())];
        if next(2) == 0 {
            idx.subscribe(o, pattern, group);
        } else {
            idx.unsubscribe(o.id, pattern, group);
        }
        // Look some topics up so the cache holds entries the next change must judge.
        for _ in 0..3 {
            idx.lookup(TOPICS[next(TOPICS.len())]);
        }
        let trie = idx.trie.read().unwrap();
        for e in idx.cache.iter() {
            assert_eq!(
                shape(e.value()),
                shape(&trie.matches(e.key())),
                "step {step}: cached {} went stale after {pattern} {group:?}",
                e.key()
            );
        }
    }
    let (hits, _) = idx.cache_stats();
    assert!(hits > 0, "the cache was never used");
}

#[test]
fn a_cache_that_started_over_at_its_limit_still_drops_what_a_change_alters() {
    let idx = Index::default();
    let a = outbox(1);
    for i in 0..CACHE_LIMIT + 10 {
        idx.lookup(&format!("t.{i}"));
    }
    assert!(idx.cache_len() <= 10, "the cache started over");
    idx.subscribe(&a, "t.*", None);
    assert_eq!(ids(&idx.lookup("t.3")), vec![1]);
    assert_eq!(ids(&idx.lookup(&format!("t.{}", CACHE_LIMIT + 5))), vec![1]);
    idx.unsubscribe(1, "t.*", None);
    assert!(idx.lookup("t.3").plain.is_empty());
    assert!(idx
        .lookup(&format!("t.{}", CACHE_LIMIT + 5))
        .plain
        .is_empty());
}

#[test]
fn a_connection_s_recent_lookup_follows_every_change_and_its_hits_are_counted() {
    let idx = Index::default();
    let (a, b) = (outbox(1), outbox(2));
    let mut recent = Recent::default();
    assert!(idx.lookup_recent("t.x", &mut recent).plain.is_empty());
    idx.subscribe(&a, "t.x", None);
    assert_eq!(ids(idx.lookup_recent("t.x", &mut recent)), vec![1]);
    // A change elsewhere: the answer is looked up again and stays right.
    idx.subscribe(&b, "other", None);
    assert_eq!(ids(idx.lookup_recent("t.x", &mut recent)), vec![1]);
    idx.subscribe(&b, "t.*", None);
    assert_eq!(ids(idx.lookup_recent("t.x", &mut recent)), vec![1, 2]);
    // Another topic replaces the one remembered.
    assert_eq!(ids(idx.lookup_recent("t.y", &mut recent)), vec![2]);
    assert_eq!(ids(idx.lookup_recent("t.x", &mut recent)), vec![1, 2]);
    idx.unsubscribe(1, "t.x", None);
    assert_eq!(ids(idx.lookup_recent("t.x", &mut recent)), vec![2]);
    let (hits, misses) = idx.cache_stats();
    for _ in 0..5 {
        assert_eq!(ids(idx.lookup_recent("t.x", &mut recent)), vec![2]);
    }
    idx.fold_hits(&mut recent);
    assert_eq!(idx.cache_stats(), (hits + 5, misses));
}
