"""Certificates for ``protocol=tls``: a private CA, and one certificate the whole cluster shares.

Dask's TLS checks that every peer's certificate is signed by the configured CA (it does not
check host names), so one CA and one certificate/key pair, readable only by the user, are
enough to keep other users of a shared cluster out. They are made with the ``openssl`` command
that every HPC system has, so no Python cryptography package is needed.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certificates:
    """Paths of the CA certificate, the cluster's certificate and its private key."""

    ca_file: Path
    cert: Path
    key: Path

    def dask_config(self) -> dict[str, str]:
        """Dask config values that make a client in this process present these certificates."""
        return {
            "distributed.comm.tls.ca-file": str(self.ca_file),
            "distributed.comm.tls.client.cert": str(self.cert),
            "distributed.comm.tls.client.key": str(self.key),
            "distributed.comm.require-encryption": True,
        }


def create_certificates(folder: str | os.PathLike[str], days: int = 365) -> Certificates:
    """Create ``ca.pem``, ``cert.pem`` and ``key.pem`` in ``folder`` (made private to the user)."""
    target = Path(folder).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    target.chmod(0o700)
    ca_key, ca_file = target / "ca-key.pem", target / "ca.pem"
    key, request, cert = target / "key.pem", target / "request.pem", target / "cert.pem"
    _openssl("req", "-x509", "-newkey", "rsa:3072", "-nodes", "-keyout", ca_key, "-out", ca_file,
             "-days", days, "-subj", "/CN=hpcbridge cluster CA")
    _openssl("req", "-newkey", "rsa:3072", "-nodes", "-keyout", key, "-out", request,
             "-subj", "/CN=hpcbridge cluster")
    _openssl("x509", "-req", "-in", request, "-CA", ca_file, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert, "-days", days)
    request.unlink()
    for path in target.iterdir():
        path.chmod(0o600)
    return Certificates(ca_file=ca_file, cert=cert, key=key)


def _openssl(*arguments: object) -> None:
    done = subprocess.run(["openssl", *map(str, arguments)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise OSError(f"openssl {arguments[0]} failed: {done.stderr.strip()}")
