"""What a job asks of the batch system beyond nodes, memory and time: qos, node features, a
reservation, whole nodes, GPUs, and directive lines hpcbridge has no option for.

The checks here know each batch system's syntax: which values it can express (PBS and LSF pick
nodes by features ANDed together; PBS Pro and LSF have no QOS), and which of a directive's
options set something an hpcbridge option sets, so that a directive never quietly overrides
(or is overridden by) an option. They raise :class:`ValueError` whose text says what is allowed;
:mod:`hpcbridge.job.spec` turns it into a :class:`~hpcbridge.job.spec.SpecError` naming the field.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

BATCH_SCHEDULERS = ("slurm", "pbs", "lsf", "sge")
# The options of this module, as spec fields; local and ssh have no batch system to ask.
REQUEST_FIELDS = ("qos", "constraint", "reservation", "exclusive", "gpus_per_task", "gpus_per_node", "directives")
# What Grid Engine has no request of its own for: node features, whole hosts and GPUs are complexes
# each site defines (`-l NAME=VALUE` in a directive), and it has no QOS.
SGE_WITHOUT = ("qos", "constraint", "exclusive", "gpus_per_task", "gpus_per_node")

# A word of a directive that the batch systems read the same way bare: anything else is
# written in double quotes, which sbatch, qsub and bsub all strip (sbatch ignores single quotes).
_BARE_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]+", re.ASCII)
_FEATURE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", re.ASCII)
# Slurm's --constraint: features with & (and), | (or), [..|..] (one of, for all nodes), (..), *N (count).
_SLURM_CONSTRAINT = re.compile(r"[A-Za-z0-9_.:+&|\[\]()*-]{1,1024}", re.ASCII)

DIRECTIVE_HELP = ("one directive line without its prefix (#SBATCH, #PBS, #BSUB, #$), such as '--licenses=fluent:2' or "
                  "'-l software=abaqus'; no quotes, backslashes, $ or ` inside its words; nothing hpcbridge sets "
                  "(use the option instead)")


def directive_words(line: str) -> list[str]:
    """The words of a directive line, as the shell would split it (quotes group words).

    >>> directive_words('-R "select[ssd && avx2]"')
    ['-R', 'select[ssd && avx2]']
    """
    return shlex.split(line)


def check_directive(value: object) -> str:
    """A directive line as the user wrote it, checked: one line, no prefix, words the batch systems read alike."""
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise ValueError(DIRECTIVE_HELP)
    line = value.strip()
    if line.startswith("#"):
        raise ValueError("the directive without its prefix: '--qos=long', not '#SBATCH --qos=long' "
                         "(hpcbridge writes the prefix of the job's batch system)")
    try:
        words = directive_words(line)
    except ValueError as error:
        raise ValueError(f"{DIRECTIVE_HELP} ({error})") from None
    if not words or any(not word or set(word) & set("\"'\\$`") for word in words):
        raise ValueError(DIRECTIVE_HELP)
    if not words[0].startswith("-"):
        raise ValueError(DIRECTIVE_HELP + "; it starts with an option (-x or --name)")
    return line


def directive_text(line: str) -> str:
    """A checked directive line as the script writes it: bare words as they are, others in double quotes.

    >>> directive_text("--constraint 'ssd&avx2'")
    '--constraint "ssd&avx2"'
    """
    return " ".join(word if _BARE_WORD.fullmatch(word) else f'"{word}"' for word in directive_words(line))


def check_constraint(scheduler: str, value: str) -> str:
    """Node features: Slurm's --constraint syntax on Slurm; names joined by & on PBS and LSF."""
    if scheduler in ("pbs", "lsf"):
        if all(_FEATURE.fullmatch(name) for name in value.split("&")):
            return value
        raise ValueError(f"node features joined by &, such as ssd&avx2 ({scheduler} selects nodes by features that "
                         "all hold; letters, digits and _ . -, starting with a letter)")
    if _SLURM_CONSTRAINT.fullmatch(value) and value[0] not in "&|*" and value[-1] not in "&|":
        return value
    raise ValueError("node features as sbatch --constraint reads them, such as ssd, ssd&avx2, "
                     "[rack1|rack2] or gpu*2 (letters, digits and _ . : + - & | [ ] ( ) *)")


