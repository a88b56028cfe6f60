//! Unit tests of the envelope beside the scanner: what CPython writes for each control message.

use super::*;

/// `pickle.dumps(("$hello", {"name": "w-1"}), protocol)` as CPython 3.11 writes it.
const HELLO: [(u8, &[u8]); 3] = [
    (0, b"(V$hello\np0\n(dp1\nVname\np2\nVw-1\np3\nstp4\n."),
    (
        2,
        b"\x80\x02X\x06\x00\x00\x00$helloq\x00}q\x01X\x04\x00\x00\x00nameq\x02X\x03\x00\x00\x00w-1q\x03s\x86q\x04.",
    ),
    (
        4,
        b"\x80\x04\x95\x1c\x00\x00\x00\x00\x00\x00\x00\x8c\x06$hello\x94}\x94\x8c\x04name\x94\x8c\x03w-1\x94s\x86\x94.",
    ),
];

#[test]
fn a_hello_with_a_dict_is_classified_at_every_protocol() {
    for (protocol, body) in HELLO {
        assert_eq!(
            classify(body),
            Envelope::Hello { has_code: false },
            "protocol {protocol}"
        );
    }
}

#[test]
fn a_hello_without_a_dict_is_refused_with_an_example() {
    // pickle.dumps(("$hello", "w"), 4)
    let body =
        b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x06$hello\x94\x8c\x01w\x94\x86\x94.";
    match classify(body) {
        Envelope::Invalid(reason) => {
            assert!(reason.contains("$hello takes a dict"), "{reason}");
            assert!(reason.contains("not a str"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}
