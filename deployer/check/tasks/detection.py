"""YOLOv8 detections from the raw head, and how close int8's detections are to fp32's (mAP).

Cosine over a detector's raw output says little about the boxes a user sees: a 1 % error on a
box logit is nothing, the same error on a class score near the threshold adds or removes a box.
So a detector is judged like a detector: decode both outputs into boxes (YOLOv8's (4 + classes) x
anchors head: cx, cy, w, h in input pixels, then per-class sigmoid scores), class-aware NMS, and
score int8's boxes against fp32's boxes as ground truth with COCO's average precision (101-point
interpolation) at IoU 0.5 and averaged over 0.5:0.95, per class. Against real labels the same
function gives the usual mAP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IOU_THRESHOLDS = np.round(np.arange(0.5, 0.96, 0.05), 2)


@dataclass
class Detections:
    """Boxes (N x 4: x0, y0, x1, y1) in the network input's pixels, scores (N), class ids (N)."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.size)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def to_image(self, scale: float, pad: tuple[float, float] = (0.0, 0.0),
                 size: tuple[int, int] | None = None) -> "Detections":
        """Undo a letterbox (network = image * scale + pad) into image pixels, clipped to `size` (W, H)."""
        b = (self.boxes - np.array([pad[0], pad[1], pad[0], pad[1]], np.float32)) / np.float32(scale)
        if size is not None:
            b = np.clip(b, 0, [size[0], size[1], size[0], size[1]])
        return Detections(b.astype(np.float32), self.scores, self.classes)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a) x len(b)) of x0, y0, x1, y1 boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: np.clip(r[:, 2] - r[:, 0], 0, None) * np.clip(r[:, 3] - r[:, 1], 0, None)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy NMS, best score first."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, order = order[0], order[1:]
        keep.append(int(i))
        if order.size:
            order = order[box_iou(boxes[i], boxes[order])[0] < iou]
    return np.asarray(keep, np.int64)


def decode_yolov8(out: np.ndarray, num_classes: int | None = None, *, conf: float = 0.25, iou: float = 0.45,
                  max_det: int = 300, class_agnostic: bool = False) -> Detections:
    """A YOLOv8 head (4 + classes rows x anchors, or the transpose) -> boxes after NMS.

    Ultralytics exports already apply the sigmoid to class scores and scale boxes to input pixels,
    so decoding is a threshold, an argmax and NMS. NMS is per class unless `class_agnostic`.
    """
    a = np.asarray(out, np.float32)
    a = a.reshape(a.shape[-2], a.shape[-1]) if a.ndim > 2 else a
    if num_classes is not None and a.shape[0] != 4 + num_classes and a.shape[1] == 4 + num_classes:
        a = a.T
    elif num_classes is None and a.shape[0] > a.shape[1]:
        a = a.T
    if num_classes is not None and a.shape[0] != 4 + num_classes:
        raise ValueError(f"YOLOv8 head has {a.shape[0]} rows, expected 4 + {num_classes} classes")
    cls_scores = a[4:]
    classes = cls_scores.argmax(0)
    scores = cls_scores.max(0)
    keep = scores >= conf
    if not keep.any():
        return Detections.empty()
    cx, cy, w, h = a[0, keep], a[1, keep], a[2, keep], a[3, keep]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1).astype(np.float32)
    scores, classes = scores[keep], classes[keep]
    # per-class NMS in one pass: push every class into its own far-apart region
    offset = 0.0 if class_agnostic else float(np.abs(boxes).max() + 1) * 2
    chosen = nms(boxes + (classes.astype(np.float32) * offset)[:, None], scores, iou)[:max_det]
    return Detections(boxes[chosen], scores[chosen].astype(np.float32), classes[chosen].astype(np.int64))


def _ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """COCO's 101-point interpolated average precision (pycocotools' accumulate)."""
    p = np.flip(np.maximum.accumulate(np.flip(np.asarray(precision, np.float64))))
    idx = np.searchsorted(np.asarray(recall, np.float64), np.linspace(0, 1, 101), side="left")
    return float(np.sum(p[idx[idx < p.size]]) / 101)


