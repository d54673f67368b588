"""Models out of PyTorch: ONNX export, TensorRT builds, parity checks, and the engines that run them (`engines`)."""
