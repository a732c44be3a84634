function release(cluster, handle)
%RELEASE Free a broadcast's copies or a run's results on the cluster.
%   hpcbridge.release(CLUSTER, HANDLE) takes a broadcast handle, or the name
%   of a broadcast or of a run.
%
%   See also hpcbridge.broadcast, hpcbridge.map.

p = inputParser;
p.FunctionName = 'hpcbridge.release';
addRequired(p, 'cluster');
addRequired(p, 'handle', @(x) isstruct(x) || ischar(x) || isstring(x));
parse(p, cluster, handle);
if isstruct(handle)
    handle = handle.name;
end
py.hpcbridge.client.matlab.release(hpcbridge.clusterFile(cluster), char(handle));
end
