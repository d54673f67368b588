function drive_acquisition(cfg)
%DRIVE_ACQUISITION  Play one ScanImage acquisition through the livedenoise user
%   functions, calling them as ScanImage does: f(src, evt, Arguments{:}).
%
%   cfg fields: endpoint, go_file, done_file, lines, pixels, channels (active,
%   = lastStripeData.channelNumbers), save (hChannels.channelSave), planes,
%   layout ('fastz': one frameAcquired per plane, frame numbers count planes;
%   'zcell': all planes in imageData{ch}{z} of one event), cls (int16 / uint16 /
%   single), frames (frameNumberAcq values delivered; gaps = frames the user
%   function skipped), dt (s per frame), args (the Arguments cell), transposed,
%   start (call acqModeStart), finish ('done' / 'abort' / 'none'), malformed
%   (frames whose lastStripeData is broken), acquisitions (how many times the
%   whole acquisition is played, with `clear functions` in between), flyback
%   (flyback frames per fast-z volume: empty roiData), zidx (set
%   lastStripeData.zIdx as ScanImage 2020+ does: NaN for flyback).
hSI = FakeScanImage();
hSI.hRoiManager.linesPerFrame = cfg.lines;
hSI.hRoiManager.pixelsPerLine = cfg.pixels;
hSI.hRoiManager.scanFrameRate = 1 / cfg.dt;
hSI.hRoiManager.scanVolumeRate = 1 / (cfg.dt * cfg.planes);
hSI.hRoiManager.scanZoomFactor = 2.5;
hSI.hChannels.channelSave = cfg.save;
hSI.hScan2D.channelsDataType = cfg.cls;
if cfg.planes > 1
    hSI.hStackManager.enable = true;
    hSI.hStackManager.numSlices = cfg.planes;
    hSI.hStackManager.actualNumSlices = cfg.planes;
    hSI.hStackManager.zs = (0:cfg.planes - 1) * 20;
    hSI.hStackManager.numFramesPerVolumeWithFlyback = cfg.planes + cfg.flyback;
end
per_volume = cfg.planes + cfg.flyback;
src = FakeUserFunctionSource(hSI);
% register as a user would (the User Functions table), then fire events the
% way ScanImage does: every enabled row for the event, f(src, evt, Arguments{:})
livedenoise_register(hSI, cfg.args{:});

% bind first (as the first user function call would), then send `probe`
% messages until the Python subscriber says go: it does once a probe arrives,
% i.e. once its subscriptions have reached this PUB (which drops what no one
% receives yet).
livedenoise_publisher('open', cfg.args{:});
wait_for(cfg.go_file, 300, true);

for acq = 1:cfg.acquisitions
    if acq > 1
        clear('functions');  % what `clear all` does to persistent variables: the socket must survive
    end
    if cfg.start
        fire(hSI, src, 'acqModeStart');
    end
    for f = cfg.frames(:)'
        sd = struct();
        sd.frameNumberAcq = f;
        sd.frameNumberAcqMode = f;
        sd.acqNumber = 1;
        sd.frameTimestamp = (f - 1) * cfg.dt;
        sd.channelNumbers = cfg.channels;
        sd.startOfVolume = true;
        sd.endOfVolume = true;
        sd.transposed = cfg.transposed;
        zidx = mod(f - 1, per_volume) + 1;   % ScanImage's zIdx: frame within the volume
        if cfg.zidx
            sd.zIdx = zidx;
            if zidx > cfg.planes
                sd.zIdx = NaN;   % flyback
            end
        end
        imgs = cell(1, numel(cfg.channels));
        for k = 1:numel(cfg.channels)
            ch = cfg.channels(k);
            if strcmp(cfg.layout, 'zcell')
                zs = cell(1, cfg.planes);
                for z = 1:cfg.planes
                    zs{z} = orient(si_test_image(cfg.lines, cfg.pixels, f, ch, z, cfg.cls), cfg.transposed);
                end
            else
                z = min(mod(f - 1, per_volume) + 1, cfg.planes);
                zs = {orient(si_test_image(cfg.lines, cfg.pixels, f, ch, z, cfg.cls), cfg.transposed)};
            end
            imgs{k} = zs;
        end
        roi = struct();
        roi.imageData = imgs;
        roi.channels = cfg.channels;
        sd.roiData = {roi};
        if zidx > cfg.planes && ~strcmp(cfg.layout, 'zcell')
            sd.roiData = {};   % flyback frames carry no image data
        end
        if any(cfg.malformed == f)
            sd = rmfield(sd, 'roiData');   % a broken stripe: the user function must not throw
        end
        hSI.hDisplay.lastStripeData = sd;
        fire(hSI, src, 'frameAcquired');
    end
    switch cfg.finish
        case 'done'
            fire(hSI, src, 'acqDone');
        case 'abort'
            fire(hSI, src, 'acqAbort');
    end
end
st = livedenoise_publisher('status');
printf('DRIVER sent=%d errors=%d\n', st.sent, st.errors);
wait_for(cfg.done_file, 300);
livedenoise_publisher('close');
printf('DRIVER finished\n');
end

function fire(hSI, src, name)
% What ScanImage's hUserFunctions does when it notifies an event.
evt = struct('EventName', name);
cfg = hSI.hUserFunctions.userFunctionsCfg;
for i = 1:numel(cfg)
    if cfg(i).Enable && strcmp(cfg(i).EventName, name)
        args = cfg(i).Arguments;
        feval(cfg(i).UserFcnName, src, evt, args{:});
    end
end
end

function img = orient(img, transposed)
if transposed
    img = img.';   % ScanImage keeps imageData as pixels x lines
end
end

function wait_for(path, timeout, probe)
if nargin < 3
    probe = false;
end
t = tic;
while ~exist(path, 'file')
    if toc(t) > timeout
        printf('DRIVER timed out waiting for %s\n', path);
        return
    end
    if probe
        probe = send_probe();
    end
    pause(0.02);
end
end

function ok = send_probe()
% One `probe` message on the user functions' socket (root appdata, see
% livedenoise_publisher.m); nothing to do when it is not bound.
ok = true;
if ~isappdata(0, 'livedenoise_scanimage')
    return
end
st = getappdata(0, 'livedenoise_scanimage');
if isempty(st.sock)
    return
end
try
    st.sock.sendMore(int8('probe'));
    st.sock.send(int8('ok'), 0);
catch err
    printf('DRIVER probe failed: %s\n', err.message);
    ok = false;
end
end
