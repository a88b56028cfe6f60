//! The payload policy `payloads = "data"`: a publish may import only the globals a list allows.
//!
//! Unpickling runs code only through what the pickle *imports*: every callable that REDUCE,
//! NEWOBJ, NEWOBJ_EX, BUILD or OBJ can invoke was first fetched by `Unpickler.find_class` (for
//! GLOBAL, STACK_GLOBAL, INST and EXT1/2/4) or handed over by `persistent_load` (PERSID,
//! BINPERSID). This is the rule of the Python docs' "Restricting Globals" unpickler, applied
//! without unpickling: the scanner (see `scan`) already simulates the opcode stack, so as it
//! walks it asks [`Judge`] about each import, with the names CPython would import:
//!
//! - GLOBAL and INST: the module and name lines (UTF-8), mapped as `find_class` maps them while
//!   the protocol is below 3 (`__builtin__.set` is `builtins.set`; `compat_names`).
//! - STACK_GLOBAL: the two stack items it consumes, which must both be literal `str` values
//!   (pushed by a unicode opcode, possibly through the memo); anything else is refused,
//!   because its value is only known by running the pickle.
//! - OBJ: the class it takes from the stack must be the value of a global (already judged).
//! - EXT1/2/4: refused, naming the code: the copyreg extension registry lives in the
//!   receiving process and cannot be known here.
//! - PERSID/BINPERSID: refused: only the receiving unpickler's `persistent_load` knows them.
//!
//! Allowed names are exact `module.qualname` strings (`"datetime.datetime"`); a pickle naming
//! module `os` and name `path.join` (protocol 4 resolves dotted names) is judged as
//! `"os.path.join"`, the same object either way. The first import refused, in pickle order,
//! names the refusal.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use thiserror::Error;

use super::compat_names;
use super::value::{Enc, Kind, Span, Val};

/// Why a publish was refused by a [`Policy`]. `Display` is the reason the broker sends back:
/// `payload refused: it imports 'os.system'`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    /// GLOBAL, STACK_GLOBAL or INST names a global outside the allow-list (after the
    /// protocol-2 mapping): `module.qualname`.
    #[error("payload refused: it imports '{0}'")]
    Global(String),
    /// STACK_GLOBAL consumes stack items that are not both literal strings.
    #[error(
        "payload refused: it imports a global whose module and name are computed while \
         unpickling (STACK_GLOBAL on values that are not literal strings)"
    )]
    ComputedGlobal,
    /// OBJ instantiates something that is not the value of an allowed global.
    #[error("payload refused: OBJ instantiates a class that is not an allowed global")]
    ObjClass,
    /// EXT1/EXT2/EXT4 loads a copyreg extension, whose target only the receiver knows.
    #[error(
        "payload refused: it imports copyreg extension code {0}, which only the receiving \
         process can resolve"
    )]
    Extension(i64),
    /// PERSID/BINPERSID: a persistent id for the receiver's `persistent_load`.
    #[error(
        "payload refused: it holds a persistent id, which only the receiving unpickler resolves"
    )]
    PersistentId,
}

/// An `allow_globals` entry that is not `module.qualname`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "allow_globals entry {0:?} is not a \"module.qualname\" name (for example \"datetime.datetime\")"
)]
pub struct BadGlobalName(pub String);

/// `payloads = "data"` with an allow-list: which globals a publish's pickle may import.
///
/// Built once per configuration (share it behind an `Arc`), asked per frame through
/// [`Scanner::classify_with`](super::Scanner::classify_with). Plain `str`, `bytes`, `int`,
/// `float`, `bool`, `None`, `tuple`, `list` and `dict`, and from protocol 4 `set` and
/// `frozenset`, and from protocol 5 `bytearray`, have opcodes of their own and need no entry;
/// older protocols write sets as `builtins.set` (`__builtin__.set` in protocols 0 to 2),
/// frozensets as `builtins.frozenset`, bytearrays as `builtins.bytearray`, and `bytes` (below
/// protocol 3) as `_codecs.encode`, which then need an entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// module → qualnames. Each entry is stored at every `.` it could be split at, so that a
    /// `(module, name)` pair is allowed exactly when `module + "." + name` is an entry.
    allowed: HashMap<Box<str>, HashSet<Box<str>>>,
}

