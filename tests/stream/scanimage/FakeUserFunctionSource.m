classdef FakeUserFunctionSource < handle
    %FAKEUSERFUNCTIONSOURCE  What ScanImage passes as `src` to a user function
    %   (its hUserFunctions component): only `hSI` is used.
    properties
        hSI
    end
    methods
        function obj = FakeUserFunctionSource(hSI)
            obj.hSI = hSI;
        end
    end
end
