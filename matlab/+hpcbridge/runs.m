function names = runs(cluster)
%RUNS Names of the runs the cluster holds (results not yet gathered).
%   NAMES = hpcbridge.runs(CLUSTER) returns a cell array of char vectors,
%   e.g. to find the run of a MATLAB session that ended before gathering.
%
%   See also hpcbridge.gather, hpcbridge.release.

names = hpcbridge.fromPython(py.hpcbridge.client.matlab.runs(hpcbridge.clusterFile(cluster)));
end
