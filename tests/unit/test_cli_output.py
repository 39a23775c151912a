"""The CLI's promises that need no board: exit codes that mean one thing, one-line errors with no
traceback, internal errors logged, plain help, and output that reads well off a terminal."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from deployer.cli import app
from deployer.cli.common import handle_errors, run_app
from deployer.cli.render import human

ROOT = Path(__file__).resolve().parents[2]
ESC = "\x1b"


def cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`deployer ...` exactly as a CI log sees it: stdout and stderr are pipes, not terminals."""
    base = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "COLUMNS")}
    return subprocess.run([sys.executable, "-c", "from deployer.cli import main; main()", *args],
                          capture_output=True, text=True, env={**base, **(env or {})}, timeout=timeout, cwd=ROOT)


def _commands(typer_app: typer.Typer, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    found = []
    for info in typer_app.registered_commands:
        name = info.name or info.callback.__name__.replace("_", "-")
        found.append(((*prefix, name), info.callback))
    for group in typer_app.registered_groups:
        found += _commands(group.typer_instance, (*prefix, group.name))
    return found


def test_every_command_goes_through_handle_errors() -> None:
    commands = _commands(app)
    assert len(commands) >= 12
    unwrapped = [" ".join(path) for path, cb in commands if not getattr(cb, "__deployer_handles_errors__", False)]
    assert unwrapped == []


@pytest.mark.parametrize("args", [("quantize", "--bogus"), ("run", "sim-1", "--iterations", "many"), ("nosuch",),
                                  ("ncnn2int8", "a.param")])
def test_usage_errors_are_one_line_exit_2(args) -> None:
    res = cli(*args)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: deployer"), res.stderr
    assert "--help)" in lines[0] and "Traceback" not in res.stderr and res.stdout == ""


def test_help_is_plain_and_flags_have_no_type(capsys) -> None:
    paths = [p for p, _ in _commands(app)]
    for path in paths:  # in-process: the same click help a pipe gets, without 20 interpreter starts
        assert run_app(app, [*path, "--help"]) == 0, path
        text = capsys.readouterr().out
        assert text.startswith("Usage: deployer " + " ".join(path)), path
        assert "<bool>" not in text and ESC not in text and "╭" not in text, path
        assert not re.search(r"<(str|int|float|path)>", text), (path, text)   # TEXT, N, NUM, PATH instead
    quantize = cli("quantize", "--help").stdout
    assert re.search(r"--method TEXT\s+auto .* one of kl, aciq, eq, maxabs, percentile, mse", " ".join(quantize.split()))
    assert "--mixed / --no-mixed" in quantize
    assert re.search(r"^\s+--json\s+print the JSON report on stdout", quantize, re.M)


def test_bad_input_is_one_line_exit_2_even_when_long(tmp_path: Path) -> None:
    missing = tmp_path / ("a-very-long-folder-name-" * 8) / "model.param"
    res = cli("quantize", "--param", str(missing), "--bin", str(missing.with_suffix(".bin")), "--json",
              env={"COLUMNS": "40"})
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: --param") and str(missing) in res.stderr
    assert json.loads(res.stdout) == {"ok": False, "error": res.stderr[len("error: "):].strip(), "exit_code": 2}


def test_quantize_empty_out_is_refused_not_the_current_folder(tmp_path: Path) -> None:
    """typer reads `--out ""` as Path("") == "." : quantize wrote its files into the current folder."""
    param, binf = tmp_path / "m.param", tmp_path / "m.bin"
    param.write_text("7767517\n1 1\nInput in0 0 1 in0 0=4 1=4 2=3\n")
    binf.write_bytes(b"")
    res = cli("quantize", "--param", str(param), "--bin", str(binf), "--shape", "4,4", "--pixel", "rgb", "--mean", "0,0,0",
              "--norm", "1,1,1", "--calib", str(param), "--out", "")
    assert res.returncode == 2 and "Invalid value for '--out' / '-o': empty; give a path" in res.stderr, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.param"]


def test_deploy_empty_model_is_refused_not_the_current_folder() -> None:
    """`--model ""` (an unset $MODEL) was Path(".") to typer: deploy shipped whatever model the current folder held."""
    for args in (("deploy", "pi@10.0.0.1", "--plan", "--model", ""), ("rollout", "pi@10.0.0.1", "--plan", "--profile", " "),
                 ("rollback", "pi@10.0.0.1", "--state", ""), ("sim", "up", "--targets-dir", ""),
                 ("sim", "status", "--targets-dir", "")):
        res = cli(*args, "--persist", "0") if args[0] != "sim" else cli(*args)
        flag = next(a for a in args if a.startswith("--") and a != "--plan")
        assert res.returncode == 2 and f"Invalid value for '{flag}': empty; give a path" in res.stderr, res.stderr
        assert res.stderr.count("\n") == 1, res.stderr


@pytest.mark.parametrize("args", [("history",), ("compare", "1", "2"), ("report", "--out", "r.html"),
                                  ("run", "b", "--param", "m.param", "--bin", "m.bin")])
def test_empty_results_folder_is_refused_not_the_current_folder(args) -> None:
    """`--results ""` (an unset $VAR) was "." to typer: run wrote history.sqlite and a board folder there."""
    res = cli(*args, "--results", "")
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "Invalid value for '--results': empty; give a path" in res.stderr


def _in_process(exc: BaseException, monkeypatch, tmp_path: Path, capsys) -> tuple[int, list[str]]:
    monkeypatch.setenv("DEPLOYER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "argv", ["deployer", "explode", "--now"])
    sub = typer.Typer(rich_markup_mode=None)

    @sub.command()
    @handle_errors
    def explode(json_output: bool = typer.Option(False, "--json")) -> None:
        raise exc

    @sub.command()
    @handle_errors
    def other() -> None:
        pass

    code = run_app(sub, ["explode"])
    return code, capsys.readouterr().err.splitlines()


def test_an_internal_error_is_one_line_exit_4_with_a_log(monkeypatch, tmp_path: Path, capsys) -> None:
    try:
        {}["missing"]
    except KeyError as err:
        exc = err
    code, lines = _in_process(exc, monkeypatch, tmp_path, capsys)
    assert code == 4
    assert len(lines) == 1
    m = re.fullmatch(r"internal error: KeyError: 'missing' \(details in (.+)\)", lines[0])
    assert m, lines
    log = Path(m.group(1))
    assert log.parent == tmp_path / "cache" / "logs" and log.name.endswith("-explode.log")
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "KeyError: 'missing'" in text


@pytest.mark.parametrize("exc, code, line", [
    (FileNotFoundError(2, "No such file or directory", "/nope/x.table"), 2,
     "error: /nope/x.table: No such file or directory (check the path)"),
    (OSError(28, "No space left on device", "/full/out.bin"), 2,
     "error: /full/out.bin: No space left on device (free some space and retry)"),
    (ConnectionResetError(104, "Connection reset by peer"), 3,
     "error: connection failed: [Errno 104] Connection reset by peer"),
    (KeyboardInterrupt(), 130, "interrupted"),
])
def test_os_errors_and_ctrl_c_map_to_their_codes(exc, code, line, monkeypatch, tmp_path: Path, capsys) -> None:
    got, lines = _in_process(exc, monkeypatch, tmp_path, capsys)
    assert (got, lines) == (code, [line])
    assert not (tmp_path / "cache" / "logs").exists()  # not an internal error: no crash log


_TERM_DURING_VERIFY = """
import os, signal, sys, time
import deployer.ncnn.verify as verify
def verify_int8(*args, **kwargs):   # the int8 files are staged: SIGTERM now, as kill/timeout(1)/CI would
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
verify.verify_int8 = verify_int8
sys.argv = ["deployer", *sys.argv[1:]]
from deployer.cli import main
main()
"""


def test_sigterm_cleans_up_like_ctrl_c(tmp_path: Path) -> None:
    """SIGTERM used to kill the process on the spot: ncnn2int8 left its 3.6 MB `.o.bin.tmp-*` and
    `.o.param.tmp-*` staging files behind (measured on MobileNetV2). Now it is Ctrl-C's path: staged
    files removed, one line, exit 128 + 15."""
    from deployer.quant.ncnn2table import parse_args, run
    from deployer.quant.table import write_table
    from tests.fixtures.calib import tiny_model, write_images

    model = tiny_model(tmp_path)
    table = tmp_path / "t.table"
    res = run(parse_args([str(model.param), str(model.bin), str(write_images(tmp_path / "imgs", 2)), str(table),
                          "shape=[16,16]", "mean=[0,0,0]", "norm=[1,1,1]", "pixel=BGR", "method=maxabs"]))
    write_table(table, res.table)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", _TERM_DURING_VERIFY, "ncnn2int8", str(model.param), str(model.bin),
                           str(out / "o.param"), str(out / "o.bin"), str(table)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.splitlines()[-1] == "error: terminated by SIGTERM" and "Traceback" not in proc.stderr
    assert list(out.iterdir()) == []


def test_ignored_hangup_stays_ignored() -> None:
    """`nohup deployer ...`: a SIGHUP the parent ignores must not start ending the command."""
    code = ("import signal; signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
            "from deployer.cli.common import install_signal_handlers; install_signal_handlers()\n"
            "assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN\n"
            "assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_IGN, signal.SIG_DFL)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_multi_line_messages_become_one_line(monkeypatch, tmp_path: Path, capsys) -> None:
    from deployer.errors import RemoteError

    got, lines = _in_process(RemoteError("sim-1: runner died\nline two\n  line three"), monkeypatch, tmp_path, capsys)
    assert (got, lines) == (3, ["error: sim-1: runner died | line two | line three"])


def test_human_values_are_not_reprs() -> None:
    assert human(None) == "-" and human(True) == "yes" and human([]) == "-"
    assert human(["neon", "asimd"]) == "neon, asimd"
    assert human({"total_mb": 3906, "free_mb": 1200.5}) == "total_mb=3906, free_mb=1200.5"
    assert human(Path("/x/y")) == "/x/y" and human(0.1 + 0.2) == "0.3"
    assert "[" not in human([["a", 1], {"k": None}]) and "'" not in human(["a"])


def test_tables_and_messages_are_full_width_in_a_pipe() -> None:
    code = ("from deployer.cli.render import out, kv_table, table, warn\n"
            "out.print(kv_table('sim-1', {'cpu_flags': ['f%03d' % i for i in range(60)], 'python': None}))\n"
            "out.print(table('boards', ['board', 'address'], [['board-with-a-long-name-' * 3, '10.200.123.2']]))\n"
            "warn('x' * 300 + ' [not markup]')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "COLUMNS")})
    assert res.returncode == 0, res.stderr
    assert ESC not in res.stdout + res.stderr and "…" not in res.stdout
    assert ", ".join(f"f{i:03d}" for i in range(60)) in res.stdout and "10.200.123.2" in res.stdout
    assert "board-with-a-long-name-" * 3 in res.stdout and "'" not in res.stdout
    assert res.stderr == "warning: " + "x" * 300 + " [not markup]\n"


def test_a_table_title_is_one_line_in_a_pipe() -> None:
    """rich wraps a table's title to the table's width, even at PLAIN_WIDTH: quantize's methods table
    began with its title cut into three lines of trailing blanks in every CI log."""
    title = ("methods on 120 eval inputs (eval.images) vs fp32; chosen on cosine+top1_clear (within 0.0001 "
             "is a tie), then the smaller .bin")
    code = ("from rich.table import Table\n"
            "from deployer.cli.render import console\n"
            f"t = Table(title={title!r} + ' [bold]x[/]', title_justify='left')\n"
            "t.add_column('method'); t.add_row('kl')\n"
            "console.print(t)\n")
    lines = _off_a_terminal(code).stderr.splitlines()
    assert lines[0] == title + " x" and len(lines) == 6, lines


def test_push_says_a_native_runner_it_just_sent_was_uploaded() -> None:
    """A first push of the native runtime said 'runtime .../deployer-runner-... (already there);
    3 file(s) uploaded': only an unpacked wheel counted as work done."""
    code = ("import sys, types\n"
            "import deployer.cli.boards as boards, deployer.remote.session as session\n"
            "from deployer.native.select import NativeInstall\n"
            "boards._inventory = lambda targets, target=None: None\n"
            "boards._boards = lambda inv, target: []\n"
            "def push_boards(boards, opts, **kw):\n"
            "    return {name: session.PushReport(NativeInstall('bin/runner', '1.0', 'runner', uploaded=sent), 'bin/runner',\n"
            "                                     {'param': 'm.param', 'bin': 'm.bin'}, ['bin/runner'] * sent)\n"
            "            for name, sent in (('pi-a', True), ('pi-b', False))}\n"
            "session.push_boards = push_boards\n"
            "sys.argv = ['deployer', 'push', 'g', '--param', 'm.param', '--bin', 'm.bin']\n"
            "from deployer.cli import main\n"
            "main()\n")
    assert _off_a_terminal(code).stderr.splitlines() == [
        "pi-a: runtime bin/runner (uploaded); 1 file(s) uploaded, 2 unchanged",
        "pi-b: runtime bin/runner (already there); 0 file(s) uploaded, 3 unchanged"]


def test_upload_bars_on_a_terminal_read_in_megabytes() -> None:
    """The bars showed rich's M/N column: '1310720/3614776' for an upload the log calls '1.3 MB/3.6 MB'."""
    import io

    from rich.console import Console

    from deployer.cli.progress import Progress

    screen = io.StringIO()
    term = Console(file=screen, force_terminal=True, width=120, color_system=None)
    with Progress("push", console=term) as p:
        p.transfer("/home/pi/.deployer/models/m.bin", 1_310_720, 3_614_776)
        p.update("collect", 3, 44)
        p._bar.refresh()
    drawn = screen.getvalue()
    assert "1.3 MB/3.6 MB" in drawn and "1310720" not in drawn and "3/44" in drawn


def _off_a_terminal(code: str, seconds: str = "0.5") -> subprocess.CompletedProcess:
    """Python `code` with stdout and stderr in pipes (a CI log); no escape codes or redraws in them."""
    env = {k: v for k, v in os.environ.items() if k != "FORCE_COLOR"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**env, "DEPLOYER_PROGRESS_SECONDS": seconds})
    assert ESC not in res.stdout + res.stderr and "\r" not in res.stderr
    return res


def _progress(code: str, seconds: str = "0.5") -> list[str]:
    return _off_a_terminal("import time\nfrom deployer.cli.progress import Progress\n" + code, seconds).stderr.splitlines()


def test_progress_off_a_terminal_is_periodic_plain_lines() -> None:
    lines = _progress("with Progress('quantize') as p:\n"
                      "    for i in range(0, 45):\n"
                      "        p.update('collect', i, 44)\n"
                      "    p.update('score', 0, 5)\n"
                      "    time.sleep(1.8)\n"          # a silent library: the heartbeat speaks
                      "    p.update('score', 5, 5)\n"
                      "    p.transfer('/home/pi/.deployer/m.bin', 2_500_000, 5_000_000)\n")
    # quiet for the first 0.5 s; then the current phase, repeated while nothing happens; then each new
    # phase once and each end once
    assert lines[0] == "quantize: score 0/5 (0%)"
    repeats = lines[1:-2]
    assert 1 <= len(repeats) <= 3 and all(re.fullmatch(r"quantize: score 0/5 \(0%\) \d s", ln) for ln in repeats), lines
    assert re.fullmatch(r"quantize: score 5/5 \(100%\) \d s", lines[-2]), lines
    assert lines[-1] == "quantize: upload m.bin 2.5 MB/5.0 MB (50%)"


def test_progress_off_a_terminal_goes_on_between_phases() -> None:
    """The heartbeat fell silent once a phase finished: `ncnn2table method=eq` printed 'collect 44/44
    (100%)' and then nothing for 22 s of library work before 'eq search 1/53'."""
    lines = _progress("with Progress('ncnn2table') as p:\n"
                      "    time.sleep(0.6)\n"
                      "    p.update('collect', 44, 44)\n"
                      "    time.sleep(1.4)\n"
                      "    p.update('eq search', 1, 53)\n")
    assert lines[0] == "ncnn2table: collect 44/44 (100%)" and lines[-1] == "ncnn2table: eq search 1/53 (2%)", lines
    assert 1 <= len(lines[1:-1]) <= 3 and all(
        re.fullmatch(r"ncnn2table: collect done; still working \.\.\. \d s", ln) for ln in lines[1:-1]), lines


def test_quick_work_prints_no_progress_off_a_terminal() -> None:
    assert _progress("with Progress('check') as p:\n"
                     "    for i in range(10):\n"
                     "        p.update('compare', i, 20)\n", seconds="2") == []


def test_a_fleet_command_off_a_terminal_says_what_its_boards_do_while_they_work() -> None:
    """A one-board deploy (upload over a slow link, health check under emulation) printed nothing to
    a CI log for 53 s: off a terminal the fleet view spoke only when a board finished."""
    code = ("import time\n"
            "from deployer.cli.fleet import FleetView\n"
            "view = FleetView('deploy m-1', 2)\n"
            "with view.live:\n"
            "    view({'board': 'b1', 'stage': 'upload', 'done': 500, 'total': 1000})\n"
            "    view({'board': 'b2', 'stage': 'connect'})\n"
            "    time.sleep(1.3)\n"
            "    view({'board': 'b2', 'stage': 'done', 'ok': True, 'release': 'm-1', 'action': 'deployed'})\n"
            "    view({'board': 'b1', 'stage': 'health'})\n"
            "    time.sleep(0.8)\n")
    res = _off_a_terminal(code)
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert re.fullmatch(r"deploy m-1: 0/2 done, 0 failed; b1 upload 50%, b2 connect \.\.\. \d s", lines[0]), lines
    assert "deploy m-1: b2: ok m-1 (deployed)" in lines
    after = lines[lines.index("deploy m-1: b2: ok m-1 (deployed)") + 1:]
    assert after and all(re.fullmatch(r"deploy m-1: 1/2 done, 0 failed; b1 health \.\.\. \d s", ln) for ln in after), lines
    assert len(lines) <= 8, lines      # every 0.5 s, not every event


def test_a_native_runtime_build_off_a_terminal_says_how_far_it_is() -> None:
    """`runtime build` (10+ minutes from scratch) drew its progress with rich's console.status,
    which writes nothing off a terminal: a CI log of `make setup` stayed silent for the whole build."""
    code = ("import sys, time, types\n"
            "import deployer.native.build as nb, deployer.native.source as source, deployer.remote.runtime as rt\n"
            "source.check_version = lambda v: '1.0'\n"
            "rt.host_ncnn_version = lambda: '1.0'\n"
            "nb.toolchain = lambda arch: types.SimpleNamespace(arch='aarch64')\n"
            "def build(arch, version, layers=False, progress=None):\n"
            "    progress('ncnn 1.0 for aarch64', 10, 400)\n"
            "    time.sleep(1.3)\n"
            "    return types.SimpleNamespace(runner='r', size=1e6, version='1.0', arch='aarch64', layers=None,\n"
            "                                 times_s={}, to_json=lambda: {'ok': True})\n"
            "nb.build = build\n"
            "sys.argv = ['deployer', 'runtime', 'build', '--arch', 'arm64', '--json']\n"
            "from deployer.cli import main\n"
            "main()\n")
    res = _off_a_terminal(code)
    assert json.loads(res.stdout) == {"ok": True}, res.stderr
    lines = res.stderr.splitlines()
    assert lines and all(re.fullmatch(r"building ncnn 1\.0 for aarch64: 10/400 \.\.\. \d s", ln) for ln in lines), lines


def test_profile_progress_names_the_board_of_every_step() -> None:
    """run_sweep's events carry no board and the CLI passed them on as they were: the log said
    ' [1/8] round 1: threads=1' and 'median 939 ms', so a sweep of a group read as one board's."""
    code = ("import contextlib, sys, types\n"
            "import deployer.cli.boards as boards, deployer.profiling.sweep as sweep, deployer.remote.session as session\n"
            "boards._inventory = lambda targets, target=None: None\n"
            "boards._boards = lambda inv, target: [types.SimpleNamespace(name='pi-a'), types.SimpleNamespace(name='pi-b')]\n"
            "session.open_session = lambda board, **kw: (contextlib.nullcontext(), board.name)\n"
            "sweep.plan_sweep = lambda *a, **kw: types.SimpleNamespace(configs=[1], rounds=1, chunk_s=1.0)\n"
            "def run_sweep(s, plan, results, on_event, min_effect_pct):\n"
            "    on_event({'type': 'sweep', 'step': 1, 'of': 1, 'round': 1, 'label': 'threads=1'})\n"
            "    on_event({'type': 'sweep_done', 'median_ms': 9.5, 'run_id': 3})\n"
            "    on_event({'type': 'accuracy', 'precision': 'int8', 'input': 'random'})\n"
            "    return {'board': s, 'recommendation': {}}\n"
            "sweep.run_sweep = run_sweep\n"
            "sys.argv = ['deployer', 'profile', 'g', '--param', 'm.param', '--bin', 'm.bin', '--json']\n"
            "from deployer.cli import main\n"
            "main()\n")
    res = _off_a_terminal(code)
    assert json.loads(res.stdout)["boards"][1]["board"] == "pi-b", res.stderr
    assert res.stderr.splitlines()[1:] == [
        "pi-a [1/1] round 1: threads=1", "pi-a     median 9.5 ms (run 3)", "pi-a accuracy int8: random",
        "pi-b [1/1] round 1: threads=1", "pi-b     median 9.5 ms (run 3)", "pi-b accuracy int8: random"]


def test_profile_milliseconds_have_no_exponent(capsys) -> None:
    """A 2440 ms setting on an emulated board read 'median 2.44e+03 ms' in the sweep's lines and table."""
    from deployer.cli import profile

    for ms in (2440.4, 939.2, 52.81, 0.1234):
        profile._progress({"type": "sweep_done", "median_ms": ms, "run_id": 3, "board": "pi"})
    assert capsys.readouterr().err.splitlines() == [f"pi     median {v} ms (run 3)" for v in ("2440", "939", "52.8", "0.123")]


def test_a_zoo_build_off_a_terminal_is_not_silent() -> None:
    """`python -m examples.zoo` drew 'building NAME' with rich's console.status, which writes nothing
    off a terminal: a fresh `make setup` log was silent while pnnx converted (or digits_cnn trained)."""
    code = ("import sys, time, types\n"
            "import examples.zoo as zoo\n"
            "def build(name, force=False):\n"
            "    time.sleep(1.3)\n"
            "    return types.SimpleNamespace(param='m.param', inputs=['in0'], outputs=['out0'])\n"
            "zoo.build = build\n"
            "sys.exit(zoo.main(['mobilenet_v2']))\n")
    lines = _off_a_terminal(code).stderr.splitlines()
    assert lines[-1] == "mobilenet_v2: m.param  inputs in0, outputs out0", lines
    assert lines[:-1] and all(re.fullmatch(r"building mobilenet_v2 \(pnnx, fp16=0\) \.\.\. \d s", ln)
                              for ln in lines[:-1]), lines


def test_sim_up_with_json_still_shows_its_progress_on_stderr() -> None:
    """`sim up --json` turned its progress off: building a sysroot (minutes) left a CI log silent,
    though progress goes to stderr and stdout keeps its one JSON document either way."""
    code = ("import sys, time, types\n"
            "from pathlib import Path\n"
            "import deployer.sim.host as host, deployer.sim.manager as manager\n"
            "host.require_root = lambda: None\n"
            "host.missing_packages = lambda shaped=False: []\n"
            "def sim_up(progress=None, **kw):\n"
            "    progress('sysroot arm64: debootstrap', 3, 10)\n"
            "    time.sleep(1.3)\n"
            "    return types.SimpleNamespace(targets=Path('t/sim.yaml'), added=[], existing=[],\n"
            "        sysroot=types.SimpleNamespace(path='s', cached=False, seconds=1.3, warnings=[], packages=1))\n"
            "manager.sim_up = sim_up\n"
            "sys.argv = ['deployer', 'sim', 'up', '--json']\n"
            "from deployer.cli import main\n"
            "main()\n")
    res = _off_a_terminal(code)
    assert json.loads(res.stdout)["targets"] == "t/sim.yaml", res.stderr
    lines = res.stderr.splitlines()
    assert lines and all(re.fullmatch(r"sim up: sysroot arm64: debootstrap 3/10 \(30%\)( \d s)?", ln) for ln in lines), lines


@pytest.mark.parametrize("package,argv", [
    ("typer", ["status", "nobody@127.0.0.1:1", "--persist", "0"]),          # needed to build the CLI
    ("paramiko", ["status", "nobody@127.0.0.1:1", "--persist", "0"]),       # first needed per board
    ("numpy", ["ncnn2int8", "a.param", "a.bin", "b.param", "b.bin", "a.table"]),  # first needed by a command
])
def test_a_missing_package_is_one_line_not_a_traceback(package, argv):
    """A broken environment (a package missing or unimportable) must not end in a traceback or a
    crash log (it is not a bug), whether the package is needed to build the CLI or only inside a
    command; and a fleet command must not report it as every board failing."""
    code = f"import sys; sys.modules[{package!r}] = None; from deployer.cli import main; main()"
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"needs the Python package {package!r}" in proc.stderr and "make setup" in proc.stderr, proc.stderr
    assert "internal error" not in proc.stderr, proc.stderr


def test_fleet_commands_do_not_need_numpy():
    """status/rollout clients start without numpy (fast start-up: nothing numeric happens there)."""
    code = "import sys; sys.modules['numpy'] = None; from deployer.cli import main; main()"
    proc = subprocess.run([sys.executable, "-c", code, "status", "nobody@127.0.0.1:1", "--persist", "0",
                           "--deadline", "5"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 3 and "numpy" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("board", ["history.sqlite", "history.sqlite-wal", "history.sqlite-journal"])
def test_a_board_named_like_the_run_history_is_refused(board) -> None:
    """results/<board>/ sits beside results/history.sqlite: a board named history.sqlite made `run` fail
    after the whole benchmark (mkdir over the database), and -wal/-shm would have shadowed SQLite's files."""
    from deployer.errors import DeployerError
    from deployer.remote.session import results_folder

    with pytest.raises(DeployerError, match="is the name of the results folder's run history"):
        results_folder(board)
    assert results_folder("history") == "history" and results_folder("pi@10.0.0.2:22") == "pi@10.0.0.2_22"


def test_run_view_off_a_terminal_says_unchanged_files_and_every_upload_end(monkeypatch) -> None:
    """A skipped file read 'upload m.bin 100%', a sent one '0%' and then nothing, names cut at 24."""
    from deployer.cli import boards

    said: list[str] = []
    monkeypatch.setattr(boards, "say", said.append)
    view = boards.LiveView()
    assert view.plain
    name = "deployer-runner-1.0.20261020-aarch64"
    for done, total, f in ((10, 10, "m.param"), (0, 900, name), (450, 900, name), (900, 900, name)):
        view({"board": "pi", "type": "progress", "file": f, "done": done, "total": total})
    assert said == ["run: pi: unchanged m.param", f"run: pi: upload {name} 0%", f"run: pi: upload {name} 100%"]
