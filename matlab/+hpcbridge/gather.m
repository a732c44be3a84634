function results = gather(cluster, run, varargin)
%GATHER Wait for a run and return its results in input order.
%   RESULTS = hpcbridge.gather(CLUSTER, RUN) waits (showing the percentage
%   done) and returns the results, converted to MATLAB types: numeric scalar
%   results as one row vector (int64 exact), arrays as arrays, anything
%   else as a cell array. The cluster then forgets the run.
%
%   Options (name-value pairs):
%     'Timeout'  - seconds to wait (default Inf). On timeout an error is
%                  raised and the run stays on the cluster: gather it later.
%     'Stack'    - true to stack array results into one array whose first
%                  dimension is the item
%     'Progress' - false to print nothing while waiting
%
%   A failing item raises an error that names the item (counting from 1, as
%   MATLAB does) and carries the Python traceback from the worker. Chunks
%   that could not be saved in the run directory (full, deleted, read-only)
%   are said by a warning (hpcbridge:runDirectory) naming the folder and why.
%
%   See also hpcbridge.map, hpcbridge.fromPython.

p = inputParser;
p.FunctionName = 'hpcbridge.gather';
addRequired(p, 'cluster');
addRequired(p, 'run', @(x) ischar(x) || isstring(x));
addParameter(p, 'Timeout', Inf, @(x) isnumeric(x) && isscalar(x) && x >= 0);
addParameter(p, 'Stack', false, @(x) islogical(x) || isnumeric(x));
addParameter(p, 'Progress', true, @(x) islogical(x) || isnumeric(x));
parse(p, cluster, run, varargin{:});
opts = p.Results;

file = hpcbridge.clusterFile(opts.cluster);
name = char(opts.run);
deadline = tic;
shown = -1;
% Wait in short Python calls: Python threads do not run while MATLAB code does.
while true
    left = opts.Timeout - toc(deadline);
    status = struct(py.hpcbridge.client.matlab.wait(file, name, min(1.0, max(0, left))));
    done = double(status.done);
    total = max(1, double(status.total));
    percent = floor(100 * done / total);
    if opts.Progress && percent >= shown + 10
        fprintf('%s: %d%% (%d/%d items)\n', name, percent, done, double(status.total));
        shown = percent;
    end
    if logical(status.finished)
        break
    end
    if left <= 0
        error('hpcbridge:timeout', ['run %s: %d of %d items done after %g s; the results stay on ' ...
            'the cluster: gather them later with hpcbridge.gather(c, ''%s'')'], ...
            name, done, double(status.total), opts.Timeout, name);
    end
end
% Every chunk is done: the results only have to travel.
results = hpcbridge.fromPython(py.hpcbridge.client.matlab.gather(file, name, Inf, logical(opts.Stack)));
showNotices(file, name);
end

function showNotices(file, name)
% What gathering said beside the results (e.g. chunks the run directory could not take), as warnings.
said = hpcbridge.fromPython(py.hpcbridge.client.matlab.notices(file, name));
for k = 1:numel(said)
    warning('hpcbridge:runDirectory', '%s', said{k});
end
end
