"""Seconds per frequency of each sparse solver against spsolve, on the same matrices, with residuals.

    python benchmarks/truss.py --nx 273 --ny 273 --frequencies 5      # 149604 unknowns
    python benchmarks/truss.py --plate-spacing 0.0138 --frequencies 2 --sweep 40 --cluster-factor 0
                                                  # unstructured plate, ~40k unknowns: reuse vs spsolve

All solvers run in this process on one thread, on the same (K + iωC − ω²M, b) at the same ω,
interleaved frequency by frequency, timed in CPU seconds of this process (the medians): on a
shared machine wall time measures the neighbours as much as the solver. PARDISO's one-off analysis is reported on its own line and
not counted per frequency (it is done once per worker and model). Then ``--sweep`` neighbouring
frequencies over the same range run with one factorisation reused as GMRES's preconditioner
(``reuse``, refactorising when iterations grow), against spsolve's median. Then the same frequencies
(times --cluster-factor) run on the cluster with the automatic choice. Prints ``name: value``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

# One thread for every solver, as on a worker (Dask's nanny sets these there): left alone, NumPy's
# OpenBLAS runs a thread per core, and its threads' spinning counted in this process's CPU
# seconds: spsolve measured 1.07 CPU-s per frequency on the 40k plate with them, 0.57 without.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402 - after the thread settings, which BLAS reads when it loads

from hpcbridge.workloads import add_cluster_options, open_cluster
from hpcbridge.workloads.truss import (Pattern, PardisoSolver, SpsolveSolver, SuperLUSolver, assemble,
                                       first_frequency_estimate, frequency_response, pardiso_available,
                                       ReusedFactorSolver, find_mesh, plate_with_hole, read_triangle, relative_residual,
                                       structured_mesh, write_triangle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nx", type=int, default=60, help="cells along x (default 60: 7320 unknowns)")
    parser.add_argument("--ny", type=int, default=60, help="cells along y (default 60)")
    parser.add_argument("--mesh", metavar="BASE", help="Triangle's BASE.node/BASE.ele (or a shipped mesh: plate) "
                        "instead of the structured mesh")
    parser.add_argument("--plate-spacing", type=float, metavar="H",
                        help="generate the unstructured plate with a hole at node spacing H instead "
                             "(0.05: 3234 unknowns, 0.0138: about 40k)")
    parser.add_argument("--sweep", type=int, default=20,
                        help="neighbouring frequencies solved with the reused factorisation (default 20; 0 skips)")
    parser.add_argument("--frequencies", type=int, default=6, help="frequencies timed per solver (default 6)")
    parser.add_argument("--cluster-factor", type=int, default=4,
                        help="the cluster run solves this many times as many frequencies (default 4; 0 skips it)")
    add_cluster_options(parser)
    args = parser.parse_args(argv)

    if args.plate_spacing:
        folder = tempfile.mkdtemp(prefix="hpcbridge-plate-")
        write_triangle(*plate_with_hole(spacing=args.plate_spacing), os.path.join(folder, "plate"))
        mesh = read_triangle(os.path.join(folder, "plate"))
    else:
        mesh = read_triangle(find_mesh(args.mesh)) if args.mesh else structured_mesh(args.nx, args.ny)
    model = assemble(mesh)
    omega_1 = first_frequency_estimate(model)
    omegas = np.linspace(0.2 * omega_1, 3.0 * omega_1, args.frequencies)
    pattern = Pattern(model)
    rhs = model.b.astype(complex)

    solvers = {"spsolve": SpsolveSolver(pattern), "superlu": SuperLUSolver(pattern)}
    analysis_seconds = None
    if pardiso_available():
        started = time.process_time()
        solvers["pardiso"] = PardisoSolver(pattern, threads=1)
        analysis_seconds = time.process_time() - started
    seconds = {name: [] for name in solvers}
    residuals = {name: [] for name in solvers}
    differences = {name: [] for name in solvers}
    for omega in omegas:
        reference = None
        for name, solver in solvers.items():
            started = time.process_time()
            x = solver.solve(float(omega), rhs)
            seconds[name].append(time.process_time() - started)
            residuals[name].append(relative_residual(pattern, float(omega), x, rhs))
            reference = x if reference is None else reference
            differences[name].append(float(np.linalg.norm(x - reference) / np.linalg.norm(reference)))

    lines: dict[str, object] = {"unknowns": model.size, "nonzeros": model.K.nnz, "frequencies": len(omegas)}
    base = float(np.median(seconds["spsolve"]))
    for name in solvers:
        per = float(np.median(seconds[name]))
        lines[f"{name}_cpu_seconds_per_frequency"] = f"{per:.4f}"
        lines[f"{name}_residual_max"] = f"{max(residuals[name]):.2e}"
        if name != "spsolve":
            lines[f"{name}_difference_vs_spsolve"] = f"{max(differences[name]):.2e}"
            lines[f"{name}_ratio_vs_spsolve"] = f"{base / per:.2f}"
    if analysis_seconds is not None:
        lines["pardiso_analysis_cpu_seconds"] = f"{analysis_seconds:.4f}"
    per_solver = {name: float(np.median(seconds[name])) for name in solvers if name != "spsolve"}
    for solver in solvers.values():
        getattr(solver, "close", lambda: None)()

    if args.sweep > 0:
        reuse = ReusedFactorSolver(pattern)
        sweep = np.linspace(omegas[0], omegas[-1], args.sweep)
        started = time.process_time()
        solutions = [reuse.solve(float(omega), rhs) for omega in sweep]
        per = (time.process_time() - started) / len(sweep)
        worst_reuse = max(relative_residual(pattern, float(w), x, rhs) for w, x in zip(sweep, solutions))
        residuals["reuse"] = [worst_reuse]
        lines["reuse_frequencies"] = len(sweep)
        lines["reuse_cpu_seconds_per_frequency"] = f"{per:.4f}"
        lines["reuse_factorisations"] = reuse.factorisations
        lines["reuse_iterations_max"] = max(reuse.iterations)
        lines["reuse_residual_max"] = f"{worst_reuse:.2e}"
        lines["reuse_ratio_vs_spsolve"] = f"{base / per:.2f}"
        per_solver["reuse"] = per
        reuse.close()
    best = min(per_solver, key=per_solver.get)  # hpcbridge's fastest way to these solutions
    lines["best_solver"] = best
    lines["best_cpu_seconds_per_frequency"] = f"{per_solver[best]:.4f}"
    lines["ratio_vs_spsolve"] = f"{base / per_solver[best]:.2f}"
    lines["load_average"] = " ".join(f"{value:.1f}" for value in os.getloadavg())

    if args.cluster_factor > 0:
        many = np.linspace(omegas[0], omegas[-1], args.frequencies * args.cluster_factor)
        with open_cluster(args.scheduler_file, args.workers, args.timeout, say=lambda line: None,
                          job_name="hpcbridge-bench-truss") as bridge:
            workers = bridge.n_workers
            started = time.perf_counter()
            result = frequency_response(bridge, model, many, progress=False)
            elapsed = time.perf_counter() - started
        lines["cluster_solver"] = result.solver
        lines["cluster_workers"] = workers
        lines["cluster_wall_seconds_per_frequency"] = f"{elapsed / len(many):.4f}"
        lines["cluster_residual_max"] = f"{result.residuals.max():.2e}"
        lines["cluster_speedup_vs_spsolve_cpu"] = f"{base * len(many) / elapsed:.3g}"

    for name, value in lines.items():
        print(f"{name}: {value}")
    worst = max(max(r) for r in residuals.values())
    return 0 if worst < 1e-8 else 1


if __name__ == "__main__":
    sys.exit(main())
