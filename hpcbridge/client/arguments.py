"""Checks of the arguments users pass to connect, map, broadcast and gather, from Python and MATLAB.

Each check runs before anything reaches the cluster and raises :class:`ArgumentError`: one line
naming the argument by its keyword, the value as given and what is allowed. MATLAB passes
counts it was typed as ``4`` as the float ``4.0``, so counts accept whole floats.
"""

from __future__ import annotations

import itertools
import math
import numbers
import os
import pickle
from collections.abc import Sequence
from typing import Any

import cloudpickle

_MAX_REPR = 80
# Items read from an iterable without a length (a generator, an iterator) before it is taken for
# endless: a list of ten million small items is about 80 MB of pointers plus the items.
MAX_UNSIZED_ITEMS = 10_000_000


class ArgumentError(TypeError, ValueError):
    """An argument that is not allowed: names it, shows the value as given and says what is allowed.

    Both a ``TypeError`` and a ``ValueError``, so code that catches either for a wrong type or
    a wrong value keeps working.
    """

    def __init__(self, argument: str, value: object, allowed: str) -> None:
        self.argument = argument
        self.value = value
        self.allowed = allowed
        super().__init__(argument, value, allowed)

    def __str__(self) -> str:
        shown = repr(self.value)
        if len(shown) > _MAX_REPR:
            shown = shown[: _MAX_REPR - 5] + " ...>"
        return f"{self.argument}: {shown} is not allowed; expected {self.allowed}"


def scheduler_file(argument: str, value: Any) -> str:
    """A scheduler file's path: non-empty text on one line, in your own home if it starts with ``~``."""
    allowed = "the path of a scheduler file (a str or os.PathLike), e.g. ~/.hpcbridge/jobs/4242/scheduler.json"
    if isinstance(value, os.PathLike):
        value_text = os.fspath(value)
    else:
        value_text = value
    if not isinstance(value_text, str) or not value_text.strip() or not value_text.isprintable():
        raise ArgumentError(argument, value, allowed)
    if value_text.startswith("~") and not value_text.startswith("~/"):
        raise ArgumentError(argument, value, "a path in your own home (~/...), not another user's")
    return value_text


def count(argument: str, value: Any, minimum: int = 0, maximum: int = 1_000_000) -> int:
    """A whole number from ``minimum`` to ``maximum``; a whole float (from MATLAB) counts."""
    allowed = f"a whole number from {minimum} to {maximum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentError(argument, value, allowed)
    if isinstance(value, numbers.Integral):
        number = int(value)
    elif math.isfinite(value) and float(value).is_integer():
        number = int(value)
    else:
        raise ArgumentError(argument, value, allowed)
    if not minimum <= number <= maximum:
        raise ArgumentError(argument, value, allowed)
    return number


def seconds(argument: str, value: Any, none: bool = False, infinite: bool = False) -> float | None:
    """A timeout in seconds, >= 0 (``None`` or ``inf`` for no limit only where the caller allows it)."""
    allowed = "a number of seconds >= 0" + (", or None for no limit" if none else "") + (
        ", or inf for no limit" if infinite else "")
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value) or value < 0:
        raise ArgumentError(argument, value, allowed)
    if math.isinf(value) and not infinite:
        raise ArgumentError(argument, value, allowed)
    return float(value)