@dataclass
class MapResult:
    map50: float | None                     # None when the reference has no boxes at all
    map: float | None                       # mAP@0.5:0.95
    per_class: dict[int, dict] = field(default_factory=dict)   # class -> {ap50, ap, reference_boxes}
    images: int = 0
    reference_boxes: int = 0
    test_boxes: int = 0

    def to_dict(self, names: list[str] | None = None) -> dict:
        per = {(names[c] if names and c < len(names) else str(c)): v for c, v in sorted(self.per_class.items())}
        return {"map50": self.map50, "map50_95": self.map, "images": self.images,
                "reference_boxes": self.reference_boxes, "test_boxes": self.test_boxes, "per_class": per}


@dataclass
class ImageMatch:
    """One image's int8 boxes matched against its fp32 boxes, per class: how many reference boxes
    and, per test box (highest score first), its score and whether it hit at each IoU threshold.
    Matching never looks across images, so the mAP of any multiset of images follows from these
    without matching again (deployer.quant.choice resamples the eval set this way)."""

    gt: dict[int, int]                                          # class -> reference boxes in this image
    scores: dict[int, np.ndarray]                               # class -> test box scores
    hits: dict[int, np.ndarray]                                 # class -> test boxes x IoU thresholds
    test_boxes: int = 0


def match_image(ref: Detections, test: Detections) -> ImageMatch:
    """Greedy COCO matching of one image's test boxes (highest score first) to its reference boxes."""
    match = ImageMatch({}, {}, {}, len(test))
    for c in sorted({int(c) for c in ref.classes} | {int(c) for c in test.classes}):
        gt = ref.boxes[ref.classes == c]
        match.gt[c] = len(gt)
        mask = test.classes == c
        boxes, scores = test.boxes[mask], test.scores[mask]
        order = np.argsort(-scores, kind="stable")
        ious = box_iou(boxes[order], gt) if len(gt) else np.zeros((len(order), 0))
        taken = np.zeros((IOU_THRESHOLDS.size, len(gt)), bool)
        hits = np.zeros((len(order), IOU_THRESHOLDS.size), bool)
        if len(gt):
            for k in range(len(order)):
                for t, thr in enumerate(IOU_THRESHOLDS):
                    cand = np.where(~taken[t] & (ious[k] >= thr), ious[k], -1.0)
                    j = int(np.argmax(cand))
                    if cand[j] >= 0:
                        taken[t, j] = True
                        hits[k, t] = True
        match.scores[c] = scores[order].astype(np.float64)
        match.hits[c] = hits
    return match


def map_from_matches(matches: list[ImageMatch]) -> MapResult:
    """mAP over these images' matches (an image may appear more than once)."""
    gt: dict[int, int] = {}
    for m in matches:
        for c, n in m.gt.items():
            gt[c] = gt.get(c, 0) + n
    classes = sorted(c for c, n in gt.items() if n)
    result = MapResult(None, None, images=len(matches), reference_boxes=sum(gt.values()),
                       test_boxes=sum(m.test_boxes for m in matches))
    if not classes:
        return result
    ap_table = np.zeros((len(classes), IOU_THRESHOLDS.size))
    for ci, c in enumerate(classes):
        scores = [m.scores[c] for m in matches if c in m.scores]
        if not scores or not sum(len(x) for x in scores):
            continue
        order = np.argsort(-np.concatenate(scores), kind="stable")   # ties in image order, like a stable sort
        hits = np.concatenate([m.hits[c] for m in matches if c in m.hits])[order]   # detections x thresholds
        tp = np.cumsum(hits, 0)
        fp = np.cumsum(~hits, 0)
        for t in range(IOU_THRESHOLDS.size):
            recall = tp[:, t] / gt[c]
            precision = tp[:, t] / np.maximum(tp[:, t] + fp[:, t], 1)
            ap_table[ci, t] = _ap(recall, precision)
        result.per_class[c] = {"ap50": float(ap_table[ci, 0]), "ap": float(ap_table[ci].mean()),
                               "reference_boxes": gt[c]}
    result.map50 = float(ap_table[:, 0].mean())
    result.map = float(ap_table.mean())
    return result


def mean_average_precision(references: list[Detections], tests: list[Detections]) -> MapResult:
    """mAP of `tests` against `references` as ground truth (one Detections per image each)."""
    if len(references) != len(tests):
        raise ValueError("need one reference and one test detection set per image")
    return map_from_matches([match_image(r, t) for r, t in zip(references, tests)])
