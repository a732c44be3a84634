"""Render a :class:`~hpcbridge.job.spec.JobSpec` into a batch script from the Jinja templates.

Quoting happens here and only here: every ``{{ value }}`` a template prints goes through
:func:`shlex.quote` (the environment's ``finalize`` hook), so a template cannot forget it. The
two things that must reach the script as shell code are marked by the renderer's own filters:
``verbatim`` for the user's setup lines (shell commands by design) and ``shell_path`` for paths
that expand ``$HOME`` and the job id when the job runs.
"""

from __future__ import annotations

import os
import shlex
import tempfile
import warnings
from importlib import resources
from pathlib import Path

import jinja2

from hpcbridge._version import __version__
from hpcbridge.job import requests, units
from hpcbridge.job.spec import JOB_ID_PLACEHOLDER, JobSpec


class ShellCode(str):
    """Text that goes into the script as it is, because the renderer built or vetted it."""


def packaged_template_dir() -> Path:
    """The templates shipped with hpcbridge: inside the wheel, or ``templates/`` in a checkout."""
    installed = Path(str(resources.files("hpcbridge"))) / "templates"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "templates"


def site_template_dirs() -> list[Path]:
    """A site's or user's template folders, searched before the packaged ones.

    They come from ``hpcbridge.templates`` in Dask's config (one folder or a list), e.g.
    ``DASK_HPCBRIDGE__TEMPLATES=/etc/hpcbridge/templates``. A folder needs to hold only the
    files it overrides, such as ``slurm/directives.sh.j2`` for a centre's own ``#SBATCH`` lines;
    the packaged file stays reachable as ``packaged/slurm/directives.sh.j2`` to include.
    """
    import dask.config

    configured = dask.config.get("hpcbridge.templates", None) or []
    folders = [configured] if isinstance(configured, str) else list(configured)
    return [Path(folder).expanduser() for folder in folders]


class RenderError(ValueError):
    """A template could not be rendered (a site template with a mistake, say): names the file and line."""


def template_name(spec: JobSpec) -> str:
    """The template that renders ``spec``: one file per scheduler and launch mode."""
    return f"{spec.scheduler}/{spec.mode}.sh.j2"


def render_script(spec: JobSpec, template_dirs: list[Path] | None = None) -> str:
    """Return the batch script for ``spec`` as text.

    Templates are looked up in ``template_dirs`` when given, otherwise in the site folders
    (:func:`site_template_dirs`) and then the packaged ones. What the spec allows but probably
    does not mean (a walltime too short for the lifetime margin) is said as a
    :class:`~hpcbridge.job.spec.SpecWarning`.
    """
    _warn(spec)
    folders = template_dirs if template_dirs is not None else [*site_template_dirs(), packaged_template_dir()]
    try:
        return _environment(folders).get_template(template_name(spec)).render(spec=spec, version=__version__)
    except jinja2.TemplateSyntaxError as error:
        raise RenderError(f"template {error.filename or error.name}, line {error.lineno}: {error.message}") from None
    except jinja2.TemplateError as error:
        raise RenderError(f"template {template_name(spec)} (searched {', '.join(map(str, folders))}): "
                          f"{error.__class__.__name__}: {error}") from None


def _warn(spec: JobSpec) -> None:
    """Raise what ``spec`` allows but probably does not mean (:meth:`JobSpec.warnings`), once per script."""
    for warning in spec.warnings():
        warnings.warn(warning, stacklevel=3)


def render_named(template: str, spec: JobSpec, template_dirs: list[Path] | None = None, **context: object) -> str:
    """Render the template ``template`` (e.g. ``slurm/adaptive.sh.j2``) for ``spec``, with extra ``context``.

    For scripts that are not one per launch mode (the adaptive cluster's scheduler job); the
    search path and the quoting are those of :func:`render_script`.
    """
    _warn(spec)
    folders = template_dirs if template_dirs is not None else [*site_template_dirs(), packaged_template_dir()]
    try:
        return _environment(folders).get_template(template).render(spec=spec, version=__version__, **context)
    except jinja2.TemplateSyntaxError as error:
        raise RenderError(f"template {error.filename or error.name}, line {error.lineno}: {error.message}") from None
    except jinja2.TemplateError as error:
        raise RenderError(f"template {template} (searched {', '.join(map(str, folders))}): "
                          f"{error.__class__.__name__}: {error}") from None


