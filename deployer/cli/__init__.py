"""The `deployer` command: parsing and rendering only.

Each area registers its commands from its own module so the CLI stays a thin shell over the
library: ncnn2table, ncnn2int8, quantize (quantize, check), boards (sim, probe,
push, run, runtime).
"""

from __future__ import annotations

import typer

from deployer.cli import boards, ncnn2int8, ncnn2table, quantize, sim

app = typer.Typer(
    name="deployer",
    help="Quantize ncnn models to int8, cross-check them, and run them on ARM boards over SSH.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

@app.callback()
def _root() -> None:
    """Quantize ncnn models to int8, cross-check them, and run them on ARM boards over SSH."""


for module in (ncnn2table, ncnn2int8, quantize, sim, boards):
    module.register(app)


@app.command()
def version() -> None:
    """Print deployer's version and the host ncnn wheel's."""
    from deployer import __version__

    try:
        import ncnn

        ncnn_version = ncnn.__version__
    except ImportError:
        ncnn_version = "not installed"
    typer.echo(f"deployer {__version__} (ncnn {ncnn_version})")


def main() -> None:
    app()
