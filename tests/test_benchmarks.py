"""Each benchmark at a small size on a real local cluster: its ``name: value`` lines and its answers.

No timings are asserted (the machine is shared); what is checked is that every figure the README
quotes is printed, parses as a number, and comes from correct results.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcbridge.workloads import truss
from tests.conftest import module_local_job

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 2-worker local cluster for the module; its scheduler file."""
    with module_local_job(tmp_path_factory, 2) as job:
        yield job.scheduler_file


def bench(name: str, cluster: str, *args: str) -> dict[str, str]:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args, "--scheduler-file", cluster],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert lines and all(key.replace("_", "").isalnum() for key in lines), done.stdout
    return lines


def positive(lines: dict[str, str], *names: str) -> None:
    for name in names:
        assert float(lines[name]) > 0, (name, lines[name])


def test_primes_benchmark(cluster: str) -> None:
    lines = bench("primes", cluster, "--upper", "20000", "--repeats", "3")
    assert lines["correct"] == "yes" and lines["sum"] == "37586705"
    assert lines["workers"] == "2"
    assert sum(map(int, lines["static_partials"].split())) == 37586705
    positive(lines, "serial_seconds", "faithful_seconds", "static_seconds", "efficiency", "static_efficiency",
             "efficiency_vs_static", "fast_seconds", "fast_speedup_vs_faithful", "plain_processes_seconds",
             "ceiling_efficiency", "efficiency_vs_ceiling")
    pairs = sorted(map(float, lines["efficiency_vs_ceiling_pairs"].split()))
    assert len(pairs) == 3 and float(lines["efficiency_vs_ceiling"]) == pytest.approx(pairs[1], abs=1e-3)  # the median


def test_mandelbrot_benchmark(cluster: str) -> None:
    lines = bench("mandelbrot", cluster, "--size", "400", "--single-max", "200")
    assert lines["identical_to_single_process"] == "yes" and lines["assembled_in_order"] == "yes"
    assert lines["file_identical"] == "yes"  # the workers' writes into the shared .npy file
    assert lines["file_assembled_in_order"] == "yes"
    assert lines["size"] == "400x400"
    assert 80 < float(lines["mean_iterations"]) < 110
    positive(lines, "seconds_per_gigapixel", "single_seconds_per_gigapixel", "speedup_vs_single", "efficiency",
             "assembly_gbps", "memcpy_gbps", "assembly_vs_memcpy", "file_seconds", "file_vs_gather",
             "file_assembly_gbps", "file_assembly_vs_gather")


def test_truss_benchmark(cluster: str) -> None:
    lines = bench("truss", cluster, "--nx", "10", "--ny", "8", "--frequencies", "3", "--cluster-factor", "2")
    assert lines["unknowns"] == "180"
    solvers = ["spsolve", "superlu"] + (["pardiso"] if truss.pardiso_available() else [])
    for solver in solvers:
        assert float(lines[f"{solver}_residual_max"]) < 1e-10
        positive(lines, f"{solver}_cpu_seconds_per_frequency")
    for solver in solvers[1:]:
        assert float(lines[f"{solver}_difference_vs_spsolve"]) < 1e-9
        positive(lines, f"{solver}_ratio_vs_spsolve")
    assert lines["cluster_solver"] == truss.resolve_solver("auto")
    assert float(lines["cluster_residual_max"]) < 1e-10
    positive(lines, "ratio_vs_spsolve", "cluster_wall_seconds_per_frequency", "cluster_speedup_vs_spsolve_cpu")
    assert lines["best_solver"] in solvers[1:] + ["reuse"]  # the fastest of hpcbridge's, spsolve left out
    best = float(lines["best_cpu_seconds_per_frequency"])
    assert best == min(float(lines[f"{name}_cpu_seconds_per_frequency"]) for name in solvers[1:] + ["reuse"])
    rounding = 0.01 + 0.0001 / best  # the lines give 4 decimals of a second and 2 of a ratio
    assert float(lines["ratio_vs_spsolve"]) == pytest.approx(float(lines["spsolve_cpu_seconds_per_frequency"]) / best,
                                                             rel=rounding)
    assert float(lines["reuse_residual_max"]) <= 1e-10 and lines["reuse_frequencies"] == "20"
    assert int(lines["reuse_factorisations"]) < 20  # the factorisation was reused
    positive(lines, "reuse_cpu_seconds_per_frequency", "reuse_ratio_vs_spsolve")
    assert len(lines["load_average"].split()) == 3


