function file = clusterFile(cluster)
%CLUSTERFILE The scheduler file's path behind a cluster argument.
%   FILE = hpcbridge.clusterFile(CLUSTER) accepts the struct hpcbridge.connect
%   returns, or the path itself (char or string), and returns the path as a
%   char vector: the cluster handle every hpcbridge function passes to Python.
%
%   See also hpcbridge.connect.
if isstruct(cluster)
    file = cluster.cluster;
else
    file = char(cluster);
end
end
