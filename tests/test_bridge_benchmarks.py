"""The connector benchmarks run, small, and print every figure as a `name: value` line (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def figures(script: str, *argv: str) -> dict[str, float | str]:
    """The benchmark's ``name: value`` lines, numbers as floats (a path or a word stays text)."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *argv], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    pairs = [line.split(": ", 1) for line in done.stdout.splitlines()]
    return {name: _number(value) for name, value in pairs}


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def test_map_overhead_prints_per_item_costs_and_the_ratio_to_raw_client_map() -> None:
    found = figures("map_overhead.py", "--items", "20000", "--raw-items", "100", "--repeats", "1")
    assert found["items"] == 20000 and found["workers"] == 2
    assert 0 < found["chunks"] < 20000
    assert {"bridge_map_us_per_item", "raw_client_map_us_per_item", "raw_over_bridge_ratio", "serial_us_per_item",
            "pool_us_per_item", "bridge_over_pool_ratio", "run_start_ms", "unsaved_map_us_per_item",
            "saving_cost_ratio"} <= set(found)
    assert str(found["runs_saved_to"]).endswith("/runs")  # the saved map is measured against an unsaved one
    assert found["pool_best_chunksize"] >= 1
    ratio = found["bridge_map_us_per_item"] / found["pool_us_per_item"]  # from the printed, rounded figures
    assert abs(found["bridge_over_pool_ratio"] - ratio) <= 0.05 * ratio + 0.01


def assert_ratio_of_printed(ratio: float, seconds: float, limit: float, unit: float = 0.0005) -> None:
    """``ratio`` (printed to 2 decimals) is ``seconds / limit`` of the figures printed to 3 decimals: within what
    their rounding allows (a 16 MB limit of 0.008 s printed may be 0.0075-0.0085 s: 6 % either way)."""
    low = (seconds - unit) / (limit + unit) - 0.005
    high = (seconds + unit) / max(limit - unit, 1e-9) + 0.005
    assert low <= ratio <= high, (ratio, seconds, limit)


def test_broadcast_benchmark_compares_with_scatter() -> None:
    found = figures("broadcast.py", "--megabytes", "16", "--workers", "2")
    assert 16 * 2**20 <= found["hpcbridge_bytes_from_client"] < 16 * 2**20 + 4096  # the array and a header
    assert found["hpcbridge_workers_holding_after_amm"] == 2
    # one machine, the client's too: the client writes the machine's copy, both workers map it
    # (private: both copy theirs from it); over the network (each worker its own machine, emulated):
    # each worker its own copy through the comm
    assert (found["hpcbridge_network_copies"], found["hpcbridge_mapped_copies"]) == (0, 2)
    assert (found["hpcbridge_private_network_copies"], found["hpcbridge_private_mapped_copies"]) == (0, 2)
    assert (found["hpcbridge_private_network_network_copies"], found["hpcbridge_private_network_mapped_copies"]) == (2, 0)
    assert found["hpcbridge_private_workers_holding_after_amm"] == 2
    assert found["hpcbridge_private_network_workers_holding_after_amm"] == 2
    assert 16 * 2**20 <= found["hpcbridge_private_bytes_from_client"] < 16 * 2**20 + 4096
    assert found["hpcbridge_private_network_bytes_from_client"] == 16 * 2**20
    assert abs(found["hpcbridge_private_over_scatter_ratio"]
               - found["hpcbridge_private_seconds"] / found["scatter_seconds"]) < 0.01 + 0.05 * found["hpcbridge_private_over_scatter_ratio"]
    assert {"hpcbridge_seconds", "scatter_seconds", "scatter_workers_holding_after_amm",
            "hpcbridge_scheduler_peak_growth_mb", "scatter_scheduler_peak_growth_mb", "hpcbridge_over_scatter_ratio"
            } <= set(found)
    assert found["loopback_gb_per_s"] > 0
    # the limit is the bytes of every copy over one stream's bandwidth
    assert abs(found["loopback_limit_seconds"] - 2 * 16 * 2**20 / (found["loopback_gb_per_s"] * 1e9)) < 0.01 + \
        0.02 * found["loopback_limit_seconds"]
    # and through the cluster's own comm (TLS): the copies times one worker-to-worker copy alone
    assert found["comm_copy_seconds"] > 0
    assert abs(found["comm_limit_seconds"] - 2 * found["comm_copy_seconds"]) < 0.002 + 0.01 * found["comm_limit_seconds"]
    for limit in ("comm_limit", "loopback_limit"):  # each ratio is of the seconds printed beside it
        assert_ratio_of_printed(found[f"hpcbridge_private_network_over_{limit}"],
                                found["hpcbridge_private_network_seconds"], found[f"{limit}_seconds"])
