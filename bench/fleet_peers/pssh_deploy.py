"""The parallel-ssh peer of bench_fleet.py (libssh2, one gevent pool of 200 connections).

Same per-board work as deployer: skip boards already serving the release; else SFTP the file to a
temp name, check its sha256 on the board, rename it into releases/<sha>/model and switch `current`
by renaming a fresh symlink over it. `read` prints nothing but reads every board's current release.
Host keys are not checked (parallel-ssh 2.x has no strict host-key mode).

    python pssh_deploy.py deploy|read HOSTS_FILE USER KEY FILE SHA
"""

from __future__ import annotations

import sys

from gevent import joinall
from pssh.clients import ParallelSSHClient

D = ".peer-pssh"


def client(hosts: list[str], user: str, key: str) -> ParallelSSHClient:
    return ParallelSSHClient(hosts, user=user, pkey=key, pool_size=200, num_retries=1, timeout=60)


def main() -> int:
    mode, hosts_file, user, key, payload, sha = sys.argv[1:7]
    hosts = [h.strip() for h in open(hosts_file) if h.strip()]
    c = client(hosts, user, key)
    out = c.run_command(f"readlink {D}/current || true", stop_on_errors=False)
    c.join(out)
    failed = [o.host for o in out if o.exception]
    if mode == "deploy":
        todo = [o.host for o in out if not o.exception and "".join(o.stdout or []).strip() != f"releases/{sha}"]
        if todo:
            sub = client(todo, user, key)
            mk = sub.run_command(f"mkdir -p {D}", stop_on_errors=False)
            sub.join(mk)
            joinall(sub.copy_file(payload, f"{D}.model.tmp"), raise_error=False)
            sw = sub.run_command(
                f"set -e; [ \"$(sha256sum < {D}.model.tmp | cut -c1-64)\" = {sha} ]; mkdir -p {D}/releases/{sha}; "
                f"mv {D}.model.tmp {D}/releases/{sha}/model; ln -sfn releases/{sha} {D}/current.tmp; "
                f"mv -T {D}/current.tmp {D}/current", stop_on_errors=False)
            sub.join(sw)
            failed += [o.host for o in sw if o.exception or o.exit_code]
    for h in failed:
        print("FAIL", h)
    return 0


if __name__ == "__main__":
    sys.exit(main())
