"""Real images and labels that ship inside installed wheels, written out as plain files.

deployer's tools (ncnn2table, quantize, check) read image folders and list files like ncnn's own
tools, so every data set here becomes a folder of image files + `list.txt` (one absolute path a
line, ncnn2table style) + `labels.json` ({file name: class id}) when it is labelled. Nothing is
ever downloaded: a missing wheel is a DeployerError naming the package to install.

Splits and crops use fixed seeds, so the same call writes the same bytes on every machine.
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from PIL import Image

from deployer import fsutil
from deployer.errors import DeployerError

if TYPE_CHECKING:
    from examples.infer import Preprocess


@dataclass
class DataSet:
    """A folder of images, the list file that names them, and labels when the set has them."""

    folder: Path
    list_file: Path
    files: list[Path]
    labels: dict[str, int] = field(default_factory=dict)   # file name -> class id; empty if unlabelled

    def label_of(self, path: Path) -> int:
        return self.labels[Path(path).name]


class MissingWheel(DeployerError):
    """A model/data wheel is not installed: tests skip on this, every other error fails them."""


def out_folder(text: str, flag: str = "--out") -> Path:
    """The folder a writer fills, checked first: an empty --out is '.' to typer and argparse alike
    (450 digit images landed in the current folder), and a file there failed as "File exists"."""
    if not text.strip():
        raise DeployerError(f"{flag} is empty", hint="name the folder to write into")
    folder = Path(text)
    if folder.exists() and not folder.is_dir():
        raise DeployerError(f"{flag} {text}: is a file, not a folder", hint="name a new or existing folder")
    return folder


def package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it (foolbox/nudenet imports fail here)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise MissingWheel(
            f"python package {package!r} is not installed",
            hint=f"pip install --no-deps {package.replace('_', '-')} (see examples/README.md)",
        )
    return Path(spec.origin).parent


# ---------------------------------------------------------------- writing

def _write_image(path: Path, pixels: np.ndarray) -> None:
    """Atomic PNG write: a crashed run must not leave a truncated image the next run would trust."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    fsutil.write_bytes(path, buf.getvalue())


DATA_VERSION = 2   # bump when a writer's output changes; folders with another stamp are rewritten


def _finish(folder: Path, files: list[Path], labels: dict[str, int] | None, stamp: str) -> DataSet:
    list_file = folder / "list.txt"
    fsutil.write_text(folder / "stamp.txt", f"{DATA_VERSION} {stamp}\n")
    fsutil.write_text(list_file, "".join(f"{p.resolve()}\n" for p in files))
    if labels:
        fsutil.write_text(folder / "labels.json", json.dumps(labels, indent=1, sort_keys=True) + "\n")
    return DataSet(folder=folder, list_file=list_file, files=files, labels=dict(labels or {}))


_OUR_STAMP = re.compile(r"^\d+ [a-z][a-z-]*( |$)")
_OUR_FILES = ("list.txt", "labels.json", "stamp.txt")


def _claim(folder: Path) -> None:
    """Refuse a folder whose list.txt or labels.json some other tool wrote: a writer replaces them, and
    a stale stamp makes it delete the images the list names (a user's own image list, say)."""
    stamp = folder / "stamp.txt"
    if stamp.is_file() and _OUR_STAMP.match(stamp.read_text(errors="replace")):
        return
    theirs = [name for name in _OUR_FILES if (folder / name).exists()]
    if theirs:
        raise DeployerError(f"{folder}: has {', '.join(theirs)} that examples.data did not write",
                            hint="write the data set into a new or empty folder (nothing was changed)")


def _forget(folder: Path) -> None:
    """Remove what an older writer put here (only files its list named), so a folder scan sees no stale images."""
    list_file = folder / "list.txt"
    for line in list_file.read_text().splitlines() if list_file.is_file() else []:
        path = Path(line)
        if path.parent.resolve() == folder.resolve():
            path.unlink(missing_ok=True)
    for name in ("list.txt", "labels.json", "stamp.txt"):
        (folder / name).unlink(missing_ok=True)


