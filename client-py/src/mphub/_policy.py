"""The payload policy on the receiving side: unpickle data, and only the globals you allow.

    policy = PayloadPolicy(allow_globals=["datetime.datetime"])
    obj = policy.loads(frame_body)      # PayloadRefused if it would import anything else

`pickle.loads` runs whatever a pickle imports, so by default every publisher on the bus can run
code in every subscriber. This is the "Restricting Globals" unpickler of the `pickle` docs, with
the same rule the broker applies for `payloads = "data"` (docs/security.md):

- every import (`GLOBAL`, `STACK_GLOBAL`, `INST`, and `EXT*` on a registry miss) goes through
  `find_class`, which allows exactly the `module.qualname` strings of `allow_globals`
  (`"datetime.datetime"`, `"decimal.Decimal"`, `"builtins.set"`);
- names are judged after the protocol-2 mapping CPython applies (`__builtin__.set` is
  `builtins.set`). CPython maps *inside* `Unpickler.find_class` (Lib/pickle.py, and
  `_pickle_Unpickler_find_class_impl` in Modules/_pickle.c, 3.8 to 3.14), so an override sees
  the names as written and must map them itself; it then resolves the mapped name itself, so
  what is judged is exactly what is imported;
- persistent ids are refused, and so are copyreg extension codes (`EXT1/2/4`) — CPython serves
  a code seen before from a cache without asking `find_class`;
- `REDUCE`, `BUILD`, `NEWOBJ` and `OBJ` can then only call what was allowed.

The C unpickler does not expose the protocol it is reading, which decides the mapping (below 3)
and dotted names (4 and up); it is taken from the pickle's leading `PROTO` opcode (none: 0, as
CPython starts). CPython writes `PROTO` only there. A hand-made pickle that switches protocol
midway may be judged by its first one: it can then fail to load, never import a name off the
list.
"""

from __future__ import annotations

import _compat_pickle
import copyreg
import importlib
import io
import pickle
import pickletools
from typing import Any, FrozenSet, Iterable, Optional, Tuple, Union

from .errors import PayloadRefused

Buffer = Union[bytes, bytearray, memoryview]

_PROTO = 0x80
_EXTENSIONS = frozenset({"EXT1", "EXT2", "EXT4"})
_STRINGS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"})
_PREAMBLE = frozenset({"PROTO", "FRAME", "MARK"})


def _valid_name(entry: str) -> bool:
    parts = entry.split(".")
    return len(parts) >= 2 and all(parts) and not any(c.isspace() for c in entry)


def _protocol(data: Buffer) -> int:
    """The protocol the Unpickler reads `data` with until a later PROTO: its leading one."""
    return data[1] if len(data) >= 2 and data[0] == _PROTO else 0


