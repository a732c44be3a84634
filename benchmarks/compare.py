"""Every benchmark with its baseline in the same run, and one table of ratios against the goals.

    make bench                              # the sizes of the README's table (about 13 minutes idle)
    python benchmarks/compare.py --quick    # small sizes, a minute or two
    python benchmarks/compare.py --only map_overhead,primes --scheduler-file F

Each row is a figure hpcbridge is measured on and the best alternative measured beside it, in
the same process tree and minutes: ``multiprocessing.Pool.map`` for tiny items, plain processes
for the prime sum, ``client.scatter(broadcast=True)`` and the loopback limit for a broadcast,
``np.copyto`` for assembly, one process for Mandelbrot, ``spsolve`` for the FE solve, one chunk per
thread for a map at hundreds of threads. The
benchmarks print ``name: value`` lines; this script runs each as its own process, reads the
lines, and prints the table (Markdown) with the load average, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Figure:
    """One row: which benchmark line is ours, which is the baseline, their ratio, and the goal.

    ``ratio`` names the benchmark's own ratio line (a median of pairs, an efficiency); without
    one the ratio is ours / baseline, and without a baseline there is none ("-"). ``meets``
    judges the ratio, or with ``on_value`` our figure itself (an absolute goal: < 50 ms); rows
    with ``meets=None`` are shown for reference and meet nothing ("-" in the met column).
    """

    benchmark: str
    label: str
    ours: str
    baseline: str | None
    ratio: str | None
    goal: str
    meets: Callable[[float], bool] | None
    on_value: bool = False
    size: str | None = None  # the goal holds at this size only (the benchmark's ``size`` line)

    def ratio_text(self, lines: dict[str, str]) -> str | None:
        """The ratio as the table shows it: the benchmark's line, else ours / baseline, else None."""
        if self.ratio is not None:
            return lines.get(self.ratio)
        ours, baseline = lines.get(self.ours), lines.get(self.baseline) if self.baseline else None
        if ours is None or baseline is None or float(baseline) == 0:
            return None
        return f"{float(ours) / float(baseline):.3g}"

    def row(self, lines: dict[str, str]) -> list[str]:
        ratio = self.ratio_text(lines)
        judged = lines.get(self.ours) if self.on_value else ratio
        if self.meets is None:
            met = "-"
        elif judged is None:
            met = "?"
        elif self.size is not None and lines.get("size") != self.size:
            met = f"(at {self.size} only)"
        else:
            met = "yes" if self.meets(float(judged)) else "no"
        baseline = lines.get(self.baseline, "-") if self.baseline else "-"
        return [self.label, lines.get(self.ours, "-"), baseline, ratio or "-", self.goal, met]


