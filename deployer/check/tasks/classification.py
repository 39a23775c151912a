"""Classifiers: top-1 / top-5 agreement with fp32, with a confidence interval, and accuracy on labels.

Agreement rates on a few dozen images are noisy (one image of 20 is 5 points), so every rate comes
with a Wilson score interval (deployer.check.metrics): a gate decided on a lower bound below the threshold says "not enough
evidence", not "passed".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deployer.check.metrics import grouped_interval, top1_agrees, topk_contains


@dataclass
class ClassificationResult:
    images: int
    top1_agreement: float
    top1_interval: tuple[float, float]
    top5_agreement: float | None
    accuracy_fp32: float | None = None
    accuracy_int8: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def classification(references: list[np.ndarray], tests: list[np.ndarray],
                   labels: list[int] | None = None, groups: list[str] | None = None) -> ClassificationResult:
    refs = [np.asarray(r).reshape(-1) for r in references]
    outs = [np.asarray(t).reshape(-1) for t in tests]
    agree = [int(top1_agrees(r, t)) for r, t in zip(refs, outs)]
    n = len(agree)
    top5 = None
    if refs and refs[0].size >= 5:
        top5 = float(np.mean([topk_contains(r, t, 5) for r, t in zip(refs, outs)]))
    res = ClassificationResult(n, float(np.mean(agree)) if n else float("nan"), grouped_interval(agree, groups), top5)
    if labels is not None:
        y = np.asarray(labels)
        res.accuracy_fp32 = float(np.mean([r.argmax() for r in refs] == y))
        res.accuracy_int8 = float(np.mean([t.argmax() for t in outs] == y))
    return res