def test_montecarlo_benchmark(cluster: str) -> None:
    lines = bench("montecarlo", cluster, "--count", "60", "--high", "100000")
    assert lines["identical_to_serial"] == "yes"
    assert lines["sizes"] == "60"
    assert float(lines["within_3_standard_errors"]) > 0.9
    positive(lines, "serial_seconds", "seconds", "million_points_per_second", "efficiency")


def test_scale_benchmark() -> None:
    """Workers of many threads (here 2 x 4), items that wait: each map's results are checked inside it."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--sizes", "2x4",
                           "--items-per-thread", "5", "--cost", "0.005", "--repeats", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert lines["t8_threads"] == "8"
    for kind in ("even", "uneven", "rising"):
        positive(lines, *(f"t8_{kind}_{name}" for name in ("ideal_seconds", "naive_seconds", "bridge_seconds",
                                                           "bridge_over_naive", "speedup_vs_naive", "efficiency",
                                                           "chunks")))
    for kind in ("uneven", "rising"):  # the bound no scheduler can beat, beside them: at least the ideal
        assert float(lines[f"t8_{kind}_best_dynamic_seconds"]) >= float(lines[f"t8_{kind}_ideal_seconds"]) - 0.0005


def test_compare_prints_one_table_of_ratios_with_the_load(cluster: str) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compare.py"), "--quick", "--only",
                           "primes,montecarlo", "--scheduler-file", cluster], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0][0] == "| figure" and len(rows) == 3, done.stdout
    for row in rows[1:]:
        assert float(row[3]) > 0 and row[5].strip(" |") in ("yes", "no", "-"), row  # "-": shown, no goal
    assert "load average before:" in done.stdout


@pytest.mark.parametrize("script", ["broadcast.py", "map_overhead.py", "scale.py"])
def test_benchmark_options_say_what_they_do_and_their_defaults(script: str) -> None:
    shown = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    options = [line for line in shown.stdout.splitlines() if line.strip().startswith("--") and "--help" not in line]
    described = shown.stdout.split("options:", 1)[1]
    assert options, shown.stdout
    for line in options:
        name = line.split()[0]
        entry = described.split(name, 1)[1].split("\n  --", 1)[0]
        assert "(default:" in entry, f"{script} {name} has no default shown"


def _compare():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import compare
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return compare


def test_a_goal_set_for_one_size_is_judged_at_that_size_only() -> None:
    """``make bench --quick`` renders a 400x400 image: the 35000^2-in-30-s row must not say "yes" then."""
    figure = next(figure for figure in _compare().FIGURES if figure.size)
    lines = {"size": "400x400", figure.ours: "20.0", figure.baseline: "25.0"}
    assert figure.row(lines)[-1] == f"(at {figure.size} only)"
    assert figure.row({**lines, "size": figure.size})[-1] == "yes"
    assert figure.row({**lines, "size": figure.size, figure.ours: "31.0"})[-1] == "no"


def test_the_ratio_column_holds_ratios_and_rows_without_a_goal_are_not_met() -> None:
    """A row without a baseline has no ratio (it printed its value three times); a row only shown meets nothing."""
    figures = {figure.label.split(",")[0]: figure for figure in _compare().FIGURES}
    alone = figures["fixed cost of a run"]
    row = alone.row({alone.ours: "4.2"})
    assert row[1:] == ["4.2", "-", "-", "< 50 ms", "yes"], row
    assert alone.row({alone.ours: "60"})[-1] == "no"
    shown = figures["assembly into one array by gathering the blocks (TLS)"]
    row = shown.row({shown.ours: "0.959", shown.baseline: "19.5"})
    assert row[3] == "0.0492" and row[-1] == "-", row  # ours / baseline, and no goal to meet
    efficiency = figures["Mandelbrot gathered into one array"]
    row = efficiency.row({efficiency.ours: "18.28", efficiency.baseline: "28.50", "efficiency": "0.120"})
    assert row[3] == "0.120" and row[-1] == "-", row
    for figure in _compare().FIGURES:
        if figure.meets is None:
            continue
        assert figure.goal[0] in "≤≥<>", figure.goal
