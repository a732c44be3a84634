function close(cluster)
%CLOSE Detach this MATLAB session from the cluster.
%   hpcbridge.close(CLUSTER) closes the connection. The cluster keeps
%   running, with its broadcasts and runs; hpcbridge.connect attaches again.
%   To end the cluster and its batch job, use hpcbridge.shutdown.
%
%   See also hpcbridge.connect, hpcbridge.shutdown.

py.hpcbridge.client.matlab.close(hpcbridge.clusterFile(cluster));
end
