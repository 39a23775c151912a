"""`deployer sim up --image minimal`: emulated boards without Python (Buildroot/Yocto-like userlands).

The board's root is an overlay; a minimal board stacks one more read-only layer over the shared
sysroot that holds only overlayfs whiteouts (0:0 character devices) for the Python interpreter and
its library folders. The sysroot itself stays untouched and shared, the mask costs milliseconds to
make, and the board really has no `python3`: probe, push and run must work with POSIX sh and the
static native runtime (deployer.native).
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from deployer.errors import DeployerError
from deployer.sim.paths import sysroots_dir

IMAGES = ("standard", "minimal")
# relative to the sysroot: every python entry point and library folder
_HIDE_GLOBS = ("usr/bin/python3*", "usr/bin/pydoc3*", "usr/bin/py3*", "usr/bin/pygettext3*",
               "usr/lib/python3*", "usr/local/lib/python3*", "usr/share/python3")
FORMAT = 1


def check_image(image: str) -> str:
    if image not in IMAGES:
        raise DeployerError(f"--image {image!r} is not one of {', '.join(IMAGES)}")
    return image


def hidden_paths(sysroot: Path) -> list[str]:
    found = set()
    for pattern in _HIDE_GLOBS:
        for p in sysroot.glob(pattern):
            found.add(str(p.relative_to(sysroot)))
    return sorted(found)


def mask_dir(arch: str, sysroot: Path) -> Path:
    """The whiteout layer for `arch` (made once per sysroot; rebuilt if the sysroot changed)."""
    dest = sysroots_dir() / f"minimal-mask-{arch}"
    names = hidden_paths(sysroot)
    stamp = f"{FORMAT}\n" + "\n".join(names) + "\n"
    if (dest / ".deployer-mask").is_file() and (dest / ".deployer-mask").read_text() == stamp:
        return dest
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for rel in names:
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))  # overlayfs whiteout
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / ".deployer-mask").write_text(stamp)
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        if dest.exists():
            dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DeployerError(f"cannot make the minimal-image layer in {dest}: {err}") from None
    return dest


def lowerdir(image: str, arch: str, sysroot: Path) -> str:
    """The overlay lowerdir option for a board of this image: the sysroot, or mask:sysroot."""
    if check_image(image) == "standard":
        return str(sysroot)
    return f"{mask_dir(arch, sysroot)}:{sysroot}"
