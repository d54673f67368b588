function livedenoise_acqModeStart(src, evt, varargin)
%LIVEDENOISE_ACQMODESTART  ScanImage user function for the 'acqModeStart' event.
%
%   Binds the publisher (once; the socket is kept between acquisitions) and
%   sends a 'start' message with the acquisition metadata read from src.hSI:
%   frame_rate, volume_rate, shape [lines, pixels], channels (saved), planes,
%   z, frame_step, zoom, dtype, mode. Use the same Arguments as for
%   livedenoise_frameAcquired. Never throws.
try
    livedenoise_publisher('start', src, evt, varargin{:});
catch err
    try
        livedenoise_publisher('report', err, 'announcing the acquisition');
    catch
    end
end
end
