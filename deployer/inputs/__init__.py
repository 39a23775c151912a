"""Model inputs: one description (`InputSpec`) and one way from a file to the tensor a network is fed.

Calibration statistics are only as good as the match between calibration and inference
preprocessing, so `deployer quantize` (calibration, method choice), the `ncnn2table` drop-in,
`deployer check` and the profiling parity runs all describe inputs with `spec.InputSpec` and read
files through `tensor`; none converts between private copies. spec.py (the description, pixel
formats, ncnn2table's resize rule), decode.py (bytes -> BGR pixels or a .npy array, with ncnn
decoding-parity notes and size limits), tensor.py (pixels -> tensor: ncnn's resize and pixel
conversion, letterbox, mean/norm, .npy tensors). This package sits below `quant`, `check`,
`profiling` and `profile` and imports none of them.
"""
