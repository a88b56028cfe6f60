//! The opcode walker: runs a pickle's opcodes over *abstract* values, so it knows exactly what
//! object the pickle builds at its top level without building any of it.
//!
//! Every opcode's stack effect is applied (CPython's `pickletools` documents them); arguments are
//! skipped by their length prefix without being read, so a 100 MB bytes payload costs one bounds
//! check. Only what the envelope can need is kept: short strings and bytes as spans of the body,
//! ints, `None`, bools, and 2-tuples of those; everything else is an opaque [`Kind`].

use super::fast::Shape;
use super::opcodes::*;
use super::policy::{Imports, Refusal, Unjudged};
use super::text;
use super::value::{Enc, IntEnc, Kind, Span, Val};

/// Why a pickle is not one CPython would load.
pub type ScanError = String;

/// The outcome of a scan.
#[derive(Debug, Clone, Copy)]
pub struct Scanned {
    /// The top-level value.
    pub value: Val,
    /// The pickle imports or calls something (GLOBAL, REDUCE, BUILD, …): never decode it.
    pub has_code: bool,
}

/// Reusable working memory for scanning; keep one per connection to scan without allocating.
#[derive(Debug)]
pub struct Scanner {
    stack: Vec<Val>,
    marks: Vec<usize>,
    memo: Vec<Option<Val>>,
    memo_count: usize,
    pub(crate) pairs: Vec<(Val, Val)>,
    limit: usize,
    /// The first import the last judged walk refused (see `policy`); only ever set there. Kept
    /// here rather than in `Scanned`: a larger `Scanned` slowed every `classify` by ~15%.
    pub(crate) refused: Option<Refusal>,
    /// Whether `classify` may start after a recognised publish head (`fast`); off only to test
    /// the shortcut against the general walk.
    pub(crate) shortcut: bool,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner::with_limit(Scanner::DEFAULT_LIMIT)
    }
}

/// Reads opcode arguments from the body (shared with the plain-data decoder, `plain.rs`).
pub(super) struct Cursor<'a> {
    pub(super) body: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn take(&mut self, n: u64) -> Result<usize, ScanError> {
        let start = self.pos;
        let remaining = (self.body.len() - start) as u64;
        if n > remaining {
            return Err(format!(
                "pickle truncated: an argument of {n} bytes at offset {start} runs past the end"
            ));
        }
        self.pos += n as usize;
        Ok(start)
    }
    pub(super) fn bytes<const N: usize>(&mut self) -> Result<[u8; N], ScanError> {
        let start = self.take(N as u64)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.body[start..start + N]);
        Ok(out)
    }
    pub(super) fn u8(&mut self) -> Result<u8, ScanError> {
        Ok(self.bytes::<1>()?[0])
    }
    pub(super) fn u16(&mut self) -> Result<u16, ScanError> {
        Ok(u16::from_le_bytes(self.bytes()?))
    }
    pub(super) fn u32(&mut self) -> Result<u32, ScanError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    pub(super) fn u64(&mut self) -> Result<u64, ScanError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    /// A newline-terminated argument, without the newline.
    pub(super) fn line(&mut self) -> Result<Span, ScanError> {
        let start = self.pos;
        let Some(len) = self.body[start..].iter().position(|&b| b == b'\n') else {
            return Err(format!("pickle truncated: no newline after offset {start}"));
        };
        self.pos += len + 1;
        Ok(span(start, len as u64))
    }
    pub(super) fn line_bytes(&mut self) -> Result<&'a [u8], ScanError> {
        let start = self.pos;
        let s = self.line()?;
        Ok(&self.body[start..start + s.len as usize])
    }
    /// Skips a length-prefixed argument, returning its span.
    fn sized(&mut self, len: u64) -> Result<(usize, u64), ScanError> {
        Ok((self.take(len)?, len))
    }
}

fn span(start: usize, len: u64) -> Span {
    Span {
        start,
        len: len as u32,
    }
}

/// A string or bytes value, or its opaque kind when too long to be a topic.
fn text_val(start: usize, len: u64, make: impl FnOnce(Span) -> Val, kind: Kind) -> Val {
    if len <= u32::MAX as u64 {
        make(span(start, len))
    } else {
        Val::Other(kind)
    }
}

impl Scanner {
    /// Default cap on stack items plus memo entries: 8 Mi entries (at most 128 MiB of working
    /// memory for one hostile frame; a real pickle this complex is rejected, not misrouted).
    pub const DEFAULT_LIMIT: usize = 8 << 20;

