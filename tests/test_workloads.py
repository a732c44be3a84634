"""The worker-side kernels of the examples, in this process: exact answers and identical pixels."""

from __future__ import annotations

import math
import platform
import subprocess
import sys

import numpy as np
import pytest

from hpcbridge.workloads import mandelbrot, montecarlo, primes, truss

EXACT = {10**4: 10218029, 10**6: 64986402077, 10**7: 5495501355056}


# --- primes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("upper", sorted(EXACT))
def test_sieve_gives_the_exact_sums(upper: int) -> None:
    assert primes.prime_contribution((2, upper), upper) == EXACT[upper]


def test_sieve_segments_add_up_to_the_whole() -> None:
    upper = 10**6
    pieces = primes.split_range(2, upper, 7)
    assert pieces[0][0] == 2 and pieces[-1][1] == upper
    assert sum(primes.prime_contribution(piece, upper) for piece in pieces) == EXACT[upper]


def test_sympy_sum_matches_the_sieve_and_the_strided_split() -> None:
    assert primes.sum_prime_factors((2, 10**4)) == EXACT[10**4]
    assert sum(primes.sum_prime_factors_strided(2 + i, 10**4, 3) for i in range(3)) == EXACT[10**4]
    assert [primes.distinct_prime_factor_sum(n) for n in (2, 12, 30, 97, 1024)] == [2, 5, 10, 97, 2]


def test_static_split_partial_sums_are_the_imbalanced_ones() -> None:
    per_number = primes.distinct_prime_factor_sums(10**7)
    assert [int(per_number[2 + i::3].sum()) for i in range(3)] == [2418248946959, 659400211060, 2417852197037]


def test_sieve_refuses_bounds_where_int64_could_overflow() -> None:
    with pytest.raises(ValueError):
        primes.prime_contribution((2, 100), primes.FAST_MAX_UPPER + 1)


# --- Mandelbrot -----------------------------------------------------------------------------

@pytest.mark.parametrize("view", [
    mandelbrot.View(1001, 37),                                                    # width not a multiple of 32
    mandelbrot.View(130, 90, -2.0, 0.5, -1.25, 1.25, maxiter=60),                 # the whole set: lanes that never escape
    mandelbrot.View(1, 5),
])
def test_lockstep_kernel_is_pixel_identical_to_the_plain_loop(view: mandelbrot.View) -> None:
    fast = mandelbrot.rows((0, view.height), view)
    plain = mandelbrot.reference_rows((0, view.height), view)
    assert fast.dtype == np.uint8 and fast.shape == (view.height, view.width)
    np.testing.assert_array_equal(fast, plain)


def test_the_issue_region_has_the_measured_statistics() -> None:
    image = mandelbrot.rows((0, 200), mandelbrot.View(200, 200))
    assert 90 < image.mean() < 100 and 0.05 < (image == 255).mean() < 0.09
    assert image[0, 0] == mandelbrot.reference_rows((0, 1), mandelbrot.View(200, 200))[0, 0]


def test_row_blocks_cover_every_row_once_and_within_the_byte_budget() -> None:
    view = mandelbrot.View(35000, 35000)
    blocks = mandelbrot.row_blocks(view, workers=2)
    assert blocks[0][0] == 0 and blocks[-1][1] == view.height
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    sizes = [(high - low) * view.width for low, high in blocks]
    assert max(sizes) <= mandelbrot.BLOCK_BYTES
    assert sizes[:-1] == sorted(sizes[:-1], reverse=True)  # large first, shrinking towards the end
    assert sizes[-2] <= mandelbrot.SMALLEST_BLOCK_BYTES < sizes[0] / 16 and len(blocks) < 100
    small = mandelbrot.row_blocks(mandelbrot.View(400, 400), workers=2)
    assert len(small) >= 4 and small[-1][1] == 400  # a small image is still shared out


def test_view_rejects_what_does_not_fit_uint8() -> None:
    with pytest.raises(ValueError):
        mandelbrot.View(10, 10, maxiter=256)