FIGURES = [
    Figure("map_overhead", "map of tiny items, µs per item (vs Pool.map, best chunksize)", "bridge_map_us_per_item",
           "pool_us_per_item", "bridge_over_pool_ratio", "≤ 2", lambda r: r <= 2),
    Figure("map_overhead", "fixed cost of a run, ms (map of one item until it returns)", "run_start_ms",
           None, None, "< 50 ms", lambda v: v < 50, on_value=True),
    Figure("map_overhead", "saving runs to disk, µs per item (vs the same map with save=False)",
           "bridge_map_us_per_item", "unsaved_map_us_per_item", "saving_cost_ratio", "≤ 1.1", lambda r: r <= 1.1),
    Figure("primes", "sympy prime sum, seconds (vs the same items on plain processes)", "faithful_seconds",
           "plain_processes_seconds", "efficiency_vs_ceiling", "≥ 0.95", lambda r: r >= 0.95),
    Figure("broadcast", "broadcast to every worker, seconds (vs scatter(broadcast=True))", "hpcbridge_seconds",
           "scatter_seconds", "hpcbridge_over_scatter_ratio", "≤ 0.5", lambda r: r <= 0.5),
    Figure("broadcast", "broadcast, one copy per worker (shared=False), seconds (vs scatter(broadcast=True))",
           "hpcbridge_private_seconds", "scatter_seconds", "hpcbridge_private_over_scatter_ratio", "(shown)", None),
    Figure("broadcast", "broadcast, seconds (vs the loopback limit: bytes x copies / one stream)",
           "hpcbridge_seconds", "loopback_limit_seconds", None, "(shown)", None),
    Figure("broadcast", "broadcast, one copy per worker on one machine, seconds (vs the loopback limit)",
           "hpcbridge_private_seconds", "loopback_limit_seconds", "hpcbridge_private_over_loopback_limit", "(shown)",
           None),
    Figure("broadcast", "broadcast, one copy per worker over the network (emulated: a machine per worker), seconds "
           "(vs the loopback limit)", "hpcbridge_private_network_seconds", "loopback_limit_seconds",
           "hpcbridge_private_network_over_loopback_limit", "≤ 3", lambda r: r <= 3),
    Figure("broadcast", "broadcast, one copy per worker over the network (emulated), seconds (vs copies x one TLS "
           "copy through the cluster's comm)", "hpcbridge_private_network_seconds", "comm_limit_seconds",
           "hpcbridge_private_network_over_comm_limit", "(shown)", None),
    Figure("mandelbrot", "assembly into one array through the shared .npy file, GB/s (vs np.copyto)",
           "file_assembly_gbps", "memcpy_gbps", None, "≥ 1.5 GB/s", lambda v: v >= 1.5, on_value=True),
    Figure("mandelbrot", "assembly into one array by gathering the blocks (TLS), GB/s (vs np.copyto)",
           "assembly_gbps", "memcpy_gbps", None, "(shown)", None),
    Figure("mandelbrot", "Mandelbrot into one array through the shared .npy file, seconds (vs gathering the blocks)",
           "file_seconds", "seconds", None, "≤ 30 s", lambda v: v <= 30, on_value=True, size="35000x35000"),
    Figure("mandelbrot", "Mandelbrot gathered into one array, s per gigapixel (vs one process)", "seconds_per_gigapixel",
           "single_seconds_per_gigapixel", "efficiency", "(shown: efficiency)", None),
    Figure("truss", "FE frequency response, CPU s per frequency, fastest solver (vs spsolve)",
           "best_cpu_seconds_per_frequency", "spsolve_cpu_seconds_per_frequency", "ratio_vs_spsolve", "≥ 10",
           lambda r: r >= 10),
    Figure("montecarlo", "Monte Carlo π, seconds (vs one process)", "seconds", "serial_seconds", "efficiency",
           "(shown: efficiency)", None),
    Figure("scale", "map at 256 threads, even 20 ms items, s (vs one chunk per thread)", "t256_even_bridge_seconds",
           "t256_even_naive_seconds", "t256_even_bridge_over_naive", "≤ 1.0", lambda r: r <= 1.0),
    Figure("scale", "map at 256 threads, even items, s (vs the ideal: total wait / threads)", "t256_even_bridge_seconds",
           "t256_even_ideal_seconds", "t256_even_efficiency", "≥ 0.6", lambda r: r >= 0.6),
    Figure("scale", "map at 1,024 threads, even 20 ms items, s (vs one chunk per thread)", "t1024_even_bridge_seconds",
           "t1024_even_naive_seconds", "t1024_even_bridge_over_naive", "≤ 1.0", lambda r: r <= 1.0),
    Figure("scale", "client's cost per chunk of a map, ms (vs one client.map call, per task; 1,024 threads)",
           "t1024_submit_ms_per_chunk", "t1024_client_map_ms_per_task", "t1024_submit_over_client_map", "≤ 3",
           lambda r: r <= 3),
    Figure("scale", "map at 256 threads, heavy-tailed items, speed-up (vs one chunk per thread)",
           "t256_uneven_bridge_seconds", "t256_uneven_naive_seconds", "t256_uneven_speedup_vs_naive", "≥ 1.5",
           lambda r: r >= 1.5),
    Figure("scale", "map at 1,024 threads, heavy-tailed items, speed-up (vs one chunk per thread)",
           "t1024_uneven_bridge_seconds", "t1024_uneven_naive_seconds", "t1024_uneven_speedup_vs_naive", "≥ 1.5",
           lambda r: r >= 1.5),
    Figure("scale", "heavy-tailed items: the best a scheduler that learns costs by running can do, speed-up "
           "(items one by one to the first free thread, at no cost; 1,024 threads)", "t1024_uneven_best_dynamic_seconds",
           "t1024_uneven_naive_seconds", "t1024_uneven_best_dynamic_speedup_vs_naive", "(shown: the bound)", None),
    Figure("scale", "map at 256 threads, rising items (0 to 40 ms in order), speed-up (vs one chunk per thread)",
           "t256_rising_bridge_seconds", "t256_rising_naive_seconds", "t256_rising_speedup_vs_naive", "≥ 1.5",
           lambda r: r >= 1.5),
    Figure("scale", "map at 1,024 threads, rising items, speed-up (vs one chunk per thread)",
           "t1024_rising_bridge_seconds", "t1024_rising_naive_seconds", "t1024_rising_speedup_vs_naive", "≥ 1.5",
           lambda r: r >= 1.5),
]

