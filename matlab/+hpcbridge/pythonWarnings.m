function pythonWarnings()
%PYTHONWARNINGS Show the warnings hpcbridge's Python side raised as MATLAB warnings.
%   hpcbridge.pythonWarnings() shows each warning the last hpcbridge calls
%   raised in Python (a tcp cluster, a run directory that could not be
%   written, ...) with MATLAB's warning, identifier hpcbridge:python, once;
%   Python itself would print them into the session. Every hpcbridge
%   function calls it after calling Python.
%
%   See also warning.

said = hpcbridge.fromPython(py.hpcbridge.client.matlab.warnings_said());
for k = 1:numel(said)
    warning('hpcbridge:python', '%s', said{k});
end
end
