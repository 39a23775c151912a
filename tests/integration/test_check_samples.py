"""Preprocessing shared by quantize and check, against the zoo's independent ncnn-based reference."""

from __future__ import annotations

import numpy as np
import pytest

from deployer.check.samples import list_inputs
from deployer.errors import DeployerError
from deployer.inputs.spec import InputSpec
from deployer.inputs.tensor import load_array


def _spec_from_zoo(model, **extra) -> InputSpec:
    pre = model.preprocess
    _, h, w = model.input_shape
    return InputSpec(shape=(w, h), pixel=pre.pixel, mean=list(pre.mean), norm=list(pre.norm),
                     resize=pre.resize, pad_value=pre.pad_value, **extra)


@pytest.mark.parametrize("which", ["yolov8n", "mobilenet_v2"])
def test_matches_zoo_reference(which, zoo_model, calib_photos):
    """Letterbox (YOLOv8n) and stretch resize (MobileNetV2) give the zoo's tensors for real photos."""
    from examples.infer import image_to_input, load_rgb

    model = zoo_model(which)
    spec = _spec_from_zoo(model)
    for path in calib_photos.files[:4]:
        ours = load_array(path, spec)
        ref = image_to_input(load_rgb(path), model.preprocess, model.input_shape)
        assert ours.shape == ref.shape == model.input_shape
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


def test_list_file_errors_name_the_line(tmp_path, calib_photos):
    lst = tmp_path / "list.txt"
    lst.write_text(f"{calib_photos.files[0]}\n\n# comment\nmissing.png\n")
    with pytest.raises(DeployerError) as err:
        list_inputs(lst)
    assert str(err.value) == f"{lst}: line 4: file not found: missing.png"
    lst.write_text(f"{calib_photos.files[0]}\n{calib_photos.files[1].name}\n")
    (tmp_path / calib_photos.files[1].name).write_bytes(calib_photos.files[1].read_bytes())
    assert list_inputs(lst) == [calib_photos.files[0], tmp_path / calib_photos.files[1].name]
