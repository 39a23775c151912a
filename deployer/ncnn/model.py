"""An ncnn model as one object: the .param graph plus every layer's weights from the .bin.

Quantization passes edit layers and weights in place and then `save`; loading checks that the two
files belong together so a mismatch is reported at load time, naming the layer, not later as
garbage numbers on a board.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from deployer import fsutil
from deployer.errors import DeployerError
from deployer.ncnn.modelbin import Weight, read_bin, weight_layout, write_bin
from deployer.ncnn.param import Graph, Layer, format_param, read_param
from deployer.ncnn.validate import check_graph, check_weights


@dataclass
class NcnnModel:
    graph: Graph
    weights: dict[str, list[Weight]] = field(default_factory=dict)

    @classmethod
    def load(cls, param_path: str | os.PathLike, bin_path: str | os.PathLike, *,
             allow_nonfinite: bool = False) -> "NcnnModel":
        """Read and check both files. `allow_nonfinite` lets NaN/Inf weights through (only for
        byte-parity tests of the int8 transform against ncnn's tool); every command refuses them."""
        graph = read_param(param_path)
        bin_path = Path(bin_path)
        # everything ncnn would crash on or silently compute garbage from, before anyone uses it;
        # params first, so a bad param is reported as such and not as a .bin size mismatch
        check_graph(graph, Path(param_path).name)
        data = fsutil.read_input(bin_path)
        weights = read_bin(graph, data, source=bin_path.name)
        check_weights(graph, weights, bin_path.name, allow_nonfinite=allow_nonfinite)
        return cls(graph=graph, weights=weights)

    def save(self, param_path: str | os.PathLike, bin_path: str | os.PathLike) -> None:
        """Write both files atomically; serialize everything first so a bad model writes nothing."""
        text = format_param(self.graph)
        blob = write_bin(self.graph, self.weights)
        fsutil.write_bytes(bin_path, blob)
        fsutil.write_bytes(param_path, text.encode("utf-8"))

    def to_bytes(self) -> tuple[bytes, bytes]:
        """(.param, .bin) contents, for loading straight into ncnn without touching disk."""
        return format_param(self.graph).encode("utf-8"), write_bin(self.graph, self.weights)

    def layer(self, name: str) -> Layer:
        return self.graph.layer(name)

    def weight(self, layer_name: str, name: str) -> Weight:
        layer = self.graph.layer(layer_name)
        for w in self.weights.get(layer_name, []):
            if w.name == name:
                return w
        names = [n for n, _, _ in weight_layout(layer)]
        raise DeployerError(
            f"layer {layer_name} ({layer.type}) has no weight {name!r}; it has: "
            f"{', '.join(names) or 'no weights'}")
