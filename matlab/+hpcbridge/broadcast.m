function handle = broadcast(cluster, value, varargin)
%BROADCAST Send a value to every worker once, to use in hpcbridge.map.
%   HANDLE = hpcbridge.broadcast(CLUSTER, VALUE) sends VALUE (a numeric
%   array, a struct, a cell, text) from MATLAB to one worker; the workers
%   copy it from each other, also workers that join later. It stays on
%   every worker until hpcbridge.release. HANDLE is a struct:
%     name    - pass it to hpcbridge.map
%     nbytes  - bytes that left MATLAB (once, whatever the number of workers)
%     seconds - time until every worker held it
%     workers - workers that held it then
%
%   HANDLE = hpcbridge.broadcast(CLUSTER, VALUE, 'Name', NAME) chooses the
%   name, so that other sessions can use it.
%
%   Numeric arrays reach Python as NumPy arrays of the same class and shape
%   (int64 exact); structs as dicts; cells as lists.
%
%   See also hpcbridge.map, hpcbridge.release, hpcbridge.toPython.

p = inputParser;
p.FunctionName = 'hpcbridge.broadcast';
addRequired(p, 'cluster', @isClusterArgument);
addRequired(p, 'value');
addParameter(p, 'Name', '', @(x) ischar(x) || isstring(x));
parse(p, cluster, value, varargin{:});
opts = p.Results;

info = py.hpcbridge.client.matlab.broadcast(hpcbridge.clusterFile(opts.cluster), hpcbridge.toPython(opts.value), char(opts.Name));
handle = hpcbridge.fromPython(info);
end

function ok = isClusterArgument(x)
ok = isstruct(x) || ischar(x) || isstring(x);
end
