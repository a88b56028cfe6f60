//! Arbitrary bytes as a frame body: the scanner never panics and never reads past the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mphub_protocol::{Envelope, Scanner};

fuzz_target!(|data: &[u8]| {
    let mut scanner = Scanner::with_limit(1 << 16);
    match scanner.classify(data) {
        Envelope::Publish { topic } => assert!(mphub_protocol::topic::validate_topic(&topic).is_ok()),
        Envelope::Subscribe(i) | Envelope::Unsubscribe(i) => {
            assert!(mphub_protocol::topic::validate_pattern(&i.pattern).is_ok())
        }
        _ => {}
    }
});
