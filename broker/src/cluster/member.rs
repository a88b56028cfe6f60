//! One queue-group member's patterns, and the ones that need a NATS subscription of their own.
//!
//! A member weighs one in its group wherever its patterns nest: it needs a NATS subscription
//! only for each pattern none of its other patterns covers (`jobs.*` beside `jobs.>` needs
//! none). [`Member`] keeps that set as patterns come and go instead of working it out afresh
//! (a connection toggling one of a thousand patterns cost a million comparisons per change,
//! under the index lock). A change costs comparisons linear in the member's patterns, except
//! when the pattern leaving was the only cover of many others: then those are compared with
//! each other (a member with `>` over a thousand patterns, toggling `>`).
//!
//! `covers` is transitive, so a pattern covered by any of the member's patterns is covered by
//! one of the uncovered ones: every check below looks at the uncovered set only.

use std::collections::HashSet;

use mphub_protocol::topic::covers;

/// A member's patterns in one group.
#[derive(Debug, Default)]
pub struct Member {
    patterns: HashSet<String>,
    /// The patterns none of the others covers (no two equal: a connection holds a
    /// subscription once).
    uncovered: Vec<String>,
}

/// What a change did to a member's uncovered patterns.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub gained: Vec<String>,
    pub lost: Vec<String>,
}

impl Member {
    /// Whether the member has no pattern left.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Adds `pattern`.
    pub fn join(&mut self, pattern: &str) -> Change {
        if !self.patterns.insert(pattern.to_owned())
            || self.uncovered.iter().any(|u| covers(u, pattern))
        {
            return Change::default();
        }
        let (lost, kept): (Vec<String>, Vec<String>) = std::mem::take(&mut self.uncovered)
            .into_iter()
            .partition(|u| covers(pattern, u));
        self.uncovered = kept;
        self.uncovered.push(pattern.to_owned());
        Change {
            gained: vec![pattern.to_owned()],
            lost,
        }
    }

    /// Removes `pattern`.
    pub fn leave(&mut self, pattern: &str) -> Change {
        if !self.patterns.remove(pattern) {
            return Change::default();
        }
        let Some(i) = self.uncovered.iter().position(|u| u == pattern) else {
            // Covered by another pattern, which still covers all it covered.
            return Change::default();
        };
        self.uncovered.swap_remove(i);
        // Patterns it alone covered are uncovered now, unless one of them covers another.
        let freed: Vec<&String> = self
            .patterns
            .iter()
            .filter(|r| covers(pattern, r) && !self.uncovered.iter().any(|u| covers(u, r)))
            .collect();
        let gained: Vec<String> = freed
            .iter()
            .filter(|r| !freed.iter().any(|q| q != *r && covers(q, r)))
            .map(|r| (*r).clone())
            .collect();
        self.uncovered.extend(gained.iter().cloned());
        Change {
            gained,
            lost: vec![pattern.to_owned()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The uncovered patterns worked out from scratch.
    fn brute(patterns: &HashSet<String>) -> Vec<String> {
        let v: Vec<String> = patterns
            .iter()
            .filter(|p| !patterns.iter().any(|q| q != *p && covers(q, p)))
            .cloned()
            .collect();
        sorted(&v)
    }

    fn sorted(v: &[String]) -> Vec<String> {
        let mut v = v.to_vec();
        v.sort();
        v
    }

    /// What `a` has that `b` has not, sorted.
    fn minus(a: &[String], b: &[String]) -> Vec<String> {
        sorted(
            &a.iter()
                .filter(|q| !b.contains(q))
                .cloned()
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn nested_patterns_need_one_subscription() {
        let mut m = Member::default();
        assert_eq!(m.join("jobs.x").gained, vec!["jobs.x"]);
        let c = m.join("jobs.*");
        assert_eq!(
            (c.gained, c.lost),
            (vec!["jobs.*".into()], vec!["jobs.x".into()])
        );
        assert_eq!(
            m.join("jobs.x.y").gained,
            vec!["jobs.x.y"],
            "not covered by jobs.*"
        );
        assert_eq!(m.join("jobs.y"), Change::default(), "covered by jobs.*");
        let c = m.join("jobs.>");
        assert_eq!(c.gained, vec!["jobs.>"]);
        assert_eq!(sorted(&c.lost), vec!["jobs.*", "jobs.x.y"]);
        let c = m.leave("jobs.>");
        assert_eq!(
            sorted(&c.gained),
            vec!["jobs.*", "jobs.x.y"],
            "jobs.x stays under jobs.*"
        );
        assert_eq!(m.leave("jobs.x"), Change::default());
    }

    #[test]
    fn any_sequence_of_changes_agrees_with_working_it_out_from_scratch() {
        let pool = [
            ">", "a.>", "a.*", "a.b", "a.b.c", "a.*.c", "a.b.*", "*.b", "*.*", "*.>", "a.b.>",
            "b.*", "b.c",
        ];
        // A fixed pseudo-random walk (xorshift), long enough to pass every pair of states.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut m = Member::default();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let p = pool[(x % pool.len() as u64) as usize];
            let before = brute(&m.patterns);
            let c = if m.patterns.contains(p) {
                m.leave(p)
            } else {
                m.join(p)
            };
            let after = brute(&m.patterns);
            assert_eq!(sorted(&m.uncovered), after, "after toggling {p}");
            assert_eq!(
                sorted(&c.lost),
                minus(&before, &after),
                "lost, toggling {p}"
            );
            assert_eq!(
                sorted(&c.gained),
                minus(&after, &before),
                "gained, toggling {p}"
            );
        }
    }
}
