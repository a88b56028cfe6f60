//! Arbitrary bytes as a frame body: the scanner never panics and never reads past the body; and
//! the payload policy is safe.
//!
//! Invariant of the policy (`payloads = "data"`): for every input and each of the allow-lists
//! below, when `classify_with` accepts a publish, an independent walker (`walker.rs`: its own
//! opcode table, stack, marks and memo) follows the same pickle to STOP, and every import it
//! finds is allowed — each GLOBAL, INST and STACK_GLOBAL names an allowed `module.qualname`
//! (after the protocol-2 mapping, `Policy::judge`), every STACK_GLOBAL consumed two strings,
//! every OBJ instantiated an imported global, and there is no EXT1/2/4, PERSID or BINPERSID.
#![no_main]

mod walker;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
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

fuzz_target!(|data: &[u8]| {
    let mut scanner = Scanner::with_limit(1 << 16);
    match scanner.classify(data) {
        Envelope::Publish { topic } => assert!(mphub_protocol::topic::validate_topic(&topic).is_ok()),
        Envelope::Subscribe(i) | Envelope::Unsubscribe(i) => {
            assert!(mphub_protocol::topic::validate_pattern(&i.pattern).is_ok())
        }
        _ => {}
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
