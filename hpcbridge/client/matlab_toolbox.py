"""Where hpcbridge's MATLAB toolbox (``+hpcbridge``, its examples) is, for MATLAB's ``addpath``.

The wheel carries it inside the package (``hpcbridge/matlab``), so an install without the
repository has it too; in a clone it is the repository's ``matlab/`` folder.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def toolbox_folder() -> Path:
    """The folder that holds the ``+hpcbridge`` package: inside the installed package, or ``matlab/`` in a clone.

    Raises FileNotFoundError (naming both places) when neither holds it.
    """
    installed = Path(str(resources.files("hpcbridge"))) / "matlab"
    clone = Path(__file__).resolve().parents[2] / "matlab"
    for folder in (installed, clone):
        if (folder / "+hpcbridge").is_dir():
            return folder
    raise FileNotFoundError(f"hpcbridge's MATLAB toolbox is neither in {installed} nor in {clone}: "
                            "reinstall hpcbridge from its wheel")
