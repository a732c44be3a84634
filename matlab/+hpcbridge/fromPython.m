function value = fromPython(value)
%FROMPYTHON Convert a value from hpcbridge's Python side to MATLAB types.
%   X = hpcbridge.fromPython(P) converts
%     NumPy array    -> numeric or logical array of the matching class
%                       (float64 -> double, int64 -> int64 exactly, bool ->
%                       logical, complex -> complex double), copied once
%     int            -> int64 (exact)
%     float, bool    -> double, logical
%     str            -> char
%     list, tuple    -> cell array (element by element)
%     dict           -> struct (field by field)
%     None           -> []
%   and returns anything else unchanged.
%
%   See also hpcbridge.toPython.

if isa(value, 'py.numpy.ndarray')
    value = fromNumpy(value);
elseif isa(value, 'py.int')
    value = int64(value);
elseif isa(value, 'py.float')
    value = double(value);
elseif isa(value, 'py.bool')
    value = logical(value);
elseif isa(value, 'py.str')
    value = char(value);
elseif isa(value, 'py.list') || isa(value, 'py.tuple')
    value = cell(value);
    for k = 1:numel(value)
        value{k} = hpcbridge.fromPython(value{k});
    end
elseif isa(value, 'py.dict')
    value = struct(value);
    fields = fieldnames(value);
    for k = 1:numel(fields)
        value.(fields{k}) = hpcbridge.fromPython(value.(fields{k}));
    end
elseif isa(value, 'py.NoneType')
    value = [];
end
end

function array = fromNumpy(value)
kind = char(value.dtype.name);
switch kind
    case 'float64'
        array = double(value);
    case 'float32'
        array = single(value);
    case {'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32', 'uint64'}
        array = feval(kind, value);
    case 'bool'
        array = logical(value);
    case {'complex128', 'complex64'}
        array = complex(double(py.numpy.real(value)), double(py.numpy.imag(value)));
    otherwise
        error('hpcbridge:fromPython:dtype', ...
            'NumPy arrays of dtype %s have no MATLAB class; convert them in Python first.', kind);
end
end
