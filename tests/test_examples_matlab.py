"""The MATLAB examples: they parse (in GNU Octave), name Python functions that exist, and the calls
they make through the toolbox's Python side give the right answers on a real local cluster.

MATLAB is not available here, so the toolbox's Python entry points (``hpcbridge.client.matlab``) are
called with the types MATLAB passes: matrices as memoryview, vectors as array.array, structs as
dict.
"""

from __future__ import annotations

import array
import importlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hpcbridge.client import matlab as toolbox
from hpcbridge.job import submit as jobs
from hpcbridge.job.spec import JobSpec
from hpcbridge.workloads import mandelbrot, montecarlo, truss
from tests.conftest import job_processes, wait_for

EXAMPLES = Path(__file__).resolve().parent.parent / "matlab" / "examples"
SCRIPTS = ["primefactor_sum", "mandelbrot_image", "truss_response", "montecarlo_pi", "prime_factors"]
OCTAVE = shutil.which("octave-cli")
ALLOWED = {"connect", "broadcast", "map", "gather", "close", "release", "fromPython"}


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_uses_only_the_toolbox_and_functions_that_exist(script: str) -> None:
    text = (EXAMPLES / f"{script}.m").read_text()
    assert text.startswith(f"%{script.upper()} ")
    assert set(re.findall(r"hpcbridge\.(\w+)\(", text)) <= ALLOWED
    named = re.findall(r"'(hpcbridge\.workloads\.\w+):(\w+)'", text)  # run on the workers
    named += re.findall(r"py\.(hpcbridge\.workloads\.\w+)\.(\w+)\(", text)  # called in MATLAB's Python
    assert named
    for module, function in named:
        assert callable(getattr(importlib.import_module(module), function))


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_parses(script: str) -> None:
    assert OCTAVE, "GNU Octave is not installed: make test installs it (apt-get install octave)"
    done = subprocess.run([OCTAVE, "--no-gui", "--norc", "--eval",
                           f"__parse_file__('{EXAMPLES / script}.m'); disp('parsed')"],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("parsed"), done.stdout + done.stderr


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 2-worker local cluster attached through the toolbox's Python side; its cluster handle."""
    home = tmp_path_factory.mktemp("matlab-examples-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HPCBRIDGE_HOME", str(home))
        job = jobs.submit(JobSpec(scheduler="local", ntasks_per_node=2, cpus_per_task=1, python=sys.executable,
                                  scheduler_file=str(home / "{job_id}" / "scheduler.json")))
        try:
            yield toolbox.connect(job.scheduler_file, 2.0, 120.0)["cluster"]
        finally:
            toolbox.close(job.scheduler_file)
            job.cancel()
            assert wait_for(lambda: not job_processes(job.job_id), timeout=30)


def matrix(rows: np.ndarray) -> memoryview:
    """A MATLAB matrix as MATLAB hands it to Python."""
    return memoryview(np.ascontiguousarray(rows))


def test_prime_sums_as_the_matlab_script_asks(cluster: str) -> None:
    function = "hpcbridge.workloads.primes:distinct_prime_factor_sum"
    run = toolbox.map(cluster, function, array.array("q", range(2, 10**4)), stack=True)
    assert int(np.sum(toolbox.gather(cluster, run, stack=True))) == 10218029
    segments = np.array([[2, 5000, 10**7], [5000, 10**7, 10**7]], dtype=np.int64)
    run = toolbox.map(cluster, "hpcbridge.workloads.primes:segment_contribution", matrix(segments), chunk_size=1)
    assert int(np.sum(toolbox.gather(cluster, run))) == 5495501355056


def test_mandelbrot_blocks_as_the_matlab_script_asks(cluster: str) -> None:
    view = {"width": 150.0, "height": 70.0, "re_min": -0.744, "re_max": -0.7433, "im_min": 0.1315,
            "im_max": 0.1322, "maxiter": 255.0}
    handle = toolbox.broadcast(cluster, view)
    blocks = np.array([[0.0, 30.0], [30.0, 60.0], [60.0, 70.0]])
    run = toolbox.map(cluster, "hpcbridge.workloads.mandelbrot:block", matrix(blocks), handle["name"], chunk_size=1)
    parts = toolbox.gather(cluster, run)
    toolbox.release(cluster, handle["name"])
    np.testing.assert_array_equal(np.concatenate(parts), mandelbrot.reference_rows((0, 70), mandelbrot.View(150, 70)))


def test_mandelbrot_image_reaches_matlab_as_one_contiguous_array(cluster: str) -> None:
    image = mandelbrot.image(cluster, 150.0, 70.0, 255.0)  # MATLAB passes doubles
    assert image.dtype == np.uint8 and image.shape == (70, 150) and image.flags.c_contiguous
    np.testing.assert_array_equal(image, mandelbrot.reference_rows((0, 70), mandelbrot.View(150, 70)))


def test_truss_from_triplets_as_the_matlab_script_asks(cluster: str) -> None:
    model = truss.assemble(truss.structured_mesh(8, 5))
    data = {"n": float(model.size), "b": matrix(model.b[:, None]), "outputs": float(model.outputs[0] + 1)}
    for name in "KCM":
        coo = getattr(model, name).tocoo()
        for suffix, values in (("i", coo.row + 1.0), ("j", coo.col + 1.0), ("v", coo.data)):
            data[f"{name}_{suffix}"] = matrix(values[:, None].astype(float))
    handle = toolbox.broadcast(cluster, data)
    omegas = np.linspace(5.0, 200.0, 9)
    run = toolbox.map(cluster, "hpcbridge.workloads.truss:response_from_triplets", array.array("d", omegas),
                      handle["name"])
    result = toolbox.gather(cluster, run, stack=True)
    toolbox.release(cluster, handle["name"])
    assert result.shape == (9, 2)
    assert np.abs(result[:, 1]).max() < 1e-10
    expected = [truss.solver_for(model, "spsolve").solve(w, model.b)[model.outputs[0]] for w in omegas]
    np.testing.assert_allclose(result[:, 0], expected, rtol=1e-8)


def test_montecarlo_rows_as_the_matlab_script_asks(cluster: str) -> None:
    sizes = montecarlo.sample_sizes(50, 10**3, 10**5)
    order = np.random.default_rng(1).permutation(50)
    tasks = np.column_stack([np.arange(50), sizes, np.full(50, 2024)]).astype(np.int64)
    run = toolbox.map(cluster, "hpcbridge.workloads.montecarlo:estimate_pi", matrix(tasks[order]))
    estimates = np.empty(50)
    estimates[order] = toolbox.gather(cluster, run)
    np.testing.assert_array_equal(estimates, montecarlo.run_table_serial(sizes, seed=2024).estimate)
