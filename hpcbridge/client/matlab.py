"""Entry points for MATLAB's ``py.`` interface (used by ``matlab/+hpcbridge``).

MATLAB calls Python with plain positional arguments (no ``*args``; keywords only through
``pyargs``), passes int64 as ``int``, double as ``float`` (also for counts a user types as ``4``),
char and string as ``str``, 1xN cells as ``tuple``, scalar structs as ``dict``, row vectors as
``array.array`` and matrices as ``memoryview``. And Python threads, among them the thread that
runs the Dask client's event loop, may not run while MATLAB code runs.

So every function here:

- takes the cluster as a plain string, the scheduler file's path, and returns plain values:
  names (``str``), NumPy arrays, ``int``/``float``/``bool``, lists and dicts. MATLAB never holds
  a Python object across its own computations; broadcasts and runs live on the cluster by name;
- attaches again by itself when the cached client was disconnected meanwhile;
- waits inside the Python call, with a timeout, never through callbacks.

:func:`map` returns at once: the probes that size the chunks (up to seconds when the function
is slow or the workers are cold) run on a Python thread, which MATLAB lets run during the next
hpcbridge call (:func:`wait`, :func:`gather`, ...); those calls first let it finish submitting.
Item numbers in errors count from 1, as MATLAB does.
"""

from __future__ import annotations

import array
import functools
import math
import numbers
import re
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import numpy as np

from hpcbridge.client import arguments
from hpcbridge.client.bridge import Bridge, ConnectError
from hpcbridge.client.bridge import connect as _connect
from hpcbridge.client.futures import wait_for
from hpcbridge.client.losses import RunError, RunLost
from hpcbridge.client.runs import ItemError, new_run_name, threads_offering
from hpcbridge.client.stuck import Handoff
from hpcbridge.cluster.broadcasts import Broadcast
from hpcbridge.rundir import RunDirectoryWarning

_BRIDGES: dict[str, Bridge] = {}
_ENDED: dict[str, str] = {}  # cluster handle -> how it ended, for clusters ended from this session
_LOST: dict[str, Bridge] = {}  # cluster handle -> its bridge once it ended
RECONNECT_TIMEOUT = 60.0
SUBMIT_TIMEOUT = 600.0


class ClusterEnded(ConnectError):
    """The cluster has ended (shut down, cancelled, idle, walltime): said at once, with what is left to do."""


def cluster_ended(cluster: str, how: str) -> None:
    """Note that the cluster behind ``cluster`` was ended (``how``, in words): the next call on it says so at once."""
    key = _cluster_id(cluster)
    _ENDED[key] = how
    bridge = _BRIDGES.pop(key, None)
    if bridge is not None:
        _LOST[key] = bridge  # closed, it still reads the cluster's runs on disk
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                bridge.close()
            except Exception:  # noqa: BLE001 (its scheduler is gone: nothing to close cleanly)
                pass


def _ended_error(key: str, how: str) -> ClusterEnded:
    return ClusterEnded(f"the cluster of {key} has ended ({how}); runs saved on disk can still be read with "
                        "hpcbridge.results(CLUSTER, RUN, 'Partial', true), and hpcbridge.connect with job options "
                        "(or hpcbridge.submit) starts a new one")


def _job_ended(key: str, bridge: Bridge | None) -> str | None:
    """How the job behind cluster ``key`` ended, when it has (asked of its batch system), else None."""
    job = bridge.job if bridge is not None else None
    if job is None:
        from hpcbridge.backends.job import recorded_jobs

        job = next((found for found, _ in recorded_jobs() if found.scheduler_file
                    and str(Path(found.scheduler_file).expanduser().resolve()) == key), None)
    if job is None:
        return None
    try:
        status = job.status()
    except Exception:  # noqa: BLE001 (the batch system did not answer: not known to have ended)
        return None
    if not status.finished:
        return None
    from hpcbridge.backends.job import read_job_output

    said = read_job_output(status.log)
    why = said.ended if said is not None and said.ended else status.reason
    return f"job {job.job_id} is {status.state}" + (f": {why}" if why else "")


