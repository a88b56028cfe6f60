//! The shortcut against the general walk: for every body, `classify` and `classify_with` answer
//! exactly what they answer with the shortcut off (`Scanner::without_shortcut`), whatever the
//! limit and the policy, and whatever the same scanner classified before.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;

use super::super::{Envelope, Policy, Scanner};
use super::{recognise, TAIL};

/// `("sensors.temp", {"i": 1, "v": 21.5})` as `Connection.send` writes it (protocol 4).
const SMALL: &[u8] = b"\x80\x04\x95)\x00\x00\x00\x00\x00\x00\x00\x8c\x0csensors.temp\x94}\x94(\x8c\x01i\x94K\x01\x8c\x01v\x94G@5\x80\x00\x00\x00\x00\x00u\x86\x94.";

/// Limits around the ones the head and tail need (2 for the head, memo + 2 for the tail).
const LIMITS: [usize; 9] = [0, 1, 2, 3, 4, 5, 6, 8, Scanner::DEFAULT_LIMIT];

fn policies() -> Vec<Policy> {
    vec![
        Policy::data_only(Vec::<String>::new()).unwrap(),
        Policy::data_only(["datetime.date", "os.system"]).unwrap(),
    ]
}

/// The common shape around `topic` and `payload`, with a correct FRAME length.
fn shaped(proto: u8, topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = vec![0x80, proto, 0x95];
    body.extend_from_slice(&[0; 8]);
    body.extend_from_slice(&[0x8c, topic.len() as u8]);
    body.extend_from_slice(topic);
    body.push(0x94);
    body.extend_from_slice(payload);
    body.extend_from_slice(&TAIL);
    let frame = (body.len() - 11) as u64;
    body[3..11].copy_from_slice(&frame.to_le_bytes());
    body
}

/// Asserts that `body` classifies the same with and without the shortcut, at every limit and
/// under every policy, with fresh scanners and with `warm` ones that saw other frames first.
fn same(body: &[u8], warm: &mut (Scanner, Scanner), policies: &[Policy]) {
    for limit in LIMITS {
        let mut fast = Scanner::with_limit(limit);
        let mut slow = Scanner::with_limit(limit).without_shortcut();
        assert_eq!(
            fast.classify(body),
            slow.classify(body),
            "limit {limit}: {body:x?}"
        );
        for policy in policies {
            assert_eq!(
                fast.classify_with(body, policy),
                slow.classify_with(body, policy),
                "limit {limit}: {body:x?}"
            );
        }
    }
    let (fast, slow) = warm;
    assert_eq!(fast.classify(body), slow.classify(body), "{body:x?}");
    for policy in policies {
        assert_eq!(
            fast.classify_with(body, policy),
            slow.classify_with(body, policy),
            "{body:x?}"
        );
    }
}

fn warm() -> (Scanner, Scanner) {
    (Scanner::default(), Scanner::default().without_shortcut())
}

#[test]
fn the_benchmarked_publish_takes_the_shortcut_to_the_same_answer() {
    let shape = recognise(SMALL).expect("the common shape");
    assert_eq!(shape.topic, "sensors.temp");
    assert_eq!(
        Scanner::default().classify(SMALL),
        Envelope::Publish {
            topic: "sensors.temp".into()
        }
    );
    same(SMALL, &mut warm(), &policies());
}

#[test]
fn payloads_that_reach_the_topic_or_stop_early_answer_as_the_general_walk_does() {
    let policies = policies();
    let mut warm = warm();
    let payloads: [&[u8]; 14] = [
        b"h\x00",                          // the topic again, from the memo: ("t", "t")
        b"0h\x00K\x01",                    // the topic popped, then fetched back: still a publish
        b"0K\x01K\x02",                    // the topic popped and replaced: not a str
        b"0\x8c\x01uK\x01",                // replaced by another str: a publish to "u"
        b"K\x01.",                         // STOP inside: the int is the whole pickle
        b".",                              // STOP at once: the topic is the whole pickle
        b"(K\x01",                         // a mark fences the payload from the topic
        b"(K\x01K\x02",                    // ... and is left open
        b"K\x01q\x00",                     // memo 0 overwritten; the tail's MEMOIZE reuses index 1
        b"K\x01q\x05",                     // a sparse memo index
        b"0",                              // the payload pops the topic: underflow at TUPLE2
        b"",                               // no payload at all
        b"\x8c\x02os\x8c\x06system\x93)R", // an import, judged under the policy
        b"\x82\x01",                       // an extension, refused under any policy
    ];
    for topic in [&b"t"[..], b"sensors.temp"] {
        for payload in payloads {
            for proto in [2, 3, 4, 5, 6] {
                same(&shaped(proto, topic, payload), &mut warm, &policies);
            }
        }
    }
}

