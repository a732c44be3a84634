"""The example scripts, run as users run them, on a real local cluster (attached through its file)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hpcbridge.workloads import mandelbrot, montecarlo, truss
from tests.conftest import job_processes, module_local_job, wait_for

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["primes", "mandelbrot", "truss", "montecarlo"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 2-worker local cluster for the module; its scheduler file."""
    with module_local_job(tmp_path_factory, 2) as job:
        yield job.scheduler_file


def run(script: str, *args: str, cwd: Path | None = None) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "examples" / f"{script}.py"), *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def value(output: str, name: str) -> str:
    match = re.search(rf"^{re.escape(name)}: (.+)$", output, re.MULTILINE)
    assert match, f"no '{name}:' line in\n{output}"
    return match.group(1)


@pytest.mark.parametrize("script", EXAMPLES)
def test_every_example_has_help(script: str) -> None:
    text = run(script, "--help")
    assert "--scheduler-file" in text and "--workers" in text


def test_prime_example_on_its_own_local_cluster_leaves_nothing_running(hpcbridge_home: Path) -> None:
    output = run("primes", "--upper", "10000")
    assert value(output, "sum") == "10218029"
    assert value(output, "workers") == "2"
    job_id = re.search(r"local job (local-[0-9a-f]+)", output).group(1)
    assert wait_for(lambda: not job_processes(job_id), timeout=30)
    assert not list(hpcbridge_home.rglob(f"*{job_id}*"))  # no record, log or folder of a run that ended well


@pytest.mark.parametrize(("method", "upper", "expected"), [("sympy", "100000", "795296861"),
                                                            ("fast", "10000000", "5495501355056")])
def test_prime_example_methods_on_a_running_cluster(cluster: str, method: str, upper: str, expected: str) -> None:
    output = run("primes", "--upper", upper, "--method", method, "--scheduler-file", cluster)
    assert value(output, "sum") == expected
    assert float(value(output, "time").split()[0]) > 0


def test_mandelbrot_example_assembles_the_reference_image(cluster: str, tmp_path: Path) -> None:
    output = run("mandelbrot", "--width", "333", "--height", "301", "--png", str(tmp_path / "m.png"),
                 "--save", str(tmp_path / "m.npy"), "--scheduler-file", cluster)
    view = mandelbrot.View(333, 301)
    image = np.load(tmp_path / "m.npy")
    assert image.flags.c_contiguous and image.dtype == np.uint8
    np.testing.assert_array_equal(image, mandelbrot.reference_rows((0, 301), view))
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "image: 301 x 333 uint8, contiguous True" in output


def test_mandelbrot_example_has_the_workers_write_the_image_into_one_owner_only_file(cluster: str,
                                                                                   tmp_path: Path) -> None:
    target = tmp_path / "shared" / "m.npy"
    target.parent.mkdir()
    output = run("mandelbrot", "--width", "257", "--height", "190", "--into", str(target), "--png",
                 str(tmp_path / "m.png"), "--scheduler-file", cluster)
    assert f"array: {target} (written by the workers)" in output
    assert target.stat().st_mode & 0o777 == 0o600
    np.testing.assert_array_equal(np.load(target), mandelbrot.reference_rows((0, 190), mandelbrot.View(257, 190)))


def test_truss_example_solves_every_frequency_to_a_small_residual(cluster: str, tmp_path: Path) -> None:
    output = run("truss", "--nx", "12", "--ny", "6", "--frequencies", "24", "--csv", str(tmp_path / "t.csv"),
                 "--png", str(tmp_path / "t.png"), "--scheduler-file", cluster)
    table = np.loadtxt(tmp_path / "t.csv", delimiter=",", skiprows=1)
    assert table.shape == (24, 5)
    assert table[:, 4].max() < 1e-10
    assert value(output, "solver") == truss.resolve_solver("auto")
    model = truss.assemble(truss.structured_mesh(12, 6))
    omega = table[5, 0]
    x = truss.solver_for(model, "spsolve").solve(omega, model.b)
    np.testing.assert_allclose(table[5, 1] + 1j * table[5, 2], x[model.outputs[0]], rtol=1e-8)
    assert (tmp_path / "t.png").stat().st_size > 1000


def test_truss_example_reads_a_triangle_mesh(cluster: str, tmp_path: Path) -> None:
    nodes, triangles = truss.structured_triangles(10, 4, spacing=0.25)
    truss.write_triangle(nodes, triangles, tmp_path / "plate")
    output = run("truss", "--mesh", str(tmp_path / "plate"), "--frequencies", "6", "--solver", "superlu",
                 "--png", str(tmp_path / "t.png"), "--scheduler-file", cluster)
    assert "55 nodes, 134 bars, 100 unknowns" in output
    assert value(output, "solver") == "superlu"
    assert float(value(output, "largest residual")) < 1e-10


