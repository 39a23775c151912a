"""The demo's eval set: several framings of every labelled ImageNet photo, none used to calibrate."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from examples import data


def test_imagenet_views_are_distinct_labelled_and_stable(imagenet_views, calib_photos, tmp_path):
    views = imagenet_views
    photos = data.imagenet_samples()
    assert len(views.files) == len(photos) * len(data.EVAL_VIEWS) == 120
    # every view is labelled with its photo's class, and each photo contributes every view
    for path, label in photos:
        mine = [f for f in views.files if f.name.startswith(path.stem + "_")]
        assert len(mine) == len(data.EVAL_VIEWS)
        assert {views.label_of(f) for f in mine} == {label}
        # the views of one photo are different images, not copies
        digests = {hashlib.sha256(np.asarray(Image.open(f)).tobytes()).hexdigest() for f in mine}
        assert len(digests) == len(mine)
    # the mirrored whole photo is the whole photo mirrored
    first = photos[0][0].stem
    full = np.asarray(Image.open(views.folder / f"{first}_full.png"))
    flip = np.asarray(Image.open(views.folder / f"{first}_flip.png"))
    assert np.array_equal(full[:, ::-1], flip)
    # no overlap with calibration: different source photos entirely
    assert not {Path(f).name for f in views.files} & {Path(f).name for f in calib_photos.files}
    # deterministic: a fresh folder gets the same bytes
    again = data.imagenet_views(tmp_path / "again")
    for a, b in zip(views.files, again.files):
        assert a.name == b.name and a.read_bytes() == b.read_bytes()