# --- truss ----------------------------------------------------------------------------------

def test_structured_mesh_sizes() -> None:
    mesh = truss.structured_mesh(60, 60)
    assert mesh.free_dofs == 7320
    assert len(mesh.bars) == 60 * 61 * 2 + 2 * 60 * 60
    model = truss.assemble(mesh)
    assert model.size == 7320
    assert abs(model.K - model.K.T).max() <= 1e-9 * abs(model.K).max()


def test_mass_is_the_whole_truss_mass_and_stiffness_is_rigid_body_free() -> None:
    mesh = truss.structured_mesh(3, 2, spacing=2.0)
    lengths = np.hypot(*(mesh.nodes[mesh.bars[:, 1]] - mesh.nodes[mesh.bars[:, 0]]).T)
    unsupported = truss.Mesh(mesh.nodes, mesh.bars, fixed=np.array([], int), load_node=mesh.load_node)
    whole = truss.assemble(unsupported, youngs=1.0, area=1.0, density=1.0)
    assert np.isclose(whole.M.diagonal().sum() / 2, lengths.sum())  # each node's mass on both directions
    for motion in (np.tile([1.0, 0.0], len(mesh.nodes)), np.tile([0.0, 1.0], len(mesh.nodes)),
                   np.column_stack([-mesh.nodes[:, 1], mesh.nodes[:, 0]]).ravel()):  # translations, rotation
        assert np.abs(whole.K @ motion).max() < 1e-12


@pytest.mark.parametrize("first", [0, 1])
def test_triangle_files_round_trip(tmp_path, first: int) -> None:
    nodes, triangles = truss.structured_triangles(4, 3, spacing=0.5)
    truss.write_triangle(nodes, triangles, tmp_path / "plate", first=first)
    text = (tmp_path / "plate.node").read_text()
    (tmp_path / "plate.node").write_text("# a comment line\n" + text.replace("\n", "  # trailing\n", 2))
    mesh = truss.read_triangle(tmp_path / "plate.ele")
    np.testing.assert_allclose(mesh.nodes, nodes)
    assert len(mesh.bars) == 4 * 4 + 3 * 5 + 4 * 3  # along x, along y, one diagonal per cell
    assert sorted(mesh.fixed) == [0, 1, 2, 3]
    np.testing.assert_allclose(mesh.nodes[mesh.load_node], [2.0, 1.5])


def test_triangle_reader_reads_attributes_and_markers(tmp_path) -> None:
    (tmp_path / "t.node").write_text("4 2 1 1\n1 0 0 9.5 1\n2 1 0 9.5 1\n3 1 1 9.5 0\n4 0 1 9.5 1\n")
    (tmp_path / "t.ele").write_text("2 3 0\n1 1 2 3\n2 1 3 4\n")
    mesh = truss.read_triangle(tmp_path / "t")
    assert len(mesh.bars) == 5 and sorted(mesh.fixed) == [0, 3] and mesh.load_node == 2


def test_triangle_reader_says_what_is_wrong(tmp_path) -> None:
    (tmp_path / "t.node").write_text("3 2 0 0\n1 0 0\n2 1 0\n3 1 1\n")
    (tmp_path / "t.ele").write_text("1 3 0\n1 1 2 4\n")
    with pytest.raises(ValueError, match="node numbers"):
        truss.read_triangle(tmp_path / "t")


def test_every_solver_solves_the_same_system_to_a_small_residual() -> None:
    model = truss.assemble(truss.structured_mesh(12, 8))
    omega_1 = truss.first_frequency_estimate(model)
    pattern = truss.Pattern(model)
    names = ["spsolve", "superlu"] + (["pardiso"] if truss.pardiso_available() else [])
    for omega in (0.3 * omega_1, omega_1, 2.7 * omega_1):
        solutions = {}
        for name in names:
            x = truss.solver_for(model, name).solve(omega, model.b)
            assert truss.relative_residual(pattern, omega, x, model.b) < 1e-10, name
            solutions[name] = x
        for name in names:
            assert np.linalg.norm(solutions[name] - solutions["spsolve"]) < 1e-8 * np.linalg.norm(solutions["spsolve"])


