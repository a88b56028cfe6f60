//! The walk itself: each opcode's effect on the stack, the marks, the memo and the arena, as
//! `Modules/_pickle.c` applies it.

use super::{Container, Layout, Plain, PlainError, Run, Shape, Value, NO_RUN};
use crate::envelope::opcodes::*;
use crate::envelope::scan::Cursor;
use crate::envelope::text;

/// The walk's working state.
pub(super) struct Walk<'a> {
    stack: Vec<Value<'a>>,
    marks: Vec<usize>,
    memo: Vec<Option<Value<'a>>>,
    /// Memo entries filled: `MEMOIZE` stores at this index, as `_pickle.c`'s `memo_len`.
    memo_count: usize,
    out: Plain<'a>,
    /// Entries (stack items, memo slots, containers, runs, items, marks) allowed at once.
    limit: usize,
}

fn too_complex(limit: usize) -> PlainError {
    PlainError::Invalid(format!(
        "pickle too complex: more than {limit} values, memo entries and containers"
    ))
}

/// The nearest `f64` to a little-endian two's-complement integer (`LONG1`, `LONG4`).
pub(super) fn le_to_f64(mut b: &[u8]) -> f64 {
    // Drop sign-extension bytes CPython would not write, so the length says the magnitude.
    while let [rest @ .., next, top] = b {
        let redundant = (*top == 0 && next & 0x80 == 0) || (*top == 0xff && next & 0x80 != 0);
        if !redundant {
            break;
        }
        b = &b[..rest.len() + 1];
    }
    let negative = b.last().is_some_and(|t| t & 0x80 != 0);
    // 129 bytes hold 2^1024, past f64::MAX.
    if b.len() > 129 {
        return if negative {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
    }
    // Decimal text parses with correct rounding, as Python's float(int) rounds.
    num_bigint::BigInt::from_signed_bytes_le(b)
        .to_string()
        .parse()
        .unwrap_or(f64::NAN)
}

/// A decimal integer (`INT`, `LONG`) too big for `i64`, as the nearest `f64`.
pub(super) fn decimal_to_f64(digits: &[u8]) -> f64 {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN)
}

/// A protocol-0 `FLOAT` argument, as Python's `float()` reads `repr(x)`.
pub(super) fn float_text(line: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(line).ok()?.trim();
    // Rust accepts "inf", "infinity" and "nan" in any case, as Python does; it refuses "_".
    s.parse().ok()
}

