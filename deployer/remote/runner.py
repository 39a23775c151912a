"""On-board ncnn benchmark runner: the ONE file deployer ships to a board.

Why it looks the way it does:
- stdlib + ncnn only, Python 3.7 syntax: armv7l boards have no numpy wheel, and Jetsons / old Pi OS
  images run old Pythons.
- It streams one JSON object per line and flushes each one, so the host can show timings live and
  still has everything up to the last line if the link drops.
- Line types, in order: ``board`` (facts + options, before loading), ``iter`` (one per timed
  iteration), optional ``output`` (opt-in tensors as base64 float32), ``stats`` (last line).
  A failure is an ``error`` line and exit code 2. SIGINT/SIGTERM/SIGHUP end the run with a
  ``stats`` line marked ``partial`` and exit code 128+signal; a closed stdout ends it silently;
  with ``--lease S``, S seconds without a heartbeat byte on stdin end it at once (exit 124).
- ncnn options are fixed before ``load_param``: ncnn captures ``num_threads`` (and kernel choices)
  at load time.
- Few imports (no argparse/json/typing/glob/platform/subprocess at start): under qemu, or on a Pi
  Zero, every stdlib module costs a visible fraction of a second, and argparse alone costs more
  than ncnn. Hence the small JSON writer and argument parser below.

The host imports this module too (``summarize``, ``make_input_values``) so statistics and the
deterministic input are computed by the very same code on both sides.
"""

import binascii
import math
import os
import random
import signal
import struct
import sys
import time

MYPY = False
if MYPY:  # type comments only; importing typing (or json, which pulls in re) costs ~1 s under qemu
    from typing import Dict, List, Optional

PROTOCOL = 1
ARM_FEATURES = ("neon", "vfpv4", "asimdhp", "asimddp", "asimdfhm", "bf16", "i8mm", "sve", "sve2")
X86_FEATURES = ("avx", "avx2", "fma", "avx512", "avx512_vnni")


class Stop(Exception):
    """Raised from a signal handler so the loop unwinds between ncnn calls, never inside one."""

    def __init__(self, signum):
        # type: (int) -> None
        Exception.__init__(self, signum)
        self.signum = signum


class StdoutClosed(Exception):
    """The host went away (pipe closed): nothing left to report to."""


# ---------------------------------------------------------------- statistics (shared with the host)

