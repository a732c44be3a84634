"""Sum the distinct prime factors of every integer in [2, B) on a Dask cluster.

    python examples/primes.py --upper 1000000                  # sympy, on a local cluster
    python examples/primes.py --upper 10000000000 --method fast
    python examples/primes.py --scheduler-file ~/.hpcbridge/jobs/4242/scheduler.json --workers 8

``--method sympy`` calls ``sympy.primefactors`` on every number, in ranges the connector hands
out; ``--method fast`` sums ``p * ((B - 1) // p)`` over the primes below B with a compiled sieve.
"""

from __future__ import annotations

import argparse
import sys
import time

from hpcbridge.workloads import add_cluster_options, open_cluster
from hpcbridge.workloads.primes import FAST_MAX_UPPER, faithful_sum, fast_sum


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--upper", type=int, default=10**6, metavar="B", help="sum over [2, B) (default 10^6)")
    parser.add_argument("--method", choices=["sympy", "fast"], default="sympy",
                        help="sympy.primefactors per number, or the compiled sieve (default sympy)")
    add_cluster_options(parser)
    args = parser.parse_args(argv)
    if args.upper < 2:
        parser.error("--upper must be at least 2")
    if args.method == "fast" and args.upper > FAST_MAX_UPPER:
        parser.error(f"--method fast takes --upper up to {FAST_MAX_UPPER}")

    print(f"sum of the distinct prime factors of every integer in [2, {args.upper:,}), method {args.method}")
    with open_cluster(args.scheduler_file, args.workers, args.timeout, job_name="hpcbridge-primes") as bridge:
        workers = bridge.n_workers
        started = time.perf_counter()
        total = (faithful_sum if args.method == "sympy" else fast_sum)(bridge, args.upper)
        seconds = time.perf_counter() - started
    print(f"sum: {total}")
    print(f"workers: {workers}")
    print(f"time: {seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
