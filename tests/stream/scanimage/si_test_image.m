function img = si_test_image(lines, pixels, frame, channel, plane, cls)
%SI_TEST_IMAGE  A lines x pixels test frame that no transpose or flip preserves.
%   value(line, pixel) = (line-1)*pixels + (pixel-1) + 1000*plane + 3000*channel
%   + 7*frame, wrapped into the sample type's range; mirrored in the Python test.
[p, l] = meshgrid(0:pixels - 1, 0:lines - 1);
v = mod(l * pixels + p + 1000 * plane + 3000 * channel + 7 * frame, 30000);
switch cls
    case 'int16'
        img = int16(v - 15000);
    case 'uint16'
        img = uint16(v + 20000);
    otherwise
        img = single(v) + single(0.5);
end
end
