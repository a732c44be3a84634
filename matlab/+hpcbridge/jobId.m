function [id, scheduler] = jobId(caller, job, pairs)
%JOBID The job id and batch system from a job argument and an optional 'Scheduler' pair.
%   [ID, SCHEDULER] = hpcbridge.jobId(CALLER, JOB, PAIRS) accepts the struct
%   hpcbridge.submit returned, a char vector or string, or a whole number
%   (a Slurm id typed as 4242), and returns the id as a char vector.
%
%   See also hpcbridge.status, hpcbridge.cancel, hpcbridge.logs.

p = inputParser;
p.FunctionName = caller;
addParameter(p, 'Scheduler', '', @(x) ischar(x) || isstring(x));
parse(p, pairs{:});
scheduler = char(p.Results.Scheduler);
if isstruct(job) && isfield(job, 'job_id')
    if isempty(scheduler) && isfield(job, 'scheduler')
        scheduler = char(job.scheduler);
    end
    job = job.job_id;
end
if isnumeric(job) && isscalar(job) && job == fix(job) && job >= 0
    id = sprintf('%d', job);
elseif ischar(job) || (isstring(job) && isscalar(job))
    id = char(job);
else
    error('hpcbridge:job', '%s: JOB is a job id (''4242'', 4242 or ''local-1a2b3c4d'') or the struct hpcbridge.submit returned', caller);
end
end