def _cached(folder: Path, count: int, stamp: str) -> DataSet | None:
    """A folder is complete when its list (written last) names `count` existing files and its stamp
    says the same writer, version and arguments made it."""
    _claim(folder)
    list_file, stamp_file = folder / "list.txt", folder / "stamp.txt"
    if not list_file.is_file() or not stamp_file.is_file():
        return None
    if stamp_file.read_text().strip() != f"{DATA_VERSION} {stamp}":
        _forget(folder)
        return None
    files = [Path(line) for line in list_file.read_text().splitlines() if line]
    if len(files) != count or not all(p.is_file() for p in files):
        return None
    labels_file = folder / "labels.json"
    labels = json.loads(labels_file.read_text()) if labels_file.is_file() else {}
    return DataSet(folder=folder, list_file=list_file, files=files, labels=labels)


# ---------------------------------------------------------------- calibration photos

@dataclass(frozen=True)
class _Photo:
    """One bundled photo: whether its wheel is installed (cheap: no decoding) and how to read it."""

    present: Callable[[], bool]
    load: Callable[[], np.ndarray]


def _installed(package: str, *parts: str) -> Callable[[], bool]:
    def present() -> bool:
        try:
            return package_dir(package).joinpath(*parts).is_file() if parts else True
        except MissingWheel:
            return False
    return present


def _skimage(name: str) -> _Photo:
    def load() -> np.ndarray:
        import skimage.data

        img = getattr(skimage.data, name)()
        return img[0] if isinstance(img, tuple) else img   # stereo_motorcycle -> (left, right, disp)
    return _Photo(_installed("skimage"), load)


def _bundled_file(package: str, *parts: str) -> _Photo:
    def load() -> np.ndarray:
        return np.asarray(Image.open(package_dir(package).joinpath(*parts)).convert("RGB"))
    return _Photo(_installed(package, *parts), load)


