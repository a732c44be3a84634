%PRIMEFACTOR_SUM Sum the distinct prime factors of every integer in [2, B) on a Dask cluster.
%   The MATLAB version of examples/primes.py. Set schedulerFile (or the
%   environment variable HPCBRIDGE_SCHEDULER_FILE) to the file your cluster
%   job writes, e.g. after `hpcbridge submit --scheduler slurm ...`, then run
%   this script. method 'sympy' calls sympy.primefactors on every number (the
%   connector groups the numbers into well-sized tasks); 'fast' sums
%   p * floor((B-1)/p) over the primes below B with a compiled sieve.
%   Exact answers: B = 1e4 -> 10218029, 1e6 -> 64986402077, 1e7 -> 5495501355056.

schedulerFile = getenv('HPCBRIDGE_SCHEDULER_FILE');
if isempty(schedulerFile)
    schedulerFile = '~/.hpcbridge/jobs/4242/scheduler.json';
end
B = 1e6;
method = 'sympy';      % or 'fast'
workers = 2;

c = hpcbridge.connect(schedulerFile, 'Workers', workers, 'Timeout', 600);
fprintf('sum of the distinct prime factors of every integer in [2, %d), method %s, %d workers\n', ...
        B, method, c.workers);
t = tic;
switch method
    case 'sympy'
        f = 'hpcbridge.workloads.primes:distinct_prime_factor_sum';
        run = hpcbridge.map(c, f, int64(2:B - 1), 'Stack', true);
        total = sum(int64(hpcbridge.gather(c, run, 'Stack', true)), 'native');
    case 'fast'
        n = max(c.workers, ceil((B - 2) / 2^24));            % segments of at most 2^24 numbers
        edges = int64(round(linspace(2, B, n + 1)));
        segments = [edges(1:end-1)', edges(2:end)', repmat(int64(B), n, 1)];  % rows: low, high, B
        run = hpcbridge.map(c, 'hpcbridge.workloads.primes:segment_contribution', segments, 'ChunkSize', 1);
        total = sum(int64(hpcbridge.gather(c, run)), 'native');
    otherwise
        error('method must be ''sympy'' or ''fast''');
end
fprintf('sum: %d\ntime: %.2f s\n', total, toc(t));
hpcbridge.close(c);
