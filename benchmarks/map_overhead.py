"""Per-item overhead of ``Bridge.map`` against ``multiprocessing.Pool.map`` and raw ``client.map``.

Prints ``name: value`` lines. The function is ``operator.neg``, so nearly all the time measured is
overhead. In the same run: a serial loop, ``multiprocessing.Pool.map`` with as many processes as
workers at its best chunksize (the best peer for tiny items on one machine; the chunksize is
chosen first, then the pool's map is timed in turn with the bridge's, best of each), and raw
``client.map``, which makes one task per item and costs milliseconds per item, so it is measured
on fewer items (``--raw-items``); the ratios compare per-item times. ``run_start_ms`` is the
fixed cost of a run: ``map`` of one item until it returns. The repeats map the same function,
so after the first they plan from the time per item the earlier runs measured (no warm-up).
``saving_cost_ratio`` is the time of the map with its chunks saved to the run directory (the
default) over the same map with ``save=False``, interleaved: what keeping results on disk costs.

    .venv/bin/python benchmarks/map_overhead.py --items 1000000 --workers 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import operator
import time

from hpcbridge.local_cluster import local_cluster

RAW_REPEATS = 3  # raw client.map is timed at most this often, whatever --repeats says
SETTLE_SECONDS = 0.05  # a pause before each timed map, so that none pays for the last one's clean-up


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000, help="items for bridge.map (and Pool.map, the loop)")
    parser.add_argument("--raw-items", type=int, default=2_000,
                        help="items for raw client.map, one task each (kept small: ~2.5 ms a task)")
    parser.add_argument("--workers", type=int, default=2, help="local Dask workers, one thread each")
    parser.add_argument("--repeats", type=int, default=10,
                        help="timed repeats of each method, the best printed (a 200,000-item map lasts ~50 ms: "
                             "one repeat's spread is ±30 %%)")
    options = parser.parse_args(argv)
    with local_cluster(options.workers, say=lambda line: None, job_name="hpcbridge-bench") as (_, bridge):
        measure(bridge, options)


def measure(bridge, options) -> None:
    items = range(options.items)
    raw_items = list(range(options.raw_items))
    bridge.gather(bridge.map(operator.neg, range(1000), progress=False), progress=False)  # warm up
    ours, unsaved, raw, pooled, serial, chunks = [], [], [], [], [], 0
    with multiprocessing.get_context("spawn").Pool(bridge.n_workers) as pool:  # started beforehand, as a cluster is
        pool.map(operator.neg, range(1000))
        pool_chunksize = _best_chunksize(pool, options.items, bridge.n_workers)
        for repeat in range(options.repeats):  # interleaved, best of each: the machine's speed drifts
            # The map as users run it (its chunks saved to the run directory), and the same map with
            # save=False, in turns (each goes first every other repeat, so neither always follows raw).
            for save in (True, False) if repeat % 2 == 0 else (False, True):
                time.sleep(SETTLE_SECONDS)
                started = time.perf_counter()
                run = bridge.map(operator.neg, items, progress=False, save=save)
                results = bridge.gather(run, progress=False)
                (ours if save else unsaved).append(time.perf_counter() - started)
                chunks = len(run.futures)
                assert results[-1] == -(options.items - 1)
            pooled.append(_pool_seconds(pool, options.items, pool_chunksize))
            serial.append(_serial(options.items))
            if repeat < RAW_REPEATS:  # a second each: its spread is small beside its size
                started = time.perf_counter()
                futures = bridge.client.map(operator.neg, raw_items, pure=False)
                bridge.client.gather(futures)
                raw.append(time.perf_counter() - started)
                del futures
    starts = []
    for _ in range(5):
        started = time.perf_counter()
        run = bridge.map(operator.neg, [1], progress=False)
        starts.append(time.perf_counter() - started)
        bridge.gather(run, progress=False)
    serial_seconds, pool_seconds = min(serial), min(pooled)
    per_item = min(ours) / options.items
    raw_per_item = min(raw) / options.raw_items
    pool_per_item = pool_seconds / options.items
    print(f"workers: {bridge.n_workers}")
    print(f"items: {options.items}")
    print(f"chunks: {chunks}")
    print(f"bridge_map_seconds: {min(ours):.3f}")
    print(f"bridge_map_us_per_item: {per_item * 1e6:.3f}")
    print(f"runs_saved_to: {bridge.run_root or 'nowhere (saving is off)'}")
    print(f"unsaved_map_us_per_item: {min(unsaved) / options.items * 1e6:.3f}")
    print(f"saving_cost_ratio: {min(ours) / min(unsaved):.3f}")
    print(f"raw_client_map_items: {options.raw_items}")
    print(f"raw_client_map_us_per_item: {raw_per_item * 1e6:.1f}")
    print(f"raw_over_bridge_ratio: {raw_per_item / per_item:.0f}")
    print(f"serial_us_per_item: {serial_seconds / options.items * 1e6:.3f}")
    print(f"pool_us_per_item: {pool_per_item * 1e6:.3f}")
    print(f"pool_best_chunksize: {pool_chunksize}")
    print(f"bridge_over_pool_ratio: {per_item / pool_per_item:.2f}")
    print(f"run_start_ms: {min(starts) * 1e3:.1f}")


def _serial(n: int) -> float:
    started = time.perf_counter()
    values = [operator.neg(item) for item in range(n)]
    assert values[-1] == -(n - 1)
    return time.perf_counter() - started


def _pool_seconds(pool, n: int, chunksize: int) -> float:
    time.sleep(SETTLE_SECONDS)
    started = time.perf_counter()
    values = pool.map(operator.neg, range(n), chunksize=chunksize)
    seconds = time.perf_counter() - started
    assert values[-1] == -(n - 1)
    return seconds


def _best_chunksize(pool, n: int, processes: int, tries: int = 3) -> int:
    """``Pool.map``'s fastest chunksize for these items (best of ``tries`` each), timed again beside the bridge."""
    sizes = sorted({max(1, n // (4 * processes)), max(1, n // processes), 10_000, 1_000})
    return min(sizes, key=lambda size: min(_pool_seconds(pool, n, size) for _ in range(tries)))


if __name__ == "__main__":
    main()
