"""Open Ephys side of the live service: the ZMQ Interface plugin's wire format, the
sidecar (ZMQ in, Ephys Socket / ZMQ out, recorder), replay and benchmarks."""
