"""Per-item overhead of ``Bridge.map`` against raw ``client.map``, on a local scheduler-file cluster.

Prints ``name: value`` lines. The function is ``operator.neg``, so nearly all the time measured is
overhead. Raw ``client.map`` makes one task per item and costs milliseconds per item, so it is
measured on fewer items (``--raw-items``) in the same run; the ratio compares per-item times.

    .venv/bin/python benchmarks/map_overhead.py --items 1000000 --workers 2
"""

from __future__ import annotations

import argparse
import operator
import time

from hpcbridge.backends.local_cluster import local_cluster


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--raw-items", type=int, default=2_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args(argv)
    with local_cluster(options.workers, say=lambda line: None, job_name="hpcbridge-bench") as (_, bridge):
        measure(bridge, options)


def measure(bridge, options) -> None:
    items = range(options.items)
    raw_items = list(range(options.raw_items))
    bridge.gather(bridge.map(operator.neg, range(1000), progress=False), progress=False)  # warm up
    ours, raw, chunks = [], [], 0
    for _ in range(options.repeats):  # interleaved, best of each
        started = time.perf_counter()
        run = bridge.map(operator.neg, items, progress=False)
        results = bridge.gather(run, progress=False)
        ours.append(time.perf_counter() - started)
        chunks = len(run.futures)
        assert results[-1] == -(options.items - 1)
        started = time.perf_counter()
        futures = bridge.client.map(operator.neg, raw_items, pure=False)
        bridge.client.gather(futures)
        raw.append(time.perf_counter() - started)
        del futures
    per_item = min(ours) / options.items
    raw_per_item = min(raw) / options.raw_items
    print(f"workers: {bridge.n_workers}")
    print(f"items: {options.items}")
    print(f"chunks: {chunks}")
    print(f"bridge_map_seconds: {min(ours):.3f}")
    print(f"bridge_map_us_per_item: {per_item * 1e6:.3f}")
    print(f"raw_client_map_items: {options.raw_items}")
    print(f"raw_client_map_us_per_item: {raw_per_item * 1e6:.1f}")
    print(f"raw_over_bridge_ratio: {raw_per_item / per_item:.0f}")


if __name__ == "__main__":
    main()
