"""The dashboard's gate: only a browser that brought the job's token gets a page.

Dask's dashboard has no login. A job's dashboard listens on 127.0.0.1 of the scheduler's node,
which keeps the network out, but not the other users of that node (a compute node shared with
other jobs, the login node of a local cluster): they reach 127.0.0.1 too. So the job makes a
random token at each start, in ``HPCBRIDGE_DASHBOARD_TOKEN`` (the environment of its own
processes, which other users cannot read), records it in the owner-only scheduler file, and
runs this module as a scheduler preload (``--preload hpcbridge.cluster.dashboard_gate``):

- a request with ``?token=<the token>`` gets a cookie and is sent on to the same page without it
  (the link ``hpcbridge dashboard JOB`` and ``Bridge.dashboard_link`` print carries it);
- a request with the cookie is served, bokeh's own requests and its websocket included;
- any other gets ``403`` and a line saying where the link is.

Every route of the scheduler's HTTP server goes through the gate (pages, ``/metrics``, the JSON
routes, bokeh's JavaScript). The workers serve no pages (``--no-dashboard``), only counts
(``/metrics``, ``/health``) on their node's 127.0.0.1. The preload also has the dashboard serve
BokehJS itself, whatever ``BOKEH_RESOURCES`` its owner's environment brings
(:func:`serve_own_javascript`): a compute node may have no internet access.
"""

from __future__ import annotations

import hmac
import os
from typing import Any
from urllib.parse import urlencode

from tornado import web

TOKEN_VARIABLE = "HPCBRIDGE_DASHBOARD_TOKEN"
REFUSAL = "This dashboard is its owner's alone: open the link that hpcbridge dashboard JOB prints.\n"


def cookie_name(port: int) -> str:
    """The cookie of the dashboard on ``port`` (browsers keep one cookie jar for every port of a host)."""
    return f"hpcbridge-dashboard-{port}"


def dask_setup(scheduler: Any) -> None:
    """The preload's hook: gate the scheduler's HTTP server with the job's token.

    Without a token the scheduler does not start: a dashboard that anyone on its node can read
    is not started silently.
    """
    token = os.environ.get(TOKEN_VARIABLE, "")
    if not token:
        raise RuntimeError(f"hpcbridge.cluster.dashboard_gate: {TOKEN_VARIABLE} is not set; the dashboard would be "
                           "open to every user of this node")
    serve_own_javascript()
    if getattr(scheduler, "http_application", None) is not None:
        guard(scheduler.http_application, token, scheduler.http_server.port)


def serve_own_javascript() -> None:
    """Have this process's bokeh server pages load BokehJS from the dashboard itself, never from a CDN.

    Bokeh reads ``BOKEH_RESOURCES`` from the environment, which a job inherits from its owner's
    (``cdn`` is a common choice for notebooks); its pages then load BokehJS from cdn.bokeh.org, and
    on a compute node without internet access (many sites) the dashboard shows its frame and no plot.
    A value set through bokeh's settings outranks the environment; it is read at each page.
    Without bokeh there is nothing to set (Dask's pages then only say that it needs bokeh).
    """
    try:
        from bokeh.settings import settings
    except ImportError:
        return
    settings.resources.set_value("server")


def guard(application: web.Application, token: str, port: int) -> None:
    """Let only requests that bring ``token`` (once) or its cookie through to ``application``'s handlers."""
    cookie = cookie_name(port)
    expected = token.encode()
    find_handler = application.find_handler

    def gated(request: Any, **kwargs: Any) -> Any:
        given = request.cookies.get(cookie)
        if given is not None and hmac.compare_digest(given.value.encode(errors="replace"), expected):
            return find_handler(request, **kwargs)
        offered = request.query_arguments.get("token")
        if offered and hmac.compare_digest(offered[-1], expected):
            return application.get_handler_delegate(request, _Admit, {"cookie": cookie, "token": token})
        return application.get_handler_delegate(request, _Refuse)

    application.find_handler = gated  # type: ignore[method-assign]  # tornado's router asks the instance


class _Admit(web.RequestHandler):
    """Give the browser the cookie, and send it on to the page it asked for, without the token in its address."""

    def initialize(self, cookie: str, token: str) -> None:
        self.cookie, self.token = cookie, token

    def get(self) -> None:
        self.set_cookie(self.cookie, self.token, httponly=True, samesite="Lax")
        rest = [(key, value.decode(errors="replace")) for key, values in self.request.query_arguments.items()
                if key != "token" for value in values]
        self.redirect(self.request.path + (f"?{urlencode(rest)}" if rest else ""))


class _Refuse(web.RequestHandler):
    """403 for every request that brings neither the token nor its cookie."""

    def prepare(self) -> None:
        self.set_status(403)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(REFUSAL)
