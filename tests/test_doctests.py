"""The examples in docstrings (units, quoting, batch-system output parsing) are run as tests."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["hpcbridge.job.units", "hpcbridge.job.render", "hpcbridge.backends.slurm", "hpcbridge.backends.pbs",
           "hpcbridge.backends.lsf", "hpcbridge.backends.sge", "hpcbridge.workloads.primes", "hpcbridge.client.tail",
           "hpcbridge.cluster.broadcasts", "hpcbridge.rundir", "hpcbridge.client.planning"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    results = doctest.testmod(importlib.import_module(name))
    assert results.attempted > 0 and results.failed == 0
