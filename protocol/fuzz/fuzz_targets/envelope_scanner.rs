//! Arbitrary bytes as a frame body: the scanner never panics and never reads past the body; the
//! `$metrics` decoder never panics, holds at most its entry limit, and agrees with the
//! scanner: what it decodes, the scanner classifies as `$metrics` without code, and what the
//! scanner says imports or calls, it never decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mphub_protocol::metrics::{Batch, MetricOp, MAX_BUCKETS, MAX_LABELS};
use mphub_protocol::{Envelope, Scanner};

fuzz_target!(|data: &[u8]| {
    let mut scanner = Scanner::with_limit(1 << 16);
    let envelope = scanner.classify(data);
    match &envelope {
        Envelope::Publish { topic } => {
            assert!(mphub_protocol::topic::validate_topic(topic).is_ok())
        }
        Envelope::Subscribe(i) | Envelope::Unsubscribe(i) => {
            assert!(mphub_protocol::topic::validate_pattern(&i.pattern).is_ok())
        }
        _ => {}
    }
    match Batch::decode_with_limit(data, 1 << 16) {
        Ok(batch) => {
            assert_eq!(envelope, Envelope::Metrics { has_code: false });
            let mut n = 0;
            for op in batch.ops() {
                // Whatever the batch shares, one op holds a bounded amount.
                match op {
                    Ok(MetricOp::Declare {
                        labels, buckets, ..
                    }) => {
                        assert!(labels.len() <= MAX_LABELS);
                        assert!(buckets.map_or(0, |b| b.len()) <= MAX_BUCKETS + 1);
                    }
                    Ok(MetricOp::Inc { labels, .. } | MetricOp::Dec { labels, .. })
                    | Ok(MetricOp::Set { labels, .. } | MetricOp::Observe { labels, .. }) => {
                        assert!(labels.len() <= MAX_LABELS)
                    }
                    Err(_) => {}
                }
                n += 1;
            }
            assert_eq!(n, batch.len());
        }
        Err(_) => {}
    }
    if envelope == (Envelope::Metrics { has_code: true }) {
        assert!(Batch::decode(data).is_err());
    }
});