def _says_ended(call: Callable[..., Any]) -> Callable[..., Any]:
    """A call on a cluster whose connection breaks because its job ended raises :class:`ClusterEnded`
    (how it ended, what is left to do) instead of Dask's ``CommClosedError``."""

    @functools.wraps(call)
    def checked(cluster: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(cluster, *args, **kwargs)
        except ClusterEnded:
            raise
        except OSError as error:  # CommClosedError, ConnectionError, ... from the comm
            key = _cluster_id(cluster)
            how = _ENDED.get(key) or _job_ended(key, _BRIDGES.get(key) or _LOST.get(key))
            if how is None:
                raise
            cluster_ended(key, how)
            raise _ended_error(key, how) from error

    return checked


_WARNINGS: list[str] = []  # said by Python during the last calls, for MATLAB's warning()


def matlab_warnings(call: Callable[..., Any]) -> Callable[..., Any]:
    """Keep the Python warnings a call raises for :func:`warnings_said` (the toolbox shows each with MATLAB's
    ``warning``) instead of letting Python print them into the MATLAB session."""

    @functools.wraps(call)
    def keeping(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            try:
                return call(*args, **kwargs)
            finally:
                _WARNINGS.extend(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))

    return keeping


def warnings_said() -> list[str]:
    """The Python warnings kept since the last call of this function, once each."""
    said = list(dict.fromkeys(_WARNINGS))
    _WARNINGS.clear()
    return said


class MatlabItemError(ItemError):
    """An item's failure told with MATLAB's numbering: item 1 is the first (``index`` stays 0-based)."""

    def __str__(self) -> str:
        return (f"item {self.index + 1} (counting from 1; Python index {self.index}) of run {self.run!r} "
                f"failed on {self.worker}: {self.error}\nthe item: {self.item}\n"
                f"remote traceback:\n{self.remote_traceback}")


class _Submitting:
    """A run whose chunks a thread is still probing for and submitting (see the module's docstring)."""

    def __init__(self, bridge: Bridge, name: str, n_items: int, start: Any) -> None:
        self.name, self.n_items = name, n_items
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(start,), name=f"hpcbridge-map-{name}", daemon=True)
        self.thread.start()

    def _run(self, start: Any) -> None:
        try:
            start()
        except BaseException as error:  # handed to the caller of the next call on this run
            self.error = error

    def finish(self, timeout: float | None) -> bool:
        """Let the thread work up to ``timeout`` s; True once every chunk is submitted; its error if it failed."""
        self.thread.join(timeout)
        if self.thread.is_alive():
            return False
        if self.error is not None:
            raise self.error
        return True


_SUBMITTING: dict[tuple[str, str], _Submitting] = {}


def _submitted(cluster: str, run: str, timeout: float | None = SUBMIT_TIMEOUT) -> bool:
    """Wait (up to ``timeout`` s) until run ``run`` started by :func:`map` here is fully submitted."""
    key = (_cluster_id(cluster), str(run))
    pending = _SUBMITTING.get(key)
    if pending is None:
        return True
    try:
        done = pending.finish(timeout)
    except BaseException:
        _SUBMITTING.pop(key, None)
        raise
    if done:
        _SUBMITTING.pop(key, None)
    return done


def _all_submitted(cluster: str) -> None:
    key = _cluster_id(cluster)
    for pending_cluster, run in [k for k in _SUBMITTING if k[0] == key]:
        _submitted(pending_cluster, run)


@matlab_warnings
def connect(scheduler_file: str, n_workers: int | float = 1, timeout: float = 300.0) -> dict[str, Any]:
    """Attach to the cluster behind ``scheduler_file``; wait up to ``timeout`` s for ``n_workers``.

    Returns ``{"cluster": <the file's absolute path, the handle every other call takes>,
    "workers": ..., "threads": ..., "dashboard": ...}``.
    """
    cluster = _cluster_id(arguments.scheduler_file("scheduler_file", scheduler_file))
    _ENDED.pop(cluster, None)
    _LOST.pop(cluster, None)  # connect waits for a cluster to come (a new job may write the same file)
    bridge = _BRIDGES.get(cluster)
    if bridge is None or bridge.client.status != "running":
        bridge = _BRIDGES[cluster] = _connect(cluster, n_workers=_count(n_workers, "n_workers"),
                                              timeout=_seconds(timeout))
    else:
        bridge.wait_for_workers(_count(n_workers, "n_workers"), timeout=_seconds(timeout))
    return {"cluster": cluster, "workers": bridge.n_workers, "threads": bridge.total_threads,
            "dashboard": bridge.dashboard_link}


