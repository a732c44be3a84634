"""Follow a job's output as it is written (``hpcbridge logs JOB --follow``), until the job ends.

Like ``tail -f``, it prints what is there and then what the job adds, reading every half second;
unlike it, it stops by itself once the batch system says the job has ended (asked every couple of
seconds), after printing the last lines. A job still queued has no output yet: it waits for it.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Iterator
from pathlib import Path

from hpcbridge.backends import BatchCommandError, JobNotFound
from hpcbridge.backends.job import SubmittedJob, recorded_notes

POLL = 0.5  # seconds between reads of the output
CHECK = 2.0  # seconds between questions to the batch system


def output_path(job: SubmittedJob) -> Path | None:
    """Where the job's output is: as its batch system says, else as its record noted (a job it forgot);
    the batch system's error when it knows nothing of the job and the record noted no output."""
    try:
        path = job.log_path()
    except (JobNotFound, BatchCommandError):
        noted = recorded_notes(job).get("log")
        if not noted:
            raise  # nothing noted either: the batch system's words say why
        return Path(str(noted))
    if path is None:
        noted = recorded_notes(job).get("log")
        path = Path(str(noted)) if noted else None
    return path


def follow_output(job: SubmittedJob, lines: int | None = None, poll: float = POLL,
                  check: float = CHECK) -> Iterator[str]:
    """The job's output as text, piece by piece as it grows, starting with its last ``lines`` lines
    (all when None); ends after the job has ended and its last output has been given."""
    path, position, first = None, 0, True
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    next_check = 0.0
    while True:
        now = time.monotonic()
        finished = False
        if now >= next_check:
            finished, next_check = job.status().finished, now + check
        if path is None or not path.exists():
            try:
                path = output_path(job)
            except (JobNotFound, BatchCommandError):
                path = None  # not known yet (or any more): the job's state decides when to stop
        if path is not None and path.exists():
            with open(path, "rb") as stream:
                stream.seek(position)
                data = stream.read()
            position += len(data)
            text = decoder.decode(data, final=finished)
            if first and lines:
                text = "".join(text.splitlines(keepends=True)[-lines:])
            first = False
            if text:
                yield text
        if finished:
            return
        time.sleep(poll)
