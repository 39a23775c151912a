"""Activation statistics for every conv/fc input, from ONE fp32 forward per calibration input.

ncnn2table runs the whole data set twice (absmax, then a 2048-bin histogram over [0, absmax]).
We run it once: each worker keeps |x| of every conv input in memory until the global absmax is
known, then bins it with exactly ncnn's float32 formula `min(int(|x| / absmax * 2048), 2047)`
(exact zeros skipped). If the set would not fit the memory budget, or inputs give blobs of
different sizes (no fixed resize), the workers forward the data a second time instead (the same
numbers, measured: on these VMs faulting in fresh memory costs about as much as a forward, so
keeping saves ~15 % CPU, not half). Work is split over processes (ncnn's Python forward holds the GIL), each with
its own single-threaded ncnn.Net, images interleaved like ncnn2table's OpenMP `schedule(static, 1)`.

The result (`ActivationStats`) feeds every method in `deployer.quant.methods`, so several methods
can be compared from one collection.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from deployer.errors import DeployerError
from deployer.inputs.spec import InputSpec
from deployer.inputs.tensor import load_mat

NUM_BINS = 2048
DEFAULT_MEMORY_BUDGET = 2 << 30   # bytes of stored activations across all workers
_MIN_FILES_PER_WORKER = 4


@dataclass
class ActivationStats:
    """Per calibrated blob: absmax over all inputs, ncnn's |x| histogram, element count."""

    blobs: list[str]                 # conv/fc input blob names (unique, first-use order)
    absmax: np.ndarray               # float32 [nblobs]
    histograms: np.ndarray | None    # uint64 [nblobs, 2048]; None when collected without histograms
    totals: np.ndarray               # int64 [nblobs]: c*w*h of the blob for the last input (ACIQ's N)
    num_inputs: int
    two_pass: bool = False
    # Results of per-histogram functions computed by the workers while they were still up
    # (e.g. KL threshold bins), keyed by "module.function".
    derived: dict[str, np.ndarray] = field(default_factory=dict)

    def index(self, blob: str) -> int:
        return self.blobs.index(blob)


def fn_key(fn: Callable) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


@dataclass(frozen=True)
class CollectJob:
    """Everything a worker needs (picklable): model, inputs, which blobs to watch."""

    param_path: str
    bin_path: str
    input_blobs: tuple[str, ...]
    specs: tuple[InputSpec, ...]
    files: tuple[tuple[str, ...], ...]     # files[i] = the i-th input's path for each model input
    blobs: tuple[str, ...]
    origins: tuple[str, ...] = ()          # "list.txt:12" per input index, for error messages

    def where(self, i: int) -> str:
        return self.origins[i] if i < len(self.origins) else f"calibration input #{i + 1}"


def make_net(param_path: str | Path, bin_path: str | Path, num_threads: int = 1):
    """An fp32 ncnn.Net set up like ncnn2table: fp16 off, lightmode off (blobs kept)."""
    import ncnn

    net = ncnn.Net()
    opt = net.opt
    opt.num_threads = num_threads
    opt.lightmode = False
    opt.use_fp16_storage = False
    opt.use_fp16_packed = False
    opt.use_fp16_arithmetic = False
    opt.use_vulkan_compute = False
    if net.load_param(str(param_path)) != 0:
        raise DeployerError(f"{param_path}: ncnn could not load this .param")
    if net.load_model(str(bin_path)) != 0:
        raise DeployerError(f"{bin_path}: ncnn could not load this .bin (does it match the .param?)")
    return net


def first_forward_isolated(job: CollectJob) -> None:
    """Input #0 through the model in a child process (deployer.isolate) before any in-process run:
    a shape or model that crashes ncnn becomes one error line instead of killing deployer."""
    from deployer import isolate
    from deployer.ncnn.param import read_param
    from deployer.ncnn.validate import infer_check

    shapes = {}
    for blob, spec, files in zip(job.input_blobs, job.specs, job.files):
        try:
            shapes[blob] = tuple(int(d) for d in np.array(load_mat(files[0], spec)).shape)
        except DeployerError as err:
            raise DeployerError(f"{job.where(0)}: {err}") from None
    if all(len(s) == 3 for s in shapes.values()):
        shown = ", ".join("x".join(map(str, s)) for s in shapes.values())
        infer_check(read_param(job.param_path), shapes, Path(job.param_path).name, f"{shown} (CxHxW)")
    isolate.probe(job.param_path, job.bin_path, shapes, mode="calib", blobs=list(job.blobs))


