"""Latency statistics on the host, computed by the same function the board runs.

The runner has to be self-contained (it is the one file shipped to boards), so the arithmetic lives
in `deployer.remote.runner.summarize`; this module only gives it a typed face. Using one function on
both sides means a board's own stats line and the host's recomputation can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from deployer.remote.runner import percentile, summarize

__all__ = ["LatencyStats", "latency_stats", "percentile"]


@dataclass(frozen=True)
class LatencyStats:
    count: int
    min_ms: float
    median_ms: float
    mean_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    std_ms: float  # population std (ddof=0), as TFLite's benchmark_model reports


def latency_stats(samples_ms: Sequence[float]) -> LatencyStats | None:
    """None for no samples: a run stopped before its first timed iteration has no statistics."""
    if not samples_ms:
        return None
    s = summarize([float(x) for x in samples_ms])
    return LatencyStats(**{k: s[k] for k in LatencyStats.__dataclass_fields__})  # type: ignore[arg-type]
