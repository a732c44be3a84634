"""Progress output: whole lines per 10 % in logs, a tqdm bar on a terminal."""

from __future__ import annotations

import ast
import io
from pathlib import Path

from hpcbridge.client.progress import Progress

ROOT = Path(__file__).resolve().parents[1]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_progress_is_one_line_per_ten_percent() -> None:
    stream = io.StringIO()
    meter = Progress("run-x", 1000, stream)
    for done in range(0, 1001, 7):
        meter.update(done)
    meter.finish()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert [line.split(":")[1].split("%")[0].strip() for line in lines] == [
        "0", "10", "20", "30", "40", "50", "60", "70", "80", "90", "100"]
    assert lines[-1].startswith("run-x: 100% (1000/1000 items, ")


def test_on_a_terminal_progress_is_a_tqdm_bar_redrawn_in_place() -> None:
    stream = Terminal()
    meter = Progress("run-y", 50, stream, unit="numbers")
    for done in (10, 30, 50):
        meter.update(done)
    meter.finish()
    text = stream.getvalue()
    assert "\r" in text and text.endswith("\n")
    assert "run-y" in text and "50/50" in text and "numbers" in text


def test_only_the_command_line_imports_the_demo() -> None:
    importers = []
    for path in [*ROOT.glob("hpcbridge/**/*.py"), *ROOT.glob("examples/*.py"), *ROOT.glob("benchmarks/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "hpcbridge.workloads.demo":
                importers.append(path.relative_to(ROOT).as_posix())
    assert importers == ["hpcbridge/cli.py"]