def percentile(sorted_values, q):
    # type: (List[float], float) -> float
    """Linear interpolation between closest ranks (numpy's default), so host and board agree."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def summarize(samples_ms):
    # type: (List[float]) -> Dict[str, object]
    """min/median/mean/p90/p99/max/std (population std, like TFLite's benchmark_model)."""
    n = len(samples_ms)
    if n == 0:
        return {"count": 0}
    s = sorted(samples_ms)
    mean = sum(s) / n
    var = sum((x - mean) ** 2 for x in s) / n
    return {
        "count": n,
        "min_ms": s[0],
        "median_ms": percentile(s, 50.0),
        "mean_ms": mean,
        "p90_ms": percentile(s, 90.0),
        "p99_ms": percentile(s, 99.0),
        "max_ms": s[-1],
        "std_ms": math.sqrt(var),
    }


# ---------------------------------------------------------------- inputs (shared with the host)

def parse_shape(text):
    # type: (str) -> List[int]
    """'W,H,C' / 'W,H' / 'W' in ncnn order; every dimension positive."""
    try:
        dims = [int(x) for x in text.split(",")]
    except ValueError:
        raise ValueError("shape %r must be W,H,C integers" % text)
    if not 1 <= len(dims) <= 4 or any(d <= 0 for d in dims):
        raise ValueError("shape %r must be 1 to 4 positive integers (W,H,C)" % text)
    return dims


def make_input_values(count, fill, seed):
    # type: (int, str, int) -> List[float]
    """Deterministic input: 'random' = uniform [-1, 1) from Mersenne Twister (stable across
    Python versions for an int seed), or a constant such as '0.5'."""
    if fill == "random":
        rng = random.Random(seed)
        return [rng.random() * 2.0 - 1.0 for _ in range(count)]
    try:
        value = float(fill)
    except ValueError:
        raise ValueError("fill %r must be 'random' or a number" % fill)
    return [value] * count


def float32_bytes(values):
    # type: (List[float]) -> bytes
    return struct.pack("<%df" % len(values), *values)


# ---------------------------------------------------------------- board facts

def _read(path):
    # type: (str) -> Optional[str]
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace").replace("\x00", "").strip()
    except (OSError, IOError):
        return None


def _read_int(path):
    # type: (str) -> Optional[int]
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def cpu_model():
    # type: () -> Optional[str]
    """'model name' on x86 / armhf kernels; aarch64 kernels only give 'CPU part' + 'Hardware'."""
    text = _read("/proc/cpuinfo") or ""
    fields = {}  # type: Dict[str, str]
    for line in text.splitlines():
        if ":" in line:
            key, _, value = line.partition(":")
            fields.setdefault(key.strip().lower(), value.strip())
    parts = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
             "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
             "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78", "0xd4b": "Cortex-A78C", "0xc07": "Cortex-A7",
             "0xc0f": "Cortex-A15", "0xc09": "Cortex-A9", "0xd0c": "Neoverse-N1"}
    part = fields.get("cpu part")
    if part and part.lower() in parts:
        return parts[part.lower()]
    return fields.get("model name") or fields.get("hardware") or fields.get("processor")


