"""map at the size of a real allocation: hundreds to thousands of worker threads, against a static split.

Workers get many threads and the items wait (``time.sleep`` frees the GIL and the CPU), so on two
cores the only costs left are Dask's and hpcbridge's: what grows with the thread count. In the same
run, for each size: the ideal (the items' total wait over the threads), the naive split (one
contiguous chunk per thread, one ``client.map``: the best simple alternative) and ``bridge.map``
(default settings, its run saved to the run directory), each the median of ``--repeats`` pairs
taken in turn. Even items all wait ``--cost`` s; uneven ones wait a heavy-tailed multiple of it
(Pareto, shape 1.2, capped at 50x, a fixed seed); rising ones wait from nothing to twice ``--cost``
in the order given (items sorted by size: a sweep whose later cases are larger, a triangular
loop), where a static split gives the last threads twice the average. For uneven items the
best any scheduler that does not know the costs in advance can do is printed too: the items
handed out one by one in order, each to the thread that frees first, at no cost at all.

    .venv/bin/python benchmarks/scale.py --sizes 4x64,8x128
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import time

from hpcbridge.local_cluster import local_cluster


def wait(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def wait_all(chunk: list[float]) -> list[float]:
    return [wait(seconds) for seconds in chunk]


def costs(kind: str, n: int, cost: float) -> list[float]:
    """Each item's wait: ``cost`` for even items, a heavy-tailed multiple of it for uneven ones, from
    nothing to twice it for rising ones."""
    if kind == "even":
        return [cost] * n
    if kind == "rising":
        return [2 * cost * (i + 0.5) / n for i in range(n)]
    draw = random.Random(25)
    return [cost * min(50.0, draw.paretovariate(1.2)) for _ in range(n)]


def best_dynamic(items: list[float], threads: int) -> float:
    """When the last item ends if each is given, in order, to the thread that frees first, at no cost:
    what no scheduler that learns the costs only by running the items can beat by much."""
    free = [0.0] * threads
    for seconds in items:
        heapq.heapreplace(free, free[0] + seconds)
    return max(free)


def naive(client, items: list[float], threads: int, chunk_fn=wait_all) -> float:
    """One contiguous chunk per thread in one client.map: the static split (``chunk_fn`` waits a chunk's items)."""
    share = -(-len(items) // threads)
    started = time.perf_counter()
    futures = client.map(chunk_fn, [items[i:i + share] for i in range(0, len(items), share)], pure=False)
    joined = [value for chunk in client.gather(futures) for value in chunk]
    seconds = time.perf_counter() - started
    assert joined == items
    return seconds


def submit_costs(bridge, tasks: int) -> tuple[float, float, float]:
    """What a task costs, in ms: the client's to submit one more chunk of ``bridge.map`` (a given chunk
    size, so no probes: maps of ``tasks`` and of a quarter as many chunks, the difference over the
    difference, so a run's fixed costs are left out), the client's per task of one ``client.map`` call
    (both in the calling thread's CPU time), and the scheduler's per task (``tasks`` empty tasks, from
    submitting until the last is done, wall time)."""
    client = bridge.client
    took: dict[int, list[float]] = {tasks // 4: [], tasks: []}
    theirs, scheduler = [], []
    for _ in range(3):  # the best of three of each: a busy machine only adds
        for count in took:  # the calling thread's CPU time: what the client pays, not what others took meanwhile
            started = time.thread_time()
            run = bridge.map(wait, [0.0] * count, chunk_size=1, save=False, progress=False)
            took[count].append(time.thread_time() - started)
            bridge.gather(run, progress=False, release=True)
            del run
        started, cpu = time.perf_counter(), time.thread_time()
        futures = client.map(wait, [0.0] * tasks, pure=False)
        theirs.append((time.thread_time() - cpu) / tasks)
        client.gather(futures)
        scheduler.append((time.perf_counter() - started) / tasks)
        del futures
    ours = (min(took[tasks]) - min(took[tasks // 4])) / (tasks - tasks // 4)
    return 1000 * ours, 1000 * min(theirs), 1000 * min(scheduler)


def mapped(bridge, items: list[float], fn=wait) -> tuple[float, int]:
    """``bridge.map`` of ``fn`` (it waits its item) with the default settings: seconds, and the chunks it ran."""
    started = time.perf_counter()
    run = bridge.map(fn, items, progress=False)
    values = bridge.gather(run, progress=False)
    seconds = time.perf_counter() - started
    assert values == items
    return seconds, len(run.bounds)


def compare(bridge, prefix: str, threads: int, options: argparse.Namespace, fn=wait, chunk_fn=wait_all) -> None:
    """Even and heavy-tailed items: ``bridge.map`` against the static split, ``options.repeats`` pairs
    taken in turn; prints the medians, their ratios and the efficiency against the ideal."""
    for kind in ("even", "uneven", "rising"):
        items = costs(kind, threads * options.items_per_thread, options.cost)
        ideal = sum(items) / threads
        ours, theirs, chunks = [], [], []
        for repeat in range(options.repeats):
            if repeat % 2:
                theirs.append(naive(bridge.client, items, threads, chunk_fn))
            seconds, count = mapped(bridge, items, fn)
            ours.append(seconds)
            chunks.append(count)
            if not repeat % 2:
                theirs.append(naive(bridge.client, items, threads, chunk_fn))
        bridge_seconds, naive_seconds = statistics.median(ours), statistics.median(theirs)
        print(f"{prefix}_{kind}_ideal_seconds: {ideal:.3f}")
        print(f"{prefix}_{kind}_naive_seconds: {naive_seconds:.3f}")
        print(f"{prefix}_{kind}_bridge_seconds: {bridge_seconds:.3f}")
        print(f"{prefix}_{kind}_bridge_over_naive: {bridge_seconds / naive_seconds:.3f}")
        print(f"{prefix}_{kind}_speedup_vs_naive: {naive_seconds / bridge_seconds:.3f}")
        print(f"{prefix}_{kind}_efficiency: {ideal / bridge_seconds:.3f}")
        if kind != "even":
            bound = best_dynamic(items, threads)
            print(f"{prefix}_{kind}_best_dynamic_seconds: {bound:.3f}")
            print(f"{prefix}_{kind}_best_dynamic_speedup_vs_naive: {naive_seconds / bound:.3f}")
        print(f"{prefix}_{kind}_chunks: {statistics.median(chunks):.0f}", flush=True)


def options_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--items-per-thread", type=int, default=40, help="items per thread (even: 0.8 s of waits)")
    parser.add_argument("--cost", type=float, default=0.02, help="seconds each even item waits")
    parser.add_argument("--repeats", type=int, default=3, help="pairs taken in turn; the medians are printed")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = options_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4x64,8x128", help="WORKERSxTHREADS, comma-separated")
    options = parser.parse_args(argv)
    for size in options.sizes.split(","):
        workers, threads_per_worker = (int(part) for part in size.split("x"))
        threads = workers * threads_per_worker
        prefix = f"t{threads}"
        memory = f"{max(20, 512 // threads_per_worker)}M"  # a worker needs ~100 MB whatever its threads
        with local_cluster(workers, threads_per_worker=threads_per_worker, mem_per_cpu=memory,
                           say=lambda text: None) as (_, bridge):
            print(f"{prefix}_threads: {bridge.total_threads}")
            bridge.gather(bridge.map(wait, [0.0] * threads, progress=False), progress=False)  # imports, workers warm
            ours, theirs, scheduler = submit_costs(bridge, 4 * threads)
            print(f"{prefix}_submit_ms_per_chunk: {ours:.4f}")
            print(f"{prefix}_client_map_ms_per_task: {theirs:.4f}")
            print(f"{prefix}_submit_over_client_map: {ours / theirs:.2f}")
            print(f"{prefix}_scheduler_ms_per_task: {scheduler:.3f}")
            compare(bridge, prefix, threads, options)

if __name__ == "__main__":
    main()
