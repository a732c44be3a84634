function [values, missing, reason] = results(cluster, run, varargin)
%RESULTS The results of a run by name: from the cluster, or from disk once it is gone.
%   VALUES = hpcbridge.results(CLUSTER, RUN) is hpcbridge.gather for a run
%   started by any session, also after its cluster ended (walltime, a
%   cancelled job, a failed node): the chunks saved on disk are read back.
%   Items that have no result raise an error that names the cause and says
%   how many items are missing.
%
%   [VALUES, MISSING, REASON] = hpcbridge.results(..., 'Partial', true)
%   returns what there is instead: numeric results with NaN where an item
%   has none (others: an empty cell), MISSING the indices of those items
%   (1-based): items lost with the cluster, and items that failed (an error
%   in the function, or the item ended its worker process), REASON why
%   they are missing ('' when none is).
%
%   Options (name-value pairs): 'Timeout' (seconds, default Inf), 'Stack'
%   (as for hpcbridge.gather), 'Partial' (default false).
%
%   Resume a run whose job ended: hpcbridge.map(c, FUNC, ITEMS, 'Name', RUN)
%   on a new cluster computes only the missing items.
%
%   See also hpcbridge.gather, hpcbridge.map, hpcbridge.runs.

p = inputParser;
p.FunctionName = 'hpcbridge.results';
addRequired(p, 'cluster');
addRequired(p, 'run', @(x) ischar(x) || isstring(x));
addParameter(p, 'Timeout', Inf, @(x) isnumeric(x) && isscalar(x) && x >= 0);
addParameter(p, 'Stack', false, @(x) islogical(x) || isnumeric(x));
addParameter(p, 'Partial', false, @(x) islogical(x) || isnumeric(x));
parse(p, cluster, run, varargin{:});
opts = p.Results;

file = hpcbridge.clusterFile(opts.cluster);
if ~logical(opts.Partial)
    values = hpcbridge.fromPython(py.hpcbridge.client.matlab.results(file, char(opts.run), opts.Timeout, ...
        logical(opts.Stack), false));
    missing = zeros(1, 0);
    reason = '';
    showNotices(file, char(opts.run));
    return
end
got = struct(py.hpcbridge.client.matlab.results(file, char(opts.run), opts.Timeout, logical(opts.Stack), true));
values = hpcbridge.fromPython(got.values);
missing = double(hpcbridge.fromPython(got.missing));
reason = char(got.reason);
showNotices(file, char(opts.run));
end

function showNotices(file, name)
% What collecting said beside the results (e.g. chunks the run directory could not take), as warnings.
said = hpcbridge.fromPython(py.hpcbridge.client.matlab.notices(file, name));
for k = 1:numel(said)
    warning('hpcbridge:runDirectory', '%s', said{k});
end
end
