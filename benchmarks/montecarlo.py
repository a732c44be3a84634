"""Monte Carlo π table on the cluster against the same table in one process.

    python benchmarks/montecarlo.py --count 1200 --high 10000000

Efficiency is serial time / (workers x cluster time); both tables must be identical (every size
has its own random stream). Prints ``name: value`` lines.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from hpcbridge.workloads import add_cluster_options, open_cluster
from hpcbridge.workloads.montecarlo import estimate_pi, run_table, run_table_serial, sample_sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300, help="sample sizes (default 300)")
    parser.add_argument("--high", type=int, default=10**6, help="largest sample size (default 10^6)")
    parser.add_argument("--seed", type=int, default=7)
    add_cluster_options(parser)
    args = parser.parse_args(argv)
    sizes = sample_sizes(args.count, 10**3, args.high)

    estimate_pi((0, 1000, 0))
    started = time.perf_counter()
    serial = run_table_serial(sizes, args.seed)
    serial_seconds = time.perf_counter() - started
    with open_cluster(args.scheduler_file, args.workers, args.timeout, say=lambda line: None,
                      job_name="hpcbridge-bench-montecarlo") as bridge:
        workers = bridge.n_workers
        run_table(bridge, sizes[:2 * workers], args.seed, progress=False)  # imports on every worker
        started = time.perf_counter()
        table = run_table(bridge, sizes, args.seed, progress=False)
        seconds = time.perf_counter() - started
    identical = bool(np.array_equal(table.estimate, serial.estimate))
    lines = {
        "sizes": len(sizes),
        "points": int(sizes.sum()),
        "workers": workers,
        "identical_to_serial": "yes" if identical else "NO",
        "within_3_standard_errors": f"{(table.error <= 3 * table.expected_error).mean():.3f}",
        "fitted_slope": f"{table.slope():.3f}",
        "serial_seconds": f"{serial_seconds:.3f}",
        "seconds": f"{seconds:.3f}",
        "million_points_per_second": f"{sizes.sum() / seconds / 1e6:.1f}",
        "efficiency": f"{serial_seconds / (workers * seconds):.3f}",
    }
    for name, value in lines.items():
        print(f"{name}: {value}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
