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


def test_a_retry_is_not_cut_while_it_has_items_its_spread_chunk_computed_or_suspects_to_run(tmp_path) -> None:
    """A client's balancer cuts a chunk's attempt and hands its rest to new tasks. Those do not have the runs
    of items a spread chunk's threads computed before its process ended (they computed them again: 126
    items twice in a map), nor the death's suspects (they ran them as first attempts, where a killer is
    not named): such a retry keeps its rest."""
    from hpcbridge.cluster import attempts

    task = ChunkTask("uncut", operator.neg, list(range(100)), 0, False)
    for known, apart in (({50: ([-50], {})}, False), ({}, True), ({}, False)):
        attempt = attempts.begin(attempts.Attempt("uncut-0", "uncut", 0, task.items, (), task=task, exact=True))
        try:
            attempt.known, attempt.apart = known, apart
            list(attempt.tracked(0, 10))  # ten items taken
            rest = attempts.cut("uncut-0")
            assert (rest is None) == bool(known or apart), (known, apart, rest)
        finally:
            attempts.end(attempt)


def test_a_dying_process_keeps_every_attempt_even_when_one_fails_to_keep(tmp_path) -> None:
    """As a worker process ends (os._exit, SIGTERM), keep_all keeps what each running attempt computed. One
    whose slot is closed under it (it ended meanwhile) failed, and the attempts after it were not kept: every
    chunk running in that process was computed again (hundreds of items twice in a map of 16-thread workers)."""
    from hpcbridge.cluster import attempts
    from hpcbridge.rundir import RunDirectory

    directory = RunDirectory(str(tmp_path / "run"))
    directory.create({"bounds": [(0, 10), (10, 20)]})
    ending, kept = [attempts.begin(attempts.Attempt(f"keep-{start}", "keep", start, list(range(start, start + 10)),
                                                    directory=directory)) for start in (0, 10)]
    try:
        kept.values.extend([-x for x in range(10, 14)])
        ending.map.close()  # as Attempt.close does when its chunk ends
        attempts.keep_all()
        assert directory.kept("kept", 10, 20, "keep-10")[0] == [-10, -11, -12, -13]
    finally:
        attempts._ENDING.clear()  # this process goes on
        ending.map = None
        for attempt in (ending, kept):
            attempts.end(attempt)


def test_a_retry_that_takes_most_items_from_what_was_kept_reports_the_seconds_of_all_at_the_rate_of_those_it_ran(
        tmp_path, monkeypatch) -> None:
    """The client's planner divides a chunk's seconds by its items. A retry whose dead process had kept 90 of its
    100 items (here by hand: its worker died, the scheduler's annotation says, and the nanny cannot be asked)
    runs 10 of 10 ms: it reported 0.1 s for 100 items (1 ms each), and the function's next map was planned
    for items ten times too short."""
    import time

    from hpcbridge.cluster import attempts
    from hpcbridge.rundir import RunDirectory

    directory = RunDirectory(str(tmp_path / "run"))
    directory.create({"bounds": [(0, 100)]})
    directory.keep("kept", 0, 100, "rate-0", ([-x for x in range(90)], {}))
    monkeypatch.setattr(attempts, "previous_deaths", lambda: [{"worker": "tls://gone:1", "pid": 1}])
    monkeypatch.setattr(attempts, "current_key", lambda: "rate-0")
    called = []

    def slow_neg(x: int) -> int:
        called.append(x)
        time.sleep(0.01)
        return -x

    values, errors, seconds, _, rest = run_chunk(ChunkTask("rate", slow_neg, list(range(100)), 0, False, directory))
    assert list(values.values()) == [-x for x in range(100)] and errors == {} and rest is None  # saved: pickled once
    assert called == list(range(90, 100))
    assert seconds >= 100 * 0.01  # at least what 100 items of 10 ms take: it was 0.1 s
