%MANDELBROT_IMAGE A Mandelbrot image computed in row blocks on a Dask cluster.
%   The MATLAB version of examples/mandelbrot.py: Re [-0.7440, -0.7433],
%   Im [0.1315, 0.1322], 255 iterations, uint8 escape counts. Set
%   schedulerFile (or HPCBRIDGE_SCHEDULER_FILE) and run. Python spreads row
%   blocks over the workers and assembles them into one contiguous uint8 array,
%   holding the image plus the blocks in flight; MATLAB receives that array and
%   converts it once. Row 1 of the image is Im = 0.1322 (the top), column 1 is
%   Re = -0.7440.

schedulerFile = getenv('HPCBRIDGE_SCHEDULER_FILE');
if isempty(schedulerFile)
    schedulerFile = '~/.hpcbridge/jobs/4242/scheduler.json';
end
width = 5000;
height = 5000;
pngFile = 'mandelbrot_matlab.png';

c = hpcbridge.connect(schedulerFile, 'Workers', 2, 'Timeout', 600);
view = struct('re_min', -0.7440, 're_max', -0.7433, 'im_min', 0.1315, 'im_max', 0.1322);
t = tic;
image = hpcbridge.fromPython(py.hpcbridge.workloads.mandelbrot.image(c.cluster, width, height, 255));
seconds = toc(t);
fprintf('image: %d x %d uint8, mean %.2f iterations\n', height, width, mean(image(:)));
fprintf('time: %.2f s (%.1f s per gigapixel) on %d workers\n', seconds, seconds / (width * height / 1e9), c.workers);
step = max(1, ceil(max(width, height) / 2000));
imagesc([view.re_min view.re_max], [view.im_max view.im_min], image(1:step:end, 1:step:end));
axis xy image; colormap(hot); xlabel('Re c'); ylabel('Im c');
title(sprintf('Mandelbrot, %d x %d, 255 iterations', width, height));
saveas(gcf, pngFile);
hpcbridge.close(c);
