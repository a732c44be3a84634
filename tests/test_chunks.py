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


def test_a_cut_chunk_whose_result_was_lost_reads_back_what_it_saved_and_hands_on_its_rest(
        tmp_path, monkeypatch) -> None:
    """A client cut chunk 750..1124 at 763 (its rest went to new tasks); the chunk saved 750..762 and ended,
    and its worker then died holding the result, so Dask runs the task again (the scheduler's annotation
    says the result was lost: set here by hand, as only a real death sets it). The task reads back what it
    saved and hands back the rest: it computed 750..1124 again before (and a balancer cut that again,
    handing 846..1124 on a second time), the items of the rest running twice (seen in a spread map under load)."""
    from hpcbridge.cluster import attempts
    from hpcbridge.rundir import RunDirectory

    directory = RunDirectory(str(tmp_path / "run"))
    directory.create({"bounds": [(750, 1125)]})
    directory.save_chunk(750, 763, [-x for x in range(750, 763)])
    monkeypatch.setattr(attempts, "result_was_lost", lambda: True)
    called = []

    def neg(x: int) -> int:
        called.append(x)
        return -x

    values, errors, _, _, rest = run_chunk(ChunkTask("lost-cut", neg, list(range(750, 1125)), 750, False, directory))
    assert list(values) == [-x for x in range(750, 763)] and errors == {} and called == []
    assert (rest["at"], rest["stop"]) == (763, 1125) and list(rest["task"].items) == list(range(763, 1125))
