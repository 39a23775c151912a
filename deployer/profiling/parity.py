"""Three-way parity on real inputs: host fp32, host int8 and the board, on the same tensors.

Why three ways: host fp32 vs host int8 says what quantization costs; host int8 vs board int8 says
whether the board computes what the host predicts (kernels, fp16 paths, wheel versions); host fp32
vs board is what the user gets. All three use the very same preprocessed tensors (real images
through deployer.inputs, as calibration and check read them, written as raw float32 files the
runner reads), never random fills, so the numbers mean something for the task.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from deployer import fsutil
from deployer.errors import DeployerError


@dataclass(frozen=True)
class Inputs:
    """Preprocessed input tensors (CHW float32), with where each came from."""

    names: list[str]
    tensors: list[np.ndarray]
    real: bool               # False = the runner's seeded random fill (no images given)


def load_inputs(images: Sequence[Path], shape: Sequence[int], *, mean: Sequence[float] = (),
                norm: Sequence[float] = (), pixel: str = "RGB") -> Inputs:
    """Images (or ready CHW .npy tensors) -> tensors exactly as deployer's calibration/check reads them."""
    from deployer.inputs.spec import PIXEL_TYPES, InputSpec
    from deployer.inputs.tensor import load_array

    if pixel.upper() not in PIXEL_TYPES:
        raise DeployerError(f"--pixel {pixel!r}: use one of {', '.join(PIXEL_TYPES)}")
    spec = InputSpec(shape=tuple(shape), pixel=pixel.upper(), mean=tuple(mean), norm=tuple(norm))
    for flag, values in (("--mean", spec.mean), ("--norm", spec.norm)):
        # as the profile's inputs.mean/norm: one value per channel (two values for RGB were taken
        # without a word and the third channel went unnormalised)
        if values and spec.channels is not None and len(values) != spec.channels:
            raise DeployerError(f"{flag} has {len(values)} values but --pixel {spec.pixel} has {spec.channels} "
                                "channels; give one value per channel")
    files = expand_images(images)
    return Inputs([p.name for p in files], [load_array(path, spec) for path in files], True)


def expand_images(images: Sequence[Path]) -> list[Path]:
    """Image or .npy files as they are; folders and list files read as calibration and check read
    them (deployer.check.samples.list_inputs), so parity accepts the same inputs they do."""
    from deployer.check.samples import INPUT_SUFFIXES, list_inputs

    out: list[Path] = []
    for item in images:
        p = Path(item)
        if not p.exists():
            raise DeployerError(f"--images {p}: no such file or folder")
        if p.is_file() and p.suffix.lower() in INPUT_SUFFIXES:
            out.append(p)
            continue
        try:
            out += list_inputs(p)
        except DeployerError as err:
            raise DeployerError(f"--images {err.message}", hint=err.hint) from None
    return out


def write_input_files(inputs: Inputs, folder: Path) -> list[Path]:
    """Raw float32 CHW files the runner's --input-file reads (atomic writes)."""
    paths = []
    for i, t in enumerate(inputs.tensors):
        path = Path(folder) / f"parity-{i:03d}.f32"
        fsutil.write_bytes(path, np.ascontiguousarray(t, dtype="<f4").tobytes())
        paths.append(path)
    return paths


def host_infer(param: Path, bin_: Path, tensors: Sequence[np.ndarray], *, int8: bool, fp16: bool = False,
               input_blob: str | None = None, output_blob: str | None = None) -> list[np.ndarray]:
    """The host ncnn wheel's outputs. On x86 packing is off: x86's packed int8 depthwise kernel uses
    an approximate reciprocal, the unpacked path does ARM's exact maths (see session.host_reference)."""
    import ncnn

    net = ncnn.Net()
    net.opt.num_threads = 1
    net.opt.use_int8_inference = int8
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = fp16
    if platform.machine() in ("x86_64", "AMD64", "i686"):
        net.opt.use_packing_layout = False
    if net.load_param(str(param)) != 0 or net.load_model(str(bin_)) != 0:
        raise DeployerError(f"{param}: the host ncnn could not load this model")
    in_blob = input_blob or net.input_names()[0]
    out_blob = output_blob or net.output_names()[-1]
    outs = []
    for t in tensors:
        ex = net.create_extractor()
        ex.input(in_blob, ncnn.Mat(np.ascontiguousarray(t, dtype=np.float32)).clone())
        ret, m = ex.extract(out_blob)
        if ret != 0:
            raise DeployerError(f"{param}: host extract({out_blob!r}) failed ({ret})")
        outs.append(np.array(m, dtype=np.float32).ravel())
    return outs


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    den = float(np.linalg.norm(a64) * np.linalg.norm(b64))
    return min(1.0, float(a64 @ b64 / den)) if den else (1.0 if not a64.any() and not b64.any() else 0.0)


@dataclass
class PairStats:
    ref: str
    test: str
    cosine_mean: float
    cosine_min: float
    top1_agreement: float | None        # None when the output is a single value
    max_abs: float
    per_input: list[float] = field(default_factory=list)   # cosine per input

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def pair_stats(ref_name: str, ref: Sequence[np.ndarray], test_name: str, test: Sequence[np.ndarray]) -> PairStats:
    if len(ref) != len(test):
        raise DeployerError(f"parity: {len(ref)} {ref_name} outputs vs {len(test)} {test_name} outputs")
    cos = [_cos(a, b) for a, b in zip(ref, test)]
    top1 = None
    if ref and ref[0].size > 1:
        top1 = float(np.mean([int(np.argmax(a)) == int(np.argmax(b)) for a, b in zip(ref, test)]))
    worst = max(float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0 for a, b in zip(ref, test))
    return PairStats(ref_name, test_name, float(np.mean(cos)), float(np.min(cos)), top1, worst, cos)


def three_way(host_fp32: Sequence[np.ndarray], host_int8: Sequence[np.ndarray] | None,
              board: Sequence[np.ndarray], board_name: str) -> list[PairStats]:
    """The parity table rows: fp32->int8 on the host, host->board, and what the user gets."""
    rows = []
    if host_int8 is not None:
        rows.append(pair_stats("host fp32", host_fp32, "host int8", host_int8))
        rows.append(pair_stats("host int8", host_int8, board_name, board))
    rows.append(pair_stats("host fp32", host_fp32, board_name, board))
    return rows
