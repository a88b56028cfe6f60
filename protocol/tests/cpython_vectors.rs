//! Every vector that real CPython 3.11 and 3.13 produced (see `vectors/generate.py`): legal
//! pickles classify as what they are, broken ones are `Invalid` with a reason, `$metrics`
//! batches decode to the ops Python meant whatever they share, and every handshake transcript
//! replays byte for byte in both roles.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use mphub_protocol::envelope::BigIntText;
use mphub_protocol::handshake::{Challenge, Digest, Handshake, CHALLENGE};
use mphub_protocol::metrics::{Batch, MetricOp};
use mphub_protocol::{BatchError, Envelope, OpError, Policy, Refusal, Scanner, Token};
use serde_json::Value;

fn vector_files() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("vectors folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let names: Vec<_> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&"cpython-3.11.json".into()),
        "missing 3.11 vectors: {names:?}"
    );
    assert!(
        names.contains(&"cpython-3.13.json".into()),
        "missing 3.13 vectors: {names:?}"
    );
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read vectors");
            (
                p.display().to_string(),
                serde_json::from_str(&text).expect("parse vectors"),
            )
        })
        .collect()
}

fn hex(s: &Value) -> Vec<u8> {
    let s = s.as_str().expect("hex string");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn int_text(t: &Token<'_>) -> Option<String> {
    match t {
        Token::Int(n) => Some(n.to_string()),
        Token::BigInt(BigIntText::Decimal(d)) => Some(d.trim_start_matches('+').to_string()),
        Token::BigInt(BigIntText::LeBytes(b)) => Some(num_bigint_from_le(b)),
        _ => None,
    }
}

/// Decimal text of a little-endian two's-complement integer (test helper, schoolbook).
fn num_bigint_from_le(bytes: &[u8]) -> String {
    let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
    let mut mag: Vec<u8> = bytes.to_vec();
    if negative {
        // Two's complement negate.
        let mut carry = 1u16;
        for b in mag.iter_mut() {
            let v = (!*b) as u16 + carry;
            *b = v as u8;
            carry = v >> 8;
        }
    }
    // Repeated division by 10 over big-endian digits.
    let mut be: Vec<u8> = mag.into_iter().rev().collect();
    let mut digits = Vec::new();
    while be.iter().any(|&b| b != 0) {
        let mut rem = 0u16;
        for b in be.iter_mut() {
            let cur = (rem << 8) | *b as u16;
            *b = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    if digits.is_empty() {
        digits.push(b'0');
    }
    if negative {
        digits.push(b'-');
    }
    digits.reverse();
    String::from_utf8(digits).unwrap()
}

fn check_token(name: &str, got: &Token<'_>, want: &Value) {
    let ty = want["type"].as_str().unwrap();
    match ty {
        "none" => assert_eq!(got, &Token::None, "{name}"),
        "bool" => assert_eq!(
            got,
            &Token::Bool(want["value"].as_bool().unwrap()),
            "{name}"
        ),
        "int" => assert_eq!(
            int_text(got).as_deref(),
            want["value"].as_str(),
            "{name}: {got:?}"
        ),
        "str" => assert!(
            matches!(got, Token::Str(s) if s == want["value"].as_str().unwrap()),
            "{name}: {got:?}"
        ),
        "bytes" => assert_eq!(got, &Token::Bytes(&hex(&want["value"])), "{name}"),
        other => panic!("{name}: unknown token type {other}"),
    }
}

#[test]
fn every_cpython_pickle_classifies_as_what_it_is() {
    let mut scanner = Scanner::default();
    let mut checked = 0;
    for (file, doc) in vector_files() {
        for v in doc["pickles"].as_array().unwrap() {
            let name = format!("{file}: {}", v["name"].as_str().unwrap());
            let body = hex(&v["hex"]);
            let got = scanner.classify(&body);
            let want = &v["expect"];
            match (want["kind"].as_str().unwrap(), &got) {
                ("publish", Envelope::Publish { topic }) => {
                    assert_eq!(topic, want["topic"].as_str().unwrap(), "{name}")
                }
                ("sub", Envelope::Subscribe(i)) | ("unsub", Envelope::Unsubscribe(i)) => {
                    assert_eq!(i.pattern, want["pattern"].as_str().unwrap(), "{name}");
                    assert_eq!(i.group.as_deref(), want["group"].as_str(), "{name}");
                }
                ("ping", Envelope::Ping(t)) => check_token(&name, t, &want["token"]),
                ("close", Envelope::Close) => {}
                ("metrics", Envelope::Metrics { has_code }) => {
                    assert_eq!(Some(*has_code), want["has_code"].as_bool(), "{name}")
                }
                ("invalid", Envelope::Invalid(reason)) => {
                    assert!(reason.len() > 10, "{name}: reason too thin: {reason:?}")
                }
                (kind, got) => panic!("{name}: expected {kind}, got {got:?}"),
            }
            checked += 1;
        }
    }
    assert!(checked > 900, "only {checked} vectors");
}

/// The common-publish shortcut changes no answer: every vector body (pickles, `$metrics`
/// batches, policy cases) classifies the same with it and without it, with and without a policy.
#[test]
fn every_cpython_vector_classifies_the_same_without_the_shortcut() {
    let mut fast = Scanner::default();
    let mut slow = Scanner::default().without_shortcut();
    let mut checked = 0;
    for (file, doc) in vector_files() {
        for section in ["pickles", "metrics", "policy"] {
            for v in doc[section].as_array().unwrap() {
                let name = format!("{file}: {section} {}", v["name"].as_str().unwrap());
                let body = hex(&v["hex"]);
                assert_eq!(fast.classify(&body), slow.classify(&body), "{name}");
                let imports = v.get("imports").map(strings).unwrap_or_default();
                for policy in [policy_of([]), policy_of(imports.iter().map(String::as_str))] {
                    assert_eq!(
                        fast.classify_with(&body, &policy),
                        slow.classify_with(&body, &policy),
                        "{name}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 1000, "only {checked} vectors");
}

/// A number as the vectors write it (Python's `repr(float)`), compared bit for bit.
fn bits(v: &Value) -> u64 {
    v.as_str().unwrap().parse::<f64>().unwrap().to_bits()
}

fn check_op(name: &str, got: &Result<MetricOp<'_>, OpError>, want: &Value) {
    match (want["error"].as_str(), got) {
        (Some("shape"), Err(OpError::Shape(_))) | (Some("value"), Err(OpError::Value(_))) => return,
        (Some(kind), got) => panic!("{name}: expected a {kind} error, got {got:?}"),
        (None, Err(e)) => panic!("{name}: {e}"),
        (None, Ok(_)) => {}
    }
    let Ok(op) = got else { unreachable!() };
    assert_eq!(op.verb().name(), want["op"], "{name}");
    assert_eq!(op.name(), want["name"], "{name}");
    match op {
        MetricOp::Declare {
            kind,
            help,
            labels,
            buckets,
            mode,
            ..
        } => {
            assert_eq!(kind.name(), want["kind"], "{name}");
            assert_eq!(help, want["help"].as_str().unwrap(), "{name}");
            let want_labels: Vec<&str> = want["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap())
                .collect();
            assert_eq!(labels, &want_labels, "{name}");
            let want_buckets = want["buckets"]
                .as_array()
                .map(|b| b.iter().map(bits).collect::<Vec<_>>());
            let got_buckets = buckets
                .as_ref()
                .map(|b| b.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
            assert_eq!(got_buckets, want_buckets, "{name}");
            assert_eq!(mode.map(|m| m.name()), want["mode"].as_str(), "{name}");
        }
        MetricOp::Inc {
            labels, amount: x, ..
        }
        | MetricOp::Dec {
            labels, amount: x, ..
        }
        | MetricOp::Set {
            labels, value: x, ..
        }
        | MetricOp::Observe {
            labels, value: x, ..
        } => {
            let want_labels: Vec<(&str, &str)> = want["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_str().unwrap(), p[1].as_str().unwrap()))
                .collect();
            let got_labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (&**k, &**v)).collect();
            assert_eq!(got_labels, want_labels, "{name}");
            assert_eq!(x.to_bits(), bits(&want["value"]), "{name}: {x}");
        }
    }
}

#[test]
fn every_cpython_metrics_batch_decodes_to_the_ops_python_meant() {
    let mut scanner = Scanner::default();
    let mut checked = 0;
    for (file, doc) in vector_files() {
        for v in doc["metrics"].as_array().unwrap() {
            let name = format!("{file}: {}", v["name"].as_str().unwrap());
            let body = hex(&v["hex"]);
            let has_code = v["has_code"].as_bool().unwrap();
            assert_eq!(
                scanner.classify(&body),
                Envelope::Metrics { has_code },
                "{name}"
            );
            let want = &v["expect"];
            let batch = match (Batch::decode(&body), want["error"].as_str()) {
                (Ok(b), None) => b,
                (Err(BatchError::Code), Some("code"))
                | (Err(BatchError::Decode(_)), Some("decode"))
                | (Err(BatchError::NotAList(_)), Some("not_a_list")) => {
                    checked += 1;
                    continue;
                }
                (got, want) => panic!("{name}: expected {want:?}, got {got:?}"),
            };
            let want_ops = want["ops"].as_array().unwrap();
            assert_eq!(batch.len(), want_ops.len(), "{name}");
            let got: Vec<_> = batch.ops().collect();
            assert_eq!(got.len(), want_ops.len(), "{name}");
            for (i, (g, w)) in got.iter().zip(want_ops).enumerate() {
                check_op(&format!("{name} op {i}"), g, w);
            }
            checked += 1;
        }
    }
    assert!(checked >= 150, "only {checked} metrics vectors");
}

fn challenge_of(frame: &[u8]) -> Challenge {
    let message = &frame[CHALLENGE.len()..];
    if message.len() == 20 {
        return Challenge::Legacy(message.try_into().unwrap());
    }
    let close = message.iter().position(|&b| b == b'}').unwrap();
    let digest = Digest::from_name(&message[1..close]).unwrap();
    Challenge::Modern(digest, message[close + 1..].try_into().unwrap())
}

/// Replays one side: `ours` are the frames that side sent, `theirs` what it received.
fn replay(name: &str, mut hs: Handshake, frames: &[(String, Vec<u8>)], ours: &str, ok: bool) {
    let mut failed = false;
    for (dir, bytes) in frames {
        if dir == ours {
            assert_eq!(
                hs.transmit().as_deref(),
                Some(&bytes[..]),
                "{name}: frame we send"
            );
        } else if hs.receive(bytes).is_err() {
            failed = true;
        }
    }
    if ok {
        assert!(hs.is_done() && !failed, "{name}: should finish");
    } else {
        // The failing side sends #FAILURE#, recorded as the last frame.
        assert!(!hs.is_done(), "{name}: must not finish");
    }
}

#[test]
fn every_cpython_handshake_replays_in_both_roles() {
    let mut replayed = 0;
    for (file, doc) in vector_files() {
        for t in doc["handshakes"].as_array().unwrap() {
            let name = format!("{file}: {}", t["name"].as_str().unwrap());
            let key = hex(&t["authkey"]);
            let client_key = hex(&t["client_key"]);
            let ok = t["ok"].as_bool().unwrap();
            let frames: Vec<(String, Vec<u8>)> = t["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| (f[0].as_str().unwrap().to_string(), hex(&f[1])))
                .collect();
            // Listener role: we are the side that recorded ("send" is ours).
            let listener = Handshake::listener(&key, challenge_of(&frames[0].1));
            replay(&format!("{name} (listener)"), listener, &frames, "send", ok);
            // Client role: "recv" frames are ours; our challenge is the 4th frame when present.
            // A 3.11 client answers a modern challenge with raw MD5; ours answers in kind, so
            // only transcripts whose client speaks like ours replay in the client role.
            let legacy_client = frames
                .get(3)
                .is_some_and(|f| f.1.len() == CHALLENGE.len() + 20);
            let modern_listener = frames[0].1.len() > CHALLENGE.len() + 20;
            if ok && !(legacy_client && modern_listener) {
                let client = Handshake::client(&client_key, challenge_of(&frames[3].1));
                replay(&format!("{name} (client)"), client, &frames, "recv", ok);
            }
            replayed += 1;
        }
    }
    assert_eq!(replayed, 8);
}

/// `allow` as a policy.
fn policy_of<'a>(allow: impl IntoIterator<Item = &'a str>) -> Policy {
    Policy::data_only(allow).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// Every policy vector: what CPython's own Unpickler imports while loading it (recorded by
/// `vectors/recorder.py` without importing anything) against what the scanner's policy says.
/// With exactly those globals allowed the publish passes (unless it holds an extension code, a
/// persistent id, an OBJ of something not imported, or a STACK_GLOBAL that CPython refuses for
/// not being given strings); with any one of them left out it is refused naming that one.
#[test]
fn the_payload_policy_refuses_exactly_what_cpython_would_import_outside_the_list() {
    let mut scanner = Scanner::default();
    let mut checked = 0;
    for (file, doc) in vector_files() {
        for v in doc["policy"].as_array().unwrap() {
            let name = format!("{file}: {}", v["name"].as_str().unwrap());
            let body = hex(&v["hex"]);
            let imports = strings(&v["imports"]);
            let extensions: Vec<i64> = v["extensions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_i64().unwrap())
                .collect();
            let error = v["error"].as_str().unwrap_or("");
            let all = policy_of(imports.iter().map(String::as_str));
            let expected = if let Some(&code) = extensions.first() {
                Some(Refusal::Extension(code))
            } else if v["persistent_ids"].as_u64().unwrap() > 0 {
                Some(Refusal::PersistentId)
            } else if v["obj_non_global"].as_bool().unwrap() {
                Some(Refusal::ObjClass)
            } else if error.contains("STACK_GLOBAL requires str") {
                Some(Refusal::ComputedGlobal)
            } else {
                assert_eq!(error, "", "{name}: CPython could not load it");
                None
            };
            match (scanner.classify_with(&body, &all), &expected) {
                (Ok(Envelope::Publish { topic }), None) => assert_eq!(topic, "t", "{name}"),
                (Err(refused), Some(want)) => {
                    assert_eq!(&refused.reason, want, "{name}");
                    assert_eq!(refused.topic, "t", "{name}");
                }
                (got, _) => panic!("{name}: expected {expected:?}, got {got:?}"),
            }
            if expected.is_none() {
                for left_out in &imports {
                    let fewer = policy_of(
                        imports
                            .iter()
                            .filter(|g| *g != left_out)
                            .map(String::as_str),
                    );
                    let got = scanner.classify_with(&body, &fewer).map_err(|r| r.reason);
                    assert_eq!(
                        got,
                        Err(Refusal::Global(left_out.clone())),
                        "{name}: without {left_out}"
                    );
                }
            }
            // Without a policy, the same frame is routed as before.
            assert!(
                matches!(scanner.classify(&body), Envelope::Publish { .. }),
                "{name}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 200, "only {checked} policy vectors");
}

/// Our copy of `_compat_pickle`'s tables holds each CPython's own, entry for entry.
#[test]
fn the_protocol_2_name_mapping_is_each_cpythons_own() {
    for (file, doc) in vector_files() {
        let tables = &doc["compat_pickle"];
        let policy = policy_of(["builtins.set"]);
        for (module, mapped) in tables["import_mapping"].as_object().unwrap() {
            let name = "set";
            let want = format!("{}.{name}", mapped.as_str().unwrap());
            // Judge `module.name` at protocol 2 against an empty list: the refusal names the
            // mapped import (a whole-pair entry may take precedence, as in CPython).
            let pair_entry = tables["name_mapping"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e[0][0] == module.as_str() && e[0][1] == name);
            if pair_entry {
                continue;
            }
            let got = policy_of([]).judge(module, name, 2);
            assert_eq!(got, Err(Refusal::Global(want)), "{file}: {module}");
        }
        for entry in tables["name_mapping"].as_array().unwrap() {
            let (m, n) = (entry[0][0].as_str().unwrap(), entry[0][1].as_str().unwrap());
            let want = format!(
                "{}.{}",
                entry[1][0].as_str().unwrap(),
                entry[1][1].as_str().unwrap()
            );
            assert_eq!(
                policy_of([]).judge(m, n, 2),
                Err(Refusal::Global(want)),
                "{file}: {m}.{n}"
            );
        }
        assert!(policy.judge("__builtin__", "set", 2).is_ok());
    }
}
