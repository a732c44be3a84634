function s = status(job, varargin)
%STATUS A cluster job's state, why it waits or how it ended.
%   S = hpcbridge.status(JOB) takes the job id (char, or a number such as
%   4242) or the struct hpcbridge.submit returned, and returns a struct:
%     state     - PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT...
%     reason    - why it waits or ended, in the batch system's words
%     ended     - why the cluster ended itself, e.g. 'ended after 30 min
%                 idle: no client and no task for that long' ('' if not)
%     exit_code, log, finished
%
%   S = hpcbridge.status(JOB, 'Scheduler', 'pbs') names the batch system
%   of a job not submitted from this account.
%
%   See also hpcbridge.submit, hpcbridge.logs, hpcbridge.list.

[id, scheduler] = hpcbridge.jobId('hpcbridge.status', job, varargin);
s = hpcbridge.fromPython(py.hpcbridge.matlab.status(id, scheduler));
hpcbridge.pythonWarnings();
end
