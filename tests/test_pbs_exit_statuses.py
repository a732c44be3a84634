"""PBS Pro's negative exit statuses, as hpcbridge names them, against OpenPBS's own header.

The vendored OpenPBS source (/work/shared/vendor, see tests/cluster/pbs-cluster) holds
src/include/job.h, whose JOB_EXEC_* defines are what ``Exit_status`` means when PBS ended a job.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import pytest

from hpcbridge.backends.pbs import EXIT_STATUSES

SOURCE = Path("/work/shared/vendor/openpbs-src-cd7ab5e.tar.gz")


@pytest.mark.skipif(not SOURCE.exists(), reason="no vendored OpenPBS source on this machine")
def test_every_exit_status_is_named_as_openpbs_defines_it() -> None:
    with tarfile.open(SOURCE) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith("src/include/job.h"))
        header = archive.extractfile(member).read().decode()
    defined = {int(value): name for name, value in re.findall(r"#define (JOB_EXEC_\w+)\s+(-\d+)", header)}
    for status, (_, words) in EXIT_STATUSES.items():
        assert words.split(":")[0] == defined[status], (status, words)