impl Policy {
    /// The data-only policy allowing exactly `allow_globals` (`"datetime.datetime"`,
    /// `"decimal.Decimal"`, `"builtins.set"`, …; empty: plain data only).
    ///
    /// Errors with [`BadGlobalName`] for an entry without a `.`, with an empty part, or with
    /// whitespace, none of which a pickle could import.
    pub fn data_only<S: AsRef<str>>(
        allow_globals: impl IntoIterator<Item = S>,
    ) -> Result<Self, BadGlobalName> {
        let mut allowed: HashMap<Box<str>, HashSet<Box<str>>> = HashMap::new();
        for entry in allow_globals {
            let entry = entry.as_ref();
            let valid = entry.contains('.')
                && entry.split('.').all(|part| !part.is_empty())
                && !entry.chars().any(char::is_whitespace);
            if !valid {
                return Err(BadGlobalName(entry.to_owned()));
            }
            for (dot, _) in entry.match_indices('.') {
                allowed
                    .entry(entry[..dot].into())
                    .or_default()
                    .insert(entry[dot + 1..].into());
            }
        }
        Ok(Policy { allowed })
    }

    /// Whether `module`.`name` is allowed, as written (no mapping).
    pub fn allows(&self, module: &str, name: &str) -> bool {
        self.allowed
            .get(module)
            .is_some_and(|names| names.contains(name))
    }

    /// Judges an import of `module`.`name` read while the pickle's protocol is `proto`.
    pub fn judge(&self, module: &str, name: &str, proto: u8) -> Result<(), Refusal> {
        let (module, name) = if proto < 3 {
            compat_names::map(module, name)
        } else {
            (module, name)
        };
        if self.allows(module, name) {
            Ok(())
        } else {
            Err(Refusal::Global(format!("{module}.{name}")))
        }
    }
}

/// What the scanner tells about each import as it walks (see `Scanner::walk`).
pub(crate) trait Imports {
    /// GLOBAL or INST: the module and name lines.
    fn lines(&mut self, body: &[u8], module: Span, name: Span, proto: u8);
    /// STACK_GLOBAL consuming `module` then `name` (the deeper item first).
    fn stack_global(&mut self, body: &[u8], module: Val, name: Val, proto: u8);
    /// OBJ instantiating `class`.
    fn obj(&mut self, class: Val);
    /// An opcode refused whatever the list holds (EXT, PERSID).
    fn refuse(&mut self, refusal: impl FnOnce() -> Refusal);
    /// The first refusal, if any.
    fn into_refusal(self) -> Option<Refusal>;
}

/// No policy: every method does nothing, and compiles to nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unjudged;

impl Imports for Unjudged {
    #[inline(always)]
    fn lines(&mut self, _: &[u8], _: Span, _: Span, _: u8) {}
    #[inline(always)]
    fn stack_global(&mut self, _: &[u8], _: Val, _: Val, _: u8) {}
    #[inline(always)]
    fn obj(&mut self, _: Val) {}
    #[inline(always)]
    fn refuse(&mut self, _: impl FnOnce() -> Refusal) {}
    #[inline(always)]
    fn into_refusal(self) -> Option<Refusal> {
        None
    }
}

/// One scan's verdict in progress under a policy: the first refusal met so far.
#[derive(Debug)]
pub(crate) struct Judge<'p> {
    policy: &'p Policy,
    refused: Option<Refusal>,
}

impl<'p> Judge<'p> {
    pub(crate) fn new(policy: &'p Policy) -> Self {
        Judge {
            policy,
            refused: None,
        }
    }

