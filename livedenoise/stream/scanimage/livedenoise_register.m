function livedenoise_register(hSI, varargin)
%LIVEDENOISE_REGISTER  Register the livedenoise user functions with ScanImage.
%
%   livedenoise_register(hSI)                          % default endpoint
%   livedenoise_register(hSI, 'tcp://127.0.0.1:5580')  % Arguments for all four
%   livedenoise_register(hSI, 'channels', 1)
%
%   Adds (or replaces) four rows of hSI.hUserFunctions.userFunctionsCfg, the
%   table behind ScanImage's User Functions dialog:
%     acqModeStart  -> livedenoise_acqModeStart
%     frameAcquired -> livedenoise_frameAcquired
%     acqDone       -> livedenoise_acqDone
%     acqAbort      -> livedenoise_acqAbort
%   each with the Arguments given here, enabled. Other user functions are
%   kept. Save the configuration in ScanImage (File > Save Configuration) to
%   keep it for the next session.
events = {'acqModeStart', 'frameAcquired', 'acqDone', 'acqAbort'};
fcns = {'livedenoise_acqModeStart', 'livedenoise_frameAcquired', ...
    'livedenoise_acqDone', 'livedenoise_acqAbort'};
cfg = hSI.hUserFunctions.userFunctionsCfg;
keep = true(1, numel(cfg));
for i = 1:numel(cfg)
    keep(i) = ~any(strcmp(cfg(i).UserFcnName, fcns));
end
cfg = cfg(keep);
rows = struct('EventName', events, 'UserFcnName', fcns, ...
    'Arguments', {varargin, varargin, varargin, varargin}, ...
    'Enable', {true, true, true, true});
if ~isempty(cfg)
    rows = orderfields(rows, cfg);  % same field order: ScanImage concatenates them
    cfg = [cfg(:); rows(:)];
else
    cfg = rows(:);
end
hSI.hUserFunctions.userFunctionsCfg = cfg;
if ~isempty(which('livedenoise_frameAcquired'))
    fprintf('livedenoise: user functions registered (%s)\n', ...
        fileparts(which('livedenoise_frameAcquired')));
else
    fprintf(2, 'livedenoise: registered, but livedenoise_frameAcquired is not on the MATLAB path: addpath its folder (livedenoise scanimage-path)\n');
end
end
