"""`deployer quantize`: profile -> calibrate once -> pick the best method -> mixed precision -> write.

The default is the best we can do, not ncnn2table's default: activation statistics are collected
once (one fp32 pass, deployer.quant.calibration, the engine `ncnn2table` uses too), every
candidate method turns them into a table, each table's int8 model is run on the eval inputs
against fp32, and the best score wins (deployer.quant.choice.score: the profile's task metric,
mAP@0.5 then mAP@0.5:0.95 for a detector, mask IoU for a dense map, else mean cosine + top-1
agreement; over every eval input, ties to the smaller model: a score one image cannot flip,
unlike "passes the gate"; the report says how often the choice survives resampling the eval
photos, deployer.quant.choice). Each method's task metrics are in the report. If the gate still
fails, automatic mixed precision (deployer.quant.mixed) keeps the fewest layers fp32 that make it
hold, or reports why none can.

The eval inputs are the profile's `eval:` set, separate from calibration; without one, the
calibration's held-out share. Fewer than `eval.min_count` inputs is a warning, and every agreement
rate is reported with its 95 % interval, so a decision taken on 11 images says so.

Nothing is written into --out until everything has been computed, and then only through a
staging folder renamed file by file, so a failed or interrupted run leaves no partial files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from deployer import fsutil
from deployer.check.crosscheck import run_outputs
from deployer.check.gates import evaluate_gates, parse_gates
from deployer.check.metrics import WILSON_Z, summary_dict
from deployer.check.net import NcnnNet
from deployer.check.samples import group_keys, input_names, list_inputs, load_samples, matches_none
from deployer.check.tasks import with_intervals
from deployer.errors import DeployerError
from deployer.profile import Profile, fp32_byte_budget
from deployer.quant import speedcost
from deployer.quant.choice import choice_rule, choice_stability, choose

Progress = Callable[[str, int, int], None]      # (phase, done, total)
CORRELATION_CAVEAT = ("intervals treat eval inputs as independent; views or crops of one photo are not, "
                      "so with N photos the true uncertainty lies between that of N and of all inputs "
                      "(eval.group names which inputs belong together)")


def interval_basis(groups: list[str] | None) -> dict[str, Any]:
    """What the agreement intervals count, for reports: inputs (with the caveat) or eval.group's groups."""
    if groups is None:
        return {"groups": None, "caveat": CORRELATION_CAVEAT}
    k = len(set(groups))
    return {"groups": k,
            "caveat": f"intervals count the {k} groups of eval.group (views of one photo "
                      f"agree or miss together), not the {len(groups)} inputs, as independent"}


@dataclass
class OutputPaths:
    folder: Path
    param: Path
    bin: Path
    table: Path
    report: Path

    def all(self) -> list[Path]:
        return [self.param, self.bin, self.table, self.report]


@dataclass
class Split:
    calibration: list[list[Path]]      # per model input, the files used for statistics
    heldout: list[list[Path]]          # per model input, the files held out of the statistics


@dataclass
class EvalSet:
    """The inputs that choose the method, rank layers and decide the gate, and where they came from."""

    files: list[list[Path]]            # per model input
    source: str                        # "eval.images" | "calibration holdout" | "calibration (no holdout)"
    warnings: list[str]

    @property
    def count(self) -> int:
        return len(self.files[0]) if self.files else 0


@dataclass
class QuantizeResult:
    report: dict[str, Any]
    paths: OutputPaths

    @property
    def passed(self) -> bool:
        return bool(self.report["gate"]["passed"]) if self.report["gate"]["passed"] is not None else True


# ------------------------------------------------------------------------------------------------
# naming, model resolution, calibration split


def model_stem(profile: Profile, param: Path) -> str:
    if profile.name:
        return profile.name
    stem = param.name[: -len(".param")] if param.name.endswith(".param") else param.stem
    if stem.endswith(".ncnn"):
        stem = stem[: -len(".ncnn")]
    return stem or "model"


def output_paths(profile: Profile, param: Path) -> OutputPaths:
    if profile.out is None:
        raise DeployerError(f"{profile.where('out')}: missing output folder", hint="give --out DIR or `out:` in the profile")
    stem = model_stem(profile, param)
    folder = profile.out
    return OutputPaths(folder, folder / f"{stem}_int8.param", folder / f"{stem}_int8.bin",
                       folder / f"{stem}_int8.table", folder / f"{stem}_int8.json")


