"""The benchmarks that bring up a Slurm harness of their own, run small: they work, and what they show holds.

``benchmarks/broadcast_slurm.py`` measures the broadcast over the harness's nodes (network namespaces
joined over ``ib0``, a Slurm job with TLS, the client outside it): one copy per node crosses the
network and the other workers there map it (a shared broadcast) or copy theirs from it (a private
one). Before the shared broadcast followed the client's plan, most of its copies crossed the
network (25 of 32 on 4 nodes of 8).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_broadcast_over_the_harness_nodes_crosses_the_network_once_per_node() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "broadcast_slurm.py"), "--megabytes", "16",
                           "--nodes", "2", "--workers-per-node", "4", "--repeats", "1"],
                          capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "kept in" not in done.stderr, done.stderr  # the harness came down and its folder went
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    assert (lines["slurm_nodes"], lines["slurm_workers"], lines["slurm_machines"], lines["slurm_protocol"]) == (
        "2", "8", "2", "tls")
    for kind in ("shared", "private"):
        assert lines[f"slurm_{kind}_network_copies"] == "2", lines  # the client's copy and one to the other node
        assert lines[f"slurm_{kind}_mapped_copies"] == "6", lines
        assert lines[f"slurm_{kind}_workers_holding_after_amm"] == "8", lines
        assert float(lines[f"slurm_{kind}_seconds"]) > 0 and float(lines[f"slurm_{kind}_over_loopback_limit"]) > 0
