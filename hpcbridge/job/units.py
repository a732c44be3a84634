"""Memory sizes and wall times: parsing what users type, formatting what schedulers read.

Every scheduler spells these differently (Slurm wants ``4096M`` and ``1-00:00:00``, PBS wants
``4gb`` and ``24:00:00``, LSF wants kilobytes or megabytes depending on the site), so the spec keeps
one internal unit (MiB for memory, seconds for time) and the templates format it with the pure
functions below, registered as Jinja filters by :mod:`hpcbridge.job.render`.
"""

from __future__ import annotations

import re

_MEMORY = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(i?b?)", re.IGNORECASE)
_MEMORY_FACTOR_MIB = {"k": 1 / 1024, "m": 1, "": 1, "g": 1024, "t": 1024 * 1024}
MAX_MEMORY_MIB = 1024 * 1024 * 1024  # 1 PiB: more than any node or CPU has
MAX_WALLTIME_SECONDS = 365 * 86400

MEMORY_HELP = "a size such as 4096M, 4G, 16GiB or 512 (plain numbers are MiB, as in Slurm), from 1M to 1024T"
WALLTIME_HELP = ("a time such as 30 (minutes), 25:00 (MM:SS), 02:00:00, 1-12:00:00 (D-HH:MM:SS), 1-12 (D-HH), "
                 "90m, 2h, 2h30m or 1d, from 1 minute to 365 days")
DURATION_HELP = "a duration such as 30s, 300 (seconds), 5m, 1h30m or 00:05:00"


def parse_memory_mib(text: str) -> int:
    """Return a memory size in MiB (rounded up) from text like ``4G``, ``512M`` or ``16GiB``.

    Units are binary, as Slurm, PBS and LSF all treat them; a plain number means MiB. Only ASCII
    digits count (``int()`` would also read other scripts' digits, which no scheduler does).

    >>> parse_memory_mib("4G"), parse_memory_mib("512"), parse_memory_mib("1.5GiB")
    (4096, 512, 1536)
    >>> parse_memory_mib("2048k")
    2
    """
    match = _MEMORY.fullmatch(str(text).strip())
    if not match:
        raise ValueError(f"not {MEMORY_HELP}")
    number, unit, _suffix = match.groups()
    if len(number) > 20:
        raise ValueError(f"more than {MAX_MEMORY_MIB} MiB")
    mib = float(number) * _MEMORY_FACTOR_MIB[unit.lower()]
    whole = int(mib) if mib == int(mib) else int(mib) + 1
    if whole < 1:
        raise ValueError("must be at least 1 MiB")
    if whole > MAX_MEMORY_MIB:
        raise ValueError(f"more than {MAX_MEMORY_MIB} MiB")
    return whole


# Slurm's forms (sbatch --time): minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
_CLOCK = re.compile(r"(?:([0-9]{1,3})-)?([0-9]{1,7})(?::([0-5]?[0-9]))?(?::([0-5]?[0-9]))?")
# Units in descending order, each at most once: 1d12h, 2h30m, 90m, 45s.
_UNITS = re.compile(r"(?:([0-9]{1,7})\s*d)?\s*(?:([0-9]{1,7})\s*h)?\s*(?:([0-9]{1,7})\s*m)?\s*(?:([0-9]{1,7})\s*s)?",
                    re.IGNORECASE)


def _clock_seconds(text: str, bare_seconds: int) -> int | None:
    """Seconds from Slurm's clock forms, or None; a bare number counts ``bare_seconds`` each."""
    match = _CLOCK.fullmatch(text)
    if not match:
        return None
    days, first, second, third = match.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        if int(first) > 23:
            return None
        hours, minutes, seconds = int(first), int(second or 0), int(third or 0)
        return ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds
    if third is not None:  # HH:MM:SS
        return (int(first) * 60 + int(second)) * 60 + int(third)
    if second is not None:  # MM:SS, as Slurm and PBS both read two fields
        return int(first) * 60 + int(second)
    return int(first) * bare_seconds


