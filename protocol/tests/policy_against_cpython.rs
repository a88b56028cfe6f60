//! The payload policy against CPython's own Unpickler, on thousands of random pickles built to
//! trick it: strings moved through the memo, marks, DUP, POP of a mark, tuples that swallow the
//! strings seen last, OBJ and INST, protocol switches, extension codes and persistent ids.
//!
//! `vectors/recorder.py` loads each pickle with `pickle._Unpickler`, recording every
//! `find_class` call (after CPython's protocol-2 mapping) and importing nothing. Then, for a
//! random allow-list:
//! - **safe**: whenever the policy accepts a publish, everything CPython imported while loading
//!   it is on the list, and CPython met no extension code, persistent id or OBJ of a value that
//!   was not imported;
//! - **precise**: whenever CPython loads a pickle whole, the policy refuses it exactly when
//!   CPython imported something off the list, naming the first such import.
//!
//! `MPHUB_POLICY_CASES` (default 3000) and `MPHUB_POLICY_SEED` run more or other cases.
//! Uses `python3` (3.11) and the cached CPython 3.13 when present.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use mphub_protocol::{Envelope, Policy, Refusal, Scanner};
use serde_json::Value;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const STRINGS: &[&str] = &[
    "os",
    "system",
    "datetime",
    "date",
    "builtins",
    "set",
    "__builtin__",
    "copy_reg",
    "_reconstructor",
    "path.join",
    "os.path",
    "join",
    "eval",
    "t",
];

const PAIRS: &[(&str, &str)] = &[
    ("os", "system"),
    ("datetime", "date"),
    ("__builtin__", "set"),
    ("builtins", "set"),
    ("copy_reg", "_reconstructor"),
    ("os.path", "join"),
    ("os", "path.join"),
    ("__builtin__", "eval"),
    ("exceptions", "StandardError"),
    ("Queue", "Queue"),
];

/// What allow-lists are drawn from: the names above as CPython imports them, and some
/// Python 2 spellings that must not count.
const ALLOWABLE: &[&str] = &[
    "os.system",
    "datetime.date",
    "builtins.set",
    "__builtin__.set",
    "copyreg._reconstructor",
    "os.path.join",
    "builtins.eval",
    "builtins.Exception",
    "queue.Queue",
    "datetime.datetime",
    "system.os",
];

/// Builds one pickle of `("t", (...))`, tracking just enough (items above the current mark,
/// open marks, memo size) that most of them load.
fn random_pickle(rng: &mut Rng) -> Vec<u8> {
    let mut out = vec![0x80, rng.below(6) as u8];
    if rng.one_in(4) {
        out.clear(); // protocol 0/1 pickles have no PROTO opcode
    }
    out.extend(b"\x8c\x01t(");
    let mut depth = 0usize; // items above the innermost mark
    let mut marks: Vec<usize> = Vec::new(); // depth below each inner mark
    let mut memo = 0usize;
    let steps = 1 + rng.below(24);
    for _ in 0..steps {
        match rng.below(26) {
            0..=3 => {
                let s = rng.pick(STRINGS);
                match rng.below(3) {
                    0 => {
                        out.push(0x8c);
                        out.push(s.len() as u8);
                        out.extend(s.as_bytes());
                    }
                    1 => {
                        out.push(b'X');
                        out.extend((s.len() as u32).to_le_bytes());
                        out.extend(s.as_bytes());
                    }
                    _ => out.extend(format!("V{s}\n").as_bytes()),
                }
                depth += 1;
            }
            4 => {
                out.extend([b'K', rng.below(200) as u8]);
                depth += 1;
            }
            5 | 6 => {
                let (m, n) = rng.pick(PAIRS);
                out.extend(format!("c{m}\n{n}\n").as_bytes());
                depth += 1;
            }
            7 | 8 if depth >= 2 => {
                out.push(0x93);
                depth -= 1;
            }
            9 if !marks.is_empty() => {
                let (m, n) = rng.pick(PAIRS);
                out.extend(format!("i{m}\n{n}\n").as_bytes());
                depth = marks.pop().unwrap() + 1;
            }
            10 if !marks.is_empty() && depth >= 1 => {
                out.push(b'o');
                depth = marks.pop().unwrap() + 1;
            }
            11 => {
                out.push(b'(');
                marks.push(depth);
                depth = 0;
            }
            12 if depth >= 1 => {
                out.push(b'0');
                depth -= 1;
            }
            // POP with nothing above an inner mark pops the mark.
            12 if !marks.is_empty() => {
                out.push(b'0');
                depth = marks.pop().unwrap();
            }
            13 if !marks.is_empty() => {
                out.push(b'1');
                depth = marks.pop().unwrap();
            }
            14 if depth >= 1 => {
                out.push(b'2');
                depth += 1;
            }
            15 if depth >= 1 => {
                match rng.below(4) {
                    0 => out.push(0x94),
                    1 => out.extend([b'q', rng.below(memo + 1) as u8]),
                    2 => out.extend(format!("p{}\n", rng.below(memo + 1)).as_bytes()),
                    // A sparse index: the memo grows a hole.
                    _ => out.extend([b'q', (memo + 1) as u8]),
                }
                memo += 2;
            }
            16 if memo > 0 => {
                let i = rng.below(memo);
                if rng.one_in(2) {
                    out.extend([b'h', i as u8]);
                } else {
                    out.extend(format!("g{i}\n").as_bytes());
                }
                depth += 1;
            }
            17 if depth >= 1 => {
                let n = 1 + rng.below(depth.min(3));
                out.push(0x84 + n as u8);
                depth = depth - n + 1;
            }
            18 if !marks.is_empty() => {
                out.push(b't');
                depth = marks.pop().unwrap() + 1;
            }
            19 => {
                out.push(if rng.one_in(2) { b')' } else { b']' });
                depth += 1;
            }
            20 if depth >= 2 => {
                out.push(*rng.pick(b"Rb\x81a"));
                depth -= 1;
            }
            21 if rng.one_in(4) => {
                out.extend([0x82, 1 + rng.below(250) as u8]);
                depth += 1;
            }
            22 if depth >= 1 && rng.one_in(4) => out.push(b'Q'),
            23 if rng.one_in(3) => out.extend([0x80, rng.below(6) as u8]),
            _ => {}
        }
    }
    // Close the marks still open, then the outer one.
    out.extend(std::iter::repeat_n(b't', marks.len()));
    out.extend(b"t\x86.");
    out
}