def check_output_folder(profile: Profile, paths: OutputPaths, inputs: list[Path | None]) -> None:
    """Refuse, before any work, an out folder the files cannot go to or that would replace an input.

    The outputs are staged and renamed at the very end (_write_outputs), so an --out naming a file
    used to fail only after the whole run, as a bare OS message ("File exists"), and an out folder
    holding the model (`--name` or a model already called *_int8) silently replaced the fp32
    .param/.bin the run was reading."""
    where = profile.where("out")
    node = paths.folder
    while not node.exists() and node != node.parent:     # mkdir(parents=True) starts at the first that exists
        node = node.parent
    if not node.is_dir():
        raise DeployerError(f"{where}: {node} is a file, not a folder",
                            hint="give a folder (new or existing) for the int8 files")
    try:        # os.access says yes to root even on a read-only mount or an immutable folder: try it
        os.rmdir(tempfile.mkdtemp(prefix=".staging-", dir=node))
    except OSError as err:
        raise _unwritable(where, node, err) from None
    clash = fsutil.overwritten_input(paths.all(), [(p, str(p)) for p in inputs])
    if clash is not None:
        raise DeployerError(f"{where}: writing {clash[0].name} there would replace the input {clash[1]}",
                            hint="choose another out folder, or another --name")


def _unwritable(where: str, folder: Path, err: OSError) -> DeployerError:
    return DeployerError(f"{where}: cannot write into {folder} ({err.strerror or err})",
                         hint="choose a folder you can write to")


def resolve_model(profile: Profile) -> tuple[Path, Path, dict]:
    """The fp32 ncnn .param/.bin, converting ONNX/TorchScript through pnnx (cached) when needed."""
    spec = profile.model
    if spec.source is None:
        assert spec.param is not None and spec.bin is not None
        return spec.param, spec.bin, {}
    from deployer.quant.importer import import_model

    started = time.monotonic()
    imported = import_model(spec.source, spec.inputshape)
    return imported.param, imported.bin, {"source": str(spec.source), "pnnx_cached": imported.cached,
                                          "pnnx_seconds": round(time.monotonic() - started, 3)}


def _paired_inputs(profile: Profile, images: list[Path], dotted: str) -> list[list[Path]]:
    """One file list per input (`images` are list files or folders), checked to pair line by line."""
    lists = [list_inputs(p) for p in images]
    n = len(lists[0])
    for p, files in zip(images[1:], lists[1:]):
        if len(files) != n:
            raise DeployerError(f"{profile.where(dotted)}: {p} has {len(files)} files but "
                                f"{images[0]} has {n}", hint="multi-input lists are paired line by line")
    return lists


def split_calibration(profile: Profile) -> Split:
    """Deterministic shuffle (seed), cap at `count`, hold out a share (judges int8 when the profile
    names no `eval:` set; with one, nothing is held out and every file calibrates)."""
    cal = profile.calibration
    lists = _paired_inputs(profile, cal.images, "calibration.images")
    n = len(lists[0])
    order = np.random.default_rng(cal.seed).permutation(n)
    if cal.count is not None:
        order = order[: cal.count]
    total = len(order)
    holdout = 0.0 if profile.eval.images else cal.holdout
    held = int(holdout) if holdout >= 1 else int(round(holdout * total))
    if holdout > 0 and held == 0 and total >= 2:
        held = 1
    if held >= total:
        raise DeployerError(f"{profile.where('calibration.holdout')}: holds out {held} of {total} files, "
                            "leaving none to calibrate on", hint="use a smaller holdout or more images")
    held_idx, cal_idx = sorted(order[:held].tolist()), sorted(order[held:].tolist())
    return Split([[files[i] for i in cal_idx] for files in lists], [[files[i] for i in held_idx] for files in lists])