def mat_view(mat) -> np.ndarray:
    """What ncnn2table iterates, as a zero-copy view (valid while `mat` lives): for each channel the
    first w*h floats (a 4-D blob's d>0 slices are not covered by ncnn2table)."""
    arr = np.asarray(mat)
    if mat.dims == 4:
        arr = arr[:, 0]
    return arr.reshape(-1) if arr.flags.c_contiguous else np.ascontiguousarray(arr).reshape(-1)


class Runner:
    """An fp32 net plus pool allocators reused across inputs (like ncnn2table's per-thread pools).

    Without pools every input re-faults tens of MB of fresh pages, which costs as much as the
    forward itself on MobileNetV2.
    """

    def __init__(self, param_path: str | Path, bin_path: str | Path) -> None:
        import ncnn

        self.net = make_net(param_path, bin_path)
        self.blob_pool = ncnn.UnlockedPoolAllocator()
        self.workspace_pool = ncnn.UnlockedPoolAllocator()

    def extractor(self):
        ex = self.net.create_extractor()
        ex.set_blob_allocator(self.blob_pool)
        ex.set_workspace_allocator(self.workspace_pool)
        return ex


def feed(runner: Runner, job: CollectJob, i: int):
    """An extractor with input #i of every model input set."""
    ex = runner.extractor()
    for blob, spec, files in zip(job.input_blobs, job.specs, job.files):
        try:
            mat = load_mat(files[i], spec)
        except DeployerError as err:
            raise DeployerError(f"{job.where(i)}: {err}") from None
        ex.input(blob, mat)
    return ex


def extract(ex, blob: str, job: CollectJob, i: int):
    ret, mat = ex.extract(blob)
    if ret != 0:
        raise DeployerError(f"{job.where(i)}: ncnn failed to compute blob {blob} (ret={ret}); "
                            "check the input shape and preprocessing")
    return mat


def forward(runner: Runner, job: CollectJob, i: int, blobs: Sequence[str]) -> list[np.ndarray]:
    """Feed input #i and return copies of the requested blobs as flat float32 arrays."""
    ex = feed(runner, job, i)
    return [mat_view(extract(ex, b, job, i)).copy() for b in blobs]


_CHUNK = 1 << 22


def histogram(values: np.ndarray, absmax: np.float32, out: np.ndarray,
              scratch: np.ndarray | None = None) -> None:
    """Add ncnn's histogram of |values| (already absolute) into `out` (2048 bins). Consumes `values`.

    ncnn: `min((int)(fabs(x) / absmax * 2048), 2047)` in float32, exact zeros skipped. Dividing by
    absmax/2048 gives the same float (scaling by a power of two commutes with rounding) in one pass.
    Works in chunks through an intp `scratch` buffer (bincount would convert int32 itself) so no
    large temporaries are faulted in.
    """
    if values.size == 0 or absmax == 0:
        return
    if scratch is None or scratch.size < min(values.size, _CHUNK):
        scratch = np.empty(min(values.size, _CHUNK), np.intp)
    step = np.float32(absmax) / np.float32(NUM_BINS)
    exact_step = bool(np.isfinite(step) and step >= np.finfo(np.float32).tiny)
    counts = np.zeros(NUM_BINS + 1, np.int64)
    zeros = 0
    for start in range(0, values.size, _CHUNK):
        chunk = values[start:start + _CHUNK]
        zeros += chunk.size - np.count_nonzero(chunk)
        if exact_step:
            np.divide(chunk, step, out=chunk)
        else:
            np.divide(chunk, np.float32(absmax), out=chunk)
            np.multiply(chunk, np.float32(NUM_BINS), out=chunk)
        idx = scratch[:chunk.size]
        np.copyto(idx, chunk, casting="unsafe")          # truncation toward zero, like (int)
        counts += np.bincount(idx, minlength=NUM_BINS + 1)[:NUM_BINS + 1]
    counts[NUM_BINS - 1] += counts[NUM_BINS]
    counts[0] -= zeros
    out += counts[:NUM_BINS].astype(np.uint64)


class _Arena:
    """Kept |x| for one worker, laid out [blob][input] so each blob is histogrammed in one call.

    Pre-populated in bulk (MAP_POPULATE): faulting the pages in one by one costs more than a
    forward on VMs.
    """

    def __init__(self, sizes: Sequence[int], count: int) -> None:
        import mmap

        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
        self._mm = mmap.mmap(-1, max(sum(sizes) * count, 1) * 4, flags=flags)
        data = np.frombuffer(self._mm, np.float32)
        self.blobs: list[np.ndarray] = []
        offset = 0
        for size in sizes:
            self.blobs.append(data[offset:offset + size * count].reshape(count, size))
            offset += size * count


