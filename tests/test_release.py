"""The packages as users get them: the `mphub-broker` wheel and client-py's sdist and wheel,
installed into a fresh virtual environment with nothing on PATH but that environment, serving a
stock client and client-py; `pip install ./broker` from the checkout; the broker's sdist; the three
crates packaged for crates.io; one version everywhere.

maturin runs cargo with the release profile into the workspace's target/, so after `make build`
the broker is not compiled again: each wheel takes seconds. Needs maturin and pip's `build`
(tests/requirements.txt; `make venv` installs them).
"""

import email.parser
import importlib.util
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from multiprocessing.connection import Client

import pytest
from conftest import KEY, ROOT, Broker
from scenarios import scenario_publish_reaches_subscriber_unchanged, subscribe

VERSION = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]
LICENSE = "MIT OR Apache-2.0"
CRATES = ["mphub-protocol", "mphub-broker", "mphub-client"]

needs_build = pytest.mark.skipif(
    importlib.util.find_spec("build") is None or importlib.util.find_spec("maturin") is None,
    reason="maturin or pip's `build` missing: run through `make test-e2e` (or `make venv`, then .venv/bin/python)",
)


def run(cmd, timeout=600, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


def metadata(text):
    """Core metadata (a wheel's METADATA, an sdist's PKG-INFO) as an email message."""
    return email.parser.Parser().parsestr(text)


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    # The broker's wheel as a release makes it: manylinux-tagged after maturin checks the glibc
    # symbols it needs (a plain `pip wheel` tags it for this machine only). Then its sdist, which
    # brings the workspace and mphub-protocol along.
    maturin = [sys.executable, "-m", "maturin"]
    run([*maturin, "build", "--release", "--locked", "-m", ROOT / "broker" / "Cargo.toml", "--out", out],
        timeout=1800)
    run([*maturin, "sdist", "-m", ROOT / "broker" / "Cargo.toml", "--out", out])
    # Without flags, `build` makes the sdist, then the wheel from that sdist: the path an installer
    # takes with the sdist, away from the checkout's Cargo.toml.
    run([sys.executable, "-m", "build", "--outdir", out, ROOT / "client-py"])
    return out


def bare_env(venv):
    """An environment whose PATH holds the venv alone: no cargo, no rustc, no other Python."""
    return {"PATH": str(venv / "bin")}


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory):
    env = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", env])
    # Wheels only, from dist/ only: nothing is compiled or downloaded.
    run([env / "bin" / "python", "-m", "pip", "install", "--no-index", "--only-binary", ":all:",
         "--find-links", dist, "mphub-broker", "mphub"], env=bare_env(env))
    return env


@pytest.fixture(scope="module")
def installed_broker(venv):
    """The venv's `mphub` on a free loopback port, with the test authkey."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MPHUB_BIN", str(venv / "bin" / "mphub"))
        b = Broker(["--listen", "127.0.0.1:0", "--metrics", "off"],
                   {**bare_env(venv), "MPHUB_AUTHKEY": KEY.decode()})
    yield b
    b.stop()


@needs_build
def test_the_installed_wheel_gives_an_mphub_command_that_prints_the_workspace_version(venv):
    r = run([venv / "bin" / "mphub", "--version"], env=bare_env(venv))
    assert r.stdout.split() == ["mphub-broker", VERSION]


@needs_build
def test_a_stock_client_round_trips_through_the_installed_broker(venv, installed_broker):
    assert installed_broker.proc.args[0] == str(venv / "bin" / "mphub")
    scenario_publish_reaches_subscriber_unchanged(installed_broker.address, KEY)


# Runs in the fresh venv: the installed mphub package, not the checkout's.
CLIENT_PY = """
import sys
from pathlib import Path
import mphub

assert Path(mphub.__file__).is_relative_to(sys.prefix), mphub.__file__
with mphub.connect(sys.argv[1], authkey=sys.argv[2].encode()) as hub:
    sub = hub.subscribe("release.>")
    hub.publish("release.check", {"v": 1})
    msg = sub.next(timeout=10)
print(mphub.__version__, msg.topic, msg.payload)
"""


@needs_build
def test_the_installed_client_py_round_trips_through_the_installed_broker_and_reaches_a_stock_client(
        venv, installed_broker, tmp_path):
    stock = Client(installed_broker.address, authkey=KEY)
    subscribe(stock, "release.>")
    r = run([venv / "bin" / "python", "-c", CLIENT_PY, installed_broker.addrs[0], KEY.decode()],
            env=bare_env(venv), cwd=tmp_path)
    assert r.stdout.strip() == f"{VERSION} release.check {{'v': 1}}"
    assert stock.recv() == ("release.check", {"v": 1})
    stock.close()


@needs_build
def test_the_installed_mphub_cli_pings_the_installed_broker(venv, installed_broker):
    # The key from the environment: the CLI refuses one on the command line.
    r = run([venv / "bin" / "mphub-cli", "-a", installed_broker.addrs[0], "ping"],
            env={**bare_env(venv), "MPHUB_AUTHKEY": KEY.decode()}, timeout=60)
    assert "pong from" in r.stdout


@needs_build
def test_pip_install_of_the_checkout_compiles_the_broker_and_puts_mphub_on_path(tmp_path):
    """README's `pip install ./broker`: pip fetches maturin, which runs cargo (reusing target/)."""
    env = tmp_path / "venv"
    run([sys.executable, "-m", "venv", env])
    run([env / "bin" / "python", "-m", "pip", "install", "--no-deps", ROOT / "broker"], timeout=1800)
    r = run([env / "bin" / "mphub", "--version"], env=bare_env(env))
    assert r.stdout.split() == ["mphub-broker", VERSION]


