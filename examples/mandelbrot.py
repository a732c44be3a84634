"""Compute a Mandelbrot image in row blocks on a Dask cluster and save it as a PNG plot.

    python examples/mandelbrot.py --size 5000 --png mandelbrot.png
    python examples/mandelbrot.py --size 35000 --png big.png --save big.npy   # 1.2 gigapixels
    python examples/mandelbrot.py --size 35000 --into /shared/big.npy          # workers write the file

The region is Re [-0.7440, -0.7433], Im [0.1315, 0.1322] with 255 iterations (change it with
--region and --maxiter); the image is uint8 escape counts, assembled into one contiguous array.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from hpcbridge.workloads import add_cluster_options, open_cluster
from hpcbridge.workloads.mandelbrot import MAXITER, REGION, View, render, render_into_file, save_plot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--size", type=int, default=5000, help="width and height in pixels (default 5000)")
    parser.add_argument("--width", type=int, help="width in pixels (default --size)")
    parser.add_argument("--height", type=int, help="height in pixels (default --size)")
    parser.add_argument("--region", type=float, nargs=4, default=REGION, metavar=("RE_MIN", "RE_MAX", "IM_MIN", "IM_MAX"))
    parser.add_argument("--maxiter", type=int, default=MAXITER, help=f"iterations, at most 255 (default {MAXITER})")
    parser.add_argument("--png", default="mandelbrot.png", help="where to save the plot (default mandelbrot.png)")
    parser.add_argument("--save", metavar="F.npy", help="also save the full image as a .npy file")
    parser.add_argument("--into", metavar="F.npy", help="have the workers write the image straight into this .npy "
                        "file (on a filesystem they share with you) and map it here, instead of sending the blocks")
    add_cluster_options(parser)
    args = parser.parse_args(argv)
    try:
        view = View(args.width or args.size, args.height or args.size, *args.region, maxiter=args.maxiter)
    except ValueError as error:
        parser.error(str(error))

    print(f"Mandelbrot {view.width} x {view.height} over Re [{view.re_min}, {view.re_max}], "
          f"Im [{view.im_min}, {view.im_max}], {view.maxiter} iterations")
    with open_cluster(args.scheduler_file, args.workers, args.timeout, job_name="hpcbridge-mandelbrot") as bridge:
        workers = bridge.n_workers
        started = time.perf_counter()
        render(bridge, View(64, 64 * workers))
        print(f"loading the compiled kernel on the workers: {time.perf_counter() - started:.2f} s")
        started = time.perf_counter()
        image = render_into_file(bridge, view, args.into) if args.into else render(bridge, view)
        seconds = time.perf_counter() - started
    gigapixels = view.width * view.height / 1e9
    print(f"image: {image.shape[0]} x {image.shape[1]} {image.dtype}, contiguous {image.flags.c_contiguous}")
    print(f"mean iterations: {image.mean(dtype=np.float64):.2f}; never escaped: {np.count_nonzero(image == view.maxiter)} pixels")
    print(f"workers: {workers}")
    print(f"time: {seconds:.2f} s ({seconds / gigapixels:.1f} s per gigapixel)")
    save_plot(image, view, args.png)
    print(f"plot: {args.png}")
    if args.into:
        print(f"array: {args.into} (written by the workers)")
    if args.save:
        np.save(args.save, image)
        print(f"array: {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