class _Collector:
    """One worker's share: pass 1 (absmax, keep |x|), then pass 2 (histograms)."""

    def __init__(self, job: CollectJob, indices: list[int], keep_sizes: Sequence[int] | None,
                 progress: Callable[[int], None] | None = None) -> None:
        self.job = job
        self.indices = indices
        self.progress = progress
        self.runner = Runner(job.param_path, job.bin_path)
        self.arena = _Arena(keep_sizes, len(indices)) if keep_sizes is not None else None
        self.absmax = np.zeros(len(job.blobs), np.float32)
        self.totals = np.zeros(len(job.blobs), np.int64)
        self.last_index = -1

    def pass1(self, want_hist: bool) -> None:
        keep = want_hist and self.arena is not None
        for k, i in enumerate(self.indices):
            ex = feed(self.runner, self.job, i)
            for b, blob in enumerate(self.job.blobs):
                mat = extract(ex, blob, self.job, i)
                v = mat_view(mat)
                if v.size:
                    hi, lo = v.max(), v.min()        # NaN propagates through both
                    if not (np.isfinite(hi) and np.isfinite(lo)):
                        # else int8 scales of 127/inf = 0 surface later as a broken candidate file
                        raise DeployerError(f"{self.job.where(i)}: blob {blob} of the fp32 model reaches "
                                            f"{'nan' if np.isnan(hi) or np.isnan(lo) else 'inf'} on this input",
                                            hint="float overflows: check the input preprocessing (mean, norm)")
                    self.absmax[b] = max(self.absmax[b], hi, -lo)
                if keep:
                    dst = self.arena.blobs[b][k]
                    if v.size != dst.size:
                        raise DeployerError(f"{self.job.where(i)}: blob {blob} has {v.size} values but "
                                            f"{dst.size} for the first input; with a fixed shape= every "
                                            "input must give the same blob shapes")
                    np.abs(v, out=dst)
                self.totals[b] = v.size
                del mat, v
            del ex
            self.last_index = i
            if self.progress:
                self.progress(1)

    def pass2(self, absmax: np.ndarray) -> np.ndarray:
        hist = np.zeros((len(self.job.blobs), NUM_BINS), np.uint64)
        scratch = np.empty(_CHUNK, np.intp)
        if self.arena is not None:
            for b, arr in enumerate(self.arena.blobs):
                histogram(arr.reshape(-1), absmax[b], hist[b], scratch)
            self.arena = None
            return hist
        buf = np.empty(0, np.float32)
        for i in self.indices:
            ex = feed(self.runner, self.job, i)
            for b, blob in enumerate(self.job.blobs):
                mat = extract(ex, blob, self.job, i)
                v = mat_view(mat)
                if buf.size < v.size:
                    buf = np.empty(v.size, np.float32)
                absv = buf[:v.size]
                np.abs(v, out=absv)
                del mat, v
                histogram(absv, absmax[b], hist[b], scratch)
            del ex
            if self.progress:
                self.progress(1)
        return hist