def features(constraint: str) -> list[str]:
    """The feature names of a constraint that PBS and LSF can express (names joined by &)."""
    return constraint.split("&")


@dataclass(frozen=True)
class Owner:
    """What sets a batch option: a spec field (``{qos}``), and whether hpcbridge sets it always or only when given."""

    field: str
    always: bool


# The options of each batch system that an hpcbridge option sets. A long Slurm option may be
# abbreviated (sbatch takes --part for --partition), so a directive's long option matches every
# name it begins.
_ALWAYS, _GIVEN = True, False
_SLURM = {
    "-J": ("job_name", _ALWAYS), "--job-name": ("job_name", _ALWAYS),
    "-N": ("nodes", _ALWAYS), "--nodes": ("nodes", _ALWAYS),
    "-n": ("ntasks_per_node", _ALWAYS), "--ntasks": ("ntasks_per_node", _ALWAYS),
    "--ntasks-per-node": ("ntasks_per_node", _ALWAYS),
    "-c": ("cpus_per_task", _ALWAYS), "--cpus-per-task": ("cpus_per_task", _ALWAYS),
    "--mem": ("mem", _ALWAYS), "--mem-per-cpu": ("mem_per_cpu", _ALWAYS),
    "-t": ("walltime", _ALWAYS), "--time": ("walltime", _ALWAYS),
    "-A": ("account", _ALWAYS), "--account": ("account", _ALWAYS),
    "-p": ("queue", _ALWAYS), "--partition": ("queue", _ALWAYS),
    "-o": ("job_name", _ALWAYS), "--output": ("job_name", _ALWAYS),
    "-a": ("array", _ALWAYS), "--array": ("array", _ALWAYS),
    "--requeue": ("requeue", _ALWAYS), "--no-requeue": ("requeue", _ALWAYS), "--signal": ("requeue", _ALWAYS),
    "--open-mode": ("requeue", _ALWAYS),
    "-q": ("qos", _GIVEN), "--qos": ("qos", _GIVEN),
    "-C": ("constraint", _GIVEN), "--constraint": ("constraint", _GIVEN),
    "--reservation": ("reservation", _GIVEN),
    "--exclusive": ("exclusive", _GIVEN),
    "--gpus-per-task": ("gpus_per_task", _GIVEN), "--gpus-per-node": ("gpus_per_node", _GIVEN),
    "-G": ("gpus_per_node", _GIVEN), "--gpus": ("gpus_per_node", _GIVEN), "--gres": ("gpus_per_node", _GIVEN),
}
_PBS = {
    "-N": ("job_name", _ALWAYS), "-o": ("job_name", _ALWAYS), "-e": ("job_name", _ALWAYS), "-j": ("job_name", _ALWAYS),
    "-A": ("account", _ALWAYS), "-q": ("queue", _ALWAYS), "-J": ("array", _ALWAYS), "-t": ("array", _ALWAYS),
    "-n": ("exclusive", _GIVEN),
}
# PBS resources (-l NAME=...), hpcbridge's select/nodes statement holds the first ones.
_PBS_RESOURCES = {
    "select": ("nodes", _ALWAYS), "nodes": ("nodes", _ALWAYS), "ncpus": ("cpus_per_task", _ALWAYS),
    "mpiprocs": ("ntasks_per_node", _ALWAYS), "ppn": ("ntasks_per_node", _ALWAYS),
    "mem": ("mem", _ALWAYS), "pmem": ("mem_per_cpu", _ALWAYS), "vmem": ("mem", _ALWAYS),
    "walltime": ("walltime", _ALWAYS), "place": ("exclusive", _ALWAYS),
    "ngpus": ("gpus_per_node", _GIVEN), "gpus": ("gpus_per_node", _GIVEN),
    "qos": ("qos", _GIVEN), "advres": ("reservation", _GIVEN),
}
_LSF = {
    "-J": ("job_name", _ALWAYS), "-n": ("ntasks_per_node", _ALWAYS), "-M": ("mem", _ALWAYS),
    "-W": ("walltime", _ALWAYS), "-P": ("account", _ALWAYS), "-q": ("queue", _ALWAYS),
    "-o": ("job_name", _ALWAYS), "-oo": ("job_name", _ALWAYS),
    "-x": ("exclusive", _GIVEN), "-U": ("reservation", _GIVEN), "-gpu": ("gpus_per_node", _GIVEN),
}
_SGE = {
    "-N": ("job_name", _ALWAYS), "-o": ("job_name", _ALWAYS), "-e": ("job_name", _ALWAYS), "-j": ("job_name", _ALWAYS),
    "-pe": ("nodes", _ALWAYS), "-P": ("account", _ALWAYS), "-q": ("queue", _ALWAYS),
    "-t": ("array", _ALWAYS), "-tc": ("array", _ALWAYS), "-ar": ("reservation", _GIVEN),
}
# Grid Engine resources (-l NAME=...) hpcbridge requests itself.
_SGE_RESOURCES = {"h_rt": ("walltime", _ALWAYS), "s_rt": ("walltime", _ALWAYS), "mem_free": ("mem", _ALWAYS)}
# Sections of an LSF resource requirement (-R "..."): which hpcbridge sets.
_LSF_SECTIONS = {"span": ("nodes", _ALWAYS), "rusage": ("mem", _ALWAYS), "select": ("constraint", _GIVEN)}


