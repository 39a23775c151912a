"""An ncnn.Net from the wheel, set up so that "fp32" really means fp32.

ncnn's x86/ARM defaults keep fp16 storage/packing/arithmetic on, which moves MobileNetV2 logits by
~1e-2: an int8-vs-fp32 comparison against that baseline measures fp16 noise too. Options are set
before loading because ncnn fixes thread counts and kernel choices at load time, and lightmode is
off whenever intermediate blobs are extracted (with it on, ncnn frees them and extract() crashes).

On x86 the packed int8 depthwise kernels dequantize with an approximate reciprocal (_mm_rcp_ps), so
requantized codes flip and MobileNetV2's int8 logits drift (cosine ~0.993 against the unpacked run).
ARM does ncnn's exact maths, which the unpacked x86 path reproduces bit for bit (checked on an
emulated Cortex-A72), so the host runs unpacked there: the check then predicts the board, not x86.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Iterable

import numpy as np

from deployer.errors import DeployerError

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def configure(opt, *, threads: int, intermediates: bool) -> None:
    """Options for a true fp32 run (also used by the isolated child, so both run the same kernels)."""
    opt.num_threads = threads
    opt.lightmode = not intermediates
    # don't spin between layers: on a shared 2-core machine idle OpenMP workers spinning for
    # 20 ms after every parallel region starve numpy and the other net
    opt.openmp_blocktime = 0
    opt.use_vulkan_compute = False
    opt.use_packing_layout = not _X86
    for key in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage"):
        setattr(opt, key, False)


class NcnnNet:
    """A validated model, run in-process once a child process survived it.

    The files go through deployer's parser and checks first (deployer.ncnn.validate); the first
    forward for each set of input shapes runs in a child (deployer.isolate), so a crash in ncnn is
    one error line, and only then does the model load here. `isolate=False` is for models deployer
    built itself from a checked model (mixed-precision candidates), where a child per candidate
    would double the search time.
    """

    def __init__(self, param: str | os.PathLike, bin: str | os.PathLike, *, threads: int = 2,
                 intermediates: bool = False, isolate: bool = True) -> None:
        from deployer.ncnn.model import NcnnModel

        self.param, self.bin = Path(param), Path(bin)
        self.threads, self.intermediates, self.isolate = threads, intermediates, isolate
        model = NcnnModel.load(param, bin)            # one-line errors for anything malformed
        self.graph = model.graph
        self.input_names = self.graph.input_names
        self.output_names = self.graph.output_names
        self.net = None
        self._probed: set[tuple] = set()
        if not isolate:
            self._load()

    def _load(self) -> None:
        import ncnn

        self.net = ncnn.Net()
        configure(self.net.opt, threads=self.threads, intermediates=self.intermediates)
        if self.net.load_param(str(self.param)) != 0:
            raise DeployerError(f"{self.param}: ncnn could not load this .param",
                                hint="is it an ncnn model, and are all its layer types built into the ncnn wheel?")
        if self.net.load_model(str(self.bin)) != 0:
            raise DeployerError(f"{self.bin}: ncnn could not load these weights for {self.param.name}",
                                hint="the .bin must be the one written with this .param")

    def _shapes(self, inputs: dict[str, np.ndarray]) -> tuple[tuple, dict[str, tuple[int, ...]]]:
        """(cache key, shapes) after the pure-Python checks of the inputs against the model."""
        from deployer.ncnn.validate import MAX_INPUT_ELEMENTS, infer_check

        key = tuple(sorted((n, tuple(np.shape(x))) for n, x in inputs.items()))
        shapes = {n: tuple(int(d) for d in np.shape(x)) for n, x in inputs.items()}
        if key in self._probed:
            return key, shapes
        for name, x in inputs.items():
            if name not in self.input_names:
                raise DeployerError(f"{self.param}: model has no input blob {name!r}",
                                    hint=f"inputs: {', '.join(self.input_names)}")
            if np.size(x) > MAX_INPUT_ELEMENTS or np.size(x) == 0:
                raise DeployerError(f"{self.param}: input {name} has {np.size(x):,} values; "
                                    f"between 1 and {MAX_INPUT_ELEMENTS:,} are supported")
            if np.ndim(x) > 4:
                raise DeployerError(f"{self.param}: input {name} has {np.ndim(x)} dimensions; ncnn takes 1 to 4")
        if all(len(s) == 3 for s in shapes.values()):
            shown = ", ".join("x".join(map(str, s)) for s in shapes.values())
            infer_check(self.graph, shapes, self.param.name, f"{shown} (CxHxW)")
        return key, shapes

    def _check_shapes(self, inputs: dict[str, np.ndarray], blobs: list[str]) -> None:
        """Shapes against the model (pure Python), then one isolated forward per new shape set."""
        prepare([(self, blobs)], inputs)

    def run(self, inputs: dict[str, np.ndarray], blobs: Iterable[str]) -> dict[str, np.ndarray]:
        """Feed CHW float32 arrays; extract each blob as an fp32 array (int8 blobs come back as raw codes)."""
        import ncnn

        blobs = list(blobs)
        self._check_shapes(inputs, blobs)
        if self.net is None:
            self._load()
        ex = self.net.create_extractor()
        for name, x in inputs.items():
            rc = ex.input(name, ncnn.Mat(np.ascontiguousarray(x, dtype=np.float32)).clone())
            if rc != 0:
                raise DeployerError(f"{self.param}: model has no input blob {name!r}",
                                    hint=f"inputs: {', '.join(self.input_names)}")
        result = {}
        for name in blobs:
            rc, mat = ex.extract(name)
            if rc != 0:
                raise DeployerError(f"{self.param}: ncnn could not compute blob {name!r} (rc={rc})")
            result[name] = np.array(mat, dtype=np.float32).copy()
        return result


def prepare(nets: list[tuple[NcnnNet, list[str]]], inputs: dict[str, np.ndarray]) -> None:
    """Check `inputs` against every net, then run the first forward of all of them in ONE child.

    `check` compares two models on the same inputs: probing them together costs one child process
    instead of two. Nets already probed for these shapes are skipped.
    """
    from deployer import isolate

    todo = []
    for net, blobs in nets:
        key, shapes = net._shapes(inputs)
        if key in net._probed:
            continue
        if net.isolate:
            todo.append((net, key, isolate.Probe(net.param, net.bin, shapes, intermediates=net.intermediates,
                                                 blobs=list(blobs))))
        else:
            net._probed.add(key)
    isolate.probe_all([spec for _, _, spec in todo])
    for net, key, _ in todo:
        net._probed.add(key)