def _fix_imports(module: str, name: str) -> Tuple[str, str]:
    """What `Unpickler.find_class` imports for `module.name` below protocol 3."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _resolve(module: str, name: str, dotted: bool) -> Any:
    """Imports `module` and fetches `name` from it, as `Unpickler.find_class` does after its
    mapping: dotted names are attribute paths from protocol 4 on."""
    obj: Any = importlib.import_module(module)
    for part in name.split(".") if dotted else (name,):
        obj = getattr(obj, part)
    return obj


def _extension_code(data: Buffer) -> Optional[int]:
    """The first EXT1/2/4 code in `data`, if it has one (None also for a pickle too broken to
    walk: loading it then fails by itself)."""
    try:
        for op, arg, _ in pickletools.genops(bytes(data)):
            if op.name in _EXTENSIONS and isinstance(arg, int):
                return arg
    except Exception:  # a broken pickle is the loader's to report
        return None
    return None


def _topic(data: Buffer) -> Optional[str]:
    """The topic of a `(topic, payload)` frame, read from its first opcodes without loading
    it: the first value it pushes, when that is a str. Only to say which subscription a
    refused message was for."""
    try:
        for op, arg, _ in pickletools.genops(bytes(data)):
            if op.name in _PREAMBLE:
                continue
            return arg if op.name in _STRINGS and isinstance(arg, str) else None
    except Exception:  # as above
        return None
    return None


class _Restricted(pickle.Unpickler):
    """`pickle.Unpickler` importing only allowed globals, with no persistent ids."""

    def __init__(self, data: Buffer, allowed: FrozenSet[str]) -> None:
        super().__init__(io.BytesIO(data))
        self._allowed = allowed
        proto = _protocol(data)
        self._fix_imports = proto < 3
        self._dotted = proto >= 4

    def find_class(self, module: str, name: str) -> Any:
        if self._fix_imports:
            module, name = _fix_imports(module, name)
        full = f"{module}.{name}"
        if full not in self._allowed:
            raise PayloadRefused(f"payload refused: it imports '{full}'")
        return _resolve(module, name, self._dotted)

    def persistent_load(self, pid: Any) -> Any:
        raise PayloadRefused(
            "payload refused: it holds a persistent id, which only the sender's unpickler resolves"
        )


class PayloadPolicy:
    """`payloads="data"`: unpickle plain data and the globals of `allow_globals`, nothing else.

    Plain `str`, `bytes`, `int`, `float`, `bool`, `None`, `tuple`, `list` and `dict` (and from
    protocol 4 `set` and `frozenset`, from 5 `bytearray`) need no entry; older protocols write
    sets, frozensets and bytearrays as `builtins.set` / `builtins.frozenset` /
    `builtins.bytearray`, and `bytes` below protocol 3 as `_codecs.encode`, which then do.
    `ValueError` for an entry that is not `module.qualname`.
    """

    __slots__ = ("_allowed",)

    def __init__(self, allow_globals: Iterable[str] = ()) -> None:
        if isinstance(allow_globals, str):
            raise ValueError("allow_globals takes a list of names, not one str")
        allowed = frozenset(allow_globals)
        for entry in sorted(allowed):
            if not _valid_name(entry):
                raise ValueError(
                    f'allow_globals entry {entry!r} is not a "module.qualname" name '
                    '(for example "datetime.datetime")'
                )
        self._allowed = allowed

    @property
    def allow_globals(self) -> FrozenSet[str]:
        """The allowed `module.qualname` names."""
        return self._allowed

    def loads(self, data: Buffer) -> Any:
        """Unpickles one frame body, as `pickle.loads` would if it imports only allowed globals.

        Raises `PayloadRefused` (with `.topic` when the frame is a `(topic, payload)` publish)
        when it would import anything else, hold a persistent id or a copyreg extension code;
        whatever `pickle.loads` raises for a broken pickle otherwise.
        """
        # A registered extension is looked up (or served from cache) without find_class; with
        # none registered, EXT fails to load by itself and is named below.
        if getattr(copyreg, "_inverted_registry", None):
            code = _extension_code(data)
            if code is not None:
                raise self._extension(data, code)
        try:
            return _Restricted(data, self._allowed).load()
        except PayloadRefused as e:
            raise PayloadRefused(e.reason, topic=_topic(data)) from None
        except ValueError:
            code = _extension_code(data)
            if code is None:
                raise
            raise self._extension(data, code) from None

    @staticmethod
    def _extension(data: Buffer, code: int) -> PayloadRefused:
        return PayloadRefused(
            f"payload refused: it imports copyreg extension code {code}, which cannot be judged",
            topic=_topic(data),
        )

    def __repr__(self) -> str:
        return f"PayloadPolicy(allow_globals={sorted(self._allowed)!r})"


def payload_policy(payloads: str = "any", allow_globals: Iterable[str] = ()) -> Optional[PayloadPolicy]:
    """The policy for `connect(payloads=..., allow_globals=...)`: `None` for `"any"` (plain
    `pickle.loads`), a `PayloadPolicy` for `"data"`. `ValueError` for anything else, or for
    `allow_globals` given with `"any"` (it would silently do nothing)."""
    if payloads == "any":
        if list(allow_globals):
            raise ValueError('allow_globals needs payloads="data"')
        return None
    if payloads == "data":
        return PayloadPolicy(allow_globals)
    raise ValueError(f'payloads must be "any" or "data", not {payloads!r}')


__all__ = ["PayloadPolicy", "payload_policy"]
