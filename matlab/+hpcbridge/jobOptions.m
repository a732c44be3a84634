function options = jobOptions(caller, pairs)
%JOBOPTIONS Name-value pairs of job options as the struct hpcbridge's Python side takes.
%   OPTIONS = hpcbridge.jobOptions(CALLER, PAIRS) checks that PAIRS (a cell)
%   holds names (char vectors or strings) each followed by a value, and
%   returns them as a struct (a dict in Python; a '-' in a name becomes '_');
%   the values are checked in Python, which
%   names a wrong one as you spelled it. CALLER names the function in errors.
%
%   See also hpcbridge.submit, hpcbridge.connect.

if mod(numel(pairs), 2) ~= 0
    error('hpcbridge:options', '%s: options come in name-value pairs, e.g. ''Nodes'', 2', caller);
end
options = struct();
for k = 1:2:numel(pairs)
    name = pairs{k};
    if ~(ischar(name) || (isstring(name) && isscalar(name)))
        error('hpcbridge:options', '%s: option %d is not a name (a char vector such as ''Nodes'')', ...
            caller, (k + 1) / 2);
    end
    value = pairs{k + 1};
    if iscell(value)
        value = cellfun(@char, value, 'UniformOutput', false);
    elseif isstring(value) || ischar(value)
        value = char(value);
    elseif islogical(value)
        value = logical(value);
    elseif isnumeric(value) && isscalar(value)
        value = double(value);
    else
        error('hpcbridge:options', '%s: option ''%s'' takes a number, a logical, text or a cell of text', ...
            caller, char(name));
    end
    options.(strrep(char(name), '-', '_')) = value;
end
end