def _numbered(folder, prefix):
    # type: (str, str) -> List[str]
    """folder/prefixN entries in numeric order (glob without importing glob/re)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found = [(int(n[len(prefix):]), n) for n in names if n.startswith(prefix) and n[len(prefix):].isdigit()]
    return [os.path.join(folder, n) for _, n in sorted(found)]


def cpu_frequencies():
    # type: () -> List[Dict[str, object]]
    cpus = []
    for cpu_dir in _numbered("/sys/devices/system/cpu", "cpu"):
        freq = os.path.join(cpu_dir, "cpufreq")
        if not os.path.isdir(freq):
            continue
        cpus.append({
            "cpu": int(cpu_dir.rsplit("cpu", 1)[1]),
            "governor": _read(os.path.join(freq, "scaling_governor")),
            "cur_khz": _read_int(os.path.join(freq, "scaling_cur_freq")),
            "max_khz": _read_int(os.path.join(freq, "cpuinfo_max_freq")),
        })
    return cpus


def temperatures():
    # type: () -> List[Dict[str, object]]
    zones = []
    for zone in _numbered("/sys/class/thermal", "thermal_zone"):
        milli = _read_int(os.path.join(zone, "temp"))
        if milli is not None:
            zones.append({"zone": os.path.basename(zone), "type": _read(os.path.join(zone, "type")),
                          "celsius": milli / 1000.0})
    return zones


def throttled():
    # type: () -> Optional[str]
    """Raspberry Pi firmware flags (under-voltage, capped, throttled); None where vcgencmd is absent."""
    for folder in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep) + ["/opt/vc/bin"]:
        exe = os.path.join(folder, "vcgencmd")
        if os.access(exe, os.X_OK):
            import subprocess  # only where vcgencmd exists: importing it is slow on small boards

            try:
                out = subprocess.check_output([exe, "get_throttled"], stderr=subprocess.STDOUT, timeout=5)
            except (OSError, subprocess.SubprocessError):
                return None
            return out.decode("utf-8", "replace").strip().partition("=")[2] or None
    return None


def peak_rss_kb():
    # type: () -> Optional[int]
    """Peak resident memory of this process (model + buffers + Python); under qemu-user it
    includes the emulator itself."""
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    except (ImportError, OSError, ValueError):
        return None


def volatile_state():
    # type: () -> Dict[str, object]
    """What can change during a run (clocks, heat, throttling): reported before and after."""
    return {"cpufreq": cpu_frequencies(), "thermal": temperatures(), "throttled": throttled(),
            "loadavg": _read("/proc/loadavg")}


def board_facts(ncnn):
    # type: (object) -> Dict[str, object]
    features = {}
    for name in ARM_FEATURES:
        fn = getattr(ncnn, "cpu_support_arm_" + name, None)
        if fn is not None:
            features["arm_" + name] = bool(fn())
    for name in X86_FEATURES:
        fn = getattr(ncnn, "cpu_support_x86_" + name, None)
        if fn is not None:
            features["x86_" + name] = bool(fn())
    uname = os.uname()
    facts = {
        "machine": uname[4],  # what platform.machine() returns, without importing platform
        "pointer_bits": struct.calcsize("P") * 8,
        "python": "%d.%d.%d" % sys.version_info[:3],
        "hostname": uname[1],
        "model": _read("/sys/firmware/devicetree/base/model"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ncnn_cpu_count": ncnn.get_cpu_count(),
        "ncnn_big_cpu_count": ncnn.get_big_cpu_count(),
        "ncnn_version": getattr(ncnn, "__version__", None),
        "cpu_features": features,
    }
    facts.update(volatile_state())
    return facts


# ---------------------------------------------------------------- the run

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _json_str(text):
    # type: (str) -> str
    if '"' not in text and "\\" not in text and text.isprintable():
        return '"' + text + '"'
    return '"' + "".join(_ESCAPES.get(ch) or (ch if ord(ch) >= 0x20 else "\\u%04x" % ord(ch)) for ch in text) + '"'


def to_json(obj):
    # type: (object) -> str
    """Compact JSON for the types the runner emits (what json.dumps would write, minus the import)."""
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, float):
        if obj != obj:
            return "NaN"
        if obj in (float("inf"), float("-inf")):
            return "Infinity" if obj > 0 else "-Infinity"
        return repr(obj)
    if isinstance(obj, str):
        return _json_str(obj)
    if isinstance(obj, dict):
        return "{" + ",".join(_json_str(str(k)) + ":" + to_json(v) for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(to_json(v) for v in obj) + "]"
    return _json_str(str(obj))


def emit(obj):
    # type: (Dict[str, object]) -> None
    try:
        sys.stdout.write(to_json(obj) + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, OSError, ValueError):
        raise StdoutClosed()


class Args(object):
    """Parsed command line. The runner's flags are a protocol with deployer.remote.session, so a
    small table-driven parser does (argparse costs seconds to import on emulated boards)."""

    # name -> (type, default); type None = a flag without value
    SPEC = {
        "param": (str, None), "bin": (str, None), "shape": (str, None), "input_blob": (str, None),
        "output_blob": (str, None), "fill": (str, "random"), "seed": (int, 0), "input_file": (str, None),
        "iterations": (int, 10), "duration": (float, None), "warmup": (int, 3), "threads": (int, 0),
        "powersave": (int, 0), "int8": (int, 1), "fp16": (int, 0), "winograd": (int, 1), "sgemm": (int, 1),
        "lightmode": (int, 1), "packing": (int, 1), "return_output": (None, False), "lease": (float, 0.0),
    }
    CHOICES = {"powersave": (0, 1, 2), "int8": (0, 1), "fp16": (0, 1), "winograd": (0, 1), "sgemm": (0, 1),
               "lightmode": (0, 1), "packing": (0, 1)}
    USAGE = ("usage: runner.py --param P --bin B [--shape W,H,C] [--input-blob B] [--output-blob B] "
             "[--fill random|VALUE] [--seed N] [--input-file F] [--iterations N | --duration S] [--warmup K] "
             "[--threads T] [--powersave 0|1|2] [--int8 0|1] [--fp16 0|1] [--winograd 0|1] [--sgemm 0|1] "
             "[--lightmode 0|1] [--packing 0|1] [--return-output] [--lease S]")

    def __init__(self, argv):
        # type: (List[str]) -> None
        for name, (_, default) in self.SPEC.items():
            setattr(self, name, default)
        i = 0
        while i < len(argv):
            arg = argv[i]
            name = arg[2:].replace("-", "_") if arg.startswith("--") else ""
            if arg in ("-h", "--help"):
                raise UsageError(self.USAGE)
            if name not in self.SPEC:
                raise UsageError("unknown argument %r; %s" % (arg, self.USAGE))
            kind = self.SPEC[name][0]
            if kind is None:
                setattr(self, name, True)
                i += 1
                continue
            if i + 1 >= len(argv):
                raise UsageError("%s needs a value" % arg)
            try:
                value = kind(argv[i + 1])
            except ValueError:
                raise UsageError("%s %r is not a valid %s" % (arg, argv[i + 1], kind.__name__))
            if name in self.CHOICES and value not in self.CHOICES[name]:
                raise UsageError("%s must be one of %s" % (arg, ", ".join(map(str, self.CHOICES[name]))))
            setattr(self, name, value)
            i += 2
        for required in ("param", "bin"):
            if getattr(self, required) is None:
                raise UsageError("--%s is required; %s" % (required, self.USAGE))


class UsageError(ValueError):
    pass


def _options_used(args):
    # type: (Args) -> Dict[str, object]
    return {"threads": args.threads, "powersave": args.powersave, "int8": bool(args.int8),
            "fp16": bool(args.fp16), "winograd": bool(args.winograd), "sgemm": bool(args.sgemm),
            "lightmode": bool(args.lightmode), "packing": bool(args.packing), "warmup": args.warmup, "iterations": args.iterations,
            "duration_s": args.duration, "fill": args.fill if args.input_file is None else "file",
            "seed": args.seed}


def configure(ncnn, net, args):
    # type: (object, object, Args) -> None
    """Everything ncnn fixes at load time, set before load_param."""
    if args.threads <= 0:
        auto = getattr(ncnn, "get_physical_big_cpu_count", None) or ncnn.get_big_cpu_count
        args.threads = max(1, int(auto()))
    ncnn.set_cpu_powersave(args.powersave)
    ncnn.set_omp_dynamic(0)
    ncnn.set_omp_num_threads(args.threads)
    opt = net.opt
    opt.num_threads = args.threads
    opt.use_int8_inference = bool(args.int8)
    opt.use_fp16_storage = bool(args.fp16)
    opt.use_fp16_packed = bool(args.fp16)
    opt.use_fp16_arithmetic = bool(args.fp16)
    opt.use_winograd_convolution = bool(args.winograd)
    opt.use_sgemm_convolution = bool(args.sgemm)
    opt.lightmode = bool(args.lightmode)
    opt.use_packing_layout = bool(args.packing)
    opt.use_vulkan_compute = False


def input_shape_from_param(path, blob):
    # type: (str, Optional[str]) -> Optional[List[int]]
    """The Input layer's 0=w 1=h 2=c, so `--shape` can be omitted for fixed-size models."""
    try:
        with open(path, "r") as fh:
            lines = fh.read().splitlines()
    except (OSError, IOError):
        return None
    for line in lines[2:]:
        tok = line.split()
        if len(tok) < 4 or tok[0] != "Input":
            continue
        n_bottom, n_top = int(tok[2]), int(tok[3])
        tops = tok[4 + n_bottom:4 + n_bottom + n_top]
        if blob is not None and blob not in tops:
            continue
        kv = dict(t.split("=", 1) for t in tok[4 + n_bottom + n_top:] if "=" in t)
        dims = [int(kv.get(k, "0")) for k in ("0", "1", "2")]
        dims = [d for d in dims if d > 0]
        return dims or None
    return None


