"""The examples' data folders are reused only when the same inputs made them: calibration crops
made before a photo's wheel was installed are not the crops a fresh machine makes."""

from __future__ import annotations

from examples import data


def test_calibration_crops_are_remade_when_the_photo_set_changes(tmp_path, monkeypatch):
    first = data.calibration_photos(tmp_path, count=4)
    assert any("astronaut" in p.name for p in first.files)
    again = data.calibration_photos(tmp_path, count=4)
    assert again.files == first.files                                   # same photos: reused
    monkeypatch.delitem(data.CALIBRATION_PHOTOS, "astronaut")           # a wheel went missing
    other = data.calibration_photos(tmp_path, count=4)
    assert not any("astronaut" in p.name for p in other.files)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(p.name for p in other.files)
