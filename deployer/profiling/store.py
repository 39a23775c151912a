"""Run history: every timed run in one SQLite file in the results folder (`history.sqlite`).

Why SQLite: a JSON file per run (results/<board>/<time>.json, still written) answers "what happened
in that run"; the questions people bring are across runs ("did last week's model get slower on this
board", "all runs of this sha256"), which need filtering without reading every file. One SQLite
file is atomic per transaction (nothing half-written on a crash), needs no server, and the
stdlib has it. Each row keeps everything needed to recompute and re-plot the run: board, model
sha256s, options, context, all samples, statistics and flags.
"""

from __future__ import annotations

import json
import math
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from deployer.errors import DeployerError

DB_NAME = "history.sqlite"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL,
    board TEXT NOT NULL,
    model_sha256 TEXT,          -- sha256 of the .bin (the weights)
    param_sha256 TEXT,
    kind TEXT NOT NULL,         -- run | sweep | parity
    sweep_id INTEGER,
    label TEXT,                 -- e.g. 'threads=2 precision=int8' in a sweep
    median_ms REAL,
    flags INTEGER NOT NULL DEFAULT 0,
    data TEXT NOT NULL          -- the full record (options, context, samples, stats, analysis, flags)
);
CREATE INDEX IF NOT EXISTS runs_board ON runs(board);
CREATE INDEX IF NOT EXISTS runs_model ON runs(model_sha256);
CREATE TABLE IF NOT EXISTS sweeps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL,
    board TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


def db_path(results_dir: Path | str) -> Path:
    return Path(results_dir) / DB_NAME


@dataclass
class RunRow:
    id: int
    started_at: str
    board: str
    model_sha256: str | None
    param_sha256: str | None
    kind: str
    sweep_id: int | None
    label: str | None
    median_ms: float | None
    flag_count: int
    data: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """The `deployer history --json` view of one run (without the samples)."""
        analysis = self.data.get("analysis") or {}
        setup = run_setup(self.data)
        return {"id": self.id, "started_at": self.started_at, "board": self.board, "kind": self.kind,
                "sweep_id": self.sweep_id, "label": self.label, "model_sha256": self.model_sha256,
                "param_sha256": self.param_sha256, "model": (self.data.get("model_files") or {}).get("bin", {}).get("path"),
                "median_ms": self.median_ms, "ci_ms": [analysis.get("ci_low_ms"), analysis.get("ci_high_ms")],
                "ci_level": analysis.get("ci_level"), "count": analysis.get("count"),
                "shape": None if setup.get("shape") is None else str(setup["shape"]), "options": setup,
                "flags": list(dict.fromkeys(f.get("kind") for f in self.data.get("flags") or []))}


# What a run measured, beyond the model files: two runs differing in any of these timed different
# work (a 48x48 input is not a faster 224x224 model), so `compare` names the difference and the
# run-to-run spread never pools them. ncnn's switches (the runner's `options`) change how the work
# is done; the input (shape, fill or a file), the blobs read and written, and the runtime (native
# or python, its ncnn version, a per-layer timing build) change what the time covers. Left out on
# purpose: duration, iterations, warm-up (how long, not what) and the random fill's seed (the same
# distribution of values; ncnn's kernels take as long on any of them).
SETUP_OPTIONS = ("threads", "powersave", "int8", "fp16", "winograd", "sgemm", "lightmode", "packing",
                 "shape", "fill", "input_blob", "output_blob", "layers")
SETUP_RUNTIME = {"runtime": "kind", "ncnn": "version", "build": "flavour"}
MODEL_NAMED = ("input_blob", "output_blob")   # names inside one .param: only comparable between runs of it


