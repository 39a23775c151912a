"""Fleet updates at scale: deployer vs the peers on the same boards, in the same run. Needs root.

    python bench/bench_fleet.py [--boards 200] [--size-mb 4] [--arm 16] [--peers xargs,pssh,ansible]

Boards are light emulated boards (`sim up --arch host`: the host's sshd, one per network namespace)
in a private simulator instance. Each tool does the same work per board: copy a 4 MB release,
check its sha256 on the board, switch a `current` symlink by rename; then a no-op re-run; then read
every board's current release. deployer runs as its own CLI process (RSS: the peak of its process
tree, sampled from /proc; wall time includes Python start-up, the operation's own time is reported
beside it; deployer's byte code is compiled first, as a pip install does), with its health check off for the comparison; the health check's cost is measured apart
on a subset. The deploy starts deployer's persistent controller (--persist, like ssh's
ControlPersist, on by default); the no-op rollout and status after it reuse its open connections,
and are also measured with --persist 0 (a new SSH login per board, as every peer here does). The
controller's own peak RSS is reported. Then `--pairs N` rounds (default 3) alternate a deployer deploy
(--persist 0) and a parallel-ssh deploy of a new 4 MB release each, and report the per-round ratios and
their median: one run of each depends on what the shared cores did just before it. `--arm N` also times a rollout to N emulated arm64 boards (qemu-user) against one board.
Peers: an `xargs -P 50` loop of OpenSSH scp/ssh (bench/fleet_peers/xargs_deploy.sh), parallel-ssh
(`pip install parallel-ssh`, pool 200), Ansible (`pip install ansible-core`, forks 50, pipelining;
bench/fleet_peers/ansible_deploy.yml); a peer that is not installed is reported as missing.
Prints a table and writes bench/results/fleet.json.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from deployer.sim.manager import sim_down, sim_up  # noqa: E402
from tests.fixtures.runner import build_tiny_models  # noqa: E402

PEERS = ROOT / "bench" / "fleet_peers"
console = Console(stderr=True)


def _tree_rss_mb(root: int) -> float:
    """Resident memory of a process and all its descendants now (MB)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            pages = int((d / "statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
        rss[int(d.name)] = pages
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total * os.sysconf("SC_PAGE_SIZE") / 1e6


def run_child(argv: list[str], *, cwd: Path, env: dict | None = None) -> tuple[float, float, subprocess.CompletedProcess]:
    """(seconds, peak resident memory of the command's whole process tree in MB, result).

    Sampled every 50 ms from /proc: wait4's ru_maxrss would include this (large) bench process,
    whose high-water mark a forked child inherits."""
    t0 = time.perf_counter()
    peak = 0.0
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=err, env=env)
        while proc.poll() is None:
            peak = max(peak, _tree_rss_mb(proc.pid))
            time.sleep(0.05)
        seconds = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        res = subprocess.CompletedProcess(argv, proc.returncode, out.read().decode(errors="replace"),
                                          err.read().decode(errors="replace"))
    return seconds, peak, res


def make_release(base: Path, size_mb: float, variant: int) -> Path:
    """A `quantize`-style folder: a tiny int8 model + a table padded to `size_mb` (the payload)."""
    tiny = build_tiny_models(base / "tiny", size=32)
    d = base / f"release{variant}"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny.int8_param, d / "tiny_int8.param")
    shutil.copy(tiny.int8_bin, d / "tiny_int8.bin")
    rnd = hashlib.sha256(str(variant).encode()).digest()
    blob = (rnd * (int(size_mb * 1e6) // len(rnd) + 1))[: int(size_mb * 1e6)]
    (d / "tiny_int8.table").write_bytes(blob)
    return d


def deployer_cli(*args: str, targets: Path, cwd: Path) -> tuple[float, float, dict]:
    """Run the deployer CLI; fleet commands run in the CLI process unless `args` give --persist."""
    if "--persist" not in args and args[0] in ("deploy", "rollout", "rollback", "releases", "status"):
        args = (*args, "--persist", "0")
    argv = [sys.executable, "-m", "deployer.cli", *args, "--targets", str(targets), "--json"]
    seconds, rss, res = run_child(argv, cwd=cwd)
    try:
        doc = json.loads(res.stdout)
    except ValueError:
        raise SystemExit(f"deployer {' '.join(args)} printed no JSON (exit {res.returncode}): {res.stderr[-800:]}")
    return seconds, rss, doc


def check_all(doc: dict, n: int, what: str, results: dict | None = None) -> None:
    """Every board ok, or stop the benchmark (with `results`: record the failures and go on)."""
    ok = sum(1 for b in doc.get("boards", []) if b.get("ok"))
    if ok != n:
        bad = [b for b in doc.get("boards", []) if not b.get("ok")][:3]
        if results is None:
            raise SystemExit(f"{what}: {ok}/{n} boards ok; e.g. {bad}")
        results[f"{what}: failed boards"] = [f"{b.get('board')}: {b.get('error')}" for b in bad]


def _controller_mb(work: Path) -> float | None:
    """Peak resident memory (VmHWM, MB) of the persistent fleet controller serving `work`."""
    from deployer.fleet.controller import socket_path

    want = str(socket_path(work)).encode()
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and want in (d / "cmdline").read_bytes():
                for line in (d / "status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1e3
        except OSError:
            continue
    return None


def bench_deployer(results: dict, targets: Path, work: Path, rel: Path, rel2: Path, n: int, parallel: int,
                   health_subset: int, deploy_parallel: int = 50) -> None:
    """deploy (starts the persistent controller), then a no-op rollout and status that reuse its
    connections, then the same two with --persist 0 (a new connection per board, as the peers do)."""
    from deployer.fleet.controller import socket_path, stop

    keep = ("--persist", "300")
    # uploads are CPU-bound on this machine: deploy's own default of 50 boards at once (fewer busy
    # threads contending for the GIL); the reads below are latency-bound: 200 at once
    t, rss, doc = deployer_cli("deploy", "tag:sim", "--model", str(rel), "--no-health", "--max-parallel",
                               str(deploy_parallel), *keep, targets=targets, cwd=work)
    results["deployer: deploy --max-parallel"] = deploy_parallel
    check_all(doc, n, "deployer deploy")
    results["deployer: deploy (s)"] = t
    results["deployer: deploy, operation only (s)"] = doc["seconds"]
    results["deployer: deploy controller RSS (MB)"] = rss
    results["deployer: deploy MB sent"] = doc["sent_bytes"] / 1e6
    noop = ("rollout", "tag:sim", "--model", str(rel), "--no-health", "--waves", "100%", "--max-parallel", str(parallel))
    for label, persist in (("", keep), (", new connections (--persist 0)", ("--persist", "0"))):
        t, rss, doc = deployer_cli(*noop, *persist, targets=targets, cwd=work)
        check_all(doc, n, "deployer no-op rollout")
        assert all(b["action"] == "unchanged" for b in doc["boards"]), "no-op rollout changed something"
        if persist == keep:
            assert all(b.get("connection") == "reused" for b in doc["boards"]), "controller did not reuse"
        results[f"deployer: no-op rollout{label} (s)"] = t
        results[f"deployer: no-op rollout{label}, operation only (s)"] = doc["seconds"]
        results[f"deployer: no-op rollout{label}, CLI process RSS (MB)"] = rss
        t, rss, doc = deployer_cli("status", "tag:sim", "--max-parallel", str(parallel), *persist, targets=targets,
                                   cwd=work)
        check_all(doc, n, "deployer status")
        results[f"deployer: status{label} (s)"] = t
        results[f"deployer: status{label}, operation only (s)"] = doc["seconds"]
        results[f"deployer: status{label}, CLI process RSS (MB)"] = rss
    results["deployer: persistent controller peak RSS (MB)"] = _controller_mb(work)
    stop(socket_path(work))
    if health_subset <= 0:
        return
    # the health check's own cost, on a subset: the same new release with and without it
    from deployer.targets import load_targets

    names = sorted(load_targets(targets).boards, key=lambda s: int(s.rsplit("-", 1)[-1]))[:health_subset]
    sub = targets.parent / "subset.yaml"        # beside sim.yaml: same key and known_hosts
    sub.write_text(targets.read_text() + "groups:\n  subset: [" + ", ".join(names) + "]\n")
    t_off, _, doc = deployer_cli("deploy", "subset", "--model", str(rel2), "--no-health", "--max-parallel",
                                 str(parallel), targets=sub, cwd=work)
    check_all(doc, len(names), "deploy subset without health")
    rel3 = make_release(work, 0.5, 3)
    t_on, _, doc = deployer_cli("deploy", "subset", "--model", str(rel3), "--max-parallel", str(parallel),
                                targets=sub, cwd=work)
    check_all(doc, len(names), "deploy subset with health", results)
    results[f"deployer: deploy {len(names)} boards, health check off (s)"] = t_off
    results[f"deployer: deploy {len(names)} boards, health check on, first run: runtime install + check (s)"] = t_on
    rel4 = make_release(work, 0.5, 4)
    t_on2, _, doc = deployer_cli("deploy", "subset", "--model", str(rel4), "--max-parallel", str(parallel),
                                 targets=sub, cwd=work)
    check_all(doc, len(names), "deploy subset with health (runtime present)", results)
    results[f"deployer: deploy {len(names)} boards, health check on, runtime present (s)"] = t_on2
    med = sorted(b["health"]["seconds"] for b in doc["boards"] if b.get("health"))
    results["deployer: health check per board, median (s)"] = med[len(med) // 2] if med else None


def bench_xargs(results: dict, hosts: list[str], key: Path, known: Path, payload: Path, work: Path) -> None:
    sha = hashlib.sha256(payload.read_bytes()).hexdigest()
    lst = work / "hosts.txt"
    lst.write_text("\n".join(hosts) + "\n")
    for label, mode in (("deploy", "deploy"), ("no-op re-run", "deploy"), ("read current", "read")):
        with open(lst) as fh:
            t0 = time.perf_counter()
            res = subprocess.run(["sh", str(PEERS / "xargs_deploy.sh"), mode, str(payload), sha, str(key), str(known),
                                  "50"], stdin=fh, capture_output=True, text=True)
            t = time.perf_counter() - t0
        fails = res.stdout.count("FAIL")
        results[f"xargs -P 50 scp/ssh: {label} (s)"] = t
        if fails:
            results[f"xargs -P 50 scp/ssh: {label} failed boards"] = fails


def bench_pssh(results: dict, hosts: list[str], user: str, key: Path, payload: Path, work: Path) -> None:
    try:
        import pssh  # noqa: F401
    except ImportError:
        results["parallel-ssh"] = "not installed (pip install parallel-ssh)"
        return
    sha = hashlib.sha256(payload.read_bytes()).hexdigest()
    lst = work / "pssh_hosts.txt"
    lst.write_text("\n".join(h.split("@", 1)[1] for h in hosts) + "\n")
    for label, mode in (("deploy", "deploy"), ("no-op re-run", "deploy"), ("read current", "read")):
        t, rss, res = run_child([sys.executable, str(PEERS / "pssh_deploy.py"), mode, str(lst), user, str(key),
                                 str(payload), sha], cwd=work)
        results[f"parallel-ssh (pool 200): {label} (s)"] = t
        results[f"parallel-ssh: {label} controller RSS (MB)"] = rss
        fails = res.stdout.count("FAIL")
        if fails or res.returncode:
            results[f"parallel-ssh: {label} failed boards"] = fails or res.stderr[-300:]


def bench_deploy_pairs(results: dict, targets: Path, hosts: list[str], user: str, key: Path, work: Path,
                       size_mb: float, rounds: int) -> None:
    """deploy vs parallel-ssh's deploy, alternating, `rounds` times, each round a new release (so
    both copy 4 MB to every board); deployer with --persist 0 (a new login per board, as pssh).
    One run of each is at the mercy of what the 2 cores did just before; the per-round ratio and
    its median are the claim."""
    try:
        import pssh  # noqa: F401
    except ImportError:
        return
    lst = work / "pssh_hosts.txt"
    lst.write_text("\n".join(h.split("@", 1)[1] for h in hosts) + "\n")
    ratios, ours, theirs = [], [], []
    for i in range(rounds):
        rel = make_release(work, size_mb, 100 + i)
        t, _, doc = deployer_cli("deploy", "tag:sim", "--model", str(rel), "--no-health", "--persist", "0",
                                 targets=targets, cwd=work)
        check_all(doc, len(hosts), f"deployer deploy, round {i + 1}", results)
        payload = rel / "tiny_int8.table"
        sha = hashlib.sha256(payload.read_bytes()).hexdigest()
        t2, _, res = run_child([sys.executable, str(PEERS / "pssh_deploy.py"), "deploy", str(lst), user, str(key),
                                str(payload), sha], cwd=work)
        if res.stdout.count("FAIL") or res.returncode:
            results[f"paired deploy round {i + 1}: parallel-ssh failed"] = res.stdout.count("FAIL") or res.stderr[-300:]
        ours.append(t)
        theirs.append(t2)
        ratios.append(t / t2)
    results[f"paired deploys ({rounds} rounds, alternating): deployer --persist 0 (s)"] = [round(x, 2) for x in ours]
    results[f"paired deploys ({rounds} rounds, alternating): parallel-ssh (s)"] = [round(x, 2) for x in theirs]
    results["paired deploys: deployer / parallel-ssh per round"] = [round(x, 3) for x in ratios]
    results["paired deploys: median ratio deployer / parallel-ssh"] = sorted(ratios)[len(ratios) // 2]


def bench_ansible(results: dict, hosts: list[str], user: str, key: Path, known: Path, payload: Path, work: Path) -> None:
    exe = shutil.which("ansible-playbook") or str(Path(sys.executable).with_name("ansible-playbook"))
    if not Path(exe).exists():
        results["ansible"] = "not installed (pip install ansible-core)"
        return
    inv = work / "ansible_hosts"
    inv.write_text("[all]\n" + "\n".join(h.split("@", 1)[1] for h in hosts) + "\n")
    cfg = work / "ansible.cfg"
    cfg.write_text("[defaults]\nforks = 50\nhost_key_checking = True\ninterpreter_python = /usr/bin/python3\n"
                   f"remote_user = {user}\nprivate_key_file = {key}\n"
                   "[ssh_connection]\npipelining = True\n"
                   f"ssh_args = -o UserKnownHostsFile={known} -o ControlMaster=auto -o ControlPersist=60s\n")
    sha = hashlib.sha256(payload.read_bytes()).hexdigest()
    sha1 = hashlib.sha1(payload.read_bytes()).hexdigest()
    env = dict(os.environ, ANSIBLE_CONFIG=str(cfg))
    for label in ("deploy", "no-op re-run"):
        t, rss, res = run_child([exe, "-i", str(inv), str(PEERS / "ansible_deploy.yml"), "-e",
                                 f"file={payload} sha={sha} sha1={sha1}"], cwd=work, env=env)
        results[f"ansible (forks 50, pipelining): {label} (s)"] = t
        results[f"ansible: {label} controller RSS (MB, all its processes)"] = rss
        if res.returncode:
            results[f"ansible: {label} exit"] = f"{res.returncode}: {res.stdout[-300:]} {res.stderr[-300:]}"
    adhoc = shutil.which("ansible") or str(Path(sys.executable).with_name("ansible"))
    t, _, res = run_child([adhoc, "all", "-i", str(inv), "-m", "command", "-a", "readlink .peer-ansible/current"],
                          cwd=work, env=env)
    results["ansible (forks 50, pipelining): read current (s)"] = t


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat: all but idle and iowait)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")


def bench_arm(results: dict, count: int, work: Path) -> None:
    """A rollout to `count` emulated arm64 boards vs to one, and why the ratio is what it is.

    Every emulated board's sshd, sftp-server, sh and coreutils run under qemu-user on the same 2 host
    cores, so N boards need N times one board's CPU: the ratio cannot go below
    N x (CPU of one board's rollout) / (cores x wall time of one board's rollout), whatever the
    controller does. That bound is measured (machine CPU minus the controller's) and reported next
    to the ratio; on real boards each board brings its own CPU and the bound is 1."""
    state, tdir = work / "arm-state", work / "arm-targets"
    try:
        up = sim_up(arch="arm64", count=count, targets_dir=tdir, state_dir=state)
        targets = up.targets
        names = sorted((b.name for b in up.added), key=lambda s: int(s.rsplit("-", 1)[-1]))
        one = targets.parent / "one.yaml"
        one.write_text(targets.read_text() + f"groups:\n  one: [{names[0]}]\n  rest: [{', '.join(names)}]\n")
        timed = {}
        for label, group, n, variant in (("1 board", "one", 1, 11), (f"{count} boards", "rest", count, 12)):
            rel = make_release(work, 4, variant)
            c0, r0 = _busy_cpu_s(), resource.getrusage(resource.RUSAGE_CHILDREN)
            t, _, doc = deployer_cli("rollout", group, "--model", str(rel), "--no-health", "--waves", "100%",
                                     "--max-parallel", str(count), "--state", str(work / f"ro-{group}"),
                                     targets=one, cwd=work)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            controller = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
            check_all(doc, n, f"arm rollout to {label}")
            timed[n] = (t, _busy_cpu_s() - c0 - controller, controller)
            results[f"arm64 (qemu) rollout, {label}, 4 MB, health off (s)"] = t
            results[f"arm64 (qemu) rollout, {label}: boards' CPU (s)"] = timed[n][1]
            results[f"arm64 (qemu) rollout, {label}: controller CPU (s)"] = controller
        (t1, cpu1, _), (tn, cpun, _) = timed[1], timed[count]
        cores = os.cpu_count() or 1
        results[f"arm64 rollout time ratio {count} boards / 1 board"] = tn / t1
        results[f"arm64 rollout ratio floor from the boards' CPU ({count} x CPU(1) / ({cores} cores x wall(1)))"] = \
            max(1.0, count * cpu1 / (cores * t1))
        results[f"arm64 rollout ratio floor from CPU measured in the {count}-board run (CPU / cores / wall(1))"] = \
            max(1.0, cpun / cores / t1)
    finally:
        sim_down(state_dir=state)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--boards", type=int, default=200)
    ap.add_argument("--size-mb", type=float, default=4.0)
    ap.add_argument("--parallel", type=int, default=200, help="deployer --max-parallel for the no-op and status")
    ap.add_argument("--deploy-parallel", type=int, default=50, help="deployer deploy --max-parallel (its default)")
    ap.add_argument("--health-subset", type=int, default=20)
    ap.add_argument("--arm", type=int, default=16, help="emulated arm64 boards for the 1-vs-N rollout (0: skip)")
    ap.add_argument("--peers", default="xargs,pssh,ansible")
    ap.add_argument("--pairs", type=int, default=3, help="alternating deployer/parallel-ssh deploys (0: none)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/fleet.json")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_fleet needs root (network namespaces for the emulated boards)")
    # deployer's byte code, as an installed (non-editable) package has it: without it every CLI start
    # compiles deployer's sources again when PYTHONDONTWRITEBYTECODE is set (~0.1 s per command)
    compileall.compile_dir(str(ROOT / "deployer"), quiet=1)
    work = Path(tempfile.mkdtemp(prefix="deployer-bench-fleet-"))
    os.environ["DEPLOYER_SIM_REGISTRY"] = str(work / "registry")
    state, tdir = work / "state", work / "targets"
    results: dict = {"boards": args.boards, "release MB": args.size_mb, "cpus": os.cpu_count()}
    try:
        t0 = time.perf_counter()
        up = sim_up(arch="host", count=args.boards, targets_dir=tdir, state_dir=state,
                    progress=lambda msg, i, n: console.print(f"[dim]{msg} {i}/{n}[/]") if i % 25 == 0 else None)
        results[f"sim up --arch host --count {args.boards} (s)"] = time.perf_counter() - t0
        targets = up.targets
        rel = make_release(work, args.size_mb, 1)
        rel2 = make_release(work, 0.5, 2)
        console.print("deployer ...")
        results["load average (1 min) before deployer"] = os.getloadavg()[0]
        bench_deployer(results, targets, work, rel, rel2, args.boards, args.parallel, args.health_subset,
                       args.deploy_parallel)
        from deployer.targets import load_targets

        boards = sorted(load_targets(targets).boards.values(), key=lambda b: int(b.name.rsplit("-", 1)[-1]))
        hosts = [f"{b.user}@{b.host}" for b in boards]
        key, known = state / "client_ed25519", tdir / "sim_known_hosts"
        payload = rel / "tiny_int8.table"
        peers = set(args.peers.split(",")) if args.peers else set()
        if "xargs" in peers:
            console.print("xargs peer ...")
            results["load average (1 min) before xargs"] = os.getloadavg()[0]
            bench_xargs(results, hosts, key, known, payload, work)
        if "pssh" in peers:
            console.print("parallel-ssh peer ...")
            results["load average (1 min) before parallel-ssh"] = os.getloadavg()[0]
            bench_pssh(results, hosts, boards[0].user, key, payload, work)
            if args.pairs:
                console.print(f"deployer vs parallel-ssh, {args.pairs} alternating deploys ...")
                bench_deploy_pairs(results, targets, hosts, boards[0].user, key, work, args.size_mb, args.pairs)
        if "ansible" in peers:
            console.print("ansible peer ...")
            results["load average (1 min) before ansible"] = os.getloadavg()[0]
            bench_ansible(results, hosts, boards[0].user, key, known, payload, work)
    finally:
        t0 = time.perf_counter()
        sim_down(state_dir=state)
        results["sim down (s)"] = time.perf_counter() - t0
    if args.arm:
        console.print(f"{args.arm} emulated arm64 boards ...")
        bench_arm(results, args.arm, work)
    shutil.rmtree(work, ignore_errors=True)
    table = Table(title=f"fleet: {args.boards} light boards, {args.size_mb:g} MB release", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for k, v in results.items():
        table.add_row(k, f"{v:.2f}" if isinstance(v, float) else str(v))
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
