//! Property tests: framing is indifferent to how bytes arrive; the scanner never panics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::BytesMut;
use mphub_protocol::{frame, Scanner};
use proptest::prelude::*;

fn decode_all(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        while let Some(f) = frame::decode(&mut buf, 1 << 20).unwrap() {
            out.push(f.body().to_vec());
        }
    }
    assert!(buf.is_empty());
    out
}

proptest! {
    #[test]
    fn a_frame_stream_cut_anywhere_decodes_the_same(
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let wire: Vec<u8> = bodies.iter().flat_map(|b| frame::encode(b).to_vec()).collect();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.push(0);
        points.push(wire.len());
        points.sort_unstable();
        let chunks: Vec<&[u8]> = points.windows(2).map(|w| &wire[w[0]..w[1]]).collect();
        prop_assert_eq!(decode_all(&chunks), bodies);
    }

    #[test]
    fn every_single_cut_point_decodes_the_same(body in prop::collection::vec(any::<u8>(), 0..64)) {
        let wire = [frame::encode(&body).to_vec(), frame::encode(b"next").to_vec()].concat();
        for cut in 0..=wire.len() {
            let got = decode_all(&[&wire[..cut], &wire[cut..]]);
            prop_assert_eq!(got, vec![body.clone(), b"next".to_vec()]);
        }
    }

    #[test]
    fn the_scanner_never_panics_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut s = Scanner::default();
        let _ = s.classify(&data);
    }

    #[test]
    fn the_scanner_never_panics_on_mutated_pickles(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        // ("sensors.temp", {"i": 1, "v": 21.5}) as Connection.send writes it (protocol 4).
        let mut data = b"\x80\x04\x95)\x00\x00\x00\x00\x00\x00\x00\x8c\x0csensors.temp\x94}\x94(\x8c\x01i\x94K\x01\x8c\x01v\x94G@5\x80\x00\x00\x00\x00\x00u\x86\x94.".to_vec();
        for (i, b) in flips {
            let at = i.index(data.len());
            data[at] = b;
        }
        data.truncate(cut.index(data.len() + 1));
        let mut s = Scanner::default();
        let _ = s.classify(&data);
    }
}

/// Small patterns over a tiny alphabet, so that wildcards and literals meet often.
fn pattern() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(vec!["a", "b", "*"]), 1..4),
        prop::bool::ANY,
    )
        .prop_map(|(mut toks, gt)| {
            if gt {
                toks.push(">");
            }
            toks.join(".")
        })
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..6).prop_map(|t| t.join("."))
}

proptest! {
    #[test]
    fn a_covering_pattern_matches_every_topic_the_covered_one_does(
        g in pattern(), s in pattern(), topics in prop::collection::vec(topic(), 1..40),
    ) {
        use mphub_protocol::topic::{covers, matches};
        if covers(&g, &s) {
            for t in &topics {
                prop_assert!(!matches(&s, t) || matches(&g, t), "{g} covers {s} but not {t}");
            }
        }
    }

    #[test]
    fn overlapping_is_one_topic_matching_both(a in pattern(), b in pattern()) {
        use mphub_protocol::topic::{matches, overlaps};
        // Every topic of up to 5 tokens over a, b, c (the patterns' tokens plus one more).
        let mut found = false;
        let alphabet = ["a", "b", "c"];
        for len in 1..=5u32 {
            for n in 0..3usize.pow(len) {
                let t: Vec<&str> = (0..len).map(|i| alphabet[(n / 3usize.pow(i)) % 3]).collect();
                let t = t.join(".");
                found |= matches(&a, &t) && matches(&b, &t);
            }
        }
        prop_assert_eq!(overlaps(&a, &b), found, "{} and {}", a, b);
    }
}
