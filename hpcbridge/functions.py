"""Name a Python function as text ("module:function" or "path/to/file.py:function") and ship it.

MATLAB users cannot hand Python a function object they defined in Python, and a function from a
module that exists only on the user's machine cannot be unpickled by name on the workers, nor on
the scheduler, which also unpickles task graphs. Functions from such modules are therefore
pickled *by value* (cloudpickle copies their code); functions from installed packages (NumPy,
SciPy, the standard library, anything under site-packages) are pickled by name as usual, because
the cluster's environment has them.

What by-value pickling cannot ship: other local modules that the user's module imports. Those
must be installed on the cluster, or be in the same file.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import itertools
import marshal
import os
import sys
import sysconfig
import types
from collections import ChainMap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle


class ShippedFunction:
    """A function that travels as cloudpickle bytes, so by-value pickling applies wherever it is nested.

    distributed pickles a task with the standard pickle first and asks cloudpickle only when the
    *outermost* object's module is registered for by-value pickling; a function nested in a task
    (or in hpcbridge's chunk object) would go by reference and fail to unpickle on the scheduler
    ("Error during deserialization of the task graph"). Each process unpickles a given function
    once and keeps it.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self._payload: bytes | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        if self._payload is None:
            self._payload = dumps_keeping_files(self.fn)
        return _unship, (self._payload,)

    def __repr__(self) -> str:
        return f"<shipped {self.__qualname__}>"


def _code_from_marshal(data: bytes) -> types.CodeType:
    return marshal.loads(data)


def _reduce_code(code: types.CodeType) -> tuple[Any, tuple[bytes]]:
    """A code object as ``marshal`` writes it (as a .pyc holds it): its file name and lines kept."""
    return _code_from_marshal, (marshal.dumps(code),)


class _KeepingFilesPickler(cloudpickle.Pickler):
    """cloudpickle, except that a function's code keeps the name of the file it was written in.

    cloudpickle 3 names every code it copies ``<dynamic-code>`` (for payloads that do not depend
    on where a function was defined), so a traceback from the cluster said ``File
    "<dynamic-code>", line 3, in bad`` instead of the user's file. The workers run the same
    Python as the client (a code object is tied to its Python version either way).
    """

    dispatch_table = ChainMap({types.CodeType: _reduce_code}, cloudpickle.Pickler.dispatch_table)


def dumps_keeping_files(fn: Any) -> bytes:
    """``cloudpickle.dumps(fn)``, its code still naming the user's file and lines for tracebacks."""
    buffer = io.BytesIO()
    _KeepingFilesPickler(buffer, protocol=cloudpickle.DEFAULT_PROTOCOL).dump(fn)
    return buffer.getvalue()


class SpreadItems:
    """``fn(*item, *extra)``: each item is a tuple of zipped values spread over ``fn``'s first parameters.

    What ``bridge.map(fn, a, b)`` runs per item, as ``client.map(fn, a, b)`` and
    ``Executor.map`` do: ``fn(a[i], b[i])``.
    """

    def __init__(self, fn: ShippedFunction) -> None:
        self.fn = fn
        self.__name__ = fn.__name__
        self.__qualname__ = fn.__qualname__

    def __call__(self, item: tuple[Any, ...], *extra: Any) -> Any:
        return self.fn(*item, *extra)

    def __repr__(self) -> str:
        return f"<{self.__qualname__} over zipped items>"


def per_item_calls(fn: Any, items: Any, extra: Sequence[Any]) -> Iterator[Any]:
    """``fn(item, *extra)`` for each item, as an iterator whose loop runs in C (``map``/``starmap``).

    The wrappers above cost a Python frame per call (about 0.15 us, more than ``x + 1`` itself),
    so the function they wrap is called directly; zipped items without extra arguments go through
    ``itertools.starmap``.
    """
    repeats = [itertools.repeat(arg) for arg in extra]
    if isinstance(fn, SpreadItems):
        inner = fn.fn.fn if isinstance(fn.fn, ShippedFunction) else fn.fn
        if not extra:
            return itertools.starmap(inner, items)
        return map(fn, items, *repeats)
    if isinstance(fn, ShippedFunction):
        fn = fn.fn
    return map(fn, items, *repeats)


class Unimportable:
    """Stands in, on a worker, for a shipped function that needs a module the worker lacks.

    Unpickling such a function raises ``ModuleNotFoundError`` while the worker reads its
    messages from the scheduler, and the worker process dies of it (distributed 2026.8), taking
    every task on it along. This stand-in lets the task arrive and fail instead, with the error,
    so the client can say which module is missing on which worker.
    """

    def __init__(self, error: ModuleNotFoundError) -> None:
        self.error = error
        self.__name__ = self.__qualname__ = "unimportable"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise ModuleNotFoundError(str(self.error), name=self.error.name)


def unimportable(fn: Any) -> ModuleNotFoundError | None:
    """The import error of ``fn`` when it is (or wraps) an :class:`Unimportable`, else None."""
    for _ in range(4):
        if isinstance(fn, Unimportable):
            return ModuleNotFoundError(str(fn.error), name=fn.error.name)
        fn = getattr(fn, "fn", None)
    return None


def _on_a_worker_only() -> bool:
    """True in a worker process that runs no scheduler (a scheduler must refuse the task itself)."""
    worker, scheduler = sys.modules.get("distributed.worker"), sys.modules.get("distributed.scheduler")
    return bool(worker and worker.Worker._instances) and not (scheduler and scheduler.Scheduler._instances)


_UNSHIPPED: dict[bytes, ShippedFunction] = {}


def _unship(payload: bytes) -> ShippedFunction:
    shipped = _UNSHIPPED.get(payload)
    if shipped is None:
        try:
            fn = cloudpickle.loads(payload)
        except ModuleNotFoundError as error:
            if not _on_a_worker_only():
                raise
            return ShippedFunction(Unimportable(error))
        if len(_UNSHIPPED) > 64:
            _UNSHIPPED.clear()
        shipped = _UNSHIPPED[payload] = ShippedFunction(fn)
        shipped._payload = payload
    return shipped


class FunctionSpecError(ValueError):
    """A function named as text could not be found; says what was looked for and where."""


def resolve(spec: str | Callable[..., Any]) -> ShippedFunction:
    """The function ``spec`` names, made ready to run on the cluster (see :class:`ShippedFunction`).

    ``spec`` is a callable (returned as is, after registering its module for by-value pickling
    when that module is local), ``"package.module:function"``, or ``"path/to/file.py:function"``
    (``~`` is expanded; relative paths are relative to the current folder).

    >>> resolve("operator:neg")(3)
    -3
    """
    if isinstance(spec, ShippedFunction):
        return spec
    if callable(spec):
        module = sys.modules.get(getattr(spec, "__module__", "") or "")
        if module is not None:
            _ship_if_local(module)
        return ShippedFunction(spec)
    if not isinstance(spec, str) or ":" not in spec.rstrip(":"):
        raise FunctionSpecError(
            f"a function is named 'module:function' or 'path/to/file.py:function', not {spec!r}")
    target, _, attribute = spec.rpartition(":")
    if target.endswith(".py") or os.sep in target or "/" in target:
        module = _load_file(Path(target).expanduser())
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as error:
            raise FunctionSpecError(f"cannot import module {target!r} for {spec!r}: {error}") from None
        _ship_if_local(module)
    function = module
    for part in attribute.split("."):
        try:
            function = getattr(function, part)
        except AttributeError:
            raise FunctionSpecError(f"{target!r} has no attribute {attribute!r}") from None
    if not callable(function):
        raise FunctionSpecError(f"{spec!r} is a {type(function).__name__}, not a function")
    return ShippedFunction(function)


def _load_file(path: Path) -> ModuleType:
    """Import a .py file under a name made from its path and contents; a changed file reloads."""
    path = path.resolve()
    try:
        source = path.read_bytes()
    except OSError as error:
        raise FunctionSpecError(f"cannot read {path}: {error.strerror}") from None
    digest = hashlib.sha1(str(path).encode() + b"\0" + source).hexdigest()[:12]
    name = f"hpcbridge_user_{path.stem}_{digest}"
    if name not in sys.modules:
        module_spec = importlib.util.spec_from_file_location(name, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        cloudpickle.register_pickle_by_value(module)
    return sys.modules[name]


def _installed_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    return tuple(str(Path(root).resolve()) + os.sep for root in roots)


def _ship_if_local(module: ModuleType) -> None:
    """Pickle ``module``'s functions by value unless the cluster can import it by name."""
    if module.__name__ in ("__main__", "builtins", "hpcbridge") or module.__name__.startswith(
            ("hpcbridge.", "hpcbridge_user_")):
        return  # __main__ is by value already; hpcbridge is installed wherever Dask runs
    file = getattr(module, "__file__", None)
    if file is None:
        return  # built-in or namespace module: importable wherever Python is
    if str(Path(file).resolve()).startswith(_installed_roots()):
        return
    if module.__name__ not in cloudpickle.list_registry_pickle_by_value():
        cloudpickle.register_pickle_by_value(module)