def test_pattern_values_are_the_matrix_built_directly() -> None:
    model = truss.assemble(truss.structured_mesh(5, 4))
    omega = 37.0
    direct = (model.K + 1j * omega * model.C - omega**2 * model.M).toarray()
    np.testing.assert_allclose(truss.Pattern(model).matrix(omega).toarray(), direct, rtol=1e-14, atol=0)


def test_first_frequency_estimate_is_the_lowest_eigenvalue() -> None:
    from scipy.linalg import eigh

    model = truss.assemble(truss.structured_mesh(6, 3))
    lowest = math.sqrt(eigh(model.K.toarray(), model.M.toarray(), eigvals_only=True)[0])
    assert lowest <= truss.first_frequency_estimate(model) <= 1.01 * lowest


def test_auto_falls_back_to_superlu_when_mkl_is_missing() -> None:
    code = ("from hpcbridge.workloads import truss\n"
            "print(truss.resolve_solver('auto'))\n"
            "try:\n    truss.resolve_solver('pardiso')\nexcept RuntimeError as e:\n    print('refused')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"HPCBRIDGE_MKL_RT": "/nonexistent/libmkl_rt.so", "PATH": "/usr/bin:/bin"})
    assert done.stdout.split() == ["superlu", "refused"], done.stderr


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the examples extra installs MKL on x86-64 only")
def test_auto_takes_pardiso_where_the_examples_extra_installs_mkl() -> None:
    assert truss.pardiso_available(), "libmkl_rt does not load: pip install -e '.[examples]' installs the mkl wheel"
    assert truss.resolve_solver("auto") == "pardiso"


# --- Monte Carlo ----------------------------------------------------------------------------

def test_sample_sizes_are_1200_distinct_log_spaced_integers() -> None:
    sizes = montecarlo.sample_sizes()
    assert len(sizes) == 1200 and sizes[0] == 10**3 and sizes[-1] == 10**7
    assert np.all(np.diff(sizes) > 0)
    ratios = sizes[1:] / sizes[:-1]
    assert np.allclose(ratios, 10 ** (4 / 1199), rtol=0.01)


def test_estimates_are_reproducible_and_within_the_standard_error() -> None:
    sizes = montecarlo.sample_sizes(40, 10**3, 10**5)
    table = montecarlo.run_table_serial(sizes, seed=11)
    again = montecarlo.run_table_serial(sizes, seed=11)
    np.testing.assert_array_equal(table.estimate, again.estimate)
    assert table.rows().shape == (40, 4)
    assert np.all(table.error <= 5 * table.expected_error)
    assert -0.8 < table.slope() < -0.2


# --- entry points for callers that pass plain values (MATLAB rows and structs) ----------------

def test_plain_value_entry_points_match_the_python_ones() -> None:
    rows_of = np.array([[2, 10**4, 3], [3, 10**4, 3], [4, 10**4, 3]], dtype=np.int64)
    assert sum(primes.strided_job(row) for row in rows_of) == EXACT[10**4]
    assert primes.segment_contribution(np.array([2.0, 1e4, 1e4])) == EXACT[10**4]
    assert primes.distinct_prime_factor_sum(np.int64(30)) == 10

    view = {"width": 97.0, "height": 40.0, "re_min": -0.744, "re_max": -0.7433, "im_min": 0.1315,
            "im_max": 0.1322, "maxiter": 255.0}
    np.testing.assert_array_equal(mandelbrot.block(np.array([3.0, 17.0]), view),
                                  mandelbrot.rows((3, 17), mandelbrot.View(97, 40)))

    assert montecarlo.estimate_pi(np.array([4, 5000, 9], dtype=np.int64)) == montecarlo.estimate_pi((4, 5000, 9))


def test_triplet_model_gives_the_response_of_the_assembled_one() -> None:
    model = truss.assemble(truss.structured_mesh(6, 4))
    data = {"n": float(model.size), "b": model.b, "outputs": model.outputs + 1.0}
    for name in "KCM":
        coo = getattr(model, name).tocoo()
        data.update({f"{name}_i": coo.row + 1.0, f"{name}_j": coo.col + 1.0, f"{name}_v": coo.data})
    omega = 0.8 * truss.first_frequency_estimate(model)
    result = truss.response_from_triplets(omega, data)
    expected = truss.solver_for(model, "spsolve").solve(omega, model.b)[model.outputs]
    np.testing.assert_allclose(result[:-1], expected, rtol=1e-9)
    assert abs(result[-1]) < 1e-10


def test_workload_modules_import_without_numba_scipy_or_matplotlib() -> None:
    code = ("import sys\n"
            "for name in ('numba', 'scipy', 'matplotlib'):\n    sys.modules[name] = None\n"
            "import hpcbridge.workloads.primes, hpcbridge.workloads.mandelbrot, hpcbridge.workloads.truss\n"
            "import hpcbridge.workloads.montecarlo as m\n"
            "print(len(m.sample_sizes()), hpcbridge.workloads.truss.structured_mesh(2, 2).free_dofs)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["1200", "12"], done.stderr


def test_pardiso_refines_only_a_solution_whose_residual_needs_it() -> None:
    """PARDISO's two refinement steps doubled a preconditioner's solve (GMRES corrects it anyway)
    and cost 12-15 % of a direct solve that was within 1e-10 without them: they run only for a
    direct solution whose residual is above ``refine_above``."""
    model = truss.assemble(truss.structured_mesh(20, 10))
    pattern = truss.Pattern(model)
    omega = 0.5 * truss.first_frequency_estimate(model)
    rhs = model.b.astype(complex)
    solver = truss.PardisoSolver(pattern)
    direct = solver.solve(omega, rhs)
    assert solver.refinement_steps == 0
    assert truss.relative_residual(pattern, omega, direct, rhs) <= solver.refine_above
    solver.factorise(omega)
    preconditioned = solver.apply(rhs)
    assert solver.refinement_steps == 0
    assert truss.relative_residual(pattern, omega, preconditioned, rhs) <= 1e-8  # the factors are A(ω)'s own
    solver.refine_above = 0.0  # no residual is small enough: every solution is refined
    refined = solver.solve(omega, rhs)
    assert solver.refinement_steps >= 1
    assert truss.relative_residual(pattern, omega, refined, rhs) <= 1e-10
    solver.close()


def test_a_reused_factorisation_solves_neighbouring_frequencies_to_1e_10_and_refactorises_when_needed() -> None:
    model = truss.assemble(truss.structured_mesh(20, 10))
    pattern = truss.Pattern(model)
    omega_1 = truss.first_frequency_estimate(model)
    rhs = model.b.astype(complex)
    reuse = truss.ReusedFactorSolver(pattern)
    direct = truss.SpsolveSolver(pattern)
    near = np.linspace(0.2 * omega_1, 0.6 * omega_1, 25)
    for omega in near:
        x = reuse.solve(float(omega), rhs)
        assert truss.relative_residual(pattern, float(omega), x, rhs) <= 1e-10
        y = direct.solve(float(omega), rhs)
        assert np.linalg.norm(x - y) / np.linalg.norm(y) < 1e-8
    assert reuse.factorisations < 5 and max(reuse.iterations) <= reuse.max_iterations
    reuse.close()
    strict = truss.ReusedFactorSolver(pattern, max_iterations=1)  # any real iteration count is "too many"
    strict.solve(float(near[0]), rhs)
    x = strict.solve(float(near[-1]), rhs)
    assert truss.relative_residual(pattern, float(near[-1]), x, rhs) <= 1e-10
    assert strict.factorisations == 2 and strict.base == float(near[-1])
    strict.close()