def make_input_mat(ncnn, args, shape):
    # type: (object, Args, List[int]) -> object
    count = 1
    for d in shape:
        count *= d
    if args.input_file:
        with open(args.input_file, "rb") as fh:
            data = fh.read()
        if len(data) != count * 4:
            raise ValueError("input file %s has %d bytes; shape %s needs %d float32 values (%d bytes)"
                             % (args.input_file, len(data), ",".join(map(str, shape)), count, count * 4))
    else:
        data = float32_bytes(make_input_values(count, args.fill, args.seed))
    # memoryview shape is outermost first: (C, H, W) for ncnn's W,H,C
    view = memoryview(bytearray(data)).cast("B").cast("f", list(reversed(shape)))
    return ncnn.Mat(view).clone()


def mat_payload(mat):
    # type: (object) -> Dict[str, object]
    view = memoryview(mat)
    raw = view.tobytes()  # contiguous, drops ncnn's per-channel cstep padding
    return {"shape": list(view.shape), "dims": mat.dims, "w": mat.w, "h": mat.h, "c": mat.c,
            "dtype": "float32", "data": binascii.b2a_base64(raw).decode("ascii").strip()}


def run(args):
    # type: (Args) -> int
    t_start = time.time()
    import ncnn  # imported late: on an emulated board this alone takes seconds

    net = ncnn.Net()
    configure(ncnn, net, args)
    emit({"type": "board", "protocol": PROTOCOL, "pid": os.getpid(),
          "import_s": time.time() - t_start, "options": _options_used(args), "facts": board_facts(ncnn)})

    for path, what in ((args.param, "--param"), (args.bin, "--bin")):
        if not os.path.isfile(path):
            raise ValueError("%s %s: no such file" % (what, path))
    t_load = time.perf_counter()
    if net.load_param(args.param) != 0:
        raise ValueError("ncnn could not load %s (not an ncnn .param?)" % args.param)
    if net.load_model(args.bin) != 0:
        raise ValueError("ncnn could not load %s (does it match the .param?)" % args.bin)
    load_ms = (time.perf_counter() - t_load) * 1000.0

    in_blob = args.input_blob or (net.input_names() or [None])[0]
    out_blob = args.output_blob or (net.output_names() or [None])[-1]
    if in_blob is None or in_blob not in net.input_names():
        raise ValueError("input blob %r is not an input of %s (inputs: %s)"
                         % (in_blob, args.param, ", ".join(net.input_names()) or "none"))
    if out_blob is None or out_blob not in [b.name for b in net.blobs()]:
        raise ValueError("output blob %r is not a blob of %s (outputs: %s)"
                         % (out_blob, args.param, ", ".join(net.output_names()) or "none"))
    shape = parse_shape(args.shape) if args.shape else input_shape_from_param(args.param, in_blob)
    if not shape:
        raise ValueError("%s has no fixed input shape; pass --shape W,H,C" % args.param)
    mat_in = make_input_mat(ncnn, args, shape)
    # one inference = every output extracted, as ncnn's benchncnn times it (a detector's heads are
    # part of its latency); --output-blob times the path to that one blob only
    extracted = [out_blob] if args.output_blob else [b for b in net.output_names() if b != out_blob] + [out_blob]

    def infer():
        # type: () -> object
        ex = net.create_extractor()
        ex.input(in_blob, mat_in)
        out = None
        for blob in extracted:
            ret, out = ex.extract(blob)
            if ret != 0:
                raise ValueError("extract(%r) failed with code %d" % (blob, ret))
        return out

    first_ms = None  # type: Optional[float]  # start-up cost users feel: first inference (allocations, packing)
    for _ in range(max(0, args.warmup)):
        begin = time.perf_counter()
        infer()
        if first_ms is None:
            first_ms = (time.perf_counter() - begin) * 1000.0

    samples = []  # type: List[float]
    out = None
    partial_signal = None
    t0 = time.perf_counter()
    try:
        i = 0
        while True:
            if args.duration is not None:
                if i > 0 and time.perf_counter() - t0 >= args.duration:
                    break
            elif i >= args.iterations:
                break
            begin = time.perf_counter()
            out = infer()
            ms = (time.perf_counter() - begin) * 1000.0
            samples.append(ms)
            if first_ms is None:
                first_ms = ms
            emit({"type": "iter", "i": i, "ms": ms, "t": time.perf_counter() - t0})
            i += 1
    except Stop as stop:
        partial_signal = stop.signum

    if out is not None and args.return_output and partial_signal is None:
        payload = {"type": "output", "blob": out_blob}  # type: Dict[str, object]
        payload.update(mat_payload(out))
        emit(payload)
    stats = {"type": "stats"}  # type: Dict[str, object]
    stats.update(summarize(samples))
    stats.update({"samples_ms": samples, "partial": partial_signal is not None, "peak_rss_kb": peak_rss_kb(),
                  "load_ms": load_ms, "first_inference_ms": first_ms, "input_blob": in_blob, "output_blob": out_blob, "extracted": extracted, "shape": shape,
                  "wall_s": time.perf_counter() - t0, "end_state": volatile_state()})
    if partial_signal is not None:
        stats["signal"] = partial_signal
    emit(stats)
    return 128 + partial_signal if partial_signal is not None else 0


