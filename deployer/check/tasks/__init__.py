"""Task metrics: judge int8 by what the model is for, not only by its raw tensors.

A profile declares the task (`task: {type: classification|detection|dense, ...}`); `task_metrics`
turns fp32 and int8 outputs over the evaluation inputs into the numbers users know (top-1/top-5
agreement, mAP@0.5 and mAP@0.5:0.95 of int8 boxes against fp32 boxes, IoU of thresholded maps)
and the gates can name them (`map50>=0.95`, `mask_iou>=0.9`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deployer.check import resample
from deployer.errors import DeployerError

TASK_TYPES = ("classification", "detection", "dense")
# gate metric name -> the task that produces it
TASK_METRICS = {"map50": "detection", "map50_95": "detection", "mask_iou": "dense", "mask_iou_min": "dense",
                "top1_agreement_low": "classification",
                # lower ends of the bootstrap intervals (with_intervals): gates that ask for evidence
                "map50_low": "detection", "map50_95_low": "detection", "mask_iou_low": "dense"}
INTERVAL_GATES = ("map50_low", "map50_95_low", "mask_iou_low")


@dataclass
class TaskSpec:
    type: str = "classification"
    output: str | None = None                   # blob to judge (default: the first output)
    # detection (YOLOv8 head)
    num_classes: int | None = None
    conf: float = 0.25                           # reference (fp32) boxes: this confidence and up
    iou: float = 0.45                            # NMS IoU
    class_names: list[str] = field(default_factory=list)
    # dense
    threshold: float = 0.3

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, [])}


_KEYS = {"type", "output", "num_classes", "conf", "iou", "class_names", "threshold"}


def parse_task(raw: Any, where: str = "task") -> TaskSpec:
    """`task: detection` or a mapping with `type:` and the decode options."""
    if raw is None:
        return TaskSpec()
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict):
        raise DeployerError(f"{where}: expected a task name or mapping, got {type(raw).__name__}",
                            hint="e.g. `task: detection` or `task: {type: dense, threshold: 0.3}`")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise DeployerError(f"{where}: unknown key {unknown[0]!r}", hint=f"known: {', '.join(sorted(_KEYS))}")
    kind = raw.get("type", "classification")
    if kind not in TASK_TYPES:
        raise DeployerError(f"{where}.type: unknown task {kind!r}", hint=f"one of {', '.join(TASK_TYPES)}")
    spec = TaskSpec(type=kind)
    # the profile's converters: int("2.7"), int(True), str(["out0"]) and list("person") used to pass
    # here and end as an internal error (or a silently wrong class count) once outputs were decoded
    from deployer.profile import _as_float, _as_int, _as_str

    if raw.get("output") is not None:
        spec.output = _as_str(raw["output"], f"{where}.output")
    if raw.get("num_classes") is not None:
        spec.num_classes = _as_int(raw["num_classes"], f"{where}.num_classes", minimum=1)
    for key in ("conf", "iou", "threshold"):
        if raw.get(key) is not None:
            setattr(spec, key, _as_float(raw[key], f"{where}.{key}"))
    if raw.get("class_names") is not None:
        names = raw["class_names"]
        if not isinstance(names, list) or not names:
            raise DeployerError(f"{where}.class_names: expected a list of names, got {names!r}",
                                hint="e.g. class_names: [person, car]")
        spec.class_names = [_as_str(x, f"{where}.class_names") for x in names]
        if spec.num_classes is not None and spec.num_classes != len(spec.class_names):
            raise DeployerError(f"{where}.class_names: names {len(spec.class_names)} classes but num_classes is "
                                f"{spec.num_classes}")
    if spec.class_names and spec.num_classes is None:
        spec.num_classes = len(spec.class_names)
    for key in ("conf", "iou"):
        if not 0 <= getattr(spec, key) <= 1:
            raise DeployerError(f"{where}.{key}: {getattr(spec, key)} is not between 0 and 1")
    return spec


@dataclass
class TaskParts:
    """The per-input pieces a detection or dense metric is summed from, kept so the metric can be
    recomputed on any multiset of eval inputs without running the model again: bootstrap intervals
    (with_intervals) and whether the method choice survives resampling (deployer.quant.choice).
    Classification needs none: its score is a mean of per-input values the output summaries hold."""

    type: str
    matches: list[Any] = field(default_factory=list)              # detection: ImageMatch per input
    counts: np.ndarray | None = None                              # dense: inter, union, ref, test px

    def values(self, weights: np.ndarray) -> tuple[float, ...] | None:
        """The task's score values (as deployer.quant.choice.score orders them) with input i counted
        weights[i] times; None when the metric is undefined (no fp32 box among those inputs)."""
        w = np.asarray(weights, np.int64)
        if self.type == "detection":
            from deployer.check.tasks.detection import map_from_matches

            res = map_from_matches([m for m, k in zip(self.matches, w) for _ in range(int(k))])
            return None if res.map50 is None else (res.map50, res.map or 0.0)
        if self.counts is None:
            return None
        inter, union = float(w @ self.counts[:, 0]), float(w @ self.counts[:, 1])
        return (inter / union if union else 1.0,)


def with_intervals(metrics: dict[str, Any] | None, parts: TaskParts | None, groups: list[str] | None = None,
                   draws: int = resample.DRAWS, seed: int = resample.SEED) -> dict[str, Any] | None:
    """`metrics` plus "intervals": 95 % cluster-bootstrap intervals of a detector's mAP@0.5 and
    mAP@0.5:0.95, or a dense map's mask IoU, over the eval photos (eval.group's groups, else the
    inputs), and their lower ends as `<metric>_low` for gates (INTERVAL_GATES). Classification
    already carries its agreement intervals (Wilson, grouped). The metrics are recomputed from
    per-input pieces, so the draws cost no inference."""
    if not metrics or parts is None or "intervals" in metrics:
        return metrics
    names = ("map50", "map50_95") if parts.type == "detection" else ("mask_iou",)
    if metrics.get(names[0]) is None:
        return metrics
    n = len(parts.matches) if parts.type == "detection" else len(parts.counts)   # type: ignore[arg-type]
    u = resample.units(groups, n)
    rows = [r for w in resample.bootstrap_weights(u, draws, seed) if (r := parts.values(w)) is not None]
    if not rows:
        return metrics
    intervals: dict[str, Any] = {}
    lows: dict[str, float] = {}
    for k, name in enumerate(names):
        lo, hi = resample.percentile_interval([r[k] for r in rows])
        intervals[name] = [round(lo, 4), round(hi, 4)]
        lows[f"{name}_low"] = lo
    intervals.update(draws=len(rows), over=u.count, unit=u.describe())
    return {**metrics, **lows, "intervals": intervals}


def check_task_outputs(spec: TaskSpec, references: list[dict[str, np.ndarray]], where: str = "task", *,
                       dense_range: bool = True) -> str:
    """The output blob the task judges, after checking fp32's outputs fit the task; else one line
    naming the task field (`where`: the profile's location of `task`).

    Called on the fp32 reference outputs before any calibration work, so a detection task on a
    model without a YOLOv8 head, or a dense threshold no fp32 value reaches, fails at once instead
    of as an internal error (or a meaningless mask IoU) minutes later. `dense_range=False` skips the
    threshold check: a subset of the eval inputs (mixed precision's probes, resampling) may hold no
    foreground at all, and its mask IoU is then None by design."""
    blob = spec.output or next(iter(references[0]))
    if blob not in references[0]:
        raise DeployerError(f"{where}.output: the model has no output {blob!r}",
                            hint=f"outputs: {', '.join(references[0])}")
    shape = tuple(np.asarray(references[0][blob]).shape)
    if spec.type == "detection":
        dims = [d for d in shape if d != 1] if len(shape) > 2 else list(shape)
        rows = 4 + spec.num_classes if spec.num_classes is not None else None
        fits = len(dims) == 2 and min(dims) >= 5 and (rows is None or rows in dims)
        if not fits:
            want = f"{rows} x anchors (4 box rows + {spec.num_classes} classes)" if rows else "(4 + classes) x anchors"
            field = "num_classes" if rows is not None and len(dims) == 2 and min(dims) >= 5 else "output"
            raise DeployerError(f"{where}.{field}: output {blob!r} has shape {list(shape)}, "
                                f"not a YOLOv8 head of {want}",
                                hint="set task.output to the detection head and task.num_classes to its class count")
    if spec.type == "dense" and dense_range:
        top = max(float(np.max(r[blob])) if np.asarray(r[blob]).size else -np.inf for r in references)
        if not top > spec.threshold:
            raise DeployerError(f"{where}.threshold: fp32's output {blob!r} never exceeds {spec.threshold:g} on "
                                f"the {len(references)} eval inputs (its largest value is {top:.4g}), "
                                "so every mask is empty",
                                hint="set task.threshold inside the output's range (DBNet probability maps: 0.3)")
    return blob


def task_metrics(spec: TaskSpec, references: list[dict[str, np.ndarray]], tests: list[dict[str, np.ndarray]],
                 labels: list[int] | None = None, groups: list[str] | None = None) -> dict[str, Any]:
    """{metric: value, ..., "detail": {...}} for the spec's task over paired fp32/int8 outputs
    (`groups`: eval.group's key per input, for the agreement interval)."""
    return evaluate_task(spec, references, tests, labels, groups)[0]


def evaluate_task(spec: TaskSpec, references: list[dict[str, np.ndarray]], tests: list[dict[str, np.ndarray]],
                  labels: list[int] | None = None,
                  groups: list[str] | None = None) -> tuple[dict[str, Any], TaskParts | None]:
    """task_metrics and the per-input TaskParts they were summed from (None for classification)."""
    if not references:
        return {}, None
    blob = check_task_outputs(spec, references, dense_range=False)
    refs = [r[blob] for r in references]
    outs = [t[blob] for t in tests]
    if spec.type == "detection":
        from deployer.check.tasks.detection import decode_yolov8, map_from_matches, match_image

        ref_det = [decode_yolov8(r, spec.num_classes, conf=spec.conf, iou=spec.iou) for r in refs]
        # the test side keeps low-confidence boxes so the precision/recall curve is complete
        test_det = [decode_yolov8(t, spec.num_classes, conf=min(spec.conf, 0.001), iou=spec.iou) for t in outs]
        matches = [match_image(r, t) for r, t in zip(ref_det, test_det)]
        res = map_from_matches(matches)
        return ({"map50": res.map50, "map50_95": res.map, "detail": res.to_dict(spec.class_names or None)},
                TaskParts("detection", matches=matches))
    if spec.type == "dense":
        from deployer.check.tasks.dense import mask_counts, mask_result

        counts = mask_counts(refs, outs, spec.threshold)
        res = mask_result(counts, spec.threshold)
        return ({"mask_iou": res.mask_iou, "mask_iou_min": res.mask_iou_min, "detail": res.to_dict()},
                TaskParts("dense", counts=counts))
    from deployer.check.tasks.classification import classification

    res = classification(refs, outs, labels, groups)
    return ({"top1_agreement": res.top1_agreement, "top1_agreement_low": res.top1_interval[0],
             "top5_agreement": res.top5_agreement, "detail": res.to_dict()}, None)
