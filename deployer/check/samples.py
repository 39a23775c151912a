"""Folders and list files -> samples (one tensor per model input), shared by `quantize` and `check`.

Method choice, mixed precision and the cross-check must see the tensors the board will see, so each
file goes through deployer.inputs.tensor with the profile's `InputSpec`, as calibration does; this
module only finds the files, pairs them across inputs and names the Input blobs they feed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from deployer.errors import DeployerError
from deployer.inputs.spec import InputSpec
from deployer.inputs.tensor import load_array

Sample = dict[str, np.ndarray]          # input blob name -> CHW float32
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pnm", ".tif", ".tiff", ".webp")
INPUT_SUFFIXES = IMAGE_SUFFIXES + (".npy",)


def list_inputs(path: str | os.PathLike) -> list[Path]:
    """A folder (its images/.npy files, sorted) or a list file (one path a line, ncnn2table style).

    Relative paths in a list file are looked up next to the list file first, then in the current
    directory. Every named file must exist: a typo should not silently shrink the calibration set.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in INPUT_SUFFIXES)
        if not files:
            raise DeployerError(f"{path}: folder has no images or .npy files",
                                hint=f"supported: {', '.join(INPUT_SUFFIXES)}")
        return files
    if not path.is_file():
        if path.exists():            # /dev/zero, a FIFO...: say what it is
            from deployer.fsutil import check_input

            check_input(path, "list file")
        raise DeployerError(f"{path}: no such list file or folder")
    from deployer.fsutil import read_input_text

    text = read_input_text(path, "list file", limit=64 << 20)
    files = []
    for lineno, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        p = Path(os.path.expanduser(entry))
        if not p.is_absolute():
            p = path.parent / p if (path.parent / p).exists() else Path.cwd() / p
        if not p.is_file():
            if p.exists():           # a folder, FIFO or device: say which, not "not found"
                from deployer.fsutil import check_input

                try:
                    check_input(p, "input file")
                except DeployerError as err:
                    raise DeployerError(f"{path}: line {lineno}: {err}") from None
            raise DeployerError(f"{path}: line {lineno}: file not found: {entry}")
        files.append(p)
    if not files:
        raise DeployerError(f"{path}: list file names no files", hint="one image path per line")
    return files


GROUP_SECONDS = 5.0     # eval.group on every eval file name; a sane pattern needs milliseconds


def group_keys(files: list[Path], pattern: str | None, where: str = "eval.group",
               require_match: bool = False) -> list[str] | None:
    """One group key per input file for grouped agreement intervals (profile `eval.group`): the
    regular expression's first capture group (else its whole match) searched in the file's name,
    e.g. `^(imagenet_\\d+)_` puts imagenet_07_flip.png and imagenet_07_full.png in one group. A
    file the pattern does not match is a group of its own, so a partial match never merges
    unrelated inputs. None when there is no pattern.

    `require_match`: a pattern that matches none of the names is a typo, not a grouping (it used to
    pass silently, the report claiming intervals over "N groups of eval.group"). A pattern that
    backtracks catastrophically (`(a+)+`) is stopped after GROUP_SECONDS instead of hanging."""
    if not pattern:
        return None
    rx = re.compile(pattern)
    keys = []
    with _time_limit(GROUP_SECONDS, f"{where}: '{pattern}' takes over {GROUP_SECONDS:g} s on the eval file names",
                     "nested repetition like (a+)+ backtracks exponentially; simplify the pattern"):
        for f in files:
            m = rx.search(Path(f).name)
            if m is None:
                keys.append(f"={Path(f).name}")
            else:
                keys.append(m.group(1) if rx.groups and m.group(1) is not None else m.group(0))
    if require_match and matches_none(keys):
        raise DeployerError(f"{where}: '{pattern}' matches none of the {len(files)} eval file names "
                            f"(e.g. {Path(files[0]).name})",
                            hint="the first capture group names the photo a view belongs to, e.g. '^(photo\\d+)_'")
    return keys


def matches_none(keys: list[str]) -> bool:
    """group_keys matched no file name: every input is a group of its own ("=name" keys)."""
    return bool(keys) and all(k.startswith("=") for k in keys)


@contextlib.contextmanager
def _time_limit(seconds: float, message: str, hint: str) -> Iterator[None]:
    """Raise DeployerError(message) if the block runs longer than `seconds` (main thread only:
    SIGALRM; Python's `re` checks for signals while it backtracks, so the match is interrupted)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expired(signum: int, frame: Any) -> None:
        raise DeployerError(message, hint=hint)

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def input_names(specs: list[InputSpec], model_inputs: list[str], where: str) -> list[str]:
    """Profile input names, or the model's Input layers in order; counts must agree."""
    if len(specs) != len(model_inputs):
        raise DeployerError(f"{where}: the profile describes {len(specs)} input(s) but the model has "
                            f"{len(model_inputs)} ({', '.join(model_inputs)})", hint="one inputs entry per Input layer")
    names = []
    for spec, default in zip(specs, model_inputs):
        name = spec.name or default
        if name not in model_inputs:
            raise DeployerError(f"{where}: input name {name!r} is not an Input blob of the model",
                                hint=f"inputs: {', '.join(model_inputs)}")
        names.append(name)
    return names


def load_samples(file_lists: list[list[Path]], specs: list[InputSpec], names: list[str],
                 progress: Callable[[int, int], None] | None = None) -> list[Sample]:
    """file_lists[i][k] feeds input i of sample k (ncnn2table pairs list entries by position)."""
    count = len(file_lists[0])
    for i, files in enumerate(file_lists[1:], 1):
        if len(files) != count:
            raise DeployerError(f"input {names[i]}: {len(files)} files but input {names[0]} has {count}",
                                hint="multi-input lists must have the same length, paired by line")
    samples = []
    for k in range(count):
        samples.append({name: load_array(files[k], spec) for name, spec, files in zip(names, specs, file_lists)})
        if progress:
            progress(k + 1, count)
    return samples
