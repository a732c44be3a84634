function shutdown(cluster)
%SHUTDOWN End the cluster: its scheduler, its workers and its batch job.
%   hpcbridge.shutdown(CLUSTER)
%
%   See also hpcbridge.close.

if isstruct(cluster)
    cluster = cluster.cluster;
end
py.hpcbridge.matlab.shutdown(char(cluster));
end
