function text = logs(job, varargin)
%LOGS A cluster job's output: the scheduler's and the workers' messages.
%   hpcbridge.logs(JOB) prints it; TEXT = hpcbridge.logs(JOB) returns it.
%   hpcbridge.logs(JOB, 'Tail', N) only the last N lines.
%   hpcbridge.logs(JOB, 'Scheduler', 'pbs') names the batch system.
%
%   See also hpcbridge.status, hpcbridge.list.

p = inputParser;
p.FunctionName = 'hpcbridge.logs';
p.KeepUnmatched = true;
addParameter(p, 'Tail', 0, @(x) isnumeric(x) && isscalar(x) && x >= 0 && x == fix(x));
parse(p, varargin{:});
rest = reshape([fieldnames(p.Unmatched)'; struct2cell(p.Unmatched)'], 1, []);
[id, scheduler] = hpcbridge.jobId('hpcbridge.logs', job, rest);
said = char(py.hpcbridge.matlab.logs(id, scheduler, double(p.Results.Tail)));
hpcbridge.pythonWarnings();
if nargout > 0
    text = said;
else
    fprintf('%s', said);
end
end
