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


def mask_counts(references: list[np.ndarray], tests: list[np.ndarray], threshold: float = 0.3) -> np.ndarray:
    """Per input: intersection, union, reference and test pixels of the thresholded masks (N x 4).
    The IoU of any multiset of inputs follows from these (deployer.quant.choice resamples them)."""
    rows = []
    for r, t in zip(references, tests):
        a, b = np.asarray(r) > threshold, np.asarray(t) > threshold
        if a.shape != b.shape:
            raise ValueError(f"dense outputs differ in shape: {a.shape} vs {b.shape}")
        rows.append((int(np.sum(a & b)), int(np.sum(a | b)), int(a.sum()), int(b.sum())))
    return np.asarray(rows, np.int64).reshape(-1, 4)


def mask_result(counts: np.ndarray, threshold: float) -> MaskResult:
    """The IoU summary of per-input mask counts (mask_counts)."""
    inter, union = int(counts[:, 0].sum()), int(counts[:, 1].sum())
    per = [i / u for i, u in counts[:, :2] if u]
    return MaskResult(inter / union if union else None, float(min(per)) if per else None, threshold,
                      len(counts), int(counts[:, 2].sum()), int(counts[:, 3].sum()))


def mask_iou(references: list[np.ndarray], tests: list[np.ndarray], threshold: float = 0.3) -> MaskResult:
    return mask_result(mask_counts(references, tests, threshold), threshold)
