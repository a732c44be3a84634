"""Property: every spec hpcbridge accepts renders a script that is valid bash, passes shellcheck,
and in which no value runs as a command or adds a batch directive.

Values are drawn for every spec field from what users type, shell syntax (``$()``, backticks,
``;``, quotes, newlines), a marker with a space, unicode and random text. Whatever the spec
refuses is dropped; what it accepts is rendered. The marker ``HPCB CANARY`` must then appear,
in bash's own reading of the script (``declare -f`` of the script as a function body, which
drops comments and keeps each word as written), only inside single quotes: anywhere else it
would be code or would split into words. Batch directives must all stand in the header.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from hpcbridge.job.render import render_script
from hpcbridge.job.spec import MODES, PBS_FLAVORS, PROTOCOLS, SCHEDULERS, JobSpec, SpecError, SpecWarning, spec_fields

CANARY = "HPCB CANARY"
PAYLOADS = [
    f"$(touch /tmp/{CANARY})", f"`touch {CANARY}`", f";touch {CANARY};", f"' ; {CANARY} ; '", f'" ; {CANARY} ; "',
    f"\n{CANARY}\n", f"\n#SBATCH --{CANARY}", f"\n#PBS -l {CANARY}", f"\n#BSUB -J {CANARY}", f"${{IFS}}{CANARY}",
    f"\\\n{CANARY}", f"&& {CANARY}", f"| {CANARY}", f"> {CANARY}", f"{CANARY} #", f"{CANARY}'\"'\"'",
    f"\u2028{CANARY}", f"\x00{CANARY}", f"\r{CANARY}", f"{{job_id}}{CANARY}", f"~root/{CANARY}", f"../{CANARY}",
    f"é{CANARY}ü", CANARY,
]
# Setup lines are shell code by design (the one field that reaches the script unquoted), so they
# come from lines that are valid and shellcheck-clean; the bad ones are in test_bad_input.py.
SETUP_LINES = ["source ~/venv/bin/activate", "export OMP_NUM_THREADS=1", "module purge", "ulimit -n 4096",
               "export A='x y'", "true # a comment"]
DIRECTIVE = re.compile(r"^\s*#(SBATCH|PBS|BSUB)\b")


def typed(*usual: str) -> st.SearchStrategy[str]:
    """What a user types for a text field: a usual value, a usual value with a payload, or random text."""
    return st.one_of(
        st.sampled_from(usual),
        st.builds(lambda head, payload, tail: head + payload + tail,
                  st.sampled_from(["", *usual]), st.sampled_from(PAYLOADS), st.sampled_from(["", "x", "/y", " z"])),
        st.text(max_size=12),
    )


def counts(low: int, high: int) -> st.SearchStrategy[object]:
    return st.one_of(st.integers(low, high), st.integers(low, high).map(str), st.sampled_from(["0", " 2 ", "x", "٣"]))


FIELDS = {
    "scheduler": st.sampled_from(SCHEDULERS),
    "mode": st.sampled_from(MODES),
    "nodes": counts(1, 3),
    "ntasks_per_node": counts(1, 4),
    "cpus_per_task": counts(1, 4),
    "mem_per_cpu": st.one_of(st.sampled_from(["512M", "1G", "2048", "1.5G", "4 GiB", "0", "4Q"]), typed("1G")),
    "mem": st.one_of(st.sampled_from(["64G", "1024", "0.5T"]), typed("8G")),
    "walltime": st.one_of(st.sampled_from(["25:00", "2h30m", "1-12", "90", "01:00:00", "5m", "10s", "1d"]),
                          st.integers(0, 10**6), typed("2h")),
    "account": typed("proj42", "proj-1"),
    "queue": typed("debug", "debug,long"),
    "job_name": typed("fe-sweep", "hpcbridge"),
    "interface": typed("ib0", "eth0", "lo", "then", "done"),
    "scheduler_interface": typed("eth0", "ib0"),
    "protocol": st.sampled_from(PROTOCOLS),
    "tls_ca_file": typed("/tls/ca.pem", "~/tls/ca.pem"),
    "tls_cert": typed("/tls/c.pem"),
    "tls_key": typed("/tls/c.key", "~/tls/c.key"),
    "scheduler_file": typed("~/.hpcbridge/jobs/{job_id}/scheduler.json", "/scratch/a b/{job_id}.json",
                            "rel/{job_id}.json", "/tmp/fixed.json"),
    "modules": st.lists(typed("gcc/12.2", "python/3.11", "openmpi/4.1"), max_size=3),
    "setup": st.lists(st.sampled_from(SETUP_LINES), max_size=3),
    "python": typed("python3", "/opt/py 3/bin/python", "~/venv/bin/python", "venv/bin/python"),
    "client_script": typed("/home/a/run.py", "~/chunk.py"),
    "client_args": st.lists(typed("--size", "10 000", "a'b"), max_size=3),
    "array": st.one_of(st.sampled_from(["1-20", "0-99:3", "5-1", "1-4\n"]), typed("1-8")),
    "array_throttle": counts(0, 5),
    "pbs_flavor": st.sampled_from(PBS_FLAVORS),
    "pe": typed("smp", "mpi"),
    "lifetime_margin": st.one_of(st.sampled_from(["30s", "5m", "300", "10s", "1h"]), st.integers(0, 4000)),
    "scheduler_timeout": counts(1, 600),
    "ntasks": counts(1, 8),
    "run_directory": typed("/scratch/runs", "~/runs", "runs"),
    "save_runs": st.sampled_from([True, False, "yes", "no", "maybe"]),
    "requeue": st.sampled_from([True, False, "yes", "no", "maybe"]),
    "hosts": st.lists(typed("node1", "me@node2", "10.0.0.5", "-oProxyCommand=x"), max_size=3),
    "hostfile": st.sampled_from([None, None, "/nonexistent/hosts.txt"]),
    "ssh_options": st.one_of(st.lists(typed("-F", "/home/a/ssh config", "-oPort=2222"), max_size=3), typed("-F ~/x")),
    "dashboard_address": typed("127.0.0.1:0", ":8787", "0.0.0.0:8787", "[::1]:0", "localhost", "a b:1", "1.2.3.4:99999"),
    "qos": typed("long", "debug"),
    "constraint": typed("ssd", "ssd&avx2", "[rack1|rack2]", "gpu*2"),
    "reservation": typed("maint", "r-1"),
    "exclusive": st.sampled_from([True, False, "yes", "maybe"]),
    "gpus_per_task": counts(0, 2),
    "gpus_per_node": counts(0, 4),
    "directives": st.lists(typed("--licenses=fluent:2", "-l software=abaqus", '--comment "a b"', "-R 'order[r15s]'",
                                 "--qos=x", "-W depend=afterok:1"), max_size=3),
    "local_directory": typed("/local/scratch", "~/scratch", "scratch dir"),
    "worker_class": typed("dask_cuda.CUDAWorker", "distributed.Nanny", "x;y", "Worker"),
    "container": typed("/images/py.sif", "~/img dir", "docker://python:3.12", "-v", "img.sif"),
    "container_runtime": st.sampled_from([None, "apptainer", "singularity", "charliecloud", "podman", "docker"]),
    "container_binds": st.lists(typed("/software", "~/data", "/a:/b", "rel dir"), max_size=2),
    "container_gpu": st.sampled_from(["nvidia", "amd", "intel"]),
    "idle_timeout": st.one_of(st.sampled_from(["0", "20s", "30m", "600", "2h", "-5", "soon"]), st.integers(-1, 4000)),
}
assert set(FIELDS) == {*spec_fields(), "ntasks"}, "every spec field has a strategy"
NEEDS_OTHERS = ("mode", "protocol", "ntasks", "ntasks_per_node", "client_script", "client_args", "nodes",
                "tls_ca_file", "tls_cert", "tls_key",  # TLS files: all three or none
                "scheduler",  # ssh needs a host list
                "container")  # a container needs its runtime


def accepted_spec(values: dict[str, object]) -> JobSpec:
    """The spec of ``values`` less every value it refuses (a value that needs another goes with it)."""
    values = dict(values)
    for _ in range(2 * len(FIELDS)):
        try:
            return JobSpec(**values)
        except SpecError as error:
            refused = error.field if values.get(error.field) is not None else next(
                name for name in NEEDS_OTHERS if name in values)
            del values[refused]
    raise AssertionError(f"no accepted spec within {values}")


def outside_single_quotes(code: str) -> str:
    """``code`` with every single-quoted string blanked; double-quoted text stays, since it expands."""
    kept, index, in_double = [], 0, False
    while index < len(code):
        char = code[index]
        if char == "\\":
            kept.append(code[index:index + 2])
            index += 2
            continue
        if char == "'" and not in_double:
            index = code.index("'", index + 1) + 1
            kept.append("''")
            continue
        if char == '"':
            in_double = not in_double
        kept.append(char)
        index += 1
    return "".join(kept)


REMOTE_START = re.compile(r"^.*<<'REMOTE'.*$", re.M)


def split_remote(text: str) -> tuple[str, str | None]:
    """The script without the ssh mode's quoted here-document (the script each host runs), and that
    script. bash prints a here-document back as it is, comments included, so the apostrophes of its
    comments would throw the quote count of the outer script off: each is read as a script of its own."""
    start = REMOTE_START.search(text)
    if start is None:
        return text, None
    end = text.index("\nREMOTE\n", start.end())
    return text[:start.end()] + text[end:], text[start.end() + 1:end + 1]


def bash_reading(script: Path) -> str:
    """How bash parses the script: its text as a function body, printed back by ``declare -f``.

    No command of the script runs, and PATH is empty, so nothing that escaped could run either.
    """
    done = subprocess.run(
        ["/bin/bash", "--norc", "--noprofile", "-c",
         'eval "hpcbridge_script() { $(< "$1")\n}" && declare -f hpcbridge_script', "reading", str(script)],
        capture_output=True, text=True, timeout=60, env={"PATH": "/nonexistent"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@settings(max_examples=10, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.fixed_dictionaries({}, optional=FIELDS), min_size=8, max_size=8))
def test_every_accepted_spec_renders_valid_bash_with_no_injected_command_or_directive(tmp_path_factory,
                                                                                      examples) -> None:
    folder = tmp_path_factory.mktemp("scripts")
    scripts = []
    for index, values in enumerate(examples):
        spec = accepted_spec(values)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SpecWarning)
            text = render_script(spec)
        path = folder / f"job{index}.sh"
        path.write_text(text, encoding="utf-8")
        scripts.append((spec, path, text))

        subprocess.run(["bash", "-n", str(path)], check=True, timeout=60)
        lines = text.splitlines()
        header = next(i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#"))
        late = [line for line in lines[header:] if DIRECTIVE.match(line)]
        assert late == [], f"a directive after the header in {spec}: {late}"
        # A value reaches a directive line only as the user's own directive (one line each), never as a new one.
        marked = [line for line in lines[:header] if DIRECTIVE.match(line) and CANARY in line]
        assert len(marked) <= sum(CANARY in line for line in spec.directives), (spec, marked)
        outer, remote = split_remote(text)  # ssh mode: the hosts' own script travels as a quoted here-document
        for part, body in (("", outer), (" (the hosts' script)", remote)):
            if body is None:
                continue
            part_path = path.with_suffix(".remote.sh" if part else ".outer.sh")
            part_path.write_text(body, encoding="utf-8")
            reading = outside_single_quotes(bash_reading(part_path))
            if len(spec.python) > 1:  # a command line's words are words by design (each quoted): not an escape
                reading = re.sub(r"^\s*PYTHON=\(.*\);?$", "", reading, flags=re.M)
            assert CANARY not in reading, f"a value escaped its quotes{part} in {spec}:\n{reading}"
    assert shutil.which("shellcheck"), "shellcheck is installed by the test command (make test)"
    checked = subprocess.run(["shellcheck", "--severity=style", *(str(path) for _, path, _ in scripts)],
                             capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stdout


def test_the_check_finds_a_value_that_escapes(tmp_path: Path) -> None:
    """The detector itself: an unquoted marker, one in double quotes and one behind a newline are found."""
    for leaked in (f"A={CANARY}", f'echo "{CANARY}"', f"# x\n{CANARY}", f"X='a'{CANARY}'b'"):
        script = tmp_path / "leak.sh"
        script.write_text(f"#!/bin/bash\nB='{CANARY}'\n{leaked}\n")
        assert CANARY in outside_single_quotes(bash_reading(script)), leaked
    script.write_text(f"#!/bin/bash\nB='{CANARY}'\"$HOME\"/'{CANARY}'\"'\"'x'\n")
    assert CANARY not in outside_single_quotes(bash_reading(script))
