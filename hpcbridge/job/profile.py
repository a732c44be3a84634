"""Where a site-profile setting came from: which YAML file, or which environment variable.

Dask merges its config files and ``DASK_*`` variables into one mapping and forgets the
sources. An error about a profile value is only useful if it says where to fix it, so this
module looks the key up again in the same places, in the order Dask reads them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping


def _canonical(key: str) -> str:
    """Dask treats ``-`` and ``_`` alike and keys case-insensitively in variables."""
    return key.lower().replace("-", "_")


def source_of(key: str) -> str | None:
    """The file or environment variable that sets the dotted config ``key``, or None if none does.

    Environment variables win over files (as in Dask), and a later file over an earlier one.
    """
    import dask.config

    wanted = [_canonical(part) for part in key.split(".")]
    for name in os.environ:
        if name.startswith("DASK_") and [_canonical(p) for p in name[5:].split("__")] == wanted:
            return f"the environment variable {name}"
    found = None
    for path, values in dask.config.collect_yaml(dask.config.paths, return_paths=True):
        node: object = values
        for part in wanted:
            if not isinstance(node, Mapping):
                break
            node = next((v for k, v in node.items() if _canonical(str(k)) == part), _MISSING)
            if node is _MISSING:
                break
        else:
            found = str(path)
    return found


def describe(key: str) -> str:
    """``key`` and its source, as an error message names a profile setting."""
    source = source_of(key)
    if source is None:
        return f"{key} in Dask's config"
    if source.startswith("the environment variable"):
        return f"{key} (from {source})"
    return f"{key} in {source}"


_MISSING = object()