def run_setup(data: dict[str, Any]) -> dict[str, Any]:
    """The options of a run record that change what was measured (SETUP_OPTIONS, SETUP_RUNTIME), as
    recorded; a key the record lacks (older runs, fewer runner options) is left out, not guessed."""
    options = data.get("options") if isinstance(data.get("options"), dict) else {}
    out = {k: options[k] for k in SETUP_OPTIONS if k in options}
    if isinstance(out.get("shape"), list):
        out["shape"] = "x".join(str(d) for d in out["shape"])
    runtime = data.get("runtime") if isinstance(data.get("runtime"), dict) else {}
    out.update({name: runtime[key] for name, key in SETUP_RUNTIME.items() if runtime.get(key) is not None})
    return out


def setup_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """'shape 224x224x3 -> 48x48x3' for each setup key whose value differs (unknown: '?')."""
    return [f"{k} {_show(a.get(k))} -> {_show(b.get(k))}" for k in sorted(set(a) | set(b), key=_setup_order)
            if a.get(k) != b.get(k)]


def _setup_order(key: str) -> int:
    order = ("shape", "fill", "output_blob", "input_blob", *SETUP_RUNTIME, *SETUP_OPTIONS)
    return order.index(key) if key in order else len(order)


def _show(value: Any) -> str:
    return "?" if value is None else str(value)


_RUN_COLUMNS = ("id", "started_at", "board", "model_sha256", "param_sha256", "kind", "sweep_id", "label",
                "median_ms", "flags", "data")
# What the readers query; a read-only open checks these exist instead of creating them.
_READ_COLUMNS = {"runs": set(_RUN_COLUMNS), "sweeps": {"id", "data"}}


def _check_not_folder(path: Path) -> None:
    """A folder (or a FIFO, a device) at the database's path is bad input naming it; sqlite would
    say 'unable to open database file', and an existence check would take it for 'no history'."""
    if path.exists() and not path.is_file():
        what = "a folder" if path.is_dir() else "not a regular file"
        raise DeployerError(f"{path}: is {what}, not a run history database",
                            hint="move it away, or pass --results FOLDER where the runs were saved")


def _connect(results_dir: Path | str, create: bool) -> sqlite3.Connection:
    """Writers (`create=True`) make the folder and schema. Readers (history, compare, report) open
    the user's file read-only: they must never change it, not even by adding a missing table."""
    path = db_path(results_dir)
    if not create:
        con = _open_read(path)
        if con is None:
            raise DeployerError(f"{path}: no run history yet",
                                hint="every `deployer run` / `deployer profile` stores its runs there; "
                                     "pass --results FOLDER if they were saved elsewhere")
        return con
    _check_not_folder(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = sqlite3.connect(str(path), timeout=30.0)
        # One transaction: executescript alone commits each CREATE on its own, and a `history` run
        # while the first `run` creates the file saw `runs` without `sweeps` and called the file
        # "not a deployer history database" (move it away!). Readers now see no schema or all of it.
        con.executescript("BEGIN IMMEDIATE;" + _SCHEMA
                          + f"INSERT OR IGNORE INTO meta VALUES ('schema', '{SCHEMA_VERSION}'); COMMIT;")
    except sqlite3.DatabaseError as err:
        raise DeployerError(f"{path}: not a deployer history database ({err})",
                            hint="move it away; a new one is created on the next run") from None
    return con


def _open_read(path: Path) -> sqlite3.Connection | None:
    """`path` opened read-only (sqlite `mode=ro`) after checking, by reading only, that it has the
    tables and columns the readers query; None when there is no history yet: no file, or a database
    without any table (a writer has just created the file and not yet its schema)."""
    _check_not_folder(path)
    if not path.exists():
        return None
    con = None
    try:
        con = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=30.0)
        tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            con.close()
            return None
        for table, needed in _READ_COLUMNS.items():
            have = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
            missing = sorted(needed - have)
            if missing:
                raise sqlite3.DatabaseError(f"no table {table}" if not have
                                            else f"table {table} has no column {', '.join(missing)}")
    except sqlite3.DatabaseError as err:
        if con is not None:
            con.close()
        raise DeployerError(f"{path}: not a deployer history database ({err})",
                            hint="move it away; a new one is created on the next run") from None
    return con


