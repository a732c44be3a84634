function run = map(cluster, func, items, varargin)
%MAP Start a Python function on every item, on the cluster; return at once.
%   RUN = hpcbridge.map(CLUSTER, FUNC, ITEMS) starts FUNC(item) for every
%   item and returns the run's name (a char vector). Collect the results
%   with hpcbridge.gather(CLUSTER, RUN).
%
%   FUNC names a Python function: 'module:function' for an installed module
%   (e.g. 'numpy:dot'), or 'path/to/file.py:function' for your own file,
%   which hpcbridge ships to the workers.
%   ITEMS is a cell array (each element is an item), a numeric vector (each
%   number), a numeric matrix (each row) or a scalar (one item).
%   It returns at once: the short probes that size the tasks go on in
%   Python during your next hpcbridge call (hpcbridge.gather waits for them).
%
%   Options (name-value pairs):
%     'Broadcast' - a broadcast handle or name, or a cell of them: FUNC is
%                   called as FUNC(item, value1, value2, ...)
%     'Name'      - the run's name (default: run-<date>-<time>-<random>)
%     'Stack'     - true to stack array results on the workers
%     'ChunkSize' - items per task; default 0 measures the function's time
%                   and sizes the tasks from it
%     'Save'      - false to keep finished chunks only in the cluster's
%                   memory (default true: saved on disk as they finish)
%     'ItemTimeout' - seconds an item may run (default Inf: no limit); one
%                   that runs longer is ended (its worker process is ended
%                   and started again) and fails with an error naming it
%
%   The run belongs to the cluster: if MATLAB exits or the connection is
%   lost, the work goes on and a new session collects it by name. Finished
%   chunks are also saved on disk, so they outlive the cluster: a 'Name'
%   whose run is on disk from an earlier job resumes it, computing only the
%   items without a saved result.
%
%   Example
%     w = hpcbridge.broadcast(c, weights);
%     run = hpcbridge.map(c, 'scoring.py:score', candidates, 'Broadcast', w);
%     scores = hpcbridge.gather(c, run);
%
%   See also hpcbridge.gather, hpcbridge.broadcast, hpcbridge.release.

if isa(func, 'function_handle')
    error('hpcbridge:map:functionHandle', ['hpcbridge.map: FUNC is a MATLAB function handle (%s), but the ' ...
        'workers run Python: name a Python function as text, ''module:function'' (e.g. ''numpy:sqrt'') or ' ...
        '''path/to/file.py:function'' for a function in your own file'], func2str(func));
end
p = inputParser;
p.FunctionName = 'hpcbridge.map';
addRequired(p, 'cluster');
addRequired(p, 'func', @(x) ischar(x) || isstring(x));
addRequired(p, 'items', @(x) iscell(x) || isnumeric(x) || islogical(x));
addParameter(p, 'Broadcast', {});
addParameter(p, 'Name', '', @(x) ischar(x) || isstring(x));
addParameter(p, 'Stack', false, @(x) islogical(x) || isnumeric(x));
addParameter(p, 'ChunkSize', 0, @(x) isnumeric(x) && isscalar(x) && x >= 0 && x == fix(x));
addParameter(p, 'Save', true, @(x) islogical(x) || isnumeric(x));
addParameter(p, 'ItemTimeout', Inf, @(x) isnumeric(x) && isscalar(x) && x > 0);
addParameter(p, 'Resources', struct(), @(x) isstruct(x) && isscalar(x));
parse(p, cluster, func, items, varargin{:});
opts = p.Results;

names = broadcastNames(opts.Broadcast);
run = char(py.hpcbridge.client.matlab.map(hpcbridge.clusterFile(opts.cluster), char(opts.func), ...
    hpcbridge.toPython(opts.items), names, char(opts.Name), logical(opts.Stack), int64(opts.ChunkSize), ...
    logical(opts.Save), double(opts.ItemTimeout), resourcesDict(opts.Resources)));
hpcbridge.pythonWarnings();
end

function names = broadcastNames(value)
if isstruct(value)
    value = arrayfun(@(h) h.name, value, 'UniformOutput', false);
elseif ischar(value) || isstring(value)
    value = cellstr(value);
end
names = cell(1, numel(value));
for k = 1:numel(value)
    if isstruct(value{k})
        names{k} = char(value{k}.name);
    else
        names{k} = char(value{k});
    end
end
names = py.tuple(names);
end

function resources = resourcesDict(value)
% A struct of resource amounts as a Python dict of floats (Dask's amounts), or None when empty.
names = fieldnames(value);
if isempty(names)
    resources = py.None;
    return
end
resources = py.dict();
for k = 1:numel(names)
    py.operator.setitem(resources, names{k}, double(value.(names{k})));
end
end
