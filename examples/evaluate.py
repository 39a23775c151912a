"""Score zoo models on their labelled data, in ncnn: what "the conversion is right" means.

Each scorer takes any (param, bin) pair with the zoo entry's blob names, so the same code scores the
fp32 reference and an int8 model written by deployer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from examples import data
from examples.infer import NcnnRunner, image_to_input, letterbox_geometry, load_rgb
from examples.zoo import ZooModel

YOLO_CLASSES = (
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED", "BELLY_COVERED",
    "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE", "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED", "BUTTOCKS_COVERED",
)


@dataclass
class Scored:
    """Outputs of one model over a labelled set: raw first-output vectors, predictions, accuracy."""

    outputs: np.ndarray              # N x K, first output blob flattened
    predictions: np.ndarray          # N argmax
    labels: np.ndarray
    names: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return float((self.predictions == self.labels).mean())

    @property
    def correct(self) -> int:
        return int((self.predictions == self.labels).sum())


def run_first_output(model: ZooModel, inputs: Sequence[np.ndarray], param: Path | None = None,
                     bin: Path | None = None, threads: int = 2) -> np.ndarray:
    """Run every preprocessed input through the model; stack the flattened first output."""
    runner = NcnnRunner(param or model.param, bin or model.bin, threads=threads)
    out = model.outputs[0]
    return np.stack([runner.run({model.inputs[0]: x}, [out])[out].reshape(-1) for x in inputs])


def _score(model: ZooModel, inputs: list[np.ndarray], labels: Sequence[int], names: list[str],
           param: Path | None, bin: Path | None) -> Scored:
    outputs = run_first_output(model, inputs, param, bin)
    return Scored(outputs=outputs, predictions=outputs.argmax(1), labels=np.asarray(labels), names=names)


def image_inputs(model: ZooModel, paths: Sequence[Path]) -> list[np.ndarray]:
    return [image_to_input(load_rgb(p), model.preprocess, model.input_shape) for p in paths]


def score_imagenet(model: ZooModel, param: Path | None = None, bin: Path | None = None) -> Scored:
    """Top-1 on foolbox's 20 ImageNet photos (torchvision class order)."""
    samples = data.imagenet_samples()
    paths = [p for p, _ in samples]
    return _score(model, image_inputs(model, paths), [y for _, y in samples], [p.name for p in paths], param, bin)


def lfw_inputs(model: ZooModel, indices: Sequence[int] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """lfw_subset crops (gray replicated to RGB) preprocessed for an MTCNN net, with face labels."""
    pixels, labels = data.lfw_subset()
    idx = np.arange(len(labels)) if indices is None else np.asarray(indices)
    inputs = [image_to_input(np.repeat(pixels[i][..., None], 3, axis=2), model.preprocess, model.input_shape)
              for i in idx]
    return inputs, labels[idx]


def score_lfw(model: ZooModel, indices: Sequence[int] | None = None, param: Path | None = None,
              bin: Path | None = None) -> Scored:
    """Face vs non-face on skimage's lfw_subset: prediction = argmax of out0 ([non-face, face])."""
    inputs, labels = lfw_inputs(model, indices)
    return _score(model, inputs, labels, [], param, bin)


def digits_inputs(model: ZooModel, which: str = "test") -> tuple[list[np.ndarray], np.ndarray]:
    x, y = data.digits_split()[which]
    rgb = [np.repeat(im[..., None], 3, axis=2) for im in x]
    return [image_to_input(im, model.preprocess, model.input_shape) for im in rgb], y


def score_digits(model: ZooModel, param: Path | None = None, bin: Path | None = None) -> Scored:
    """Accuracy on the 450-image digits test split."""
    inputs, labels = digits_inputs(model)
    return _score(model, inputs, labels, [], param, bin)


# ---------------------------------------------------------------- YOLOv8 decoding

@dataclass
class Detection:
    label: str
    score: float
    box: tuple[float, float, float, float]   # x0, y0, x1, y1 in original image pixels


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x0, y0 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x1, y1 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter + 1e-9)


def decode_yolov8(out: np.ndarray, image_wh: tuple[int, int], input_hw: tuple[int, int],
                  conf: float = 0.25, iou: float = 0.45) -> list[Detection]:
    """(4+K) x N YOLOv8 head output -> boxes in image pixels after class-agnostic NMS.

    Boxes are undone through the top-left-anchored letterbox that infer.image_to_input applies.
    """
    out = out.reshape(4 + len(YOLO_CLASSES), -1).T
    scores = out[:, 4:].max(1)
    keep = scores >= conf
    out, scores = out[keep], scores[keep]
    classes = out[:, 4:].argmax(1)
    scale, _, _ = letterbox_geometry(image_wh[0], image_wh[1], input_hw[1], input_hw[0])
    cx, cy, w, h = (out[:, i] / scale for i in range(4))
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    boxes = np.clip(boxes, 0, [image_wh[0], image_wh[1], image_wh[0], image_wh[1]])
    order = np.argsort(-scores)
    chosen: list[int] = []
    while order.size:
        i, order = order[0], order[1:]
        chosen.append(int(i))
        order = order[_iou(boxes[i], boxes[order]) < iou]
    return [Detection(YOLO_CLASSES[classes[i]], float(scores[i]), tuple(float(v) for v in boxes[i]))
            for i in chosen]


def detect(model: ZooModel, image: Path | np.ndarray, param: Path | None = None, bin: Path | None = None,
           conf: float = 0.25) -> list[Detection]:
    rgb = load_rgb(image) if isinstance(image, (str, Path)) else image
    x = image_to_input(rgb, model.preprocess, model.input_shape)
    out = run_first_output(model, [x], param, bin)[0]
    return decode_yolov8(out, (rgb.shape[1], rgb.shape[0]), model.input_shape[1:], conf)