def _unit_seconds(text: str) -> int | None:
    match = _UNITS.fullmatch(text)
    if not match or not any(match.groups()):
        return None
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def parse_walltime_seconds(text: str) -> int:
    """Return a wall time in seconds from the forms ``sbatch --time`` reads, or ``2h30m``-style units.

    A bare number is minutes and ``MM:SS`` is minutes and seconds, as Slurm reads them (PBS reads
    ``MM:SS`` the same way). The result is from one minute to 365 days.

    >>> parse_walltime_seconds("01:30:00"), parse_walltime_seconds("1-00:00:00"), parse_walltime_seconds("1-12")
    (5400, 86400, 129600)
    >>> parse_walltime_seconds("45"), parse_walltime_seconds("25:00"), parse_walltime_seconds("2h30m")
    (2700, 1500, 9000)
    """
    text = str(text).strip()
    total = _clock_seconds(text, bare_seconds=60)
    if total is None:
        total = _unit_seconds(text)
    if total is None:
        raise ValueError(f"not {WALLTIME_HELP}")
    if total < 60:
        raise ValueError("must be at least one minute")
    if total > MAX_WALLTIME_SECONDS:
        raise ValueError("must be at most 365 days")
    return total


def parse_duration_seconds(text: str) -> int:
    """Return a duration in seconds: ``30s``, ``5m``, ``1h30m``, ``00:05:00``, or a bare number of seconds.

    For spans the job measures itself (such as the lifetime margin), where seconds are the
    natural unit; wall times use :func:`parse_walltime_seconds`, where a bare number is minutes.

    >>> parse_duration_seconds("30s"), parse_duration_seconds("300"), parse_duration_seconds("5m")
    (30, 300, 300)
    """
    text = str(text).strip()
    total = _clock_seconds(text, bare_seconds=1)
    if total is None:
        total = _unit_seconds(text)
    if total is None or total > MAX_WALLTIME_SECONDS:
        raise ValueError(f"not {DURATION_HELP}")
    return total


def slurm_memory(mib: int) -> str:
    """Format MiB for ``#SBATCH --mem``/``--mem-per-cpu`` (Slurm's M is MiB).

    >>> slurm_memory(4096)
    '4096M'
    """
    return f"{mib}M"


def slurm_walltime(seconds: int) -> str:
    """Format seconds for ``#SBATCH --time`` as ``HH:MM:SS`` or ``D-HH:MM:SS``.

    >>> slurm_walltime(5400), slurm_walltime(90061)
    ('01:30:00', '1-01:01:01')
    """
    days, rest = divmod(int(seconds), 86400)
    clock = clock_walltime(rest)
    return f"{days}-{clock}" if days else clock


def clock_walltime(seconds: int) -> str:
    """Format seconds as ``HH:MM:SS`` with as many hours as needed (PBS and worker lifetimes).

    >>> clock_walltime(90061)
    '25:01:01'
    """
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def pbs_memory(mib: int) -> str:
    """Format MiB for ``#PBS -l mem=`` (PBS's mb is MiB).

    >>> pbs_memory(4096)
    '4096mb'
    """
    return f"{mib}mb"


def lsf_memory(mib: int) -> str:
    """Format MiB for ``#BSUB -M`` and ``rusage[mem=...]`` with an explicit unit (LSF 10.1.0.2+).

    Without a unit LSF reads the number in ``LSF_UNIT_FOR_LIMITS`` (KB unless the site changed
    it), so the unit is always written.

    >>> lsf_memory(2048)
    '2048MB'
    """
    return f"{mib}MB"


def sge_memory(mib: int) -> str:
    """Format MiB for a Grid Engine memory request (``-l mem_free=``): its ``M`` is MiB (``m`` would be 10^6 bytes).

    >>> sge_memory(2048)
    '2048M'
    """
    return f"{mib}M"


def lsf_walltime(seconds: int) -> str:
    """Format seconds for ``#BSUB -W`` as ``HH:MM``, rounding up to whole minutes.

    >>> lsf_walltime(5400), lsf_walltime(61)
    ('01:30', '00:02')
    """
    minutes = -(-int(seconds) // 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