def test_truss_example_runs_the_shipped_plate_mesh_from_any_folder(cluster: str, tmp_path: Path) -> None:
    output = run("truss", "--mesh", "plate", "--frequencies", "4", "--png", str(tmp_path / "t.png"),
                 "--scheduler-file", cluster, cwd=tmp_path)
    assert "plate (Triangle): 1638 nodes" in output and "3234 unknowns" in output
    assert float(value(output, "largest residual")) < 1e-10


def test_truss_example_with_a_reused_factorisation_matches_spsolve(cluster: str, tmp_path: Path) -> None:
    output = run("truss", "--mesh", "plate", "--frequencies", "16", "--solver", "reuse", "--csv", str(tmp_path / "t.csv"),
                 "--png", str(tmp_path / "t.png"), "--scheduler-file", cluster)
    assert value(output, "solver") == "reuse"
    rows = np.loadtxt(tmp_path / "t.csv", delimiter=",", skiprows=1)
    assert rows[:, 4].max() <= 1e-10
    model = truss.assemble(truss.read_triangle(truss.find_mesh("plate")))
    omega = rows[5, 0]
    x = truss.solver_for(model, "spsolve").solve(omega, model.b)
    np.testing.assert_allclose(rows[5, 1] + 1j * rows[5, 2], x[model.outputs[0]], rtol=1e-8)


