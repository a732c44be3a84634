function value = toPython(value)
%TOPYTHON Convert a MATLAB value for hpcbridge's Python side.
%   P = hpcbridge.toPython(X) leaves what MATLAB converts fast and exactly
%   as it is (real numeric and logical arrays, which arrive in Python as
%   NumPy arrays of the same class and shape; int64 values stay exact), and
%   converts the rest:
%     char, string      -> str
%     cell array        -> list (element by element, in column order)
%     scalar struct     -> dict (field by field)
%     struct array      -> list of dicts
%     complex array     -> NumPy complex array
%
%   See also hpcbridge.fromPython.

if ischar(value)
    value = py.str(value);
elseif isstring(value)
    if isscalar(value)
        value = py.str(char(value));
    else
        value = hpcbridge.toPython(cellstr(value));
    end
elseif iscell(value)
    converted = cell(1, numel(value));
    for k = 1:numel(value)
        converted{k} = hpcbridge.toPython(value{k});
    end
    value = py.list(converted);
elseif isstruct(value)
    if isscalar(value)
        d = py.dict();
        fields = fieldnames(value);
        for k = 1:numel(fields)
            py.operator.setitem(d, fields{k}, hpcbridge.toPython(value.(fields{k})));
        end
        value = d;
    else
        converted = cell(1, numel(value));
        for k = 1:numel(value)
            converted{k} = hpcbridge.toPython(value(k));
        end
        value = py.list(converted);
    end
elseif isnumeric(value) && ~isreal(value)
    value = py.numpy.add(py.numpy.array(real(value)), ...
        py.numpy.multiply(py.complex(0, 1), py.numpy.array(imag(value))));
end
end
