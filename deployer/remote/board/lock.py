# Board lock (deployer.remote.lock) for boards without flock(1) (lock.sh execs this): exclusive flock
# on a lock file, held while stdin stays open.
# argv: lockfile wait_s lease_s holder_json sweep_age_s folder...
# stdout: "waiting <holder>" (while waiting), then "locked <n swept>"; or "busy <holder>" (exit 75),
#         "error <reason>" (exit 1). Exits (releasing the lock) on stdin EOF - the SSH channel closed -
#         or when no heartbeat byte arrived for lease_s seconds (a dead link the board's sshd has not
#         noticed yet). Under the lock, temp files of dead uploads/unpacks older than sweep_age_s are
#         removed from the given folders.
import errno
import fcntl
import os
import select
import shutil
import sys
import time

path, wait, lease, info, age = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], float(sys.argv[5])
folders = sys.argv[6:]


def say(*words):
    sys.stdout.write(" ".join(words) + "\n")
    sys.stdout.flush()


def holder(fd):
    try:
        os.lseek(fd, 0, 0)
        text = os.read(fd, 4096).decode("utf-8", "replace")
    except OSError:
        text = ""
    line = text.strip().splitlines()
    return line[0] if line else "{}"


def stdin_closed(timeout):
    if select.select([0], [], [], timeout)[0]:
        return not os.read(0, 4096)
    return False


def sweep():
    n = 0
    cutoff = time.time() - age
    for d in folders:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for x in names:
            if not x.startswith(".") or not (".part-" in x or ".tmp-" in x or ".old-" in x):
                continue
            p = os.path.join(d, x)
            try:
                st = os.lstat(p)
                if st.st_mtime > cutoff:
                    continue
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p)
                else:
                    os.remove(p)
                n += 1
            except OSError:
                pass
    return n


try:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
except OSError as e:
    say("error", "cannot open", path + ":", e.strerror or str(e))
    sys.exit(1)
deadline = time.time() + wait
told = False
while True:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        break
    except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            say("error", "flock", path + ":", e.strerror or str(e))
            sys.exit(1)
    who = holder(fd)
    if time.time() >= deadline and (who != "{}" or time.time() >= deadline + 0.5):
        say("busy", who)
        sys.exit(75)
    if not told and who != "{}":
        say("waiting", who)
        told = True
    if stdin_closed(0.2):
        sys.exit(0)
os.ftruncate(fd, 0)
os.lseek(fd, 0, 0)
os.write(fd, (info.rstrip("}") + ', "board_pid": %d}\n' % os.getpid()).encode("utf-8"))
say("locked", str(sweep()))
last = time.monotonic()
while True:
    if select.select([0], [], [], 1.0)[0]:
        if not os.read(0, 4096):
            break
        last = time.monotonic()
    elif lease > 0 and time.monotonic() - last > lease:
        break
os.ftruncate(fd, 0)