def _tune_malloc() -> None:
    """Keep freed memory in the worker instead of returning it to the OS and re-faulting it."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)   # M_TRIM_THRESHOLD
        libc.mallopt(-3, 1 << 30)   # M_MMAP_THRESHOLD
    except OSError:  # not glibc: only slower
        pass


def _worker_main(conn, job: CollectJob, indices: list[int], keep_sizes: list[int] | None,
                 want_hist: bool, not_mine: Sequence = ()) -> None:
    """`not_mine`: the parent's ends of every pipe, inherited through fork. Closed first: while a
    worker held a copy of its own pipe's parent end it never saw the parent close it or die, so an
    interrupted calibration sat 5 s per worker joining them (SIGTERM took 10 s with thread=2, past
    docker's grace period) and a killed one left them blocked in recv() for ever."""
    for other in not_mine:
        other.close()
    try:
        _tune_malloc()
        col = _Collector(job, indices, keep_sizes, progress=lambda n: conn.send(("progress", n)))
        col.pass1(want_hist)
        conn.send(("pass1", col.absmax, col.totals, col.last_index))
        if want_hist:
            msg = conn.recv()
            conn.send(("pass2", col.pass2(msg)))
            # Then share per-histogram work (KL search) on the merged histograms, if asked.
            while True:
                fn, rows = conn.recv()
                if fn is None:
                    break
                conn.send(("mapped", np.array([fn(r) for r in rows])))
    except DeployerError as err:
        conn.send(("error", str(err)))
    except BaseException:  # a crash must reach the parent as a message, not a hang
        with contextlib.suppress(OSError):     # no parent to tell (it was interrupted): end quietly
            conn.send(("crash", traceback.format_exc()))
    finally:
        conn.close()


def _context():
    # fork: no re-import of __main__ (the CLI), workers start in milliseconds. libgomp is not
    # fork-safe for multi-threaded parallel regions, so workers only ever run ncnn single-threaded.
    return mp.get_context("fork")


def collect(job: CollectJob, *, threads: int = 1, histograms: bool = True,
            memory_budget: int = DEFAULT_MEMORY_BUDGET,
            progress: Callable[[int, int], None] | None = None,
            per_histogram: Sequence[Callable[[np.ndarray], object]] = ()) -> ActivationStats:
    """Run the fp32 net once per input and gather absmax (+ histograms) for `job.blobs`.

    `progress(done, total)` is called from this process as inputs complete (total counts the
    second pass when one is needed). Each function in `per_histogram` (a module-level function,
    it is pickled by name) is applied to every merged histogram, spread over the workers; the
    results land in `stats.derived[fn_key(fn)]`.
    """
    n = len(job.files[0])
    if n == 0:
        raise DeployerError("no calibration inputs")
    first_forward_isolated(job)
    nblobs = len(job.blobs)
    workers = max(1, min(threads, n // _MIN_FILES_PER_WORKER))

    # Keeping |x| needs every input to give the same blob sizes (a fixed resize or npy) and the
    # whole set to fit the budget; one probe forward tells the sizes.
    keep_sizes: list[int] | None = None
    fixed = all(s.fixed_size for s in job.specs)
    if histograms and fixed:
        probe = Runner(job.param_path, job.bin_path)
        sizes = [v.size for v in forward(probe, job, 0, job.blobs)]
        del probe
        if sum(sizes) * 4 * n <= memory_budget:
            keep_sizes = sizes
    total_steps = n * (1 if keep_sizes is not None or not histograms else 2)
    done = 0

    def tick(k: int) -> None:
        nonlocal done
        done += k
        if progress:
            progress(done, total_steps)

    if workers == 1:
        col = _Collector(job, list(range(n)), keep_sizes, tick)
        col.pass1(histograms)
        hist = col.pass2(col.absmax) if histograms else None
        stats = ActivationStats(list(job.blobs), col.absmax, hist, col.totals, n,
                                histograms and keep_sizes is None)
        if histograms:
            for fn in per_histogram:
                stats.derived[fn_key(fn)] = np.array([fn(r) for r in hist])
        return stats

    ctx = _context()
    conns, procs = [], []
    try:
        for w in range(workers):
            parent, child = ctx.Pipe()
            indices = list(range(w, n, workers))
            p = ctx.Process(target=_worker_main, args=(child, job, indices, keep_sizes, histograms,
                                                       [*conns, parent]), daemon=True)
            p.start()
            child.close()
            conns.append(parent)
            procs.append(p)
        absmax = np.zeros(nblobs, np.float32)
        totals = np.zeros(nblobs, np.int64)
        best_last = -1
        for _, amax, tot, last in _gather(conns, "pass1", tick):
            absmax = np.maximum(absmax, amax)
            if last > best_last:
                best_last, totals = last, tot
        hist = None
        if histograms:
            for c in conns:
                c.send(absmax)
            hist = np.zeros((nblobs, NUM_BINS), np.uint64)
            for _, h in _gather(conns, "pass2", tick):
                hist += h
        stats = ActivationStats(list(job.blobs), absmax, hist, totals, n,
                                histograms and keep_sizes is None)
        if histograms:
            for fn in per_histogram:
                # interleave blobs so each worker gets early and late layers alike
                for w, c in enumerate(conns):
                    c.send((fn, hist[w::workers]))
                parts = [m[1] for m in _gather(conns, "mapped", lambda k: None)]
                out = np.empty(nblobs, dtype=parts[0].dtype)
                for w, part in enumerate(parts):
                    out[w::workers] = part
                stats.derived[fn_key(fn)] = out
            for c in conns:
                c.send((None, None))
        return stats
    finally:
        for c in conns:
            c.close()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()


def _gather(conns, kind: str, tick: Callable[[int], None]) -> list[tuple]:
    """Wait for message `kind` from every worker, forwarding progress and failures."""
    from multiprocessing.connection import wait

    pending = {id(c): (i, c) for i, c in enumerate(conns)}
    out: dict[int, tuple] = {}
    while pending:
        for conn in wait([c for _, c in pending.values()]):
            key, _ = pending[id(conn)]
            try:
                msg = conn.recv()
            except EOFError:
                raise DeployerError("a calibration worker died unexpectedly (out of memory?); "
                                    "retry with thread=1") from None
            if msg[0] == "progress":
                tick(msg[1])
            elif msg[0] == "error":
                raise DeployerError(msg[1])
            elif msg[0] == "crash":
                raise RuntimeError(f"calibration worker crashed:\n{msg[1]}")
            elif msg[0] == kind:
                out[key] = msg
                del pending[id(conn)]
    return [out[k] for k in sorted(out)]


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1