def _install_signal_handlers():
    # type: () -> None
    def handler(signum, _frame):
        # type: (int, object) -> None
        raise Stop(signum)

    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, handler)


LEASE_LOST = 124   # exit status when the host went silent (nobody reads it: the host is gone)


def _hold_lease(lease):
    # type: (float) -> None
    """--lease S: the host sends a byte on stdin every S/3 s; S s of silence (or EOF) ends the run.

    Why: when the link dies without the board's sshd noticing (a cable pulled, WiFi gone), the
    host gives up after its stall_timeout, but nothing tells this process: it went on timing for
    up to --duration (days) and skewed every later run on the board. Checked once a second from
    SIGALRM, because the main loop may be blocked writing to a stdout nobody drains; the exit is
    os._exit for the same reason (a flush would block)."""
    import select

    last = [time.monotonic()]

    def check(_signum, _frame):
        # type: (int, object) -> None
        try:
            while select.select([0], [], [], 0)[0]:
                if not os.read(0, 4096):
                    os._exit(LEASE_LOST)   # EOF: the host closed the channel
                last[0] = time.monotonic()
        except OSError:
            pass
        if time.monotonic() - last[0] > lease:
            os._exit(LEASE_LOST)

    signal.signal(signal.SIGALRM, check)
    signal.setitimer(signal.ITIMER_REAL, 1.0, 1.0)


def main(argv=None):
    # type: (Optional[List[str]]) -> int
    _install_signal_handlers()
    try:
        args = Args(sys.argv[1:] if argv is None else argv)
        if args.lease > 0:
            _hold_lease(args.lease)
        if args.iterations < 1 and args.duration is None:
            args.iterations = 1
        return run(args)
    except StdoutClosed:
        return 141  # like a shell's SIGPIPE status: the reader left
    except Stop as stop:  # before the timed loop: nothing to summarise yet
        try:
            emit({"type": "stats", "count": 0, "samples_ms": [], "partial": True, "signal": stop.signum})
        except StdoutClosed:
            pass
        return 128 + stop.signum
    except Exception as err:  # one line, never a traceback: the host turns it into a DeployerError
        try:
            emit({"type": "error", "error": "%s: %s" % (type(err).__name__, err)})
        except StdoutClosed:
            pass
        return 2
    finally:
        try:
            sys.stdout.flush()
        except Exception:
            pass
        # a closed stdout would make the interpreter's own final flush print a traceback
        try:
            sys.stdout = open(os.devnull, "w")
        except Exception:
            pass


if __name__ == "__main__":
    sys.exit(main())
