"""Say which module the cluster lacks when a task cannot be unpacked there, and what to do about it.

A function shipped to the cluster may need a module that exists only on the user's machine (a
local module it imports, or a package installed only in the client's Python). Dask then reports
"Error during deserialization of the task graph" from the scheduler, which unpacks every task
graph first, with the ``ModuleNotFoundError`` only in the exception's chain; a worker that lacks
the module raises it when it unpacks the task. :func:`module_missing` turns either into one
:class:`ModuleMissing` that names the module, where it is missing, and the two ways out.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hpcbridge.client.losses import RunError

_SCHEDULER_SIGNATURE = "deserialization of the task graph"


class ModuleMissing(RunError):
    """A module the mapped function needs cannot be imported on the cluster (its scheduler or a worker)."""

    def __init__(self, message: str, module: str, where: str) -> None:
        super().__init__(message)
        self.module, self.where = module, where


def missing_name(error: BaseException) -> str | None:
    """The module a ``ModuleNotFoundError`` in ``error``'s chain (cause or context) could not import."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ModuleNotFoundError):
            return current.name or str(current)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def module_missing(error: BaseException, what: str, scheduler: str, worker: str | None) -> ModuleMissing | None:
    """A :class:`ModuleMissing` for ``error`` (which failed ``what``, e.g. "items 0..9 of run 'r'"), or None.

    ``scheduler`` is the scheduler's address; ``worker`` the worker where the task failed, if known.
    """
    module = missing_name(error)
    if module is None:
        return None
    if _SCHEDULER_SIGNATURE in str(error):
        where = f"the scheduler at {scheduler}"
    else:
        where = f"worker {worker}" if worker else "a worker"
    top = module.split(".")[0]
    ship = ""
    local = _local_file(top)
    if local is not None:
        ship = f", or ship it from here: bridge.client.upload_file({str(local)!r}) before the map"
    message = (f"{what} could not start: module {module!r} is not installed on the cluster ({where} cannot "
               f"import it; the function needs it). Install {top!r} in the Python the job runs "
               f"(--python){ship}")
    return ModuleMissing(message, module, where)


def _local_file(name: str) -> Path | None:
    """The one ``.py`` file module ``name`` is, when this process has it and it is not an installed package."""
    import sysconfig

    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    if not path or not path.endswith(".py") or Path(path).name == "__init__.py":
        return None
    installed = {sysconfig.get_paths()[key] for key in ("purelib", "platlib", "stdlib")}
    if any(Path(path).is_relative_to(root) for root in installed):
        return None
    return Path(path).resolve()
