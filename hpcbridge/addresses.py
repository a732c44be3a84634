"""A Dask address (``proto://host:port``): its host and port, and what a connection to it finds.

The scheduler file, the TLS handshake and the loss reports all read addresses: one owner parses them.
"""

from __future__ import annotations

import errno
import socket


def host_and_port(address: str) -> tuple[str, int]:
    """The host (brackets of an IPv6 address removed) and port of ``proto://host:port``; ValueError without a port.

    >>> host_and_port("tls://10.0.0.5:8786"), host_and_port("tcp://[::1]:41234")
    (('10.0.0.5', 8786), ('::1', 41234))
    """
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    return host.strip("[]"), int(port)


def address_answers(address: str, timeout: float = 2.0) -> bool:
    """True when something accepts a TCP connection at the scheduler's address (``proto://host:port``)."""
    try:
        with socket.create_connection(host_and_port(address), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def address_silent(address: str, timeout: float = 2.0) -> bool:
    """True when a TCP connection to ``address`` (``proto://host:port``) times out or finds no route,
    rather than being refused or accepted: the host is cut off, not just the scheduler process gone."""
    try:
        with socket.create_connection(host_and_port(address), timeout=timeout):
            return False
    except (TimeoutError, socket.timeout):
        return True
    except OSError as error:
        return error.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT)
    except ValueError:
        return False


def is_loopback(host: str) -> bool:
    """Whether ``host`` names the loopback of the machine it is on: 127.x.y.z, ::1 (bracketed or not), localhost.

    >>> is_loopback("127.0.0.1"), is_loopback("[::1]"), is_loopback("localhost"), is_loopback(""), is_loopback("0.0.0.0")
    (True, True, True, False, False)
    """
    host = host.strip("[]").lower()
    parts = host.split(".")
    return host in ("localhost", "::1") or (len(parts) == 4 and parts[0] == "127" and all(p.isdigit() for p in parts))