    /// A scanner that refuses pickles needing more than `limit` stack items plus memo entries.
    pub fn with_limit(limit: usize) -> Self {
        Scanner {
            stack: Vec::new(),
            marks: Vec::new(),
            memo: Vec::new(),
            memo_count: 0,
            pairs: Vec::new(),
            limit,
            refused: None,
            shortcut: true,
        }
    }

    /// This scanner with the common-publish shortcut (`fast.rs`) turned off, so that every frame
    /// takes the general walk. Results are the same either way; this exists so that tests and
    /// fuzz targets can check exactly that.
    #[doc(hidden)]
    pub fn without_shortcut(mut self) -> Self {
        self.shortcut = false;
        self
    }

    fn reset(&mut self) {
        // Keep small buffers for the next frame; give back what a huge pickle made them grow to.
        const KEEP: usize = 1 << 12;
        self.stack.clear();
        self.stack.shrink_to(KEEP);
        self.memo.clear();
        self.memo.shrink_to(KEEP);
        self.marks.clear();
        self.marks.shrink_to(KEEP);
        self.pairs.clear();
        self.pairs.shrink_to(KEEP);
        self.memo_count = 0;
    }

    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn push(&mut self, v: Val) -> Result<(), ScanError> {
        if self.stack.len() + self.memo_count >= self.limit {
            return Err(format!(
                "pickle too complex: more than {} stack items and memo entries",
                self.limit
            ));
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> Result<Val, ScanError> {
        if self.stack.len() <= self.fence() {
            return Err("pickle stack underflow".into());
        }
        self.stack
            .pop()
            .ok_or_else(|| "pickle stack underflow".into())
    }

    fn top(&self) -> Result<Val, ScanError> {
        if self.stack.len() <= self.fence() {
            return Err("pickle stack underflow".into());
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| "pickle stack underflow".into())
    }

    /// Pops everything above the last mark, and the mark; returns how many items it held.
    fn pop_mark(&mut self) -> Result<(usize, usize), ScanError> {
        let Some(mark) = self.marks.pop() else {
            return Err("pickle has no MARK where one is needed".into());
        };
        let n = self.stack.len() - mark;
        Ok((mark, n))
    }

    /// Replaces the object a mutating opcode works on (list, dict, set, object).
    fn mutate(&self, at: usize, kind: Kind, op: &str) -> Result<(), ScanError> {
        // Below the innermost mark is out of reach, as in CPython (`x <= fence` in _pickle.c).
        if at < self.fence() {
            return Err("pickle stack underflow".into());
        }
        match self.stack.get(at) {
            Some(Val::Other(_)) => Ok(()),
            Some(_) => Err(format!(
                "pickle applies {op} to a value that is not a {}",
                kind.name()
            )),
            None => Err("pickle stack underflow".into()),
        }
    }

    fn tuple(&mut self, items: usize) -> Result<(), ScanError> {
        let v = if items == 2 {
            let b = self.pop()?;
            let a = self.pop()?;
            self.pairs.push((a, b));
            Val::Pair((self.pairs.len() - 1) as u32)
        } else {
            if self.stack.len() < self.fence() + items {
                return Err("pickle stack underflow".into());
            }
            self.stack.truncate(self.stack.len() - items);
            Val::Other(Kind::Tuple(items as u32))
        };
        self.push(v)
    }

    fn memo_put(&mut self, idx: u64) -> Result<(), ScanError> {
        let v = self.top()?;
        let idx = idx as usize;
        let fresh = if idx == self.memo.len() {
            // The common case: MEMOIZE, or PUT with the next index.
            self.memo.push(Some(v));
            true
        } else if idx < self.memo.len() {
            self.memo[idx].replace(v).is_none()
        } else if idx <= self.memo.len() + 1024 {
            self.memo.resize(idx, None);
            self.memo.push(Some(v));
            true
        } else {
            // Dense in every real pickle; refuse sparse indexes rather than allocate for them.
            return Err(format!("pickle memo index {idx} out of range"));
        };
        if fresh {
            self.count_memo()?;
        }
        Ok(())
    }

    /// MEMOIZE: CPython stores the top at `len(memo)`, which is `memo_count`. With a dense memo
    /// (what every `Pickler` writes) that is a push, done here without `memo_put`'s cases:
    /// 7% fewer instructions per `classify` of a small publish with three MEMOIZEs (callgrind).
    #[inline]
    fn memoize(&mut self) -> Result<(), ScanError> {
        if self.memo.len() != self.memo_count {
            return self.memo_put(self.memo_count as u64);
        }
        let v = self.top()?;
        self.memo.push(Some(v));
        self.count_memo()
    }

    /// Counts one more memo entry, refusing it past the limit on stack items plus memo entries.
    #[inline]
    fn count_memo(&mut self) -> Result<(), ScanError> {
        self.memo_count += 1;
        if self.stack.len() + self.memo_count > self.limit {
            return Err(format!(
                "pickle too complex: more than {} stack items and memo entries",
                self.limit
            ));
        }
        Ok(())
    }

    fn memo_get(&mut self, idx: u64) -> Result<(), ScanError> {
        match self.memo.get(idx as usize).copied().flatten() {
            Some(v) => self.push(v),
            None => Err(format!(
                "pickle refers to memo entry {idx}, which was never stored"
            )),
        }
    }

    /// Walks `body` to its STOP opcode and returns the top-level value.
    pub fn scan(&mut self, body: &[u8]) -> Result<Scanned, ScanError> {
        self.walk(body, Unjudged)
    }

    /// [`Scanner::scan`], telling `judge` about every import; a refusal is left in
    /// `self.refused`. Generic so that the unjudged walk compiles to no policy work at all.
    pub(crate) fn walk<J: Imports>(&mut self, body: &[u8], judge: J) -> Result<Scanned, ScanError> {
        self.reset();
        self.walk_from(body, 0, 0, usize::MAX, judge)
    }

    /// The walk of a body [`super::fast::recognise`] took for a publish, started after its
    /// topic's MEMOIZE with the state the head leaves: protocol `shape.proto`, the topic on the
    /// stack and in memo entry 0 (`pickletools`: SHORT_BINUNICODE pushes, MEMOIZE stores the top
    /// at the next index). Returns what [`Scanner::walk`] returns for the same body.
    pub(super) fn walk_publish<J: Imports>(
        &mut self,
        body: &[u8],
        shape: &Shape<'_>,
        judge: J,
    ) -> Result<Scanned, ScanError> {
        // Below 2, the head itself is too complex (one stack item plus one memo entry).
        if self.limit < 2 {
            return self.walk(body, judge);
        }
        self.reset();
        let topic = shape.topic_val();
        self.stack.push(topic);
        self.memo.push(Some(topic));
        self.memo_count = 1;
        self.walk_from(body, shape.payload, shape.proto, shape.tail, judge)
    }

    /// Whether TUPLE2, MEMOIZE, STOP run now would certainly succeed and return the pair of the
    /// two stack items: no mark to fence them, and room for the pair and its memo entry under
    /// the limit (`tuple` and `memo_put` check `stack + memo <= limit`). With two items on the
    /// stack the checks on the way already imply that room; it is tested anyway, for one compare.
    fn tail_is_certain(&self) -> bool {
        self.marks.is_empty() && self.stack.len() == 2 && self.memo_count + 2 <= self.limit
    }

    /// The opcode loop from offset `pos`, with the Unpickler's `proto` so far. At offset `tail`
    /// (a [`super::fast::TAIL`] the caller has seen there), when [`Scanner::tail_is_certain`],
    /// it returns what those three opcodes would without running them.
    fn walk_from<J: Imports>(
        &mut self,
        body: &[u8],
        pos: usize,
        // The Unpickler's `proto`: 0 until a PROTO opcode; `find_class` maps names below 3.
        mut proto: u8,
        tail: usize,
        mut judge: J,
    ) -> Result<Scanned, ScanError> {
        let mut has_code = false;
        let mut c = Cursor { body, pos };
        loop {
            if c.pos == tail && self.tail_is_certain() {
                if let [a, b] = self.stack[..] {
                    self.pairs.push((a, b));
                    if let Some(refused) = judge.into_refusal() {
                        self.refused = Some(refused);
                    }
                    let value = Val::Pair((self.pairs.len() - 1) as u32);
                    return Ok(Scanned { value, has_code });
                }
            }
            let Some(&op) = body.get(c.pos) else {
                return Err("pickle ends before its STOP opcode".into());
            };
            c.pos += 1;
            match op {
                PROTO => {
                    let p = c.u8()?;
                    if p > HIGHEST_PROTOCOL {
                        return Err(format!("unsupported pickle protocol {p}"));
                    }
                    proto = p;
                }
                FRAME => {
                    let len = c.u64()?;
                    if len > (body.len() - c.pos) as u64 {
                        return Err("pickle truncated: FRAME runs past the end".into());
                    }
                }
                STOP => {
                    let value = self.pop()?;
                    if let Some(refused) = judge.into_refusal() {
                        self.refused = Some(refused);
                    }
                    return Ok(Scanned { value, has_code });
                }
                MARK => {
                    if self.marks.len() >= self.limit {
                        return Err("pickle too complex: too many marks".into());
                    }
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
                    let (mark, _) = self.pop_mark()?;
                    self.stack.truncate(mark);
                }
                DUP => {
                    let v = self.top()?;
                    self.push(v)?;
                }
                NONE => self.push(Val::None)?,
                NEWTRUE => self.push(Val::Bool(true))?,
                NEWFALSE => self.push(Val::Bool(false))?,
                BININT => {
                    let n = i32::from_le_bytes(c.bytes()?);
                    self.push(Val::Int(n.into()))?;
                }
                BININT1 => {
                    let n = c.u8()?;
                    self.push(Val::Int(n.into()))?;
                }
                BININT2 => {
                    let n = c.u16()?;
                    self.push(Val::Int(n.into()))?;
                }
                INT => {
                    let start = c.pos;
                    let line = c.line_bytes()?;
                    let v = match line {
                        b"00" => Val::Bool(false),
                        b"01" => Val::Bool(true),
                        _ => match text::decimal(line) {
                            Some(Ok(n)) => Val::Int(n),
                            Some(Err(())) => {
                                Val::BigInt(span(start, line.len() as u64), IntEnc::Decimal)
                            }
                            None => return Err("pickle INT argument is not an integer".into()),
                        },
                    };
                    self.push(v)?;
                }
                LONG => {
                    let start = c.pos;
                    let line = c.line_bytes()?;
                    let digits = line.strip_suffix(b"L").unwrap_or(line);
                    let v = match text::decimal(digits) {
                        Some(Ok(n)) => Val::Int(n),
                        Some(Err(())) => {
                            Val::BigInt(span(start, digits.len() as u64), IntEnc::Decimal)
                        }
                        None => return Err("pickle LONG argument is not an integer".into()),
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
                    let (start, len) = c.sized(len)?;
                    let v = match text::le_signed(&body[start..start + len as usize]) {
                        Some(n) => Val::Int(n),
                        None => text_val(start, len, |s| Val::BigInt(s, IntEnc::Le), Kind::Int),
                    };
                    self.push(v)?;
                }
                FLOAT => {
                    c.line()?;
                    self.push(Val::Other(Kind::Float))?;
                }
                BINFLOAT => {
                    c.take(8)?;
                    self.push(Val::Other(Kind::Float))?;
                }
                STRING => {
                    c.line()?;
                    self.push(Val::Other(Kind::Py2Str))?;
                }
                BINSTRING => {
                    let len = i32::from_le_bytes(c.bytes()?);
                    let len = u64::try_from(len)
                        .map_err(|_| "pickle BINSTRING with a negative length")?;
                    c.take(len)?;
                    self.push(Val::Other(Kind::Py2Str))?;
                }
                SHORT_BINSTRING => {
                    let len = c.u8()?;
                    c.take(len.into())?;
                    self.push(Val::Other(Kind::Py2Str))?;
                }
                UNICODE => {
                    let s = c.line()?;
                    self.push(Val::Str(s, Enc::RawEscape))?;
                }
                SHORT_BINUNICODE | BINUNICODE | BINUNICODE8 => {
                    let len = match op {
                        SHORT_BINUNICODE => c.u8()?.into(),
                        BINUNICODE => c.u32()?.into(),
                        _ => c.u64()?,
                    };
                    let (start, len) = c.sized(len)?;
                    self.push(text_val(start, len, |s| Val::Str(s, Enc::Utf8), Kind::Str))?;
                }
                SHORT_BINBYTES | BINBYTES | BINBYTES8 => {
                    let len = match op {
                        SHORT_BINBYTES => c.u8()?.into(),
                        BINBYTES => c.u32()?.into(),
                        _ => c.u64()?,
                    };
                    let (start, len) = c.sized(len)?;
                    self.push(text_val(start, len, Val::Bytes, Kind::Bytes))?;
                }
                BYTEARRAY8 => {
                    let len = c.u64()?;
                    c.take(len)?;
                    self.push(Val::Other(Kind::ByteArray))?;
                }
                NEXT_BUFFER => {
                    return Err(
                        "pickle refers to an out-of-band buffer, which a connection cannot carry"
                            .into(),
                    )
                }
                READONLY_BUFFER => {
                    self.top()?;
                }
                EMPTY_TUPLE => self.push(Val::Other(Kind::Tuple(0)))?,
                EMPTY_LIST => self.push(Val::Other(Kind::List))?,
                EMPTY_DICT => self.push(Val::Other(Kind::Dict))?,
                EMPTY_SET => self.push(Val::Other(Kind::Set))?,
                TUPLE1 => self.tuple(1)?,
                TUPLE2 => self.tuple(2)?,
                TUPLE3 => self.tuple(3)?,
                TUPLE => {
                    // The n items above the (now removed) mark become one tuple, as TUPLE1-3 do.
                    let (_, n) = self.pop_mark()?;
                    self.tuple(n)?;
                }
                LIST | DICT | FROZENSET => {
                    let (mark, _) = self.pop_mark()?;
                    self.stack.truncate(mark);
                    let kind = match op {
                        LIST => Kind::List,
                        DICT => Kind::Dict,
                        _ => Kind::FrozenSet,
                    };
                    self.push(Val::Other(kind))?;
                }
                APPEND => {
                    self.pop()?;
                    self.mutate(self.stack.len().wrapping_sub(1), Kind::List, "APPEND")?;
                }
                SETITEM => {
                    self.pop()?;
                    self.pop()?;
                    self.mutate(self.stack.len().wrapping_sub(1), Kind::Dict, "SETITEM")?;
                }
                APPENDS | SETITEMS | ADDITEMS => {
                    let (mark, _) = self.pop_mark()?;
                    self.stack.truncate(mark);
                    let (kind, name) = match op {
                        APPENDS => (Kind::List, "APPENDS"),
                        SETITEMS => (Kind::Dict, "SETITEMS"),
                        _ => (Kind::Set, "ADDITEMS"),
                    };
                    self.mutate(mark.wrapping_sub(1), kind, name)?;
                }
                BUILD => {
                    has_code = true;
                    self.pop()?;
                    self.mutate(self.stack.len().wrapping_sub(1), Kind::Object, "BUILD")?;
                }
                GLOBAL => {
                    has_code = true;
                    let module = c.line()?;
                    let name = c.line()?;
                    judge.lines(body, module, name, proto);
                    self.push(Val::Other(Kind::Global))?;
                }
                STACK_GLOBAL => {
                    has_code = true;
                    let name = self.pop()?;
                    let module = self.pop()?;
                    judge.stack_global(body, module, name, proto);
                    self.push(Val::Other(Kind::Global))?;
                }
                EXT1 | EXT2 | EXT4 => {
                    has_code = true;
                    let code: i64 = match op {
                        EXT1 => c.u8()?.into(),
                        EXT2 => c.u16()?.into(),
                        _ => i32::from_le_bytes(c.bytes()?).into(),
                    };
                    judge.refuse(|| Refusal::Extension(code));
                    self.push(Val::Other(Kind::Global))?;
                }
                REDUCE | NEWOBJ => {
                    has_code = true;
                    self.pop()?;
                    self.pop()?;
                    self.push(Val::Other(Kind::Object))?;
                }
                NEWOBJ_EX => {
                    has_code = true;
                    self.pop()?;
                    self.pop()?;
                    self.pop()?;
                    self.push(Val::Other(Kind::Object))?;
                }
                INST => {
                    has_code = true;
                    let module = c.line()?;
                    let name = c.line()?;
                    judge.lines(body, module, name, proto);
                    let (mark, _) = self.pop_mark()?;
                    self.stack.truncate(mark);
                    self.push(Val::Other(Kind::Object))?;
                }
                OBJ => {
                    has_code = true;
                    let (mark, n) = self.pop_mark()?;
                    if n == 0 {
                        return Err("pickle OBJ without a class".into());
                    }
                    judge.obj(self.stack[mark]);
                    self.stack.truncate(mark);
                    self.push(Val::Other(Kind::Object))?;
                }
                PERSID | BINPERSID => {
                    has_code = true;
                    if op == PERSID {
                        c.line()?;
                    } else {
                        self.pop()?;
                    }
                    judge.refuse(|| Refusal::PersistentId);
                    self.push(Val::Other(Kind::Object))?;
                }
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
                MEMOIZE => self.memoize()?,
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
                    ))
                }
            }
        }
    }
}
