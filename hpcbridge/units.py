"""Memory sizes and wall times: parsing what users type, formatting what schedulers read.

Every scheduler spells these differently (Slurm wants ``4096M`` and ``1-00:00:00``, PBS wants
``4gb`` and ``24:00:00``, LSF wants kilobytes or megabytes depending on the site), so the spec keeps
one internal unit (MiB for memory, seconds for time) and the templates format it with the pure
functions below, registered as Jinja filters by :mod:`hpcbridge.render`.
"""

from __future__ import annotations

import re

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_MEMORY_FACTOR_MIB = {"k": 1 / 1024, "m": 1, "": 1, "g": 1024, "t": 1024 * 1024}

MEMORY_HELP = "a size such as 4096M, 4G, 16GiB or 512 (plain numbers are MiB, as in Slurm)"
WALLTIME_HELP = "a time such as 30 (minutes), 90m, 2h, 1d, HH:MM:SS or D-HH:MM:SS"


def parse_memory_mib(text: str) -> int:
    """Return a memory size in MiB (rounded up) from text like ``4G``, ``512M`` or ``16GiB``.

    Units are binary, as Slurm, PBS and LSF all treat them; a plain number means MiB.

    >>> parse_memory_mib("4G"), parse_memory_mib("512"), parse_memory_mib("1.5GiB")
    (4096, 512, 1536)
    >>> parse_memory_mib("2048k")
    2
    """
    match = _MEMORY.match(str(text))
    if not match:
        raise ValueError(f"not {MEMORY_HELP}")
    number, unit, _suffix = match.groups()
    mib = float(number) * _MEMORY_FACTOR_MIB[unit.lower()]
    whole = int(mib) if mib == int(mib) else int(mib) + 1
    if whole < 1:
        raise ValueError("must be at least 1 MiB")
    return whole


_CLOCK = re.compile(r"^(?:(\d+)-)?(\d+):([0-5]?\d):([0-5]?\d)$")
_UNIT_TIME = re.compile(r"^(\d+)\s*([smhd]?)$", re.IGNORECASE)
_SECONDS_PER = {"s": 1, "m": 60, "": 60, "h": 3600, "d": 86400}


def parse_walltime_seconds(text: str) -> int:
    """Return a wall time in seconds from ``HH:MM:SS``, ``D-HH:MM:SS``, ``90m``, ``2h`` or minutes.

    A bare number is minutes, as ``sbatch --time`` reads it. ``MM:SS`` is not accepted because
    Slurm and PBS read two-field times differently.

    >>> parse_walltime_seconds("01:30:00"), parse_walltime_seconds("1-00:00:00")
    (5400, 86400)
    >>> parse_walltime_seconds("45"), parse_walltime_seconds("2h")
    (2700, 7200)
    """
    text = str(text).strip()
    clock = _CLOCK.match(text)
    if clock:
        days, hours, minutes, seconds = (int(part or 0) for part in clock.groups())
        total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    else:
        unit_time = _UNIT_TIME.match(text)
        if not unit_time:
            raise ValueError(f"not {WALLTIME_HELP}")
        total = int(unit_time.group(1)) * _SECONDS_PER[unit_time.group(2).lower()]
    if total < 60:
        raise ValueError("must be at least one minute")
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


def lsf_walltime(seconds: int) -> str:
    """Format seconds for ``#BSUB -W`` as ``HH:MM``, rounding up to whole minutes.

    >>> lsf_walltime(5400), lsf_walltime(61)
    ('01:30', '00:02')
    """
    minutes = -(-int(seconds) // 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
