//! A second, deliberately plain pickle walker, written apart from the scanner, that lists what
//! a pickle imports. It follows `pickletools`' opcode table (argument formats and stack effects)
//! with owned values, a `HashMap` memo and no limits; it only tells strings, imported globals
//! and everything else apart.

use std::collections::HashMap;

/// Something the Unpickler would fetch from outside the pickle.
#[derive(Debug)]
pub enum Import {
    /// GLOBAL, INST or STACK_GLOBAL on two strings: module, name, and the protocol in effect.
    Named(String, String, u8),
    /// STACK_GLOBAL on values that are not both strings.
    Computed,
    /// EXT1/2/4 with this code (read in a failure's `Debug` output).
    Extension(#[allow(dead_code)] i64),
    /// PERSID or BINPERSID.
    Persistent,
    /// OBJ whose class is not an imported global.
    ObjOfNonGlobal,
}

#[derive(Clone, PartialEq)]
enum V {
    Str(String),
    Global,
    Other,
}

struct Walk<'a> {
    data: &'a [u8],
    at: usize,
    stack: Vec<V>,
    marks: Vec<usize>,
    memo: HashMap<u64, V>,
    proto: u8,
    found: Vec<Import>,
}

impl<'a> Walk<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.data.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn int<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn line(&mut self) -> Option<&'a [u8]> {
        let rest = self.data.get(self.at..)?;
        let n = rest.iter().position(|&b| b == b'\n')?;
        self.at += n + 1;
        Some(&rest[..n])
    }
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }
    fn pop(&mut self) -> Option<V> {
        if self.stack.len() <= self.floor() {
            return None;
        }
        self.stack.pop()
    }
    fn pop_n(&mut self, n: usize) -> Option<()> {
        (0..n).try_for_each(|_| self.pop().map(drop))
    }
    fn pop_mark(&mut self) -> Option<Vec<V>> {
        let m = self.marks.pop()?;
        Some(self.stack.split_off(m))
    }
    fn top(&self) -> Option<V> {
        (self.stack.len() > self.floor()).then(|| self.stack.last().cloned())?
    }
    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    /// One opcode; `Some(true)` at STOP.
    fn step(&mut self) -> Option<bool> {
        let op = *self.take(1)?.first()?;
        let push = match op {
            b'.' => {
                self.pop()?;
                return Some(true);
            }
            0x80 => {
                self.proto = self.int::<1>()?[0];
                (self.proto <= 5).then_some(())?;
                None
            }
            0x95 => {
                let n = u64::from_le_bytes(self.int()?);
                (n <= (self.data.len() - self.at) as u64).then_some(())?;
                None
            }
            b'(' => {
                self.marks.push(self.stack.len());
                None
            }
            b'0' => {
                if self.marks.last() == Some(&self.stack.len()) {
                    self.marks.pop();
                } else {
                    self.pop()?;
                }
                None
            }
            b'1' => {
                self.pop_mark()?;
                None
            }
            b'2' => Some(self.top()?),
            b'N' | 0x88 | 0x89 | b')' | b']' | b'}' | 0x8f => Some(V::Other),
            b'K' => self.take(1).map(|_| V::Other),
            b'M' => self.take(2).map(|_| V::Other),
            b'J' => self.take(4).map(|_| V::Other),
            b'G' => self.take(8).map(|_| V::Other),
            b'I' | b'L' | b'F' | b'S' => self.line().map(|_| V::Other),
            0x8a => {
                let n = self.int::<1>()?[0] as usize;
                self.take(n).map(|_| V::Other)
            }
            0x8b | b'T' => {
                let n = usize::try_from(i32::from_le_bytes(self.int()?)).ok()?;
                self.take(n).map(|_| V::Other)
            }
            b'U' | b'C' => {
                let n = self.int::<1>()?[0] as usize;
                self.take(n).map(|_| V::Other)
            }
            b'B' => {
                let n = u32::from_le_bytes(self.int()?) as usize;
                self.take(n).map(|_| V::Other)
            }
            0x8e | 0x96 => {
                let n = usize::try_from(u64::from_le_bytes(self.int()?)).ok()?;
                self.take(n).map(|_| V::Other)
            }
            b'V' => {
                let l = self.line()?;
                Some(raw_unicode_escape(l).map_or(V::Other, V::Str))
            }
            0x8c => {
                let n = self.int::<1>()?[0] as usize;
                Some(self.utf8(n)?)
            }
            b'X' => {
                let n = u32::from_le_bytes(self.int()?) as usize;
                Some(self.utf8(n)?)
            }
            0x8d => {
                let n = usize::try_from(u64::from_le_bytes(self.int()?)).ok()?;
                Some(self.utf8(n)?)
            }
            0x97 => return None,
            0x98 => {
                self.top()?;
                None
            }
            0x85..=0x87 => {
                self.pop_n((op - 0x84) as usize)?;
                Some(V::Other)
            }
            b't' | b'l' | b'd' | 0x91 => {
                self.pop_mark()?;
                Some(V::Other)
            }
            b'a' => {
                self.pop()?;
                self.top()?;
                None
            }
            b's' => {
                self.pop_n(2)?;
                self.top()?;
                None
            }
            b'e' | b'u' | 0x90 => {
                self.pop_mark()?;
                self.top()?;
                None
            }
            b'b' => {
                self.pop()?;
                self.top()?;
                None
            }
            b'c' => {
                let (m, n) = (Self::text(self.line()?), Self::text(self.line()?));
                self.found.push(Import::Named(m, n, self.proto));
                Some(V::Global)
            }
            b'i' => {
                let (m, n) = (Self::text(self.line()?), Self::text(self.line()?));
                self.found.push(Import::Named(m, n, self.proto));
                self.pop_mark()?;
                Some(V::Other)
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                self.found.push(match (module, name) {
                    (V::Str(m), V::Str(n)) => Import::Named(m, n, self.proto),
                    _ => Import::Computed,
                });
                Some(V::Global)
            }
            b'o' => {
                let items = self.pop_mark()?;
                if items.first()? != &V::Global {
                    self.found.push(Import::ObjOfNonGlobal);
                }
                Some(V::Other)
            }
            0x82..=0x84 => {
                let code = match op {
                    0x82 => i64::from(self.int::<1>()?[0]),
                    0x83 => i64::from(u16::from_le_bytes(self.int()?)),
                    _ => i64::from(i32::from_le_bytes(self.int()?)),
                };
                self.found.push(Import::Extension(code));
                Some(V::Global)
            }
            b'P' => {
                self.line()?;
                self.found.push(Import::Persistent);
                Some(V::Other)
            }
            b'Q' => {
                self.pop()?;
                self.found.push(Import::Persistent);
                Some(V::Other)
            }
            b'R' | 0x81 => {
                self.pop_n(2)?;
                Some(V::Other)
            }
            0x92 => {
                self.pop_n(3)?;
                Some(V::Other)
            }
            b'p' => {
                let i = self.memo_index()?;
                self.put(i)?;
                None
            }
            b'q' => {
                let i = self.int::<1>()?[0].into();
                self.put(i)?;
                None
            }
            b'r' => {
                let i = u32::from_le_bytes(self.int()?).into();
                self.put(i)?;
                None
            }
            0x94 => {
                let i = self.memo.len() as u64;
                self.put(i)?;
                None
            }
            b'g' | b'h' | b'j' => {
                let i: u64 = match op {
                    b'g' => self.memo_index()?,
                    b'h' => self.int::<1>()?[0].into(),
                    _ => u32::from_le_bytes(self.int()?).into(),
                };
                Some(self.memo.get(&i)?.clone())
            }
            _ => return None,
        };
        if let Some(v) = push {
            self.stack.push(v);
        }
        Some(false)
    }

    /// PUT's and GET's decimal line: Python's `int()` of it, which may be signed (`-0` is 0).
    fn memo_index(&mut self) -> Option<u64> {
        let n: i64 = Self::text(self.line()?).parse().ok()?;
        u64::try_from(n).ok()
    }

    fn utf8(&mut self, n: usize) -> Option<V> {
        let b = self.take(n)?;
        Some(std::str::from_utf8(b).map_or(V::Other, |s| V::Str(s.to_owned())))
    }

    fn put(&mut self, i: u64) -> Option<()> {
        let v = self.top()?;
        self.memo.insert(i, v);
        Some(())
    }
}