def record_run(record: dict[str, Any], results_dir: Path | str, *, kind: str = "run",
               sweep_id: int | None = None, label: str | None = None) -> int:
    """Store one run (the dict `RunResult.to_json()` returns, plus profiling keys); returns its id."""
    model = record.get("model_files") or {}
    analysis = record.get("analysis") or {}
    median = analysis.get("median_ms", record.get("median_ms"))
    data = {k: v for k, v in record.items() if k not in ("history_id",)}
    with closing(_connect(results_dir, create=True)) as con, con:
        cur = con.execute(
            "INSERT INTO runs (started_at, board, model_sha256, param_sha256, kind, sweep_id, label, median_ms,"
            " flags, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.get("started_at") or "", record.get("board") or "", (model.get("bin") or {}).get("sha256"),
             (model.get("param") or {}).get("sha256"), kind, sweep_id, label, median,
             len(record.get("flags") or []), json.dumps(data, default=str)))
        return int(cur.lastrowid)


def record_sweep(summary: dict[str, Any], results_dir: Path | str) -> int:
    with closing(_connect(results_dir, create=True)) as con, con:
        cur = con.execute("INSERT INTO sweeps (started_at, board, data) VALUES (?, ?, ?)",
                          (summary.get("started_at") or "", summary.get("board") or "",
                           json.dumps(summary, default=str)))
        return int(cur.lastrowid)


def update_sweep(sweep_id: int, summary: dict[str, Any], results_dir: Path | str) -> None:
    with closing(_connect(results_dir, create=True)) as con, con:
        con.execute("UPDATE sweeps SET data = ? WHERE id = ?", (json.dumps(summary, default=str), sweep_id))


# The parts of a run's record that history, compare and report index into (`.get`, iteration).
_RUN_SHAPES: dict[str, type] = {"analysis": dict, "model_files": dict, "options": dict, "context": dict,
                                "layers": dict, "flags": list, "samples_ms": list}


