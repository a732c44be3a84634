"""Direct frequency response of a 2-D truss, frequencies spread over a Dask cluster.

    python examples/truss.py --nx 60 --ny 60 --frequencies 400 --png frf.png --csv frf.csv
    python examples/truss.py --mesh plate            # reads Triangle's plate.node and plate.ele
    python examples/truss.py --model model.mat       # your own K, C, M, b (and P(ω), outputs)

--mesh BASE reads BASE.node and BASE.ele (Triangle's format), or the mesh of that name shipped
with hpcbridge (plate: an unstructured plate with a hole, 3234 unknowns). --model FILE takes the
matrices as they are, from MATLAB (save model.mat K C M b P_omega P outputs; outputs count from
1) or NumPy (numpy.savez; outputs count from 0); see hpcbridge.workloads.truss.load_model.

Solves (K + iωC − ω²M) x = P(ω) b with K, C = 0.004 K and M (lumped) broadcast to the workers
once; each worker analyses the sparsity once and then factorises per frequency (MKL PARDISO,
complex symmetric, when MKL is installed; SciPy's SuperLU otherwise). Nodes with the smallest x
are supported; a unit load (P = 1) acts in +y on the top right node, where the response is read.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np

from hpcbridge.workloads import add_cluster_options, open_cluster
from hpcbridge.workloads.truss import (SOLVERS, Mesh, MeshError, assemble, find_mesh, first_frequency_estimate,
                                       frequency_response, load_model, read_triangle, structured_mesh,
                                       with_output_nodes)


def save_plot(omegas: np.ndarray, response: np.ndarray, labels: list[str], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    for column, label in enumerate(labels):
        axes.semilogy(omegas / (2 * np.pi), np.abs(response[:, column]), lw=1, label=label)
    if len(labels) > 1:
        axes.legend(fontsize="small")
    axes.set_xlabel("frequency [Hz]")
    axes.set_ylabel("|displacement| [m/N]" if len(labels) > 1 else f"|displacement| at {labels[0]} [m/N]")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def supported_at(mesh: Mesh, support: str, tolerance: float, parser: argparse.ArgumentParser) -> Mesh:
    """The mesh with its supports at AXIS=VALUE (e.g. Danial's ring at y=2) instead of the smallest x."""
    axis, _, value = support.partition("=")
    try:
        column, at = {"x": 0, "y": 1}[axis.strip()], float(value)
    except (KeyError, ValueError):
        parser.error(f"--support: {support!r}; expected x=VALUE or y=VALUE, e.g. y=2")
    fixed = np.flatnonzero(np.abs(mesh.nodes[:, column] - at) <= tolerance)
    if fixed.size == 0:
        parser.error(f"--support {support}: no node within {tolerance:g} of {axis}={at:g}; "
                     f"{axis} runs from {mesh.nodes[:, column].min():g} to {mesh.nodes[:, column].max():g}")
    return dataclasses.replace(mesh, fixed=fixed)


#: At most this many response columns are printed, plotted and written to the table.
MAX_OUTPUTS = 20


def node_numbers(text: str, parser: argparse.ArgumentParser) -> list[int]:
    """``"12,40"`` as node numbers; anything else is a one-line error."""
    try:
        numbers = [int(word) for word in text.split(",")]
    except ValueError:
        parser.error(f"--output-nodes: {text!r}; expected node numbers separated by commas, e.g. 12,40")
    return numbers


def output_names(args: argparse.Namespace, model) -> list[tuple[str, str]]:
    """(label, table suffix) per response column: the nodes asked for, the model file's DOFs, or the load."""
    if args.output_nodes:
        return [(f"node {number}", f"_{number}") for number in args.output_nodes]
    if args.model:
        return [(f"DOF {model.dof_name(dof)}", f"_{model.dof_name(dof)}") for dof in model.outputs]
    return [("the load", "")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    mesh = parser.add_argument_group("model")
    mesh.add_argument("--nx", type=int, default=60, help="cells along x of the structured mesh (default 60)")
    mesh.add_argument("--ny", type=int, default=60, help="cells along y (default 60; 60 x 60 has 7320 unknowns)")
    mesh.add_argument("--mesh", metavar="BASE", help="read Triangle's BASE.node and BASE.ele instead "
                      "(or a shipped mesh: plate)")
    mesh.add_argument("--model", metavar="FILE", help="K, C, M, b (optional P_omega, P, outputs) from a .mat or .npz")
    mesh.add_argument("--youngs", type=float, default=210e9, help="Young's modulus of the bars (default 210e9)")
    mesh.add_argument("--density", type=float, default=7850.0, help="density of the bars (default 7850)")
    mesh.add_argument("--area", type=float, default=1e-4, help="cross-section of the bars (default 1e-4)")
    mesh.add_argument("--damping", type=float, default=0.004, help="C = DAMPING * K (default 0.004)")
    mesh.add_argument("--support", metavar="AXIS=VALUE", help="support the nodes whose x or y is VALUE "
                      "(within --support-tolerance), e.g. y=2 (default: the nodes with the smallest x)")
    mesh.add_argument("--support-tolerance", type=float, default=1e-9, help="for --support (default 1e-9)")
    mesh.add_argument("--output-nodes", metavar="N[,N...]",
                      help="read the response (in the load's direction) at these nodes, numbered as in the "
                      "mesh file, e.g. 12,40 (default: the loaded node)")
    mesh.add_argument("--random-load", type=int, metavar="SEED",
                      help="b drawn from a standard normal (seeded) over every free DOF instead of the unit load")
    parser.add_argument("--frequencies", type=int, default=200, help="how many frequencies (default 200)")
    parser.add_argument("--omega-min", type=float, help="lowest ω in rad/s (default 0.1 ω₁)")
    parser.add_argument("--omega-max", type=float, help="highest ω in rad/s (default 4 ω₁; ω₁ is estimated)")
    parser.add_argument("--solver", choices=SOLVERS, default="auto", help="sparse solver (default auto)")
    parser.add_argument("--png", default="truss.png", help="where to save |x| against frequency (default truss.png)")
    parser.add_argument("--csv", help="also write omega, the response and the residual per frequency")
    add_cluster_options(parser)
    args = parser.parse_args(argv)
    if args.frequencies < 1:
        parser.error("--frequencies must be at least 1")

    if args.mesh and args.model:
        parser.error("--mesh and --model exclude each other: a model file already holds its matrices")
    if args.model and args.output_nodes:
        parser.error("--output-nodes is for meshes: a model file names its output DOFs (outputs)")
    if args.output_nodes:
        args.output_nodes = node_numbers(args.output_nodes, parser)
    amplitude = None
    try:
        if args.model:
            model, amplitude = load_model(args.model)
            name, described = args.model, f"{model.size} unknowns, {model.K.nnz} nonzeros in K"
        else:
            source = read_triangle(find_mesh(args.mesh)) if args.mesh else structured_mesh(args.nx, args.ny)
            if args.support:
                source = supported_at(source, args.support, args.support_tolerance, parser)
            if args.output_nodes:
                source = with_output_nodes(source, args.output_nodes)
            model = assemble(source, youngs=args.youngs, area=args.area, density=args.density, damping=args.damping)
            name = f"{args.mesh} (Triangle)" if args.mesh else f"{args.nx} x {args.ny} cells"
            described = (f"{len(source.nodes)} nodes, {len(source.bars)} bars, {model.size} unknowns, "
                         f"{model.K.nnz} nonzeros in K")
    except (MeshError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if args.random_load is not None:
        model.b = np.random.default_rng(args.random_load).standard_normal(model.size)
    omega_1 = first_frequency_estimate(model)
    default_low, default_high = (0.1 * omega_1, 4.0 * omega_1) if amplitude is None else (
        float(amplitude.omegas[0]), float(amplitude.omegas[-1]))
    low = args.omega_min if args.omega_min is not None else default_low
    high = args.omega_max if args.omega_max is not None else default_high
    omegas = np.linspace(low, high, args.frequencies)
    print(f"truss {name}: {described}; ω₁ ≈ {omega_1:.4g} rad/s")
    print(f"{args.frequencies} frequencies from {low:.4g} to {high:.4g} rad/s")

    with open_cluster(args.scheduler_file, args.workers, args.timeout, job_name="hpcbridge-truss") as bridge:
        workers = bridge.n_workers
        started = time.perf_counter()
        result = frequency_response(bridge, model, omegas, solver=args.solver, amplitude=amplitude)
        seconds = time.perf_counter() - started
    names = output_names(args, model)[:MAX_OUTPUTS]
    labels = [label for label, _ in names]
    response = result.outputs[:, :MAX_OUTPUTS]
    if result.outputs.shape[1] > MAX_OUTPUTS:
        print(f"outputs: the first {MAX_OUTPUTS} of {result.outputs.shape[1]} are shown and saved")
    print(f"solver: {result.solver}")
    print(f"largest residual: {result.residuals.max():.2e}")
    for column, label in enumerate(labels):
        peak = int(np.argmax(np.abs(response[:, column])))
        print(f"peak{'' if len(labels) == 1 else f' at {label}'}: |x| = {abs(response[peak, column]):.4g} m/N "
              f"at ω = {omegas[peak]:.4g} rad/s")
    print(f"workers: {workers}")
    print(f"time: {seconds:.2f} s ({seconds / len(omegas) * workers:.4f} s per frequency per worker)")
    save_plot(omegas, response, labels, args.png,
              f"truss {name}, {model.size} unknowns, solver {result.solver}")
    print(f"plot: {args.png}")
    if args.csv:
        # One output: omega,re_x,im_x,abs_x,residual; several: re_x_N,im_x_N,abs_x_N for each node N.
        suffixes = [""] if len(names) == 1 else [suffix for _, suffix in names]
        columns = [omegas]
        for column in range(response.shape[1]):
            columns += [response[:, column].real, response[:, column].imag, np.abs(response[:, column])]
        header = ",".join(["omega", *(f"{part}{suffix}" for suffix in suffixes for part in ("re_x", "im_x", "abs_x")),
                           "residual"])
        np.savetxt(args.csv, np.column_stack([*columns, result.residuals]), delimiter=",", header=header,
                   comments="", fmt="%.10g")
        print(f"table: {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
