"""hpcbridge in a Jupyter notebook, executed by nbclient in a real IPython kernel (ipywidgets installed).

The notebook starts a local ``hpcbridge.Cluster``, displays it (Dask's cluster widget), its
bridge, a run mapped with a progress bar and a broadcast, and opens the dashboard's page with
the token the link carries; the test reads the outputs as a browser would get them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from hpcbridge.backends.job import find_record
from tests.conftest import job_processes, wait_for

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("ipywidgets")

ROOT = Path(__file__).resolve().parents[1]
WIDGET = "application/vnd.jupyter.widget-view+json"


def _cells(scheduler_file: str) -> list[str]:
    return [
        "import sys, urllib.request\nimport hpcbridge\n"
        f"cluster = hpcbridge.Cluster(scheduler='local', ntasks_per_node=2, mem_per_cpu='400M', python={sys.executable!r},"
        f" scheduler_file={scheduler_file!r}, quiet=True)\n"
        "print('job', cluster.job.job_id)\ncluster.wait_for_workers(2, timeout=90)\ncluster",
        "bridge = cluster.bridge(n_workers=2)\nbridge",
        "run = bridge.map(abs, range(-50, 50), name='notebook-run', chunk_size=10)\n"
        "values = bridge.gather(run, release=False)\nassert values == [abs(x) for x in range(-50, 50)]\nrun",
        "weights = bridge.broadcast(list(range(1000)), name='weights')\nweights",
        "browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())  # keeps the gate's cookie\n"
        "page = browser.open(cluster.dashboard_link, timeout=30)\n(page.status, b'bokeh' in page.read().lower())",
        "bridge.release(run); bridge.release(weights); bridge.close(); cluster.close()",
    ]


def _outputs(cell) -> dict[str, list[str]]:
    """Every output of a cell by MIME type (stream text under 'stream')."""
    found: dict[str, list[str]] = {}
    for output in cell.outputs:
        if output.output_type == "stream":
            found.setdefault("stream", []).append(output.text)
        for mime, value in output.get("data", {}).items():
            found.setdefault(mime, []).append(value if isinstance(value, str) else json.dumps(value))
    return found


def test_a_notebook_shows_the_cluster_bridge_run_and_broadcast_and_a_progress_bar(tmp_path, hpcbridge_home) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in
                      _cells(str(tmp_path / "{job_id}" / "scheduler.json"))]
    client = nbclient.NotebookClient(notebook, timeout=180, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    try:
        client.execute()
    finally:
        for record in (hpcbridge_home / "submitted").glob("local-*.json"):
            job = find_record(record.stem.removeprefix("local-"), "local")  # records are named <scheduler>-<id>
            if job is not None and not job.status().finished:
                job.cancel()
            if job is not None:
                assert wait_for(lambda job=job: not job_processes(job.job_id), timeout=30)
    cluster, bridge, run, broadcast, dashboard, _ = (_outputs(cell) for cell in notebook.cells)

    html = "".join(cluster["text/html"])
    assert "<h3" in html and "Cluster" in html and "<strong>Job:</strong> local-" in html, html
    assert "token=" in html  # the dashboard link that opens
    assert cluster.get(WIDGET), cluster.keys()  # Dask's live widget, with its scaling tab

    html = "".join(bridge["text/html"])
    assert "hpcbridge Bridge" in html and ">Workers</th>" in html and ">2</td>" in html, html
    assert ">Threads</th>" in html and ">Memory</th>" in html and "/status?token=" in html

    html = "".join(run["text/html"])
    assert "<code>notebook-run</code>" in html and "100 of 100 done" in html and "10 of 10 done" in html, html
    assert run.get(WIDGET), run.keys()  # gather's progress: tqdm's notebook bar
    assert not any("%" in text for text in run.get("stream", [])), run.get("stream")  # not the text lines

    html = "".join(broadcast["text/html"])
    assert "<code>weights</code>" in html and ">Workers</th>" in html and ">2</td>" in html, html

    assert dashboard["text/plain"] == ["(200, True)"]  # bokeh is installed: the page opens with its token