def positive_seconds(argument: str, value: Any) -> float | None:
    """A limit in seconds: a positive, finite number, or ``None`` for no limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ArgumentError(argument, value, "a positive number of seconds, or None for no limit")
    return float(value)


def name(argument: str, value: Any, empty_is_none: bool = False) -> str | None:
    """A name for a run or a broadcast: ``None`` (one is made up) or printable text on one line."""
    allowed = "None or a name of 1 to 200 printable characters on one line"
    if value is None or (empty_is_none and value == ""):
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 200 or not value.isprintable():
        raise ArgumentError(argument, value, allowed)
    return value


def run_name(argument: str, value: Any, empty_is_none: bool = False) -> str | None:
    """A run's name: as :func:`name`, and usable as a folder's name (the run directory's), so no ``/``,
    ``.`` or ``..``."""
    checked = name(argument, value, empty_is_none)
    if checked is not None and ("/" in checked or checked.strip() in (".", "..")):
        raise ArgumentError(argument, value, "None or a run name without '/' that is not '.' or '..' (it names "
                            "the run's folder), e.g. 'spectra-2'")
    return checked


def directory(argument: str, value: Any) -> str | None:
    """None, or a folder's path: non-empty text on one line (a str or os.PathLike)."""
    if value is None:
        return None
    text = os.fspath(value) if isinstance(value, os.PathLike) else value
    if not isinstance(text, str) or not text.strip() or not text.isprintable():
        raise ArgumentError(argument, value, "None or a folder's path (a str or os.PathLike), e.g. /scratch/me/runs")
    if text.startswith("~") and not text.startswith("~/") and text != "~":
        raise ArgumentError(argument, value, "a path in your own home (~/...), not another user's")
    return text


def resources(argument: str, value: Any) -> dict[str, float] | None:
    """Dask resources a task needs, such as ``{"GPU": 1}``: names with positive amounts (None or empty: none).

    MATLAB passes a struct as a dict of floats, which is what Dask compares amounts as.
    """
    if value is None:
        return None
    allowed = 'a mapping of resource names to positive amounts, such as {"GPU": 1} (the workers\' --resources)'
    if not isinstance(value, dict):
        raise ArgumentError(argument, value, allowed)
    found: dict[str, float] = {}
    for key, amount in value.items():
        if (not isinstance(key, str) or not key.isidentifier() or isinstance(amount, bool)
                or not isinstance(amount, numbers.Real) or not math.isfinite(amount) or amount <= 0):
            raise ArgumentError(argument, value, allowed)
        found[key] = float(amount)
    return found or None


def flag(argument: str, value: Any) -> bool:
    """True or False (MATLAB's logical arrives as bool; 0 and 1 count too)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Real) and value in (0, 1):
        return bool(value)
    raise ArgumentError(argument, value, "True or False")


def function(argument: str, value: Any) -> Any:
    """A callable, or its name as text: ``"module:function"`` or ``"path/to/file.py:function"``."""
    if callable(value):
        return value
    if isinstance(value, str) and value.isprintable() and ":" in value.strip(":"):
        return value
    raise ArgumentError(argument, value, "a function, or its name as 'module:function' or 'path/to/file.py:function'")


def items(argument: str, value: Any) -> Any:
    """Something to iterate over once per item (a list, tuple, range, array or other iterable, not text)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ArgumentError(argument, value, "an iterable of items (a list, tuple, range or array), not "
                            f"{'text' if isinstance(value, (str, bytes)) else type(value).__name__}")
    return value


def bounded_items(argument: str, value: Any, limit: int | None = None) -> Sequence[Any]:
    """The items of an iterable as a sequence: a list, tuple or range as it is, anything else read into a list.

    An iterable without a length is read up to ``limit`` items (default :data:`MAX_UNSIZED_ITEMS`);
    one that gives more, or is known to have no end (``itertools.count``, ``cycle``, ``repeat``
    without a count), is refused rather than read until memory runs out.
    """
    limit = MAX_UNSIZED_ITEMS if limit is None else limit
    bounded = "a bounded iterable: a list, tuple, range or array, or itertools.islice(items, n) for the first n"
    if isinstance(value, (itertools.count, itertools.cycle)) or _endless_repeat(value):
        raise ArgumentError(argument, value, f"{bounded} (this one never ends)")
    if isinstance(value, (list, tuple, range)):
        return value
    if hasattr(value, "__len__"):
        return list(value)
    read = list(itertools.islice(value, limit + 1))
    if len(read) > limit:
        raise ArgumentError(argument, value, f"{bounded} (this one gave more than {limit:,} items without a "
                            "length; endless?)")
    return read


def _endless_repeat(value: Any) -> bool:
    if not isinstance(value, itertools.repeat):
        return False
    try:
        value.__length_hint__()
    except TypeError:  # repeat(x) without times: "len() of unsized object"
        return True
    return False


def picklable(argument: str, value: Any, given: Any = None) -> None:
    """Refuse what cannot travel to the workers: what neither pickle nor cloudpickle can serialise.

    ``given``: the value as the user gave it, when ``value`` wraps it (a function shipped by value).
    Arrays are not copied to find out (their buffers are only looked at, as distributed sends them).
    """
    error = _pickle_error(value)
    if error is not None:
        raise ArgumentError(argument, value if given is None else given, "a value that can be pickled, to be "
                            f"sent to the workers (this one cannot: {error})")


def picklable_items(argument: str, items: Sequence[Any]) -> None:
    """:func:`picklable` for every item; names the first item that cannot travel, as ``items[i]``.

    All the items are pickled at once first (a list of ints in milliseconds, array buffers only looked
    at); one by one only when that fails.
    """
    if _pickle_error(items) is None:
        return
    for index, item in enumerate(items):
        error = _pickle_error(item)
        if error is not None:
            raise ArgumentError(f"{argument}[{index}]", item, "a value that can be pickled, to be sent to the "
                                f"workers (this one cannot: {error})")
    # Every item travels alone: the container does not (a list subclass with an attribute that cannot be
    # pickled), but chunks are its slices, plain lists.


def _pickle_error(value: Any) -> str | None:
    """Why ``value`` cannot be pickled (as distributed tries: pickle, then cloudpickle), or None."""
    failure: Exception | None = None
    for dumps in (pickle.dumps, cloudpickle.dumps):
        try:
            dumps(value, protocol=5, buffer_callback=_drop)
            return None
        except Exception as error:  # noqa: BLE001 -- whatever it is, it is the reason
            failure = error
    return f"{type(failure).__name__}: {failure}"


def _drop(buffer: pickle.PickleBuffer) -> bool:
    return False  # looked at, not copied: an array's data goes out of band
