"""`python -m mphub`: sub, pub, ping from a shell."""

import os
import shutil
import subprocess
import sys

from certs import Pki
from conftest import KEY, ROOT


NO_ENV_KEY = {"MPHUB_AUTHKEY": ""}


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


def test_ping_takes_the_key_from_a_file_and_fails_clearly_with_a_wrong_one(broker, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY + b"\n")  # one trailing newline is stripped, as the broker does
    ok = cli("-a", broker.addrs[0], "--authkey-file", str(key_file), "ping", "-n", "2", env_extra=NO_ENV_KEY)
    out, err = ok.communicate(timeout=30)
    assert ok.returncode == 0, err
    assert out.count("pong from") == 2
    key_file.write_bytes(b"wrong")
    bad = cli("-a", broker.addrs[0], "--authkey-file", str(key_file), "ping", env_extra=NO_ENV_KEY)
    out, err = bad.communicate(timeout=30)
    assert bad.returncode == 1
    assert err.strip() == "mphub: the broker refused the authkey"


def test_a_key_on_the_command_line_is_refused_with_the_ways_that_work(broker):
    p = cli("-a", broker.addrs[0], "-k", KEY.decode(), "ping")
    _, err = p.communicate(timeout=30)
    assert p.returncode == 2
    assert "keys never go on the command line" in err and "--authkey-file" in err


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


def test_the_cli_reaches_a_mutual_tls_broker_with_tls_flags_and_says_which_flag_is_missing(start_broker, tmp_path):
    pki = Pki(tmp_path / "pki")
    cert, key = pki.server()
    broker = start_broker(
        "--tls-cert", str(cert), "--tls-key", str(key), "--tls-client-ca", str(pki.ca),
        listen=("tls://127.0.0.1:0",),
    )
    port = broker.addrs[0].rsplit(":", 1)[1]
    addr = f"tls://localhost:{port}"
    env = {"MPHUB_AUTHKEY": KEY.decode()}
    client_cert, client_key = pki.client("worker-1")

    def ping(*flags):
        p = cli("-a", addr, *flags, "ping", env_extra=env)
        out, err = p.communicate(timeout=30)
        return p.returncode, out + err

    code, said = ping()
    assert code == 1 and "not trusted" in said and "--tls-ca" in said
    code, said = ping("--tls-ca", str(pki.ca))
    assert code == 1 and "--tls-cert" in said and "--tls-key" in said
    code, said = ping("--tls-ca", str(pki.ca), "--tls-cert", str(client_cert), "--tls-key", str(client_key))
    assert code == 0 and "pong from" in said, said
