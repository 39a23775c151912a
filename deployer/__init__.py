"""deployer: fp32 ncnn model -> int8 -> checked -> running on ARM boards over SSH."""

__version__ = "0.1.0"