def directive_owners(scheduler: str, line: str) -> list[Owner]:
    """What hpcbridge option sets each option of the directive ``line`` on ``scheduler`` (empty: none)."""
    words = directive_words(line)
    found: list[tuple[str, bool]] = []
    for index, word in enumerate(words):
        if not word.startswith("-"):
            continue
        following = words[index + 1] if index + 1 < len(words) else ""
        if scheduler == "slurm":
            found += _slurm_owners(word)
        elif scheduler == "pbs":
            found += _pbs_owners(word, following)
        elif scheduler == "lsf":
            found += _lsf_owners(word, following)
        elif scheduler == "sge":
            found += _sge_owners(word, following)
    unique = dict.fromkeys(found)
    return [Owner(field, always) for field, always in unique]


def _slurm_owners(word: str) -> list[tuple[str, bool]]:
    if word.startswith("--"):
        name = word.partition("=")[0]
        if name in _SLURM:
            return [_SLURM[name]]
        return [owner for option, owner in _SLURM.items() if option.startswith("--") and option.startswith(name)][:1]
    return [_SLURM[word[:2]]] if word[:2] in _SLURM else []


def _pbs_owners(word: str, following: str) -> list[tuple[str, bool]]:
    if word.startswith("-l"):
        resources = word[2:] or following
        names = re.findall(r"(?:^|,)\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", resources)
        # A select statement's chunks hold resources too (select=2:ncpus=4:ngpus=1).
        names += re.findall(r":([A-Za-z_][A-Za-z0-9_]*)=", resources)
        return [_PBS_RESOURCES[name] for name in names if name in _PBS_RESOURCES]
    return [_PBS[word[:2]]] if word[:2] in _PBS else []


def _lsf_owners(word: str, following: str) -> list[tuple[str, bool]]:
    if word.startswith("-R"):
        requirement = word[2:] or following
        return [_LSF_SECTIONS[name] for name in re.findall(r"([a-z]+)\s*\[", requirement) if name in _LSF_SECTIONS]
    name = word if word in _LSF else word[:2]
    return [_LSF[name]] if name in _LSF else []


def _sge_owners(word: str, following: str) -> list[tuple[str, bool]]:
    if word == "-l":
        names = re.findall(r"(?:^|,)\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", following)
        return [_SGE_RESOURCES[name] for name in names if name in _SGE_RESOURCES]
    return [_SGE[word]] if word in _SGE else []


def gpus_per_node(gpus_per_task: int | None, gpus_per_node_: int | None, tasks_per_node: int) -> int | None:
    """The GPUs one node needs (PBS's ngpus and LSF's num are per node): given, or per task times the tasks."""
    if gpus_per_node_:
        return gpus_per_node_
    return gpus_per_task * tasks_per_node if gpus_per_task else None
