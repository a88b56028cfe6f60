//! The broker's replies unpickle, in a real CPython, to exactly the tuples the protocol promises.
//! Uses `python3` (and the CPython 3.13 from `tests/python/fetch-cpython313.sh` when cached).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::borrow::Cow;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use mphub_protocol::envelope::BigIntText;
use mphub_protocol::{reply, Interest, Token};

fn pythons() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from("python3")];
    let py313 = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/cpython313/python3.13");
    if py313.exists() {
        out.push(py313);
    }
    out
}

/// Unpickles each frame body in Python and returns `repr()` of each, one per line.
fn python_reprs(python: &PathBuf, frames: &[bytes::Bytes]) -> Vec<String> {
    let script = "import sys, pickle, struct\n\
                  data = sys.stdin.buffer.read()\n\
                  i = 0\n\
                  while i < len(data):\n\
                  \x20   (n,) = struct.unpack('!i', data[i:i+4]); i += 4\n\
                  \x20   print(repr(pickle.loads(data[i:i+n]))); i += n\n";
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut stdin = child.stdin.take().unwrap();
    for f in frames {
        stdin.write_all(f).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn cpython_unpickles_every_reply_to_the_promised_tuple() {
    let sub = Interest {
        pattern: Cow::Borrowed("a.*"),
        group: None,
    };
    let grp = Interest {
        pattern: Cow::Borrowed("jobs.>"),
        group: Some(Cow::Borrowed("workers")),
    };
    let cases = vec![
        (reply::ok("$sub", &sub), "('$ok', ('$sub', 'a.*'))"),
        (
            reply::ok("$unsub", &grp),
            "('$ok', ('$unsub', ('jobs.>', 'workers')))",
        ),
        (reply::pong(&Token::None), "('$pong', None)"),
        (reply::pong(&Token::Bool(true)), "('$pong', True)"),
        (reply::pong(&Token::Int(-5)), "('$pong', -5)"),
        (
            reply::pong(&Token::BigInt(BigIntText::LeBytes(&[
                0, 0, 0, 0, 0, 0, 0, 0, 1,
            ]))),
            "('$pong', 18446744073709551616)",
        ),
        (
            reply::pong(&Token::Str(Cow::Borrowed("tök"))),
            "('$pong', 'tök')",
        ),
        (reply::pong(&Token::Bytes(b"\x00b")), "('$pong', b'\\x00b')"),
        (
            reply::error("topic \"a b\" contains whitespace"),
            "('$error', 'topic \"a b\" contains whitespace')",
        ),
    ];
    let frames: Vec<_> = cases.iter().map(|c| c.0.clone()).collect();
    for python in pythons() {
        let got = python_reprs(&python, &frames);
        let want: Vec<_> = cases.iter().map(|c| c.1.to_string()).collect();
        assert_eq!(got, want, "{}", python.display());
    }
}
