"""Progress of a run: a widget bar in Jupyter, a tqdm bar on a terminal, one line per 10 % otherwise.

A bar redrawn with carriage returns turns a batch job's log or a notebook's captured output into
one very long line, so off a terminal the progress is written as whole lines, at most eleven per
run (0 %, 10 %, ... 100 %), in tqdm's own wording of the elapsed time. In a Jupyter kernel with
ipywidgets, tqdm's notebook front end (``tqdm.auto``) draws a bar that updates in place.
"""

from __future__ import annotations

import sys
import time
import warnings
from typing import IO, Any

from tqdm import tqdm


class Progress:
    """Progress of ``total`` items labelled ``label``; call :meth:`update` with the items done."""

    def __init__(self, label: str, total: int, stream: IO[str] | None = None, unit: str = "items") -> None:
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self.shown = -1
        notebook = notebook_bar() if stream is None else None
        if notebook is not None:
            self.bar: Any = notebook(total=total, desc=label, unit=f" {unit}", leave=True)
        elif self.tty:
            self.bar = tqdm(total=total, desc=label, unit=f" {unit}", file=self.stream, dynamic_ncols=True, leave=True)
        else:
            self.bar = None

    def update(self, done: int) -> None:
        """Show that ``done`` of the items are finished (a count, not an increment)."""
        if self.bar is not None:
            self.bar.update(max(0, done - self.bar.n))
            return
        percent = 100 if self.total == 0 else int(100 * done / self.total)
        if self.shown < 0 or percent // 10 > self.shown // 10:
            elapsed = time.monotonic() - self.started
            self.stream.write(f"{self.label}: {percent}% ({done}/{self.total} {self.unit}, {elapsed:.1f} s)\n")
            self.stream.flush()
            self.shown = percent

    def finish(self) -> None:
        """Show 100 % (once) and end the bar's line."""
        if self.bar is not None:
            self.bar.update(max(0, self.total - self.bar.n))
            self.bar.close()
        elif self.shown < 100:
            self.update(self.total)


def notebook_bar() -> type[tqdm] | None:
    """tqdm's notebook bar when this process is a Jupyter kernel that can show widgets, else None.

    ``tqdm.auto`` chooses it in a kernel with ipywidgets; without ipywidgets it falls back to the
    text bar (with a warning, silenced here), and the lines are written instead.
    """
    if "ipykernel" not in sys.modules:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm as chosen
        from tqdm.notebook import tqdm as in_notebook
    return chosen if issubclass(chosen, in_notebook) else None
