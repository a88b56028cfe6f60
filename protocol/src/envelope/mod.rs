//! The envelope: what a frame body asks of the broker, read without building Python objects.
//!
//! Every message after the handshake is a pickle of `(topic, payload)`. [`Scanner::classify`]
//! walks the pickle's opcodes (see `scan`) and answers with an [`Envelope`]: a publish and its
//! topic, a control request (`$sub`, `$unsub`, `$ping`, `$metrics`, `$hello`), `Close` (the string
//! `"close"`), or `Invalid` with a reason a person can act on. The payload is never decoded and
//! no pickle code ever runs: the broker forwards the publisher's bytes as they are.
//!
//! [`Scanner::classify_with`] does the same and also judges a publish under a payload
//! [`Policy`] (`payloads = "data"`: import nothing outside `allow_globals`; see `policy`),
//! during the same walk.
//!
//! The one exception is `$metrics`: `plain` walks the same opcodes into plain data (str, int,
//! float, bool, None, tuple, list, dict) for [`crate::metrics::Batch`], and stops at the first
//! opcode that imports or calls.

mod compat_names;
mod fast;
pub(crate) mod opcodes;
pub(crate) mod plain;
mod policy;
mod scan;
mod text;
mod value;

use std::borrow::Cow;

pub use policy::{BadGlobalName, Policy, Refusal};
use policy::{Imports, Judge, Unjudged};
pub use scan::Scanner;
use value::{Enc, IntEnc, Kind, Span, Val};

use crate::topic;

/// A subscription request's arguments: `pattern`, or `(pattern, group)` for a queue group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interest<'a> {
    /// The pattern (validated).
    pub pattern: Cow<'a, str>,
    /// The queue group (validated), if any.
    pub group: Option<Cow<'a, str>>,
}