@matlab_warnings
@_says_ended
def broadcast(cluster: str, value: Any, name: str = "") -> dict[str, Any]:
    """Send ``value`` to every worker once; returns ``{"name", "nbytes", "seconds", "workers"}``.

    Pass the name to :func:`map`. The copies stay on the workers until :func:`release`.
    """
    name = arguments.name("name", name, empty_is_none=True)
    handle = _bridge(cluster).broadcast(to_python(value), name=name)
    return {"name": handle.name, "nbytes": handle.nbytes, "seconds": handle.seconds, "workers": handle.n_workers}


@matlab_warnings
@_says_ended
def map(cluster: str, function: str, items: Any, broadcasts: Any = (), name: str = "",  # noqa: A001
        stack: bool = False, chunk_size: int | float = 0, save: bool = True, item_timeout: float = math.inf,
        resources: Any = None) -> str:
    """Start ``function(item, *broadcast_values)`` for every item; return the run's name at once.

    ``function`` is ``"module:function"`` or ``"path/to/file.py:function"``. ``items``: a cell
    (each element), a numeric vector (each number) or a matrix (each row). ``broadcasts``: a
    broadcast name or a cell of names. Collect with :func:`gather`; follow with :func:`wait`.
    Finished chunks are saved on disk (``save=False``: not); a ``name`` whose run is on disk from
    an earlier cluster resumes it: only the items without a saved result are computed.
    ``item_timeout`` (seconds; Inf, the default: no limit) ends an item that runs longer, by
    ending its worker process, and fails it. ``resources`` (a struct such as ``struct('GPU', 1)``,
    a dict here) sends the chunks only to workers that offer them (GPU workers offer ``GPU``).
    """
    function = arguments.function("function", function)
    resources = arguments.resources("resources", dict(resources) if isinstance(resources, Mapping) else resources)
    values = _items(items)
    names = [broadcasts] if isinstance(broadcasts, str) else broadcasts
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise arguments.ArgumentError("broadcasts", broadcasts, "a broadcast's name or a cell array of names")
    handles = [Broadcast.named(n) for n in names if n]
    name, stack = arguments.run_name("name", name, empty_is_none=True), arguments.flag("stack", stack)
    save = arguments.flag("save", save)
    chunks = _count(chunk_size, "chunk_size") or None
    limit = None if isinstance(item_timeout, float) and item_timeout == math.inf else item_timeout
    limit = arguments.positive_seconds("item_timeout", limit)
    bridge = _bridge(cluster)
    if resources:
        threads_offering(bridge.client, resources)  # refused now, not on the thread that submits
    held = bridge.broadcasts() if handles else []
    for handle in handles:
        if handle.name not in held:  # refused now, not on the thread that submits: gather would say it
            raise arguments.ArgumentError("broadcasts", handle.name, "names of broadcasts this cluster holds "
                                          f"({', '.join(sorted(held)) or 'none'}), as hpcbridge.broadcast returned them")
    name = name or new_run_name()
    if name in bridge.client.list_datasets() or (_cluster_id(cluster), name) in _SUBMITTING:
        raise KeyError(f"a run named {name!r} already exists on this cluster; gather or release it first, "
                       "or choose another name")
    from hpcbridge import functions

    resolved = functions.resolve(function)  # a bad name fails here, not on the thread
    arguments.picklable("function", resolved, given=function)

    def start() -> None:
        bridge.map(resolved, values, args=tuple(handles), name=name, stack=bool(stack), chunk_size=chunks,
                   progress=False, save=bool(save), item_timeout=limit, resources=resources)

    if chunks:
        start()  # nothing to measure: every chunk is submitted now
    else:
        _SUBMITTING[(_cluster_id(cluster), name)] = _Submitting(bridge, name, len(values), start)
    return name


