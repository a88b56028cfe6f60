//! Plain data out of a pickle: the one decoder the broker has, for `$metrics` payloads.
//!
//! The walk is the envelope scanner's (`scan.rs`): the same opcodes, the same argument cursor,
//! the same stack and mark rules from CPython's `Modules/_pickle.c`. Where the scanner keeps
//! abstract values, this keeps real ones, still without building Python objects:
//!
//! - scalars live on the stack as [`Value`]s; text borrows from the body (`BINUNICODE` is
//!   checked as UTF-8 once, where it is read), and only protocol 0's raw-unicode-escape text
//!   is decoded into an owned string, once per opcode;
//! - tuples, lists, dicts and sets are entries of an arena referenced by index, so a memo
//!   reference (`GET`, `BINGET`, `LONG_BINGET` after `PUT`, `BINPUT`, `MEMOIZE`) is a copy of
//!   the index: the same dict under two ops is one entry, and a container memoized empty and
//!   filled afterwards by `APPENDS`/`SETITEMS` (what CPython writes for every list and dict at
//!   protocol 1 and up) is seen filled from everywhere, as Python sees it;
//! - items are appended to a flat buffer in runs (one per `APPENDS`, `SETITEMS`, `TUPLE`, …),
//!   each container a chain of its runs: no allocation per container.
//!
//! Anything that imports or calls (GLOBAL, STACK_GLOBAL, REDUCE, BUILD, INST, OBJ, NEWOBJ,
//! NEWOBJ_EX, EXT1/2/4, PERSID, BINPERSID) ends the walk with [`PlainError::Code`]: nothing is
//! decoded past it. Every allocation is bounded by the body (each opcode adds at most one
//! value, each opcode is at least a byte) and by the decoder's entry limit.

mod walk;

use walk::Walk;

/// A value of plain data. Containers are indexes into the [`Plain`] arena they came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value<'a> {
    None,
    Bool(bool),
    Int(i64),
    /// An int beyond `i64`, as the nearest `f64` (infinite beyond `f64`'s range).
    BigInt(f64),
    Float(f64),
    Str(&'a str),
    /// A protocol-0 `str` that needed decoding: index into [`Plain`]'s owned strings.
    Decoded(u32),
    /// A `str` that is not valid Unicode text (a lone surrogate, which Python allows).
    BadStr,
    Bytes,
    ByteArray,
    /// A Python 2 `str` (`STRING`, `BINSTRING`): CPython 3 never writes one for a `str`.
    Py2Str,
    /// A tuple, list, dict, set or frozenset.
    Container(u32),
}

/// What a container is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Tuple,
    List,
    /// Items alternate key, value.
    Dict,
    Set,
    FrozenSet,
}

/// One container: a chain of runs of items in the flat buffer.
#[derive(Debug, Clone, Copy)]
struct Container {
    shape: Shape,
    /// Items (for a dict, keys plus values).
    len: u32,
    first: u32,
    last: u32,
}

/// A run of items: `items[start..start + len]`, then the run at `next`.
#[derive(Debug, Clone, Copy)]
struct Run {
    start: u32,
    len: u32,
    next: u32,
}

const NO_RUN: u32 = u32::MAX;

/// Why a pickle gave no plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PlainError {
    /// It holds an opcode that imports or calls; the walk stopped there.
    Code,
    /// It is not a pickle CPython would load, or it needs more than the decoder allows.
    Invalid(String),
}

impl From<String> for PlainError {
    fn from(s: String) -> Self {
        PlainError::Invalid(s)
    }
}

impl From<&str> for PlainError {
    fn from(s: &str) -> Self {
        PlainError::Invalid(s.to_owned())
    }
}

/// A decoded pickle of plain data: its top-level value and the arena its containers live in.
#[derive(Debug)]
pub(crate) struct Plain<'a> {
    top: Value<'a>,
    containers: Vec<Container>,
    runs: Vec<Run>,
    items: Vec<Value<'a>>,
    /// Text that needed decoding (protocol 0), one entry per `UNICODE` opcode.
    owned: Vec<Box<str>>,
    /// Where the opcodes that matter for splicing stand.
    layout: Layout,
}

