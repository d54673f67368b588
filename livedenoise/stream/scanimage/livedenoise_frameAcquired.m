function livedenoise_frameAcquired(src, evt, varargin)
%LIVEDENOISE_FRAMEACQUIRED  ScanImage user function for the 'frameAcquired' event.
%
%   Publishes the newest frame of every saved channel (and its plane, for fast-z
%   stacks) from src.hSI.hDisplay.lastStripeData to livedenoise over a ZeroMQ PUB
%   socket: topic 'frame', a JSON header (frame = frameNumberAcq, t =
%   frameTimestamp, channel, plane, shape [lines, pixels], dtype, order) and
%   the pixels (little-endian). ScanImage stores imageData transposed (pixels x
%   lines): those bytes are exactly a lines x pixels image in C order, so they
%   are sent as they are, without a copy-transpose.
%
%   Register in ScanImage's User Functions dialog:
%     Event: frameAcquired   Function: livedenoise_frameAcquired
%     Arguments (optional): {'tcp://127.0.0.1:5570'} or {'channels', [1 2]}
%   Never throws: an error is caught and warned once per acquisition.
%   See also livedenoise_acqModeStart, livedenoise_acqDone, livedenoise_publisher.
try
    livedenoise_publisher('frame', src, evt, varargin{:});
catch err
    try
        livedenoise_publisher('report', err, 'publishing a frame');
    catch
    end
end
end
