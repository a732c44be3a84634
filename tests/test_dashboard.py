"""The dashboard: on the scheduler's node only, and the ssh tunnel that brings it to its owner.

What a scheduler file says (recorded by the job) becomes the tunnel and the URL; a local job's
dashboard and its workers' pages answer on 127.0.0.1 and on no other address of the machine.
(On a real Slurm, another user and the owner's tunnel through sshd: tests/cluster/test_ssh.py.)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from hpcbridge import scheduler_file
from hpcbridge.client import dashboard
from hpcbridge.client.bridge import connect
from hpcbridge.job import submit as jobs
from hpcbridge.scheduler_file import ClusterInfo, Dashboard
from tests.test_security import other_user  # noqa: F401  (a second Unix user for the module, removed after it)


def info(dashboard_record: Dashboard | None, job_id: str | None = "42") -> ClusterInfo:
    return ClusterInfo(path=Path("/s/42/scheduler.json"), address="tls://10.77.0.1:40001", job_id=job_id,
                       scheduler="slurm" if job_id else None, dashboard=dashboard_record)


def test_a_dashboard_on_another_nodes_loopback_is_reached_through_ssh_via_the_login_node() -> None:
    on_node = info(Dashboard("node17", "127.0.0.1", 40123))
    reach = dashboard.access(on_node, user="ada", this_host="login1", login_host="login1.example.org")
    assert reach.tunnel == ("ssh", "-N", "-L", "40123:127.0.0.1:40123", "-J", "ada@login1.example.org", "ada@node17")
    assert (reach.url, reach.here) == ("http://localhost:40123/status", None)
    mine = dashboard.access(on_node, user="ada", this_host="login1", login_host="", local_port=8787)
    assert mine.tunnel_text == "ssh -N -L 8787:127.0.0.1:40123 ada@node17" and mine.url == "http://localhost:8787/status"
    # The bridge's link: the URL, and how to get there.
    link = dashboard.link(on_node, "http://10.77.0.1:40123/status")
    assert link.startswith("http://localhost:40123/status through an ssh tunnel to node17, on your computer: ssh -N -L "
                           "40123:127.0.0.1:40123 -J "), link
    assert link.endswith(" prints it again") and "hpcbridge dashboard 42" in link


def test_a_dashboard_on_this_machine_opens_here_and_through_a_tunnel_to_this_machine() -> None:
    here = info(Dashboard("login1", "127.0.0.1", 40123))
    reach = dashboard.access(here, user="ada", this_host="login1.example.org", login_host="login1.example.org")
    assert reach.here == "http://127.0.0.1:40123/status"
    assert reach.tunnel == ("ssh", "-N", "-L", "40123:127.0.0.1:40123", "ada@login1.example.org")
    assert dashboard.link(info(Dashboard(__import__("socket").gethostname(), "127.0.0.1", 40123, "t0k-n_")), "x") == \
        "http://127.0.0.1:40123/status?token=t0k-n_"


def test_a_dashboard_open_to_the_network_needs_no_tunnel_and_a_file_without_one_keeps_dasks_link() -> None:
    every = dashboard.access(info(Dashboard("node17", "", 8787)))
    assert (every.url, every.tunnel) == ("http://10.77.0.1:8787/status", None)
    given = dashboard.access(info(Dashboard("node17", "10.0.0.5", 8787, "a/b")))
    assert given.url == "http://10.0.0.5:8787/status?token=a%2Fb"
    with pytest.raises(LookupError, match="names no dashboard"):
        dashboard.access(info(None))
    assert dashboard.link(info(None), "http://10.77.0.1:8787/status") == "http://10.77.0.1:8787/status"


def test_plain_dasks_file_names_its_dashboard_port_on_every_interface(tmp_path) -> None:
    path = tmp_path / "plain.json"
    path.write_text(json.dumps({"address": "tcp://10.0.0.9:8786", "services": {"dashboard": 8787}}))
    assert scheduler_file.read(path).dashboard == Dashboard(None, "", 8787)
    assert dashboard.access(scheduler_file.read(path)).url == "http://10.0.0.9:8787/status"


def other_address() -> str:
    """An IPv4 address of this machine that is not loopback (the dashboard must not answer there)."""
    shown = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, timeout=30).stdout
    found = [address for address in re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", shown) if not address.startswith("127.")]
    if not found:
        pytest.skip("this machine has no IPv4 address but loopback")
    return found[0]


def fetch(url: str) -> tuple[int, str]:
    """GET ``url`` as a browser would (keeping cookies across the redirect); the status and the page."""
    try:
        with urllib.request.build_opener(urllib.request.HTTPCookieProcessor()).open(url, timeout=10) as answer:
            return answer.status, answer.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, ""


def refused(host: str, port: int) -> bool:
    import socket

    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError:
        return True
    return False


def test_a_jobs_dashboard_and_its_workers_pages_answer_on_loopback_only(local_spec, local_jobs) -> None:
    job = jobs.submit(local_spec(ntasks_per_node=2))
    local_jobs.append(job)
    elsewhere = other_address()
    with connect(job=job, n_workers=2, timeout=60) as bridge:
        recorded = scheduler_file.read(job.scheduler_file).dashboard
        assert recorded.host == "127.0.0.1" and recorded.node and len(recorded.token) >= 32
        link = f"http://127.0.0.1:{recorded.port}/status?token={recorded.token}"
        assert bridge.dashboard_link == link  # this machine: no tunnel
        status, page = fetch(link)
        assert status == 200 and "needs bokeh" not in page.lower() and "bokeh" in page.lower(), page[:300]
        assert refused(elsewhere, recorded.port), f"the dashboard answers on {elsewhere}"
        workers = bridge.client.scheduler_info(n_workers=-1)["workers"].values()
        pages = [worker["services"]["dashboard"] for worker in workers]
        assert len(pages) == 2
        for port in pages:
            assert fetch(f"http://127.0.0.1:{port}/health")[0] == 200
            assert refused(elsewhere, port), f"a worker's pages answer on {elsewhere}:{port}"
    shown = subprocess.run([sys.executable, "-m", "hpcbridge.cli", "dashboard", job.job_id], capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert f"here:    {link}\n" in shown.stdout, shown.stdout
    assert f"tunnel:  ssh -N -L {recorded.port}:127.0.0.1:{recorded.port} " in shown.stdout
    assert f"open:    http://localhost:{recorded.port}/status?token={recorded.token}\n" in shown.stdout
    as_json = json.loads(subprocess.run([sys.executable, "-m", "hpcbridge.cli", "dashboard", job.scheduler_file,
                                         "--json", "--local-port", "8787"],
                                        capture_output=True, text=True, timeout=60).stdout)
    assert as_json["url"] == f"http://localhost:8787/status?token={recorded.token}" and as_json["port"] == recorded.port


def test_the_dashboard_command_refuses_what_it_cannot_use_in_one_line(tmp_path) -> None:
    missing = subprocess.run([sys.executable, "-m", "hpcbridge.cli", "dashboard", str(tmp_path / "none.json")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and missing.stderr.startswith(f"Error: no scheduler file at {tmp_path}/none.json")
    bad = subprocess.run([sys.executable, "-m", "hpcbridge.cli", "dashboard", "42", "--login-host", "-oProxyCommand=x"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--login-host" in bad.stderr and "'-oProxyCommand=x' is not allowed" in bad.stderr
    assert "Traceback" not in missing.stderr + bad.stderr


DASHBOARD_PAGES = ["/status", "/info/main/workers.html", "/info/main/logs.html", "/metrics", "/json/identity.json",
                   "/sitemap.json", "/individual-plots.json", "/tasks", "/profile", "/call-stack", "/status/ws"]


def test_another_user_on_the_same_machine_gets_nothing_and_the_owners_link_opens_it(local_spec, local_jobs,
                                                                                   other_user) -> None:  # noqa: F811
    """127.0.0.1 keeps the network out, not the other users of the scheduler's node (a shared compute
    node, or the login node of a local cluster): the dashboard lets in only a browser that brought
    the token of the owner's link, and the workers serve no pages."""
    job = jobs.submit(local_spec(ntasks_per_node=1))
    local_jobs.append(job)
    with connect(job=job, n_workers=1, timeout=60) as bridge:
        assert bridge.gather(bridge.map(abs, [-1], name="secret-run-name", progress=False)) == [1]
        recorded = scheduler_file.read(job.scheduler_file).dashboard
        [worker] = bridge.client.scheduler_info(n_workers=-1)["workers"].values()
        link = bridge.dashboard_link
    for page in DASHBOARD_PAGES:
        tried = subprocess.run(["runuser", "-u", other_user, "--", "curl", "-s", "-m", "10", "-w", "\n%{http_code}",
                                f"http://127.0.0.1:{recorded.port}{page}"], capture_output=True, text=True,
                               timeout=30, cwd="/tmp")
        body, _, code = tried.stdout.rpartition("\n")
        assert code == "403", (page, tried.stdout[:300])
        assert "secret-run-name" not in body and "bokeh" not in body.lower(), (page, body[:300])
    worker_page = subprocess.run(["runuser", "-u", other_user, "--", "curl", "-s", "-m", "10", "-o", "/dev/null", "-w",
                                  "%{http_code}", f"http://127.0.0.1:{worker['services']['dashboard']}/status"],
                                 capture_output=True, text=True, timeout=30, cwd="/tmp")
    assert worker_page.stdout == "404", worker_page  # a worker serves no pages, only counts (/metrics, /health)
    # The owner's link carries the token once; the browser keeps a cookie for the rest (bokeh's own requests).
    assert link.startswith(f"http://127.0.0.1:{recorded.port}/status?token=") and recorded.token in link
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    with opener.open(link, timeout=30) as answer:
        assert answer.status == 200 and answer.url == f"http://127.0.0.1:{recorded.port}/status"  # the token dropped
        assert "bokeh" in answer.read().decode(errors="replace").lower()
    with opener.open(f"http://127.0.0.1:{recorded.port}/info/main/workers.html", timeout=30) as answer:
        assert answer.status == 200
    assert fetch(f"http://127.0.0.1:{recorded.port}/status?token=wrong")[0] == 403


