"""What a worker runs for a chunk (hpcbridge/cluster/chunks.py), called in this process as a worker calls it."""

from __future__ import annotations

import operator

from hpcbridge.cluster import chunks
from hpcbridge.cluster.chunks import ChunkTask, run_chunk


def test_the_count_of_executed_items_keeps_the_latest_runs_only() -> None:
    """A worker serving many maps must not grow by one entry per run (issue 24, item 10): it keeps the
    counts of the last EXECUTED_RUNS_KEPT runs, each of them right."""
    kept = chunks.EXECUTED_RUNS_KEPT
    names = [f"count-{i}" for i in range(kept + 500)]
    for name in names:
        values, errors, *_ = run_chunk(ChunkTask(name, operator.neg, [1, 2, 3], 0, False))
        assert values == [-1, -2, -3] and errors == {}
    run_chunk(ChunkTask(names[600], operator.neg, [4], 3, False))  # a run that goes on is kept as the latest
    counts = chunks.executed_items()
    assert len(counts) <= kept
    assert counts[names[-1]] == 3 and counts[names[600]] == 4
    assert names[0] not in counts
