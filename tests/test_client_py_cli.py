"""`python -m mphub`: sub, pub, ping from a shell."""

import os
import shutil
import subprocess
import sys

from conftest import KEY, ROOT


def cli(*args, env_extra=None, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "client-py" / "src"), **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "mphub", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env, **kw,
    )


def test_sub_prints_what_pub_sends(broker):
    env = {"MPHUB_ADDRESS": broker.addrs[0], "MPHUB_AUTHKEY": KEY.decode()}
    sub = cli("sub", "sensors.>", "-n", "2", env_extra=env)
    try:
        assert "listening on" in sub.stderr.readline()
        for topic, value in [("sensors.temp", "{'v': 21.5}"), ("sensors.name", "plain words")]:
            p = cli("pub", topic, value, env_extra=env)
            assert p.wait(30) == 0, p.stderr.read()
        out, _ = sub.communicate(timeout=30)
        assert out.splitlines() == ["sensors.temp {'v': 21.5}", "sensors.name 'plain words'"]
    finally:
        sub.kill()


def test_ping_answers_with_flags_and_fails_clearly_with_a_wrong_key(broker):
    ok = cli("-a", broker.addrs[0], "-k", KEY.decode(), "ping", "-n", "2")
    out, err = ok.communicate(timeout=30)
    assert ok.returncode == 0, err
    assert out.count("pong from") == 2
    bad = cli("-a", broker.addrs[0], "-k", "wrong", "ping")
    out, err = bad.communicate(timeout=30)
    assert bad.returncode == 1
    assert err.strip() == "mphub: the broker refused the authkey"


def test_pip_installs_the_package_with_its_type_marker(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(ROOT / "client-py", source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    shutil.copy(ROOT / "Cargo.toml", tmp_path)  # the version comes from the workspace, one level up
    target = tmp_path / "site"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps",
         "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert (target / "mphub" / "py.typed").exists()
    r = subprocess.run([sys.executable, "-c", "import mphub, mphub.aio; print(mphub.__file__)"],
                       capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(target)})
    assert r.stdout.strip() == str(target / "mphub" / "__init__.py")