@matlab_warnings
@_says_ended
def wait(cluster: str, run: str, timeout: float = 0.0) -> dict[str, Any]:
    """Wait up to ``timeout`` s for run ``run``; returns ``{"done", "total", "finished", "failed"}``.

    Returns as soon as the run has finished, or can go no further (its cluster is gone: then
    :func:`gather` says why and returns what is saved); call it in a loop to show progress in MATLAB.
    """
    run, seconds = _run_name(run), _seconds(timeout)
    pending = _SUBMITTING.get((_cluster_id(cluster), str(run)))
    if not _submitted(cluster, run, seconds):
        return {"done": 0, "total": pending.n_items, "finished": False, "failed": False}
    bridge = _bridge_or_lost(cluster)
    if not bridge.connected or run not in bridge.client.list_datasets():
        return {"done": 0, "total": 0, "finished": True, "failed": False}
    handle = bridge.run(run)
    Handoff(bridge.client, handle).check(now=True)  # a stuck item's chunk hands the rest of its items on
    futures = [f for f in handle.futures if f is not None]
    wait_for(bridge.client, futures, seconds)
    done = handle.done_items()
    failed = sum(f.status == "error" for f in futures)
    return {"done": done, "total": handle.n_items,
            "finished": all(f.done() for f in futures) or not bridge.connected, "failed": bool(failed)}


@matlab_warnings
def gather(cluster: str, run: str, timeout: float = math.inf, stack: bool = False) -> Any:
    """The results of run ``run`` in input order, and the cluster forgets the run.

    Numeric scalar results come back as one NumPy vector (int64 stays exact); with ``stack``,
    array results come back as one array stacked along a new first dimension; anything else as
    a list. Raises TimeoutError after ``timeout`` s (the run stays on the cluster), and the first
    failing item's error with its remote traceback. When the cluster is gone the saved chunks are
    read from the run directory; items without a result raise the error of the cause
    (walltime, cancelled job, ...), which says how many are missing (see :func:`results`).
    """
    return to_matlab(_results(cluster, run, timeout, stack))


def _results(cluster: str, run: str, timeout: Any, stack: Any) -> Any:
    """The run's values (Python types), from the cluster or from disk; errors as MATLAB counts."""
    run, seconds, stack = _run_name(run), _timeout(timeout), arguments.flag("stack", stack)
    _submitted(cluster, run, SUBMIT_TIMEOUT if seconds is None else max(seconds, 1.0))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RunDirectoryWarning)
            try:
                return _bridge_or_lost(cluster).results(run, stack=bool(stack), timeout=seconds, progress=False)
            finally:
                _keep_notices(cluster, run, caught)
    except ItemError as error:
        raise MatlabItemError(error.run, error.index, error.item, error.worker, error.error,
                              error.remote_traceback, error.results, error.errors, error.missing) from None
    except (RunLost, RunError) as error:
        raise _counted_from_one(error) from None


_NOTICES: dict[tuple[str, str], list[str]] = {}


def _keep_notices(cluster: str, run: str, caught: list[warnings.WarningMessage]) -> None:
    """Keep the run directory's warnings for :func:`notices` (MATLAB shows them as its own warnings);
    pass any other warning on as it was."""
    for warning in caught:
        if issubclass(warning.category, RunDirectoryWarning):
            _NOTICES.setdefault((_cluster_id(cluster), run), []).append(str(warning.message))
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def notices(cluster: str, run: str) -> list[str]:
    """What gathering run ``run`` had to say beside its results (chunks that could not be saved in its run
    directory, a folder that could not be removed), once; ``hpcbridge.gather`` shows each as a warning."""
    return _NOTICES.pop((_cluster_id(cluster), _run_name(run)), [])


@matlab_warnings
def results(cluster: str, run: str, timeout: float = math.inf, stack: bool = False,
            partial: bool = False) -> Any:
    """Like :func:`gather`; with ``partial`` it returns what there is instead of raising for missing items.

    ``partial=True`` returns ``{"values", "missing", "complete", "reason"}``: the values in
    input order as :func:`gather` shapes them, numeric ones with NaN where an item has no result
    (other kinds: an empty cell); ``missing``, the 1-based indices of those items (int64, MATLAB's
    indexing): items lost with the cluster and items that failed (an error in the function, or
    they ended their worker process); ``reason``, the error's text ("" when complete).
    """
    try:
        values = _results(cluster, run, timeout, stack)
    except (RunLost, ItemError, RunError) as lost:
        if not partial or getattr(lost, "results", None) is None:
            raise
        missing = set(_without_result(lost))
        values = lost.results
        numeric = all(isinstance(v, numbers.Number) for i, v in enumerate(values) if i not in missing)
        filled = [math.nan if i in missing and numeric else v for i, v in enumerate(values)]
        return {"values": to_matlab(filled), "missing": np.array(sorted(missing), dtype=np.int64) + 1,
                "complete": False, "reason": str(lost)}
    if not partial:
        return to_matlab(values)
    return {"values": to_matlab(values), "missing": np.zeros(0, dtype=np.int64), "complete": True, "reason": ""}


