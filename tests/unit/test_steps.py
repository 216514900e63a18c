"""The pure logic behind the Triton steps: request validation, letterboxing, padding."""

import numpy as np
import pytest
from corpus import good_jpeg

from sightline import modelspec, vision
from sightline.steps.images import InvalidInput
from sightline.steps.postprocess import postprocess_request, strip_padding
from sightline.steps.preprocess import letterbox_from_array, letterbox_to_array, preprocess_request


def request_of(*frames):
    return np.array([[f] for f in frames], dtype=np.object_)


def test_a_request_becomes_one_letterboxed_model_input_per_frame():
    images, letterbox, frames = preprocess_request(request_of(good_jpeg(640, 360), good_jpeg(200, 400)))
    size = modelspec.INPUT_SIZE
    assert images.shape == (2, 3, size, size) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert letterbox.shape == (2, 5)
    assert [f.shape for f in frames] == [(360, 640, 3), (400, 200, 3)]
    assert letterbox_from_array(letterbox[0]).width == 640


def test_letterbox_rows_round_trip():
    _, info = vision.letterbox(np.zeros((300, 500, 3), np.uint8), modelspec.INPUT_SIZE)
    back = letterbox_from_array(letterbox_to_array(info))
    assert back.scale == pytest.approx(info.scale, rel=1e-6)  # carried as float32
    assert (back.pad_x, back.pad_y, back.width, back.height) == (info.pad_x, info.pad_y, info.width, info.height)


@pytest.mark.parametrize(
    "tensor, reason",
    [
        (np.zeros((1, 1), np.float32), "bad_dtype"),
        (np.array([[b"a", b"b"]], dtype=np.object_), "bad_shape"),
        (np.array([[1234]], dtype=np.object_), "bad_dtype"),
    ],
)
def test_a_request_of_the_wrong_dtype_or_shape_is_refused(tensor, reason):
    with pytest.raises(InvalidInput) as caught:
        preprocess_request(tensor)
    assert caught.value.reason == reason


def test_a_bad_frame_in_a_multi_frame_request_is_named_by_index():
    with pytest.raises(InvalidInput, match="frame 1: empty input"):
        preprocess_request(request_of(good_jpeg(), b""))


def test_detections_of_a_multi_frame_request_are_padded_and_stripped():
    size = modelspec.INPUT_SIZE
    info = vision.LetterboxInfo(scale=1.0, pad_x=0, pad_y=0, width=size, height=size)
    cells = 16
    predictions = np.zeros((2, cells, 4 + modelspec.NUM_CLASSES), np.float32)
    predictions[0, 0, :4] = [10, 10, 50, 50]
    predictions[0, 0, 4] = 0.9  # one car in frame 0, nothing in frame 1
    letterbox = np.stack([letterbox_to_array(info)] * 2)
    out = postprocess_request(predictions, letterbox)
    assert out.shape == (2, 1, 6)
    assert strip_padding(out[1]).shape == (0, 6)
    np.testing.assert_allclose(strip_padding(out[0])[0], [10, 10, 50, 50, 0.9, 0], atol=1e-5)
