"""`deployer sim up|down|status`: emulated ARM boards on this machine (parse + render only)."""

from __future__ import annotations

import sys
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from deployer.cli.common import console, emit_json, handle_errors, nonempty_path, out
from deployer.cli.progress import Progress
from deployer.cli.render import say, warn
from deployer.sim import host
from deployer.sim.linkspec import parse_link
from deployer.sim.profiles import MAX_HOST_COUNT
from deployer.errors import DeployerError

class Arch(str, Enum):
    arm64 = "arm64"
    armhf = "armhf"
    host = "host"      # light boards for fleet scale: host userland + sshd, no emulation


sim_app = typer.Typer(help="Emulated ARM boards (qemu-user + network namespaces) reachable over real SSH. "
                           "Each targets folder (or DEPLOYER_SIM_DIR) is its own simulator instance.",
                      no_args_is_help=True)
TargetsDirOpt = typer.Option(None, "--targets-dir", help="The instance's targets folder (default: ./targets).",
                             parser=nonempty_path)


def register(app: typer.Typer) -> None:
    app.add_typer(sim_app, name="sim")


@sim_app.command("up")
@handle_errors
def up(
    arch: Arch = typer.Option(Arch.arm64, "--arch", help="Board userland: arm64 (Pi 4, cortex-a72), armhf (cortex-a15), or host (light boards for fleet scale: host userland + sshd, no emulation)."),
    count: int = typer.Option(1, "--count", "-n", min=1, max=MAX_HOST_COUNT,
                              help="How many boards of this arch/link should be up."),
    link: Optional[str] = typer.Option(None, "--link", help="Shape the link: 'delay=50,rate=10,loss=1' (ms, Mbit/s, "
                                                          "%) both ways, or 'down:... up:...'."),
    targets_dir: Optional[Path] = typer.Option(None, "--targets-dir", help="Where sim.yaml goes (default: ./targets); "
                                                                            "it names the simulator instance.",
                                               parser=nonempty_path),
    install_deps: bool = typer.Option(False, "--install-deps", help="apt-get install missing host packages."),
    image: str = typer.Option("standard", "--image", help="standard (Debian with Python) or minimal (no Python: "
                                                          "native runtime only)."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Start emulated boards and write targets/sim.yaml (+ sim_known_hosts). Adds only missing boards."""
    spec = parse_link(link) if link else None
    host.require_root()
    missing = host.missing_packages(shaped=spec is not None)
    if missing and not install_deps and not json_output and sys.stdin.isatty():
        console.print(f"deployer sim needs these Debian packages: {', '.join(missing)}")
        install_deps = typer.confirm(f"Run '{host.apt_command(missing)}' now?", default=False, err=True)
    with Progress("sim up") as bar:     # on stderr: --json keeps stdout to its one document
        from deployer.sim.manager import sim_up

        result = sim_up(arch=arch.value, count=count, link=spec, targets_dir=targets_dir, install_deps=install_deps,
                        progress=bar, image=image)
    if json_output:
        emit_json({"ok": True, "targets": result.targets,
                   "known_hosts": result.targets.with_name("sim_known_hosts"), "added": [b.name for b in result.added],
                   "already_up": [b.name for b in result.existing],
                   "sysroot": {"path": result.sysroot.path, "cached": result.sysroot.cached,
                               "seconds": round(result.sysroot.seconds, 2), "warnings": result.sysroot.warnings},
                   "boards": [{"name": b.name, "arch": b.arch, "address": b.address, "cpu": b.qemu_cpu,
                               "up_seconds": b.up_seconds} for b in result.added + result.existing]})
        return
    for warning in result.sysroot.warnings:
        warn(warning)
    if not result.sysroot.cached:
        say(f"built {arch.value} sysroot ({result.sysroot.packages} packages) in {result.sysroot.seconds:.1f} s")
    for b in result.existing:
        say(f"{b.name} ({b.arch}, {b.address}) is already up")
    for b in result.added:
        say(f"{b.name} up: {b.arch} {b.qemu_cpu} at pi@{b.address} ({b.up_seconds:.1f} s)")
    from deployer.sim.manager import sim_status

    # --count is per arch and link: after the README's two shaped boards, `--count 4` adds four
    # more, which read like a total of four. Say what the instance now has.
    total = len(sim_status(targets_dir=targets_dir))
    others = total - len(result.added) - len(result.existing)
    say(f"targets: {result.targets} ({total} board(s) up in this instance"
        + (f"; {others} of another arch or link, not counted by --count" if others else "") + ")")


@sim_app.command("down")
@handle_errors
def down(
    names: Optional[list[str]] = typer.Argument(None, help="Boards to stop (default: all of this instance's)."),
    targets_dir: Optional[Path] = TargetsDirOpt,
    all_instances: bool = typer.Option(False, "--all", help="Stop every emulated board on this machine, "
                                                            "whichever checkout or test session started it."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Stop this instance's emulated boards: processes, namespaces, link shapers; update its sim.yaml."""
    if all_instances and (names or targets_dir):
        raise DeployerError("sim down --all stops every board; give it no board names and no --targets-dir")
    from deployer.sim.manager import sim_down, sim_down_all

    with Progress("sim down") as bar:
        if all_instances:
            by_instance = sim_down_all(progress=bar)
        else:
            by_instance = {"": sim_down(names or None, progress=bar, targets_dir=targets_dir)}
    stopped = [n for names_ in by_instance.values() for n in names_]
    if json_output:
        doc: dict = {"ok": True, "stopped": stopped}
        if all_instances:
            doc["instances"] = by_instance
        emit_json(doc)
    elif not stopped:
        say("no emulated boards were running" + (" on this machine" if all_instances else
                                                  " in this instance (sim down --all stops every instance's)"))
    elif all_instances:
        for where, names_ in by_instance.items():
            say(f"stopped {', '.join(names_)} (instance {where})")
    else:
        say(f"stopped {', '.join(stopped)}")


@sim_app.command("status")
@handle_errors
def status(
    targets_dir: Optional[Path] = TargetsDirOpt,
    json_output: bool = typer.Option(False, "--json", help="Print the boards as JSON on stdout."),
) -> None:
    """Show this instance's emulated boards: arch, CPU, address, link, up/down, sshd answering."""
    from deployer.sim.manager import sim_status

    boards = sim_status(targets_dir=targets_dir)
    if json_output:
        emit_json({"ok": True, "boards": [dict(asdict(b), state=b.state) for b in boards]})
        return
    if not boards:
        say("no emulated boards in this instance (start some with: deployer sim up)")
        return
    out.print(_table(boards))


@sim_app.command("sysroot")
@handle_errors
def sysroot(
    arch: list[Arch] = typer.Option(list(Arch), "--arch", help="Which sysroots (repeatable)."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Build (or check) the cached Debian sysroots the boards run on, without starting boards (for CI set-up)."""
    host.require_root()
    infos = []
    with Progress("sim sysroot") as bar:
        for a in arch:
            from deployer.sim.sysroot import ensure_sysroot

            infos.append(ensure_sysroot(a.value, bar))
    if json_output:
        emit_json({"ok": True, "sysroots": [{"arch": i.arch, "path": i.path, "packages": i.packages, "cached": i.cached,
                                             "seconds": round(i.seconds, 2), "warnings": i.warnings} for i in infos]})
        return
    for i in infos:
        for warning in i.warnings:
            warn(warning)
        how = "cached" if i.cached else f"built in {i.seconds:.1f} s"
        say(f"{i.arch}: {i.path} ({i.packages} packages, {how})")


def _table(boards: list[Any]) -> Table:   # deployer.sim.manager.BoardStatus
    table = Table("board", "arch", "cpu", "address", "link", "state", "sshd")
    for column in table.columns:
        column.no_wrap = True
    for b in boards:
        color = "green" if b.state == "up" else "red"
        table.add_row(b.name, b.arch, b.cpu, b.address, b.link or "-", f"[{color}]{b.state}[/]",
                      "answering" if b.sshd else "no")
    return table