FULL = {
    "map_overhead": ["--items", "200000", "--repeats", "10"],
    "primes": ["--upper", "1000000", "--repeats", "5"],
    "broadcast": ["--megabytes", "400", "--workers", "4"],
    "mandelbrot": ["--size", "35000"],  # goal 5's image: 1.2 gigapixels, about 3 minutes
    "truss": ["--plate-spacing", "0.0138", "--frequencies", "3", "--sweep", "40"],  # the goal's mesh: unstructured, 40k unknowns
    "montecarlo": ["--count", "1200", "--high", "10000000"],
    "scale": ["--sizes", "4x64,8x128", "--repeats", "3"],
}
QUICK = {
    "map_overhead": ["--items", "20000", "--raw-items", "200", "--repeats", "1"],
    "primes": ["--upper", "20000"],
    "broadcast": ["--megabytes", "20", "--workers", "2"],
    "mandelbrot": ["--size", "400", "--single-max", "200"],
    "truss": ["--nx", "10", "--ny", "8", "--frequencies", "3", "--cluster-factor", "2"],
    "montecarlo": ["--count", "60", "--high", "100000"],
    "scale": ["--sizes", "2x4", "--items-per-thread", "5", "--cost", "0.005", "--repeats", "1"],
}
ATTACHES = {"primes", "mandelbrot", "truss", "montecarlo"}  # take --scheduler-file


def run_benchmark(name: str, arguments: list[str], scheduler_file: str | None, timeout: float) -> dict[str, str]:
    """Run ``benchmarks/<name>.py`` and return its ``name: value`` lines (or raise with its output)."""
    command = [sys.executable, str(HERE / f"{name}.py"), *arguments]
    if scheduler_file and name in ATTACHES:
        command += ["--scheduler-file", scheduler_file]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)


def table(results: dict[str, dict[str, str]]) -> str:
    """The Markdown table of every figure whose benchmark ran."""
    rows = [["figure", "hpcbridge", "baseline", "ratio", "goal", "met"], ["---"] * 6]
    rows += [figure.row(results[figure.benchmark]) for figure in FIGURES if figure.benchmark in results]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (checks the table, not the machine)")
    parser.add_argument("--only", default=",".join(FULL), help="comma-separated benchmarks (default: all)")
    parser.add_argument("--scheduler-file", metavar="F", default=None,
                        help="run the benchmarks that can attach on the cluster behind F (default: each starts its own)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per benchmark (default 1800)")
    options = parser.parse_args(argv)
    names = [name.strip() for name in options.only.split(",") if name.strip()]
    unknown = sorted(set(names) - set(FULL))
    if unknown:
        parser.error(f"--only: unknown benchmark {unknown[0]!r}; expected some of {', '.join(FULL)}")
    sizes = QUICK if options.quick else FULL
    load = os.getloadavg()
    results = {}
    for name in names:
        print(f"running {name} {' '.join(sizes[name])}", file=sys.stderr, flush=True)
        results[name] = run_benchmark(name, sizes[name], options.scheduler_file, options.timeout)
    print(table(results))
    after = os.getloadavg()
    print(f"\nload average before: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; after: "
          f"{after[0]:.1f} {after[1]:.1f} {after[2]:.1f} ({os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
