"""`deployer sim up/down/status` as a library: the public API of deployer.sim.

    from deployer.sim.manager import sim_up, sim_down, sim_status
    result = sim_up(arch="arm64", count=1, link=None, targets_dir=Path("targets"))
    sim_status()            # -> list[BoardStatus]
    sim_down()              # stops every board of this instance, rewrites targets/sim.yaml
    sim_down_all()          # stops every instance's boards on this machine

`state_dir` holds one simulator instance: its client key, board overlays and state.json. By default
it belongs to the targets folder (paths.default_state_dir: one per checkout), or DEPLOYER_SIM_DIR.
Tests pass their own so they never touch a user's boards.
`sim_up` is idempotent: it makes sure `count` boards of that arch and link exist and adds only the
missing ones.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from deployer.errors import DeployerError
from deployer.sim import host, instances
from deployer.sim.board import prepare_board_dir, sshd_answers, start_board, stop_board
from deployer.sim.keys import KEY_NAME, ensure_client_key
from deployer.sim.linkspec import LinkSpec
from deployer.sim.net import Slot, create_network, destroy_network, free_slot, kill_slot_processes, network_exists
from deployer.sim.paths import default_state_dir
from deployer.sim.procs import terminate
from deployer.sim.profiles import MAX_COUNT, MAX_HOST_COUNT, PROFILES, BoardProfile
from deployer.sim.state import BoardState, Claim, SimState, load_state, locked, save_state
from deployer.sim.sysroot import SysrootInfo, ensure_sysroot
from deployer.sim.targetsfile import TARGETS_NAME, check_ours, write_targets

Progress = Callable[[str, int, int], None]


@dataclass
class UpResult:
    added: list[BoardState]
    existing: list[BoardState]       # boards that already matched and were left alone
    targets: Path
    sysroot: SysrootInfo


@dataclass
class BoardStatus:
    name: str
    arch: str
    cpu: str
    model: str
    address: str
    link: str                        # "" when unshaped
    running: bool                    # the board's processes are alive
    sshd: bool                       # its sshd answers with an SSH banner

    @property
    def state(self) -> str:
        return "up" if self.running and self.sshd else ("starting/hung" if self.running else "down")


def check_host(arch: str, shaped: bool, install_deps: bool = False) -> None:
    """Root, packages (installed when `install_deps`), binfmt (repaired). One-line errors otherwise."""
    host.require_root()
    missing = host.missing_packages(shaped)
    if missing:
        if not install_deps:
            raise host.missing_packages_error(missing)
        host.install_packages(missing)
    if arch == "host":
        from deployer.sim.hostboard import check_host as check_light_host

        check_light_host()
        return
    host.ensure_binfmt(arch)


def sim_up(arch: str = "arm64", count: int = 1, link: LinkSpec | None = None, targets_dir: Path | None = None,
           state_dir: Path | None = None, install_deps: bool = False, progress: Progress | None = None,
           image: str = "standard") -> UpResult:
    """`image`: "standard" (Debian with Python) or "minimal" (no Python; deployer.sim.minimal)."""
    from deployer.sim.minimal import check_image

    check_image(image)
    state_dir = (state_dir or default_state_dir(targets_dir)).resolve()
    if arch not in PROFILES:
        raise DeployerError(f"--arch {arch!r} is not supported; use one of: {', '.join(PROFILES)}")
    if arch == "host" and image != "standard":
        # a light board runs the host's userland (with Python) whatever --image says, but sim.yaml
        # marked it runtime: native, which has no x86_64 build: every run on it failed
        raise DeployerError(f"--image {image} is for emulated boards (--arch arm64 or armhf); light boards "
                            "(--arch host) run the host's own userland")
    limit = MAX_HOST_COUNT if arch == "host" else MAX_COUNT
    if not 1 <= count <= limit:
        raise DeployerError(f"--count {count} must be between 1 and {limit}")
    if link is not None and not link.active:
        link = None
    if targets_dir is not None:   # checked under the lock too; here before a sysroot, state dir or key is made
        _check_targets_folder(targets_dir.expanduser().resolve())
    check_host(arch, link is not None, install_deps)
    say = progress or (lambda *_: None)
    sysroot = ensure_sysroot(arch, progress)
    state_dir.mkdir(parents=True, exist_ok=True)
    key, pub = ensure_client_key(state_dir)
    with locked():
        state = load_state(state_dir)
        tdir = _targets_dir(state, targets_dir)
        state.targets_dir = str(tdir)
        _reap_dead(state, state_dir)
        instances.register(state_dir)
        link_json = link.to_json() if link else None
        existing = [b for b in state.boards if b.arch == arch and b.link == link_json and b.image == image]
        added: list[BoardState] = []
        want = max(0, count - len(existing))
        profile = PROFILES[arch]
        # one progress phase for all boards: a phase per board drew 200 bars (200 log lines) for
        # `--arch host --count 200`; the result names every board
        phase = f"starting {arch} boards{' (' + link.spec() + ')' if link else ''}"
        try:
            for i in range(want):
                name = _free_name(state)
                say(phase, i, want)
                claim = Claim(name, free_slot(_slots_in_use(state)).n, str(state_dir / "boards" / name))
                state.starting.append(claim)
                save_state(state_dir, state)       # before the namespaces: a kill now leaves a record
                try:
                    board = _start_one(name, Slot(claim.slot), state_dir, profile, link, sysroot.path, pub, image)
                finally:
                    state.starting.remove(claim)
                state.boards.append(board)
                added.append(board)
                save_state(state_dir, state)
            say(phase, want, want)
        finally:
            write_targets(tdir, key, state.boards)
            save_state(state_dir, state)
            if not state.boards:
                instances.unregister(state_dir)
    return UpResult(added, existing[:count], tdir / TARGETS_NAME, sysroot)


def sim_down(names: list[str] | None = None, state_dir: Path | None = None,
             progress: Progress | None = None, targets_dir: Path | None = None) -> list[str]:
    """Stop this instance's boards (all, or the named ones) and everything they used; returns the names
    stopped. Boards of other instances (other checkouts, test sessions) are left alone."""
    host.require_root()
    state_dir = (state_dir or default_state_dir(targets_dir)).resolve()
    say = progress or (lambda *_: None)
    with locked():
        state = load_state(state_dir)
        if names:
            unknown = [n for n in names if state.board(n) is None]
            if unknown:
                known = ", ".join(b.name for b in state.boards) or "none"
                raise DeployerError(f"sim down: no emulated board named {', '.join(unknown)} (running: {known})")
        if not names:                       # a `sim up` killed mid-start: its leftovers go too
            for claim in list(state.starting):
                _clear_claim(claim, state_dir)
                state.starting.remove(claim)
                save_state(state_dir, state)
        victims = [b for b in state.boards if not names or b.name in names]
        if not victims:
            if not state.boards:
                instances.unregister(state_dir)
            return []
        for i, board in enumerate(victims):
            say("stopping boards", i, len(victims))
            _teardown(board, state_dir)
            state.boards.remove(board)
            save_state(state_dir, state)
        say("stopping boards", len(victims), len(victims))
        if state.targets_dir:
            write_targets(Path(state.targets_dir), state_dir / KEY_NAME, state.boards)
        if not state.boards:
            state.targets_dir = None
            instances.unregister(state_dir)
        save_state(state_dir, state)
    return [b.name for b in victims]


def sim_down_all(progress: Progress | None = None) -> dict[str, list[str]]:
    """Stop the boards of every simulator instance on this machine: {state dir: names stopped}."""
    host.require_root()
    with locked():
        found = instances.registered()
    return {str(d): stopped for d in found if (stopped := sim_down(state_dir=d, progress=progress))}


def sim_status(state_dir: Path | None = None, targets_dir: Path | None = None) -> list[BoardStatus]:
    state = load_state((state_dir or default_state_dir(targets_dir)).resolve())
    out = []
    for b in sorted(state.boards, key=lambda b: b.slot):
        running = _running(b)
        out.append(BoardStatus(b.name, b.arch, b.qemu_cpu, b.model, b.address, (b.link or {}).get("spec", ""),
                               running, running and sshd_answers(b.address, timeout=3.0)))
    return out


# --- internals ---------------------------------------------------------------------------------------

def _targets_dir(state: SimState, requested: Path | None) -> Path:
    wanted = (requested or Path("targets")).expanduser().resolve()
    if state.boards and state.targets_dir and Path(state.targets_dir) != wanted and requested is not None:
        raise DeployerError(
            f"--targets-dir {requested}: the running emulated boards are listed in {state.targets_dir}/"
            f"{TARGETS_NAME}; use that folder or run 'deployer sim down' first")
    chosen = Path(state.targets_dir) if state.boards and state.targets_dir else wanted
    _check_targets_folder(chosen)
    return chosen


def _check_targets_folder(folder: Path) -> None:
    """Before any board starts: a --targets-dir that is a file or read-only used to fail only when
    sim.yaml was written, after the boards were up, leaving boards no targets file listed."""
    if folder.exists() and not folder.is_dir():
        raise DeployerError(f"--targets-dir {folder}: is a file, not a folder (sim up writes {TARGETS_NAME} into it)",
                            hint="give a folder deployer can write")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DeployerError(f"--targets-dir {folder}: cannot use it as a folder for {TARGETS_NAME} ({e.strerror})",
                            hint="give a folder deployer can write") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DeployerError(f"--targets-dir {folder}: not writable, so {TARGETS_NAME} could not be written",
                            hint="give a folder deployer can write")
    check_ours(folder)


def _free_name(state: SimState) -> str:
    used = {b.name for b in state.boards}
    return next(f"sim-{k}" for k in range(1, 10_000) if f"sim-{k}" not in used)


def _slots_in_use(state: SimState) -> set[int]:
    return {b.slot for b in state.boards} | {c.slot for c in state.starting}


def _start_one(name: str, slot: Slot, state_dir: Path, profile: BoardProfile, link: LinkSpec | None,
               sysroot: Path, pub: str, image: str = "standard") -> BoardState:
    """`slot`: free under the lock (free_slot), so everything in it is ours to remove on failure."""
    from deployer.sim.minimal import lowerdir

    t0 = time.monotonic()
    board_dir = state_dir / "boards" / name
    hostname = f"raspberrypi-{name}"
    shaper = None
    try:
        init = "deployer.sim.boardinit"
        if profile.arch == "host":
            from deployer.sim.hostboard import INIT_MODULE, prepare_host_board

            config, init = prepare_host_board(board_dir, slot, hostname, pub)[0], INIT_MODULE
        else:
            config = prepare_board_dir(board_dir, slot, profile, hostname, sysroot, pub,
                                       lower=lowerdir(image, profile.arch, sysroot))
        logs = state_dir / "logs"
        shaper = create_network(slot, link, logs / f"{name}.shaper.log")
        started = start_board(name, slot, board_dir, config, logs / f"{name}.log", init_module=init)
    except BaseException:
        if shaper is not None:
            terminate(shaper)
        destroy_network(slot)
        shutil.rmtree(board_dir, ignore_errors=True)
        raise
    return BoardState(
        name=name, arch=profile.arch, slot=slot.n, address=slot.board_addr, qemu_cpu=profile.qemu_cpu,
        model=profile.model, hostname=hostname, board_dir=str(board_dir), sysroot=str(sysroot),
        host_key=started.host_key, unshare=started.unshare, init=started.init,
        link=link.to_json() if link else None, shaper=shaper,
        started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), up_seconds=round(time.monotonic() - t0, 3),
        image=image)


def _teardown(board: BoardState, state_dir: Path) -> None:
    gone = stop_board(board.unshare, board.init)
    if board.shaper is not None:
        gone = terminate(board.shaper) and gone
    slot = Slot(board.slot)
    destroy_network(slot)
    if not gone or network_exists(slot):
        raise DeployerError(f"board {board.name}: could not stop all of its processes / namespaces "
                            f"(pid {board.unshare.pid}, netns {slot.netns}); check 'ip netns list' and ps")
    board_dir = Path(board.board_dir).resolve()
    if board_dir.parent == state_dir / "boards":  # never delete outside our own state dir
        shutil.rmtree(board_dir, ignore_errors=True)


def _clear_claim(claim: Claim, state_dir: Path) -> None:
    """Remove what a cut-off start left in its slot. The kill may have come before the namespace
    existed, and another instance may have taken the free slot since: its boards are never touched."""
    slot = Slot(claim.slot)
    others = set()
    for d in instances.registered():
        if d.resolve() != state_dir.resolve():
            with contextlib.suppress(DeployerError):
                others |= _slots_in_use(load_state(d))
    if slot.n not in others:
        if not kill_slot_processes(slot):
            raise DeployerError(f"board {claim.name}: processes of its cut-off start in netns {slot.netns} "
                                "would not die; check 'ip netns pids " + slot.netns + "'")
        destroy_network(slot)
    board_dir = Path(claim.board_dir).resolve()
    if board_dir.parent == state_dir / "boards":  # never delete outside our own state dir
        shutil.rmtree(board_dir, ignore_errors=True)


def _running(board: BoardState) -> bool:
    return board.unshare.alive() and board.init.alive() and (board.shaper is None or board.shaper.alive())


def _reap_dead(state: SimState, state_dir: Path) -> None:
    """Boards whose processes died (host reboot, killed by hand): clean up what is left, forget them.
    Starts that were cut off (`Claim`s left in the state) are cleared the same way."""
    for claim in list(state.starting):
        _clear_claim(claim, state_dir)
        state.starting.remove(claim)
        save_state(state_dir, state)
    for board in list(state.boards):
        if not _running(board):
            _teardown(board, state_dir)
            state.boards.remove(board)
            save_state(state_dir, state)
