//! Which topics the match cache holds, as a token trie, so a change to the subscriptions finds
//! the cached topics it can alter without scanning the cache.
//!
//! nats-server's sublist scans its whole cache on a wildcard insert or remove; with 10,000 hot
//! topics cached and a connection making and dropping `_INBOX.<id>.>` subscriptions tens of
//! thousands of times a second, that scan is the broker's whole CPU. Walking this trie with the
//! pattern instead costs the pattern's tokens plus the entries it really matches: a literal
//! token follows one child, `*` every child, `>` takes a whole subtree. A fresh inbox pattern
//! stops at its second token.

use std::collections::HashMap;

/// Children keyed by token. Read only on a cache miss and on a change, under locks the index
/// holds; foldhash as for the cache itself (see the module above).
type Children = HashMap<Box<str>, CachedTopics, foldhash::fast::RandomState>;

/// A set of topics laid out by token.
#[derive(Debug, Default)]
pub(super) struct CachedTopics {
    children: Children,
    /// The topic ending at this node, when it is in the set.
    here: Option<Box<str>>,
}

impl CachedTopics {
    /// Adds a valid topic.
    pub(super) fn insert(&mut self, topic: &str) {
        let mut node = self;
        for token in topic.split('.') {
            node = node.children.entry(token.into()).or_default();
        }
        if node.here.is_none() {
            node.here = Some(topic.into());
        }
    }

    /// Forgets every topic.
    pub(super) fn clear(&mut self) {
        self.children = Children::default();
        self.here = None;
    }

    /// Removes every topic the valid pattern matches and hands each to `out`.
    pub(super) fn take_matching(&mut self, pattern: &str, out: &mut impl FnMut(Box<str>)) {
        let tokens: Vec<&str> = pattern.split('.').collect();
        self.take(&tokens, out);
    }

    fn take(&mut self, tokens: &[&str], out: &mut impl FnMut(Box<str>)) {
        let Some((first, rest)) = tokens.split_first() else {
            if let Some(t) = self.here.take() {
                out(t);
            }
            return;
        };
        match *first {
            // One or more tokens: every topic below this node.
            ">" => {
                for (_, child) in self.children.drain() {
                    child.give_all(out);
                }
            }
            "*" => {
                self.children.retain(|_, child| {
                    child.take(rest, out);
                    !child.is_empty()
                });
            }
            literal => {
                if let Some(child) = self.children.get_mut(literal) {
                    child.take(rest, out);
                    if child.is_empty() {
                        self.children.remove(literal);
                    }
                }
            }
        }
    }

    fn give_all(self, out: &mut impl FnMut(Box<str>)) {
        if let Some(t) = self.here {
            out(t);
        }
        for (_, child) in self.children {
            child.give_all(out);
        }
    }

    fn is_empty(&self) -> bool {
        self.here.is_none() && self.children.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mphub_protocol::topic::matches;

    const TOPICS: [&str; 9] = [
        "a",
        "a.b",
        "a.c",
        "a.b.c",
        "b.b",
        "b.c.d",
        "x",
        "_INBOX.1.2",
        "_INBOX.7",
    ];

    fn taken(set: &mut CachedTopics, pattern: &str) -> Vec<String> {
        let mut v = Vec::new();
        set.take_matching(pattern, &mut |t| v.push(t.to_string()));
        v.sort();
        v
    }

    #[test]
    fn a_pattern_takes_exactly_the_topics_it_matches_and_leaves_the_rest() {
        for pattern in [
            "a",
            "a.b",
            "a.*",
            "a.>",
            "*.b",
            "*.*.*",
            ">",
            "b.>",
            "_INBOX.9.>",
            "*",
            "x.>",
        ] {
            let mut set = CachedTopics::default();
            for t in TOPICS {
                set.insert(t);
            }
            let mut want: Vec<String> = TOPICS
                .iter()
                .filter(|t| matches(pattern, t))
                .map(|t| t.to_string())
                .collect();
            want.sort();
            assert_eq!(taken(&mut set, pattern), want, "{pattern}");
            // Taken once: nothing left for the pattern, the others still there.
            assert!(taken(&mut set, pattern).is_empty(), "{pattern}");
            let mut rest = taken(&mut set, ">");
            let mut others: Vec<String> = TOPICS
                .iter()
                .filter(|t| !matches(pattern, t))
                .map(|t| t.to_string())
                .collect();
            others.sort();
            rest.sort();
            assert_eq!(rest, others, "{pattern}");
            assert!(set.is_empty(), "{pattern}: empty nodes are pruned");
        }
    }
}
