function livedenoise_acqAbort(src, evt, varargin)
%LIVEDENOISE_ACQABORT  ScanImage user function for the 'acqAbort' event: sends 'stop'.
%   Use the same Arguments as for livedenoise_frameAcquired. Never throws.
try
    livedenoise_publisher('stop', src, evt, 'abort', varargin{:});
catch err
    try
        livedenoise_publisher('report', err, 'aborting the acquisition');
    catch
    end
end
end
