"""Statistics that say how sure they are (numpy only; no scipy dependency).

- Warm-up is found in the data, not assumed: the first samples of a run (cold caches, page faults,
  the governor ramping up, ncnn's first-run allocations) are dropped until a window of samples
  agrees with the rest of the run. A run that never settles is flagged instead of averaged.
- The median gets a distribution-free confidence interval from order statistics (the binomial
  argument: the true median lies between the j-th and k-th smallest sample with a known
  probability), so it holds for the skewed, heavy-tailed latencies boards produce.
- Spread is the MAD (robust to the spikes a background process causes); outliers are marked with
  the modified z-score (|x - median| / (1.4826 MAD) > 3.5), not removed.
- Two runs are compared (on block medians, so correlated samples are not counted as independent)
  with the Mann-Whitney U test (normal approximation with tie and continuity
  corrections) plus effect sizes: Cliff's delta and the Hodges-Lehmann estimate of the B/A latency
  ratio with its Moses confidence interval. A verdict of `slower` needs both a significant test
  and a ratio interval entirely above 1 + min_effect, so noise between runs is not called a
  regression.
- Runs differ from each other by more than their samples do: a new process lands on other memory,
  the board (or the host of an emulated one) is busier for the next minute. Measured on an
  emulated Pi, back-to-back 3-s runs of one model had medians 33-50 ms while each run's own median
  interval was a few per cent wide, and the within-run test called a same-model pair "slower,
  p < 1e-3". So `compare_run_sets` judges on run medians when each side has several runs (t on log
  medians with a pooled variance), and a one-run side borrows the board's run-to-run spread from the history
  (`run_spread`: repeated runs of one model and options); with neither, the answer covers variation
  within the runs only and says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

MAD_SCALE = 1.4826        # MAD -> standard deviation for normal data
OUTLIER_Z = 3.5           # Iglewicz & Hoaglin's modified z-score cut-off
Z_975 = 1.959963984540054
BLOCKS = 20               # block medians per run for the two-run comparison


@dataclass
class Analysis:
    count: int                    # samples after warm-up
    warmup_count: int             # leading samples dropped as warm-up
    stable: bool                  # a steady state was found
    measured_s: float             # time covered by the kept samples
    median_ms: float
    ci_low_ms: float
    ci_high_ms: float
    ci_level: float               # achieved coverage of [ci_low, ci_high] (>= the requested level when n allows)
    mad_ms: float
    rel_mad: float                # MAD / median
    min_ms: float
    mean_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    outliers: list[int]           # indices into the full sample list (warm-up included)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def find_warmup(samples: Sequence[float], window: int = 5, tol: float = 0.05, max_fraction: float = 0.5
                ) -> tuple[int, bool]:
    """(number of leading warm-up samples, stable?).

    The steady level is the median of the last half of the run. Warm-up ends at the first sample
    from which the median of the next `window` samples is within `tol` of that level and stays
    there for the rest of the run (every later window too), so a single fast sample amid a slow
    ramp does not end it. Unstable if no such point exists in the first `max_fraction` of the run."""
    x = np.asarray(samples, dtype=np.float64)
    n = len(x)
    if n < 2 * window:
        return 0, n >= 3
    # long runs: a wider window, so one burst of a background job is not read as "never settled"
    window = max(window, n // 50)
    ref = float(np.median(x[n // 2:]))
    if ref <= 0:
        return 0, False
    meds = np.median(np.lib.stride_tricks.sliding_window_view(x, window), axis=1)
    ok = np.abs(meds - ref) <= tol * ref
    # from index i on, every window is ok
    tail_ok = np.logical_and.accumulate(ok[::-1])[::-1]
    starts = np.flatnonzero(tail_ok)
    if not len(starts) or starts[0] > max_fraction * n:
        # fall back: drop nothing we cannot justify, but say it never settled
        return 0, False
    # a window median tolerates a few slow samples at its front: step past those that are still
    # outliers against the steady state
    start = int(starts[0])
    tail = x[n // 2:]
    band = max(tol * ref, OUTLIER_Z * MAD_SCALE * float(np.median(np.abs(tail - ref))))
    while start < max_fraction * n and abs(x[start] - ref) > band:
        start += 1
    return start, True


def fmt_ms(value: float) -> str:
    """Milliseconds as people read them: 1080, 48.3, 0.512; never `1.08e+03`, which an emulated
    board's latencies printed as in flags, tables and the report."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def ci_label(level: float | None, requested: float = 0.95) -> str:
    """The level an interval is printed with. Order statistics give discrete coverages (95.9 % for
    20 samples, 96.1 % for 60); median_ci takes the narrowest pair that reaches the requested level,
    so it holds *at least* that: printed as the requested level (the exact coverage is `ci_level` in
    the JSON). Below it (too few samples) the true, lower level is printed, never the requested one:
    '75%' for 3 samples. Runs printed '96% CI', '98% CI' and '95% CI' for the same kind of interval."""
    if level is None or not math.isfinite(level) or level <= 0:
        return "no"
    if _reaches(level, requested):
        return f"{100 * requested:.0f}%"
    return f"{math.floor(1000 * level) / 10:g}%"


