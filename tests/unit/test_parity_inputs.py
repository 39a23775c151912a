"""Parity reads its --images as calibration and check read theirs (one list-file reader)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deployer.errors import DeployerError
from deployer.profiling.parity import expand_images, load_inputs


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("b.png", "a.jpg"):
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(folder / name)
    (folder / "notes.md").write_text("not an image")
    return folder


def test_files_folders_and_list_files(photos, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("# the calibration list format\nphotos/b.png\n\n")
    got = expand_images([photos / "a.jpg", photos, listing])
    assert got == [photos / "a.jpg", photos / "a.jpg", photos / "b.png", photos / "b.png"]
    inputs = load_inputs([listing], (16, 8))
    assert inputs.names == ["b.png"] and inputs.tensors[0].shape == (3, 8, 16)


def test_bad_inputs_name_the_flag_and_the_line(photos, tmp_path):
    with pytest.raises(DeployerError, match=r"^--images .*nope: no such file or folder"):
        expand_images([tmp_path / "nope"])
    listing = tmp_path / "list.txt"
    listing.write_text("photos/a.jpg\nphotos/missing.png\n")
    with pytest.raises(DeployerError, match=r"^--images .*list.txt: line 2: file not found: photos/missing.png"):
        expand_images([listing])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DeployerError, match="folder has no images"):
        expand_images([empty])
