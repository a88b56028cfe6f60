"""Throwaway certificates made with the `openssl` command at test time, as docs/tls.md shows.

`Pki(directory)` makes a CA; `server(name, serial)` a server certificate for localhost and
127.0.0.1 signed by it; `client(name)` a client certificate for mTLS. Each returns the paths of
its PEM certificate and key. Every certificate lives one day.
"""

import subprocess
from pathlib import Path


def openssl(*args, cwd):
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True)


class Pki:
    """A certificate authority in `directory` (ca.pem, ca.key), named `name`."""

    def __init__(self, directory, name="ca"):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.ca = self.dir / f"{name}.pem"
        self.ca_key = self.dir / f"{name}.key"
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", self.ca_key, "-out", self.ca, "-days", "1", "-subj", f"/CN=mphub test {name}",
                cwd=self.dir)

    def _sign(self, name, subject, extensions, serial):
        key, csr, pem = (self.dir / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
        ext = self.dir / f"{name}.ext"
        ext.write_text(extensions)
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
                "-out", csr, "-subj", subject, cwd=self.dir)
        openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key, "-set_serial", serial,
                "-out", pem, "-days", "1", "-extfile", ext, cwd=self.dir)
        return pem, key

    def server(self, name="server", serial=1000, sans="DNS:localhost,IP:127.0.0.1"):
        """A server certificate for `sans` (localhost and 127.0.0.1): (cert.pem, key.pem)."""
        return self._sign(name, "/CN=localhost", f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n", serial)

    def client(self, name="client", serial=2000):
        """A client certificate (for mTLS): (cert.pem, key.pem)."""
        return self._sign(name, f"/CN={name}", "extendedKeyUsage=clientAuth\n", serial)
