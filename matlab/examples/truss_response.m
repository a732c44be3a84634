%TRUSS_RESPONSE Direct frequency response of a 2-D truss, frequencies spread over a Dask cluster.
%   The MATLAB version of examples/truss.py. MATLAB assembles K, C = 0.004 K
%   and the lumped M of a cantilever of nx x ny square cells (sides and both
%   diagonals, steel bars), supported at x = 0, loaded in +y at the top right
%   node. Bring your own K, C, M and b instead: any sparse symmetric matrices.
%   They go to the workers once, as (row, column, value) triplets; each worker
%   builds the sparsity pattern (and MKL PARDISO's analysis, when MKL is
%   installed) once, then factorises per frequency.
%   (K + i w C - w^2 M) x = b is solved at every w; the script plots |x| at
%   the load against frequency and prints the largest residual.
%   Needs MATLAB R2022b or newer (the toolbox's Python 3.10; eigs with
%   'smallestabs' exists since R2017b; GNU Octave's eigs spells it 'sm').

schedulerFile = getenv('HPCBRIDGE_SCHEDULER_FILE');
if isempty(schedulerFile)
    schedulerFile = '~/.hpcbridge/jobs/4242/scheduler.json';
end
nx = 60; ny = 60; nFrequencies = 200;
E = 210e9; A = 1e-4; rho = 7850; damping = 0.004;

% --- the model, assembled here -----------------------------------------------------
[I, J] = ndgrid(0:nx, 0:ny);
ids = reshape(1:numel(I), size(I));
bars = [reshape(ids(1:end-1, :), [], 1), reshape(ids(2:end, :), [], 1);
        reshape(ids(:, 1:end-1), [], 1), reshape(ids(:, 2:end), [], 1);
        reshape(ids(1:end-1, 1:end-1), [], 1), reshape(ids(2:end, 2:end), [], 1);
        reshape(ids(2:end, 1:end-1), [], 1), reshape(ids(1:end-1, 2:end), [], 1)];
x = I(:); y = J(:);
dx = x(bars(:, 2)) - x(bars(:, 1)); dy = y(bars(:, 2)) - y(bars(:, 1));
L = hypot(dx, dy);
axial = [-dx ./ L, -dy ./ L, dx ./ L, dy ./ L];
dofs = [2 * bars(:, 1) - 1, 2 * bars(:, 1), 2 * bars(:, 2) - 1, 2 * bars(:, 2)];
[a, b] = ndgrid(1:4, 1:4);
rows = dofs(:, a(:)); cols = dofs(:, b(:));
vals = (E * A ./ L) .* axial(:, a(:)) .* axial(:, b(:));
N = 2 * numel(x);
K = sparse(rows(:), cols(:), vals(:), N, N);
nodeMass = accumarray(bars(:), repmat(rho * A * L / 2, 2, 1), [numel(x), 1]);
M = spdiags(kron(nodeMass, [1; 1]), 0, N, N);
supported = [2 * ids(1, :) - 1, 2 * ids(1, :)];
free = setdiff(1:N, supported);
K = K(free, free); M = M(free, free); C = damping * K;
load = find(free == 2 * ids(end, end));
f = zeros(numel(free), 1); f(load) = 1;
omega1 = sqrt(eigs(K, M, 1, 'smallestabs'));
omegas = linspace(0.1 * omega1, 4 * omega1, nFrequencies);
fprintf('truss %d x %d cells: %d unknowns, omega_1 = %.4g rad/s\n', nx, ny, numel(free), omega1);

% --- K, C, M to the workers once, frequencies over the workers -------------------------
[Ki, Kj, Kv] = find(K); [Ci, Cj, Cv] = find(C); [Mi, Mj, Mv] = find(M);
model = struct('n', numel(free), 'K_i', Ki, 'K_j', Kj, 'K_v', Kv, 'C_i', Ci, 'C_j', Cj, 'C_v', Cv, ...
               'M_i', Mi, 'M_j', Mj, 'M_v', Mv, 'b', f, 'outputs', load);
c = hpcbridge.connect(schedulerFile, 'Workers', 2, 'Timeout', 600);
h = hpcbridge.broadcast(c, model);
t = tic;
run = hpcbridge.map(c, 'hpcbridge.workloads.truss:response_from_triplets', omegas, 'Broadcast', h);
result = hpcbridge.gather(c, run, 'Stack', true);     % one row per frequency: x at the load, residual
seconds = toc(t);
hpcbridge.release(c, h);
response = result(:, 1);
fprintf('largest residual: %.2e\n', max(abs(result(:, end))));
fprintf('time: %.2f s for %d frequencies on %d workers\n', seconds, numel(omegas), c.workers);
semilogy(omegas / (2 * pi), abs(response));
xlabel('frequency [Hz]'); ylabel('|displacement| at the load [m/N]'); grid on;
title(sprintf('truss %d x %d cells, %d unknowns', nx, ny, numel(free)));
saveas(gcf, 'truss_matlab.png');
hpcbridge.close(c);
