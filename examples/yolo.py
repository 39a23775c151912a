"""YOLOv8 end to end: eval views with people in them, boxes drawn, and boxes from an (emulated) board.

Usage:
    python -m examples.yolo views --out build/yolo-eval          # eval photos for profiles/yolov8n.yaml
    python -m examples.yolo board --profile profiles/yolov8n.yaml --targets targets/sim.yaml \\
        --board sim-1 --image photo.png --out build/yolo_boxes.png [--json]

`board` preprocesses the image exactly as calibration and `deployer check` do (the profile's
letterbox, deployer.inputs.tensor.load_array), sends the tensor to the board, runs the int8 model
there with the stock ncnn wheel (`deployer run`'s runner, --input-file / --return-output), decodes
the returned head on the host (deployer.check.tasks.detection) and draws the int8 boxes from the
board next to the fp32 boxes from the host. The model is NudeNet's 320n (AGPL-3.0): it is read from
the installed wheel, never copied into the repository.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from deployer import fsutil
from deployer.check.tasks.detection import Detections, decode_yolov8
from deployer.errors import DeployerError
from examples import data
from examples.evaluate import YOLO_CLASSES
from examples.infer import letterbox_geometry

# Photos on which the fp32 detector finds something (faces, feet, bellies): the only real photos
# with people in the installed wheels. Calibration uses crops of the bundled photos, so the
# astronaut / grace_hopper / coffee / chelsea views share photos with it; camera and the foolbox
# ImageNet photos do not.
_SKIMAGE = ("astronaut", "camera", "coffee", "chelsea")
_FOOLBOX = ("imagenet_00_243", "imagenet_10_541", "imagenet_13_471", "imagenet_15_99")


def _photos() -> dict[str, np.ndarray]:
    import skimage.data

    photos = {}
    for name in _SKIMAGE:
        img = np.asarray(getattr(skimage.data, name)())
        photos[name] = np.repeat(img[..., None], 3, 2) if img.ndim == 2 else img[..., :3]
    try:
        photos["grace_hopper"] = np.asarray(Image.open(data.package_dir("matplotlib") / "mpl-data" / "sample_data"
                                                       / "grace_hopper.jpg").convert("RGB"))
    except (DeployerError, OSError):
        pass
    for path, _ in data.imagenet_samples():
        if path.stem in _FOOLBOX:
            photos[path.stem] = np.asarray(Image.open(path).convert("RGB"))
    return photos


def detection_views(out_dir: str | Path, per_photo: int = 8, seed: int = 0) -> data.DataSet:
    """Each photo whole, mirrored, and `per_photo - 2` random crops (55-100 % of the short side,
    half of them mirrored), as PNGs + list.txt: people at different sizes and places."""
    folder = Path(out_dir)
    photos = _photos()
    stamp = f"yolo views per_photo={per_photo} seed={seed} photos={','.join(sorted(photos))}"
    count = len(photos) * per_photo
    if (cached := data._cached(folder, count, stamp)) is not None:
        return cached
    rng = np.random.default_rng(seed)
    files = []
    for name in sorted(photos):
        img = photos[name]
        h, w = img.shape[:2]
        views = [img, img[:, ::-1]]
        for k in range(per_photo - 2):
            side = rng.uniform(0.55, 1.0) * min(h, w)
            ch, cw = int(side), int(min(w, side * rng.uniform(0.8, 1.25)))
            y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            crop = img[y:y + ch, x:x + cw]
            views.append(crop[:, ::-1] if k % 2 else crop)
        for k, v in enumerate(views):
            path = folder / f"{name}_{k}.png"
            data._write_image(path, np.ascontiguousarray(v))
            files.append(path)
    return data._finish(folder, files, None, stamp)


# ------------------------------------------------------------------------------ boxes on pictures

def letterbox_scale(image_wh: tuple[int, int], input_wh: tuple[int, int]) -> float:
    """The scale deployer.inputs.tensor's letterbox applied (image pasted at the top-left)."""
    return letterbox_geometry(*image_wh, *input_wh)[0]


_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240))