def eval_set(profile: Profile, split: Split) -> EvalSet:
    """The profile's `eval:` inputs (at most `eval.count`, spread over the list), else the held-out
    share; warns when there are fewer than `eval.min_count` or when they overlap calibration."""
    spec = profile.eval
    warnings: list[str] = []
    if spec.images:
        lists = _paired_inputs(profile, spec.images, "eval.images")
        n = len(lists[0])
        if spec.count is not None and spec.count < n:
            from deployer.quant.mixed import spread

            keep = spread(n, spec.count)
            lists = [[files[i] for i in keep] for files in lists]
        files, source = lists, "eval.images"
        calib = {p.resolve() for p in split.calibration[0]}
        shared = sum(1 for p in files[0] if p.resolve() in calib)
        if shared:
            warnings.append(f"{shared} of {len(files[0])} eval inputs are also calibration inputs: "
                            "int8 looks better on data it was calibrated on")
    elif split.heldout[0]:
        files, source = split.heldout, "calibration holdout"
    else:
        files, source = split.calibration, "calibration (no holdout)"
        warnings.append("no eval inputs (no eval: set, holdout: 0): the method is chosen and the gate "
                        "judged on the calibration inputs themselves, which flatters int8")
    n = len(files[0])
    if n < spec.min_count:
        half = 0.5 * WILSON_Z / (n ** 0.5) if n else 1.0
        warnings.append(f"decisions rest on {n} eval inputs (fewer than eval.min_count={spec.min_count}): an "
                        f"agreement rate near 0.5 is uncertain by about +-{half:.2f}; name more inputs in eval.images")
    return EvalSet(files, source, warnings)


# ------------------------------------------------------------------------------------------------
# the run


