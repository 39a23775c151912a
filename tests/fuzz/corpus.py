"""The valid inputs every fuzz mutation starts from, built once into a folder.

Small real models (MTCNN PNet, fully convolutional, 26 KB; ONet, fixed 48x48 head) from
examples.zoo, six tiny photos-like images in four formats, a calibration table and an int8 model
made by deployer itself (through the CLI in a forked child, so the parent never runs ncnn), a
profile, a targets file pointing at a closed loopback port, and an ssh config.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import yaml

from tests.fuzz.cases import Base
from tests.fuzz.harness import Case, Runner, check_outcome, summary_line


def _images(folder: Path, seed: int) -> list[Path]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i, fmt in enumerate(["png", "png", "jpg", "bmp", "ppm", "png"]):
        # smooth-ish content: noise on a gradient, like a photo crop
        grad = np.linspace(0, 200, 16, dtype=np.float32)
        arr = (grad[None, :, None] + rng.integers(0, 55, (16, 16, 3))).clip(0, 255).astype(np.uint8)
        path = folder / f"{i}.{fmt}"
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format={"jpg": "JPEG", "ppm": "PPM"}.get(fmt, fmt.upper()))
        path.write_bytes(buf.getvalue())
        out.append(path)
    return out


def build(root: Path, pnet: tuple[Path, Path], onet: tuple[Path, Path], runner: Runner, seed: int = 0) -> Base:
    """Write the base corpus under `root` (absolute paths inside)."""
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    files = {}
    for name, src in (("pnet.param", pnet[0]), ("pnet.bin", pnet[1]), ("onet.param", onet[0]), ("onet.bin", onet[1])):
        shutil.copyfile(src, root / name)
        files[name] = root / name
    img_dir = root / "img"
    img_dir.mkdir(exist_ok=True)
    images = _images(img_dir, seed)
    image_list = root / "list.txt"
    image_list.write_text("".join(f"{p}\n" for p in images))

    mean, norm = f"[{Base.MEAN}]", f"[{Base.NORM}]"
    build_cases = [
        Case("base", "table", ["ncnn2table", str(files["pnet.param"]), str(files["pnet.bin"]), str(image_list),
                               str(root / "pnet.table"), "shape=[12,12]", f"mean={mean}", f"norm={norm}",
                               "pixel=RGB", "thread=1"], allowed=frozenset({0})),
    ]
    _run_or_fail(runner, build_cases, root)
    build_cases = [
        Case("base", "int8", ["ncnn2int8", str(files["pnet.param"]), str(files["pnet.bin"]),
                              str(root / "pnet_int8.param"), str(root / "pnet_int8.bin"), str(root / "pnet.table")],
             allowed=frozenset({0})),
    ]
    _run_or_fail(runner, build_cases, root)

    profile = root / "profile.yaml"
    profile.write_text(yaml.safe_dump({
        "model": {"param": str(files["pnet.param"]), "bin": str(files["pnet.bin"])},
        "inputs": [{"shape": [12, 12], "pixel": "RGB", "resize": "resize",
                    "mean": [127.5, 127.5, 127.5], "norm": [0.0078125, 0.0078125, 0.0078125]}],
        "calibration": {"images": [str(image_list)], "holdout": 0.5, "seed": 0},
        "gate": ["cosine>=0.1"],
        "threads": 1,
    }, sort_keys=False))
    (root / "known_hosts").write_text("")
    targets = root / "targets.yaml"
    targets.write_text(yaml.safe_dump({
        "defaults": {"user": "fuzz", "timeout": 1, "retries": 0, "known_hosts": "known_hosts"},
        "boards": {"b1": {"host": "127.0.0.1", "port": 1, "tags": ["t"]}},
        "groups": {"g": ["b1"]},
    }, sort_keys=False))
    alias_dir = root / "alias"
    alias_dir.mkdir(exist_ok=True)
    (alias_dir / "known_hosts").write_text("")
    targets_alias = alias_dir / "targets.yaml"
    targets_alias.write_text(yaml.safe_dump({
        "defaults": {"timeout": 1, "retries": 0, "known_hosts": "known_hosts"},
        "boards": {"b1": {"host": "fuzzhost"}},
    }, sort_keys=False))
    sshcfg = root / "ssh_config"
    sshcfg.write_text("Host fuzzhost\n  HostName 127.0.0.1\n  Port 1\n  User fuzz\n  IdentityFile ~/.ssh/none\n"
                      "  ConnectTimeout 1\n\nHost *\n  User other\n")
    return Base(root=root, pnet_param=files["pnet.param"], pnet_bin=files["pnet.bin"],
                onet_param=files["onet.param"], onet_bin=files["onet.bin"], pnet_table=root / "pnet.table",
                pnet_int8_param=root / "pnet_int8.param", pnet_int8_bin=root / "pnet_int8.bin",
                images=images, image_list=image_list, profile=profile, targets=targets,
                targets_alias=targets_alias, sshcfg=sshcfg, known_hosts=root / "known_hosts")


def _run_or_fail(runner: Runner, cases: list[Case], root: Path) -> None:
    outcomes = runner.run_many([(c, root) for c in cases])
    for case, outcome in zip(cases, outcomes):
        problems = check_outcome(case, outcome, root)
        if problems or outcome.rc != 0:
            raise RuntimeError(f"building the fuzz corpus failed: {summary_line(case, outcome, problems)}\n"
                               f"{outcome.stderr[-2000:]}")

