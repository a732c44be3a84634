%MANDELBROT_IMAGE A Mandelbrot image computed in row blocks on a Dask cluster.
%   The MATLAB version of examples/mandelbrot.py: Re [-0.7440, -0.7433],
%   Im [0.1315, 0.1322], 255 iterations, uint8 escape counts. Set
%   schedulerFile (or HPCBRIDGE_SCHEDULER_FILE) and run. The view goes to the
%   workers once (a broadcast); row blocks go out in waves, and each block is
%   converted once and copied into one preallocated uint8 image, so MATLAB
%   holds the image plus the blocks of two waves, never a second copy.
%   Row 1 of the image is Im = 0.1322 (the top), column 1 is Re = -0.7440.

schedulerFile = getenv('HPCBRIDGE_SCHEDULER_FILE');
if isempty(schedulerFile)
    schedulerFile = '~/.hpcbridge/jobs/4242/scheduler.json';
end
width = 5000;
height = 5000;
pngFile = 'mandelbrot_matlab.png';

c = hpcbridge.connect(schedulerFile, 'Workers', 2, 'Timeout', 600);
view = struct('width', width, 'height', height, 're_min', -0.7440, 're_max', -0.7433, ...
              'im_min', 0.1315, 'im_max', 0.1322, 'maxiter', 255);
v = hpcbridge.broadcast(c, view);
rowsPerBlock = max(1, min(floor(8 * 2^20 / width), ceil(height / (8 * c.workers))));
lows = 0:rowsPerBlock:height - 1;                      % 0-based first rows, as Python counts
blocks = [lows', min(lows' + rowsPerBlock, height)];   % rows: low, high (high excluded)
wave = 2 * c.workers;
image = zeros(height, width, 'uint8');
f = 'hpcbridge.workloads.mandelbrot:block';
t = tic;
first = 1:min(wave, size(blocks, 1));
pending = {first, hpcbridge.map(c, f, blocks(first, :), 'Broadcast', v, 'ChunkSize', 1)};
while ~isempty(pending)
    next = pending{1}(end) + 1 : min(pending{1}(end) + wave, size(blocks, 1));
    if ~isempty(next)                                   % keep the workers busy while gathering
        following = {next, hpcbridge.map(c, f, blocks(next, :), 'Broadcast', v, 'ChunkSize', 1)};
    else
        following = {};
    end
    parts = hpcbridge.gather(c, pending{2}, 'Progress', false);
    if ~iscell(parts)
        parts = {parts};
    end
    for k = 1:numel(pending{1})
        b = blocks(pending{1}(k), :);
        image(b(1) + 1:b(2), :) = parts{k};
    end
    pending = following;
end
seconds = toc(t);
hpcbridge.release(c, v);
fprintf('image: %d x %d uint8, mean %.2f iterations\n', height, width, mean(image(:)));
fprintf('time: %.2f s (%.1f s per gigapixel) on %d workers\n', seconds, seconds / (width * height / 1e9), c.workers);
step = max(1, ceil(max(width, height) / 2000));
imagesc([view.re_min view.re_max], [view.im_max view.im_min], image(1:step:end, 1:step:end));
axis xy image; colormap(hot); xlabel('Re c'); ylabel('Im c');
title(sprintf('Mandelbrot, %d x %d, 255 iterations', width, height));
saveas(gcf, pngFile);
hpcbridge.close(c);
