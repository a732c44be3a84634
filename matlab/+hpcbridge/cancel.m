function message = cancel(job, varargin)
%CANCEL End a cluster job (and the worker jobs that joined it).
%   hpcbridge.cancel(JOB) cancels the job (its id, or the struct
%   hpcbridge.submit returned); its scheduler file and certificates are
%   removed, its runs stay on disk. The next call on its cluster in this
%   session says at once that it was cancelled. A job that had already
%   ended is left as it is. MESSAGE says which happened.
%
%   hpcbridge.cancel(JOB, 'Scheduler', 'pbs') names the batch system.
%
%   See also hpcbridge.submit, hpcbridge.shutdown, hpcbridge.status.

[id, scheduler] = hpcbridge.jobId('hpcbridge.cancel', job, varargin);
said = char(py.hpcbridge.matlab.cancel(id, scheduler));
hpcbridge.pythonWarnings();
if nargout > 0
    message = said;
else
    disp(said);
end
end
