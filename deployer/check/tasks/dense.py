"""Dense outputs (segmentation / text-detection probability maps): IoU of the thresholded maps.

For a map like PP-OCR's DBNet text probability, what matters downstream is the region above the
binarisation threshold (DBNet post-processing uses 0.3): int8 that moves values far from the
threshold changes nothing, a shift across it grows or eats a text box. `mask_iou` is the
intersection over union of the two binary masks summed over all inputs (pixels of every image
count once, so an image with no foreground cannot divide by zero); `mask_iou_min` is the worst
single input with any foreground.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class MaskResult:
    mask_iou: float | None            # None when neither model marks any pixel on any input
    mask_iou_min: float | None
    threshold: float
    images: int
    reference_pixels: int
    test_pixels: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def mask_iou(references: list[np.ndarray], tests: list[np.ndarray], threshold: float = 0.3) -> MaskResult:
    inter = union = ref_px = test_px = 0
    per = []
    for r, t in zip(references, tests):
        a, b = np.asarray(r) > threshold, np.asarray(t) > threshold
        if a.shape != b.shape:
            raise ValueError(f"dense outputs differ in shape: {a.shape} vs {b.shape}")
        i, u = int(np.sum(a & b)), int(np.sum(a | b))
        inter, union = inter + i, union + u
        ref_px, test_px = ref_px + int(a.sum()), test_px + int(b.sum())
        if u:
            per.append(i / u)
    return MaskResult(inter / union if union else None, min(per) if per else None, threshold,
                      len(references), ref_px, test_px)
