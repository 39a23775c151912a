"""The `deployer` command: parsing and rendering only.

Each area registers its commands from its own module so the CLI stays a thin shell over the
library: ncnn2table, ncnn2int8, quantize (quantize, check), boards (sim, probe,
push, run, runtime).
"""

from __future__ import annotations

import sys
from typing import Any

_APP: Any = None


def build_app() -> Any:
    """The typer app with every command registered (imported here, not at module level, so that a
    missing dependency is one line from main() rather than a traceback from `import deployer.cli`)."""
    global _APP
    if _APP is not None:
        return _APP
    import typer

    from deployer.cli import boards, ncnn2int8, ncnn2table, quantize, sim
    from deployer.cli import fleet as fleet_cli
    from deployer.cli import native as native_cli
    from deployer.cli import profile as profile_cli
    from deployer.cli.common import handle_errors

    app = typer.Typer(
        name="deployer",
        help="Quantize ncnn models to int8, cross-check them, and run them on ARM boards over SSH.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        # Plain click help: reads the same on a terminal, in a pipe and in a log, and shows flags as
        # `--json` / `--fp16 / --no-fp16` (rich help labels every flag `<bool>` in typer >= 0.2x).
        rich_markup_mode=None,
    )

    def _print_version(value: bool) -> None:
        if value:
            typer.echo(_version_line())
            raise typer.Exit()

    @app.callback()
    def _root(_version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                            help="print deployer's and the host ncnn's version and exit")) -> None:
        """Quantize ncnn models to int8, cross-check them, and run them on ARM boards over SSH."""

    for module in (ncnn2table, ncnn2int8, quantize, sim, boards):
        module.register(app)
    profile_cli.register(app)  # deployer.cli.profile: profile, history, compare, report
    fleet_cli.register(app)  # deployer.cli.fleet: deploy, rollback, releases, rollout, status
    native_cli.register(app)  # deployer.cli.native: runtime build

    @app.command()
    @handle_errors
    def version(json_output: bool = typer.Option(False, "--json", help="print JSON on stdout")) -> None:
        """Print deployer's version and the host ncnn wheel's."""
        from deployer import __version__
        from deployer.cli.common import emit_json

        if json_output:  # the README promises --json on every command (scripts and CI read versions)
            emit_json({"ok": True, "deployer": __version__, "ncnn": _ncnn_version()})
            return
        typer.echo(_version_line())

    _APP = app
    return app


def _ncnn_version() -> str | None:
    try:
        import ncnn
    except ImportError:
        return None
    return ncnn.__version__


def _version_line() -> str:
    """What `deployer version` and `deployer --version` print."""
    from deployer import __version__

    return f"deployer {__version__} (ncnn {_ncnn_version() or 'not installed'})"


def __getattr__(name: str) -> Any:
    if name == "app":
        return build_app()
    raise AttributeError(name)


def missing_package(err: ImportError) -> str:
    """The one line for a package this environment lacks (at start-up, or first needed by a command)."""
    missing = getattr(err, "name", None) or str(err)
    return (f"deployer needs the Python package {missing!r}, which is missing or broken ({err}); "
            "run `make setup` (or pip install -e .) in this environment")


def main() -> None:
    """The console script: exit codes 0 ok, 1 gate, 2 bad input, 3 board/link, 4 internal (see cli.common)."""
    try:
        app = build_app()
        from deployer.cli.common import install_signal_handlers, run_app
    except ImportError as err:
        sys.stderr.write(f"error: {missing_package(err)}\n")
        sys.exit(4)
    install_signal_handlers()      # SIGTERM/SIGHUP clean up like Ctrl-C (no staged files left behind)
    code = run_app(app)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        from deployer.cli.common import _silence_stdout

        _silence_stdout()
    except ValueError:
        pass
    sys.exit(code)