/// Python's `raw-unicode-escape` decoding: bytes are Latin-1; a run of backslashes followed
/// by `u` (4 hex digits) or `U` (8) is an escape when the run is odd, its last backslash
/// included in the escape (CPython `_PyUnicode_DecodeRawUnicodeEscapeStateful`). `None` when an
/// escape is malformed or is not a scalar value.
fn raw_unicode_escape(b: &[u8]) -> Option<String> {
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(char::from(b[i]));
            i += 1;
            continue;
        }
        let run = b[i..].iter().take_while(|&&c| c == b'\\').count();
        let next = b.get(i + run).copied();
        let width = match next {
            Some(b'u') if run % 2 == 1 => 4,
            Some(b'U') if run % 2 == 1 => 8,
            _ => 0,
        };
        let literal = if width > 0 { run - 1 } else { run };
        out.extend(std::iter::repeat_n('\\', literal));
        i += run;
        if width > 0 {
            let digits = b.get(i + 1..i + 1 + width)?;
            if !digits.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let digits = std::str::from_utf8(digits).ok()?;
            out.push(char::from_u32(u32::from_str_radix(digits, 16).ok()?)?);
            i += 1 + width;
        }
    }
    Some(out)
}

/// Everything `data` imports, in order, or `None` when this walker cannot follow it to STOP.
pub fn imports(data: &[u8]) -> Option<Vec<Import>> {
    let mut w = Walk {
        data,
        at: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        proto: 0,
        found: Vec::new(),
    };
    while !w.step()? {}
    Some(w.found)
}