    fn judge(&mut self, module: &str, name: &str, proto: u8) {
        if let Err(r) = self.policy.judge(module, name, proto) {
            self.refused = Some(r);
        }
    }
}

impl Imports for Judge<'_> {
    /// Lines are UTF-8, as CPython decodes GLOBAL's (INST's are ASCII: a non-ASCII name cannot
    /// load, and no entry would match its replacement characters either).
    fn lines(&mut self, body: &[u8], module: Span, name: Span, proto: u8) {
        if self.refused.is_none() {
            let text = |s: Span| String::from_utf8_lossy(s.of(body));
            self.judge(&text(module), &text(name), proto);
        }
    }

    fn stack_global(&mut self, body: &[u8], module: Val, name: Val, proto: u8) {
        if self.refused.is_some() {
            return;
        }
        let (Val::Str(m, me), Val::Str(n, ne)) = (module, name) else {
            return self.refuse(|| Refusal::ComputedGlobal);
        };
        match (literal(body, m, me), literal(body, n, ne)) {
            (Some(module), Some(name)) => self.judge(&module, &name, proto),
            // Not text CPython would decode: it fails to load; refuse rather than guess.
            _ => self.refuse(|| Refusal::ComputedGlobal),
        }
    }

    fn obj(&mut self, class: Val) {
        if class != Val::Other(Kind::Global) {
            self.refuse(|| Refusal::ObjClass);
        }
    }

    fn refuse(&mut self, refusal: impl FnOnce() -> Refusal) {
        if self.refused.is_none() {
            self.refused = Some(refusal());
        }
    }

    fn into_refusal(self) -> Option<Refusal> {
        self.refused
    }
}

