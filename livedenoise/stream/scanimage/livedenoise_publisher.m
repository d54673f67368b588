function out = livedenoise_publisher(cmd, varargin)
%LIVEDENOISE_PUBLISHER  ZeroMQ publisher behind the livedenoise ScanImage user functions.
%
%   The four user functions (livedenoise_acqModeStart, livedenoise_frameAcquired,
%   livedenoise_acqDone, livedenoise_acqAbort) call this; you only need it to
%   check the set-up or to free the port:
%
%     livedenoise_publisher('open')               % bind now (default tcp://127.0.0.1:5570)
%     livedenoise_publisher('open', 'tcp://127.0.0.1:5580')
%     livedenoise_publisher('status')             % endpoint, frames sent, errors
%     livedenoise_publisher('close')              % close the socket, free the port
%
%   Options (the user functions' Arguments in ScanImage's User Functions dialog,
%   or here after the command): an endpoint string such as 'tcp://127.0.0.1:5570',
%   or name/value pairs 'endpoint', EP; 'channels', [1 2] (publish only these);
%   'jar', '/path/to/jeromq.jar' (Octave only: MATLAB needs the jar on its
%   static Java class path, see docs/scanimage.md).
%   Environment variables LIVEDENOISE_ENDPOINT and LIVEDENOISE_JEROMQ_JAR set
%   the defaults.
%
%   Wire protocol (livedenoise/stream/protocols/frames.py): multipart [topic, JSON header,
%   payload], topics 'start' / 'frame' / 'stop', little-endian payload.
%
%   The socket is created once and kept (root appdata 'livedenoise_scanimage'),
%   so it survives `clear all`. Nothing here ever throws into ScanImage: the user
%   functions catch every error and warn once per acquisition.

if nargin < 1
    cmd = 'status';
end
out = [];
switch lower(cmd)
    case 'start'
        % livedenoise_publisher('start', src, evt, args...)
        on_start(varargin{1}, varargin(3:end));
    case 'frame'
        on_frame(varargin{1}, varargin(3:end));
    case 'stop'
        % livedenoise_publisher('stop', src, evt, reason, args...)
        on_stop(varargin{1}, varargin{3}, varargin(4:end));
    case 'open'
        st = get_state();
        st.failed = '';
        st = ensure_socket(st, parse_args(varargin));
        put_state(st);
        if isempty(st.failed)
            fprintf('livedenoise: publishing on %s\n', st.endpoint);
        else
            fprintf(2, 'livedenoise: %s\n', st.failed);
        end
        out = isempty(st.failed);
    case 'close'
        st = get_state();
        close_socket(st);
        if isappdata(0, 'livedenoise_scanimage')
            rmappdata(0, 'livedenoise_scanimage');
        end
        if isappdata(0, 'livedenoise_scanimage_diag')
            rmappdata(0, 'livedenoise_scanimage_diag');
        end
    case 'status'
        st = get_state();
        if isempty(st.sock)
            state = 'not bound';
        else
            state = ['bound to ' st.endpoint];
        end
        d = get_diag();
        fprintf('livedenoise: %s; %d frame messages sent this acquisition, %d errors\n', ...
            state, st.sent, d.errors);
        if ~isempty(st.failed)
            fprintf('livedenoise: %s\n', st.failed);
        end
        if ~isempty(d.first_error)
            fprintf('livedenoise: first error: %s\n', d.first_error);
        end
        st.errors = d.errors;
        st.first_error = d.first_error;
        out = st;
    case 'report'
        % livedenoise_publisher('report', err, where): warn once per acquisition
        report_error(varargin{1}, varargin{2});
    otherwise
        error('livedenoise:usage', ...
            'livedenoise_publisher: unknown command ''%s'' (open, status, close)', cmd);
end
end

% ------------------------------------------------------------------ events

function on_start(src, args)
% a new acquisition: forget old errors and let a failed bind be retried
reset_diag();
st = get_state();
st.failed = '';
st.sent = 0;
st.last_frame = -1;
st.started = false;
opts = parse_args(args);
st = ensure_socket(st, opts);
put_state(st);
if isempty(st.sock)
    warn_once('socket', st.failed);
    return
end
announce(st, src.hSI, opts);
end

function announce(st, hSI, opts)
% Send `start` (once per acquisition); marks the stream started even if
% building the metadata fails, so a broken hSI never re-announces every frame.
st.started = true;
st.t0 = tic;
put_state(st);
meta = start_meta(hSI, opts);
send_control(st, 'start', meta);
end

function on_frame(src, args)
st = get_state();
opts = parse_args(args);
st = ensure_socket(st, opts);
put_state(st);
if isempty(st.sock)
    warn_once('socket', st.failed);
    return
end
hSI = src.hSI;
if ~st.started
    % frameAcquired registered without acqModeStart, or a new acquisition of a
    % loop: announce the stream first so receivers get its metadata.
    try
        announce(st, hSI, opts);
    catch err
        report_error(err, 'building the start message');
    end
    st = get_state();
end
sd = hSI.hDisplay.lastStripeData;
if iscell(sd)
    sd = sd{end};
end
frame = round(double(sd.frameNumberAcq(end)));  % a vector when stripes were merged
if frame == st.last_frame
    return  % the same frame again (ScanImage re-notified): nothing new
end
zi = double(field_or(sd, 'zIdx', []));
if (~isempty(zi) && isnan(zi(1))) || isempty(sd.roiData)
    st.last_frame = frame;   % a flyback frame of a fast-z volume: no image data
    put_state(st);
    return
end
t = double(field_or(sd, 'frameTimestamp', []));
if isempty(t) || ~isfinite(t(end))
    t = toc(st.t0);
end
t = t(end);
chans = double(sd.channelNumbers(:)');
roi = sd.roiData{1};
if numel(sd.roiData) > 1
    warn_once('rois', sprintf(['%d imaging ROIs (mROI): only the first ROI is ' ...
        'published'], numel(sd.roiData)));
end
imgs = roi.imageData;
if numel(imgs) ~= numel(chans)
    error('livedenoise:stripe', ['lastStripeData has %d channel images but ' ...
        'channelNumbers lists %d channels'], numel(imgs), numel(chans));
end
want = opts.channels;
saved = double(field_or(hSI.hChannels, 'channelSave', []));
saved = saved(:)';
if isempty(want)
    want = saved;
    if isempty(want)
        warn_once('nosave', sprintf(['no channel is marked Save in ScanImage''s ' ...
            'CHANNELS window: publishing every acquired channel (%s)'], list_str(chans)));
        want = chans;
    end
else
    extra = setdiff(want, saved);
    if ~isempty(extra)
        warn_once('notsaved', sprintf(['channel %s asked for in the user function ' ...
            'Arguments is not saved in ScanImage (saved: %s); tick Save for it in ' ...
            'the CHANNELS window'], list_str(extra), list_str(saved)));
    end
end
missing = setdiff(want, chans);
if ~isempty(missing)
    warn_once('missing', sprintf(['channel %s is not acquired (this frame has ' ...
        'channels %s): it is not published'], list_str(missing), list_str(chans)));
end
transposed = field_or(sd, 'transposed', true);
transposed = isempty(transposed) || logical(transposed(1));
plane_auto = [];
for k = 1:numel(chans)
    if ~any(want == chans(k))
        continue
    end
    zimgs = imgs{k};
    if ~iscell(zimgs)
        zimgs = {zimgs};
    end
    for z = 1:numel(zimgs)
        if numel(zimgs) > 1
            plane = z;
        else
            if isempty(plane_auto)
                plane_auto = plane_of(sd, hSI, frame);
            end
            plane = plane_auto;
        end
        if plane < 1
            continue  % a flyback frame of a fast-z volume: not data
        end
        img = zimgs{z};
        if isempty(img)
            continue  % this channel has no data in this stripe
        end
        [bytes, dtype] = payload_bytes(img);
        if transposed
            shape = [size(img, 2), size(img, 1)];  % pixels x lines in memory = C order lines x pixels
            order = 'C';
        else
            shape = [size(img, 1), size(img, 2)];  % lines x pixels, column-major
            order = 'F';
        end
        header = sprintf(['{"v":1,"frame":%d,"t":%.15g,"channel":%d,"plane":%d,' ...
            '"shape":[%d,%d],"dtype":"%s","order":"%s","source":"scanimage"}'], ...
            frame, t, round(chans(k)), round(plane), shape(1), shape(2), dtype, order);
        st.sock.sendMore(int8('frame'));
        st.sock.sendMore(int8(header));
        st.sock.send(bytes, 0);
        st.sent = st.sent + 1;
    end
end
st.last_frame = frame;
put_state(st);
end

function on_stop(src, reason, args) %#ok<INUSL>
st = get_state();
opts = parse_args(args);
st = ensure_socket(st, opts);
sent = st.sent;
last = st.last_frame;
st.started = false;
st.last_frame = -1;
put_state(st);
if isempty(st.sock)
    warn_once('socket', st.failed);
    return
end
d = get_diag();
meta = struct('source', 'scanimage', 'reason', reason, ...
    'frames_sent', sent, 'last_frame', last, 'errors', d.errors);
send_control(st, 'stop', meta);
if d.errors > 1
    fprintf(2, ['livedenoise: %d errors while publishing this acquisition ' ...
        '(first: %s)\n'], d.errors, d.first_error);
end
end

% ------------------------------------------------------------------ metadata

function meta = start_meta(hSI, opts)
rm = hSI.hRoiManager;
lines = double(field_or(rm, 'linesPerFrame', 0));
pixels = double(field_or(rm, 'pixelsPerLine', 0));
saved = double(field_or(hSI.hChannels, 'channelSave', []));
chans = opts.channels;
if isempty(chans)
    chans = saved;
end
[nplanes, zs, per_volume] = stack_geometry(hSI);
st = get_state();
st.frame_step = per_volume;
put_state(st);
meta = struct();
meta.source = 'scanimage';
meta.frame_rate = double(field_or(rm, 'scanFrameRate', 0));
vr = double(field_or(rm, 'scanVolumeRate', []));
if isempty(vr)
    vr = meta.frame_rate / max(per_volume, 1);
end
meta.volume_rate = vr;
meta.shape = {lines, pixels};   % cell: always a JSON array
meta.channels = num2cell(saved(:)');
meta.published_channels = num2cell(chans(:)');
meta.planes = nplanes;
meta.z = num2cell(zs(:)');
meta.frame_step = per_volume;   % frames between two frames of one (channel, plane) stream
meta.zoom = double(field_or(rm, 'scanZoomFactor', 1));
dt = '';
if has_field(hSI, 'hScan2D')
    dt = field_or(hSI.hScan2D, 'channelsDataType', '');
end
meta.dtype = dtype_name(dt);
meta.mode = char(field_or(hSI, 'acqState', ''));
meta.endpoint = opts.endpoint;
if isempty(saved)
    warn_once('nosave', ['no channel is marked Save in ScanImage''s CHANNELS ' ...
        'window: every acquired channel will be published']);
end
end

function [nplanes, zs, per_volume] = stack_geometry(hSI)
% Planes in a volume, their z positions, and frames per volume (flyback included).
nplanes = 1;
zs = [];
per_volume = 1;
if ~has_field(hSI, 'hStackManager')
    return
end
sm = hSI.hStackManager;
enabled = logical(field_or(sm, 'enable', true));
n = double(field_or(sm, 'actualNumSlices', field_or(sm, 'numSlices', 1)));
if ~enabled || isempty(n) || n < 1
    n = 1;
end
nplanes = n;
zs = double(field_or(sm, 'zs', []));
if numel(zs) ~= nplanes
    zs = [];
end
fps = double(field_or(sm, 'framesPerSlice', 1));
if isempty(fps) || ~isfinite(fps) || fps < 1
    fps = 1;
end
if nplanes > 1 && fps == 1
    with_flyback = double(field_or(sm, 'numFramesPerVolumeWithFlyback', nplanes));
    per_volume = max(nplanes, with_flyback);
else
    per_volume = 1;
end
end

function plane = plane_of(sd, hSI, frame)
% Plane (1-based) of the frame just acquired; 0 for a flyback frame.
[nplanes, ~, per_volume] = stack_geometry(hSI);
if nplanes <= 1
    plane = 1;
    return
end
sm = hSI.hStackManager;
fps = double(field_or(sm, 'framesPerSlice', 1));
if isempty(fps) || ~isfinite(fps) || fps < 1
    fps = 1;
end
zi = double(field_or(sd, 'zIdx', []));
if ~isempty(zi) && isfinite(zi(1)) && zi(1) >= 1
    % ScanImage's index into the frames of a volume (1-based; NaN for flyback)
    plane = ceil(zi(1) / fps);
    if plane > nplanes
        plane = 0;
    end
    return
end
if fps == 1
    plane = mod(frame - 1, per_volume) + 1;   % fast z: one frame per plane per volume
else
    plane = mod(floor((frame - 1) / fps), nplanes) + 1;   % slow stack
end
if plane > nplanes
    plane = 0;
end
end

function name = dtype_name(cls)
switch char(cls)
    case {'int16', 'int8'}
        name = 'int16';
    case {'uint16', 'uint8', 'logical'}
        name = 'uint16';
    case {'single', 'double', 'int32', 'uint32'}
        name = 'float32';
    otherwise
        name = '';
end
end

function [bytes, dtype] = payload_bytes(img)
cls = class(img);
switch cls
    case 'int16'
        dtype = 'int16';
    case 'uint16'
        dtype = 'uint16';
    case 'single'
        dtype = 'float32';
    case 'int8'
        img = int16(img); dtype = 'int16';
    case {'uint8', 'logical'}
        img = uint16(img); dtype = 'uint16';
    otherwise
        img = single(img); dtype = 'float32';
end
bytes = typecast(img(:), 'int8');
if little_endian() == false
    bytes = typecast(swapbytes(img(:)), 'int8');
end
end

function yes = little_endian()
persistent le
if isempty(le)
    [~, ~, e] = computer();
    le = (e == 'L');
end
yes = le;
end

% ------------------------------------------------------------------ socket

function st = ensure_socket(st, opts)
% Bind the PUB socket once; rebind when the endpoint changes. A failure is
% remembered (st.failed) and not retried until the next acquisition start.
if ~isempty(st.sock) && strcmp(st.endpoint, opts.endpoint)
    return
end
if ~isempty(st.failed) && strcmp(st.failed_endpoint, opts.endpoint)
    return
end
if ~isempty(st.sock)
    close_socket(st);
    st.sock = [];
    st.ctx = [];
end
st.failed = '';
st.failed_endpoint = '';
[ctx, msg] = new_context(opts);
if isempty(ctx)
    st.failed = msg;
    st.failed_endpoint = opts.endpoint;
    return
end
try
    try
        ctx.setLinger(1000);
    catch
    end
    sock = create_pub(ctx);
    try
        sock.setSndHWM(200);  % PUB drops beyond this; ScanImage is never blocked
    catch
    end
    sock.bind(opts.endpoint);
catch err
    try
        ctx.close();
    catch
    end
    st.failed = sprintf(['cannot bind the ZeroMQ PUB socket to %s (%s). Is another ' ...
        'program (a second MATLAB?) using it? Pick another endpoint in the user ' ...
        'functions'' Arguments (e.g. ''tcp://127.0.0.1:5580'') and give livedenoise ' ...
        'the same address (--input).'], opts.endpoint, java_message(err));
    st.failed_endpoint = opts.endpoint;
    return
end
st.ctx = ctx;
st.sock = sock;
st.endpoint = opts.endpoint;
end

function sock = create_pub(ctx)
try
    % JeroMQ 0.5 and later
    sock = ctx.createSocket(javaMethod('valueOf', 'org.zeromq.SocketType', 'PUB'));
catch
    sock = ctx.createSocket(1);  % ZMQ.PUB in JeroMQ 0.3 / 0.4
end
end

function [ctx, msg] = new_context(opts)
msg = '';
ctx = [];
try
    ctx = javaObject('org.zeromq.ZContext');
    return
catch err
    first = java_message(err);
end
if ~usejava_ok()
    msg = ['MATLAB runs without Java (-nojvm): the livedenoise publisher needs ' ...
        'Java for JeroMQ. Start MATLAB with Java.'];
    return
end
if is_octave()
    % Octave's javaaddpath is harmless: add the jar and try again.
    jar = find_jar(opts.jar);
    if isempty(jar)
        if isempty(opts.jar)
            msg = ['JeroMQ (org.zeromq) not found: install it (Debian/Ubuntu: ' ...
                'apt-get install libjeromq-java) or pass ''jar'', ''/path/to/jeromq.jar'' ' ...
                'in the Arguments or set LIVEDENOISE_JEROMQ_JAR'];
        else
            msg = sprintf(['JeroMQ jar %s does not exist: fix the ''jar'' argument ' ...
                'or LIVEDENOISE_JEROMQ_JAR'], opts.jar);
        end
        return
    end
    try
        javaaddpath(jar);
        ctx = javaObject('org.zeromq.ZContext');
        return
    catch err
        msg = sprintf('cannot load JeroMQ from %s: %s', jar, java_message(err));
        return
    end
end
% MATLAB: javaaddpath would clear the workspace (and ScanImage's hSI), so it is
% never called from a user function.
msg = sprintf(['JeroMQ (org.zeromq) is not on MATLAB''s Java class path (%s). ' ...
    'Add the full path of jeromq-<version>.jar as one line of javaclasspath.txt in ' ...
    'the folder prefdir shows, and restart MATLAB; or run ' ...
    'livedenoise_setup(''path/to/jeromq.jar'') BEFORE starting ScanImage. ' ...
    'See docs/scanimage.md.'], first);
end

function jar = find_jar(given)
jar = '';
if ~isempty(given)
    if exist(given, 'file')
        jar = given;
    end
    return
end
cands = {};
env = getenv('LIVEDENOISE_JEROMQ_JAR');
if ~isempty(env)
    cands{end + 1} = env;
end
here = fileparts(mfilename('fullpath'));
found = dir(fullfile(here, 'jeromq*.jar'));
for i = 1:numel(found)
    cands{end + 1} = fullfile(here, found(i).name); %#ok<AGROW>
end
cands{end + 1} = '/usr/share/java/jeromq.jar';
for i = 1:numel(cands)
    if exist(cands{i}, 'file')
        jar = cands{i};
        return
    end
end
if ~isempty(env)
    jar = '';
end
end

function close_socket(st)
if ~isempty(st.ctx)
    try
        st.ctx.close();  % closes its sockets; lingers up to 1 s to flush
    catch
        try
            st.ctx.destroy();
        catch
        end
    end
end
end

function send_control(st, topic, meta)
meta.v = 1;
txt = ld_json(meta);
st.sock.sendMore(int8(topic));
st.sock.send(typecast(uint8(unicode2native(txt, 'UTF-8')), 'int8'), 0);
end

% ------------------------------------------------------------------ state

function st = get_state()
if isappdata(0, 'livedenoise_scanimage')
    st = getappdata(0, 'livedenoise_scanimage');
    return
end
st = struct('ctx', [], 'sock', [], 'endpoint', '', 'failed', '', ...
    'failed_endpoint', '', 'started', false, 'sent', 0, 'last_frame', -1, ...
    't0', tic, 'frame_step', 1);
end

function d = get_diag()
% Errors and warnings of this acquisition, kept apart from the socket state.
if isappdata(0, 'livedenoise_scanimage_diag')
    d = getappdata(0, 'livedenoise_scanimage_diag');
else
    d = struct('errors', 0, 'first_error', '', 'warned', {{}});
end
end

function reset_diag()
setappdata(0, 'livedenoise_scanimage_diag', ...
    struct('errors', 0, 'first_error', '', 'warned', {{}}));
end

function put_state(st)
setappdata(0, 'livedenoise_scanimage', st);
end

function opts = parse_args(args)
opts = struct('endpoint', '', 'channels', [], 'jar', '');
env = getenv('LIVEDENOISE_ENDPOINT');
if ~isempty(env)
    opts.endpoint = env;
end
opts.jar = getenv('LIVEDENOISE_JEROMQ_JAR');
i = 1;
while i <= numel(args)
    a = args{i};
    if ischar(a) && ~isempty(strfind(a, '://'))
        opts.endpoint = a;
        i = i + 1;
    elseif ischar(a) && i < numel(args)
        switch lower(a)
            case 'endpoint'
                opts.endpoint = char(args{i + 1});
            case 'channels'
                opts.channels = double(args{i + 1});
            case 'jar'
                opts.jar = char(args{i + 1});
            otherwise
                warn_once(['arg_' a], sprintf(['unknown user function argument ''%s'' ' ...
                    '(known: an endpoint, ''endpoint'', ''channels'', ''jar'')'], a));
        end
        i = i + 2;
    elseif isnumeric(a) && isscalar(a) && a > 0 && a < 65536
        opts.endpoint = sprintf('tcp://127.0.0.1:%d', round(a));  % just a port
        i = i + 1;
    else
        warn_once('arg', 'user function Arguments not understood; using the defaults');
        i = i + 1;
    end
end
if isempty(opts.endpoint)
    opts.endpoint = 'tcp://127.0.0.1:5570';
end
opts.channels = opts.channels(:)';
end

% ------------------------------------------------------------------ errors

function report_error(err, where)
d = get_diag();
d.errors = d.errors + 1;
msg = sprintf('%s while %s', java_message(err), where);
if isempty(d.first_error)
    d.first_error = msg;
end
setappdata(0, 'livedenoise_scanimage_diag', d);
warn_once(['err_' where], sprintf(['%s. The acquisition goes on; this is ' ...
    'reported once per acquisition (livedenoise_publisher(''status'') counts them).'], msg));
end

function warn_once(key, msg)
d = get_diag();
if any(strcmp(d.warned, key))
    return
end
d.warned{end + 1} = key;
setappdata(0, 'livedenoise_scanimage_diag', d);
ws = warning('off', 'backtrace');
warning('livedenoise:scanimage', 'livedenoise: %s', msg);
warning(ws);
end

function m = java_message(err)
m = err.message;
m = regexprep(m, '^\s*\[java\]\s*', '');
m = regexprep(m, '^Java exception occurred:\s*', '');
m = strtrim(strtok(m, sprintf('\n')));
m = regexprep(m, '^(org\.zeromq\.ZMQException|java\.[a-z.]+\.[A-Za-z]+Exception):\s*', '');
end

% ------------------------------------------------------------------ helpers

function v = field_or(s, name, default)
% s.(name) for a struct or an object; default when it has no such field.
v = default;
try
    if isstruct(s)
        if isfield(s, name)
            v = s.(name);
        end
    elseif isobject(s)
        v = s.(name);
    end
catch
    v = default;
end
end

function yes = has_field(s, name)
yes = false;
try
    if isstruct(s)
        yes = isfield(s, name);
    elseif isobject(s)
        s.(name);
        yes = true;
    end
catch
    yes = false;
end
end

function s = list_str(v)
if isempty(v)
    s = 'none';
    return
end
s = sprintf('%g, ', v);
s = s(1:end - 2);
end

function yes = is_octave()
yes = exist('OCTAVE_VERSION', 'builtin') ~= 0;
end

function yes = usejava_ok()
try
    yes = usejava('jvm');
catch
    yes = true;
end
end
