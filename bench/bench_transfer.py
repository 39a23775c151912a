#!/usr/bin/env python3
"""Upload speed to an emulated board: deployer.ssh.transfer vs OpenSSH scp vs paramiko's sftp.put.

Starts its own emulated arm64 boards (private sim state dir, torn down at the end): one behind a
shaped link (default 10 Mbit/s, 50 ms each way) and one unshaped, plus a native loopback sshd (the
test fixture's recipe) where qemu's CPU cost does not hide the protocol's. On each it pushes the
same random file with:
  * scp          OpenSSH 9.x scp (SFTP protocol), a fresh `scp` process: connect + transfer
  * deployer     connect() + upload(): connect, remote hash query, pipelined SFTP, on-board sha256, rename
  * paramiko     a fresh connect() + paramiko's default SFTPClient.put (for reference)
  * re-push      deployer upload() of the unchanged file, timed from an already-open connection
                 (SFTP channel not yet open, so its start-up is included): the manifest quick check
  * re-push --checksum   the same with checksum=True: hashed on the board (the pre-manifest path)
  * re-push incl. connect   connect() + upload() of the unchanged file
Re-push rows run right after the deployer push, whose local source was last modified well before.
Prints a table and JSON (also written to --json). Needs root (namespaces) like `deployer sim up`.

    .venv/bin/python bench/bench_transfer.py --size-mb 20 --link delay=50,rate=10   # ~2 min
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployer.sim.linkspec import parse_link  # noqa: E402
from deployer.sim.manager import sim_down, sim_up  # noqa: E402
from deployer.ssh import transfer  # noqa: E402
from deployer.ssh.connect import connect  # noqa: E402
from deployer.targets import load_targets  # noqa: E402


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def scp(board, src: Path, dst: str) -> None:
    cmd = ["scp", "-q", "-B", "-i", str(board.key), "-P", str(board.port or 22),
           "-o", f"UserKnownHostsFile={board.known_hosts}", "-o", "StrictHostKeyChecking=yes",
           "-o", "IdentitiesOnly=yes", str(src), f"{board.user}@{board.host}:{dst}"]
    subprocess.run(cmd, check=True)


def deployer_push(board, src: Path, dst: str) -> None:
    with connect(board) as c:
        r = transfer.upload(c, src, dst)
        assert not r.skipped and r.sent == r.size


def paramiko_put(board, src: Path, dst: str) -> None:
    with connect(board) as c:
        c.sftp.put(str(src), dst)


REPUSH = ("re-push", "re-push --checksum", "re-push incl. connect")


def repush(board, src: Path, checksum: bool, conn=None) -> None:
    with contextlib.ExitStack() as stack:
        c = conn or stack.enter_context(connect(board))
        r = transfer.upload(c, src, "bench/dep.bin", checksum=checksum)
        assert r.skipped and r.checked_by == ("sha256" if checksum else "manifest"), r


def bench_board(board, src: Path, repeats: int, repush_only: bool = False) -> dict:
    methods = ((() if repush_only else (("scp", scp, "bench/scp.bin"),)) + (("deployer", deployer_push, "bench/dep.bin"),)
               + (() if repush_only else (("paramiko put", paramiko_put, "bench/pm.bin"),)))
    rows: dict[str, list[float]] = {m[0]: [] for m in methods} | {k: [] for k in REPUSH}
    for _ in range(repeats):
        with connect(board) as c:
            c.run(["mkdir", "-p", "bench"], check=True)
        for name, fn, dst in methods:
            with connect(board) as c:       # a fresh start: no old copy, partial file (or manifest entry)
                c.run(["sh", "-c", 'rm -f -- "$@" bench/.dep.bin.part-*', "sh", dst,
                       *(["bench/.deployer-manifest.json"] if name == "deployer" else [])], check=True)
            rows[name].append(timed(lambda: fn(board, src, dst)))
        for checksum, name in ((False, "re-push"), (True, "re-push --checksum")):
            with connect(board) as c:     # timed from an open connection (the SFTP channel opens inside)
                rows[name].append(timed(lambda: repush(board, src, checksum, c)))
        rows["re-push incl. connect"].append(timed(lambda: repush(board, src, False)))
        with connect(board) as c:
            c.run(["rm", "-rf", "bench"])
    return {k: {"median_s": statistics.median(v), "runs_s": [round(x, 3) for x in v]} for k, v in rows.items()}


def host_info() -> dict:
    """Numbers depend on the machine and its load: record both."""
    import paramiko

    ssh_v = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    return {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(), "kernel": os.uname().release,
            "python": sys.version.split()[0], "paramiko": paramiko.__version__, "openssh": ssh_v}


def bench_loopback(work: Path, src: Path, repeats: int, repush_only: bool = False) -> dict:
    """A private native sshd on 127.0.0.1 (same recipe as tests/fixtures/sshd.py)."""
    from tests.fixtures import sshd as fx

    fx._require_root_sshd = lambda: None
    env = fx._make_env(work / "loopback")
    server = fx.start_sshd(env.root, "loop", "127.0.0.1", fx.free_port(), env.authorized_keys)
    try:
        env.known_hosts.write_text(server.host_key_line())
        env.targets.write_text(
            f"boards:\n  loop: {{host: 127.0.0.1, port: {server.port}, user: {env.user}, key: ../client_key, "
            f"known_hosts: known_hosts}}\n")
        board = load_targets(env.targets).board("loop")
        print(f"[loopback] native sshd on 127.0.0.1:{server.port}: pushing ...", file=sys.stderr)
        return {"board": "loopback", **bench_board(board, src, repeats, repush_only)}
    finally:
        server.stop()
        shutil.rmtree(env.remote_scratch, ignore_errors=True)
        shutil.rmtree(env.authorized_keys.parent, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=20)
    ap.add_argument("--link", default="delay=50,rate=10", help="sim link spec for the shaped board")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--skip-unshaped", action="store_true")
    ap.add_argument("--skip-loopback", action="store_true")
    ap.add_argument("--repush-only", action="store_true", help="only the deployer push and the re-push rows")
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "transfer.json",
                    help="where to write the JSON (default bench/results/transfer.json)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-transfer-"))
    state, tdir = work / "state", work / "targets"
    src = work / "payload.bin"
    with open(src, "wb") as fh:
        fh.write(os.urandom(int(args.size_mb * 1_000_000)))
    os.utime(src, (time.time() - 3600,) * 2)      # a model edited a while ago, not in the push's second
    results: dict = {"size_bytes": src.stat().st_size, "link": args.link, "repeats": args.repeats,
                     "host": host_info(), "boards": {}}
    try:
        plans = [("shaped", parse_link(args.link))] + ([] if args.skip_unshaped else [("unshaped", None)])
        for label, link in plans:
            up = sim_up(arch="arm64", count=1, link=link, targets_dir=tdir, state_dir=state)
            name = (up.added or up.existing)[0].name
            board = load_targets(up.targets).board(name)
            print(f"[{label}] board {name} at {board.host}: pushing {args.size_mb:g} MB ...", file=sys.stderr)
            results["boards"][label] = {"board": name, **bench_board(board, src, args.repeats, args.repush_only)}
    finally:
        sim_down(state_dir=state)
    if not args.skip_loopback:
        results["boards"]["loopback"] = bench_loopback(work, src, args.repeats, args.repush_only)
    for label, r in results["boards"].items():
        if "scp" in r:
            r["deployer_vs_scp"] = round(r["deployer"]["median_s"] / r["scp"]["median_s"], 3)
    print(f"\n{'link':10} {'method':22} {'median s':>9} {'Mbit/s':>8} {'vs scp':>7}")
    for label, r in results["boards"].items():
        for method in ("scp", "deployer", "paramiko put", *REPUSH):
            if method not in r:
                continue
            s = r[method]["median_s"]
            mbit = "" if method.startswith("re-push") else f"{results['size_bytes'] * 8 / s / 1e6:8.2f}"
            vs = f"{s / r['scp']['median_s']:7.2f}" if "scp" in r else ""
            print(f"{label:10} {method:22} {s:9.3f} {mbit:>8} {vs:>7}")
    print("re-push rows: timed from an open SSH connection (SFTP channel start included), "
          "except 're-push incl. connect'")
    results["host"]["loadavg_at_end"] = os.getloadavg()
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
