"""Sum the distinct prime factors of every integer in [2, UPPER) on a running job's workers.

    python3 /usr/local/share/hpcbridge/sum_primes.py JOB_ID [UPPER]

Prints one JSON line: the sum and the nodes whose workers computed it (the compose cluster's two
nodes when the job asked for -N 2). The job's scheduler file is the default one in the shared home.
"""

from __future__ import annotations

import json
import socket
import sys

import hpcbridge
from hpcbridge.workloads.primes import split_range, sum_prime_factors


def main(job_id: str, upper: int) -> None:
    """Attach to the job's cluster, wait for its two workers, map the ranges, print the result."""
    with hpcbridge.connect(f"~/.hpcbridge/jobs/{job_id}/scheduler.json", n_workers=2, timeout=120) as bridge:
        total = sum(bridge.gather(bridge.map(sum_prime_factors, split_range(2, upper, 8))))
        nodes = sorted(set(bridge.client.run(socket.gethostname).values()))
    print(json.dumps({"upper": upper, "sum": total, "nodes": nodes}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000)
