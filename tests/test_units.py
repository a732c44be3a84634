"""Memory and wall-time parsing and each scheduler's formatting."""

from __future__ import annotations

import pytest

from hpcbridge.job import units


@pytest.mark.parametrize(
    ("text", "mib"), [("1", 1), ("512M", 512), ("512MB", 512), ("4g", 4096), ("4 GiB", 4096), ("1T", 1048576),
                      ("0.5G", 512), ("1536K", 2)]
)
def test_memory(text: str, mib: int) -> None:
    assert units.parse_memory_mib(text) == mib


@pytest.mark.parametrize("text", ["", "G", "4X", "-1G", "0", "4 G B"])
def test_bad_memory(text: str) -> None:
    with pytest.raises(ValueError):
        units.parse_memory_mib(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1", 60), ("90m", 5400), ("2h", 7200), ("1d", 86400), ("00:05:00", 300), ("100:00:00", 360000),
     ("2-12:00:00", 216000), ("25:00", 1500), ("1:30", 90), ("2h30m", 9000), ("1d12h", 129600), ("2H 30M", 9000),
     ("1-2", 93600), ("1-02:30", 95400), ("90s", 90)],
)
def test_walltime(text: str, seconds: int) -> None:
    assert units.parse_walltime_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "10:60", "1:60:00", "0", "59s", "1.5h", "1-24", "1-2-3", "30m2h", "366d",
                                  "١٠"])
def test_bad_walltime(text: str) -> None:
    with pytest.raises(ValueError):
        units.parse_walltime_seconds(text)


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("300", 300), ("5m", 300), ("1h30m", 5400),
                                               ("00:05:00", 300), ("2:30", 150)])
def test_durations_count_bare_numbers_as_seconds(text: str, seconds: int) -> None:
    assert units.parse_duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["9" * 400 + "G", "2000T", "1e3M"])
def test_huge_or_odd_memory_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        units.parse_memory_mib(text)


def test_slurm_formats_round_trip() -> None:
    for seconds in (60, 3599, 86400, 90061, 40 * 86400):
        assert units.parse_walltime_seconds(units.slurm_walltime(seconds)) == seconds
    assert units.parse_memory_mib(units.slurm_memory(1234)) == 1234
