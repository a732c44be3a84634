function cluster = connect(schedulerFile, varargin)
%CONNECT Attach to a Dask cluster through its scheduler file.
%   CLUSTER = hpcbridge.connect(SCHEDULERFILE) waits until SCHEDULERFILE
%   exists (the batch job may still be queued), then for the scheduler and
%   one worker, and returns a struct with fields
%     cluster   - the scheduler file's absolute path: pass it to every other
%                 hpcbridge function (a plain char vector, never a Python object)
%     workers   - workers connected now
%     threads   - their threads in all
%     dashboard - how to open Dask's dashboard: its URL (with the job's
%                 token), or, for a dashboard on a compute node, that URL
%                 and the ssh tunnel to run first (hpcbridge dashboard JOB)
%
%   CLUSTER = hpcbridge.connect(SCHEDULERFILE, 'Workers', N, 'Timeout', T)
%   waits for N workers, T seconds in all (default 300).
%
%   Example
%     c = hpcbridge.connect('~/.hpcbridge/jobs/4242/scheduler.json', 'Workers', 8);
%     disp(c.dashboard)
%
%   Needs MATLAB R2022b or newer with a Python 3.10 (R2022b), 3.11 (R2023b)
%   or 3.12 (R2024b) environment where hpcbridge is installed (see pyenv).
%
%   See also hpcbridge.broadcast, hpcbridge.map, hpcbridge.gather, hpcbridge.close.

p = inputParser;
p.FunctionName = 'hpcbridge.connect';
addRequired(p, 'schedulerFile', @(x) ischar(x) || isstring(x));
addParameter(p, 'Workers', 1, @(x) isnumeric(x) && isscalar(x) && x >= 0 && x == fix(x));
addParameter(p, 'Timeout', 300, @(x) isnumeric(x) && isscalar(x) && x >= 0);
parse(p, schedulerFile, varargin{:});
opts = p.Results;

info = py.hpcbridge.client.matlab.connect(char(opts.schedulerFile), int64(opts.Workers), double(opts.Timeout));
cluster = hpcbridge.fromPython(info);
end
