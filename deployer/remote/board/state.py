# Before an upload: what the board already has. argv: (final partial_prefix)...
# Per pair one tab-separated line: final_sha partial_name partial_size partial_sha free_bytes device
# ('-' = none). partial_name is the largest file in final's folder whose name starts with
# partial_prefix (a temp upload of the same content by an earlier, dead process: the caller holds
# the board lock, so no live process owns it). Creates missing folders.
import hashlib
import os
import sys


def h(p):
    d = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            d.update(b)
    return d.hexdigest()


a = sys.argv[1:]
for f, prefix in zip(a[0::2], a[1::2]):
    d = os.path.dirname(f) or "."
    try:
        os.makedirs(d, exist_ok=True)
    except OSError as e:
        print("error cannot create %s: %s" % (d, e.strerror))
        sys.exit(1)
    x = h(f) if os.path.isfile(f) else "-"
    base = os.path.basename(prefix)
    best, size = "-", -1
    for n in os.listdir(d):
        p = os.path.join(d, n)
        if n.startswith(base) and os.path.isfile(p) and not os.path.islink(p):
            s = os.path.getsize(p)
            if s > size:
                best, size = n, s
    y = h(os.path.join(d, best)) if best != "-" else "-"
    st = os.statvfs(d)
    print("\t".join([x, best, str(size) if best != "-" else "-", y, str(st.f_bavail * st.f_frsize),
                     str(os.stat(d).st_dev)]))
