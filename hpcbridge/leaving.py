"""How a worker that leaves before its job's walltime says so: the names its readers look for.

:mod:`hpcbridge.cluster.drain` (in every worker) reports its leave time in each heartbeat and logs
an event on the scheduler once it has left; the adaptive scheduler (:mod:`hpcbridge.job.adaptive_scheduler`)
reads the first to submit a replacement job in time, clients (:mod:`hpcbridge.client.watch`) read
the second to say that the walltime, not a fault, ended a run. One owner for both names.
"""

EVENT_TOPIC = "hpcbridge-drain"
LEAVE_METRIC = "hpcbridge_leave_at"  # in each heartbeat: when this worker stops taking chunks
