"""`deployer quantize`: profile -> calibrate once -> pick the best method -> mixed precision -> write.

The default is the best we can do, not ncnn2table's default: activation statistics are collected
once (one fp32 pass), every candidate method turns them into a table, each table's int8 model is
run on held-out calibration inputs against fp32, and the closest wins. If the profile's gate still
fails, automatic mixed precision (deployer.quant.mixed) keeps the fewest layers fp32 that make it
hold. Nothing is written into --out until everything has been computed, and then only through a
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
from deployer.check.gates import parse_gates
from deployer.check.net import NcnnNet
from deployer.check.samples import input_names, list_inputs, load_samples
from deployer.errors import DeployerError
from deployer.profile import InputSpec, Profile

Progress = Callable[[str, int, int], None]      # (phase, done, total)
PROBE_INPUTS = 4                                 # held-out inputs used to rank layers in mixed precision


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
    heldout: list[list[Path]]          # per model input, the files used to choose and gate


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


def split_calibration(profile: Profile) -> Split:
    """Deterministic shuffle (seed), cap at `count`, hold out a share for choosing and gating."""
    cal = profile.calibration
    lists = [list_inputs(p) for p in cal.images]
    n = len(lists[0])
    for p, files in zip(cal.images[1:], lists[1:]):
        if len(files) != n:
            raise DeployerError(f"{profile.where('calibration.images')}: {p} has {len(files)} files but "
                                f"{cal.images[0]} has {n}", hint="multi-input lists are paired line by line")
    order = np.random.default_rng(cal.seed).permutation(n)
    if cal.count is not None:
        order = order[: cal.count]
    total = len(order)
    held = int(cal.holdout) if cal.holdout >= 1 else int(round(cal.holdout * total))
    if cal.holdout > 0 and held == 0 and total >= 2:
        held = 1
    if held >= total:
        raise DeployerError(f"{profile.where('calibration.holdout')}: holds out {held} of {total} files, "
                            "leaving none to calibrate on", hint="use a smaller holdout or more images")
    held_idx, cal_idx = sorted(order[:held].tolist()), sorted(order[held:].tolist())
    return Split([[files[i] for i in cal_idx] for files in lists], [[files[i] for i in held_idx] for files in lists])


# ------------------------------------------------------------------------------------------------
# calibration statistics and per-method tables


def _pre_spec(spec: InputSpec, npy_shape: tuple[int, ...] | None = None):
    from deployer.quant.preprocess import PIXEL_TYPES
    from deployer.quant.preprocess import InputSpec as PreSpec

    if npy_shape is not None:
        return PreSpec(shape=npy_shape, file_type=1)
    shape = (0, 0) if spec.resize == "none" else spec.shape
    return PreSpec(shape=shape, mean=tuple(spec.mean), norm=tuple(spec.norm), pixel=PIXEL_TYPES[spec.pixel])


def _collect_files(split: Split, specs: list[InputSpec], work: Path) -> tuple[list, list[list[str]]]:
    """Inputs ncnn2table-style preprocessing cannot express (letterbox) and mixed .npy lists are
    preprocessed here once and handed to the collector as .npy, so statistics see exactly the
    tensors the held-out check sees."""
    from deployer.check.samples import load_array

    pre_specs, files = [], []
    for i, (spec, paths) in enumerate(zip(specs, split.calibration)):
        if spec.resize != "letterbox" and not any(p.suffix.lower() == ".npy" for p in paths):
            pre_specs.append(_pre_spec(spec))
            files.append([str(p) for p in paths])
            continue
        out, shape = [], None
        for k, p in enumerate(paths):
            arr = load_array(p, spec)
            shape = tuple(reversed(arr.shape))
            target = work / f"in{i}_{k:05d}.npy"
            np.save(target, arr.astype(np.float32))
            out.append(str(target))
        pre_specs.append(_pre_spec(spec, shape))
        files.append(out)
    return pre_specs, files


def collect_stats(param: Path, bin_: Path, calib_model: Any, split: Split, specs: list[InputSpec],
                  names: list[str], threads: int, progress: Progress | None,
                  eq: bool = False) -> tuple[Any, Any]:
    """Activation statistics, plus method=eq's searched scales (None unless `eq`): the search
    re-reads the preprocessed calibration inputs, which only live as long as this call."""
    from deployer.quant.collect import CollectJob, collect

    blobs: list[str] = []
    for ql in calib_model.quant_layers:
        if ql.bottom not in blobs:
            blobs.append(ql.bottom)
    with tempfile.TemporaryDirectory(prefix="deployer-calib-") as tmp:
        pre_specs, files = _collect_files(split, specs, Path(tmp))
        job = CollectJob(param_path=str(param), bin_path=str(bin_), input_blobs=tuple(names),
                         specs=tuple(pre_specs), files=tuple(tuple(f) for f in files), blobs=tuple(blobs))
        cb = (lambda d, t: progress("collect", d, t)) if progress else None
        stats = collect(job, threads=threads, histograms=True, progress=cb)
        if not eq:
            return stats, None
        from deployer.quant.collect import cpu_count
        from deployer.quant.eq import eq_layer_scales

        return stats, eq_layer_scales(calib_model, job, stats, threads=threads or cpu_count(), progress=progress)


def build_table(method: str, calib_model: Any, stats: Any, eq_scales: Any = None) -> Any:
    """One ncnn calibration table: per-channel weight scales + one activation scale per layer.

    Weight scales follow the method's own rule (ACIQ clips weights too; the others use absmax,
    with ncnn's 6-bit range for 3x3s1 convs so the table stays valid for int8 Winograd).
    """
    from deployer.quant.methods import get_method
    from deployer.quant.table import CalibrationTable
    from deployer.quant.weights import weight_scales

    table = CalibrationTable()
    if method == "eq":                  # the searched scales (get_method("eq") is only its start)
        for ls in eq_scales:
            table.set_weight(ls.name, [float(v) for v in ls.weight_scales])
        for ls in eq_scales:
            table.set_activation(ls.name, ls.input_scale)
        return table
    m = get_method(method)
    act = dict(zip(stats.blobs, (float(v) for v in m.scales(stats))))
    for ql in calib_model.quant_layers:
        table.set_weight(ql.name, weight_scales(ql, m.weight_rule).scales.tolist())
    for ql in calib_model.quant_layers:
        table.set_activation(ql.name, act[ql.bottom])
    return table


# ------------------------------------------------------------------------------------------------
# the run


def _summary_dict(outputs: dict) -> dict:
    from dataclasses import asdict

    out = {}
    for name, s in outputs.items():
        d = asdict(s)
        d.pop("per_input_cosine", None)
        out[name] = d
    return out


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
    names = input_names(profile.inputs, model.graph.input_names, profile.where("inputs"))

    split = split_calibration(profile)
    if not split.heldout[0]:
        warnings.append("no held-out inputs (holdout: 0): method choice uses the calibration inputs themselves")
        split.heldout = split.calibration
    t = phase("load", t)

    held = load_samples(split.heldout, profile.inputs, names,
                        progress=(lambda d, n: progress("preprocess", d, n)) if progress else None)
    ref_net = NcnnNet(param, bin_, threads=profile.threads)
    outputs = ref_net.output_names
    reference = run_outputs(ref_net, held, outputs)
    del ref_net
    t = phase("reference", t)

    methods = [profile.quantize.method] if profile.quantize.method != "auto" else list(profile.quantize.candidates)
    stats, eq_scales = collect_stats(param, bin_, calib_model, split, profile.inputs, names, profile.threads,
                                     progress, eq="eq" in methods)
    t = phase("collect", t)

    from deployer.quant.mixed import Evaluator, search

    base_exclude = frozenset(profile.quantize.keep_fp32)
    evaluator = Evaluator(model, held, reference, gates, threads=profile.threads)
    try:
        per_method: dict[str, dict] = {}
        tables: dict[str, Any] = {}
        evals = {}
        for i, method in enumerate(methods):
            m_started = time.monotonic()
            tables[method] = build_table(method, calib_model, stats, eq_scales)
            evals[method] = ev = evaluator.evaluate(tables[method], base_exclude)
            per_method[method] = {"error": ev.error, "passed": ev.passed if gates else None,
                                  "outputs": _summary_dict(ev.outputs), "seconds": round(time.monotonic() - m_started, 3)}
            if progress:
                progress("methods", i + 1, len(methods))
        best = min(methods, key=lambda m: (not evals[m].passed, evals[m].error))
        t = phase("methods", t)

        chosen_eval = evals[best]
        mixed_info: dict[str, Any] = {"ran": False}
        auto_keep: list[str] = []
        if gates and not chosen_eval.passed and profile.quantize.mixed:
            result = search(evaluator, tables[best], base_exclude, chosen_eval,
                            max_fp32_layers=profile.quantize.max_fp32_layers, probe=PROBE_INPUTS, progress=progress)
            auto_keep = result.keep_fp32
            chosen_eval = result.evaluation
            mixed_info = {"ran": True, "passed": result.passed, "keep_fp32": auto_keep,
                          "candidates_evaluated": result.candidates_evaluated,
                          "budget": result.budget,
                          "sensitivity": result.sensitivity[:10], "steps": result.steps}
        t = phase("mixed", t)

        table = tables[best]
        all_int8_model, _ = evaluator.build(table, base_exclude)
        final_model, int8_report = evaluator.build(table, base_exclude | set(auto_keep))
    finally:
        evaluator.close()

    param_text, bin_bytes = final_model.to_bytes()
    all_int8_bin = len(all_int8_model.to_bytes()[1])
    fp32_bin = bin_.stat().st_size
    from deployer.quant.table import format_table

    gate_results = chosen_eval.gates
    report: dict[str, Any] = {
        "ok": all(g.passed for g in gate_results) if gates else True,
        "model": {"param": str(param), "bin": str(bin_), **import_info},
        "files": {"param": str(paths.param), "bin": str(paths.bin), "table": str(paths.table), "report": str(paths.report)},
        "method": best,
        "methods": per_method,
        "keep_fp32": {"profile": sorted(base_exclude), "auto": auto_keep},
        "int8_layers": int8_report.quantized,
        "fp32_layers": [d.name for d in int8_report.layers if d.precision != "int8"],
        "mixed": mixed_info,
        "heldout": {"count": len(held), "outputs": _summary_dict(chosen_eval.outputs)},
        "gate": {"passed": (all(g.passed for g in gate_results) if gates else None),
                 "results": [g.__dict__ for g in gate_results]},
        "sizes": {"fp32_bin": fp32_bin, "int8_bin": len(bin_bytes), "ratio": round(fp32_bin / len(bin_bytes), 3),
                  "all_int8_bin": all_int8_bin, "mixed_cost_bytes": len(bin_bytes) - all_int8_bin},
        "calibration": {"files": len(split.calibration[0]), "heldout": len(held), "inputs": names,
                        "evaluations": evaluator.count},
        "timings": timings,
        "warnings": warnings + list(int8_report.warnings),
    }
    timings["total"] = round(time.monotonic() - started, 3)
    _write_outputs(paths, param_text, bin_bytes, format_table(table).encode(), report)
    return QuantizeResult(report, paths)


def _write_outputs(paths: OutputPaths, param_text: bytes, bin_bytes: bytes, table: bytes, report: dict) -> None:
    """Stage every file, then rename each into place: no partial file ever carries a real name."""
    import json

    from deployer.cli.common import _json_default

    paths.folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=paths.folder))
    try:
        contents = {paths.param: param_text, paths.bin: bin_bytes, paths.table: table,
                    paths.report: (json.dumps(report, indent=2, default=_json_default) + "\n").encode()}
        umask = os.umask(0)
        os.umask(umask)
        for target, data in contents.items():
            fsutil.write_bytes(staging / target.name, data)
            os.chmod(staging / target.name, 0o666 & ~umask)   # mkstemp's 0600 is wrong for model files
        for target in contents:
            os.replace(staging / target.name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
