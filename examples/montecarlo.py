"""Estimate π by Monte Carlo at 1200 sample sizes from 10^3 to 10^7 on a Dask cluster.

    python examples/montecarlo.py --csv pi.csv --png pi.png
    python examples/montecarlo.py --count 300 --high 1000000     # a quicker table

Every size has its own random stream (seeded by --seed and its index), so the table is the
same on any number of workers. Writes the table as CSV and a log-log plot of error against n.
"""

from __future__ import annotations

import argparse
import sys
import time

from hpcbridge.workloads import add_cluster_options, open_cluster
from hpcbridge.workloads.montecarlo import run_table, sample_sizes, save_plot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--count", type=int, default=1200, help="how many sample sizes (default 1200)")
    parser.add_argument("--low", type=int, default=10**3, help="smallest sample size (default 1000)")
    parser.add_argument("--high", type=int, default=10**7, help="largest sample size (default 10^7)")
    parser.add_argument("--seed", type=int, default=2024, help="random seed (default 2024)")
    parser.add_argument("--csv", default="montecarlo.csv", help="where to write the table (default montecarlo.csv)")
    parser.add_argument("--png", default="montecarlo.png", help="where to save the plot (default montecarlo.png)")
    add_cluster_options(parser)
    args = parser.parse_args(argv)
    try:
        sizes = sample_sizes(args.count, args.low, args.high)
    except ValueError as error:
        parser.error(str(error))

    print(f"Monte Carlo π at {len(sizes)} sample sizes from {sizes[0]:,} to {sizes[-1]:,} "
          f"({int(sizes.sum()):,} points in all)")
    with open_cluster(args.scheduler_file, args.workers, args.timeout, job_name="hpcbridge-montecarlo") as bridge:
        workers = bridge.n_workers
        started = time.perf_counter()
        table = run_table(bridge, sizes, seed=args.seed)
        seconds = time.perf_counter() - started
    print(f"{'n':>10}  {'estimate':>12}  {'|error|':>10}  {'expected':>10}")
    shown = sorted(set([0, len(sizes) - 1] + list(range(0, len(sizes), max(1, len(sizes) // 8)))))
    for i in shown:
        print(f"{table.n[i]:>10}  {table.estimate[i]:>12.8f}  {table.error[i]:>10.2e}  {table.expected_error[i]:>10.2e}")
    within = float((table.error <= 3 * table.expected_error).mean())
    print(f"within 3 standard errors: {100 * within:.1f}% of sizes; fitted error ∝ n^{table.slope():.3f} (theory -0.5)")
    print(f"workers: {workers}")
    print(f"time: {seconds:.2f} s ({sizes.sum() / seconds / 1e6:.0f} million points per second)")
    table.write_csv(args.csv)
    print(f"table: {args.csv} ({len(sizes)} rows)")
    save_plot(table, args.png)
    print(f"plot: {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
