"""The MATLAB entry points, called with the argument types MATLAB passes, on a real local cluster.

MATLAB passes int64 as int, double as float (also a count typed as 4), char/string as str, 1xN
cells as tuple, scalar structs as dict, row vectors as array.array and matrices as memoryview
(column-major, like MATLAB's own storage).
"""

from __future__ import annotations

import array
import math
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hpcbridge.client import losses, matlab, planning, runs
from hpcbridge.client.runs import ItemError
from tests.conftest import module_local_job
from tests.test_rundir import drop_saved

USER_FUNCTIONS = textwrap.dedent("""
    def scale(x, settings):
        return x * settings["factor"]

    def after_go(x, gate):
        import os, time
        deadline = time.monotonic() + 120
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.05)
        return 2 * x

    def fails_on_negative(x):
        if x < 0:
            raise ArithmeticError(f"negative input {x}")
        return x

    def hangs_on_three(x):
        import time
        if x == 3:
            time.sleep(300)
        return x

    def ends_its_worker_on_seven(x):
        import os
        if x == 7:
            os._exit(3)
        return 2 * x
""")


def matlab_matrix(values: np.ndarray) -> memoryview:
    """A matrix the way MATLAB hands it over: a column-major buffer."""
    return memoryview(np.asfortranarray(values))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 2-worker local job for this module; yields its scheduler file as MATLAB would hold it."""
    with pytest.MonkeyPatch.context() as patch:  # the workers' slots, and those dead processes leave, stay here
        patch.setenv("HPCBRIDGE_SLOT_DIRECTORY", str(tmp_path_factory.mktemp("slots")))
        with module_local_job(tmp_path_factory, 2) as job:
            try:
                yield job.scheduler_file
            finally:
                matlab.close(job.scheduler_file)


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "user_functions.py"  # exists only here: shipped by value to workers and scheduler
    path.write_text(USER_FUNCTIONS)
    return path


def test_matlab_values_become_numpy_arrays_lists_and_dicts() -> None:
    matrix = np.arange(12.0).reshape(3, 4)
    converted = matlab.to_python(matlab_matrix(matrix))
    np.testing.assert_array_equal(converted, matrix)
    exact = matlab.to_python(array.array("q", [2**62 + 1, -(2**63)]))
    assert exact.dtype == np.int64 and exact.tolist() == [2**62 + 1, -(2**63)]
    assert matlab.to_python(array.array("d", [0.5, 1.5])).dtype == np.float64
    nested = matlab.to_python(({"a": array.array("d", [1.0])}, "text", 3, 2.5))
    assert isinstance(nested, list) and nested[1:] == ["text", 3, 2.5]
    np.testing.assert_array_equal(nested[0]["a"], [1.0])


def test_a_matrix_from_matlab_is_copied_so_matlab_may_free_it() -> None:
    source = np.asfortranarray(np.ones((2, 2)))
    converted = matlab.to_python(memoryview(source))
    source[0, 0] = 99.0
    assert converted[0, 0] == 1.0


def test_results_for_matlab_are_exact_vectors_or_plain_values() -> None:
    big = [2**62 + 1, 5, -7]
    vector = matlab.to_matlab(big)
    assert vector.dtype == np.int64 and vector.tolist() == big
    assert matlab.to_matlab([2**70, 1]) == [2**70, 1]  # too big for int64: left as Python ints
    assert matlab.to_matlab([0.5, 2]).dtype == np.float64
    assert matlab.to_matlab([True, False]).dtype == bool
    assert matlab.to_matlab(np.int64(2**62 + 3)) == 2**62 + 3 and type(matlab.to_matlab(np.int64(1))) is int
    assert matlab.to_matlab({"x": (1, "a"), 2: np.float32(0.5)}) == {"x": [1, "a"], "2": 0.5}


def test_counts_typed_in_matlab_arrive_as_doubles_and_are_accepted_when_whole() -> None:
    assert matlab._count(4.0, "n_workers") == 4 and matlab._count(4, "n_workers") == 4
    with pytest.raises(ValueError, match="whole number"):
        matlab._count(2.5, "n_workers")
    with pytest.raises(TypeError):
        matlab._count(True, "n_workers")
    with pytest.raises(ValueError, match="timeout"):
        matlab._seconds(-1.0)


def test_connect_broadcast_map_gather_with_matlab_types(cluster: str) -> None:
    info = matlab.connect(cluster, 2.0, 60.0)
    assert info["cluster"] == str(Path(cluster).resolve()) and info["workers"] == 2
    assert info["dashboard"].startswith("http://")
    matrix = np.arange(20.0).reshape(5, 4)
    vector = matlab.broadcast(cluster, array.array("d", [1.0, 10.0, 100.0, 1000.0]), "")
    assert 32 <= vector["nbytes"] < 32 + 1024 and vector["workers"] == 2  # the 4 doubles, once, and a header
    run = matlab.map(cluster, "numpy:dot", matlab_matrix(matrix), (vector["name"],), "", False, 0.0)
    assert isinstance(run, str) and run in matlab.runs(cluster)
    results = matlab.gather(cluster, run, 60.0, False)
    assert isinstance(results, np.ndarray) and results.dtype == np.float64
    np.testing.assert_array_equal(results, matrix @ np.array([1.0, 10.0, 100.0, 1000.0]))
    assert run not in matlab.runs(cluster)
    matlab.release(cluster, vector["name"])
    assert vector["name"] not in matlab.broadcasts(cluster)


def test_a_function_from_a_local_file_with_a_struct_broadcast_keeps_int64_exact(cluster: str, user_file: Path) -> None:
    settings = matlab.broadcast(cluster, {"factor": 3}, "settings")
    items = array.array("q", [1, 2**40, 2**61])
    run = matlab.map(cluster, f"{user_file}:scale", items, "settings", "scaled", False, 0)
    assert run == "scaled"
    results = matlab.gather(cluster, "scaled", math.inf, False)
    assert results.dtype == np.int64 and results.tolist() == [3, 3 * 2**40, 3 * 2**61]
    matlab.release(cluster, settings["name"])


def test_stacked_rows_come_back_as_one_matrix(cluster: str) -> None:
    run = matlab.map(cluster, "numpy:cumsum", matlab_matrix(np.ones((6, 3))), (), "", True, 0)
    stacked = matlab.gather(cluster, run, 60.0, True)
    np.testing.assert_array_equal(stacked, np.tile([1.0, 2.0, 3.0], (6, 1)))


def test_errors_name_the_item_and_carry_the_remote_traceback(cluster: str, user_file: Path) -> None:
    run = matlab.map(cluster, f"{user_file}:fails_on_negative", (1.0, 2.0, -3.0, 4.0), (), "", False, 0)
    with pytest.raises(ItemError, match=r"item 3 \(counting from 1; Python index 2\) of run") as failed:
        matlab.gather(cluster, run, 60.0, False)
    assert failed.value.item == "-3.0" and failed.value.index == 2
    assert "ArithmeticError: negative input -3.0" in str(failed.value)
    assert "fails_on_negative" in failed.value.remote_traceback
    # the user's own file and line, not cloudpickle's "<dynamic-code>"
    assert f'File "{user_file.resolve()}", line 14, in fails_on_negative' in failed.value.remote_traceback
    matlab.release(cluster, run)


def test_an_item_that_ends_its_worker_fails_alone_and_partial_returns_every_other_result(
        cluster: str, user_file: Path) -> None:
    run = matlab.map(cluster, f"{user_file}:ends_its_worker_on_seven", array.array("d", [float(x) for x in range(20)]),
                     (), "m-exit", False, 5.0)
    with pytest.raises(ItemError, match=r"item 8 \(counting from 1; Python index 7\) of run 'm-exit'") as failed:
        matlab.gather(cluster, run, 120.0, False)
    assert "exited with status 3" in str(failed.value) and failed.value.results[8] == 16.0
    got = matlab.results(cluster, run, 120.0, False, True)
    assert not got["complete"] and got["missing"].tolist() == [8]  # 1-based
    assert got["values"].dtype == np.float64 and np.isnan(got["values"][7])
    np.testing.assert_array_equal(np.delete(got["values"], 7), [2.0 * x for x in range(20) if x != 7])
    assert "WorkerDied: the worker process running it" in got["reason"] and "exited with status 3" in got["reason"]
    matlab.release(cluster, run)


def test_an_item_past_its_item_timeout_fails_alone(cluster: str, user_file: Path) -> None:
    with pytest.raises(ValueError, match="item_timeout: 0.0 is not allowed; expected a positive number of seconds"):
        matlab.map(cluster, f"{user_file}:hangs_on_three", (1.0, 2.0), (), "", False, 0.0, True, 0.0)
    run = matlab.map(cluster, f"{user_file}:hangs_on_three", array.array("d", [float(x) for x in range(8)]),
                     (), "m-hang", False, 2.0, True, 2.0)
    got = matlab.results(cluster, run, 120.0, False, True)
    assert got["missing"].tolist() == [4] and np.isnan(got["values"][3])  # 1-based
    assert "ItemTimeout: it ran longer than item_timeout=2 s" in got["reason"]
    np.testing.assert_array_equal(np.delete(got["values"], 3), [0.0, 1.0, 2.0, 4.0, 5.0, 6.0, 7.0])
    matlab.release(cluster, run)


def test_waits_have_timeouts_and_a_run_outlives_a_closed_connection(cluster: str) -> None:
    run = matlab.map(cluster, "time:sleep", (0.3, 0.3, 0.3, 0.3), (), "naps", False, 1.0)
    status = matlab.wait(cluster, run, 0.0)
    assert status["total"] == 4 and not status["finished"]
    with pytest.raises(TimeoutError, match="naps"):
        matlab.gather(cluster, run, 0.05, False)
    matlab.close(cluster)  # as if MATLAB had gone away; the next call attaches again
    status = matlab.wait(cluster, run, 60.0)
    assert status == {"done": 4, "total": 4, "finished": True, "failed": False}
    assert matlab.gather(cluster, run, 60.0, False) == [None] * 4


def test_bad_arguments_are_refused_with_a_reason(cluster: str) -> None:
    with pytest.raises(TypeError, match="cell array, a number, or a numeric"):
        matlab.map(cluster, "numpy:abs", object(), (), "", False, 0)
    with pytest.raises(ValueError, match="module:function"):
        matlab.map(cluster, "abs", (1.0,), (), "", False, 0)
    with pytest.raises(TypeError, match="scheduler file"):
        matlab.runs(3.0)


def test_results_from_disk_say_what_is_missing_and_map_by_name_resumes(cluster: str) -> None:
    from hpcbridge.client import losses, planning, runs

    run = matlab.map(cluster, "operator:neg", array.array("d", [float(x) for x in range(400)]),
                     (), "m-resume", False, 50.0)
    assert matlab.wait(cluster, run, 60.0)["finished"]
    bridge = matlab.bridge_for(cluster)
    directory = Path(bridge.run(run).directory)
    runs.release(bridge.client, run)  # the cluster forgets it, as one that ended would
    drop_saved(str(directory), [(100, 150)])  # that chunk lost from disk
    got = matlab.results(cluster, run, math.inf, False, True)
    assert not got["complete"] and got["missing"].tolist() == list(range(101, 151))  # 1-based
    assert got["values"].dtype == np.float64 and np.isnan(got["values"][100:150]).all()
    np.testing.assert_array_equal(got["values"][:100], -np.arange(100.0))
    assert "50 have no result (items 101..150, counting from 1)" in got["reason"]  # MATLAB's numbers
    with pytest.raises(losses.RunLost, match=r"items 101\.\.150, counting from 1"):
        matlab.gather(cluster, run)
    again = matlab.map(cluster, "operator:neg", array.array("d", [float(x) for x in range(400)]),
                       (), "m-resume", False, 50.0)
    assert [len(range(*b)) for b, f in zip(bridge.run(again).bounds, bridge.run(again).futures) if f] == [50]
    np.testing.assert_array_equal(matlab.gather(cluster, again), -np.arange(400.0))


def test_a_scalar_from_matlab_is_one_item(cluster: str) -> None:
    for scalar in (4.0, 4, True):  # 4, int64(4), true as MATLAB passes them
        run = matlab.map(cluster, "math:sqrt", scalar, (), "", False, 0)
        assert matlab.gather(cluster, run, 60.0, False).tolist() == [2.0 if scalar == 4 else 1.0]


def test_a_broadcast_name_in_use_is_refused_at_once_and_the_first_stays(cluster: str, user_file: Path) -> None:
    matlab.connect(cluster, 2.0, 60.0)
    matlab.broadcast(cluster, {"factor": 2}, "dupA")
    with pytest.raises(ValueError, match="a broadcast named 'dupA' already exists"):
        matlab.broadcast(cluster, {"factor": 5}, "dupA")
    run = matlab.map(cluster, f"{user_file}:scale", array.array("q", [1, 2, 3]), "dupA", "", False, 0)
    assert matlab.gather(cluster, run, 60.0, False).tolist() == [2, 4, 6]
    matlab.release(cluster, "dupA")


def test_map_returns_before_its_probes_finish_and_gather_collects_everything(
        cluster: str, user_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probes cannot finish until the gate file exists, which the test makes only after map returned."""
    matlab.connect(cluster, 2.0, 60.0)
    monkeypatch.setattr(planning, "PROBE_WAIT_COLD", 300.0)  # a blocking map would wait this long
    gate = tmp_path / "gate"
    matlab.broadcast(cluster, str(gate), "gate")
    returned: list[str] = []
    caller = threading.Thread(target=lambda: returned.append(
        matlab.map(cluster, f"{user_file}:after_go", array.array("d", range(50)), "gate", "gated", False, 0)))
    caller.start()
    caller.join(60)
    before_the_gate_opened = list(returned)
    gate.touch()
    caller.join(60)
    assert before_the_gate_opened == ["gated"], "map waited for its probes"
    status = matlab.wait(cluster, "gated", 60.0)
    assert status["total"] == 50
    assert matlab.gather(cluster, "gated", 120.0, False).tolist() == [2.0 * x for x in range(50)]
    assert "gated" not in matlab.runs(cluster)
    matlab.release(cluster, "gate")