def _counted_from_one(error: RunError) -> RunError:
    """The same error (its class, its values) whose text counts items from 1, as MATLAB does."""
    text = one_based(str(error), getattr(error, "missing", None))
    kind = type(error)
    error.__class__ = type(kind.__name__, (kind,), {"__str__": lambda self: text, "__module__": kind.__module__,
                                                    "__qualname__": kind.__qualname__})
    return error


def one_based(text: str, missing: Any = None) -> str:
    """An error's text with its item numbers counted from 1, as MATLAB counts (``items 20..59`` → ``items 21..60``).

    >>> one_based("run 'r': 40 have no result (items 20..59). The results saved ...", [(20, 60)])
    "run 'r': 40 have no result (items 21..60, counting from 1). The results saved ..."
    >>> one_based("items 0..4 of run 'r' failed as a chunk")
    "items 1..5 (counting from 1) of run 'r' failed as a chunk"
    """
    from hpcbridge.rundir import describe_ranges

    if missing:
        ranges = [(int(low), int(high)) for low, high in missing]
        described = describe_ranges(ranges)
        if described in text:
            shifted = describe_ranges([(low + 1, high + 1) for low, high in ranges])
            return text.replace(described, f"{shifted}, counting from 1", 1)

    def shift(match: re.Match[str]) -> str:
        low, high = int(match[1]) + 1, int(match[2]) + 1
        return f"items {low}..{high} (counting from 1)"

    return re.sub(r"\bitems (\d+)\.\.(\d+)", shift, text)


def _without_result(error: RunError | ItemError) -> list[int]:
    """The 0-based indices of the items an error says have no result."""
    if isinstance(error, RunLost):
        return error.missing_items()
    failed = error.failed_items() if isinstance(error, ItemError) else []
    return failed + [index for low, high in error.missing for index in range(low, high)]


@matlab_warnings
@_says_ended
def runs(cluster: str) -> list[str]:
    """Names of the runs the cluster holds (results not yet gathered)."""
    _all_submitted(cluster)
    return _bridge(cluster).runs()


@matlab_warnings
@_says_ended
def broadcasts(cluster: str) -> list[str]:
    """Names of the broadcasts the cluster holds."""
    return _bridge(cluster).broadcasts()


@matlab_warnings
@_says_ended
def release(cluster: str, handle: str) -> None:
    """Free a run's results or a broadcast's copies on the cluster (``handle``: the run's or broadcast's name)."""
    _cluster_id(cluster)
    if not isinstance(handle, str) or arguments.name("handle", handle) is None:
        raise arguments.ArgumentError("handle", handle, "the name of a run or of a broadcast (a char vector or "
                                      "string), or a broadcast's handle")
    _submitted(cluster, handle)
    _bridge(cluster).release(handle)


@matlab_warnings
def close(cluster: str) -> None:
    """Detach from the cluster; it keeps running with its broadcasts and runs (submitted in full first)."""
    _all_submitted(cluster)
    bridge = _BRIDGES.pop(_cluster_id(cluster), None)
    if bridge is not None:
        bridge.close()


@matlab_warnings
def shutdown(cluster: str) -> None:
    """End the cluster (and its batch job); the next call on it says at once that it ended."""
    _bridge(cluster).shutdown()
    cluster_ended(cluster, "you shut it down with hpcbridge.shutdown")


