"""What a plain ``distributed.Client`` needs to enter an hpcbridge cluster: :func:`security`.

An hpcbridge cluster speaks TLS with certificates its job made (beside the scheduler file, in
``scheduler.tls/``), so ``distributed.Client(scheduler_file=...)`` alone fails with distributed's
"TLS expects a ssl_context argument of type ssl.SSLContext": it reads the address but presents no
certificate. ``Client(address, security=hpcbridge.security(scheduler_file))`` presents the job's.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from hpcbridge import scheduler_file as cluster_files
from hpcbridge.client import arguments
from hpcbridge.client.attach import ConnectError, certificates_for

if TYPE_CHECKING:
    from distributed.security import Security


def security(scheduler_file: str | os.PathLike[str]) -> Security:
    """A ``distributed.Security`` that lets a plain Dask client into the cluster of ``scheduler_file``.

    For a TLS cluster it presents the certificates the scheduler file names (the job's own, beside
    it, or those in Dask's config), checked readable first; for a plain TCP cluster it is Dask's
    default ``Security()``. Raises :class:`~hpcbridge.client.attach.ConnectError` (one line) when
    the file is not there yet or the certificates cannot be read, and
    :class:`~hpcbridge.client.arguments.ArgumentError` for a value that is no path::

        from distributed import Client
        info = hpcbridge.security("~/.hpcbridge/jobs/4242/scheduler.json")
        client = Client(scheduler_file="~/.hpcbridge/jobs/4242/scheduler.json", security=info)
    """
    from distributed.security import Security

    path = arguments.scheduler_file("scheduler_file", scheduler_file)
    try:
        info = cluster_files.read(path)
    except FileNotFoundError:
        raise ConnectError(f"no scheduler file at {path} (yet): its job may still be queued, or has ended") from None
    except cluster_files.SchedulerFileError as error:
        raise ConnectError(str(error)) from None
    certificates = certificates_for(info, None)
    return certificates.security() if certificates is not None else Security()
