# Unpack an ncnn wheel into a runtime folder, atomically: extract into a temp sibling, write the
# sha256 marker last, rename into place. A marker can only exist in a complete unpack. On any
# failure the temp folder is removed (a full disk must not stay full) and the old runtime stays.
# argv: wheel dest sha256 -> "unpacked", or "error nospace <free> <need>" / "error <reason>" (exit 1)
import os
import shutil
import sys
import zipfile

wheel, dest, sha = sys.argv[1:4]
parent, name = os.path.split(dest)
parent = parent or "."
tmp = os.path.join(parent, ".%s.tmp-%d" % (name, os.getpid()))
old = os.path.join(parent, ".%s.old-%d" % (name, os.getpid()))
moved = False
try:
    os.makedirs(parent, exist_ok=True)
    z = zipfile.ZipFile(wheel)
    need = sum(i.file_size for i in z.infolist()) + 4096 * (len(z.infolist()) + 1)
    st = os.statvfs(parent)
    free = st.f_bavail * st.f_frsize
    if need > free:
        print("error nospace %d %d" % (free, need))
        sys.exit(1)
    z.extractall(tmp)
    with open(os.path.join(tmp, ".deployer-sha256"), "w") as fh:
        fh.write(sha + "\n")
    if os.path.exists(dest):
        os.rename(dest, old)
        moved = True
    os.rename(tmp, dest)
except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile) as e:
    shutil.rmtree(tmp, ignore_errors=True)
    if moved and not os.path.exists(dest):
        os.rename(old, dest)
    if getattr(e, "errno", None) == 28:
        print("error nospace - -")
    else:
        print("error %s" % (getattr(e, "strerror", None) or e))
    sys.exit(1)
shutil.rmtree(old, ignore_errors=True)
print("unpacked")
