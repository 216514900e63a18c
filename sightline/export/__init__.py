"""The demo detector, its scene generator, ONNX export and Triton config writer."""
