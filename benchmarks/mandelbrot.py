"""Mandelbrot time per gigapixel on the cluster vs one process, and assembly vs a memory copy.

    python benchmarks/mandelbrot.py --size 20000 --workers 2

* ``seconds_per_gigapixel``: the whole image in row blocks on the workers, assembled into one
  array, against ``single_seconds_per_gigapixel``: the same compiled kernel in this process
  (run on one core; both after a warm-up that loads the compiled kernel);
* ``assembly_gbps``: blocks already computed and held by the workers, gathered and copied into
  one contiguous array, against ``memcpy_gbps``: ``np.copyto`` of the same number of bytes here
  (both assembly figures are the best of three: the first pays for warming the workers up);
* ``file_assembly_gbps``: the same blocks (made on the workers, nothing to compute) written by
  the workers into one shared ``.npy`` file that this process then maps, from submitting the map
  until the mapped array is open here: the assembly a shared filesystem allows, with no block
  crossing the network (``file_assembly_vs_gather`` > 1: the file wins at this size);
* ``file_seconds``: the same image written by the workers into one shared ``.npy`` file that this
  process maps (``render_into_file``), against ``seconds`` (``file_vs_gather`` < 1: the file wins).

The single-process image is computed only when ``--size`` is at most ``--single-max`` (default
12000); above it, single_seconds_per_gigapixel is measured at --single-max. Prints ``name: value``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hpcbridge.workloads import add_cluster_options, open_cluster
from hpcbridge.workloads.mandelbrot import (View, render, render_into_file, render_serial, row_blocks, rows,
                                           rows_into_file, write_rows)


ASSEMBLY_REPEATS = 3  # the assembly figures are the best of this many (the first one pays for warming up)


def filled_block(task: tuple[int, int, int]) -> np.ndarray:
    low, high, width = task
    return np.full((high - low, width), low % 251, np.uint8)


def filled_block_into_file(task: tuple[int, int, int, str]) -> int:
    """``filled_block``'s rows, written by the worker into the shared ``.npy`` file; the row count."""
    low, high, width, path = task
    return write_rows(path, low, filled_block((low, high, width)))


def assemble_through_file(bridge, blocks: list[tuple[int, int]], shape: tuple[int, int], path: Path) -> np.ndarray:
    """The workers write every block into one ``.npy`` file; returns it mapped here (no copy)."""
    return rows_into_file(bridge, path, shape, filled_block_into_file, [(low, high, shape[1]) for low, high in blocks])


def gather_blocks(bridge, blocks: list[tuple[int, int]], assembled: np.ndarray) -> float:
    """Blocks made and held by the workers first, then gathered and copied into ``assembled``: seconds."""
    run = bridge.map(filled_block, [(low, high, assembled.shape[1]) for low, high in blocks], chunk_size=1,
                     progress=False, save=False)  # as render() maps its blocks
    while run.done_items() < run.n_items:  # computed and held by the workers before timing
        time.sleep(0.05)
    started = time.perf_counter()
    for (low, high), block in zip(blocks, bridge.gather(run, progress=False)):
        assembled[low:high] = block
    return time.perf_counter() - started