def run_quantize(profile: Profile, progress: Progress | None = None) -> QuantizeResult:
    timings: dict[str, float] = {}
    started = time.monotonic()
    warnings: list[str] = []

    def phase(name: str, t0: float) -> float:
        now = time.monotonic()
        timings[name] = round(now - t0, 3)
        return now

    t = time.monotonic()
    param, bin_, import_info = resolve_model(profile)
    paths = output_paths(profile, param)
    check_output_folder(profile, paths, [param, bin_, profile.source, profile.quantize.layer_times,
                                         *profile.calibration.images, *profile.eval.images])
    gates = parse_gates(profile.gate, profile.where("gate"))
    t = phase("import", t)

    from deployer.ncnn.model import NcnnModel
    from deployer.quant.weights import load_model as load_calib_model

    model = NcnnModel.load(param, bin_)
    calib_model = load_calib_model(param, bin_)
    if not calib_model.quant_layers:
        raise DeployerError(f"{param}: no Convolution/ConvolutionDepthWise/InnerProduct layers, nothing to quantize to int8")
    layer_names = {ql.name for ql in calib_model.quant_layers}
    unknown = [n for n in profile.quantize.keep_fp32 if n not in {lay.name for lay in model.graph.layers}]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], sorted(layer_names), n=1)
        raise DeployerError(f"{profile.where('quantize.keep_fp32')}: the model has no layer {unknown[0]!r}",
                            hint=f"did you mean '{close[0]}'?" if close else "see the layer names in the .param")
    # a layer int8 never touches (Input, ReLU, Pooling...) "kept float" was accepted and reported as kept
    from deployer.quant.int8 import CALIBRATED_TYPES, DYNAMIC_TYPES, WEIGHT_ONLY_TYPES

    int8_types = (*CALIBRATED_TYPES, *WEIGHT_ONLY_TYPES, *DYNAMIC_TYPES)
    never_int8 = [lay for lay in model.graph.layers
                  if lay.name in profile.quantize.keep_fp32 and lay.type not in int8_types]
    if never_int8:
        raise DeployerError(f"{profile.where('quantize.keep_fp32')}: layer {never_int8[0].name!r} "
                            f"({never_int8[0].type}) is never int8, so keeping it float changes nothing",
                            hint=f"name a Convolution/ConvolutionDepthWise/InnerProduct layer, "
                                 f"e.g. {sorted(layer_names)[0]}")
    layer_times = None
    if profile.quantize.layer_times is not None:   # before any work: times of another model fail here
        layer_times = speedcost.load_layer_times(profile.quantize.layer_times)
        speedcost.check_same_model(layer_times, {lay.name: lay.type for lay in model.graph.layers})
    names = input_names(profile.inputs, model.graph.input_names, profile.where("inputs"))

    split = split_calibration(profile)
    evalset = eval_set(profile, split)
    warnings += evalset.warnings
    t = phase("load", t)

    held = load_samples(evalset.files, profile.inputs, names,
                        progress=(lambda d, n: progress("preprocess", d, n)) if progress else None)
    ref_net = NcnnNet(param, bin_, threads=profile.threads)
    outputs = ref_net.output_names
    reference = run_outputs(ref_net, held, outputs)
    del ref_net
    if profile.task is not None and reference:     # before calibration: a task that cannot fit this model fails now
        from deployer.check.tasks import check_task_outputs

        check_task_outputs(profile.task, reference, profile.where("task"))
    t = phase("reference", t)

    from deployer.quant.calibration import Calibrator, InputSet
    from deployer.quant.mixed import Evaluator, search

    methods = [profile.quantize.method] if profile.quantize.method != "auto" else list(profile.quantize.candidates)
    base_exclude = frozenset(profile.quantize.keep_fp32)
    groups = group_keys(evalset.files[0], profile.eval.group, profile.where("eval.group"), require_match=True)
    evaluator = Evaluator(model, held, reference, gates, threads=profile.threads, groups=groups)
    evaluator.task = profile.task
    try:
        calibrator = Calibrator(calib_model, profile.inputs, InputSet.from_lists(split.calibration),
                                threads=profile.threads)
        calibrator.stats(True, progress, kl=any(m in ("kl", "eq") for m in methods))
        t = phase("collect", t)
        per_method: dict[str, dict] = {}
        tables: dict[str, Any] = {}
        evals, sizes = {}, {}
        for i, method in enumerate(methods):
            m_started = time.monotonic()
            tables[method] = calibrator.table(method, progress=progress)
            evals[method] = ev = evaluator.evaluate(tables[method], base_exclude)
            sizes[method] = evaluator.bin_size(tables[method], base_exclude)
            rank = ev.rank
            per_method[method] = {"score": round(rank.value, 6),
                                  "score_by": dict(zip(rank.basis, (round(v, 6) for v in rank.values))),
                                  "error": ev.error, "passed": ev.passed if gates else None,
                                  "bin_bytes": sizes[method], "outputs": _summary_dict(ev.outputs),
                                  "task": ev.task, "seconds": round(time.monotonic() - m_started, 3)}
            if progress:
                progress("methods", i + 1, len(methods))
        warnings += list(dict.fromkeys(calibrator.warnings))
        best = choose(methods, {m: evals[m].rank.values for m in methods}, sizes)
        stability = choice_stability(methods, evals, sizes, groups)
        if stability is not None and (unsettled := stability.warning()):
            warnings.append(unsettled)
        t = phase("methods", t)

        from deployer.quant.refine import DEFAULT_TECHNIQUES, refine_step

        techniques = profile.quantize.refine if profile.quantize.refine is not None else DEFAULT_TECHNIQUES
        needs_samples = any(t != "shift" for t in techniques)      # the shift needs only the table
        calib_samples = load_samples(split.calibration, profile.inputs, names) if needs_samples else []
        refine_info, chosen_eval = refine_step(evaluator, model, param, bin_, tables[best], calib_samples,
                                               techniques, base_exclude, evals[best], threads=profile.threads,
                                               progress=progress)
        t = phase("refine", t)
        mixed_info: dict[str, Any] = {"ran": False}
        auto_keep: list[str] = []
        if gates and not chosen_eval.passed and profile.quantize.mixed:
            byte_budget = fp32_byte_budget(profile.quantize.max_fp32_bytes, sizes[best])
            time_budget = None
            if layer_times is not None and profile.quantize.max_slowdown is not None:
                time_budget = speedcost.time_budget(layer_times, profile.quantize.max_slowdown)
            result = search(evaluator, tables[best], base_exclude, chosen_eval,
                            max_fp32_layers=profile.quantize.max_fp32_layers, max_extra_bytes=byte_budget,
                            time_budget=time_budget, progress=progress)
            auto_keep = result.keep_fp32
            chosen_eval = result.evaluation
            mixed_info = {"ran": True, "passed": result.passed, "keep_fp32": auto_keep,
                          "reachable": result.reachable, "reason": result.reason,
                          "smallest_passing": result.smallest_passing,
                          "candidates_evaluated": result.candidates_evaluated,
                          "budget": result.budget, "byte_budget": byte_budget,
                          "time_budget_ms": round(time_budget[1], 4) if time_budget else None,
                          "extra_bytes": sum(result.extra_bytes.get(k, 0) for k in auto_keep)
                          if result.extra_bytes else None,
                          "best_in_budget": result.best_in_budget,
                          "sensitivity": result.sensitivity, "steps": result.steps}
            if result.smallest_passing and not result.passed:
                mixed_info["smallest_passing_bin_bytes"] = evaluator.bin_size(
                    tables[best], base_exclude | set(result.smallest_passing))
        t = phase("mixed", t)

        all_int8_model, _ = evaluator.build(tables[best], base_exclude)
        final = evaluator.candidate(tables[best], base_exclude | set(auto_keep))
        final_model, int8_report = evaluator.convert(final, base_exclude | set(auto_keep))
        table = final.table                              # with the shifted scales, if the shift was kept
        if refine_info.get("shift") and refine_info.get("kept"):   # the offsets the written files carry
            refine_info["shift"]["offsets"] = {k: round(v, 6) for k, v in final.offsets.items()}
    finally:
        evaluator.close()

    param_text, bin_bytes = final_model.to_bytes()
    all_int8_bin = len(all_int8_model.to_bytes()[1])
    fp32_bin = bin_.stat().st_size
    from deployer.quant.table import format_table

    fp32_layers = [d.name for d in int8_report.layers if d.precision != "int8"]
    if layer_times is not None:
        def time_cost(fp32: list[str]) -> dict[str, Any]:
            return speedcost.measured_cost(layer_times, [n for n in fp32 if n in layer_names])
    else:
        from deployer.quant.mixed import layer_macs

        macs = layer_macs(param, bin_, model.graph, held[0], sorted(layer_names), threads=profile.threads)

        def time_cost(fp32: list[str]) -> dict[str, Any]:
            return speedcost.mac_estimate(macs, [n for n in fp32 if n in layer_names])
    speed = time_cost(fp32_layers)
    if mixed_info.get("smallest_passing") and not mixed_info["passed"]:
        mixed_info["smallest_passing_speed"] = time_cost(sorted(base_exclude | set(mixed_info["smallest_passing"])))
    task_report = with_intervals(chosen_eval.task, chosen_eval.parts, groups)
    # the same verdicts, now with the task metrics' intervals (settled or not) beside them
    gate_results = evaluate_gates(gates, chosen_eval.outputs, task_report) if gates else chosen_eval.gates
    passed = all(g.passed for g in gate_results) if gates else None
    eval_info = {"count": len(held), "source": evalset.source, "min_count": profile.eval.min_count,
                 "enough": len(held) >= profile.eval.min_count, **interval_basis(groups)}
    report: dict[str, Any] = {
        "ok": passed if gates else True,
        "model": {"param": str(param), "bin": str(bin_), **import_info},
        "files": {"param": str(paths.param), "bin": str(paths.bin), "table": str(paths.table), "report": str(paths.report)},
        "method": best,
        "method_choice": choice_rule(evals[best].rank),
        "method_stability": stability.to_dict() if stability is not None else None,
        "methods": per_method,
        "keep_fp32": {"profile": sorted(base_exclude), "auto": auto_keep},
        "int8_layers": int8_report.quantized,
        "fp32_layers": fp32_layers,
        "mixed": mixed_info,
        "refine": refine_info,
        "task": task_report,
        "eval": eval_info,
        "heldout": {"count": len(held), "outputs": _summary_dict(chosen_eval.outputs)},
        "gate": {"passed": passed, "results": [g.__dict__ for g in gate_results], "decided_on": len(held)},
        "sizes": {"fp32_bin": fp32_bin, "int8_bin": len(bin_bytes), "ratio": round(fp32_bin / len(bin_bytes), 3),
                  "all_int8_bin": all_int8_bin, "mixed_cost_bytes": len(bin_bytes) - all_int8_bin,
                  "mixed_cost_share": round((len(bin_bytes) - all_int8_bin) / all_int8_bin, 4)},
        "speed": speed,
        "calibration": {"files": len(split.calibration[0]), "heldout": len(split.heldout[0]), "inputs": names,
                        "evaluations": evaluator.count},
        # what calibration fed each input (numpy C,H,W): the size a release's health check runs at
        # when the .param's Input layer declares none (pnnx exports)
        "input_shapes": {n: [int(d) for d in a.shape] for n, a in held[0].items()},
        "timings": timings,
        "warnings": warnings + list(int8_report.warnings),
    }
    timings["total"] = round(time.monotonic() - started, 3)
    _write_outputs(paths, param_text, bin_bytes, format_table(table).encode(), report,
                   verify_shapes={n: tuple(a.shape) for n, a in held[0].items()}, where=profile.where("out"))
    return QuantizeResult(report, paths)


