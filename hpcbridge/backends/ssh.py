"""The ssh backend: a host list instead of a batch system, as ``dask-ssh --hostfile`` has it.

The rendered script (``templates/ssh/scheduler-file.sh.j2``) runs on this machine exactly as a
local job does: the Dask scheduler runs here, and the script starts each host's workers with
plain ``ssh`` (batch mode, the user's keys). So the job is kept like a local one, in a folder
under ``$HPCBRIDGE_HOME/ssh`` with its script, output and exit code, and cancelling it signals
the script's process group. That ends its ssh connections, and every worker on the hosts stops
when its connection closes, so nothing is left running there.
"""

from __future__ import annotations

from hpcbridge.backends.local import LocalBackend


class SSHBackend(LocalBackend):
    """Jobs whose workers start over ssh on a host list; job ids look like ``ssh-1a2b3c4d``."""

    name = "ssh"
