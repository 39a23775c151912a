"""ncnn model I/O: .param text, .bin weights, fp16 conversion, and the model object tying them."""

from deployer.ncnn.model import NcnnModel
from deployer.ncnn.modelbin import Weight, read_bin, weight_layout, write_bin
from deployer.ncnn.param import Graph, Layer, ParamValue, format_param, parse_param, read_param

__all__ = [
    "Graph", "Layer", "NcnnModel", "ParamValue", "Weight", "format_param", "parse_param",
    "read_bin", "read_param", "weight_layout", "write_bin",
]