/// How a big integer token is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BigIntText<'a> {
    /// Little-endian two's complement bytes.
    LeBytes(&'a [u8]),
    /// Decimal digits, maybe signed.
    Decimal(&'a str),
}

/// A `$ping` token: the broker echoes it in `$pong`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token<'a> {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An int that fits 64 bits.
    Int(i64),
    /// A larger int.
    BigInt(BigIntText<'a>),
    /// A `str`.
    Str(Cow<'a, str>),
    /// A `bytes`.
    Bytes(&'a [u8]),
}

/// What one frame body asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope<'a> {
    /// `(topic, payload)` with a valid plain topic: route the frame as it is.
    Publish {
        /// The topic (validated).
        topic: Cow<'a, str>,
    },
    /// `("$sub", pattern)` or `("$sub", (pattern, group))`.
    Subscribe(Interest<'a>),
    /// `("$unsub", pattern)` or `("$unsub", (pattern, group))`.
    Unsubscribe(Interest<'a>),
    /// `("$ping", token)`.
    Ping(Token<'a>),
    /// `("$metrics", ops)`. `has_code` is true when the pickle imports or calls anything: such a
    /// payload must never be decoded.
    Metrics {
        /// The pickle holds GLOBAL, REDUCE, BUILD or another opcode that imports or calls.
        has_code: bool,
    },
    /// `("$hello", {"name": ...})`: the connection introduces itself. The scanner only knows
    /// the argument is a dict; [`crate::name::hello_name`] reads the name (plain data only).
    Hello {
        /// The pickle imports or calls something: never decode it.
        has_code: bool,
    },
    /// The string `"close"`.
    Close,
    /// Anything else, with the reason to send back.
    Invalid(String),
}

fn kind_of(v: Val) -> String {
    match v {
        Val::None => "None".into(),
        Val::Bool(_) => "bool".into(),
        Val::Int(_) | Val::BigInt(..) => "int".into(),
        Val::Str(..) => "str".into(),
        Val::Bytes(_) => "bytes".into(),
        Val::Pair(_) => "2-tuple".into(),
        Val::Other(k) => k.name(),
    }
}

fn decode_str(body: &[u8], s: Span, enc: Enc) -> Option<Cow<'_, str>> {
    let raw = s.of(body);
    match enc {
        Enc::Utf8 => std::str::from_utf8(raw).ok().map(Cow::Borrowed),
        Enc::RawEscape => text::raw_unicode_escape(raw),
    }
}

/// A publish that a payload [`Policy`] refuses: never route it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused<'a> {
    /// The topic it was published to (validated).
    pub topic: Cow<'a, str>,
    /// Why; its `Display` is the reason to send back (`payload refused: it imports 'os.system'`).
    pub reason: Refusal,
}

impl Scanner {
    /// Classifies one frame body. Allocation-free for ordinary publishes once warm.
    pub fn classify<'a>(&mut self, body: &'a [u8]) -> Envelope<'a> {
        self.classify_judged(body, Unjudged)
    }

    /// Classifies one frame body like [`Scanner::classify`] and, when it is a publish, judges
    /// its pickle under `policy` in the same walk: `Err` when it imports anything the policy
    /// does not allow (the first such import names the [`Refusal`]). Every other envelope is
    /// returned as `classify` returns it: only publishes are forwarded, so only they are
    /// judged. A pickle without GLOBAL, STACK_GLOBAL, INST, OBJ, EXT or PERSID opcodes costs
    /// what `classify` costs; one with them allocates only to name a refusal.
    pub fn classify_with<'a>(
        &mut self,
        body: &'a [u8],
        policy: &Policy,
    ) -> Result<Envelope<'a>, Refused<'a>> {
        self.refused = None;
        let envelope = self.classify_judged(body, Judge::new(policy));
        match (envelope, self.refused.take()) {
            (Envelope::Publish { topic }, Some(reason)) => Err(Refused { topic, reason }),
            (envelope, _) => Ok(envelope),
        }
    }

    fn classify_judged<'a, J: Imports>(&mut self, body: &'a [u8], judge: J) -> Envelope<'a> {
        let shape = if self.shortcut {
            fast::recognise(body)
        } else {
            None
        };
        let walked = match &shape {
            Some(shape) => self.walk_publish(body, shape, judge),
            None => self.walk(body, judge),
        };
        let scanned = match walked {
            Ok(s) => s,
            Err(reason) => return Envelope::Invalid(reason),
        };
        // A pair whose first item is the recognised topic's string is a publish to it: the topic
        // was checked as `envelope` would check it (see `fast`).
        if let (Some(shape), Val::Pair(i)) = (&shape, scanned.value) {
            if self.pairs[i as usize].0 == shape.topic_val() {
                return Envelope::Publish {
                    topic: Cow::Borrowed(shape.topic),
                };
            }
        }
        match self.envelope(body, scanned.value, scanned.has_code) {
            Ok(e) => e,
            Err(reason) => Envelope::Invalid(reason),
        }
    }

    fn string<'a>(&self, body: &'a [u8], v: Val, what: &str) -> Result<Cow<'a, str>, String> {
        match v {
            Val::Str(s, enc) => {
                decode_str(body, s, enc).ok_or_else(|| format!("{what} is not valid Unicode text"))
            }
            other => Err(format!("{what} must be a str, not a {}", kind_of(other))),
        }
    }

    // Inlined into both classify paths: out of line it cost a publish ~5% more instructions
    // (a Result returned through memory; callgrind on benches/envelope.rs).
    #[inline(always)]
    fn envelope<'a>(
        &self,
        body: &'a [u8],
        top: Val,
        has_code: bool,
    ) -> Result<Envelope<'a>, String> {
        let (first, second) = match top {
            Val::Pair(i) => self.pairs[i as usize],
            Val::Str(s, enc) if decode_str(body, s, enc).as_deref() == Some("close") => {
                return Ok(Envelope::Close)
            }
            other => {
                return Err(format!(
                    "expected a (topic, payload) tuple, got a {}",
                    kind_of(other)
                ))
            }
        };
        let topic = self.string(body, first, "the topic")?;
        if !topic.starts_with('$') {
            topic::validate_topic(&topic).map_err(|e| format!("topic {topic:?} {e}"))?;
            return Ok(Envelope::Publish { topic });
        }
        match &*topic {
            "$sub" => Ok(Envelope::Subscribe(self.interest(body, second, "$sub")?)),
            "$unsub" => Ok(Envelope::Unsubscribe(
                self.interest(body, second, "$unsub")?,
            )),
            "$ping" => Ok(Envelope::Ping(self.token(body, second)?)),
            "$metrics" => Ok(Envelope::Metrics { has_code }),
            "$hello" => match second {
                Val::Other(Kind::Dict) => Ok(Envelope::Hello { has_code }),
                other => Err(format!(
                    "$hello takes a dict such as {{\"name\": \"worker-1\"}}, not a {}",
                    kind_of(other)
                )),
            },
            other => Err(format!(
                "unknown control topic {other:?}: topics starting with '$' are the broker's \
                 ($sub, $unsub, $ping, $metrics, $hello)"
            )),
        }
    }

    fn interest<'a>(&self, body: &'a [u8], v: Val, op: &str) -> Result<Interest<'a>, String> {
        let (pattern, group) = match v {
            Val::Pair(i) => {
                let (p, g) = self.pairs[i as usize];
                let pattern = self.string(body, p, &format!("the {op} pattern"))?;
                let group = self.string(body, g, &format!("the {op} queue group"))?;
                topic::validate_group(&group).map_err(|e| format!("queue group {group:?} {e}"))?;
                (pattern, Some(group))
            }
            Val::Str(..) => (self.string(body, v, &format!("the {op} pattern"))?, None),
            other => {
                return Err(format!(
                    "{op} takes a pattern or a (pattern, group) tuple, not a {}",
                    kind_of(other)
                ))
            }
        };
        topic::validate_pattern(&pattern).map_err(|e| format!("pattern {pattern:?} {e}"))?;
        Ok(Interest { pattern, group })
    }

    fn token<'a>(&self, body: &'a [u8], v: Val) -> Result<Token<'a>, String> {
        Ok(match v {
            Val::None => Token::None,
            Val::Bool(b) => Token::Bool(b),
            Val::Int(n) => Token::Int(n),
            Val::BigInt(s, IntEnc::Le) => Token::BigInt(BigIntText::LeBytes(s.of(body))),
            Val::BigInt(s, IntEnc::Decimal) => Token::BigInt(BigIntText::Decimal(
                std::str::from_utf8(s.of(body)).map_err(|_| "bad integer token")?,
            )),
            Val::Str(..) => Token::Str(self.string(body, v, "the $ping token")?),
            Val::Bytes(s) => Token::Bytes(s.of(body)),
            other => {
                return Err(format!(
                    "the $ping token must be None, a bool, an int, a str or bytes, not a {}",
                    kind_of(other)
                ))
            }
        })
    }
}

/// Classifies one frame body with a fresh [`Scanner`]. Keep a scanner per connection instead
/// where frames come in a stream.
pub fn classify(body: &[u8]) -> Envelope<'_> {
    Scanner::default().classify(body)
}

#[cfg(test)]
mod tests;
