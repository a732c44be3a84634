"""The ``concurrent.futures`` and joblib idioms on an attached cluster.

Code written for ``concurrent.futures`` (``with Executor() as ex: ex.map(f, xs)``) or for
``joblib.Parallel`` runs on the cluster unchanged: :class:`BridgeExecutor` is an ``Executor``
whose ``map`` goes through hpcbridge's chunked map (a few well-sized tasks, not one task per
item, results in input order), and :func:`joblib_on` points joblib's ``dask`` backend at the
bridge's client.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from hpcbridge import functions

if TYPE_CHECKING:
    from hpcbridge.client.bridge import Bridge


class BridgeExecutor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` on a bridge's cluster.

    ``submit`` runs one call as one Dask task (a ``concurrent.futures.Future``); functions from
    modules the cluster lacks are shipped by value, as for ``map``. ``map`` runs
    ``fn(*args)`` for the zipped iterables through :meth:`~hpcbridge.client.bridge.Bridge.map`, so a
    million small items cost a few hundred tasks; ``chunksize`` > 1 fixes the items per task
    (default: measured). Iterating the result waits for the whole run, then yields in input
    order; a failing item raises :class:`~hpcbridge.client.runs.ItemError` (index, item, remote
    traceback) when the iteration reaches it. ``shutdown`` only stops this executor; the cluster
    and the bridge stay.
    """

    def __init__(self, bridge: Bridge, progress: bool = False) -> None:
        self.bridge = bridge
        self.progress = progress
        self._tasks = bridge.client.get_executor(pure=False)
        self._open = True

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        self._check_open()
        return self._tasks.submit(functions.resolve(fn), *args, **kwargs)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        self._check_open()
        if not iterables:
            raise TypeError("map() needs at least one iterable")
        run = self.bridge.map(fn, *iterables, chunk_size=chunksize if chunksize > 1 else None,
                              progress=self.progress)

        def results() -> Iterator[Any]:
            yield from self.bridge.gather(run, timeout=timeout, progress=self.progress)

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._open = False
        self._tasks.shutdown(wait=wait)

    def _check_open(self) -> None:
        if not self._open:
            raise RuntimeError("cannot schedule new work after shutdown()")


@contextmanager
def joblib_on(bridge: Bridge, **options: Any) -> Iterator[None]:
    """Inside the block, ``joblib.Parallel`` runs on the bridge's cluster (joblib's ``dask`` backend).

    ``options`` go to ``joblib.parallel_config`` (e.g. ``n_jobs``). joblib is not a dependency
    of hpcbridge: ``pip install joblib``.
    """
    try:
        import joblib
    except ImportError:
        raise ImportError("bridge.joblib() needs joblib: pip install joblib") from None
    with bridge.client.as_current(), joblib.parallel_config(backend="dask", **options):
        yield
