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
%   CLUSTER = hpcbridge.connect('Scheduler', 'slurm', 'Nodes', 2, ...,
%   'Workers', N) starts a cluster first: job options as hpcbridge.submit
%   takes them (the first argument an option's name, such as 'Scheduler'
%   or 'Nodes'), then waits for it as above; CLUSTER also has job_id and
%   scheduler. End it with hpcbridge.shutdown(CLUSTER) or
%   hpcbridge.cancel(CLUSTER.job_id); left without a client and a task for
%   'IdleTimeout' (default 30 min) it ends itself.
%
%   Example
%     c = hpcbridge.connect('~/.hpcbridge/jobs/4242/scheduler.json', 'Workers', 8);
%     disp(c.dashboard)
%
%   Needs MATLAB R2022b or newer with a Python 3.10 (R2022b), 3.11 (R2023b)
%   or 3.12 (R2024b) environment where hpcbridge is installed (see pyenv).
%
%   See also hpcbridge.broadcast, hpcbridge.map, hpcbridge.gather, hpcbridge.close.

if isOptions(schedulerFile, varargin)
    % Job options instead of a file: submit the cluster, then attach to it.
    pairs = [{schedulerFile}, varargin];
    names = cellfun(@(x) lower(char(x)), pairs(1:2:end), 'UniformOutput', false);
    own = ismember(names, {'workers', 'timeout'});
    workers = 1;
    timeout = 300;
    for k = find(own)
        value = pairs{2 * k};
        if ~(isnumeric(value) && isscalar(value) && value >= 0)
            error('hpcbridge:connect', 'hpcbridge.connect: ''%s'' takes a number >= 0', pairs{2 * k - 1});
        end
        if strcmp(names{k}, 'workers')
            workers = value;
        else
            timeout = value;
        end
    end
    jobPairs = pairs(reshape([~own; ~own], 1, []));
    options = hpcbridge.jobOptions('hpcbridge.connect', jobPairs);
    info = py.hpcbridge.matlab.connect(options, double(workers), double(timeout));
    cluster = hpcbridge.fromPython(info);
    hpcbridge.pythonWarnings();
    return
end

p = inputParser;
p.FunctionName = 'hpcbridge.connect';
addRequired(p, 'schedulerFile', @(x) ischar(x) || isstring(x));
addParameter(p, 'Workers', 1, @(x) isnumeric(x) && isscalar(x) && x >= 0 && x == fix(x));
addParameter(p, 'Timeout', 300, @(x) isnumeric(x) && isscalar(x) && x >= 0);
parse(p, schedulerFile, varargin{:});
opts = p.Results;

info = py.hpcbridge.client.matlab.connect(char(opts.schedulerFile), int64(opts.Workers), double(opts.Timeout));
cluster = hpcbridge.fromPython(info);
hpcbridge.pythonWarnings();
end

function yes = isOptions(first, rest)
% Job options start with an option's name and come in pairs; a scheduler file is a path.
known = {'scheduler', 'nodes', 'ntasks', 'ntaskspernode', 'ntasks_per_node', 'ntasks-per-node', ...
    'cpuspertask', 'cpus_per_task', 'cpus-per-task', 'walltime', 'time', 'mode', 'account', 'queue', ...
    'partition', 'idletimeout', 'idle_timeout', 'idle-timeout', 'mempercpu', 'mem_per_cpu', ...
    'mem-per-cpu', 'mem', 'jobname', 'job_name', 'job-name', 'interface', 'module', 'modules'};
yes = (ischar(first) || (isstring(first) && isscalar(first))) && any(strcmpi(char(first), known)) ...
    && mod(numel(rest), 2) == 1;
end
