"""The ncnn C++ source a native board runtime is built from: the PyPI sdist of the host wheel's version.

Why the sdist: it carries the very C++ source the same version's wheels were built from, so the board's
static runner computes what the host's ncnn wheel computes (bit-identical int8 outputs are checked).

Why not `pip download --no-binary :all: ncnn==V`: the sdist's setup.py derives its version from the
build date, so pip rejects the download as "version mismatch". The file is fetched from the package
index's simple page instead, and checked against the sha256 the index publishes.

Fetching happens at set-up time only (`deployer runtime build` / scripts/setup.sh); a cached sdist is
used without the network.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from deployer import fsutil
from deployer.errors import DeployerError

DEFAULT_INDEX = "https://pypi.org/simple"
_VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.+-]*$")


def native_cache() -> Path:
    return fsutil.cache_dir() / "native"


def check_version(version: str) -> str:
    if not _VERSION_RE.match(version) or ".." in version:
        raise DeployerError(f"ncnn version {version!r} is not like 1.0.20261020")
    return version


def sdist_path(version: str) -> Path:
    return native_cache() / "src" / f"ncnn-{check_version(version)}.tar.gz"


def _index_url() -> str:
    return (os.environ.get("DEPLOYER_PYPI_SIMPLE") or DEFAULT_INDEX).rstrip("/")


def find_sdist_url(version: str, index: str | None = None) -> tuple[str, str | None]:
    """(url, sha256 or None) of ncnn-<version>.tar.gz from the simple index page."""
    base = (index or _index_url()).rstrip("/")
    page_url = f"{base}/ncnn/"
    try:
        with urllib.request.urlopen(page_url, timeout=60) as resp:
            page = resp.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as err:
        raise DeployerError(f"cannot read the package index {page_url}: {err}",
                            hint="set DEPLOYER_PYPI_SIMPLE to a reachable simple index, or pass --sdist FILE") from None
    name = f"ncnn-{version}.tar.gz"
    for href in re.findall(r'href="([^"]+)"', page):
        path = urllib.parse.urlsplit(href).path
        if path.rsplit("/", 1)[-1] == name:
            url = urllib.parse.urljoin(page_url, href.replace("&amp;", "&"))
            frag = urllib.parse.urlsplit(url).fragment
            sha = frag.split("=", 1)[1] if frag.startswith("sha256=") else None
            return url.split("#", 1)[0], sha
    raise DeployerError(f"the package index {page_url} has no {name}",
                        hint="check --ncnn-version (the sdist must exist for that version)")


def fetch_sdist(version: str, *, index: str | None = None) -> Path:
    """The cached sdist, downloading it once (set-up time) and verifying the index's sha256."""
    dest = sdist_path(version)
    if dest.is_file():
        return dest
    url, sha = find_sdist_url(version, index)
    try:
        with urllib.request.urlopen(url, timeout=300) as resp:
            data = resp.read()
    except (urllib.error.URLError, OSError) as err:
        raise DeployerError(f"download of {url} failed: {err}") from None
    if sha and hashlib.sha256(data).hexdigest() != sha:
        raise DeployerError(f"{url}: sha256 mismatch (index says {sha}); not cached")
    fsutil.write_bytes(dest, data)
    return dest


def use_sdist(path: Path, version: str) -> Path:
    """Copy a user-given sdist file into the cache under its version (offline set-up).

    Checked first: any file used to be cached under the version's name, replacing a good tarball
    (garbage failed only at the next extraction, "delete it and fetch again"), and another version's
    sdist would have built a board runner from other C++ than the host wheel's, silently."""
    data = fsutil.read_input(path, "--sdist")
    found = _sdist_version(data)
    if found is None:
        raise DeployerError(f"--sdist {path}: not an ncnn source archive (a .tar.gz whose top folder holds "
                            "CMakeLists.txt and a PKG-INFO naming ncnn)", hint=f"use ncnn-{version}.tar.gz from PyPI")
    if found != version:
        raise DeployerError(f"--sdist {path}: is ncnn {found}, not {version}",
                            hint=f"pass ncnn-{version}.tar.gz, or --ncnn-version {found}")
    dest = sdist_path(version)
    fsutil.write_bytes(dest, data)
    return dest


def _sdist_version(data: bytes) -> str | None:
    """The Version: of an ncnn sdist's top-level PKG-INFO, None when the bytes are not one."""
    import io

    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            names = {m.name: m for m in tar.getmembers() if m.isfile()}
            for name, member in names.items():
                top, _, rest = name.partition("/")
                if rest != "PKG-INFO" or f"{top}/CMakeLists.txt" not in names:
                    continue
                meta = (tar.extractfile(member) or io.BytesIO()).read(1 << 16).decode("utf-8", "replace")
                fields = dict(line.split(": ", 1) for line in meta.splitlines() if ": " in line)
                if fields.get("Name", "").strip().lower() == "ncnn":
                    return fields.get("Version", "").strip() or None
    except (tarfile.TarError, OSError, EOFError):
        return None
    return None


def extract_sdist(version: str) -> Path:
    """<cache>/native/src/ncnn-<version>/ with CMakeLists.txt; extracted once, atomically (temp + rename)."""
    tarball = sdist_path(version)
    dest = tarball.parent / f"ncnn-{version}"
    if (dest / "CMakeLists.txt").is_file() and (dest / ".deployer-extracted").is_file():
        return dest
    if not tarball.is_file():
        raise DeployerError(f"no ncnn {version} source in {tarball.parent}",
                            hint=f"at set-up time run: deployer runtime build --fetch --ncnn-version {version}")
    tmp = tarball.parent / f".ncnn-{version}.tmp-{os.getpid()}"
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with tarfile.open(tarball) as tar:
            members = []
            for m in tar.getmembers():
                parts = Path(m.name).parts
                if m.name.startswith("/") or ".." in parts or not (m.isfile() or m.isdir()):
                    continue  # no absolute paths, traversal, links or devices from an archive
                members.append(m)
            tar.extractall(tmp, members=members)
        roots = [p for p in tmp.iterdir() if (p / "CMakeLists.txt").is_file()]
        if len(roots) != 1:
            raise DeployerError(f"{tarball}: not an ncnn source archive (no top folder with CMakeLists.txt)")
        (roots[0] / ".deployer-extracted").write_text(version + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(roots[0], dest)
    except (tarfile.TarError, OSError) as err:
        raise DeployerError(f"{tarball}: cannot extract ({err}); delete it and fetch again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
