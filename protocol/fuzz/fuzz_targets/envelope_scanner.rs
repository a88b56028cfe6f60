//! Arbitrary bytes as a frame body: the scanner never panics and never reads past the body; and
//! the payload policy is safe.
//!
//! Invariant of the policy (`payloads = "data"`): for every input and each of the allow-lists
//! below, when `classify_with` accepts a publish, an independent walker (`walker.rs`: its own
//! opcode table, stack, marks and memo) follows the same pickle to STOP, and every import it
//! finds is allowed — each GLOBAL, INST and STACK_GLOBAL names an allowed `module.qualname`
//! (after the protocol-2 mapping, `Policy::judge`), every STACK_GLOBAL consumed two strings,
//! every OBJ instantiated an imported global, and there is no EXT1/2/4, PERSID or BINPERSID.
//!
//! The common-publish shortcut (`envelope/fast.rs`) changes no answer: `classify` and
//! `classify_with` return the same with it and without it (`Scanner::without_shortcut`), for
//! the input itself and for the input made the payload of the common publish shape, with a topic
//! taken from its first bytes.
//!
//! The `$metrics` decoder never panics, holds at most its entry limit, and agrees with the
//! scanner: what it decodes, the scanner classifies as `$metrics` without code, and what the
//! scanner says imports or calls, it never decodes.
#![no_main]

mod walker;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mphub_protocol::metrics::{Batch, MetricOp, MAX_BUCKETS, MAX_LABELS};
use mphub_protocol::{Envelope, Policy, Scanner};

fn policies() -> &'static [Policy] {
    static POLICIES: OnceLock<Vec<Policy>> = OnceLock::new();
    POLICIES.get_or_init(|| {
        [
            &[][..],
            &["datetime.datetime", "datetime.date", "builtins.set", "copyreg._reconstructor"],
            &["os.system", "builtins.eval", "__builtin__.set", "a.b", "a.b.c"],
        ]
        .iter()
        .map(|allow| Policy::data_only(allow.iter()).expect("valid names"))
        .collect()
    })
}

/// `data` as `PROTO 4, FRAME, SHORT_BINUNICODE topic, MEMOIZE, payload, TUPLE2, MEMOIZE, STOP`:
/// the first byte says how many of the following bytes are the topic (at most 31).
fn shaped(data: &[u8]) -> Vec<u8> {
    let Some((&n, rest)) = data.split_first() else {
        return Vec::new();
    };
    let (topic, payload) = rest.split_at(usize::from(n % 32).min(rest.len()));
    let mut body = vec![0x80, 4, 0x95];
    body.extend_from_slice(&((topic.len() + payload.len() + 6) as u64).to_le_bytes());
    body.extend_from_slice(&[0x8c, topic.len() as u8]);
    body.extend_from_slice(topic);
    body.push(0x94);
    body.extend_from_slice(payload);
    body.extend_from_slice(b"\x86\x94.");
    body
}

/// The shortcut and the general walk agree on `body`.
fn same_without_shortcut(body: &[u8]) {
    for limit in [3, 1 << 16] {
        let mut fast = Scanner::with_limit(limit);
        let mut slow = Scanner::with_limit(limit).without_shortcut();
        assert_eq!(fast.classify(body), slow.classify(body));
        for policy in policies() {
            assert_eq!(
                fast.classify_with(body, policy),
                slow.classify_with(body, policy)
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    same_without_shortcut(data);
    same_without_shortcut(&shaped(data));
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
    for policy in policies() {
        if let Ok(Envelope::Publish { .. }) = scanner.classify_with(data, policy) {
            let imports = walker::imports(data).expect("the walker follows every accepted pickle");
            for import in imports {
                match import {
                    walker::Import::Named(module, name, proto) => assert!(
                        policy.judge(&module, &name, proto).is_ok(),
                        "accepted an import of {module}.{name} at protocol {proto}"
                    ),
                    other => panic!("accepted a pickle with {other:?}"),
                }
            }
        }
    }
});