fn literal(body: &[u8], s: Span, enc: Enc) -> Option<Cow<'_, str>> {
    super::decode_str(body, s, enc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Envelope, Scanner};

    /// `("t", <payload>)` at protocol 4: `payload` is the opcodes that push one value.
    fn p4(payload: &[u8]) -> Vec<u8> {
        [b"\x80\x04\x8c\x01t", payload, b"\x86."].concat()
    }

    /// `("t", <payload>)` at protocol 0 (no PROTO opcode).
    fn p0(payload: &[u8]) -> Vec<u8> {
        [b"(Vt\n", payload, b"t."].concat()
    }

    fn verdict(body: &[u8], allow: &[&str]) -> Result<(), Refusal> {
        let policy = Policy::data_only(allow).unwrap();
        match Scanner::default().classify_with(body, &policy) {
            Ok(Envelope::Publish { topic }) => {
                assert_eq!(topic, "t");
                Ok(())
            }
            Ok(other) => panic!("not a publish: {other:?}"),
            Err(refused) => {
                assert_eq!(refused.topic, "t");
                Err(refused.reason)
            }
        }
    }

    fn global(name: &str) -> Result<(), Refusal> {
        Err(Refusal::Global(name.into()))
    }

    #[test]
    fn plain_data_passes_with_an_empty_allow_list() {
        // {"i": 1, "v": 21.5} and a frozenset and set at protocol 4.
        let dict = b"}\x94(\x8c\x01i\x94K\x01\x8c\x01v\x94G@5\x80\x00\x00\x00\x00\x00u";
        assert_eq!(verdict(&p4(dict), &[]), Ok(()));
        assert_eq!(verdict(&p4(b"\x8f(K\x01\x90"), &[]), Ok(()));
        assert_eq!(verdict(&p4(b"(K\x01\x91"), &[]), Ok(()));
    }

    #[test]
    fn a_stock_datetime_publish_passes_only_when_allowed() {
        let date = b"\x80\x04\x95&\x00\x00\x00\x00\x00\x00\x00\x8c\x01t\x94\x8c\x08datetime\x94\x8c\x04date\x94\x93\x94C\x04\x07\xe4\x01\x01\x94\x85\x94R\x94\x86\x94.";
        assert_eq!(verdict(date, &["datetime.date"]), Ok(()));
        assert_eq!(
            verdict(date, &["datetime.datetime"]),
            global("datetime.date")
        );
        assert_eq!(verdict(date, &[]), global("datetime.date"));
    }

    #[test]
    fn protocol_0_globals_are_judged_after_the_python_2_mapping() {
        let set = b"(Vt\np0\nc__builtin__\nset\np1\n((lp2\nI1\natp3\nRp4\ntp5\n.";
        assert_eq!(verdict(set, &["builtins.set"]), Ok(()));
        assert_eq!(verdict(set, &["__builtin__.set"]), global("builtins.set"));
        let system = p0(b"cos\nsystem\n(Vecho hi\ntR");
        assert_eq!(verdict(&system, &["builtins.set"]), global("os.system"));
        // INST names its class in lines, mapped too.
        let inst = p0(b"(i__builtin__\nobject\n");
        assert_eq!(verdict(&inst, &["builtins.object"]), Ok(()));
        assert_eq!(verdict(&inst, &[]), global("builtins.object"));
    }

    #[test]
    fn the_mapping_follows_the_protocol_the_pickle_declares_at_that_point() {
        let at = |proto: u8| [b"\x80", &[proto][..], b"\x8c\x01tc__builtin__\nset\n\x86."].concat();
        assert_eq!(verdict(&at(2), &["builtins.set"]), Ok(()));
        assert_eq!(
            verdict(&at(3), &["builtins.set"]),
            global("__builtin__.set")
        );
        // A second PROTO changes it midway, as the Unpickler's own `proto` does.
        let switched = b"\x80\x04\x8c\x01t\x80\x02c__builtin__\nset\n\x86.";
        assert_eq!(verdict(switched, &["builtins.set"]), Ok(()));
    }

    #[test]
    fn stack_global_is_judged_by_the_items_it_consumes_not_the_last_strings_seen() {
        // "os", "system" pushed; then "datetime", "datetime" pushed and folded into a tuple
        // that is popped: STACK_GLOBAL takes "os" and "system".
        let trick = p4(b"\x8c\x02os\x8c\x06system\x8c\x08datetime\x8c\x08datetime\x860\x93");
        assert_eq!(verdict(&trick, &["datetime.datetime"]), global("os.system"));
        // The strings come from the memo, stored long before.
        let memo =
            p4(b"\x8c\x02os\x94\x8c\x06system\x9400\x8c\x01x\x8c\x01yh\x00h\x01\x93\x86\x86");
        assert_eq!(verdict(&memo, &["x.y"]), global("os.system"));
        // Strings discarded with their mark do not count.
        let marked = p4(b"\x8c\x08datetime\x8c\x08datetime(\x8c\x02os\x8c\x06system1\x93");
        assert_eq!(verdict(&marked, &["datetime.datetime"]), Ok(()));
        assert_eq!(
            verdict(&marked, &["os.system"]),
            global("datetime.datetime")
        );
    }

    #[test]
    fn stack_global_on_values_that_are_not_literal_strings_is_refused() {
        // The module is an int; then the name is the result of a call.
        let int = p4(b"K\x01\x8c\x06system\x93");
        assert_eq!(verdict(&int, &["os.system"]), Err(Refusal::ComputedGlobal));
        let call = p4(b"\x8c\x02os\x8c\x08builtins\x8c\x03str\x93\x8c\x06system\x85R\x93");
        assert_eq!(
            verdict(&call, &["builtins.str"]),
            Err(Refusal::ComputedGlobal)
        );
    }

    #[test]
    fn obj_must_instantiate_an_imported_global() {
        let allowed = p4(b"(\x8c\x08datetime\x8c\x04date\x93M\xe4\x07K\x01K\x01o");
        assert_eq!(verdict(&allowed, &["datetime.date"]), Ok(()));
        assert_eq!(verdict(&allowed, &[]), global("datetime.date"));
        // The class comes back from the memo: still the global.
        let memo = p4(b"\x8c\x08datetime\x8c\x04date\x93\x940(h\x00o");
        assert_eq!(verdict(&memo, &["datetime.date"]), Ok(()));
        let list = p4(b"(]o");
        assert_eq!(verdict(&list, &[]), Err(Refusal::ObjClass));
    }

    #[test]
    fn extensions_and_persistent_ids_are_refused_by_name() {
        assert_eq!(verdict(&p4(b"\x82\xf0"), &[]), Err(Refusal::Extension(240)));
        assert_eq!(
            verdict(&p4(b"\x83\x34\x12"), &[]),
            Err(Refusal::Extension(0x1234))
        );
        assert_eq!(
            verdict(&p4(b"\x84\x56\x34\x12\x00"), &[]),
            Err(Refusal::Extension(0x123456))
        );
        assert_eq!(verdict(&p0(b"Pkey\n"), &[]), Err(Refusal::PersistentId));
        assert_eq!(
            verdict(&p4(b"\x8c\x03keyQ"), &[]),
            Err(Refusal::PersistentId)
        );
    }

    #[test]
    fn only_publishes_are_judged_and_invalid_frames_stay_invalid() {
        let policy = Policy::data_only(Vec::<String>::new()).unwrap();
        let mut scanner = Scanner::default();
        // ("$sub", "a"), with a GLOBAL pushed and popped on the way.
        let sub = b"\x80\x04\x8c\x04$subcos\nsystem\n0\x8c\x01a\x86.";
        assert!(matches!(
            scanner.classify_with(sub, &policy),
            Ok(Envelope::Subscribe(_))
        ));
        let bad = b"\x80\x04cos\nsystem\n.";
        assert!(matches!(
            scanner.classify_with(bad, &policy),
            Ok(Envelope::Invalid(_))
        ));
        // The same scanner, without a policy, forwards what the policy refuses.
        let system = p0(b"cos\nsystem\n(Vecho hi\ntR");
        assert!(matches!(
            scanner.classify(&system),
            Envelope::Publish { .. }
        ));
        assert!(scanner.classify_with(&system, &policy).is_err());
    }

    #[test]
    fn an_entry_allows_exactly_its_own_dotted_name() {
        let p = Policy::data_only(["datetime.datetime", "os.path.join"]).unwrap();
        assert!(p.allows("datetime", "datetime"));
        assert!(!p.allows("datetime", "date"));
        assert!(!p.allows("datetime.datetime", ""));
        assert!(p.allows("os.path", "join"));
        assert!(p.allows("os", "path.join"));
        assert!(!p.allows("os", "path"));
        assert!(!p.allows("os", "system"));
    }

    #[test]
    fn names_that_no_pickle_could_import_are_config_errors() {
        for bad in ["set", "builtins.", ".set", "a..b", "os. system", ""] {
            assert_eq!(
                Policy::data_only([bad]),
                Err(BadGlobalName(bad.into())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn below_protocol_3_python_2_names_are_judged_by_what_python_3_imports() {
        let p = Policy::data_only(["builtins.set", "copyreg._reconstructor"]).unwrap();
        assert_eq!(p.judge("__builtin__", "set", 2), Ok(()));
        assert_eq!(p.judge("copy_reg", "_reconstructor", 0), Ok(()));
        assert_eq!(
            p.judge("__builtin__", "set", 3),
            Err(Refusal::Global("__builtin__.set".into()))
        );
        assert_eq!(
            p.judge("__builtin__", "eval", 2),
            Err(Refusal::Global("builtins.eval".into()))
        );
        assert_eq!(
            Refusal::Global("os.system".into()).to_string(),
            "payload refused: it imports 'os.system'"
        );
    }
}
