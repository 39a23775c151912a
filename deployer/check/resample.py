"""Resampling an eval set whose inputs come in groups, for uncertainty that counts photos.

Views or crops of one photo agree or miss together, so uncertainty has to be measured over the
photos (eval.group's groups; without one, every input is its own group): a cluster bootstrap
draws photos with replacement and takes all of a drawn photo's inputs, and leaving one out drops
a whole photo. Metrics that are sums of per-input pieces (cosines, agreements, mask pixel counts,
per-image box matches) are recomputed under a weighting, weights[i] = how often input i is in the
draw, without running any model again. Used by the method choice's stability
(deployer.quant.choice) and the task metrics' intervals (deployer.check.tasks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

DRAWS = 1000                  # bootstrap draws where a draw costs a vectorised sum
SEED = 0                      # fixed: a report is reproducible from the same outputs


@dataclass(frozen=True)
class Units:
    """The independent units of an eval set: names, and each input's unit index."""

    names: tuple[str, ...]
    of: np.ndarray                  # input index -> unit index
    grouped: bool                   # True when eval.group put several inputs in one unit

    @property
    def count(self) -> int:
        return len(self.names)

    def describe(self) -> str:
        return "photos (eval.group)" if self.grouped else "inputs"


def units(groups: Sequence[str] | None, n: int) -> Units:
    """eval.group's keys (one per input) as units; without keys every input is its own unit."""
    if groups is None:
        return Units(tuple(str(i) for i in range(n)), np.arange(n), False)
    if len(groups) != n:
        raise ValueError(f"{len(groups)} group keys for {n} inputs")
    names, of = np.unique(np.asarray(list(groups), dtype=str), return_inverse=True)
    return Units(tuple(str(x) for x in names), of.reshape(-1), len(names) < n)


def bootstrap_weights(u: Units, draws: int = DRAWS, seed: int = SEED) -> np.ndarray:
    """draws x inputs: how often each input is in each cluster-bootstrap draw of the units."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, u.count, size=(draws, u.count))
    counts = np.stack([np.bincount(row, minlength=u.count) for row in picks]) if draws else np.zeros((0, u.count))
    return counts[:, u.of].astype(np.int64)


def leave_one_out_weights(u: Units) -> np.ndarray:
    """units x inputs: row g leaves unit g out (none with a single unit: nothing would be left)."""
    if u.count < 2:
        return np.zeros((0, len(u.of)), np.int64)
    keep = 1 - np.eye(u.count, dtype=np.int64)
    return keep[:, u.of]


def percentile_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The central `level` share of bootstrap values (percentile bootstrap)."""
    v = np.asarray(values, np.float64)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(v, [tail, 100 - tail])
    return float(lo), float(hi)
