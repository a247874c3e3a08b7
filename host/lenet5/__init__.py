"""The LeNet-5 model files and their golden inference, NumPy only: `net` (shapes, input quantization),
`spectral` (the trained spectral LeNet-5, FC layers in float) and `compressed` (the accelerator's model, FC layers
compressed)."""
