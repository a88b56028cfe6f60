//! The busiest topics, estimated by sampling local publishes: what the status page shows.
//!
//! Counting every publish per topic would put a map update (a shared lock, or a counter that
//! every core writes) on the per-message path. Instead each connection picks about one publish
//! in [`SAMPLE`] at random ([`Sampler`]: a per-connection xorshift, no shared state) and writes
//! its topic into a ring of [`SLOTS`] slots. A slot is taken with `try_lock`: a writer never
//! waits, and a sample whose slot is busy (a reader is copying it) is skipped. Slots keep their
//! string's memory, so a warm ring does not allocate.
//!
//! A reader ([`Topics::busiest`]) counts the samples of the last [`WINDOW`] per topic and scales
//! them back up by [`SAMPLE`]: an estimate whose error shrinks with traffic, good for ranking
//! topics at a glance (a topic that sees a few messages a minute may not show at all). Replies
//! to one requester's inbox count as one topic, `_INBOX.<id>.*`: each reply topic is used once.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// About one publish in this many is sampled.
pub const SAMPLE: u32 = 32;
/// Samples kept: at 1 M publishes a second the ring covers the last ~0.13 s.
pub const SLOTS: usize = 4096;
/// Samples older than this are not counted.
pub const WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Slot {
    at: Option<Instant>,
    topic: String,
}

/// The ring of sampled topics, shared by every connection.
#[derive(Debug)]
pub struct Topics {
    slots: Box<[Mutex<Slot>]>,
    next: AtomicUsize,
    started: Instant,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            slots: (0..SLOTS).map(|_| Mutex::default()).collect(),
            next: AtomicUsize::new(0),
            started: Instant::now(),
        }
    }
}

/// One connection's sampling decisions: a xorshift64 generator seeded from its id.
#[derive(Debug, Clone)]
pub struct Sampler(u64);

impl Sampler {
    /// A sampler for connection `id` (connections sample independently).
    pub fn new(id: u64) -> Self {
        // splitmix64 of the id: any seed but zero works for xorshift; this one spreads ids.
        let mut z = id.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Sampler((z ^ (z >> 31)) | 1)
    }

    /// True for about one call in [`SAMPLE`].
    #[inline]
    pub fn pick(&mut self) -> bool {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % u64::from(SAMPLE) == 0
    }
}

/// A topic among the busiest.
#[derive(Debug, Clone, PartialEq)]
pub struct Busy {
    /// The topic.
    pub topic: String,
    /// Estimated publishes per second over the window.
    pub rate: f64,
    /// Its share of the samples in the window (0 to 1).
    pub share: f64,
}

/// The busiest topics now.
#[derive(Debug, Clone, PartialEq)]
pub struct Busiest {
    /// The seconds the estimate covers.
    pub window: f64,
    /// Samples counted.
    pub samples: u64,
    /// Topics, busiest first, at most the number asked for.
    pub topics: Vec<Busy>,
}

impl Topics {
    /// Records one sampled publish on `topic`; never waits.
    pub fn record(&self, topic: &str) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % SLOTS;
        if let Some(slot) = self.slots.get(i) {
            if let Ok(mut s) = slot.try_lock() {
                s.topic.clear();
                s.topic.push_str(topic);
                s.at = Some(Instant::now());
            }
        }
    }

    /// The `limit` busiest topics of the last [`WINDOW`] (or less, when the ring holds less).
    pub fn busiest(&self, limit: usize) -> Busiest {
        let now = Instant::now();
        let mut counts: HashMap<String, u64> = HashMap::new();
        let mut oldest = now;
        let mut samples = 0u64;
        let mut full = true;
        for slot in self.slots.iter() {
            let s = slot.lock().unwrap_or_else(|p| p.into_inner());
            match s.at {
                Some(at) if now.saturating_duration_since(at) <= WINDOW => {
                    oldest = oldest.min(at);
                    samples += 1;
                    let topic = shown(&s.topic);
                    match counts.get_mut(topic.as_ref()) {
                        Some(n) => *n += 1,
                        None => {
                            counts.insert(topic.into_owned(), 1);
                        }
                    }
                }
                _ => full = false,
            }
        }
        // A ring full of recent samples covers only back to its oldest; else the whole window
        // (or the broker's life, if shorter).
        let span = if full {
            now.saturating_duration_since(oldest)
        } else {
            WINDOW.min(now.saturating_duration_since(self.started))
        };
        let window = span.as_secs_f64().max(0.001);
        let mut topics: Vec<Busy> = counts
            .into_iter()
            .map(|(topic, n)| Busy {
                topic,
                rate: (n * u64::from(SAMPLE)) as f64 / window,
                share: n as f64 / samples.max(1) as f64,
            })
            .collect();
        topics.sort_by(|a, b| b.rate.total_cmp(&a.rate).then(a.topic.cmp(&b.topic)));
        topics.truncate(limit);
        Busiest {
            window,
            samples,
            topics,
        }
    }
}

/// How a sampled topic is counted: as itself, or a reply to an inbox as that inbox's pattern.
fn shown(topic: &str) -> Cow<'_, str> {
    match topic
        .strip_prefix("_INBOX.")
        .and_then(|rest| rest.split_once('.'))
    {
        Some((inbox, _)) => Cow::Owned(format!("_INBOX.{inbox}.*")),
        None => Cow::Borrowed(topic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sampler_picks_about_one_in_sample() {
        let mut s = Sampler::new(7);
        let picked = (0..320_000).filter(|_| s.pick()).count();
        assert!((9_000..11_000).contains(&picked), "{picked}");
    }

    #[test]
    fn the_busiest_topic_comes_first_with_its_share() {
        let t = Topics::default();
        for i in 0..300 {
            t.record(if i % 3 == 0 { "quiet" } else { "busy" });
        }
        let b = t.busiest(10);
        assert_eq!(b.samples, 300);
        assert_eq!(b.topics[0].topic, "busy");
        assert!((b.topics[0].share - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(b.topics[1].topic, "quiet");
        assert_eq!(t.busiest(1).topics.len(), 1);
    }

    #[test]
    fn replies_to_one_inbox_count_as_one_topic() {
        let t = Topics::default();
        for i in 0..10 {
            t.record(&format!("_INBOX.abc.{i}"));
        }
        t.record("_INBOX");
        let b = t.busiest(10);
        assert_eq!(b.topics[0].topic, "_INBOX.abc.*");
        assert_eq!(b.topics[1].topic, "_INBOX");
    }

    #[test]
    fn a_full_ring_keeps_only_the_latest_samples() {
        let t = Topics::default();
        for _ in 0..SLOTS {
            t.record("old");
        }
        for _ in 0..SLOTS {
            t.record("new");
        }
        let b = t.busiest(10);
        assert_eq!(b.topics.len(), 1);
        assert_eq!(b.topics[0].topic, "new");
    }
}
