"""Models out of PyTorch: ONNX export, TensorRT builds, BioImage Model Zoo packages (`bioimageio`), parity checks,
and the engines that run them (`engines`); and other tools' models in (`foreign`: `livedenoise import`)."""
