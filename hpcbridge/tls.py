"""Certificates for ``protocol=tls`` (the default): a private CA and one certificate per cluster.

Dask's TLS checks that every peer's certificate is signed by the configured CA (it does not
check host names), so one CA and one certificate/key pair that the scheduler, the workers and
the owner's clients share keep everybody else out: a client without them, or with another CA's,
is refused during the handshake. By default each job makes its own set when it starts
(``python -m hpcbridge.tls DIR``, run by the job script), in an owner-only folder beside the
scheduler file, so the private key is never in the script, on a command line or in another
user's view. The CA's own key is discarded once the certificate is signed: nobody can sign
another certificate for the cluster afterwards.
"""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

from hpcbridge.addresses import host_and_port
from hpcbridge.private_files import make_private_dir, write_private_file

CA_FILE, CERT_FILE, KEY_FILE = "ca.pem", "cert.pem", "key.pem"


@dataclass(frozen=True)
class Certificates:
    """Paths of the CA certificate, the cluster's certificate and its private key."""

    ca_file: Path
    cert: Path
    key: Path

    def dask_config(self) -> dict[str, object]:
        """Dask config values that make a client in this process present these certificates."""
        return {
            "distributed.comm.tls.ca-file": str(self.ca_file),
            "distributed.comm.tls.client.cert": str(self.cert),
            "distributed.comm.tls.client.key": str(self.key),
            "distributed.comm.require-encryption": True,
        }

    def client_environment(self) -> dict[str, str]:
        """``DASK_DISTRIBUTED__COMM__...`` variables: a Dask client started with them presents these certificates."""
        return {"DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(self.ca_file),
                "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(self.cert),
                "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(self.key),
                "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"}

    def security(self):
        """A ``distributed.Security`` for a client that presents these certificates."""
        from distributed.security import Security

        return Security(tls_ca_file=str(self.ca_file), tls_client_cert=str(self.cert),
                        tls_client_key=str(self.key), require_encryption=True)


def certificates_in(folder: str | os.PathLike[str]) -> Certificates:
    """The certificates :func:`create_certificates` makes in ``folder`` (they may not exist)."""
    folder = Path(folder).expanduser()
    return Certificates(ca_file=folder / CA_FILE, cert=folder / CERT_FILE, key=folder / KEY_FILE)


def create_certificates(folder: str | os.PathLike[str], days: int = 365) -> Certificates:
    """Create ``ca.pem``, ``cert.pem`` and ``key.pem`` in ``folder``: 0600 files in a 0700 folder.

    The key is an elliptic-curve (P-256) key: quick to make at every job start, and accepted by
    the TLS 1.2+ that Dask requires. The certificate is valid from an hour ago (clocks of
    compute nodes differ) for ``days`` days.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    target = make_private_dir(folder)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hpcbridge cluster CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hpcbridge cluster")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    made = certificates_in(target)
    write_private_file(made.key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    write_private_file(made.cert, cert.public_bytes(serialization.Encoding.PEM))
    write_private_file(made.ca_file, ca.public_bytes(serialization.Encoding.PEM))
    return made


class TLSRefused(ConnectionError):
    """The TLS handshake with a scheduler failed; the message says which side refused and why."""


def check_handshake(address: str, certificates: Certificates, timeout: float) -> None:
    """Shake hands with the TLS listener at ``address`` (``tls://host:port``) as a Dask client would.

    Raises :class:`TLSRefused` when the certificates do not fit (another CA on either side),
    and ``OSError`` when nothing answers. Done before a ``distributed.Client`` exists, because a
    refused Client takes ~40 s to let the interpreter exit. TLS 1.2 is used for the probe
    because there the server checks the client's certificate inside the handshake; under 1.3
    that refusal would arrive only after it.
    """
    host, port = host_and_port(address)
    context = certificates.security().get_connection_args("client")["ssl_context"]
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((host, port), timeout=timeout) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=None):
                pass
        except ssl.SSLCertVerificationError as error:
            raise TLSRefused(f"the scheduler's certificate is not signed by the CA this client trusts "
                             f"({certificates.ca_file}): {error.verify_message}") from None
        except ssl.SSLError as error:
            reason = error.reason or str(error)
            raise TLSRefused(f"the scheduler refused this client's certificate {certificates.cert} "
                             f"({reason}): it is not signed by the cluster's CA") from None


def main(argv: list[str] | None = None) -> int:
    """``python -m hpcbridge.tls FOLDER``: what a job runs to make its own certificates."""
    arguments = sys.argv[1:] if argv is None else argv
    if len(arguments) != 1:
        print("usage: python -m hpcbridge.tls FOLDER", file=sys.stderr)
        return 2
    create_certificates(arguments[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