/// Where a few opcodes of a decoded pickle stand (byte offsets into its body): what a reply that
/// embeds the pickle unchanged needs ([`crate::reply::hello`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The STOP opcode that ended the walk.
    pub stop: usize,
    /// The two opcodes before it, oldest first: (opcode, offset); `(STOP, usize::MAX)` where
    /// there were fewer.
    pub before_stop: [(u8, usize); 2],
    /// The first FRAME opcode, if any, and how many there were.
    pub frame: Option<usize>,
    /// How many FRAME opcodes the walk met.
    pub frames: u32,
}

impl<'a> Plain<'a> {
    /// Walks `body` to its STOP opcode. `limit` caps the entries held at once; the body's
    /// length caps them too.
    pub(crate) fn decode(body: &'a [u8], limit: usize) -> Result<Plain<'a>, PlainError> {
        if u32::try_from(body.len()).is_err() {
            return Err("pickle over 4 GiB".into());
        }
        Walk::new(limit, body.len()).run(body)
    }

    /// The top-level value.
    pub(crate) fn top(&self) -> Value<'a> {
        self.top
    }

    /// Where the STOP, the opcodes before it and the FRAMEs stand.
    pub(crate) fn layout(&self) -> Layout {
        self.layout
    }

    /// A container's shape and item count (a dict counts keys and values), if `v` is one.
    pub(crate) fn container(&self, v: Value<'a>) -> Option<(Shape, usize)> {
        match v {
            Value::Container(i) => self
                .containers
                .get(i as usize)
                .map(|c| (c.shape, c.len as usize)),
            _ => None,
        }
    }

    /// A container's items in order (for a dict: key, value, key, value, …); nothing if `v` is
    /// not a container.
    pub(crate) fn items(&self, v: Value<'a>) -> Items<'_, 'a> {
        let run = match v {
            Value::Container(i) => self.containers.get(i as usize).map_or(NO_RUN, |c| c.first),
            _ => NO_RUN,
        };
        Items {
            plain: self,
            run,
            at: 0,
        }
    }

    /// The text of a `str`; `None` for anything else, or for a `str` that is not valid
    /// Unicode text.
    pub(crate) fn str(&self, v: Value<'a>) -> Option<&str> {
        match v {
            Value::Str(s) => Some(s),
            Value::Decoded(i) => self.owned.get(i as usize).map(|s| &**s),
            _ => None,
        }
    }

    /// The Python type name of `v`, for messages.
    pub(crate) fn type_name(&self, v: Value<'a>) -> &'static str {
        match v {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) | Value::Decoded(_) | Value::BadStr => "str",
            Value::Bytes => "bytes",
            Value::ByteArray => "bytearray",
            Value::Py2Str => "Python 2 string",
            Value::Container(_) => match self.container(v).map(|c| c.0) {
                Some(Shape::Tuple) => "tuple",
                Some(Shape::List) => "list",
                Some(Shape::Dict) => "dict",
                Some(Shape::Set) => "set",
                Some(Shape::FrozenSet) | None => "frozenset",
            },
        }
    }
}

/// Iterator over a container's items.
#[derive(Debug)]
pub(crate) struct Items<'p, 'a> {
    plain: &'p Plain<'a>,
    run: u32,
    at: u32,
}

impl<'a> Iterator for Items<'_, 'a> {
    type Item = Value<'a>;

    fn next(&mut self) -> Option<Value<'a>> {
        loop {
            let run = self.plain.runs.get(self.run as usize)?;
            if self.at < run.len {
                let v = self
                    .plain
                    .items
                    .get((run.start + self.at) as usize)
                    .copied();
                self.at += 1;
                return v;
            }
            self.run = run.next;
            self.at = 0;
        }
    }
}

#[cfg(test)]
mod tests;
