"""protocol=tls: the cluster speaks only TLS, and a client without the certificates is refused."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import dask.config
import pytest

from hpcbridge.client.bridge import ConnectError, connect
from hpcbridge.job import submit as jobs
from hpcbridge.tls import create_certificates


def test_certificates_are_private_and_signed_by_their_ca(tmp_path) -> None:
    made = create_certificates(tmp_path / "tls")
    assert (tmp_path / "tls").stat().st_mode & 0o777 == 0o700
    assert made.key.stat().st_mode & 0o777 == 0o600
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(made.ca_file), str(made.cert)],
                              capture_output=True, text=True)
    assert verified.returncode == 0 and "OK" in verified.stdout


def test_command_prints_the_options_to_pass_and_the_clients_variables(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "hpcbridge.cli", "tls-certificates", str(tmp_path / "t")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    options, *exports = done.stdout.splitlines()
    assert options == (f"--protocol tls --tls-ca-file {tmp_path}/t/ca.pem --tls-cert {tmp_path}/t/cert.pem "
                       f"--tls-key {tmp_path}/t/key.pem")
    # A client's shell that evaluates the export lines has Dask's config point at the new files.
    keys = ["distributed.comm.tls.ca-file", "distributed.comm.tls.client.cert", "distributed.comm.tls.client.key",
            "distributed.comm.require-encryption"]
    read = f"import dask.config, json; print(json.dumps([dask.config.get(key) for key in {keys!r}]))"
    shown = subprocess.run(["bash", "-c", "\n".join([*exports, f"{sys.executable} -c {shlex.quote(read)}"])],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == [f"{tmp_path}/t/ca.pem", f"{tmp_path}/t/cert.pem", f"{tmp_path}/t/key.pem", True]


def test_command_keeps_an_existing_ca_unless_forced(tmp_path) -> None:
    def tls_certificates(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hpcbridge.cli", "tls-certificates", str(tmp_path / "t"), *extra],
                              capture_output=True, text=True, timeout=60)

    assert tls_certificates().returncode == 0
    first = (tmp_path / "t" / "ca.pem").read_bytes()
    again = tls_certificates()
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.startswith(f"Error: {tmp_path}/t already holds certificates ({tmp_path}/t/ca.pem, ")
    assert "--force replaces them" in again.stderr
    assert (tmp_path / "t" / "ca.pem").read_bytes() == first
    forced = tls_certificates("--force")
    assert forced.returncode == 0 and "Warning: replaced the certificates" in forced.stderr
    assert (tmp_path / "t" / "ca.pem").read_bytes() != first


def test_tls_cluster_accepts_only_clients_with_the_certificates(local_spec, local_jobs, tmp_path) -> None:
    made = create_certificates(tmp_path / "tls")
    job = jobs.submit(local_spec(ntasks_per_node=2, protocol="tls", tls_ca_file=str(made.ca_file),
                                 tls_cert=str(made.cert), tls_key=str(made.key)))
    local_jobs.append(job)
    with dask.config.set(made.dask_config()):
        with connect(job.scheduler_file, n_workers=2, timeout=60) as bridge:
            assert bridge.client.scheduler.address.startswith("tls://127.0.0.1:")
            assert all(address.startswith("tls://") for address in bridge.client.nthreads())
            assert bridge.gather(bridge.map(abs, [-3, -4])) == [3, 4]
    # The same address without the certificates' whereabouts: refused, with the reason.
    info = json.loads(Path(job.scheduler_file).read_text())
    info["hpcbridge"]["tls"] = None
    (tmp_path / "copy.json").write_text(json.dumps(info))
    with pytest.raises(ConnectError, match="speaks TLS and this client has no certificates"):
        connect(tmp_path / "copy.json", n_workers=1, timeout=5)
