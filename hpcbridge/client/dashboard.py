"""Reaching a cluster's dashboard: where it listens (the scheduler file says) and the ssh tunnel to it.

Dask's dashboard is plain HTTP without a login, and it shows the names of the functions and runs,
call stacks and every log line; so a job's dashboard listens on ``127.0.0.1`` of the scheduler's
node (:attr:`~hpcbridge.job.spec.JobSpec.dashboard_address`). Its owner reaches it through ssh,
which checks who they are::

    ssh -N -L 40123:127.0.0.1:40123 -J me@login1 me@node17     # on the laptop
    http://localhost:40123/status                              # in its browser

The local port is the dashboard's own (two clusters' tunnels do not collide), and ``-J`` jumps
through the machine that printed the command (a login node), from which compute nodes are
reachable; it is left out when the dashboard runs on that machine itself. Other users of the
scheduler's node reach its 127.0.0.1 too: the dashboard lets in only a browser that brings the
job's token once (``?token=...``, from the owner-only scheduler file; see
:mod:`hpcbridge.cluster.dashboard_gate`), so every URL here carries it.
"""

from __future__ import annotations

import getpass
import shlex
import socket
from dataclasses import dataclass
from urllib.parse import quote

from hpcbridge.addresses import host_and_port, is_loopback
from hpcbridge.scheduler_file import ClusterInfo, Dashboard


@dataclass(frozen=True)
class DashboardAccess:
    """How to open a dashboard: ``url`` in a browser, after running ``tunnel`` (an ssh command) when there is one.

    ``here`` is the URL that works on this machine as it is (None when the dashboard listens on
    another node's loopback, where only a tunnel reaches it). ``node``, ``host`` and ``port`` say
    where it listens.
    """

    url: str
    tunnel: tuple[str, ...] | None
    here: str | None
    node: str | None
    host: str
    port: int

    @property
    def tunnel_text(self) -> str | None:
        """The tunnel as one command line, or None."""
        return shlex.join(self.tunnel) if self.tunnel else None

    def as_dict(self) -> dict[str, object]:
        """Plain values, for ``--json`` and MATLAB."""
        return {"url": self.url, "tunnel": list(self.tunnel) if self.tunnel else None, "here": self.here,
                "node": self.node, "host": self.host, "port": self.port}


def access(info: ClusterInfo, local_port: int | None = None, login_host: str | None = None,
           user: str | None = None, this_host: str | None = None) -> DashboardAccess:
    """How the owner of ``info``'s cluster opens its dashboard, from this machine and from their own computer.

    ``local_port`` is the laptop's end of the tunnel (default: the dashboard's port); ``login_host``
    the ``-J`` jump host (default: this machine's name; ``""`` for none); ``user`` the account on
    the cluster (default: this one). Raises ``LookupError`` when the file names no dashboard.
    """
    dashboard = info.dashboard
    if dashboard is None:
        raise LookupError(f"{info.path} names no dashboard (its scheduler runs without one)")
    this_host = this_host if this_host is not None else socket.gethostname()
    user = user or getpass.getuser()
    if not is_loopback(dashboard.host) and dashboard.host not in ("", "0.0.0.0", "::", "[::]"):
        url = _page(dashboard.host, dashboard.port, dashboard.token)
        return DashboardAccess(url, None, url, dashboard.node, dashboard.host, dashboard.port)
    if not is_loopback(dashboard.host):  # every interface: the scheduler's own address reaches it
        url = _page(host_and_port(info.address)[0], dashboard.port, dashboard.token)
        return DashboardAccess(url, None, url, dashboard.node, dashboard.host, dashboard.port)
    port = local_port or dashboard.port
    forward = ("-L", f"{port}:{dashboard.host.strip('[]') or '127.0.0.1'}:{dashboard.port}")
    on_this_machine = dashboard.node is None or _same_host(dashboard.node, this_host)
    here = _page(dashboard.host, dashboard.port, dashboard.token) if on_this_machine else None
    if on_this_machine:
        target = f"{user}@{login_host or _this_machine()}"
        tunnel: tuple[str, ...] = ("ssh", "-N", *forward, target)
    else:
        jump = login_host if login_host is not None else _this_machine()
        tunnel = ("ssh", "-N", *forward, *(("-J", f"{user}@{jump}") if jump else ()), f"{user}@{dashboard.node}")
    return DashboardAccess(_page("localhost", port, dashboard.token), tunnel, here, dashboard.node, dashboard.host,
                           dashboard.port)


def link(info: ClusterInfo | None, fallback: str) -> str:
    """The dashboard's link as the bridge prints it: the URL that works here, or the local URL and the tunnel to run first.

    ``fallback`` (distributed's own link) is used for a file that names no dashboard.
    """
    if info is None or info.dashboard is None:
        return fallback
    try:
        reach = access(info)
    except LookupError:
        return fallback
    if reach.here is not None:
        return reach.here
    job = f"; hpcbridge dashboard {info.job_id} prints it again" if info.job_id else ""
    return f"{reach.url} through an ssh tunnel to {reach.node}, on your computer: {reach.tunnel_text}{job}"


def _this_machine() -> str:
    """This machine's name as others reach it: its full name, or its host name when that resolves to localhost."""
    full = socket.getfqdn()
    return socket.gethostname() if not full or full.startswith("localhost") else full


def _same_host(node: str, this_host: str) -> bool:
    return node.split(".")[0].lower() == this_host.split(".")[0].lower()


def _page(host: str, port: int, token: str | None) -> str:
    """The dashboard's status page at ``host:port``, with the token that opens it."""
    return f"http://{_url_host(host)}:{port}/status" + (f"?token={quote(token, safe='')}" if token else "")


def _url_host(host: str) -> str:
    host = host.strip("[]")
    return f"[{host}]" if ":" in host else host


__all__ = ["Dashboard", "DashboardAccess", "access", "is_loopback", "link"]