# Unlabelled colour photos, none of them in the held-out sets (foolbox ImageNet, lfw_subset).
CALIBRATION_PHOTOS: dict[str, _Photo] = {
    "astronaut": _skimage("astronaut"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "motorcycle": _skimage("stereo_motorcycle"),
    "retina": _skimage("retina"),
    "china": _bundled_file("sklearn", "datasets", "images", "china.jpg"),
    "flower": _bundled_file("sklearn", "datasets", "images", "flower.jpg"),
    "grace_hopper": _bundled_file("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg"),
}


def available_photo_names() -> list[str]:
    """The calibration photos whose wheel is installed (matplotlib is optional), without reading them."""
    return [name for name, photo in CALIBRATION_PHOTOS.items() if photo.present()]


def available_photos() -> dict[str, np.ndarray]:
    """Every calibration photo whose wheel is installed, as HxWx3 uint8."""
    return {name: np.ascontiguousarray(CALIBRATION_PHOTOS[name].load()[..., :3]).astype(np.uint8)
            for name in available_photo_names()}


def random_crops(photos: dict[str, np.ndarray], count: int, seed: int = 0,
                 max_side: int = 320) -> list[tuple[str, np.ndarray]]:
    """`count` crops cycling over the photos: 35-100 % of the short side, aspect 3:4..4:3.

    Crops give calibration more varied activation ranges than the few whole photos would; they are
    shrunk to at most `max_side` so the folder stays small (models resize them anyway).
    """
    if not photos:
        raise DeployerError("no calibration photos available", hint="install scikit-image or scikit-learn")
    rng = np.random.default_rng(seed)
    names = sorted(photos)
    crops = []
    for i in range(count):
        name = names[i % len(names)]
        img = photos[name]
        h, w = img.shape[:2]
        side = rng.uniform(0.35, 1.0) * min(h, w)
        aspect = rng.uniform(0.75, 4 / 3)
        ch, cw = min(h, int(side / aspect ** 0.5)), min(w, int(side * aspect ** 0.5))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = Image.fromarray(img[y:y + ch, x:x + cw])
        crop.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
        crops.append((f"{i:03d}_{name}", np.asarray(crop)))
    return crops


def calibration_photos(out_dir: str | Path, count: int = 44, seed: int = 0) -> DataSet:
    """Write `count` deterministic crops of the bundled photos + list.txt (ncnn2table's imagelist)."""
    folder = Path(out_dir)
    # the photo set is part of the stamp: crops made before a wheel was installed are not these crops
    stamp = f"calibration count={count} seed={seed} photos={'+'.join(available_photo_names())}"
    if (cached := _cached(folder, count, stamp)) is not None:
        return cached
    files = []
    for stem, pixels in random_crops(available_photos(), count, seed):
        path = folder / f"{stem}.png"
        _write_image(path, pixels)
        files.append(path)
    return _finish(folder, files, None, stamp)


# ---------------------------------------------------------------- ImageNet held-out (foolbox)

_IMAGENET_NAME = re.compile(r"^imagenet_(\d+)_(\d+)\.(jpg|png)$")


def imagenet_samples() -> list[tuple[Path, int]]:
    """foolbox's 20 labelled ImageNet photos, read in place: (path, torchvision class index)."""
    folder = package_dir("foolbox") / "data"
    samples = []
    for path in sorted(folder.iterdir()):
        if m := _IMAGENET_NAME.match(path.name):
            samples.append((path, int(m.group(2))))
    if not samples:
        raise DeployerError(f"{folder}: no imagenet_XX_<label>.jpg files", hint="reinstall foolbox==3.3.4 --no-deps")
    return samples


def imagenet_heldout(out_dir: str | Path) -> DataSet:
    """The foolbox ImageNet photos as a DataSet (list file + labels) pointing at the wheel's files."""
    folder = Path(out_dir)
    samples = imagenet_samples()
    _claim(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return _finish(folder, [p for p, _ in samples], {p.name: label for p, label in samples}, "imagenet")


# ---------------------------------------------------------------- ImageNet evaluation views

# (left, top, right, bottom) as fractions of the photo, and whether to mirror it. Each view is a
# plausible framing of the same photo: the whole, a mirror image, zoomed centres, offset corners.
EVAL_VIEWS: tuple[tuple[str, tuple[float, float, float, float], bool], ...] = (
    ("full", (0.0, 0.0, 1.0, 1.0), False),
    ("flip", (0.0, 0.0, 1.0, 1.0), True),
    ("center80", (0.1, 0.1, 0.9, 0.9), False),
    ("center65flip", (0.175, 0.175, 0.825, 0.825), True),
    ("topleft80", (0.0, 0.0, 0.8, 0.8), False),
    ("bottomright80flip", (0.2, 0.2, 1.0, 1.0), True),
)


def imagenet_views(out_dir: str | Path, max_side: int = 256) -> DataSet:
    """Several framings of every foolbox ImageNet photo (6 x 20 = 120 PNGs + labels), for judging int8.

    Why: a decision taken on 11 inputs flips with one image. None of these photos is used for
    calibration, and 120 inputs make an agreement rate's 95 % interval about +-5 points instead of
    +-15. Caveat: views of one photo are correlated (they mostly agree or disagree together), so
    the effective sample size lies between the 20 photos and the 120 views: the MobileNetV2
    profile's `eval.group` names the photo in each file name and the intervals count photos.
    """
    folder = Path(out_dir)
    samples = imagenet_samples()
    stamp = f"imagenet-views views={len(EVAL_VIEWS)} max_side={max_side}"
    if (cached := _cached(folder, len(samples) * len(EVAL_VIEWS), stamp)) is not None:
        return cached
    files, labels = [], {}
    for path, label in samples:
        with Image.open(path) as im:
            img = im.convert("RGB")
        w, h = img.size
        for view, (left, top, right, bottom), flip in EVAL_VIEWS:
            crop = img.crop((round(left * w), round(top * h), round(right * w), round(bottom * h)))
            if flip:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            crop.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
            out = folder / f"{path.stem}_{view}.png"
            _write_image(out, np.asarray(crop))
            files.append(out)
            labels[out.name] = label
    return _finish(folder, files, labels, stamp)


# ---------------------------------------------------------------- faces (skimage lfw_subset)

def lfw_subset() -> tuple[np.ndarray, np.ndarray]:
    """200 x 25 x 25 gray uint8 crops and labels (1 = face for the first 100, 0 = non-face)."""
    path = package_dir("skimage") / "data" / "lfw_subset.npy"
    if not path.is_file():
        raise DeployerError(f"{path} is missing", hint="reinstall scikit-image")
    gray = np.load(path)
    pixels = np.clip(np.rint(gray * 255.0), 0, 255).astype(np.uint8)
    labels = np.array([1] * 100 + [0] * 100, dtype=np.int64)
    return pixels, labels


def lfw_split(calibration_every: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (calibration, held_out): every 4th image calibrates (50), the other 150 evaluate."""
    idx = np.arange(200)
    calib = idx[idx % calibration_every == 0]
    return calib, np.setdiff1d(idx, calib)


def lfw_images(out_dir: str | Path, which: str = "all") -> DataSet:
    """lfw_subset as RGB PNGs (gray replicated: the MTCNN nets take 3 channels) + labels.

    `which` is "all", "calibration" or "heldout" (see lfw_split).
    """
    if which not in ("all", "calibration", "heldout"):
        raise DeployerError(f"lfw_images: which={which!r}", hint="use all, calibration or heldout")
    folder = Path(out_dir)
    calib, held = lfw_split()
    chosen = {"all": np.arange(200), "calibration": calib, "heldout": held}[which]
    stamp = f"lfw {which}"
    if (cached := _cached(folder, len(chosen), stamp)) is not None:
        return cached
    pixels, labels = lfw_subset()
    files, names = [], {}
    for i in chosen:
        kind = "face" if labels[i] else "nonface"
        path = folder / f"lfw_{i:03d}_{kind}.png"
        _write_image(path, np.repeat(pixels[i][..., None], 3, axis=2))
        files.append(path)
        names[path.name] = int(labels[i])
    return _finish(folder, files, names, stamp)


# ---------------------------------------------------------------- digits (sklearn)

DIGITS_SIZE = 16


def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's bundled digits (1797 x 8x8, values 0..16), read from its CSV without importing sklearn."""
    import gzip

    path = package_dir("sklearn") / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise DeployerError(f"{path} is missing", hint="reinstall scikit-learn")
    with gzip.open(path, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.float32)
    return table[:, :64].reshape(-1, 8, 8), table[:, 64].astype(np.int64)


def digits_split(seed: int = 0, test_fraction: float = 0.25) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Digits upscaled to 16x16 uint8, split 75/25 per class with a fixed seed: {"train": (x, y), "test": (x, y)}.

    8x8 is too small for three conv stages; bilinear upscaling keeps the digits legible.
    """
    images, labels = _digits_raw()
    small = np.clip(images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    big = np.stack([
        np.asarray(Image.fromarray(im).resize((DIGITS_SIZE, DIGITS_SIZE), Image.Resampling.BILINEAR))
        for im in small
    ])
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), bool)
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        test[idx[:round(len(idx) * test_fraction)]] = True
    train_idx, test_idx = np.flatnonzero(~test), np.flatnonzero(test)
    train_idx, test_idx = rng.permutation(train_idx), rng.permutation(test_idx)
    return {"train": (big[train_idx], labels[train_idx]), "test": (big[test_idx], labels[test_idx])}


def digits_images(out_dir: str | Path, which: str = "test", limit: int | None = None) -> DataSet:
    """Gray 16x16 PNGs of one split (`limit` keeps the first N, e.g. 200 train images to calibrate)."""
    if which not in ("train", "test"):
        raise DeployerError(f"digits_images: which={which!r}", hint="use train or test")
    folder = Path(out_dir)
    x, y = digits_split()[which]
    if limit is not None:
        x, y = x[:limit], y[:limit]
    stamp = f"digits {which} limit={limit}"
    if (cached := _cached(folder, len(x), stamp)) is not None:
        return cached
    files, names = [], {}
    for i, (img, label) in enumerate(zip(x, y)):
        path = folder / f"digit_{which}_{i:04d}_{int(label)}.png"
        _write_image(path, img)
        files.append(path)
        names[path.name] = int(label)
    return _finish(folder, files, names, stamp)


# ---------------------------------------------------------------- ready tensors

def npy_inputs(ds: DataSet, pre: "Preprocess", shape: tuple[int, int, int], out_dir: str | Path) -> DataSet:
    """The same set as CHW float32 .npy files, preprocessed for one model (deployer takes .npy as-is).

    Lets a test or a user feed exactly the tensors the zoo checks used, skipping image decoding.
    """
    from examples.infer import image_to_input, load_rgb

    folder = Path(out_dir)
    stamp = f"npy from={ds.list_file} pre={pre} shape={tuple(shape)}"
    if (cached := _cached(folder, len(ds.files), stamp)) is not None:
        return cached
    files, labels = [], {}
    for src in ds.files:
        path = folder / f"{src.stem}.npy"
        buf = io.BytesIO()
        np.save(buf, image_to_input(load_rgb(src), pre, shape), allow_pickle=False)
        fsutil.write_bytes(path, buf.getvalue())
        files.append(path)
        if src.name in ds.labels:
            labels[path.name] = ds.labels[src.name]
    return _finish(folder, files, labels, stamp)


# ---------------------------------------------------------------- CLI

WRITERS: dict[str, Callable[[Path], DataSet]] = {
    "calibration": lambda out: calibration_photos(out),
    "imagenet": imagenet_heldout,
    "imagenet-views": imagenet_views,
    "lfw": lambda out: lfw_images(out, "all"),
    "lfw-calibration": lambda out: lfw_images(out, "calibration"),
    "lfw-heldout": lambda out: lfw_images(out, "heldout"),
    "digits-test": lambda out: digits_images(out, "test"),
    "digits-calibration": lambda out: digits_images(out, "train", limit=200),
}


def main(argv: list[str] | None = None) -> int:
    """python -m examples.data SET --out DIR [--json]: write one data set as files + list.txt."""
    import typer

    from deployer.cli.common import console, emit_json, handle_errors

    app = typer.Typer(add_completion=False)

    @app.command()
    @handle_errors
    def write(name: str = typer.Argument(..., help=", ".join(WRITERS)),
              out: str = typer.Option(..., "--out", help="folder to write into"),   # str: typer reads "" as "."
              npy_for: str = typer.Option("", "--npy-for", help="also write .npy tensors for this zoo model "
                                          "into OUT/npy (its preprocessing)"),
              json_output: bool = typer.Option(False, "--json")) -> None:
        if name not in WRITERS:
            raise DeployerError(f"unknown data set {name!r}", hint=f"choose one of: {', '.join(WRITERS)}")
        ds = WRITERS[name](out_folder(out))
        if npy_for:
            from examples import zoo

            model = zoo.build(npy_for)
            ds = npy_inputs(ds, model.preprocess, model.input_shape, Path(out) / "npy")
        if json_output:
            emit_json({"folder": ds.folder, "list_file": ds.list_file, "count": len(ds.files),
                       "labelled": bool(ds.labels)})
        else:
            console.print(f"[green]{name}[/]: {len(ds.files)} images, list {ds.list_file}")

    try:
        app(args=argv)
    except SystemExit as done:
        return int(done.code or 0)
    return 0


if __name__ == "__main__":
    import sys

    from deployer.cli.common import install_signal_handlers

    install_signal_handlers()     # SIGTERM/SIGHUP clean up like Ctrl-C: no .NAME.tmp-* staging file stays
    sys.exit(main())