@needs_build
def test_the_sdists_and_wheels_carry_the_workspace_version_and_the_licence_expression(dist):
    (broker_wheel,) = dist.glob("mphub_broker-*.whl")
    (client_wheel,) = dist.glob("mphub-*.whl")
    (sdist,) = dist.glob("mphub-*.tar.gz")
    (broker_sdist,) = dist.glob("mphub_broker-*.tar.gz")

    # A wheel PyPI takes: a manylinux (or musllinux) platform tag, not a bare linux_* one.
    assert re.fullmatch(rf"mphub_broker-{re.escape(VERSION)}-py3-none-(manylinux|musllinux)_\w+\.whl",
                        broker_wheel.name), broker_wheel.name
    assert client_wheel.name == f"mphub-{VERSION}-py3-none-any.whl"
    assert sdist.name == f"mphub-{VERSION}.tar.gz"
    assert broker_sdist.name == f"mphub_broker-{VERSION}.tar.gz"

    with zipfile.ZipFile(broker_wheel) as z:
        broker_meta = metadata(z.read(f"mphub_broker-{VERSION}.dist-info/METADATA").decode())
        assert f"mphub_broker-{VERSION}.data/scripts/mphub" in z.namelist()
    with zipfile.ZipFile(client_wheel) as z:
        client_meta = metadata(z.read(f"mphub-{VERSION}.dist-info/METADATA").decode())
        assert "mphub/py.typed" in z.namelist()
    with tarfile.open(sdist) as t:
        sdist_meta = metadata(t.extractfile(f"mphub-{VERSION}/PKG-INFO").read().decode())
    with tarfile.open(broker_sdist) as t:
        top = f"mphub_broker-{VERSION}/"
        broker_sdist_meta = metadata(t.extractfile(top + "PKG-INFO").read().decode())
        # The crate alone does not build: the sdist carries the workspace and its path dependency.
        assert {top + "Cargo.toml", top + "Cargo.lock", top + "protocol/Cargo.toml"} <= set(t.getnames())

    for meta in (broker_meta, client_meta, sdist_meta, broker_sdist_meta):
        assert meta["Version"] == VERSION
        assert meta["License-Expression"] == LICENSE
        assert meta["License"] is None  # the expression replaces the free-text field (PEP 639)
        assert meta["Requires-Python"] == ">=3.8"
        assert meta.get_all("Project-URL") is None  # no public home yet: no invented one
    for meta in (client_meta, sdist_meta):
        minors = [c.rsplit(".", 1)[1] for c in meta.get_all("Classifier")
                  if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
        assert minors == [str(m) for m in range(8, 15)]  # 3.8 to 3.14


def test_every_version_is_the_workspace_version():
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    # Cargo cannot inherit a version into a dependency requirement, so this one is written twice.
    assert cargo["workspace"]["dependencies"]["mphub-protocol"]["version"] == VERSION
    for crate in ("protocol", "broker", "client-rs"):
        package = tomllib.loads((ROOT / crate / "Cargo.toml").read_text())["package"]
        assert package["version"] == {"workspace": True}, crate
        assert package["license"] == {"workspace": True}, crate
    lock = tomllib.loads((ROOT / "Cargo.lock").read_text())
    assert {p["name"]: p["version"] for p in lock["package"] if p["name"] in CRATES} == dict.fromkeys(CRATES, VERSION)

    for project in ("broker", "client-py"):
        meta = tomllib.loads((ROOT / project / "pyproject.toml").read_text())["project"]
        assert "version" not in meta and meta["dynamic"] == ["version"], project
        assert meta["license"] == LICENSE, project

    import mphub  # the checkout's client-py, as every test here imports it

    assert mphub.__version__ == VERSION
    # The image the Kubernetes manifests run is the release's.
    assert f"image: mphub:{VERSION}\n" in (ROOT / "deploy" / "kubernetes" / "deployment.yaml").read_text()
    for f in ("Cargo.toml", "protocol/Cargo.toml", "broker/Cargo.toml", "client-rs/Cargo.toml",
              "broker/pyproject.toml", "client-py/pyproject.toml"):
        assert "example.invalid" not in (ROOT / f).read_text(), f


def test_the_three_crates_package_for_crates_io():
    # mphub-protocol has no path dependency: packaged and verified (its tarball compiles alone).
    run(["cargo", "package", "--allow-dirty", "--locked", "-p", "mphub-protocol"], cwd=ROOT, timeout=1800)
    # The broker and the Rust client depend on it by path. Packaged together, cargo resolves that
    # dependency to the freshly packed mphub-protocol; --no-verify skips their debug builds (they
    # would add minutes to every run when the debug dependencies are cold).
    run(["cargo", "package", "--allow-dirty", "--locked", "--no-verify", *(f"-p={c}" for c in CRATES)],
        cwd=ROOT, timeout=600)
    for crate in CRATES:
        packaged = ROOT / "target" / "package" / f"{crate}-{VERSION}.crate"
        assert packaged.is_file(), packaged
        with tarfile.open(packaged) as t:
            manifest = tomllib.loads(t.extractfile(f"{crate}-{VERSION}/Cargo.toml").read().decode())
        assert manifest["package"]["version"] == VERSION
        assert manifest["package"]["license"] == LICENSE
        assert "repository" not in manifest["package"]
        deps = manifest.get("dependencies", {})
        if "mphub-protocol" in deps:
            assert deps["mphub-protocol"]["version"] == VERSION
            assert "path" not in deps["mphub-protocol"]
