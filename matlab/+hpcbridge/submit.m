function job = submit(varargin)
%SUBMIT Submit a Dask cluster as a batch job; return at once.
%   JOB = hpcbridge.submit('Scheduler', 'slurm', 'Nodes', 2, ...) takes the
%   options of the command line (hpcbridge submit --help) as name-value
%   pairs, spelled as MATLAB names ('NtasksPerNode', 'CpusPerTask',
%   'Walltime' or 'Time', 'Queue' or 'Partition', 'IdleTimeout', 'Module'...)
%   or as on the command line ('ntasks-per-node'). Counts are plain numbers
%   (2, not int64(2)); durations are numbers or text ('2h', '30m'); several
%   modules or setup lines are a cell array of char vectors. Options left
%   out come from the site profile, as on the command line.
%
%   JOB is a struct with fields job_id, scheduler and scheduler_file: pass
%   JOB.scheduler_file to hpcbridge.connect, JOB.job_id to hpcbridge.status,
%   hpcbridge.logs and hpcbridge.cancel.
%
%   A cluster with no client and no task for 'IdleTimeout' (default 30
%   minutes; 0 for never) ends itself; its runs stay on disk.
%
%   Example
%     job = hpcbridge.submit('Scheduler', 'slurm', 'Nodes', 2, ...
%         'NtasksPerNode', 4, 'Time', '2h', 'Account', 'proj42');
%     c = hpcbridge.connect(job.scheduler_file, 'Workers', 8);
%
%   See also hpcbridge.connect, hpcbridge.status, hpcbridge.cancel, hpcbridge.list.

options = hpcbridge.jobOptions('hpcbridge.submit', varargin);
job = hpcbridge.fromPython(py.hpcbridge.matlab.submit(options));
hpcbridge.pythonWarnings();
end
