"""The test harness's saved cluster plan is read by the namespace's init while `up` saves it again."""

from __future__ import annotations

import sys
import threading
import time
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
from pathlib import Path

HARNESS = Path(__file__).resolve().parent / "cluster" / "slurm-cluster"


def harness_module():
    loader = SourceFileLoader("slurm_cluster_harness", str(HARNESS))
    module = module_from_spec(spec_from_loader(loader.name, loader))
    sys.modules[loader.name] = module  # its dataclasses look their module up
    loader.exec_module(module)
    return module


def test_a_plan_read_while_it_is_saved_again_is_never_missing(tmp_path: Path) -> None:
    """A plain rewrite let a reader see an empty file: `up` failed with "no plan in DIR"."""
    harness = harness_module()
    plan = harness.Plan(dir=tmp_path)
    plan.run.mkdir(parents=True)
    plan.save()
    stop = time.monotonic() + 1.5
    saves = 0

    def save_again() -> None:
        nonlocal saves
        while time.monotonic() < stop:
            plan.save()
            saves += 1

    saver = threading.Thread(target=save_again)
    saver.start()
    reads = missing = 0
    while time.monotonic() < stop:
        reads += 1
        missing += harness.Plan.load(tmp_path) is None
    saver.join()
    assert saves > 100 and reads > 100
    assert missing == 0, f"{missing} of {reads} reads found no plan while it was saved {saves} times"