#[test]
fn topics_the_shortcut_does_not_take_are_judged_by_the_general_way() {
    let policies = policies();
    let mut warm = warm();
    let long = "a".repeat(255);
    let too_many = ["a"; 17].join(".");
    let enough = ["a"; 16].join(".");
    let topics: [&[u8]; 24] = [
        b"",
        b"a..b",
        b".a",
        b"a.",
        b".",
        b"a b",
        b"a\tb",
        b"a\x0bb",
        b"a\x01b",
        b"a*",
        b"a.>",
        b"$sub",
        b"$ping",
        b"$metrics",
        b"$hello",
        b"$nope",
        b"close",
        b"caf\xc3\xa9",
        b"\xff\xfe",
        b"a\xc3",
        b"a\x7fb",
        long.as_bytes(),
        too_many.as_bytes(),
        enough.as_bytes(),
    ];
    for topic in topics {
        for payload in [&b"K\x01"[..], b"\x8c\x01a", b"}", b"\x8c\x01a\x8c\x01g\x86"] {
            same(&shaped(4, topic, payload), &mut warm, &policies);
        }
    }
}

#[test]
fn bad_lengths_in_the_head_are_judged_by_the_general_way() {
    let policies = policies();
    let mut warm = warm();
    let good = shaped(4, b"t", b"K\x01");
    for frame in [
        0,
        1,
        good.len() as u64 - 11,
        good.len() as u64 - 10,
        1 << 40,
        u64::MAX,
    ] {
        let mut body = good.clone();
        body[3..11].copy_from_slice(&frame.to_le_bytes());
        same(&body, &mut warm, &policies);
    }
    for n in [0, 2, 3, 6, 7, 8, 200, 255] {
        let mut body = good.clone();
        body[12] = n;
        same(&body, &mut warm, &policies);
    }
    for cut in 0..=good.len() {
        same(&good[..cut], &mut warm, &policies);
    }
}

/// Opcodes, with their arguments, that payloads are made of: values, marks, stack and memo
/// moves, STOP, imports and calls, nested FRAME and PROTO, huge lengths.
fn snippet() -> impl Strategy<Value = Vec<u8>> {
    let pieces: Vec<&'static [u8]> = vec![
        b"K\x01",
        b"N",
        b"\x88",
        b"}",
        b"]",
        b")",
        b"\x8f",
        b"\x94",
        b"(",
        b"0",
        b"1",
        b"2",
        b".",
        b"h\x00",
        b"h\x01",
        b"h\x02",
        b"q\x00",
        b"q\x01",
        b"q\x07",
        b"p0\n",
        b"g0\n",
        b"j\x00\x00\x00\x00",
        b"r\x00\x00\x00\x00",
        b"\x85",
        b"\x86",
        b"\x87",
        b"t",
        b"l",
        b"d",
        b"u",
        b"s",
        b"a",
        b"e",
        b"\x90",
        b"\x91",
        b"\x8c\x01i",
        b"\x8c\x01t",
        b"\x8c\x02a.",
        b"X\x01\x00\x00\x00t",
        b"Vt\n",
        b"C\x02ab",
        b"G@5\x80\x00\x00\x00\x00\x00",
        b"\x8c\x08datetime\x8c\x04date\x93",
        b"\x8c\x02os\x8c\x06system\x93",
        b"cos\nsystem\n",
        b"R",
        b"b",
        b"\x81",
        b"\x82\x01",
        b"Q",
        b"o",
        b"\x95\x00\x00\x00\x00\x00\x00\x00\x00",
        b"\x95\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x80\x02",
        b"\x80\x09",
        b"\x8c\xff",
        b"\x8e\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x8d\x01\x00\x00\x00\x00\x00\x00\x00t",
        b"\x97",
        b"\x98",
        b"\xff",
    ];
    prop::sample::select(pieces).prop_map(<[u8]>::to_vec)
}

fn topic_bytes() -> impl Strategy<Value = Vec<u8>> {
    let named: Vec<&'static [u8]> = vec![
        b"t",
        b"sensors.temp",
        b"a.b.c",
        b"a..b",
        b".a",
        b"a.",
        b"",
        b"$sub",
        b"$ping",
        b"$hello",
        b"$metrics",
        b"close",
        b"a b",
        b"a*",
        b"a.>",
        b"caf\xc3\xa9",
        b"\xff",
    ];
    prop_oneof![
        3 => prop::sample::select(named).prop_map(<[u8]>::to_vec),
        1 => prop::collection::vec(any::<u8>(), 0..20),
        1 => prop::collection::vec(prop::sample::select(b"ab.$*> \x80".to_vec()), 0..20),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn shaped_pickles_and_their_mutations_classify_as_the_general_walk_does(
        proto in prop_oneof![4 => 4u8..=5, 1 => any::<u8>()],
        topic in topic_bytes(),
        payload in prop::collection::vec(snippet(), 0..8),
        frame in prop::option::of(any::<u64>()),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut body = shaped(proto, &topic, &payload.concat());
        if let Some(frame) = frame {
            body[3..11].copy_from_slice(&frame.to_le_bytes());
        }
        for (at, byte) in flips {
            let at = at.index(body.len());
            body[at] = byte;
        }
        if let Some(cut) = cut {
            body.truncate(cut.index(body.len() + 1));
        }
        same(&body, &mut warm(), &policies());
    }

    #[test]
    fn the_benchmarked_publish_mutated_classifies_as_the_general_walk_does(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut body = SMALL.to_vec();
        for (at, byte) in flips {
            let at = at.index(body.len());
            body[at] = byte;
        }
        body.truncate(cut.index(body.len() + 1));
        same(&body, &mut warm(), &policies());
    }
}
