function livedenoise_acqDone(src, evt, varargin)
%LIVEDENOISE_ACQDONE  ScanImage user function for the 'acqDone' event: sends 'stop'.
%   Use the same Arguments as for livedenoise_frameAcquired. Never throws.
try
    livedenoise_publisher('stop', src, evt, 'done', varargin{:});
catch err
    try
        livedenoise_publisher('report', err, 'ending the acquisition');
    catch
    end
end
end
