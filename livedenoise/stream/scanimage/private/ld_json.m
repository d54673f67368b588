function txt = ld_json(v)
%LD_JSON  Minimal JSON encoder (MATLAB and Octave alike; no jsonencode needed).
%   struct -> object (field order kept); cell -> array (always, even with one
%   element); char -> string; logical scalar -> true/false; numeric scalar ->
%   number (integers without a decimal point, NaN/Inf -> null); numeric vector
%   -> array; [] -> null.
if isstruct(v) && isscalar(v)
    names = fieldnames(v);
    parts = cell(1, numel(names));
    for i = 1:numel(names)
        parts{i} = [ld_str(names{i}) ':' ld_json(v.(names{i}))];
    end
    txt = ['{' strjoin_(parts, ',') '}'];
elseif iscell(v)
    parts = cell(1, numel(v));
    for i = 1:numel(v)
        parts{i} = ld_json(v{i});
    end
    txt = ['[' strjoin_(parts, ',') ']'];
elseif ischar(v)
    txt = ld_str(v);
elseif islogical(v) && isscalar(v)
    if v
        txt = 'true';
    else
        txt = 'false';
    end
elseif (isnumeric(v) || islogical(v)) && isempty(v)
    txt = 'null';
elseif (isnumeric(v) || islogical(v)) && isscalar(v)
    txt = ld_num(double(v));
elseif isnumeric(v) || islogical(v)
    parts = cell(1, numel(v));
    for i = 1:numel(v)
        parts{i} = ld_num(double(v(i)));
    end
    txt = ['[' strjoin_(parts, ',') ']'];
else
    txt = ld_str(class(v));
end
end

function txt = ld_num(x)
if ~isfinite(x)
    txt = 'null';
elseif x == round(x) && abs(x) < 1e15
    txt = sprintf('%d', x);
else
    txt = sprintf('%.15g', x);
end
end

function txt = ld_str(s)
s = char(s);
s = strrep(s, '\', '\\');
s = strrep(s, '"', '\"');
s = strrep(s, sprintf('\n'), '\n');
s = strrep(s, sprintf('\r'), '\r');
s = strrep(s, sprintf('\t'), '\t');
bad = find(s < 32);
for k = numel(bad):-1:1
    i = bad(k);
    s = [s(1:i-1) sprintf('\\u%04x', double(s(i))) s(i+1:end)];
end
txt = ['"' s(:)' '"'];
end

function txt = strjoin_(parts, sep)
if isempty(parts)
    txt = '';
    return
end
txt = parts{1};
for i = 2:numel(parts)
    txt = [txt sep parts{i}]; %#ok<AGROW>
end
end
