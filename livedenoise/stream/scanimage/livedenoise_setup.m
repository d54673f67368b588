function ok = livedenoise_setup(jar, endpoint)
%LIVEDENOISE_SETUP  Check (and on request make) the JeroMQ set-up for livedenoise.
%
%   livedenoise_setup                      % check: is JeroMQ reachable? can we bind?
%   livedenoise_setup('C:\jars\jeromq-0.6.0.jar')
%                                          % add the jar to the dynamic Java path
%   livedenoise_setup(JAR, 'tcp://127.0.0.1:5580')   % ... and test another endpoint
%
%   Run it BEFORE starting ScanImage: MATLAB's javaaddpath clears the base
%   workspace (and with it ScanImage's hSI variable). The permanent way is one
%   line with the jar's full path in javaclasspath.txt in the folder `prefdir`
%   shows, then a MATLAB restart. Prints what is wrong and what to do; returns
%   true when a PUB socket could be bound (it is closed again afterwards).
if nargin < 1
    jar = '';
end
if nargin < 2 || isempty(endpoint)
    endpoint = getenv('LIVEDENOISE_ENDPOINT');
    if isempty(endpoint)
        endpoint = 'tcp://127.0.0.1:5570';
    end
end
ok = false;
here = fileparts(mfilename('fullpath'));
fprintf('livedenoise: user functions in %s\n', here);
if ~isempty(jar)
    if ~exist(jar, 'file')
        fprintf(2, 'livedenoise: jar %s does not exist\n', jar);
        return
    end
    if exist('OCTAVE_VERSION', 'builtin') == 0
        try
            isrunning = evalin('base', 'exist(''hSI'', ''var'')');
        catch
            isrunning = false;
        end
        if isrunning
            fprintf(2, ['livedenoise: ScanImage is running (hSI exists): javaaddpath ' ...
                'would clear its workspace. Close ScanImage, run livedenoise_setup ' ...
                'first, then start ScanImage.\n']);
            return
        end
    end
    javaaddpath(jar);
    fprintf('livedenoise: added %s to the Java class path\n', jar);
end
try
    ctx = javaObject('org.zeromq.ZContext');
catch err
    fprintf(2, ['livedenoise: JeroMQ (org.zeromq.ZContext) is not on the Java class ' ...
        'path: %s\n  Get jeromq-<version>.jar (Maven Central, group org.zeromq, ' ...
        'artifact jeromq; Debian/Ubuntu: /usr/share/java/jeromq.jar from ' ...
        'libjeromq-java), then add its full path as a line of javaclasspath.txt in\n' ...
        '  %s\n  and restart MATLAB (or call livedenoise_setup(JAR) before ScanImage).\n'], ...
        err.message, prefdir_or_unknown());
    return
end
try
    try
        sock = ctx.createSocket(javaMethod('valueOf', 'org.zeromq.SocketType', 'PUB'));
    catch
        sock = ctx.createSocket(1);
    end
    sock.bind(endpoint);
    fprintf('livedenoise: JeroMQ works; a PUB socket bound to %s\n', endpoint);
    ok = true;
catch err
    fprintf(2, ['livedenoise: JeroMQ loads but binding %s failed: %s\n  If the ' ...
        'publisher is already running in this MATLAB that is fine ' ...
        '(livedenoise_publisher(''status'')); otherwise pick another port.\n'], ...
        endpoint, err.message);
end
try
    ctx.close();
catch
end
if ok
    fprintf(['livedenoise: now register livedenoise_acqModeStart, ' ...
        'livedenoise_frameAcquired, livedenoise_acqDone and livedenoise_acqAbort in ' ...
        'ScanImage''s User Functions dialog (docs/scanimage.md).\n']);
end
end

function p = prefdir_or_unknown()
try
    p = prefdir;
catch
    p = '(your MATLAB prefdir)';
end
end
