"""Statistics must match numpy's definitions (linear percentiles, population std)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from deployer.remote.stats import latency_stats, percentile


@pytest.mark.parametrize("n", [1, 2, 3, 10, 101, 1000])
def test_stats_match_numpy(n: int) -> None:
    rng = random.Random(n)
    samples = [rng.lognormvariate(0, 0.5) for _ in range(n)]
    s = latency_stats(samples)
    assert s is not None and s.count == n
    arr = np.array(samples)
    assert s.min_ms == arr.min() and s.max_ms == arr.max()
    assert s.median_ms == pytest.approx(np.median(arr), rel=1e-12)
    assert s.mean_ms == pytest.approx(arr.mean(), rel=1e-12)
    assert s.p90_ms == pytest.approx(np.percentile(arr, 90), rel=1e-12)
    assert s.p99_ms == pytest.approx(np.percentile(arr, 99), rel=1e-12)
    assert s.std_ms == pytest.approx(arr.std(), rel=1e-9, abs=1e-15)


def test_hand_computed() -> None:
    s = latency_stats([4.0, 1.0, 3.0, 2.0])
    assert (s.min_ms, s.median_ms, s.mean_ms, s.max_ms) == (1.0, 2.5, 2.5, 4.0)
    assert s.p90_ms == pytest.approx(3.7)  # rank 2.7 between 3 and 4
    assert s.std_ms == pytest.approx(1.118033988749895)


def test_order_does_not_matter_and_empty_is_none() -> None:
    assert latency_stats([3.0, 1.0, 2.0]) == latency_stats([1.0, 2.0, 3.0])
    assert latency_stats([]) is None
    assert percentile([5.0], 99) == 5.0
