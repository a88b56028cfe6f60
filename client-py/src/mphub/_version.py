"""`mphub.__version__`: the version every mphub package shares (the crates, the `mphub-broker`
wheel and this package), written once, as `[workspace.package] version` in the repository's
Cargo.toml.

An installed package reads it from its distribution metadata, where the build copied it from
Cargo.toml (pyproject.toml, `[tool.hatch.version]`). A source checkout on `sys.path`, as the
repository's tests run it, reads Cargo.toml itself, so the two cannot disagree.
"""

import re
from pathlib import Path

# The same pattern as pyproject.toml's `[tool.hatch.version]`.
_WORKSPACE_VERSION = re.compile(r'(?ms)^\[workspace\.package\].*?^version = "([^"]+)"')


def _version() -> str:
    here = Path(__file__).resolve()
    # client-py/src/mphub/_version.py in a checkout: the workspace is three folders up.
    cargo = here.parents[3] / "Cargo.toml"
    if here.parents[1].name == "src" and cargo.is_file():
        found = _WORKSPACE_VERSION.search(cargo.read_text(encoding="utf-8"))
        if found:
            return found.group(1)
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mphub")
    except PackageNotFoundError:  # copied somewhere without its metadata
        return "0+unknown"


__version__ = _version()