def run_check(profile: Profile, *, images: list[Path] | None = None,
              int8: tuple[Path, Path] | None = None, count: int | None = None, per_layer: bool = True,
              progress: Progress | None = None) -> Any:
    """`deployer check`: the int8 model (given, or the profile's `out` files) against its fp32
    original on `images` (list files or folders, one per input), else on the profile's eval set,
    the same inputs `quantize` decided on. Returns a deployer.check.crosscheck.CheckResult whose
    notes carry the eval set's warnings (too few inputs, overlap with calibration)."""
    from deployer.check.crosscheck import crosscheck
    from deployer.ncnn.param import read_param

    fp32_param, fp32_bin, _ = resolve_model(profile)
    if int8 is None:
        if profile.out is None:
            raise DeployerError("--int8-param: missing", hint="give --int8-param/--int8-bin, or a profile with out:")
        paths = output_paths(profile, fp32_param)
        if not paths.param.is_file():
            raise DeployerError(f"{paths.param}: int8 model not found", hint="run `deployer quantize` with this profile first")
        int8 = (paths.param, paths.bin)
    notes: list[str] = []
    if images:
        files, source = [list_inputs(p) for p in images], "--images"
    else:
        evalset = eval_set(profile, split_calibration(profile))
        files, source = evalset.files, evalset.source
        notes += evalset.warnings
    if count is not None:
        files = [f[:count] for f in files]
    groups = group_keys(files[0], profile.eval.group, profile.where("eval.group"), require_match=not images)
    if groups is not None and matches_none(groups):
        notes.append(f"eval.group '{profile.eval.group}' matches none of the {len(groups)} input names: "
                     "every input counts as its own photo")
    names = input_names(profile.inputs, read_param(fp32_param).input_names, profile.where("inputs"))
    gates = parse_gates(profile.gate, profile.where("gate"))
    samples = load_samples(files, profile.inputs, names,
                           progress=(lambda d, t: progress("preprocess", d, t)) if progress else None)
    result = crosscheck((fp32_param, fp32_bin), int8, samples, gates=gates, per_layer=per_layer,
                        threads=profile.threads, task=profile.task, groups=groups, task_where=profile.where("task"),
                        progress=(lambda d, t: progress("compare", d, t)) if progress else None)
    n = len(samples)
    if n < profile.eval.min_count and not any("eval.min_count" in w for w in notes):
        notes.append(f"judged on {n} inputs (fewer than eval.min_count={profile.eval.min_count}): read the "
                     "agreement intervals, not the point values")
    result.notes = notes + result.notes
    result.source = source
    for rows in result.disagreements.values():       # name the file behind each disagreeing input
        for row in rows:
            row["input"] = str(files[0][row["index"]])
    return result