def test_chunks_not_saved_are_notices_for_matlab_to_show_not_python_warnings(cluster: str, user_file: Path,
                                                                              tmp_path: Path, recwarn) -> None:
    import shutil

    from hpcbridge.rundir import RunDirectoryWarning

    gate = tmp_path / "gate"
    handle = matlab.broadcast(cluster, str(gate), "gate-for-notices")
    run = matlab.map(cluster, f"{user_file}:after_go", (1.0, 2.0, 3.0, 4.0), (handle["name"],), "unsaved", False, 2.0)
    folder = Path(matlab.bridge_for(cluster).run_root, run)
    shutil.rmtree(folder)  # deleted while the chunks wait at the gate: none can be saved
    gate.touch()
    assert matlab.gather(cluster, run, 60.0, False).tolist() == [2.0, 4.0, 6.0, 8.0]
    [notice] = matlab.notices(cluster, run)
    assert f"run 'unsaved': 2 of 2 chunks (4 of 4 items) were not saved in {folder}: " in notice
    assert "No such file or directory" in notice and "\n" not in notice
    assert matlab.notices(cluster, run) == []  # said once
    assert not [w for w in recwarn if issubclass(w.category, RunDirectoryWarning)]  # not on Python's stderr
    matlab.release(cluster, handle["name"])