fn pythons() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from("python3")];
    let py313 = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/cpython313/python3.13");
    if py313.exists() {
        out.push(py313);
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// CPython's record of each pickle (see `vectors/recorder.py`).
fn record(python: &PathBuf, pickles: &[Vec<u8>]) -> Vec<Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/recorder.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python");
    let mut stdin = child.stdin.take().unwrap();
    let input: String = pickles.iter().map(|p| hex(p) + "\n").collect();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[derive(Default, Debug)]
struct Tally {
    accepted: usize,
    refused: usize,
    refused_and_loaded: usize,
    accepted_and_loaded: usize,
    not_publishes: usize,
}

#[test]
fn the_policy_accepts_nothing_cpython_would_import_off_the_list_and_refuses_nothing_it_would_not() {
    let cases: usize = std::env::var("MPHUB_POLICY_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("MPHUB_POLICY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe);
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let pickles: Vec<Vec<u8>> = (0..cases).map(|_| random_pickle(&mut rng)).collect();
    let allows: Vec<Vec<&str>> = (0..cases)
        .map(|_| {
            ALLOWABLE
                .iter()
                .copied()
                .filter(|_| rng.one_in(2))
                .collect()
        })
        .collect();
    let mut scanner = Scanner::default();
    for python in pythons() {
        let records = record(&python, &pickles);
        assert_eq!(records.len(), cases);
        let mut tally = Tally::default();
        for ((body, allow), r) in pickles.iter().zip(&allows).zip(&records) {
            let what = format!(
                "{} seed {seed}: {} allowing {allow:?}: {r}",
                python.display(),
                hex(body)
            );
            let allowed: HashSet<&str> = allow.iter().copied().collect();
            let imports: Vec<&str> = r["imports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap())
                .collect();
            let extensions = !r["extensions"].as_array().unwrap().is_empty();
            let persistent = r["persistent_ids"].as_u64().unwrap() > 0;
            let obj_non_global = r["obj_non_global"].as_bool().unwrap();
            let loaded = r["error"].is_null();
            let policy = Policy::data_only(allow).unwrap();
            match scanner.classify_with(body, &policy) {
                Ok(Envelope::Publish { .. }) => {
                    tally.accepted += 1;
                    for g in &imports {
                        assert!(allowed.contains(g), "accepted an import of {g}: {what}");
                    }
                    assert!(
                        !extensions && !persistent && !obj_non_global,
                        "accepted: {what}"
                    );
                    if loaded {
                        tally.accepted_and_loaded += 1;
                    }
                }
                Err(refused) => {
                    tally.refused += 1;
                    if loaded && !extensions && !persistent && !obj_non_global {
                        tally.refused_and_loaded += 1;
                        let first_off = imports.iter().find(|g| !allowed.contains(*g));
                        assert_eq!(
                            Some(refused.reason.clone()),
                            first_off.map(|g| Refusal::Global(g.to_string())),
                            "{what}"
                        );
                    }
                }
                Ok(_) => tally.not_publishes += 1,
            }
        }
        eprintln!("{}: {tally:?}", python.display());
        // The generator must keep producing both outcomes on loadable pickles.
        assert!(
            tally.accepted_and_loaded > cases / 20 && tally.refused_and_loaded > cases / 20,
            "{tally:?}"
        );
    }
}
