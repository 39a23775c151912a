# Hash temp files on the board *while* they are uploaded (following their growth), so the on-board
# sha256 check costs nothing extra at the end of a long transfer; one process serves a whole
# upload_many. File k is opened only after the client sends "k" on stdin (after SFTP created or
# reopened it); stdin EOF means the client went away.
# argv: (tmp size want_sha256 mode_octal)... -> per file "ok" or "bad <sha256|too-long>"; a file
# that checks out gets its mode. Nothing else is touched (other processes' temp files stay).
import hashlib
import os
import select
import sys

a = sys.argv[1:]
inbox = [b""]


def poll(wait):
    if select.select([sys.stdin], [], [], wait)[0]:
        b = os.read(sys.stdin.fileno(), 4096)
        if not b:
            sys.exit(3)
        inbox[0] += b


def signal(k):
    while (b"%d\n" % k) not in inbox[0]:
        poll(None)


for k in range(len(a) // 4):
    t, n, w, m = a[4 * k], int(a[4 * k + 1]), a[4 * k + 2], int(a[4 * k + 3], 8)
    signal(k)
    d, got = hashlib.sha256(), 0
    with open(t, "rb") as f:
        while got < n:
            b = f.read(min(1 << 20, n - got))
            if b:
                d.update(b)
                got += len(b)
            else:
                poll(0.05)
        if f.read(1):
            got = -1
    g = d.hexdigest() if got == n else "too-long"
    if g != w:
        print("bad", g, flush=True)
        continue
    os.chmod(t, m)
    print("ok", flush=True)
