"""The Mandelbrot set as a uint8 image of escape counts, computed in row blocks on the workers.

A pixel's value is the number of iterations of z -> z^2 + c (from z = 0) that stay within
|z| <= 2, at most ``maxiter`` (255 fits uint8). Row 0 is the top of the image (Im = im_max),
column 0 the left (Re = re_min); both ends of both ranges are pixel centres.

Two compiled kernels give the same pixels: :func:`reference_rows`, the plain loop per pixel, and
:func:`rows`, which iterates 32 adjacent pixels in lockstep (every lane does every iteration and
counts while it is inside; a block stops when no lane is inside) so that LLVM vectorises it; it
is about 7x faster here. Neither uses ``fastmath``: a fused multiply-add changes which iteration
escapes.

:func:`render` spreads row blocks over the workers and copies them into one contiguous array
as they arrive, a few waves at a time, so the client never holds more than the image plus the
blocks in flight. :func:`render_into_file` has the workers write their blocks into one shared
``.npy`` file instead, which the client maps without a copy.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from hpcbridge.client.bridge import Bridge
from hpcbridge.private_files import write_at

#: The region of the issue: a filament near the Seahorse valley, no cardioid or bulb inside.
REGION = (-0.7440, -0.7433, 0.1315, 0.1322)
MAXITER = 255
LANES = 32
BLOCK_BYTES = 32 << 20  # the largest row block
SMALLEST_BLOCK_BYTES = 1 << 20  # the last blocks, for an even end


@dataclass(frozen=True)
class View:
    """Which part of the plane, at what size: ``width`` x ``height`` pixels, ``maxiter`` iterations."""

    width: int
    height: int
    re_min: float = REGION[0]
    re_max: float = REGION[1]
    im_min: float = REGION[2]
    im_max: float = REGION[3]
    maxiter: int = MAXITER

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"image size {self.width} x {self.height}: both must be at least 1")
        if not 1 <= self.maxiter <= 255:
            raise ValueError(f"maxiter {self.maxiter}: must be 1..255 for a uint8 image")

    def arguments(self) -> tuple:
        return (self.width, self.height, self.re_min, self.re_max, self.im_min, self.im_max, self.maxiter)


@cache
def _kernels():
    import numba

    @numba.njit(cache=True)
    def steps(n: int, low: float, high: float) -> float:
        return (high - low) / (n - 1) if n > 1 else 0.0

    @numba.njit(cache=True)
    def plain(row0, row1, width, height, re_min, re_max, im_min, im_max, maxiter):
        out = np.empty((row1 - row0, width), np.uint8)
        dx = steps(width, re_min, re_max)
        dy = steps(height, im_min, im_max)
        for r in range(row0, row1):
            ci = im_max - r * dy
            for j in range(width):
                cr = re_min + j * dx
                zr = 0.0
                zi = 0.0
                count = maxiter
                for k in range(maxiter):
                    x2 = zr * zr
                    y2 = zi * zi
                    if x2 + y2 > 4.0:
                        count = k
                        break
                    zi = 2.0 * zr * zi + ci
                    zr = x2 - y2 + cr
                out[r - row0, j] = count
        return out

    @numba.njit(cache=True)
    def lockstep(row0, row1, width, height, re_min, re_max, im_min, im_max, maxiter):
        out = np.empty((row1 - row0, width), np.uint8)
        dx = steps(width, re_min, re_max)
        dy = steps(height, im_min, im_max)
        cr = np.empty(LANES)
        zr = np.empty(LANES)
        zi = np.empty(LANES)
        count = np.empty(LANES, np.int32)
        for r in range(row0, row1):
            ci = im_max - r * dy
            for j0 in range(0, width, LANES):
                n = min(LANES, width - j0)
                for lane in range(LANES):
                    cr[lane] = re_min + (j0 + min(lane, n - 1)) * dx  # spare lanes repeat the last pixel
                    zr[lane] = 0.0
                    zi[lane] = 0.0
                    count[lane] = 0
                for _ in range(maxiter):
                    alive = 0
                    for lane in range(LANES):
                        x2 = zr[lane] * zr[lane]
                        y2 = zi[lane] * zi[lane]
                        inside = np.int32(x2 + y2 <= 4.0)  # once out, never back: |z| > 2 keeps growing
                        count[lane] += inside
                        alive += inside
                        zi[lane] = 2.0 * zr[lane] * zi[lane] + ci
                        zr[lane] = x2 - y2 + cr[lane]
                    if alive == 0:
                        break
                for lane in range(n):
                    out[r - row0, j0 + lane] = count[lane]
        return out

    return plain, lockstep


def rows(bounds: tuple[int, int], view: View) -> np.ndarray:
    """Rows ``range(*bounds)`` of the image, with the 32-lane lockstep kernel."""
    return _kernels()[1](bounds[0], bounds[1], *view.arguments())


def reference_rows(bounds: tuple[int, int], view: View) -> np.ndarray:
    """Rows ``range(*bounds)`` of the image, with the plain per-pixel loop (the reference)."""
    return _kernels()[0](bounds[0], bounds[1], *view.arguments())


def _block(task: tuple[int, int, View]) -> np.ndarray:
    return rows((task[0], task[1]), task[2])


def block(bounds, view) -> np.ndarray:
    """Rows ``[bounds[0], bounds[1])`` of ``view``, which may also be a dict of View's fields.

    For callers that pass plain values, e.g. MATLAB: a row ``[low high]`` and a broadcast struct
    with fields width, height, re_min, re_max, im_min, im_max, maxiter (any numeric class).
    """
    if isinstance(view, dict):
        view = View(width=int(view["width"]), height=int(view["height"]),
                    **{k: float(view[k]) for k in ("re_min", "re_max", "im_min", "im_max") if k in view},
                    maxiter=int(view.get("maxiter", MAXITER)))
    return rows((int(bounds[0]), int(bounds[1])), view)


def row_blocks(view: View, workers: int, block_bytes: int = BLOCK_BYTES) -> list[tuple[int, int]]:
    """Row ranges that shrink towards the end (guided self-scheduling), at most ``block_bytes`` each.

    Each block takes half a worker's share of the rows still left, between
    :data:`SMALLEST_BLOCK_BYTES` (or an eighth of a worker's share of all rows, if less) and
    ``block_bytes``. Large blocks first: a task costs ~3 ms of CPU here, so fewer tasks (at
    20000^2-35000^2, 32 MB blocks went into a shared file at 1.7-2.6 GB/s, 8 MB ones at 1.0-1.1).
    Small ones last, so that rows of very different cost still end together.
    """
    width = max(1, view.width)
    largest = max(1, block_bytes // width)
    smallest = max(1, min(largest, SMALLEST_BLOCK_BYTES // width, math.ceil(view.height / (8 * max(1, workers)))))
    blocks, low = [], 0
    while low < view.height:
        size = min(largest, max(smallest, math.ceil((view.height - low) / (2 * max(1, workers)))))
        blocks.append((low, min(low + size, view.height)))
        low += size
    return blocks


def render(bridge: Bridge, view: View, block_bytes: int = BLOCK_BYTES, out: np.ndarray | None = None) -> np.ndarray:
    """The whole image, computed in row blocks on the workers, as one C-contiguous uint8 array.

    Blocks go out in waves of two per worker and the next wave is sent before the current one
    is gathered, so the workers stay busy while the client copies; the client holds the image
    and at most two waves of blocks.
    """
    workers = max(1, bridge.n_workers)
    image = np.empty((view.height, view.width), np.uint8) if out is None else out
    if image.shape != (view.height, view.width) or image.dtype != np.uint8 or not image.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous uint8 array of shape {(view.height, view.width)}")
    blocks = row_blocks(view, workers, block_bytes)
    wave = 2 * workers
    waves = [blocks[i:i + wave] for i in range(0, len(blocks), wave)]

    def send(bounds: list[tuple[int, int]]):
        # Not saved to a run directory: these runs are this function's own, unnamed, and gone with
        # it; saving would write the whole image to disk once more (1.2 GB at 35000^2).
        return bounds, bridge.map(_block, [(low, high, view) for low, high in bounds], chunk_size=1, progress=False,
                                  save=False)

    pending = [send(waves[0])] if waves else []
    for index in range(len(waves)):
        if index + 1 < len(waves):
            pending.append(send(waves[index + 1]))
        bounds, run = pending.pop(0)
        for (low, high), block in zip(bounds, bridge.gather(run, progress=False)):
            image[low:high] = block
        del run
    return image


def write_rows(path: str, low: int, block: np.ndarray) -> int:
    """On a worker: write ``block`` into the shared ``.npy`` file at row ``low``; return its row count.

    A plain positioned write, not a memory map and ``msync``: the page cache takes it at memory
    speed, and closing the file is what a network filesystem (NFS's close-to-open) needs for the
    client to see it.
    """
    layout = np.load(path, mmap_mode="r")  # numpy reads the header; no page is touched
    shape, dtype, start, fortran_order = layout.shape, layout.dtype, layout.offset, np.isfortran(layout)
    del layout
    block = np.ascontiguousarray(block)
    if fortran_order or dtype != block.dtype or tuple(shape[1:]) != block.shape[1:] or low + len(block) > shape[0]:
        raise ValueError(f"rows {low}..{low + len(block)} of {block.dtype} {block.shape[1:]} do not fit "
                         f"{path} ({dtype} {tuple(shape)})")
    with open(path, "r+b") as file:
        write_at(file.fileno(), block, start + low * (block.nbytes // max(1, len(block))))
    return len(block)


def _block_into_file(task: tuple[int, int, View, str]) -> int:
    """Compute rows ``[low, high)`` and write them straight into the shared ``.npy`` file; return the row count."""
    low, high, view, path = task
    return write_rows(path, low, rows((low, high), view))


def render_into_file(bridge: Bridge, view: View, path: str | os.PathLike[str],
                     block_bytes: int = BLOCK_BYTES) -> np.ndarray:
    """The whole image written by the workers into one ``.npy`` file; returns it memory-mapped (no copy).

    For a client that shares a filesystem with the workers, as on every HPC system: each worker
    computes its row blocks and writes them in place (:func:`rows_into_file`), and nothing but
    row counts travels back over the network. MATLAB opens the same file with ``memmapfile``
    (the data start at the ``.npy`` header's length) or ``readNPY``.
    """
    blocks = row_blocks(view, max(1, bridge.n_workers), block_bytes)
    return rows_into_file(bridge, path, (view.height, view.width), _block_into_file,
                          [(low, high, view) for low, high in blocks])


def rows_into_file(bridge: Bridge, path: str | os.PathLike[str], shape: tuple[int, int],
                   write_block: Callable[[tuple], int], tasks: list[tuple]) -> np.ndarray:
    """Assemble a ``uint8`` array of ``shape`` in one ``.npy`` file the workers write; return it mapped.

    The client creates the file (owner-only, the header and the full size at once); then
    ``write_block((*task, path))`` runs on the workers for every task, one task per chunk, writes
    its rows with :func:`write_rows` and returns how many it wrote. The rows written must add up
    to the array's height. The returned array is the file mapped read-only.
    """
    path = Path(path).expanduser().resolve()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(descriptor)
    created = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    del created  # header written, size set; the workers write the rows
    run = bridge.map(write_block, [(*task, str(path)) for task in tasks], chunk_size=1, progress=False,
                     save=False)  # the file is the result; the row counts need no run directory
    written = sum(bridge.gather(run, progress=False))
    if written != shape[0]:
        raise RuntimeError(f"the workers wrote {written} of {shape[0]} rows into {path}")
    return np.load(path, mmap_mode="r")


def image(cluster: str, width: int | float, height: int | float, maxiter: int | float = MAXITER) -> np.ndarray:
    """The whole image of the default region, for MATLAB: one call, one contiguous array, one conversion.

    ``cluster`` is the handle ``hpcbridge.connect`` returns in MATLAB (``c.cluster``); sizes may
    arrive as doubles. MATLAB converts the result with a single ``uint8(...)``, so it never
    holds the blocks, only Python's image and its own copy.
    """
    from hpcbridge.client.matlab import bridge_for

    view = View(width=int(width), height=int(height), maxiter=int(maxiter))
    return render(bridge_for(cluster), view)


def render_serial(view: View) -> np.ndarray:
    """The whole image in this process with the lockstep kernel (the single-process baseline)."""
    return rows((0, view.height), view)


def save_plot(image: np.ndarray, view: View, path: str, max_pixels: int = 2000) -> None:
    """Save the image as a PNG plot with Re/Im axes, striding it down to at most ``max_pixels`` a side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stride = max(1, math.ceil(max(image.shape) / max_pixels))
    shown = image[::stride, ::stride]
    figure, axes = plt.subplots(figsize=(8, 8 * view.height / view.width + 0.5), dpi=max(100, shown.shape[1] // 7))
    axes.imshow(shown, cmap="magma", origin="upper", interpolation="nearest",
                extent=(view.re_min, view.re_max, view.im_min, view.im_max))
    axes.set_xlabel("Re c")
    axes.set_ylabel("Im c")
    axes.set_title(f"Mandelbrot, {view.width} x {view.height}, {view.maxiter} iterations"
                   + (f" (1 pixel in {stride} each way)" if stride > 1 else ""))
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