def _record_data(text: Any, what: str, results_dir: Path | str, shapes: dict[str, type] | None = None) -> dict[str, Any]:
    """A row's `data` column as the dict it was stored as. The file is the user's (copied between
    machines, edited, restored from a half-synced backup): a row that is not a JSON object, or whose
    top-level parts (`shapes`) have the wrong type, is bad input naming the row, not a crash in
    whatever reads it next."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as err:
        data, why = None, f"not JSON ({err})"
    else:
        why = f"a JSON {type(data).__name__}, not an object"
        if isinstance(data, dict):
            wrong = [f"{key} is a {type(data[key]).__name__}, not a {kind.__name__}"
                     for key, kind in (shapes or {}).items()
                     if data.get(key) is not None and not isinstance(data[key], kind)]
            if wrong:
                data, why = None, "an object whose " + ", ".join(wrong)
    if not isinstance(data, dict):
        raise DeployerError(f"{db_path(results_dir)}: {what} is damaged: its data is {why}",
                            hint=f"delete that row (sqlite3 {db_path(results_dir)}) or move the file away")
    return data


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _run_problems(data: dict[str, Any]) -> list[str]:
    """What the readers (compare, report, sweeps) take from inside a run record, checked like the top level."""
    out = []
    if not all(_number(x) for x in data.get("samples_ms") or []):
        out.append("samples_ms holds something that is not a finite number")
    warm = (data.get("analysis") or {}).get("warmup_count")
    if warm is not None and not (_number(warm) and int(warm) == warm and warm >= 0):
        out.append(f"analysis.warmup_count is {warm!r}, not a count")
    if not all(isinstance(f, dict) for f in data.get("flags") or []):
        out.append("flags holds something that is not an object")
    return out


def _row(r: tuple, results_dir: Path | str) -> RunRow:
    data = _record_data(r[10], f"run {r[0]}", results_dir, _RUN_SHAPES)
    problems = _run_problems(data)
    if problems:
        raise DeployerError(f"{db_path(results_dir)}: run {r[0]} is damaged: its data is an object whose "
                            + ", ".join(problems),
                            hint=f"delete that row (sqlite3 {db_path(results_dir)}) or move the file away")
    return RunRow(id=r[0], started_at=r[1], board=r[2], model_sha256=r[3], param_sha256=r[4], kind=r[5],
                  sweep_id=r[6], label=r[7], median_ms=r[8], flag_count=r[9], data=data)


_COLS = ", ".join(_RUN_COLUMNS)


def list_runs(results_dir: Path | str, *, board: str | None = None, model: str | None = None,
              kind: str | None = None, limit: int | None = None) -> list[RunRow]:
    """Runs, oldest first. `model` matches a prefix of the .bin or .param sha256. No database yet
    means no runs yet (an empty list), not an error: scripts poll history before the first run."""
    where, args = [], []
    if board:
        where.append("board = ?")
        args.append(board)
    if model:
        m = model.lower()
        if not all(c in "0123456789abcdef" for c in m):
            raise DeployerError(f"--model {model!r}: not a sha256 (hex digits, a prefix is enough)")
        where.append("(model_sha256 LIKE ? OR param_sha256 LIKE ?)")
        args += [m + "%", m + "%"]
    if kind:
        where.append("kind = ?")
        args.append(kind)
    sql = f"SELECT {_COLS} FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
    con = _open_read(db_path(results_dir))
    if con is None:
        return []
    with closing(con):
        rows = [_row(r, results_dir) for r in con.execute(sql, args)]
    return rows[-limit:] if limit else rows


def no_runs_message(results_dir: Path | str, *, board: str | None = None, model: str | None = None) -> str:
    """One line for a `history` that found nothing, naming the folder it looked in (an empty table
    said nothing: run from another folder, or for a board without runs, it looked like no history)."""
    folder = Path(results_dir).resolve()
    con = _open_read(db_path(results_dir))
    if con is None:
        return (f"no stored runs in {folder} (no {DB_NAME} there); pass --results FOLDER if the runs were "
                "saved elsewhere")
    with closing(con):
        boards = [b for (b,) in con.execute("SELECT DISTINCT board FROM runs ORDER BY board")]
    what = " and ".join(x for x in (f"board {board}" if board else "", f"model {model}" if model else "") if x)
    if not boards:
        return f"no stored runs in {folder}"
    return (f"no stored runs of {what} in {folder}" if what else f"no stored runs in {folder}") + (
        f" (boards with runs: {', '.join(boards)})" if board and board not in boards else "")


def get_run(results_dir: Path | str, run_id: int) -> RunRow:
    with closing(_connect(results_dir, create=False)) as con:
        r = con.execute(f"SELECT {_COLS} FROM runs WHERE id = ?", (int(run_id),)).fetchone()
    if r is None:
        raise DeployerError(f"run {run_id}: not in {db_path(results_dir)}",
                            hint="`deployer history` lists the stored runs and their ids")
    return _row(r, results_dir)


def get_sweep(results_dir: Path | str, sweep_id: int) -> dict[str, Any]:
    with closing(_connect(results_dir, create=False)) as con:
        r = con.execute("SELECT id, data FROM sweeps WHERE id = ?", (int(sweep_id),)).fetchone()
    if r is None:
        raise DeployerError(f"sweep {sweep_id}: not in {db_path(results_dir)}")
    data = _record_data(r[1], f"sweep {r[0]}", results_dir)
    data["sweep_id"] = r[0]
    return data


def iter_sweeps(results_dir: Path | str) -> Iterator[dict[str, Any]]:
    with closing(_connect(results_dir, create=False)) as con:
        rows = list(con.execute("SELECT id, data FROM sweeps ORDER BY id"))
    for sid, data in rows:
        d = _record_data(data, f"sweep {sid}", results_dir)
        d["sweep_id"] = sid
        yield d