def to_python(value: Any) -> Any:
    """A value as MATLAB passed it, in the form Python code expects.

    memoryview (a matrix) and array.array (a vector) become NumPy arrays of the same type (a
    copy, because MATLAB's buffer is not ours to keep); tuples (cells) become lists; dicts
    (structs) are converted value by value; everything else is returned as it is.
    """
    if isinstance(value, memoryview):
        return np.array(value, copy=True)
    if isinstance(value, array.array):
        return np.array(value)
    if isinstance(value, (tuple, list)):
        return [to_python(v) for v in value]
    if isinstance(value, dict):
        return {k: to_python(v) for k, v in value.items()}
    return value


def to_matlab(value: Any) -> Any:
    """A result in a form MATLAB converts quickly and exactly.

    NumPy scalars become ``int``/``float``/``bool``/``complex``; lists of plain numbers of one
    kind become one NumPy vector (int64 when they are integers that fit, float64 otherwise);
    tuples become lists; dicts and lists are converted element by element; arrays stay arrays.
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, dict):
        return {str(k): to_matlab(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, (bool, np.bool_)) for v in value):
            return np.array(value, dtype=bool)
        if value and all(isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, (bool, np.bool_))
                         for v in value):
            try:
                return np.array(value, dtype=np.int64)
            except OverflowError:
                return [int(v) for v in value]
        if value and all(isinstance(v, (numbers.Real, np.floating)) and not isinstance(v, (bool, np.bool_))
                         for v in value):
            return np.array(value, dtype=np.float64)
        return [to_matlab(v) for v in value]
    return value


def _items(items: Any) -> Any:
    converted = to_python(items)
    if isinstance(converted, (numbers.Number, np.generic)):
        return [converted]  # MATLAB passes a scalar (4, int64(4)) as a Python float or int: one item
    if isinstance(converted, np.ndarray):
        return converted if converted.ndim else converted.reshape(1)
    if isinstance(converted, list):
        return converted
    raise arguments.ArgumentError("items", items, "a cell array, a number, or a numeric vector or matrix")


def bridge_for(cluster: str) -> Bridge:
    """The bridge behind a cluster handle, for workload functions that MATLAB calls with that handle."""
    return _bridge(cluster)


def _bridge(cluster: str) -> Bridge:
    """The cached bridge for ``cluster``, attached again if its connection was lost."""
    key = _cluster_id(cluster)
    if key in _ENDED:
        raise _ended_error(key, _ENDED[key])
    bridge = _BRIDGES.get(key)
    if bridge is None or bridge.client.status != "running":
        how = _job_ended(key, bridge)
        if bridge is not None:
            cluster_ended(key, how) if how else bridge.close()
            _BRIDGES.pop(key, None)
        if how:
            raise _ended_error(key, how)
        bridge = _BRIDGES[key] = _connect(key, n_workers=0, timeout=RECONNECT_TIMEOUT)
    return bridge


def _bridge_or_lost(cluster: str) -> Bridge:
    """The bridge for ``cluster``; when it cannot attach again, the lost one, which still reads runs on disk."""
    key = _cluster_id(cluster)
    old = _BRIDGES.get(key)
    if old is not None and old.connected:
        return old
    try:
        return _bridge(cluster)
    except (ConnectError, OSError):
        old = old or _LOST.get(key)
        if old is None:
            raise
        if key not in _ENDED:
            _BRIDGES[key] = old
        return old


def _cluster_id(scheduler_file: Any) -> str:
    """The cluster handle: the scheduler file's absolute path (a char vector or string in MATLAB)."""
    if not isinstance(scheduler_file, str):
        raise arguments.ArgumentError("cluster", scheduler_file, "the scheduler file's path (a char vector or string)")
    return str(Path(arguments.scheduler_file("cluster", scheduler_file)).expanduser().resolve())


def _run_name(run: Any) -> str:
    if arguments.name("run", run) is None:
        raise arguments.ArgumentError("run", run, "a run's name, as map returned it")
    return run


def _count(value: Any, what: str) -> int:
    """An integer count as MATLAB may pass it (``4`` typed in MATLAB is a double)."""
    return arguments.count(what, value)


def _seconds(value: Any) -> float:
    """A timeout in seconds as MATLAB passes it (a double; Inf for no limit)."""
    return arguments.seconds("timeout", value, infinite=True)


def _timeout(value: Any) -> float | None:
    seconds = _seconds(value)
    return None if math.isinf(seconds) else seconds
