"""int8 vs fp32 cross-checking with the stock ncnn wheel.

metrics.py (cosine, PSNR, max abs error, top-k agreement), gates.py (`top1_agreement>=0.99`),
net.py (an ncnn.Net that is really fp32), samples.py (folders and list files -> inputs,
through deployer.inputs), crosscheck.py (outputs + per-layer error + gates). Used by `deployer check` and by
`deployer quantize` to choose methods and mixed-precision layers.
"""
