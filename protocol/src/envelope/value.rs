//! The abstract values the opcode walker (`scan.rs`) keeps on its stack, and that the payload
//! policy (`policy.rs`) judges imports by: short strings and bytes as spans of the frame body,
//! ints, `None`, bools, 2-tuples, and an opaque [`Kind`] for everything else.

/// What an opaque value is, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Py2Str,
    Bytes,
    ByteArray,
    Int,
    Float,
    List,
    Dict,
    Set,
    FrozenSet,
    Tuple(u32),
    Object,
    /// What GLOBAL, STACK_GLOBAL or EXT pushed: a class or function the pickle imports.
    Global,
    Buffer,
}

impl Kind {
    /// The Python type name a person would recognise.
    pub fn name(self) -> String {
        match self {
            Kind::Str => "str".into(),
            Kind::Py2Str => "Python 2 string".into(),
            Kind::Bytes => "bytes".into(),
            Kind::ByteArray => "bytearray".into(),
            Kind::Int => "int".into(),
            Kind::Float => "float".into(),
            Kind::List => "list".into(),
            Kind::Dict => "dict".into(),
            Kind::Set => "set".into(),
            Kind::FrozenSet => "frozenset".into(),
            Kind::Tuple(n) => format!("{n}-tuple"),
            Kind::Object => "object".into(),
            Kind::Global => "global (an imported class or function)".into(),
            Kind::Buffer => "out-of-band buffer".into(),
        }
    }
}

/// How a string's bytes are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enc {
    /// UTF-8 (`BINUNICODE` and friends).
    Utf8,
    /// `raw-unicode-escape` (protocol 0 `UNICODE`).
    RawEscape,
}

/// How a big integer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntEnc {
    /// Little-endian two's complement (`LONG1`, `LONG4`).
    Le,
    /// Decimal text (`INT`, `LONG`).
    Decimal,
}

/// A region of the pickle body. Spans longer than `u32::MAX` are never kept: no topic, pattern
/// or token is that long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub len: u32,
}

impl Span {
    pub fn of(self, body: &[u8]) -> &[u8] {
        &body[self.start..self.start + self.len as usize]
    }
}

/// An abstract Python value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Val {
    None,
    Bool(bool),
    Int(i64),
    BigInt(Span, IntEnc),
    Str(Span, Enc),
    Bytes(Span),
    /// A 2-tuple: index into the scanner's pair arena.
    Pair(u32),
    Other(Kind),
}