impl<'a> Walk<'a> {
    /// Working state for a body of `len` bytes, holding at most `limit` entries.
    pub(super) fn new(limit: usize, len: usize) -> Walk<'a> {
        // Sized for what a CPython batch of `len` bytes needs (about one item per 4 bytes, one
        // memo entry per 8, one container per 16), so a typical frame never reallocates; never
        // more than a few pages up front, whatever the body claims.
        let guess = |per: usize| (len / per).clamp(16, 4096);
        Walk {
            stack: Vec::with_capacity(32),
            marks: Vec::with_capacity(8),
            memo: Vec::with_capacity(guess(8)),
            memo_count: 0,
            out: Plain {
                top: Value::None,
                containers: Vec::with_capacity(guess(16)),
                runs: Vec::with_capacity(guess(16)),
                items: Vec::with_capacity(guess(4)),
                owned: Vec::new(),
                layout: Layout::default(),
            },
            // A pickle CPython writes needs at most 3 entries per byte (TUPLE1: a run, a
            // container and its stack slot); the memo's slack allows a little more.
            limit: limit.min(len.saturating_mul(4).saturating_add(1024)),
        }
    }

    fn used(&self) -> usize {
        self.stack.len()
            + self.marks.len()
            + self.memo.len()
            + self.out.containers.len()
            + self.out.runs.len()
            + self.out.items.len()
    }

    fn room(&self, n: usize) -> Result<(), PlainError> {
        if self.used() + n > self.limit {
            return Err(too_complex(self.limit));
        }
        Ok(())
    }

    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn push(&mut self, v: Value<'a>) -> Result<(), PlainError> {
        self.room(1)?;
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> Result<Value<'a>, PlainError> {
        if self.stack.len() <= self.fence() {
            return Err("pickle stack underflow".into());
        }
        self.stack
            .pop()
            .ok_or_else(|| "pickle stack underflow".into())
    }

    fn top(&self) -> Result<Value<'a>, PlainError> {
        if self.stack.len() <= self.fence() {
            return Err("pickle stack underflow".into());
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| "pickle stack underflow".into())
    }

    /// Pops the last mark; returns where it stood.
    fn pop_mark(&mut self) -> Result<usize, PlainError> {
        self.marks
            .pop()
            .ok_or_else(|| "pickle has no MARK where one is needed".into())
    }

    /// Moves `stack[from..]` into the item buffer as one run; returns the run's index.
    fn run_from(&mut self, from: usize) -> Result<u32, PlainError> {
        let n = self.stack.len() - from;
        // The items leave the stack as they enter the buffer: only the run is new.
        self.room(1)?;
        let start = self.out.items.len() as u32;
        self.out.items.extend(self.stack.drain(from..));
        self.out.runs.push(Run {
            start,
            len: n as u32,
            next: NO_RUN,
        });
        Ok((self.out.runs.len() - 1) as u32)
    }

    /// A new container holding `stack[from..]`, pushed in their place.
    fn container(&mut self, shape: Shape, from: usize) -> Result<(), PlainError> {
        let len = (self.stack.len() - from) as u32;
        if shape == Shape::Dict {
            self.hashable_keys(from, 2)?;
        }
        let run = self.run_from(from)?;
        self.room(1)?;
        self.out.containers.push(Container {
            shape,
            len,
            first: run,
            last: run,
        });
        self.push(Value::Container((self.out.containers.len() - 1) as u32))
    }

    fn empty(&mut self, shape: Shape) -> Result<(), PlainError> {
        self.room(1)?;
        self.out.containers.push(Container {
            shape,
            len: 0,
            first: NO_RUN,
            last: NO_RUN,
        });
        self.push(Value::Container((self.out.containers.len() - 1) as u32))
    }

    /// CPython refuses a list, dict or set as a dict key or set item ("unhashable type").
    fn hashable_keys(&self, from: usize, step: usize) -> Result<(), PlainError> {
        for k in self.stack[from..].iter().step_by(step) {
            if let Some((shape, _)) = self.out.container(*k) {
                if !matches!(shape, Shape::Tuple | Shape::FrozenSet) {
                    return Err("pickle uses a list, dict or set as a dict key or set item".into());
                }
            }
        }
        Ok(())
    }

    /// Appends `stack[from..]` to the container at `stack[from - 1]`, which must be a `shape`.
    fn extend(&mut self, from: usize, shape: Shape, op: &str) -> Result<(), PlainError> {
        let target = from
            .checked_sub(1)
            .and_then(|i| self.stack.get(i).copied())
            .ok_or_else(|| PlainError::from("pickle stack underflow"))?;
        let idx = match target {
            Value::Container(i) if self.out.container(target).map(|c| c.0) == Some(shape) => {
                i as usize
            }
            other => {
                return Err(
                    format!("pickle applies {op} to a {}", self.out.type_name(other)).into(),
                )
            }
        };
        let n = self.stack.len() - from;
        if shape == Shape::Dict && n % 2 != 0 {
            return Err(format!("pickle {op} with an odd number of items").into());
        }
        if shape != Shape::List {
            self.hashable_keys(from, if shape == Shape::Dict { 2 } else { 1 })?;
        }
        if n == 0 {
            return Ok(());
        }
        let run = self.run_from(from)?;
        let c = &mut self.out.containers[idx];
        let last = std::mem::replace(&mut c.last, run);
        c.len = c.len.saturating_add(n as u32);
        if last == NO_RUN {
            c.first = run;
        } else {
            self.out.runs[last as usize].next = run;
        }
        Ok(())
    }

    fn memo_put(&mut self, idx: u64) -> Result<(), PlainError> {
        let v = self.top()?;
        let idx = usize::try_from(idx).unwrap_or(usize::MAX);
        if let Some(slot) = self.memo.get_mut(idx) {
            if slot.replace(v).is_none() {
                self.memo_count += 1;
            }
            return Ok(());
        }
        // CPython numbers memo entries densely; allow a little slack, never a sparse table.
        if idx > self.memo.len() + 1024 {
            return Err(format!("pickle memo index {idx} out of range").into());
        }
        self.room(idx + 1 - self.memo.len())?;
        self.memo.resize(idx, None);
        self.memo.push(Some(v));
        self.memo_count += 1;
        Ok(())
    }

    fn memo_get(&mut self, idx: u64) -> Result<(), PlainError> {
        let v = usize::try_from(idx)
            .ok()
            .and_then(|i| self.memo.get(i).copied().flatten());
        match v {
            Some(v) => self.push(v),
            None => {
                Err(format!("pickle refers to memo entry {idx}, which was never stored").into())
            }
        }
    }

    fn text(&mut self, raw: &'a [u8], enc_raw_escape: bool) -> Result<(), PlainError> {
        let v = if enc_raw_escape {
            match text::raw_unicode_escape(raw) {
                Some(std::borrow::Cow::Borrowed(s)) => Value::Str(s),
                Some(std::borrow::Cow::Owned(s)) => {
                    self.room(1)?;
                    self.out.owned.push(s.into_boxed_str());
                    Value::Decoded((self.out.owned.len() - 1) as u32)
                }
                None => Value::BadStr,
            }
        } else {
            std::str::from_utf8(raw).map_or(Value::BadStr, Value::Str)
        };
        self.push(v)
    }

    /// Walks `body` to its STOP opcode.
    pub(super) fn run(mut self, body: &'a [u8]) -> Result<Plain<'a>, PlainError> {
        self.out.top = self.walk(body)?;
        Ok(self.out)
    }

    fn walk(&mut self, body: &'a [u8]) -> Result<Value<'a>, PlainError> {
        let mut c = Cursor { body, pos: 0 };
        // The last two opcodes and their offsets, for the layout.
        let mut last = [(STOP, usize::MAX); 2];
        loop {
            let Some(&op) = body.get(c.pos) else {
                return Err("pickle ends before its STOP opcode".into());
            };
            let at = c.pos;
            c.pos += 1;
            let before = last;
            last = [last[1], (op, at)];
            match op {
                PROTO => {
                    let p = c.u8()?;
                    if p > HIGHEST_PROTOCOL {
                        return Err(format!("unsupported pickle protocol {p}").into());
                    }
                }
                FRAME => {
                    let len = c.u64()?;
                    if len > (body.len() - c.pos) as u64 {
                        return Err("pickle truncated: FRAME runs past the end".into());
                    }
                    let layout = &mut self.out.layout;
                    layout.frame.get_or_insert(at);
                    layout.frames += 1;
                }
                STOP => {
                    self.out.layout.stop = at;
                    self.out.layout.before_stop = before;
                    return self.pop();
                }
                MARK => {
                    self.room(1)?;
                    self.marks.push(self.stack.len());
                }
                POP => {
                    // CPython pops a mark when one sits on top of the stack.
                    if self.marks.last() == Some(&self.stack.len()) {
                        self.marks.pop();
                    } else {
                        self.pop()?;
                    }
                }
                POP_MARK => {
                    let mark = self.pop_mark()?;
                    self.stack.truncate(mark);
                }
                DUP => {
                    let v = self.top()?;
                    self.push(v)?;
                }
                NONE => self.push(Value::None)?,
                NEWTRUE => self.push(Value::Bool(true))?,
                NEWFALSE => self.push(Value::Bool(false))?,
                BININT => {
                    let n = i32::from_le_bytes(c.bytes()?);
                    self.push(Value::Int(n.into()))?;
                }
                BININT1 => {
                    let n = c.u8()?;
                    self.push(Value::Int(n.into()))?;
                }
                BININT2 => {
                    let n = c.u16()?;
                    self.push(Value::Int(n.into()))?;
                }
                INT | LONG => {
                    let line = c.line_bytes()?;
                    let v = match line {
                        b"00" if op == INT => Value::Bool(false),
                        b"01" if op == INT => Value::Bool(true),
                        _ => {
                            let digits = if op == LONG {
                                line.strip_suffix(b"L").unwrap_or(line)
                            } else {
                                line
                            };
                            match text::decimal(digits) {
                                Some(Ok(n)) => Value::Int(n),
                                Some(Err(())) => Value::BigInt(decimal_to_f64(digits)),
                                None => {
                                    return Err(
                                        "pickle INT or LONG argument is not an integer".into()
                                    )
                                }
                            }
                        }
                    };
                    self.push(v)?;
                }
                LONG1 | LONG4 => {
                    let len = if op == LONG1 {
                        c.u8()?.into()
                    } else {
                        let n = i32::from_le_bytes(c.bytes()?);
                        u64::try_from(n).map_err(|_| "pickle LONG4 with a negative length")?
                    };
                    let start = c.take(len)?;
                    let bytes = &body[start..start + len as usize];
                    let v = match text::le_signed(bytes) {
                        Some(n) => Value::Int(n),
                        None => Value::BigInt(le_to_f64(bytes)),
                    };
                    self.push(v)?;
                }
                FLOAT => {
                    let line = c.line_bytes()?;
                    let x = float_text(line).ok_or("pickle FLOAT argument is not a float")?;
                    self.push(Value::Float(x))?;
                }
                BINFLOAT => {
                    let x = f64::from_be_bytes(c.bytes()?);
                    self.push(Value::Float(x))?;
                }
                STRING => {
                    c.line()?;
                    self.push(Value::Py2Str)?;
                }
                BINSTRING => {
                    let len = i32::from_le_bytes(c.bytes()?);
                    let len = u64::try_from(len)
                        .map_err(|_| "pickle BINSTRING with a negative length")?;
                    c.take(len)?;
                    self.push(Value::Py2Str)?;
                }
                SHORT_BINSTRING => {
                    let len = c.u8()?;
                    c.take(len.into())?;
                    self.push(Value::Py2Str)?;
                }
                UNICODE => {
                    let raw = c.line_bytes()?;
                    self.text(raw, true)?;
                }
                SHORT_BINUNICODE | BINUNICODE | BINUNICODE8 => {
                    let len = match op {
                        SHORT_BINUNICODE => c.u8()?.into(),
                        BINUNICODE => c.u32()?.into(),
                        _ => c.u64()?,
                    };
                    let start = c.take(len)?;
                    self.text(&body[start..start + len as usize], false)?;
                }
                SHORT_BINBYTES | BINBYTES | BINBYTES8 | BYTEARRAY8 => {
                    let len = match op {
                        SHORT_BINBYTES => c.u8()?.into(),
                        BINBYTES => c.u32()?.into(),
                        _ => c.u64()?,
                    };
                    c.take(len)?;
                    let v = if op == BYTEARRAY8 {
                        Value::ByteArray
                    } else {
                        Value::Bytes
                    };
                    self.push(v)?;
                }
                NEXT_BUFFER | READONLY_BUFFER => {
                    return Err(
                        "pickle refers to an out-of-band buffer, which a connection cannot carry"
                            .into(),
                    )
                }
                EMPTY_TUPLE => self.empty(Shape::Tuple)?,
                EMPTY_LIST => self.empty(Shape::List)?,
                EMPTY_DICT => self.empty(Shape::Dict)?,
                EMPTY_SET => self.empty(Shape::Set)?,
                TUPLE1 | TUPLE2 | TUPLE3 => {
                    let n = usize::from(op - TUPLE1) + 1;
                    if self.stack.len() < self.fence() + n {
                        return Err("pickle stack underflow".into());
                    }
                    self.container(Shape::Tuple, self.stack.len() - n)?;
                }
                TUPLE | LIST | DICT | FROZENSET => {
                    let mark = self.pop_mark()?;
                    let shape = match op {
                        TUPLE => Shape::Tuple,
                        LIST => Shape::List,
                        DICT => Shape::Dict,
                        _ => Shape::FrozenSet,
                    };
                    if shape == Shape::Dict && (self.stack.len() - mark) % 2 != 0 {
                        return Err("pickle DICT with an odd number of items".into());
                    }
                    if shape == Shape::FrozenSet {
                        self.hashable_keys(mark, 1)?;
                    }
                    self.container(shape, mark)?;
                }
                APPEND => {
                    let at = self.stack.len().wrapping_sub(1);
                    if self.stack.len() <= self.fence() + 1 {
                        return Err("pickle stack underflow".into());
                    }
                    self.extend(at, Shape::List, "APPEND")?;
                }
                SETITEM => {
                    let at = self.stack.len().wrapping_sub(2);
                    if self.stack.len() <= self.fence() + 2 {
                        return Err("pickle stack underflow".into());
                    }
                    self.extend(at, Shape::Dict, "SETITEM")?;
                }
                APPENDS | SETITEMS | ADDITEMS => {
                    let mark = self.pop_mark()?;
                    if mark <= self.fence() {
                        return Err("pickle stack underflow".into());
                    }
                    let (shape, name) = match op {
                        APPENDS => (Shape::List, "APPENDS"),
                        SETITEMS => (Shape::Dict, "SETITEMS"),
                        _ => (Shape::Set, "ADDITEMS"),
                    };
                    self.extend(mark, shape, name)?;
                }
                GLOBAL | STACK_GLOBAL | REDUCE | BUILD | INST | OBJ | NEWOBJ | NEWOBJ_EX | EXT1
                | EXT2 | EXT4 | PERSID | BINPERSID => return Err(PlainError::Code),
                PUT => {
                    let line = c.line_bytes()?;
                    match text::decimal(line) {
                        Some(Ok(n)) if n >= 0 => self.memo_put(n as u64)?,
                        _ => return Err("pickle PUT argument is not a memo index".into()),
                    }
                }
                BINPUT => {
                    let idx = c.u8()?;
                    self.memo_put(idx.into())?;
                }
                LONG_BINPUT => {
                    let idx = c.u32()?;
                    self.memo_put(idx.into())?;
                }
                MEMOIZE => {
                    let idx = self.memo_count as u64;
                    self.memo_put(idx)?;
                }
                GET => {
                    let line = c.line_bytes()?;
                    match text::decimal(line) {
                        Some(Ok(n)) if n >= 0 => self.memo_get(n as u64)?,
                        _ => return Err("pickle GET argument is not a memo index".into()),
                    }
                }
                BINGET => {
                    let idx = c.u8()?;
                    self.memo_get(idx.into())?;
                }
                LONG_BINGET => {
                    let idx = c.u32()?;
                    self.memo_get(idx.into())?;
                }
                other => {
                    return Err(format!(
                        "not a pickle: unknown opcode 0x{other:02x} at offset {}",
                        c.pos - 1
                    )
                    .into())
                }
            }
        }
    }
}
