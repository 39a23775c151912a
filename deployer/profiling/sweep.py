"""Sweeps: every combination of threads x precision x powersave on one board, in one command.

Plan -> actions -> report:
- `plan_sweep` validates the axes and picks the model for each precision (fp32/fp16 run the fp32
  model, int8 the int8 model) and expands the grid.
- `run_sweep` runs the grid in `rounds` passes, alternating the order (A B C, C B A, ...) so slow
  drift (heat, a background job) spreads over every setting instead of biasing the last ones.
  Each pass is one runner invocation timed for `chunk_s` seconds with no fixed warm-up: the
  warm-up is found in the samples (deployer.profiling.stats) and dropped, and every pass is stored
  in the history like any run. Then one accuracy run per precision on the same inputs as the
  host's fp32 (and int8) reference decides which precisions pass the accuracy gate.
- The recommendation is the fastest setting (median over all its passes) whose precision passes the
  gate; int8 is compared with the best float setting on the passes' medians (t with a pooled
  variance, the other settings' passes adding to it; deployer.profiling.stats.compare_run_sets), so
  "int8 does not pay on this board" is a tested statement about settings, not about one minute.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from deployer.errors import DeployerError
from deployer.limits import MAX_WAIT_S
from deployer.profile import ASCII_INT, MAX_THREADS
from deployer.profiling import hook, parity
from deployer.profiling import stats as st

AXES = {"threads": "ncnn threads (1..)", "precision": "fp32 | fp16 | int8", "powersave": "0 all | 1 little | 2 big"}
PRECISIONS = ("fp32", "fp16", "int8")
EventSink = Callable[[dict[str, Any]], None]


def parse_sweeps(texts: list[str]) -> dict[str, list[Any]]:
    """['threads=1,2,4', 'precision=fp32,int8'] -> {'threads': [1, 2, 4], 'precision': ['fp32', 'int8']}."""
    axes: dict[str, list[Any]] = {}
    for text in texts:
        name, eq, values = text.partition("=")
        name = name.strip()
        if not eq or not values.strip():
            raise DeployerError(f"--sweep {text!r}: write AXIS=V1,V2,... e.g. threads=1,2,4")
        if name not in AXES:
            raise DeployerError(f"--sweep {text!r}: unknown axis {name!r}",
                                hint="axes: " + "; ".join(f"{k} ({v})" for k, v in AXES.items()))
        if name in axes:
            raise DeployerError(f"--sweep {name} given twice; list all values in one --sweep {name}=...")
        items = [v.strip() for v in values.split(",") if v.strip()]
        if name == "precision":
            bad = [v for v in items if v not in PRECISIONS]
            if bad:
                raise DeployerError(f"--sweep precision: unknown {', '.join(bad)}; use fp32, fp16, int8")
            parsed: list[Any] = items
        else:
            # int() alone also takes "1_0" (as 10) and non-ASCII digits: plain digits only
            if not all(ASCII_INT.fullmatch(v) for v in items):
                raise DeployerError(f"--sweep {text!r}: {name} values must be integers")
            parsed = [int(v) for v in items]
            if name == "threads" and any(not 1 <= v <= MAX_THREADS for v in parsed):
                raise DeployerError(f"--sweep {text!r}: threads must be 1 to {MAX_THREADS}")
            if name == "powersave" and any(v not in (0, 1, 2) for v in parsed):
                raise DeployerError(f"--sweep {text!r}: powersave must be 0, 1 or 2")
        if len(set(parsed)) != len(parsed):
            raise DeployerError(f"--sweep {text!r}: a value is repeated")
        axes[name] = parsed
    return axes


def is_int8_model(param: Path) -> bool:
    """ncnn2int8 output marks quantized conv/fc layers with int8_scale_term (param id 8) > 0."""
    from deployer.ncnn.param import read_param

    graph = read_param(param)
    return any(layer.type in ("Convolution", "ConvolutionDepthWise", "InnerProduct", "Convolution1D")
               and int(layer.get(8, 0) or 0) > 0 for layer in graph.layers)


@dataclass
class ModelPair:
    param: Path
    bin: Path


@dataclass
class SweepPlan:
    axes: dict[str, list[Any]]
    configs: list[dict[str, Any]]              # each: threads, precision, powersave
    models: dict[str, ModelPair]               # precision -> model files
    fp32: ModelPair | None                     # the reference for accuracy
    int8: ModelPair | None
    shape: str | None
    rounds: int
    chunk_s: float
    gates: list[Any]
    inputs: parity.Inputs | None
    input_blob: str | None = None
    output_blob: str | None = None

    @staticmethod
    def label(cfg: dict[str, Any]) -> str:
        return " ".join(f"{k}={v}" for k, v in cfg.items())


def plan_sweep(param: Path, bin_: Path, *, fp32_param: Path | None, fp32_bin: Path | None, shape: str | None,
               sweeps: list[str], rounds: int = 2, chunk_s: float = 2.0, gates: list[str] | None = None,
               inputs: parity.Inputs | None = None, input_blob: str | None = None,
               output_blob: str | None = None) -> SweepPlan:
    from deployer.check.gates import parse_gate
    from deployer.remote.session import check_files

    check_files((path, flag) for path, flag in ((param, "--param"), (bin_, "--bin"), (fp32_param, "--fp32-param"),
                                                 (fp32_bin, "--fp32-bin")) if path is not None)
    if (fp32_param is None) != (fp32_bin is None):
        raise DeployerError("--fp32-param and --fp32-bin go together")
    if rounds < 1:
        raise DeployerError("--rounds must be at least 1")
    if not 0 < chunk_s <= MAX_WAIT_S:      # NaN fails too; 1e308 s per setting never ended
        raise DeployerError(f"--duration must be positive (seconds per setting and round), "
                            f"at most {MAX_WAIT_S} (7 days)")
    axes = parse_sweeps(sweeps)
    main_is_int8 = is_int8_model(Path(param))
    int8 = ModelPair(Path(param), Path(bin_)) if main_is_int8 else None
    fp32 = ModelPair(Path(fp32_param), Path(fp32_bin)) if fp32_param else (
        None if main_is_int8 else ModelPair(Path(param), Path(bin_)))
    axes.setdefault("threads", [None])
    axes.setdefault("precision", ["int8" if main_is_int8 else "fp32"])
    axes.setdefault("powersave", [None])
    models: dict[str, ModelPair] = {}
    for prec in axes["precision"]:
        if prec == "int8":
            if int8 is None:
                raise DeployerError(f"precision=int8: {param} is not an int8 model (no int8 layers)",
                                    hint="pass the int8 model as --param/--bin and the fp32 one as --fp32-param/--fp32-bin")
            models[prec] = int8
        else:
            if fp32 is None:
                raise DeployerError(f"precision={prec} needs the fp32 model: {param} is int8",
                                    hint="add --fp32-param P --fp32-bin B")
            models[prec] = fp32
    order = ("threads", "precision", "powersave")
    configs = [dict(zip(order, combo)) for combo in itertools.product(*(axes[k] for k in order))]
    configs = [{k: v for k, v in c.items() if v is not None} for c in configs]
    gate_objs = [parse_gate(g) for g in (gates or ["cosine>=0.98"])]
    for g in gate_objs:
        if g.metric not in ("cosine", "min_cosine", "top1_agreement"):
            raise DeployerError(f"--gate {g.text}: profile gates use cosine (the mean over the inputs), "
                                "min_cosine (the worst input) or top1_agreement")
    return SweepPlan({k: v for k, v in axes.items() if v != [None]}, configs, models, fp32, int8, shape, rounds,
                     chunk_s, gate_objs, inputs, input_blob, output_blob)


def _run_options(plan: SweepPlan, cfg: dict[str, Any], **kw: Any) -> Any:
    from deployer.remote.session import RunOptions

    prec = cfg["precision"]
    model = plan.models[prec]
    return RunOptions(param=model.param, bin=model.bin, shape=plan.shape, threads=cfg.get("threads"),
                      powersave=cfg.get("powersave"), fp16=(prec == "fp16"), int8=(prec == "int8"),
                      input_blob=plan.input_blob, output_blob=plan.output_blob, **kw)


def interleaved(configs: list[dict[str, Any]], rounds: int) -> list[tuple[int, dict[str, Any]]]:
    """(round, config) in the order they run: forward, backward, forward..."""
    out = []
    for r in range(rounds):
        seq = configs if r % 2 == 0 else list(reversed(configs))
        out += [(r, c) for c in seq]
    return out


def _emit(sink: EventSink | None, event: dict[str, Any]) -> None:
    if sink is not None:
        sink(event)


def run_sweep(session: Any, plan: SweepPlan, results_dir: Path, *, on_event: EventSink | None = None,
              min_effect_pct: float = 3.0) -> dict[str, Any]:
    """Time the grid, check accuracy per precision, store everything, return the summary."""
    from deployer.profiling import store

    started = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    sweep_id = store.record_sweep({"board": session.name, "started_at": started, "state": "running"}, results_dir)
    per_cfg: dict[str, dict[str, Any]] = {plan.label(c): {"settings": c, "samples": [], "runs": [], "run_ids": [],
                                                          "flags": []} for c in plan.configs}
    steps = interleaved(plan.configs, plan.rounds)
    for i, (rnd, cfg) in enumerate(steps):
        label = plan.label(cfg)
        _emit(on_event, {"type": "sweep", "step": i + 1, "of": len(steps), "round": rnd + 1, "label": label})
        result = session.run(_run_options(plan, cfg, duration=plan.chunk_s, warmup=0, iterations=1))
        run_id = hook.store(result, results_dir, kind="sweep", sweep_id=sweep_id, label=label)
        warm = (result.profiling.get("analysis") or {}).get("warmup_count", 0)
        slot = per_cfg[label]
        slot["samples"] += result.samples_ms[warm:]
        slot["runs"].append(list(result.samples_ms[warm:]))
        slot["run_ids"].append(run_id)
        slot["flags"] += [f for f in result.profiling.get("flags", []) if f not in slot["flags"]]
        _emit(on_event, {"type": "sweep_done", "label": label, "run_id": run_id,
                         "median_ms": (result.profiling.get("analysis") or {}).get("median_ms")})

    accuracy = check_accuracy(session, plan, on_event)
    configs_out = []
    for label, slot in per_cfg.items():
        a = st.analyze(slot["samples"], warmup_window=len(slot["samples"]) + 1)  # warm-up already dropped per pass
        prec = slot["settings"]["precision"]
        configs_out.append({"label": label, "settings": slot["settings"], "run_ids": slot["run_ids"],
                            "median_ms": a.median_ms if a else None,
                            "ci_ms": [a.ci_low_ms, a.ci_high_ms] if a else None,
                            "ci_level": a.ci_level if a else None,
                            "mad_ms": a.mad_ms if a else None, "count": a.count if a else 0,
                            "accuracy_passed": accuracy[prec]["passed"], "flags": slot["flags"],
                            "_runs": [r for r in slot["runs"] if r]})
    summary = {"sweep_id": sweep_id, "board": session.name, "started_at": started, "state": "done",
               "axes": plan.axes, "rounds": plan.rounds, "chunk_s": plan.chunk_s,
               "gates": [g.text for g in plan.gates], "accuracy": accuracy,
               **recommend(configs_out, min_effect_pct)}
    for c in configs_out:
        c.pop("_runs")
    summary["configs"] = configs_out
    store.update_sweep(sweep_id, summary, results_dir)
    return summary


TOO_FEW = "too few samples per pass to compare them (a longer --duration or more --rounds would decide)"


def _compare(a: dict[str, Any], b: dict[str, Any], configs: list[dict[str, Any]], min_effect_pct: float
             ) -> st.Comparison | None:
    """B's rounds against A's, on run medians: the rounds of one setting move more between them than
    samples do within one (deployer.profiling.stats), and the other settings' rounds tell by how much.
    None when one pass a side with under 3 samples leaves nothing to test: the sweep's timings still
    stand, and the summary says what would decide (it used to end the whole sweep with an error)."""
    spread = st.run_spread([[float(np.median(r)) for r in c["_runs"]] for c in configs if c is not a and c is not b])
    try:
        return st.compare_run_sets(a["_runs"], b["_runs"], min_effect_pct=min_effect_pct, spread=spread).comparison
    except DeployerError:
        return None


def recommend(configs: list[dict[str, Any]], min_effect_pct: float = 3.0) -> dict[str, Any]:
    """The fastest setting that passes the accuracy gate, and whether int8 pays."""
    ok = [c for c in configs if c["accuracy_passed"] and c["median_ms"] is not None]
    out: dict[str, Any] = {}
    if not ok:
        out["recommendation"] = None
        out["recommendation_reason"] = "no setting passed the accuracy gate"
    else:
        best = min(ok, key=lambda c: c["median_ms"])
        out["recommendation"] = dict(best["settings"])
        out["recommendation_label"] = best["label"]
        out["recommendation_median_ms"] = best["median_ms"]
        out["recommendation_ci_ms"] = best["ci_ms"]
        out["recommendation_ci_level"] = best.get("ci_level")
        runner_up = [c for c in ok if c is not best]
        if runner_up:
            second = min(runner_up, key=lambda c: c["median_ms"])
            cmp = _compare(best, second, configs, min_effect_pct)
            out["recommendation_reason"] = (f"fastest passing setting; next is {second['label']} " + (
                f"({cmp.verdict} at {cmp.change_pct:+.1f}%, "
                f"CI [{cmp.change_ci_pct[0]:+.1f}, {cmp.change_ci_pct[1]:+.1f}]%)" if cmp else f"({TOO_FEW})"))
        else:
            out["recommendation_reason"] = "the only setting that passed the accuracy gate"
    ints = [c for c in configs if c["settings"].get("precision") == "int8" and c["median_ms"] is not None]
    floats = [c for c in configs if c["settings"].get("precision") != "int8" and c["median_ms"] is not None]
    if ints and floats:
        # the best int8 and float settings that pass the gate (any, if none of a kind passes)
        bi = min([c for c in ints if c["accuracy_passed"]] or ints, key=lambda c: c["median_ms"])
        bf = min([c for c in floats if c["accuracy_passed"]] or floats, key=lambda c: c["median_ms"])
        cmp = _compare(bf, bi, configs, min_effect_pct)
        if cmp is None:
            out["int8"] = {"pays": False, "comparison": None, "faster": None, "accuracy_passed": bi["accuracy_passed"],
                           "message": f"cannot tell whether int8 pays on this board: {TOO_FEW}"}
            return out
        pays = cmp.verdict == "faster" and bi["accuracy_passed"]
        lo, hi = cmp.change_ci_pct
        if cmp.verdict == "faster":
            msg_gate = ("int8 pays on this board: " if pays else
                        "int8 is faster but fails the accuracy gate on this board: ")
        elif cmp.verdict == "slower":
            msg_gate = "int8 does not pay on this board (it is slower): "
        elif hi - lo <= 4 * max(min_effect_pct, 2.5):
            msg_gate = "int8 does not pay on this board (no measurable gain): "
        else:  # `same` only because the interval is wide: say so rather than claim no gain
            msg_gate = "cannot tell whether int8 pays on this board (too noisy: more --rounds would decide; flagged runs?): "
        msg = (f"int8 ({bi['label']}, {st.fmt_ms(bi['median_ms'])} ms) vs best float ({bf['label']}, "
               f"{st.fmt_ms(bf['median_ms'])} ms): {cmp.change_pct:+.1f}% [{cmp.change_ci_pct[0]:+.1f}, "
               f"{cmp.change_ci_pct[1]:+.1f}]%, p={cmp.p_value:.2g}")
        out["int8"] = {"pays": pays, "comparison": cmp.to_json(),
                       "faster": cmp.verdict == "faster", "accuracy_passed": bi["accuracy_passed"],
                       "message": msg_gate + msg}
    return out


def check_accuracy(session: Any, plan: SweepPlan, on_event: EventSink | None = None) -> dict[str, Any]:
    """Per precision: board outputs vs the host's fp32 (and int8) on the same inputs, gated."""
    from deployer.remote import runner as runner_mod

    precisions = sorted({c["precision"] for c in plan.configs}, key=PRECISIONS.index)
    if plan.fp32 is None:
        return {p: {"passed": True, "skipped": "no fp32 reference model (--fp32-param/--fp32-bin)", "rows": []}
                for p in precisions}
    with tempfile.TemporaryDirectory(prefix="deployer-parity-") as tmp:
        if plan.inputs is not None:
            inputs = plan.inputs
        else:  # no images: the runner's seeded input, reproduced bit-exactly on the host
            shape = _shape_of(plan)
            count = int(np.prod(shape))
            t = np.asarray(runner_mod.make_input_values(count, "random", 0), np.float32).reshape(tuple(reversed(shape)))
            inputs = parity.Inputs(["random(seed=0)"], [t], False)
        files = parity.write_input_files(inputs, Path(tmp))
        host_fp32 = parity.host_infer(plan.fp32.param, plan.fp32.bin, inputs.tensors, int8=False,
                                      input_blob=plan.input_blob, output_blob=plan.output_blob)
        host_int8 = None
        if plan.int8 is not None and "int8" in precisions:
            host_int8 = parity.host_infer(plan.int8.param, plan.int8.bin, inputs.tensors, int8=True,
                                          input_blob=plan.input_blob, output_blob=plan.output_blob)
        out: dict[str, Any] = {}
        for prec in precisions:
            cfg = {"threads": 1, "precision": prec}
            board = []
            for name, f in zip(inputs.names, files):
                _emit(on_event, {"type": "accuracy", "precision": prec, "input": name})
                r = session.run(_run_options(plan, cfg, iterations=1, warmup=0, input_file=f, return_output=True))
                board.append(np.asarray(r.output["values"], dtype=np.float32))
            rows = parity.three_way(host_fp32, host_int8 if prec == "int8" else None, board, f"board {prec}")
            final = rows[-1]  # host fp32 vs board: what the user gets
            # the names mean what they mean in `check` and `quantize`: cosine is the mean over the
            # inputs, min_cosine the worst one (profile judged `cosine` on the worst: the demo's
            # int8 model passed check's gate and failed the same gate here)
            observed = {"cosine": final.cosine_mean, "min_cosine": final.cosine_min,
                        "top1_agreement": final.top1_agreement}
            # top-1 does not exist for single-value outputs: such a gate is not applicable, not failed
            gates = [{"gate": g.text, "observed": observed.get(g.metric),
                      "passed": True if observed.get(g.metric) is None else g.holds(observed[g.metric])}
                     for g in plan.gates]
            out[prec] = {"passed": all(g["passed"] for g in gates), "gates": gates, "real_inputs": inputs.real,
                         "inputs": inputs.names, "rows": [r.to_json() for r in rows]}
    return out


def _shape_of(plan: SweepPlan) -> list[int]:
    from deployer.remote.runner import input_shape_from_param, parse_shape

    model = plan.fp32 or plan.int8
    shape = parse_shape(plan.shape) if plan.shape else input_shape_from_param(str(model.param), plan.input_blob)
    if not shape:
        raise DeployerError(f"{model.param} has no fixed input shape; pass --shape W,H,C")
    return shape