def _reaches(level: float, requested: float) -> bool:
    """Does an interval of coverage `level` hold the requested level (NaN does not)?"""
    return level >= requested - 1e-9


def ci_text(low: float | None, high: float | None, level: float | None, requested: float = 0.95,
            mark: bool = True) -> str:
    """'[1080, 1130]' for an interval at the requested level; '[1080, 1130] (75% CI)' below it (unless
    `mark` is off: a header that names the level already); '-' when there is none (one sample).
    A level of None (a sweep stored before levels were) is printed unmarked, as it was then."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)) or level == 0:
        return "-"
    text = f"[{fmt_ms(low)}, {fmt_ms(high)}]"
    if not mark or level is None or _reaches(level, requested):
        return text
    return f"{text} ({ci_label(level, requested)} CI)"


def ci_header(levels: Sequence[float | None], requested: float = 0.95) -> str:
    """A column header that does not claim 95 % when a row's interval is less: '95% CI' when every
    row reaches it, else 'CI (95% unless marked)'; ci_text marks the rows below it."""
    if all(lv is None or lv == 0 or _reaches(lv, requested) for lv in levels):
        return f"{100 * requested:.0f}% CI"
    return f"CI ({100 * requested:.0f}% unless marked)"


def median_ci(sorted_x: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Order-statistic CI for the median: the narrowest symmetric pair of ranks (j, n-1-j) whose
    binomial(n, 1/2) coverage is >= level. Returns (low, high, achieved coverage)."""
    n = len(sorted_x)
    if n == 0:
        return math.nan, math.nan, 0.0
    # cdf of Binomial(n, 0.5) via log-gamma, exact for the sizes runs have
    logp = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2) for k in range(n + 1)]
    pmf = np.exp(np.array(logp))
    cdf = np.cumsum(pmf)
    # P(X_(j+1) <= median <= X_(n-j)) = 1 - 2 * P(B <= j), decreasing in j: take the largest j that holds
    coverage = 1.0 - 2.0 * cdf[: (n + 1) // 2]
    ok = np.flatnonzero(coverage >= level)
    j = int(ok[-1]) if len(ok) else 0
    return float(sorted_x[j]), float(sorted_x[n - 1 - j]), float(max(coverage[j], 0.0)) if n > 1 else 0.0


def analyze(samples: Sequence[float], *, level: float = 0.95, warmup_window: int = 5,
            warmup_tol: float = 0.05) -> Analysis | None:
    """Warm-up split + robust summary of one run's samples (ms). None for an empty run."""
    x_all = np.asarray(samples, dtype=np.float64)
    if x_all.size == 0:
        return None
    warm, stable = find_warmup(x_all, warmup_window, warmup_tol)
    x = x_all[warm:]
    s = np.sort(x)
    med = float(np.median(x))
    mad = float(np.median(np.abs(x - med)))
    lo, hi, cov = median_ci(s, level)
    scale = MAD_SCALE * mad
    outliers = [int(i) for i in np.flatnonzero(np.abs(x_all - med) > OUTLIER_Z * scale)] if scale > 0 else []
    outliers = [i for i in outliers if i >= warm]
    return Analysis(count=int(x.size), warmup_count=warm, stable=stable, measured_s=float(x.sum()) / 1000.0,
                    median_ms=med, ci_low_ms=lo, ci_high_ms=hi, ci_level=round(cov, 4), mad_ms=mad,
                    rel_mad=mad / med if med > 0 else math.nan, min_ms=float(s[0]), mean_ms=float(x.mean()),
                    p90_ms=float(np.percentile(x, 90)), p99_ms=float(np.percentile(x, 99)), max_ms=float(s[-1]),
                    outliers=outliers)


def measurement_flags(a: Analysis | None, *, min_duration_s: float = 0.0, min_count: int = 10,
                      spread_rel_mad: float = 0.10, spread_ci_rel: float = 0.05) -> list[Any]:
    """Flags about the samples themselves (spread, warm-up, too little data)."""
    from deployer.profiling.context import Flag

    if a is None:
        return [Flag("duration", "no timed samples")]
    flags = []
    if not a.stable:
        flags.append(Flag("warmup", "latency never settled (no steady state in the first half of the run); "
                                    "run longer or check for drift"))
    if a.rel_mad > spread_rel_mad:
        flags.append(Flag("spread", f"spread too wide: MAD {fmt_ms(a.mad_ms)} ms is {100 * a.rel_mad:.0f}% of the "
                                    f"median {fmt_ms(a.median_ms)} ms"))
    half = (a.ci_high_ms - a.ci_low_ms) / 2
    if a.median_ms > 0 and half / a.median_ms > spread_ci_rel:
        few = "" if a.ci_level >= 0.95 else f" (only {a.count} samples: no 95% interval below 6)"
        flags.append(Flag("spread", f"median uncertain: {ci_label(a.ci_level)} CI [{fmt_ms(a.ci_low_ms)}, "
                                    f"{fmt_ms(a.ci_high_ms)}] ms is +-{100 * half / a.median_ms:.0f}%{few}"))
    if a.count < min_count:
        flags.append(Flag("duration", f"only {a.count} samples after warm-up (want >= {min_count})"))
    if min_duration_s and a.measured_s < min_duration_s:
        flags.append(Flag("duration", f"measured {a.measured_s:.2f} s after warm-up (minimum {min_duration_s:g} s)"))
    return flags


# ------------------------------------------------------------------------------------------ two runs

def _ranks(values: np.ndarray) -> tuple[np.ndarray, float]:
    """Average ranks (1-based) and the tie term sum(t^3 - t)."""
    order = np.argsort(values, kind="mergesort")
    sv = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    _, first, counts = np.unique(sv, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return ranks, float(np.sum(counts.astype(np.float64) ** 3 - counts))


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Two-sided Mann-Whitney U (normal approximation, tie + continuity corrections).

    Returns U for b (pairs where b > a, ties count 1/2), z, p and Cliff's delta = P(b > a) - P(b < a)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return {"u": math.nan, "z": math.nan, "p": 1.0, "cliffs_delta": 0.0}
    ranks, ties = _ranks(np.concatenate([x, y]))
    u_b = float(ranks[n1:].sum() - n2 * (n2 + 1) / 2.0)
    mu = n1 * n2 / 2.0
    n = n1 + n2
    var = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    if var <= 0:
        return {"u": u_b, "z": 0.0, "p": 1.0, "cliffs_delta": 0.0}
    diff = u_b - mu
    z = (diff - math.copysign(0.5, diff)) / math.sqrt(var) if diff else 0.0
    p = math.erfc(abs(z) / math.sqrt(2.0))
    return {"u": u_b, "z": z, "p": min(1.0, p), "cliffs_delta": 2.0 * u_b / (n1 * n2) - 1.0}


def hodges_lehmann_ratio(a: Sequence[float], b: Sequence[float], level: float = 0.95,
                         max_pairs: int = 4_000_000, seed: int = 0) -> tuple[float, float, float]:
    """B/A latency ratio: exp of the Hodges-Lehmann shift of log latencies, with the Moses CI
    (order statistics of the pairwise differences at the Mann-Whitney critical value)."""
    x = np.log(np.asarray(a, dtype=np.float64))
    y = np.log(np.asarray(b, dtype=np.float64))
    rng = np.random.default_rng(seed)
    cap = int(math.sqrt(max_pairs))
    if len(x) * len(y) > max_pairs:  # subsample evenly: the estimate needs thousands of pairs, not millions
        x = rng.choice(x, min(len(x), cap), replace=False)
        y = rng.choice(y, min(len(y), cap), replace=False)
    n1, n2 = len(x), len(y)
    d = np.sort((y[:, None] - x[None, :]).ravel())
    m = len(d)
    est = float(np.median(d))
    z = _z_for(level)
    k = int(math.floor(n1 * n2 / 2.0 - z * math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12.0)))
    k = max(0, min(k, m // 2 - 1 if m > 1 else 0))
    lo, hi = float(d[k]), float(d[m - 1 - k])
    return math.exp(est), math.exp(lo), math.exp(hi)


def _z_for(level: float) -> float:
    if abs(level - 0.95) < 1e-9:
        return Z_975
    # levels other than 95 % are rare
    return _two_sided_quantile(lambda z: math.erfc(z / math.sqrt(2)), level)


def _two_sided_quantile(tail: Callable[[float], float], level: float) -> float:
    """q with tail(q) = P(|X| >= q) = 1 - level, by bisection (tail falls from 1 at 0)."""
    lo, hi = 0.0, 1.0
    while tail(hi) > 1 - level:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if tail(mid) > 1 - level:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass
class Comparison:
    verdict: str          # same | faster | slower  (B relative to A)
    ratio: float          # B/A latency (Hodges-Lehmann), 1.10 = B is 10 % slower
    ratio_ci: list[float]
    change_pct: float
    change_ci_pct: list[float]
    p_value: float
    cliffs_delta: float   # +1: every B sample slower than every A sample
    median_a_ms: float
    median_b_ms: float
    n_a: int
    n_b: int
    blocks_a: int         # the test runs on this many block medians per run (see block_medians)
    blocks_b: int
    alpha: float
    min_effect_pct: float
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def compare_samples(a: Sequence[float], b: Sequence[float], *, alpha: float = 0.05, min_effect_pct: float = 3.0,
                    level: float = 0.95) -> Comparison:
    """Is B faster, slower or the same as A? `slower` needs p < alpha AND the whole ratio interval
    above 1 + min_effect (so a statistically detectable but negligible change stays `same`)."""
    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(xa) < 3 or len(xb) < 3:
        from deployer.errors import DeployerError

        raise DeployerError(f"compare needs at least 3 samples per run (got {len(xa)} and {len(xb)})")
    ba, bb = block_medians(xa), block_medians(xb)
    mw = mann_whitney(ba, bb)
    ratio, lo, hi = hodges_lehmann_ratio(ba, bb, level)
    verdict, reason = _verdict(lo, hi, mw["p"], alpha, min_effect_pct, "within runs")
    return Comparison(verdict=verdict, ratio=ratio, ratio_ci=[lo, hi], change_pct=100 * (ratio - 1),
                      change_ci_pct=[100 * (lo - 1), 100 * (hi - 1)], p_value=mw["p"],
                      cliffs_delta=mw["cliffs_delta"], median_a_ms=float(np.median(xa)),
                      median_b_ms=float(np.median(xb)), n_a=len(xa), n_b=len(xb), blocks_a=len(ba),
                      blocks_b=len(bb), alpha=alpha, min_effect_pct=min_effect_pct, reason=reason)


def block_medians(x: np.ndarray, blocks: int = BLOCKS) -> np.ndarray:
    """Medians of `blocks` consecutive, equal runs of samples (the samples themselves when there are
    fewer than 2 per block). Consecutive latencies are correlated (a background job, a clock step
    lasts many iterations), so treating 1000 samples as 1000 independent draws makes any two runs
    look "significantly" different; block medians are closer to independent and carry the
    within-run drift into the interval (the batch-means method)."""
    n = len(x)
    if n < 2 * blocks:
        return x
    k = n // blocks
    return np.array([np.median(x[i * k:(i + 1) * k if i < blocks - 1 else n]) for i in range(blocks)])


# ------------------------------------------------------------------------------- sets of runs

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-14:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_p_two_sided(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom."""
    if not math.isfinite(t):
        return 0.0
    return min(1.0, _betainc(df / 2.0, 0.5, df / (df + t * t)))


def t_quantile(level: float, df: float) -> float:
    """q with P(|T| <= q) = level."""
    return _two_sided_quantile(lambda q: t_p_two_sided(q, df), level)


@dataclass
class RunSpread:
    """How far the median of one run moves between runs of the same model and options on a board:
    the pooled standard deviation of log run medians over groups of repeated runs."""

    sd_log: float
    df: int               # runs minus groups
    runs: int
    groups: int

    @property
    def pct(self) -> float:
        return 100.0 * math.expm1(self.sd_log)

    def to_json(self) -> dict[str, Any]:
        return {"sd_pct": self.pct, "df": self.df, "runs": self.runs, "groups": self.groups}


MIN_SPREAD_DF = 2         # one pair of runs says too little about the spread to lean on it


def run_spread(groups: Sequence[Sequence[float]]) -> RunSpread | None:
    """Pooled spread of run medians (ms) within groups of repeated runs; None below MIN_SPREAD_DF."""
    ss, df, runs, used = 0.0, 0, 0, 0
    for g in groups:
        x = np.log(np.asarray([m for m in g if m and m > 0], dtype=np.float64))
        if len(x) < 2:
            continue
        ss += float(np.sum((x - x.mean()) ** 2))
        df += len(x) - 1
        runs += len(x)
        used += 1
    if df < MIN_SPREAD_DF:
        return None
    return RunSpread(math.sqrt(ss / df), df, runs, used)


def _verdict(lo: float, hi: float, p: float, alpha: float, min_effect_pct: float, what: str
             ) -> tuple[str, str]:
    eff = min_effect_pct / 100.0
    if p < alpha and lo > 1 + eff:
        return "slower", f"B is slower: ratio CI [{lo:.3f}, {hi:.3f}] lies above 1+{eff:g}, p={p:.2g} ({what})"
    if p < alpha and hi < 1 - eff:
        return "faster", f"B is faster: ratio CI [{lo:.3f}, {hi:.3f}] lies below 1-{eff:g}, p={p:.2g} ({what})"
    if p >= alpha:
        return "same", f"no significant difference (p={p:.2g} >= {alpha:g}; {what})"
    return "same", (f"difference within the {min_effect_pct:g}% noise floor or not certain "
                    f"(ratio CI [{lo:.3f}, {hi:.3f}], p={p:.2g}; {what})")


@dataclass
class SetComparison:
    """B's runs against A's: the verdict, and on what evidence it was reached."""

    comparison: Comparison
    basis: str                     # "runs" | "runs+history" | "within-runs"
    runs_a: int
    runs_b: int
    spread: RunSpread | None       # the board's run-to-run spread used, if any
    df: float | None               # degrees of freedom of the t interval (None: within-run test)

    def to_json(self) -> dict[str, Any]:
        return {**self.comparison.to_json(), "basis": self.basis, "runs_a": self.runs_a, "runs_b": self.runs_b,
                "run_to_run": self.spread.to_json() if self.spread else None, "df": self.df}


def compare_run_sets(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], *, alpha: float = 0.05,
                     min_effect_pct: float = 3.0, level: float = 0.95, spread: RunSpread | None = None
                     ) -> SetComparison:
    """Is B (one or more runs' kept samples) faster, slower or the same as A?

    Both sides with 2+ runs: Student's t on the runs' log medians with one pooled variance (and
    `spread` pooled in when given: more degrees of freedom for small sets). A one-run side: the
    within-run Hodges-Lehmann interval widened by the board's run-to-run spread (t with the spread's
    df); with under 3 samples in a run there is no within-run interval, and the spread alone (which
    holds the medians' sampling noise too) makes it. No spread: the within-run test alone (`basis`
    "within-runs": it cannot tell a slower model from a slower minute).
    Run medians need one sample per run: a sweep of a slow model (2-4 samples in a 2 s pass on an
    emulated board) ran every setting and then failed here on the within-run test it did not use."""
    if not a or not b or not all(len(r) for r in (*a, *b)):
        raise ValueError("compare_run_sets needs at least one run with samples per side")
    xa = np.concatenate([np.asarray(r, dtype=np.float64) for r in a])
    xb = np.concatenate([np.asarray(r, dtype=np.float64) for r in b])
    la = np.log([float(np.median(r)) for r in a])
    lb = np.log([float(np.median(r)) for r in b])
    na, nb = len(la), len(lb)
    few = min(len(xa), len(xb)) < 3
    within = None if few or (na >= 2 and nb >= 2) else \
        compare_samples(xa, xb, alpha=alpha, min_effect_pct=min_effect_pct, level=level)
    if na >= 2 and nb >= 2:
        # one pooled variance (Student's t, not Welch's): on the log scale the run-to-run noise is
        # the board's and the moment's, not the model's, and with 2 runs on a side Welch's degrees
        # of freedom fall to ~1 (t = 12.7): a 2.3x slower model came out "same" in a CI-like run
        d = float(lb.mean() - la.mean())
        ss = float(((la - la.mean()) ** 2).sum() + ((lb - lb.mean()) ** 2).sum())
        df = float(na + nb - 2)
        if spread is not None:      # and the history's repeated runs
            ss += spread.df * spread.sd_log ** 2
            df += spread.df
        se2 = ss / df * (1 / na + 1 / nb)
        basis = "runs+history" if spread is not None else "runs"
    elif spread is not None:
        if within is not None:
            d = math.log(within.ratio)
            lo_w, hi_w = math.log(within.ratio_ci[0]), math.log(within.ratio_ci[1])
            se_w = (hi_w - lo_w) / (2 * _z_for(level))
        else:
            d, se_w = float(lb.mean() - la.mean()), 0.0
        se2 = se_w ** 2 + spread.sd_log ** 2 * (1 / na + 1 / nb)
        df, basis = float(spread.df), "runs+history"
    elif within is not None:
        return SetComparison(within, "within-runs", na, nb, None, None)
    else:
        from deployer.errors import DeployerError

        raise DeployerError(f"compare needs at least 3 samples in a run that is compared alone (got {len(xa)} and "
                            f"{len(xb)})", hint="run longer (--duration), or compare sets of 2+ runs a side")
    se = math.sqrt(max(se2, 1e-300))
    q = t_quantile(level, df)
    lo, hi = math.exp(d - q * se), math.exp(d + q * se)
    p = t_p_two_sided(d / se, df)
    what = f"{na} vs {nb} run(s)" + (f", run-to-run spread {spread.pct:.1f}% from {spread.runs} earlier runs"
                                     if spread is not None else "")
    verdict, reason = _verdict(lo, hi, p, alpha, min_effect_pct, what)
    ba, bb = block_medians(xa), block_medians(xb)
    cmp = Comparison(verdict=verdict, ratio=math.exp(d), ratio_ci=[lo, hi], change_pct=100 * math.expm1(d),
                     change_ci_pct=[100 * (lo - 1), 100 * (hi - 1)], p_value=p,
                     cliffs_delta=mann_whitney(ba, bb)["cliffs_delta"], median_a_ms=float(np.median(xa)),
                     median_b_ms=float(np.median(xb)), n_a=len(xa), n_b=len(xb), blocks_a=len(ba),
                     blocks_b=len(bb), alpha=alpha, min_effect_pct=min_effect_pct, reason=reason)
    return SetComparison(cmp, basis, na, nb, spread, round(df, 2))
