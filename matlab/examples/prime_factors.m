%PRIME_FACTORS The hpcbridge demo from MATLAB: sum the distinct prime factors of 2..N-1.
%   Submit a cluster first, e.g. from a shell:
%     hpcbridge submit --scheduler slurm --nodes 2 --ntasks-per-node 4 --json
%   then set HPCBRIDGE_SCHEDULER_FILE (or schedulerFile below) to the file the
%   job writes, and run this script.
%   Uses hpcbridge.workloads.primes:sum_prime_factors, which ships with hpcbridge, and
%   shows a broadcast with your own Python function (prime_weights.py, next
%   to this script).

schedulerFile = getenv('HPCBRIDGE_SCHEDULER_FILE');
if isempty(schedulerFile)
    schedulerFile = '~/.hpcbridge/jobs/4242/scheduler.json';
end
upper = 1e6;

c = hpcbridge.connect(schedulerFile, 'Workers', 2, 'Timeout', 600);
fprintf('dashboard: %s\n', c.dashboard);

% Ranges [low, high) as rows of an int64 matrix; int64 reaches Python exactly.
edges = int64(round(linspace(2, upper, 101)));
ranges = [edges(1:end-1)', edges(2:end)'];
run = hpcbridge.map(c, 'hpcbridge.workloads.primes:sum_prime_factors', ranges);   % one item per row
sums = hpcbridge.gather(c, run);
fprintf('sum of distinct prime factors below %d: %d\n', upper, sum(sums));

% A broadcast: every worker gets the weights once; your function gets them as a NumPy array.
w = hpcbridge.broadcast(c, rand(1, 1000));
here = fileparts(mfilename('fullpath'));
run = hpcbridge.map(c, [fullfile(here, 'prime_weights.py') ':weighted'], 1:999, 'Broadcast', w);
weighted = hpcbridge.gather(c, run, 'Timeout', 600);
hpcbridge.release(c, w);
hpcbridge.close(c);
