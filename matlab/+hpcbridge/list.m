function clusters = list()
%LIST My clusters on every batch system this machine submitted to.
%   CLUSTERS = hpcbridge.list() returns a struct array, one element per
%   cluster job that runs, waits, or ended in the last 7 days, with fields
%     job_id, scheduler, name, state, reason
%     workers        - workers connected now (NaN when not known)
%     walltime_left  - seconds (NaN without a walltime, or not running)
%     core_hours     - cores times the hours since its scheduler started
%     ended          - why it ended itself, e.g. 'ended after 30 min idle...'
%     scheduler_file - pass it to hpcbridge.connect
%   Without an output it prints them as hpcbridge list does.
%
%   See also hpcbridge.status, hpcbridge.submit, hpcbridge.cancel.

found = hpcbridge.fromPython(py.hpcbridge.matlab.clusters());
hpcbridge.pythonWarnings();
if isempty(found)
    found = struct([]);
else
    found = [found{:}];
end
if nargout > 0
    clusters = found;
    return
end
if isempty(found)
    disp('no clusters (none submitted from this account in the last 7 days)');
end
for k = 1:numel(found)
    c = found(k);
    fprintf('%-16s %-6s %-10s workers %-4s %s\n', c.job_id, c.scheduler, c.state, ...
        num2str(c.workers), c.ended);
end
end
