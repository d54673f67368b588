classdef FakeScanImage < handle
    %FAKESCANIMAGE  Stand-in for ScanImage's hSI with the field names the
    %   livedenoise user functions read (ScanImage 2020+ names). Components are
    %   plain structs; lastStripeData mimics scanimage.interfaces.StripeData.
    properties
        acqState = 'grab';
        hDisplay = struct('lastStripeData', []);
        hRoiManager = struct('scanFrameRate', 30, 'scanVolumeRate', 30, ...
            'linesPerFrame', 512, 'pixelsPerLine', 512, 'scanZoomFactor', 1);
        hChannels = struct('channelSave', 1, 'channelDisplay', 1);
        hStackManager = struct('enable', false, 'numSlices', 1, ...
            'actualNumSlices', 1, 'framesPerSlice', 1, 'zs', 0, ...
            'numFramesPerVolumeWithFlyback', 1);
        hScan2D = struct('channelsDataType', 'int16');
        hUserFunctions = struct('userFunctionsCfg', struct('EventName', {}, ...
            'UserFcnName', {}, 'Arguments', {}, 'Enable', {}));
    end
end