def test_truss_example_takes_supports_material_and_a_random_load_for_a_triangle_mesh(cluster: str,
                                                                                       tmp_path: Path) -> None:
    output = run("truss", "--mesh", "plate", "--support", "y=0", "--support-tolerance", "1e-6", "--youngs", "1e7",
                 "--density", "0.1", "--random-load", "5", "--frequencies", "4", "--png", str(tmp_path / "t.png"),
                 "--scheduler-file", cluster)
    mesh = truss.read_triangle(truss.find_mesh("plate"))
    bottom = int(np.sum(np.abs(mesh.nodes[:, 1]) <= 1e-6))
    assert f"{2 * (len(mesh.nodes) - bottom)} unknowns" in output  # supported along the bottom edge
    assert float(value(output, "largest residual")) < 1e-10
    refused = subprocess.run([sys.executable, str(ROOT / "examples" / "truss.py"), "--mesh", "plate",
                              "--support", "y=7"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--support y=7: no node within 1e-09 of y=7" in refused.stderr


def test_truss_example_reads_the_response_at_the_output_nodes_the_user_names(cluster: str, tmp_path: Path) -> None:
    nodes, triangles = truss.structured_triangles(10, 4, spacing=0.25)
    truss.write_triangle(nodes, triangles, tmp_path / "plate", first=1)  # numbered from 1, as Triangle may
    output = run("truss", "--mesh", str(tmp_path / "plate"), "--output-nodes", "20,55", "--frequencies", "5",
                 "--csv", str(tmp_path / "t.csv"), "--png", str(tmp_path / "t.png"), "--scheduler-file", cluster)
    assert "peak at node 20: |x| =" in output and "peak at node 55: |x| =" in output
    header = (tmp_path / "t.csv").read_text().splitlines()[0]
    assert header == "omega,re_x_20,im_x_20,abs_x_20,re_x_55,im_x_55,abs_x_55,residual"
    rows = np.loadtxt(tmp_path / "t.csv", delimiter=",", skiprows=1)
    mesh = truss.read_triangle(tmp_path / "plate")
    model = truss.assemble(mesh)
    x = truss.solver_for(model, "spsolve").solve(rows[2, 0], model.b)
    free = np.setdiff1d(np.arange(len(mesh.nodes)), mesh.fixed)  # node k's y displacement, among the free DOFs
    for node, column in ((20, 1), (55, 4)):
        dof = 2 * int(np.searchsorted(free, node - 1)) + 1
        np.testing.assert_allclose(rows[2, column] + 1j * rows[2, column + 1], x[dof], rtol=1e-8)
    for bad, said in (("56", "output node 56: the mesh's nodes are numbered 1..55"),
                      ("1", "output node 1 is supported"), ("2,x", "--output-nodes: '2,x'; expected node numbers")):
        refused = subprocess.run([sys.executable, str(ROOT / "examples" / "truss.py"), "--mesh", str(tmp_path / "plate"),
                                  "--output-nodes", bad], capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and said in refused.stderr and "Traceback" not in refused.stderr


def test_truss_example_says_in_one_line_which_mesh_file_is_missing(tmp_path: Path) -> None:
    (tmp_path / "satellite.node").write_text("3 2 0 0\n1 0 0\n2 1 0\n3 0 1\n")
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "truss.py"), "--mesh", str(tmp_path / "satellite")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"truss.py: error: no Triangle file {tmp_path / 'satellite.ele'}: a mesh is BASE.node and BASE.ele "
        "(the meshes shipped with hpcbridge: plate)"]


@pytest.mark.parametrize("kind", ["mat", "npz"])
def test_truss_example_takes_the_users_own_matrices_and_load_table(cluster: str, tmp_path: Path, kind: str) -> None:
    import scipy.io

    model = truss.assemble(truss.structured_mesh(8, 4), youngs=1e7, density=0.1)
    rng = np.random.default_rng(3)
    b = rng.standard_normal(model.size)  # Danial's random b, scaled by a tabulated P(ω)
    omega_1 = truss.first_frequency_estimate(model)
    table = np.linspace(0.2 * omega_1, 2.0 * omega_1, 5)
    amplitude = np.array([1.0, 2.0, 1.5 + 1.0j, 0.5, 1.0])
    outputs = np.array([3, 10, 17])
    path = tmp_path / f"model.{kind}"
    if kind == "mat":
        scipy.io.savemat(path, {"K": model.K, "C": model.C, "M": model.M, "b": b, "P_omega": table, "P": amplitude,
                                "outputs": outputs + 1})  # MATLAB counts from 1
    else:
        np.savez(path, K=model.K.toarray(), C=model.C.toarray(), M=model.M.toarray(), b=b, P_omega=table,
                 P=amplitude, outputs=outputs)
    output = run("truss", "--model", str(path), "--frequencies", "7", "--csv", str(tmp_path / "t.csv"),
                 "--png", str(tmp_path / "t.png"), "--scheduler-file", cluster)
    assert f"{model.size} unknowns" in output
    assert float(value(output, "largest residual")) < 1e-10
    rows = np.loadtxt(tmp_path / "t.csv", delimiter=",", skiprows=1)
    omegas = np.linspace(table[0], table[-1], 7)
    np.testing.assert_allclose(rows[:, 0], omegas)
    load = truss.TabulatedLoad(table, amplitude)
    expected = [truss.solver_for(model, "spsolve").solve(w, b * load(w))[outputs[0]] for w in omegas]
    np.testing.assert_allclose(rows[:, 1] + 1j * rows[:, 2], expected, rtol=1e-8)
    named = outputs + (1 if kind == "mat" else 0)  # each DOF named as its file counts: from 1 in MATLAB
    assert f"peak at DOF {named[0]}: " in output and f"peak at DOF {named[-1]}: " in output, output
    assert f"re_x_{named[0]},im_x_{named[0]}," in (tmp_path / "t.csv").read_text().splitlines()[0]


def test_montecarlo_example_writes_the_table_the_serial_run_gives(cluster: str, tmp_path: Path) -> None:
    output = run("montecarlo", "--count", "120", "--high", "200000", "--seed", "5", "--csv", str(tmp_path / "pi.csv"),
                 "--png", str(tmp_path / "pi.png"), "--scheduler-file", cluster)
    table = np.loadtxt(tmp_path / "pi.csv", delimiter=",", skiprows=1)
    sizes = montecarlo.sample_sizes(120, 10**3, 200000)
    assert table.shape == (120, 4)
    np.testing.assert_array_equal(table[:, 0], sizes)
    np.testing.assert_allclose(table[:, 1], montecarlo.run_table_serial(sizes, seed=5).estimate, rtol=1e-12)
    assert value(output, "workers") == "2"
    assert (tmp_path / "pi.png").stat().st_size > 1000


def test_render_holds_the_image_plus_two_waves_not_a_second_copy(cluster: str) -> None:
    import tracemalloc

    from hpcbridge.client.bridge import connect

    view = mandelbrot.View(6000, 6000)
    with connect(cluster, n_workers=2, timeout=60) as bridge:
        mandelbrot.render(bridge, mandelbrot.View(64, 128))
        tracemalloc.start()
        try:
            image = mandelbrot.render(bridge, view)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    wave = 2 * 2 * max((high - low) * view.width for low, high in mandelbrot.row_blocks(view, 2))
    assert image.nbytes <= peak < image.nbytes + 3 * wave, (peak, image.nbytes, wave)  # not 2x the image
    for row in range(0, view.height, 997):
        np.testing.assert_array_equal(image[row], mandelbrot.reference_rows((row, row + 1), view)[0])
