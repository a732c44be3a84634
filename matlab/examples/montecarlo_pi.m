%MONTECARLO_PI Monte Carlo estimates of pi at 1200 sample sizes from 1e3 to 1e7 on a Dask cluster.
%   The MATLAB version of examples/montecarlo.py. Every size has its own
%   random stream on the workers (seeded by seed and the size's index), so
%   the table is the same on any number of workers, and the same as the
%   Python example's with the same seed. The sizes go out in a shuffled
%   order, so that the connector times typical items first. Writes a table
%   (CSV) and a log-log plot of the error against the sample size.
%   Needs MATLAB R2022b or newer (the toolbox's Python 3.10; table and
%   writetable). GNU Octave has no table: the Python example writes the same
%   columns (examples/montecarlo.py --csv), and from Python
%   hpcbridge.workloads.montecarlo.Table.columns() gives them for pandas.

schedulerFile = getenv('HPCBRIDGE_SCHEDULER_FILE');
if isempty(schedulerFile)
    schedulerFile = '~/.hpcbridge/jobs/4242/scheduler.json';
end
seed = 2024;
sizes = unique(round(logspace(3, 7, 1200)));
assert(numel(sizes) == 1200);

c = hpcbridge.connect(schedulerFile, 'Workers', 2, 'Timeout', 600);
tasks = int64([(0:numel(sizes) - 1)', sizes', repmat(seed, numel(sizes), 1)]);   % rows: index, n, seed
order = randperm(numel(sizes));
t = tic;
run = hpcbridge.map(c, 'hpcbridge.workloads.montecarlo:estimate_pi', tasks(order, :));
shuffled = hpcbridge.gather(c, run);
seconds = toc(t);
estimate = zeros(numel(sizes), 1);
estimate(order) = shuffled;
n = sizes';
err = abs(estimate - pi);
expected = sqrt(pi * (4 - pi) ./ n);
results = table(n, estimate, err, expected, 'VariableNames', {'n', 'estimate', 'abs_error', 'expected_error'});
writetable(results, 'montecarlo_matlab.csv');
fit = polyfit(log(n(err > 0)), log(err(err > 0) .^ 2), 1);
fprintf('%d sizes, %.3g points in %.2f s on %d workers; error ~ n^%.3f (theory -0.5)\n', ...
        numel(n), sum(n), seconds, c.workers, fit(1) / 2);
loglog(n, err, '.', n, expected, '-');
xlabel('sample size n'); ylabel('error'); grid on;
legend('|estimate - pi|', 'standard error sqrt(pi(4-pi)/n)');
saveas(gcf, 'montecarlo_matlab.png');
hpcbridge.close(c);
