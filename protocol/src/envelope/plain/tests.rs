use super::walk::{decimal_to_f64, float_text, le_to_f64};
use super::*;

fn decode(body: &[u8]) -> Result<Plain<'_>, PlainError> {
    Plain::decode(body, 1 << 20)
}

fn strs<'p, 'a>(p: &'p Plain<'a>, v: Value<'a>) -> Vec<&'p str> {
    p.items(v).map(|x| p.str(x).unwrap_or("?")).collect()
}

#[test]
fn a_dict_memoized_empty_and_filled_later_reads_filled_from_every_reference() {
    // (d, d) where d = {"a": "b"}, protocol 2: EMPTY_DICT BINPUT 0, SETITEM, then BINGET 0.
    let body = b"\x80\x02}q\x00X\x01\x00\x00\x00aX\x01\x00\x00\x00bsh\x00\x86.";
    let p = decode(body).expect("decodes");
    let items: Vec<Value<'_>> = p.items(p.top()).collect();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0], items[1], "one dict, referenced twice");
    assert_eq!(p.container(items[0]), Some((Shape::Dict, 2)));
    assert_eq!(strs(&p, items[1]), ["a", "b"]);
}

#[test]
fn appends_in_several_runs_read_in_order() {
    // [1, 2, 3] built as EMPTY_LIST, APPEND 1, MARK 2 3 APPENDS, then an empty APPENDS.
    let body = b"\x80\x02]K\x01a(K\x02K\x03e(e.";
    let p = decode(body).expect("decodes");
    let got: Vec<Value<'_>> = p.items(p.top()).collect();
    assert_eq!(got, [Value::Int(1), Value::Int(2), Value::Int(3)]);
    assert_eq!(p.container(p.top()), Some((Shape::List, 3)));
}

#[test]
fn protocol_zero_text_and_numbers_decode() {
    // ("a\\u00e4", 7, 2**70, 1.5, True) at protocol 0.
    let body = b"(Va\\u00e4\np0\nI7\nL1180591620717411303424L\nF1.5\nI01\ntp1\n.";
    let p = decode(body).expect("decodes");
    let got: Vec<Value<'_>> = p.items(p.top()).collect();
    assert_eq!(p.str(got[0]), Some("aä"));
    assert_eq!(got[1], Value::Int(7));
    assert_eq!(got[2], Value::BigInt(2f64.powi(70)));
    assert_eq!(got[3], Value::Float(1.5));
    assert_eq!(got[4], Value::Bool(true));
}

#[test]
fn a_list_holding_itself_is_finite_to_walk() {
    // l = []; l.append(l), protocol 2.
    let body = b"\x80\x02]q\x00h\x00a.";
    let p = decode(body).expect("decodes");
    let items: Vec<Value<'_>> = p.items(p.top()).collect();
    assert_eq!(items, [p.top()]);
}

#[test]
fn opcodes_that_import_or_call_stop_the_walk() {
    for body in [
        &b"\x80\x02cbuiltins\nint\n."[..],
        b"\x80\x04\x8c\x01a\x8c\x01b\x93.",
        b"\x80\x02N)R.",
        b"\x80\x02}}b.",
        b"(ibuiltins\nint\n.",
        b"\x80\x02N)\x81.",
        b"\x80\x02\x82\x01.",
        b"Pid\n.",
    ] {
        assert_eq!(decode(body).err(), Some(PlainError::Code), "{body:?}");
    }
}

#[test]
fn what_cpython_would_refuse_is_invalid() {
    for body in [
        &b""[..],
        b".",
        b"\x80\x02N",
        b"\x80\x02Na.",
        b"\x80\x02}(Ne.",
        b"\x80\x02}]Ns.",
        b"\x80\x02(]d.",
        b"\x80\x02h\x00.",
        b"\x80\x02Nr\x00\x10\x00\x00.",
        b"\x80\x09N.",
        b"\x80\x05\x97.",
        b"\x80\x02N(\x86.",
        b"\x80\x02\xff.",
    ] {
        assert!(
            matches!(decode(body), Err(PlainError::Invalid(_))),
            "{body:?}: {:?}",
            decode(body)
        );
    }
}

#[test]
fn the_entry_limit_and_the_body_bound_the_walk() {
    let mut body = b"\x80\x02".to_vec();
    body.extend(std::iter::repeat_n(b')', 1000));
    body.push(b'.');
    assert!(Plain::decode(&body, 1000).is_err());
    assert!(Plain::decode(&body, 3000).is_ok());
    // Memo slack cannot grow the memo past what the body allows.
    let mut sparse = b"\x80\x02N".to_vec();
    for i in 0..200u32 {
        sparse.push(b'r');
        sparse.extend_from_slice(&(i * 1024).to_le_bytes());
    }
    sparse.push(b'.');
    assert!(matches!(
        Plain::decode(&sparse, usize::MAX),
        Err(PlainError::Invalid(m)) if m.contains("too complex")
    ));
}

#[test]
fn big_ints_round_as_python_float_does() {
    assert_eq!(le_to_f64(b"\xff"), -1.0);
    assert_eq!(le_to_f64(&[0, 0, 0, 0, 0, 0, 0, 0, 0x40]), 2f64.powi(70));
    assert_eq!(le_to_f64(&[0, 0, 0, 0, 0, 0, 0, 0, 0xc0]), -(2f64.powi(70)));
    // Sign-extension bytes CPython would not write change nothing.
    assert_eq!(le_to_f64(&[5, 0, 0, 0, 0, 0, 0, 0, 0, 0]), 5.0);
    assert_eq!(le_to_f64(&[0xfb, 0xff, 0xff]), -5.0);
    let mut huge = vec![0u8; 200];
    huge.push(1);
    assert_eq!(le_to_f64(&huge), f64::INFINITY);
    huge.push(0xff);
    assert_eq!(le_to_f64(&huge), f64::NEG_INFINITY);
    assert_eq!(decimal_to_f64(b"-1180591620717411303424"), -(2f64.powi(70)));
    // 2**53 + 1 rounds to even, as float(2**53 + 1) does.
    assert_eq!(decimal_to_f64(b"9007199254740993"), 9007199254740992.0);
}

#[test]
fn float_text_reads_what_repr_writes() {
    assert_eq!(float_text(b"1e+100"), Some(1e100));
    assert_eq!(float_text(b"inf"), Some(f64::INFINITY));
    assert_eq!(float_text(b"-inf"), Some(f64::NEG_INFINITY));
    assert!(float_text(b"nan").is_some_and(f64::is_nan));
    assert_eq!(
        float_text(b"-0.0").map(f64::to_bits),
        Some((-0.0f64).to_bits())
    );
    assert_eq!(float_text(b"1x"), None);
}