def draw_panels(image: np.ndarray, panels: list[tuple[str, Detections]], path: Path,
                names: tuple[str, ...] = YOLO_CLASSES) -> Path:
    """The image once per panel, side by side, each with its boxes, labels and a title; PNG."""
    base = Image.fromarray(np.ascontiguousarray(image[..., :3]).astype(np.uint8))
    w, h = base.size
    title_h = 22
    canvas = Image.new("RGB", (w * len(panels), h + title_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (title, det) in enumerate(panels):
        canvas.paste(base, (i * w, title_h))
        draw.text((i * w + 6, 5), f"{title}: {len(det)} boxes", fill=(0, 0, 0))
        for k, (box, score, cls) in enumerate(zip(det.boxes, det.scores, det.classes)):
            c = _COLOURS[int(cls) % len(_COLOURS)]
            x0, y0, x1, y1 = (float(v) for v in box)
            draw.rectangle([i * w + x0, title_h + y0, i * w + x1, title_h + y1], outline=c, width=3)
            label = f"{names[int(cls)] if int(cls) < len(names) else cls} {float(score):.2f}"
            draw.text((i * w + x0 + 3, title_h + max(y0 - 12, 0)), label, fill=c)
    out = Path(path)
    import io

    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    fsutil.write_bytes(out, buf.getvalue())
    return out


# ------------------------------------------------------------------------------ on a board

@dataclass
class BoardBoxes:
    fp32: Detections            # host, fp32 model, image pixels
    int8: Detections            # board, int8 model, image pixels
    board: str
    facts: dict
    image: np.ndarray
    board_output: np.ndarray    # the raw head the board returned

    def to_dict(self) -> dict:
        def dets(d: Detections) -> list[dict]:
            return [{"label": YOLO_CLASSES[int(c)], "score": round(float(s), 4),
                     "box": [round(float(v), 1) for v in b]} for b, s, c in zip(d.boxes, d.scores, d.classes)]
        return {"board": self.board, "machine": self.facts.get("machine"), "fp32_host": dets(self.fp32),
                "int8_board": dets(self.int8)}


def board_boxes(profile_path: "Path | Any", targets: Path, board_name: str, image: Path, *, conf: float = 0.25,
                threads: int = 1) -> BoardBoxes:
    """fp32 boxes on the host and int8 boxes from `board_name` for one image (see module doc)."""
    from deployer.check.net import NcnnNet
    from deployer.inputs.tensor import load_array
    from deployer.profile import load_profile
    from deployer.quant.pipeline import output_paths, resolve_model
    from deployer.remote.session import RunOptions, open_session
    from deployer.targets import load_targets

    if not 0 < conf <= 1:          # NaN fails too: it silently found no boxes, a negative one every anchor
        raise DeployerError(f"--conf {conf}: a detection score threshold must be above 0 and at most 1")
    profile = load_profile(profile_path) if isinstance(profile_path, (str, Path)) else profile_path
    param, bin_, _ = resolve_model(profile)
    paths = output_paths(profile, param)
    if not paths.param.is_file():
        raise DeployerError(f"{paths.param}: no int8 model yet", hint="run `deployer quantize --profile PROFILE` first")
    spec = profile.inputs[0]
    x = load_array(Path(image), spec)                    # the same letterbox as calibration and check
    rgb = np.asarray(Image.open(image).convert("RGB"))
    scale = letterbox_scale((rgb.shape[1], rgb.shape[0]), spec.shape)
    n_cls = profile.task.num_classes if profile.task is not None else None

    host = NcnnNet(param, bin_, threads=threads)
    out_name = host.output_names[0]
    fp32_head = host.run({host.input_names[0]: x}, [out_name])[out_name]
    fp32 = decode_yolov8(fp32_head, n_cls, conf=conf).to_image(scale, size=(rgb.shape[1], rgb.shape[0]))

    inv = load_targets([targets])
    board = inv.board(board_name)
    with tempfile.TemporaryDirectory(prefix="deployer-yolo-") as tmp:
        raw = Path(tmp) / "input.f32"
        raw.write_bytes(np.ascontiguousarray(x, np.float32).tobytes())
        opts = RunOptions(param=paths.param, bin=paths.bin, shape=f"{x.shape[2]},{x.shape[1]},{x.shape[0]}",
                          iterations=1, warmup=0, threads=threads, fp16=False, input_file=raw,
                          output_blob=out_name, return_output=True)
        conn, session = open_session(board, inventory=inv)
        with conn:
            result = session.run(opts)
    if result.output is None:
        raise DeployerError(f"board {board_name}: the runner returned no output")
    head = np.asarray(result.output["values"], np.float32).reshape(result.output["shape"])
    int8 = decode_yolov8(head, n_cls, conf=conf).to_image(scale, size=(rgb.shape[1], rgb.shape[0]))
    return BoardBoxes(fp32, int8, board_name, dict(result.facts), rgb, head)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m examples.yolo", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("views", help="write the YOLO eval photos (+ list.txt)")
    v.add_argument("--out", required=True)      # str: Path("") is ".", the current folder
    b = sub.add_parser("board", help="int8 boxes from a board next to fp32 boxes from the host, as a PNG")
    b.add_argument("--profile", type=Path, required=True)
    b.add_argument("--targets", type=Path, required=True)
    b.add_argument("--board", required=True)
    b.add_argument("--image", type=Path, required=True)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--conf", type=float, default=0.25)
    b.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "views":
            ds = detection_views(data.out_folder(args.out))
            print(f"{len(ds.files)} views: {ds.list_file}")
            return 0
        res = board_boxes(args.profile, args.targets, args.board, args.image, conf=args.conf)
        draw_panels(res.image, [("fp32 (host)", res.fp32), (f"int8 ({res.board})", res.int8)], args.out)
        doc = {**res.to_dict(), "picture": str(args.out)}
        if args.json:
            print(json.dumps(doc, indent=2))
        else:
            print(f"{args.out}: fp32 {len(res.fp32)} boxes (host), int8 {len(res.int8)} boxes ({res.board})")
        return 0
    except BaseException as exc:  # noqa: BLE001 - one line and its exit code like deployer's commands, no traceback
        from deployer.cli.common import report_exception

        return report_exception(exc, getattr(args, "json", False)).exit_code


if __name__ == "__main__":
    from deployer.cli.common import install_signal_handlers

    install_signal_handlers()     # SIGTERM/SIGHUP clean up like Ctrl-C: no .NAME.tmp-* staging file stays
    sys.exit(main())