def best_of(repeats: int, fn, *args) -> tuple[object, float]:
    best, value = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        value = fn(*args)
        best = min(best, time.perf_counter() - started)
    return value, best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4000, help="width and height in pixels (default 4000)")
    parser.add_argument("--single-max", type=int, default=12000,
                        help="largest size computed in one process too (default 12000)")
    parser.add_argument("--repeats", type=int, default=1, help="best of this many runs (default 1)")
    add_cluster_options(parser)
    args = parser.parse_args(argv)
    view = View(args.size, args.size)
    single_view = View(min(args.size, args.single_max), min(args.size, args.single_max))

    render_serial(View(64, 64))  # load the compiled kernel
    single, single_seconds = best_of(args.repeats, render_serial, single_view)
    with open_cluster(args.scheduler_file, args.workers, args.timeout, say=lambda line: None,
                      job_name="hpcbridge-bench-mandelbrot") as bridge:
        workers = bridge.n_workers
        render(bridge, View(64, 64 * workers))
        image, seconds = best_of(args.repeats, render, bridge, view)
        if single_view == view:
            identical = np.array_equal(image, single)
        else:  # the top and bottom rows, computed here
            edge = min(64, view.height)
            identical = (np.array_equal(image[:edge], rows((0, edge), view))
                         and np.array_equal(image[-edge:], rows((view.height - edge, view.height), view)))

        with tempfile.TemporaryDirectory(prefix="hpcbridge-bench-") as folder:
            mapped, file_seconds = best_of(args.repeats, render_into_file, bridge, view, Path(folder, "image.npy"))
            file_identical = bool(np.array_equal(mapped, image))
            del mapped

        blocks = row_blocks(view, workers)
        assembled = np.zeros_like(image)
        assembly_seconds = min(gather_blocks(bridge, blocks, assembled) for _ in range(ASSEMBLY_REPEATS))
        with tempfile.TemporaryDirectory(prefix="hpcbridge-bench-") as folder:
            file_assembly_seconds, file_assembled_right = float("inf"), True
            for repeat in range(ASSEMBLY_REPEATS):
                path = Path(folder, f"blocks-{repeat}.npy")
                started = time.perf_counter()
                through_file = assemble_through_file(bridge, blocks, image.shape, path)
                file_assembly_seconds = min(file_assembly_seconds, time.perf_counter() - started)
                file_assembled_right &= bool(np.array_equal(through_file, assembled))
                del through_file
                path.unlink()
    expected = np.concatenate([np.full((high - low, 1), low % 251, np.uint8) for low, high in blocks])
    assembled_right = bool(np.array_equal(assembled[:, :1], expected) and np.array_equal(assembled[:, -1:], expected))

    source = np.ones_like(image)
    target = np.zeros_like(image)
    _, memcpy_seconds = best_of(3, np.copyto, target, source)

    gigapixels = view.width * view.height / 1e9
    single_gigapixels = single_view.width * single_view.height / 1e9
    per_gp = seconds / gigapixels
    single_per_gp = single_seconds / single_gigapixels
    assembly_gbps = image.nbytes / assembly_seconds / 1e9
    file_assembly_gbps = image.nbytes / file_assembly_seconds / 1e9
    memcpy_gbps = image.nbytes / memcpy_seconds / 1e9
    lines = {
        "size": f"{view.width}x{view.height}",
        "workers": workers,
        "mean_iterations": f"{image.mean(dtype=np.float64):.2f}",
        "identical_to_single_process": "yes" if identical else "NO",
        "assembled_in_order": "yes" if assembled_right else "NO",
        "seconds": f"{seconds:.3f}",
        "seconds_per_gigapixel": f"{per_gp:.2f}",
        "single_seconds_per_gigapixel": f"{single_per_gp:.2f}",
        "speedup_vs_single": f"{single_per_gp / per_gp:.2f}",
        "efficiency": f"{single_per_gp / per_gp / workers:.3f}",
        "assembly_gbps": f"{assembly_gbps:.3g}",
        "memcpy_gbps": f"{memcpy_gbps:.3g}",
        "assembly_vs_memcpy": f"{assembly_gbps / memcpy_gbps:.3g}",
        "file_assembly_gbps": f"{file_assembly_gbps:.3g}",
        "file_assembly_vs_gather": f"{file_assembly_gbps / assembly_gbps:.3g}",
        "file_assembled_in_order": "yes" if file_assembled_right else "NO",
        "file_seconds": f"{file_seconds:.3f}",
        "file_vs_gather": f"{file_seconds / seconds:.3f}",
        "file_identical": "yes" if file_identical else "NO",
    }
    for name, value in lines.items():
        print(f"{name}: {value}")
    return 0 if identical and assembled_right and file_identical and file_assembled_right else 1


if __name__ == "__main__":
    sys.exit(main())