def test_the_dashboard_serves_its_own_javascript_whatever_bokeh_setting_the_user_has(local_spec, local_jobs,
                                                                                     monkeypatch) -> None:
    """Compute nodes are often offline: a page that loads BokehJS from a CDN draws no plot there (the
    user's ``BOKEH_RESOURCES=cdn``, e.g. set for notebooks, reaches the job's environment)."""
    monkeypatch.setenv("BOKEH_RESOURCES", "cdn")
    job = jobs.submit(local_spec(ntasks_per_node=1))
    local_jobs.append(job)
    with connect(job=job, n_workers=1, timeout=60) as bridge:
        recorded = scheduler_file.read(job.scheduler_file).dashboard
        status, page = fetch(bridge.dashboard_link)
        assert status == 200, page[:300]
        scripts = re.findall(r"<script[^>]*\bsrc=\"([^\"]*)\"", page)
        assert scripts and not [src for src in scripts if "//" in src], scripts  # relative: from the dashboard itself
        for src in scripts:
            assert fetch(f"http://127.0.0.1:{recorded.port}/{src}")[0] == 403  # behind the gate, like every page
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        opener.open(bridge.dashboard_link, timeout=30).close()
        with opener.open(f"http://127.0.0.1:{recorded.port}/{scripts[0]}", timeout=30) as answer:
            assert answer.status == 200 and b"Bokeh" in answer.read(200_000)