def _summary_dict(outputs: dict) -> dict:
    return {name: summary_dict(s) for name, s in outputs.items()}


def _jsonable(o: Any) -> Any:
    """json.dumps fallback for the report: numpy scalars, paths, dataclasses."""
    import dataclasses

    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def _write_outputs(paths: OutputPaths, param_text: bytes, bin_bytes: bytes, table: bytes, report: dict,
                   verify_shapes: dict[str, tuple[int, ...]] | None = None, where: str = "--out") -> None:
    """Stage every file, then rename each into place: no partial file ever carries a real name.

    The staged int8 model is loaded and run once in stock ncnn (deployer.ncnn.verify, a child
    process) before anything is renamed: a model ncnn refuses is never reported as a success."""
    import json

    try:       # an unwritable (read-only, immutable) folder: say so, not the staging folder's name
        paths.folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=paths.folder))
    except OSError as err:
        raise _unwritable(where, paths.folder, err) from None
    try:
        contents = {paths.param: param_text, paths.bin: bin_bytes, paths.table: table,
                    paths.report: (json.dumps(report, indent=2, default=_jsonable) + "\n").encode()}
        for target, data in contents.items():
            fsutil.write_bytes(staging / target.name, data)      # 0666 minus the umask, like open()
        if verify_shapes is not None:
            from deployer.ncnn.verify import verify_int8

            verify_int8(staging / paths.param.name, staging / paths.bin.name, verify_shapes, shown=str(paths.param))
        # two quantize runs writing one --out (make -j, two terminals) interleaved these renames and
        # could leave one run's .param next to the other's .bin, a pair neither wrote: one at a time
        with fsutil.folder_lock(paths.folder):
            for target in contents:
                os.replace(staging / target.name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
