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


class NcnnNet:
    def __init__(self, param: str | os.PathLike, bin: str | os.PathLike, *, threads: int = 2,
                 intermediates: bool = False) -> None:
        import ncnn

        for path in (param, bin):
            if not Path(path).is_file():
                raise DeployerError(f"{path}: model file not found")
        self.param, self.bin = Path(param), Path(bin)
        self.net = ncnn.Net()
        opt = self.net.opt
        opt.num_threads = threads
        opt.lightmode = not intermediates
        # don't spin between layers: on a shared 2-core machine idle OpenMP workers spinning for
        # 20 ms after every parallel region starve numpy and the other net
        opt.openmp_blocktime = 0
        opt.use_vulkan_compute = False
        opt.use_packing_layout = not _X86
        for key in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage"):
            setattr(opt, key, False)
        if self.net.load_param(str(param)) != 0:
            raise DeployerError(f"{param}: ncnn could not load this .param",
                                hint="is it an ncnn model, and are all its layer types built into the ncnn wheel?")
        if self.net.load_model(str(bin)) != 0:
            raise DeployerError(f"{bin}: ncnn could not load these weights for {Path(param).name}",
                                hint="the .bin must be the one written with this .param")
        self.input_names = list(self.net.input_names())
        self.output_names = list(self.net.output_names())

    def run(self, inputs: dict[str, np.ndarray], blobs: Iterable[str]) -> dict[str, np.ndarray]:
        """Feed CHW float32 arrays; extract each blob as an fp32 array (int8 blobs come back as raw codes)."""
        import ncnn

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
