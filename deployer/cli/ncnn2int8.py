"""Placeholder: commands are registered here by their owner."""

import typer


def register(app: typer.Typer) -> None:
    pass
