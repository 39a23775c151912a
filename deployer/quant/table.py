"""ncnn calibration tables: written byte for byte like ncnn2table, read like ncnn2int8 (but loudly).

The table is the hand-off between calibration and conversion, and users edit it by hand (commenting
lines is ncnn's documented mixed-precision switch). So the writer must produce exactly what
ncnn2table produces (`%f ` per value, trailing space, `\\n`), and the reader must follow
ncnn2int8's rules (a key containing `_param_` is a weight entry, otherwise an activation entry) while
refusing the silent traps ncnn2int8 falls into: a blank line in the middle truncates ncnn's read, a
non-number parses as 0 there.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from deployer import fsutil
from deployer.errors import DeployerError

_MAX_KEY_CHARS = 255  # ncnn2int8 reads the key with %255s


class TableWarning(UserWarning):
    """A table ncnn2int8 would read differently from what its author probably meant."""


@dataclass
class CalibrationTable:
    """Weight scales keyed `<layer>_param_<i>` and activation scales keyed `<layer>`, in file order.

    `weights` maps the full key (e.g. `conv1_param_0`) to its per-channel scales; `activations`
    maps the consuming layer's name to its per-tensor input scale(s) (ncnn writes exactly one).
    """

    weights: dict[str, list[float]] = field(default_factory=dict)
    activations: dict[str, list[float]] = field(default_factory=dict)
    # Key order as written / read, so a round trip keeps the file's order.
    order: list[str] = field(default_factory=list)

    def set_weight(self, layer: str, scales: list[float], index: int = 0) -> None:
        key = f"{layer}_param_{index}"
        if key not in self.weights and key not in self.order:
            self.order.append(key)
        self.weights[key] = [float(s) for s in scales]

    def set_activation(self, layer: str, scales: list[float] | float) -> None:
        values = [float(scales)] if isinstance(scales, (int, float)) else [float(s) for s in scales]
        if layer not in self.activations and layer not in self.order:
            self.order.append(layer)
        self.activations[layer] = values

    def weight_scales(self, layer: str, index: int = 0) -> list[float] | None:
        return self.weights.get(f"{layer}_param_{index}")

    def activation_scale(self, layer: str) -> float | None:
        values = self.activations.get(layer)
        return values[0] if values else None


def format_value(v: float) -> str:
    """C's `%f`: six decimals; inf/nan spelled as glibc prints them."""
    if math.isnan(v):
        return "-nan" if math.copysign(1.0, v) < 0 else "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.6f}"


def format_table(table: CalibrationTable) -> str:
    """The exact text ncnn2table writes: `key v0 v1 ... \\n`, each value `%f ` with its space."""
    lines = []
    for key in table.order:
        values = table.weights[key] if "_param_" in key else table.activations[key]
        lines.append(key + " " + "".join(format_value(v) + " " for v in values) + "\n")
    return "".join(lines)


def write_table(path: str | os.PathLike, table: CalibrationTable) -> None:
    for key in table.order:
        if not key or any(ch.isspace() for ch in key):
            raise DeployerError(f"{path}: table key {key!r} is empty or contains whitespace; "
                                "ncnn2int8 splits lines on spaces, rename the layer")
        if len(key) > _MAX_KEY_CHARS:
            raise DeployerError(f"{path}: table key {key[:40]}... is longer than ncnn's "
                                f"{_MAX_KEY_CHARS}-character limit; shorten the layer name")
    fsutil.write_bytes(path, format_table(table).encode("utf-8"))


def parse_table(text: str, source: str = "<table>", *, strict_blank: bool = True) -> CalibrationTable:
    """Read like ncnn2int8's read_int8scale_table, but report what it would silently get wrong.

    A blank line followed by more entries is an error when `strict_blank` (ncnn2int8 stops reading
    there and drops every later line); otherwise it warns and keeps reading. A value that is not a
    number is always an error (ncnn's `%f` would leave garbage). Duplicate keys: the last one wins in
    ncnn (std::map assignment), so we keep the last and warn.
    """
    table = CalibrationTable()
    lines = text.split("\n")
    blank_at: int | None = None
    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r")
        tokens = line.split(" ")
        tokens = [t for t in tokens if t]
        if not tokens:
            if blank_at is None and lineno < len(lines):
                blank_at = lineno
            continue
        if blank_at is not None:
            msg = (f"{source}: line {blank_at} is blank, so ncnn2int8 stops reading there and ignores "
                   f"line {lineno} ({tokens[0]}) and everything after; delete the blank line")
            if strict_blank:
                raise DeployerError(msg)
            warnings.warn(msg, TableWarning, stacklevel=2)
            blank_at = None
        key = tokens[0]
        if len(key) > _MAX_KEY_CHARS:
            raise DeployerError(f"{source}: line {lineno}: key longer than {_MAX_KEY_CHARS} characters")
        values = []
        for tok in tokens[1:]:
            try:
                value = float(tok)
            except ValueError:
                raise DeployerError(f"{source}: line {lineno} ({key}): {tok!r} is not a number") from None
            # ncnn2table writes positive multipliers (inf for an all-zero weight channel, refused
            # where it is used); NaN or a negative scale is never a calibration result
            if value != value or value < 0:
                raise DeployerError(f"{source}: line {lineno} ({key}): scale {tok} is not a positive number",
                                    hint="regenerate the table with ncnn2table")
            values.append(value)
        if not values:
            raise DeployerError(f"{source}: line {lineno} ({key}): no scale values after the key")
        if key in table.weights or key in table.activations:
            warnings.warn(f"{source}: line {lineno}: duplicate key {key}; the last one wins",
                          TableWarning, stacklevel=2)
        if "_param_" in key:
            table.weights[key] = values
        else:
            table.activations[key] = values
        if key not in table.order:
            table.order.append(key)
    return table


def read_table(path: str | os.PathLike, *, strict_blank: bool = True) -> CalibrationTable:
    path = Path(path)
    try:
        text = fsutil.read_input(path, "calibration table").decode("utf-8")
    except UnicodeDecodeError:
        raise DeployerError(f"{path}: not a text calibration table") from None
    return parse_table(text, source=str(path), strict_blank=strict_blank)
