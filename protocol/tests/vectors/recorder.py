"""What CPython's own Unpickler would import from a pickle, found without importing anything.

    python3 recorder.py < hex-lines       # one JSON object per input line

`Recorder` is the pure-Python `pickle._Unpickler` (the same opcode semantics as the C one) with
`find_class` replaced: it records the `module.name` CPython would import, after the protocol-2
name mapping exactly as `Unpickler.find_class` applies it (Lib/pickle.py), and hands back `Stub`,
which accepts every call, instantiation and state, so the load goes on. EXT1/2/4 and persistent
ids are recorded, never resolved. The Rust tests compare the envelope scanner's payload policy
with this (generate.py for the vectors, policy_against_cpython.rs for random pickles).
"""

import _compat_pickle
import io
import json
import pickle
import sys


class Stub:
    """Stands in for every imported global and everything made from one."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return Stub()

    def __setstate__(self, state):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass

    def add(self, value):
        pass

    def __setitem__(self, key, value):
        pass


class Recorder(pickle._Unpickler):
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, data):
        super().__init__(io.BytesIO(data))
        self.imports = []
        self.extensions = []
        self.persistent_ids = 0
        self.obj_non_global = False

    def find_class(self, module, name):
        # The mapping of Unpickler.find_class, then no import at all.
        if self.proto < 3 and self.fix_imports:
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        self.imports.append(f"{module}.{name}")
        return Stub

    def persistent_load(self, pid):
        self.persistent_ids += 1
        return Stub()

    def _extension(self, code):
        self.extensions.append(code)
        self.append(Stub)

    def load_ext1(self):
        self._extension(self.read(1)[0])

    def load_ext2(self):
        self._extension(int.from_bytes(self.read(2), "little"))

    def load_ext4(self):
        self._extension(int.from_bytes(self.read(4), "little", signed=True))

    def load_obj(self):
        # As pickle._Unpickler.load_obj; the class is the first item above the mark, and
        # only find_class and EXT hand out the Stub class itself.
        args = self.pop_mark()
        if not args or args[0] is not Stub:
            self.obj_non_global = True
        cls = args.pop(0)
        self._instantiate(cls, args)

    dispatch[pickle.EXT1[0]] = load_ext1
    dispatch[pickle.EXT2[0]] = load_ext2
    dispatch[pickle.EXT4[0]] = load_ext4
    dispatch[pickle.OBJ[0]] = load_obj


def record(data):
    """{"imports": [...], "extensions": [...], "persistent_ids": n, "obj_non_global": bool,
    "error": None or the exception CPython's load raised}."""
    r = Recorder(bytes(data))
    error = None
    try:
        r.load()
    except Exception as e:  # noqa: BLE001 - a failed load is an outcome to compare
        error = f"{type(e).__name__}: {e}"
    return {"imports": r.imports, "extensions": r.extensions, "persistent_ids": r.persistent_ids,
            "obj_non_global": r.obj_non_global, "error": error}


def main():
    for line in sys.stdin:
        print(json.dumps(record(bytes.fromhex(line.strip()))))


if __name__ == "__main__":
    main()
