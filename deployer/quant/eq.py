"""method=eq: ncnn2table's documented scale search, done correctly and fast.

ncnn's EQ (segfaults in its own tool, see ncnn-int8.md §2.7) starts from KL, then for every
conv/dw/fc layer searches each weight scale element, then the input scale, over
`scale * [0.5, 2.0)` in 100 steps, scoring the cosine similarity between the fp32 layer output and
the layer run in int8 on the fp32 input, averaged over at most 50 calibration inputs; the best
average wins and is kept before the next element is searched.

Instead of 100 single-layer ncnn forwards per element, the int8 layer is simulated in numpy with
ncnn's integer maths (deployer.quant.arith: round half away from zero, clamp +-127, exact integer
accumulation, `acc / (s_in * s_w) + bias`, fused activation, ncnn's padding). A weight scale only changes its own output
channel(s), so its 100 candidates cost one batched matmul per input and the cosine is updated from
per-channel partial sums.

Speed: the net runs once per input for a whole batch of layers (their fp32 inputs/outputs are
kept, up to a memory budget), and the layers are searched in parallel worker processes
(`thread=`). The input-scale search runs the int8 layer once per candidate and input: depthwise
layers as tap-by-tap sums, 1x1 convs on the input itself, so neither copies a 9x im2col. Rounding
stays in float32 (exact: ties detected, not approximated). Every cosine still uses every spatial
position: subsampling would be faster but would no longer be the documented algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from deployer.quant.arith import ConvGeometry, activation, layer_activation
from deployer.quant.arith import quantize_f32 as quantize
from deployer.quant.collect import CollectJob, Runner, extract, feed, mat_view
from deployer.quant.methods import LayerScales
from deployer.quant.weights import CalibModel, QuantLayer

MAX_FILES = 50
STEPS = 100
LOWER, UPPER = np.float32(0.5), np.float32(2.0)
_MEMORY = 512 << 20


@dataclass
class _Geometry:
    """How a layer maps its (C, H, W) input to columns: im2col per group."""

    ql: QuantLayer
    groups: int
    cin_g: int
    cout_g: int

    @classmethod
    def of(cls, ql: QuantLayer, cin: int) -> "_Geometry":
        if ql.type == "InnerProduct":
            return cls(ql, 1, cin, ql.num_output)
        g = int(ql.layer.get(7, 1)) if ql.type == "ConvolutionDepthWise" else 1
        return cls(ql, g, cin // g, ql.num_output // g)

    def columns(self, x: np.ndarray) -> np.ndarray:
        """[groups, K, P] integer-valued columns of the (already quantized) input."""
        if self.ql.type == "InnerProduct":
            return x.reshape(1, -1, 1)
        xp, (kh, kw, dh, dw, sh, sw, oh, ow) = self.padded(x)
        if kh == kw == sh == sw == 1 and xp.shape[1:] == (oh, ow):
            return x.reshape(self.groups, self.cin_g, oh * ow)               # 1x1: a view
        ekw, ekh = dw * (kw - 1) + 1, dh * (kh - 1) + 1
        win = np.lib.stride_tricks.sliding_window_view(xp, (ekh, ekw), axis=(1, 2))
        win = win[:, ::sh, ::sw, ::dh, ::dw][:, :oh, :ow]            # [C, oh, ow, kh, kw]
        cols = win.transpose(0, 3, 4, 1, 2).reshape(self.groups, self.cin_g * kh * kw, oh * ow)
        return np.ascontiguousarray(cols)

    def depthwise_acc(self, x: np.ndarray, qw: np.ndarray) -> np.ndarray:
        """[C, P] integer sums of a one-channel-per-group conv, tap by tap: no 9x im2col copy."""
        xp, (kh, kw, dh, dw, sh, sw, oh, ow) = self.padded(x)
        dt = _matmul_dtype(kh * kw)                  # float32 while every partial sum is exact
        xp, w = xp.astype(dt, copy=False), qw.reshape(self.groups, kh * kw).astype(dt, copy=False)
        acc = np.zeros((self.groups, oh, ow), dt)
        for a in range(kh):
            for b in range(kw):
                tap = xp[:, a * dh: a * dh + sh * (oh - 1) + 1: sh, b * dw: b * dw + sw * (ow - 1) + 1: sw]
                acc += w[:, a * kw + b, None, None] * tap
        return acc.reshape(self.groups, oh * ow)

    def padded(self, x: np.ndarray):
        """The input padded like ncnn, and (kh, kw, dh, dw, sh, sw, out_h, out_w)."""
        g = ConvGeometry.of(self.ql.layer)
        xp = g.pad(x)
        oh, ow = g.out_size(xp.shape[1], xp.shape[2])
        return xp, (g.kh, g.kw, g.dh, g.dw, g.sh, g.sw, oh, ow)

    def weights(self) -> np.ndarray:
        """[groups, cout_g, K] fp32 weights."""
        return self.ql.weight.reshape(self.groups, self.cout_g, -1)


def _matmul_dtype(k: int):
    return np.float32 if k * 127 * 127 < (1 << 24) else np.float64


def _dequant(acc: np.ndarray, s_in: np.float32, s_w: np.ndarray, bias: np.ndarray | None,
             kind: int, params: list[float]) -> np.ndarray:
    """acc [..., cout, P] -> float output like ncnn: acc * (1 / (s_in * s_w)) + bias, activation."""
    denom = (np.float32(s_in) * s_w.astype(np.float32)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(denom == 0, np.float32(0), np.float32(1) / np.where(denom == 0, 1, denom))
    out = acc.astype(np.float32) * inv.astype(np.float32)[..., :, None]
    if bias is not None:
        out = out + bias.astype(np.float32)[..., :, None]
    return activation(out, kind, params)


_BATCH_ELEMENTS = 1 << 23      # int8 outputs computed per matmul chunk (memory bound)


class _LayerSearch:
    """EQ for one layer over the stored fp32 inputs X and outputs Y, all inputs batched."""

    def __init__(self, ql: QuantLayer, xs: list[np.ndarray], ys: list[np.ndarray]) -> None:
        self.ql = ql
        self.X = np.stack([x.reshape(-1) if ql.type == "InnerProduct" else x for x in xs])
        self.geo = _Geometry.of(ql, self.X.shape[1] if self.X.ndim == 4 else 1)
        cout = self.geo.groups * self.geo.cout_g
        self.Y = np.stack([y.reshape(cout, -1) for y in ys]).astype(np.float64)     # [N, cout, P]
        self.sa = np.sqrt(np.sum(self.Y * self.Y, axis=(1, 2)))                    # [N]
        self.act = layer_activation(ql.layer)
        self.W = self.geo.weights()
        self.bias = ql.bias
        self.dw = ql.type == "ConvolutionDepthWise"

    def columns(self, s_in) -> np.ndarray:
        """[N, groups, K, P] of the input quantized with `s_in`."""
        q = quantize(self.X, s_in)
        return np.stack([self.geo.columns(x) for x in q])

    def _per_channel_scale(self, s_w: np.ndarray) -> np.ndarray:
        """Weight scale per output channel (depthwise: group scale repeated)."""
        return np.repeat(s_w, self.geo.cout_g) if self.dw else s_w

    def _qw(self, s_w: np.ndarray) -> np.ndarray:
        per = self._per_channel_scale(s_w).reshape(self.geo.groups, self.geo.cout_g, 1)
        return quantize(self.W, per)

    def output(self, cols: np.ndarray, qw: np.ndarray, s_in, s_w: np.ndarray) -> np.ndarray:
        """The int8 layer's float output [N, cout, P] for quantized columns and weights."""
        dt = _matmul_dtype(cols.shape[-2])
        acc = np.matmul(qw.astype(dt, copy=False)[None], cols.astype(dt, copy=False))   # [N, G, cout_g, P]
        acc = acc.reshape(acc.shape[0], -1, acc.shape[-1])
        return _dequant(acc, s_in, self._per_channel_scale(s_w), self.bias, *self.act).astype(np.float64)

    @staticmethod
    def _candidates(scale: np.float32) -> np.ndarray:
        lower = np.float32(scale * LOWER)
        upper = np.float32(scale * UPPER)
        step = np.float32((upper - lower) / np.float32(STEPS))
        return (lower + np.arange(STEPS, dtype=np.float32) * step).astype(np.float32)

    @staticmethod
    def _pick(scale: np.float32, cands: np.ndarray, avg: np.ndarray) -> np.float32:
        """ncnn: the first candidate with a strictly larger summed cosine than 0 / the best so far."""
        best, best_sim = scale, 0.0
        for k in range(STEPS):
            if best_sim < avg[k]:
                best_sim, best = float(avg[k]), cands[k]
        return np.float32(best)

    def _rows(self, j: int) -> tuple[int, slice]:
        """(group, output rows) that weight scale j controls."""
        cg = self.geo.cout_g
        return (j, slice(j * cg, (j + 1) * cg)) if self.dw else (0, slice(j, j + 1))

    def _channel_outputs(self, cols_g: np.ndarray, w_rows: np.ndarray, scales: np.ndarray,
                         s_in, rows: slice) -> tuple[np.ndarray, np.ndarray]:
        """For each candidate weight scale: per input, sum(out^2) and sum(out*y) over `rows`."""
        n, _, p = cols_g.shape
        r = w_rows.shape[0]
        dt = _matmul_dtype(cols_g.shape[1])
        cols_dt = cols_g.astype(dt, copy=False)
        bias = None if self.bias is None else self.bias[rows]
        y = self.Y[:, rows]                                                  # [N, R, P]
        bb = np.empty((scales.size, n))
        ab = np.empty((scales.size, n))
        chunk = max(1, _BATCH_ELEMENTS // max(1, n * r * p))
        for c0 in range(0, scales.size, chunk):
            sc = scales[c0:c0 + chunk]
            q = quantize(w_rows[None], sc[:, None, None]).astype(dt, copy=False)   # [S, R, K]
            acc = np.matmul(q[None], cols_dt[:, None])                       # [N, S, R, P]
            out = _dequant(acc, s_in, np.broadcast_to(sc[:, None], (sc.size, r)), bias,
                           *self.act).astype(np.float64)
            bb[c0:c0 + chunk] = np.sum(out * out, axis=(2, 3)).T
            ab[c0:c0 + chunk] = np.einsum("nsrp,nrp->sn", out, y)
        return bb, ab

    def search_weights(self, s_w: np.ndarray, s_in: np.float32) -> np.ndarray:
        s_w = s_w.astype(np.float32).copy()
        cols = self.columns(s_in)                                            # [N, G, K, P]
        cols = cols.astype(_matmul_dtype(cols.shape[-2]), copy=False)        # once, not per element
        out = self.output(cols, self._qw(s_w), s_in, s_w)
        sbb = np.sum(out * out, axis=2)                                      # [N, cout]
        sab = np.sum(out * self.Y, axis=2)
        del out
        for j in range(s_w.size):
            g, rows = self._rows(j)
            w_rows = self.W[g] if self.dw else self.W[0, j:j + 1]
            cands = self._candidates(s_w[j])
            bb, ab = self._channel_outputs(cols[:, g], w_rows, cands, s_in, rows)
            bb_tot = bb + (sbb.sum(axis=1) - sbb[:, rows].sum(axis=1))[None]
            ab_tot = ab + (sab.sum(axis=1) - sab[:, rows].sum(axis=1))[None]
            with np.errstate(invalid="ignore", divide="ignore"):
                sims = np.nan_to_num(ab_tot / self.sa[None] / np.sqrt(bb_tot)).sum(axis=1)
            best = self._pick(s_w[j], cands, sims)
            if best != s_w[j]:
                s_w[j] = best
                one = np.array([best], np.float32)
                bb1, ab1 = self._per_row_sums(cols[:, g], w_rows, one, s_in, rows)
                sbb[:, rows], sab[:, rows] = bb1, ab1
        return s_w

    def _per_row_sums(self, cols_g, w_rows, scale, s_in, rows):
        dt = _matmul_dtype(cols_g.shape[1])
        q = quantize(w_rows, scale[0]).astype(dt, copy=False)                # [R, K]
        acc = np.matmul(q[None], cols_g.astype(dt, copy=False))              # [N, R, P]
        bias = None if self.bias is None else self.bias[rows]
        out = _dequant(acc, s_in, np.repeat(scale, w_rows.shape[0]), bias, *self.act).astype(np.float64)
        return np.sum(out * out, axis=2), np.sum(out * self.Y[:, rows], axis=2)

    def search_input(self, s_w: np.ndarray, s_in: np.float32) -> np.float32:
        """100 candidate input scales; each one is a full int8 layer run, one input at a time
        (the quantized input differs per candidate, so nothing can be shared but the weights)."""
        cands = self._candidates(np.float32(s_in))
        qw = self._qw(s_w)
        per_ch = self._per_channel_scale(s_w)
        direct = self.dw and self.geo.cin_g == 1 and self.geo.cout_g == 1
        dt = None
        sims = np.zeros(STEPS)
        for k, s in enumerate(cands):
            total = 0.0
            for n in range(self.X.shape[0]):
                xq = quantize(self.X[n], s)
                if self.ql.type == "InnerProduct":
                    xq = xq.reshape(-1)
                if direct:
                    acc = self.geo.depthwise_acc(xq, qw)
                else:
                    cols = self.geo.columns(xq)
                    dt = dt or _matmul_dtype(cols.shape[-2])
                    acc = np.matmul(qw.astype(dt, copy=False), cols.astype(dt, copy=False))
                    acc = acc.reshape(-1, acc.shape[-1])
                out = _dequant(acc, s, per_ch, self.bias, *self.act).astype(np.float64)
                y = self.Y[n]
                with np.errstate(invalid="ignore", divide="ignore"):
                    cos = np.sum(out * y) / self.sa[n] / np.sqrt(np.sum(out * out))
                total += float(np.nan_to_num(cos))
            sims[k] = total
        return self._pick(np.float32(s_in), cands, sims)


def _layer_io(runner: Runner, job: CollectJob, layers: list[QuantLayer], nfiles: int):
    xs = {q.name: [] for q in layers}
    ys = {q.name: [] for q in layers}
    for i in range(nfiles):
        ex = feed(runner, job, i)
        for q in layers:
            for blob, store in ((q.bottom, xs), (q.top, ys)):
                mat = extract(ex, blob, job, i)
                arr = np.array(mat, dtype=np.float32)
                if mat.dims == 4:
                    arr = arr[:, 0]
                if arr.ndim < 3 and q.type != "InnerProduct":
                    arr = arr.reshape((1,) * (3 - arr.ndim) + arr.shape)
                store[q.name].append(arr)
                del mat
        del ex
    return xs, ys


def _search_layer(task: tuple[QuantLayer, list[np.ndarray], list[np.ndarray], LayerScales]) -> LayerScales:
    """One layer's whole EQ search (weights element by element, then the input scale)."""
    q, xs, ys, ls = task
    with _single_threaded_blas():
        search = _LayerSearch(q, xs, ys)
        del xs, ys
        s_in = np.float32(ls.input_scale)
        s_w = search.search_weights(np.asarray(ls.weight_scales, np.float32), s_in)
        s_in = search.search_input(s_w, s_in)
    return LayerScales(q.name, s_w, float(s_in), ls.absmax, float(np.float32(127) / s_in))


class _single_threaded_blas:
    """Workers already use every core between them; BLAS threads on top only oversubscribe."""

    def __enter__(self):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:          # optional: without it BLAS keeps its own thread count
            self._limit = None
            return self
        self._limit = threadpool_limits(1)
        return self

    def __exit__(self, *exc) -> None:
        if self._limit is not None:
            self._limit.unregister()


def _batches(runner: Runner, job: CollectJob, layers: list[QuantLayer], nfiles: int, budget: int):
    """Consecutive layers whose stored inputs/outputs over `nfiles` fit `budget` bytes."""
    probe = feed(runner, job, 0)
    sizes = [sum(mat_view(extract(probe, b, job, 0)).size for b in (q.bottom, q.top)) * 4 * nfiles
             for q in layers]
    del probe
    batch: list[QuantLayer] = []
    used = 0
    for q, size in zip(layers, sizes):
        if batch and used + size > budget:
            yield batch
            batch, used = [], 0
        batch.append(q)
        used += size
    if batch:
        yield batch


def eq_search(model: CalibModel, job: CollectJob, start: list[LayerScales], *,
              progress: Callable[[str, int, int], None] | None = None,
              max_files: int = MAX_FILES, threads: int = 1,
              memory_budget: int = _MEMORY) -> list[LayerScales]:
    """Refine KL's scales layer by layer (weights element by element, then the input scale).

    Each layer's search only needs that layer's fp32 inputs/outputs, so the net runs once per input
    for a batch of layers (the batch's tensors fit `memory_budget`), and the layers are searched in
    `threads` worker processes (forked: they inherit nothing but numpy arrays to use). At most
    `threads` layers are in flight, and the next batch is forwarded while they run: with 50 inputs
    an early MobileNetV2 layer fills a batch alone, and waiting per batch would idle a worker.
    """
    nfiles = min(len(job.files[0]), max_files)
    runner = Runner(job.param_path, job.bin_path)
    by_name = {ls.name: ls for ls in start}
    layers = list(model.quant_layers)
    found: dict[str, LayerScales] = {}
    with _LayerPool(threads) as pool:
        for batch in _batches(runner, job, layers, nfiles, memory_budget):
            xs, ys = _layer_io(runner, job, batch, nfiles)
            # Largest first: the slowest layer starts early instead of finishing last alone.
            batch = sorted(batch, key=lambda q: -sum(x.size for x in xs[q.name]) * q.num_output)
            for q in batch:
                for ls in pool.submit((q, xs.pop(q.name), ys.pop(q.name), by_name[q.name])):
                    found[ls.name] = ls
                    if progress:
                        progress("eq search", len(found), len(layers))
        for ls in pool.drain():
            found[ls.name] = ls
            if progress:
                progress("eq search", len(found), len(layers))
    return [found[q.name] for q in layers]


def _quiet_worker() -> None:
    """A worker leaves its ending to the parent. Forked, it inherited the CLI's SIGTERM handler (and
    Python's SIGINT one): a CI cancel, `timeout` or Ctrl-C signals the whole process group, and every
    worker printed a 20-line traceback into the log above the parent's one-line error. Now SIGINT
    is ignored (the parent stops the pool) and SIGTERM/SIGHUP end the worker silently."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("SIGTERM", "SIGHUP"):
        if signal.getsignal(getattr(signal, name)) is not signal.SIG_IGN:   # nohup stays nohup
            signal.signal(getattr(signal, name), signal.SIG_DFL)


class _LayerPool:
    """`_search_layer` in worker processes, at most `threads` tasks queued or running."""

    def __init__(self, threads: int) -> None:
        import threading

        from deployer.quant.collect import _context

        self.threads = max(1, threads)
        self.pool = _context().Pool(self.threads, initializer=_quiet_worker) if self.threads > 1 else None
        self.slots = threading.Semaphore(self.threads)
        self.done: list[LayerScales] = []
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()

    def __enter__(self) -> "_LayerPool":
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.terminate()

    def _finished(self, result) -> None:          # runs in the pool's result thread
        with self.lock:
            (self.errors if isinstance(result, BaseException) else self.done).append(result)
        self.slots.release()

    def _take(self) -> list[LayerScales]:
        with self.lock:
            if self.errors:
                raise self.errors[0]
            out, self.done = self.done, []
        return out

    def submit(self, task) -> list[LayerScales]:
        """Queue one layer (blocks while all workers are busy); returns layers finished so far."""
        if self.pool is None:
            return [_search_layer(task)]
        self.slots.acquire()
        self.pool.apply_async(_search_layer, (task,), callback=self._finished, error_callback=self._finished)
        return self._take()

    def drain(self) -> list[LayerScales]:
        if self.pool is not None:
            for _ in range(self.threads):
                self.slots.acquire()
        return self._take()