def directive_lines(spec: JobSpec, template_dirs: list[Path] | None = None) -> list[str]:
    """The lines of ``<scheduler>/requests.sh.j2`` for ``spec`` without their prefix (``--qos=long``).

    For dask-jobqueue's ``job_extra_directives``: adaptive worker jobs ask for what the job's
    own script asks for, in the same words.
    """
    folders = template_dirs if template_dirs is not None else [*site_template_dirs(), packaged_template_dir()]
    text = _environment(folders).get_template(f"{spec.scheduler}/requests.sh.j2").render(spec=spec, version=__version__)
    return [line.split(None, 1)[1] for line in text.splitlines() if line.startswith("#") and " " in line]


def write_script(spec: JobSpec, path: str | os.PathLike[str]) -> Path:
    """Render ``spec`` and write it to ``path`` atomically, executable; nothing is written on error.

    A failure to write names ``path`` as given (``OSError.filename``), not the temporary file
    the script goes to first.
    """
    text = render_script(spec)
    target = Path(path)
    try:
        handle, temporary = tempfile.mkstemp(dir=target.parent or ".", prefix=f".{target.name}.")
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(path)) from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, 0o755)
        os.replace(temporary, target)
    except BaseException as error:
        os.unlink(temporary)
        if isinstance(error, OSError):
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise
    return target


def _quote(value: object) -> str:
    if isinstance(value, ShellCode):
        return value
    return shell_literal(str(value))


def shell_literal(text: str) -> str:
    r"""``text`` quoted as one literal shell word; a backslash stands outside the single quotes, escaped.

    Inside single quotes a backslash is already literal, but one before the closing quote reads
    to a reader (and to shellcheck) like an escaped quote.

    >>> print(shell_literal("a b"), shell_literal("my dir\\"), shell_literal("a\\b c"))
    'a b' 'my dir'\\ a\\'b c'
    """
    if "\\" not in text:
        return shlex.quote(text)
    return "\\\\".join(shlex.quote(piece) if piece else "" for piece in text.split("\\"))


def shell_path(path: str, job_id_variable: str = "JOB_ID") -> ShellCode:
    """Quote a path for the script, keeping a leading ``~/`` and ``{job_id}`` live.

    >>> print(shell_path("~/.hpcbridge/jobs/{job_id}/scheduler.json"))
    "$HOME"/.hpcbridge/jobs/"$JOB_ID"/scheduler.json
    >>> print(shell_path("/scratch/my dir/f.json"))
    '/scratch/my dir/f.json'
    """
    pieces: list[str] = []
    if path.startswith("~/"):
        pieces.append('"$HOME"/')
        path = path[2:]
    literals = path.split(JOB_ID_PLACEHOLDER)
    for index, literal in enumerate(literals):
        if index:
            pieces.append(f'"${job_id_variable}"')
        if literal:
            pieces.append(shell_literal(literal))
    return ShellCode("".join(pieces))


def shell_word(word: str) -> ShellCode:
    """Quote one word of a command for the script; a leading ``~/`` stays live (the home directory on the node).

    >>> print(shell_word("~/img.sif"), shell_word("my file"))
    "$HOME"/img.sif 'my file'
    """
    if word.startswith("~/"):
        return ShellCode('"$HOME"/' + shell_literal(word[2:]) if word[2:] else '"$HOME"/')
    return ShellCode(shell_literal(word))


def directive_word(value: str) -> ShellCode:
    """One value in a directive line: bare when every batch system reads it so, else in double quotes.

    sbatch strips double quotes but not single ones, and reads an unquoted ``#`` as a comment, so
    shell quoting would be wrong here; the spec's checks leave no double quote or backslash inside.
    """
    return ShellCode(requests.directive_text(shlex.quote(value)))


def _environment(folders: list[Path]) -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.ChoiceLoader([
            jinja2.FileSystemLoader([str(folder) for folder in folders]),
            # "packaged/slurm/directives.sh.j2" lets a site template extend the one it overrides.
            jinja2.PrefixLoader({"packaged": jinja2.FileSystemLoader(str(packaged_template_dir()))}),
        ]),
        undefined=jinja2.StrictUndefined,
        finalize=_quote,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        verbatim=ShellCode,
        shell_word=shell_word,
        directive=lambda line: ShellCode(requests.directive_text(line)),
        directive_word=directive_word,
        shell_path=shell_path,
        slurm_memory=units.slurm_memory,
        slurm_walltime=units.slurm_walltime,
        clock_walltime=units.clock_walltime,
        pbs_memory=units.pbs_memory,
        lsf_memory=units.lsf_memory,
        lsf_walltime=units.lsf_walltime,
        sge_memory=units.sge_memory,
    )
    return environment
