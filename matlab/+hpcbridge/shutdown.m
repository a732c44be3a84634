function shutdown(cluster)
%SHUTDOWN End the cluster: its scheduler, its workers and its batch job.
%   hpcbridge.shutdown(CLUSTER)
%
%   See also hpcbridge.close.

py.hpcbridge.client.matlab.shutdown(hpcbridge.clusterFile(cluster));
end
