"""The pure logic behind the Triton steps: request validation, letterboxing, padding."""

import numpy as np
import pytest
from corpus import good_jpeg

from sightline import modelspec, vision
from sightline.images import InvalidInput
from sightline.steps.postprocess import postprocess_request, strip_padding
from sightline.steps.preprocess import letterbox_from_array, letterbox_to_array, preprocess_request


def request_of(*frames):
    return np.array([[f] for f in frames], dtype=np.object_)


def test_a_request_becomes_one_letterboxed_model_input_per_frame():
    result = preprocess_request(request_of(good_jpeg(640, 360), good_jpeg(200, 400)))
    size = modelspec.INPUT_SIZE
    # uint8 RGB, as the model step's graph takes it (it casts and scales to 0..1 itself)
    assert result.images.shape == (2, 3, size, size) and result.images.dtype == np.uint8
    assert (result.images[0, :, 0, 0] == modelspec.LETTERBOX_PAD_VALUE).all()  # the padding above a 16:9 frame
    assert result.letterbox.shape == (2, 5)
    assert result.shapes == [(360, 640), (400, 200)] and result.first_frame.shape == (360, 640, 3)
    assert [f["width"] for f in result.features] == [640.0, 200.0]
    assert letterbox_from_array(result.letterbox[0]).width == 640


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


# --- hostile input: every request isolated, parameters of any type and size ------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sightline.steps.ort_runner import run_isolated  # noqa: E402
from sightline.steps.preprocess import check_parameters  # noqa: E402


def test_a_401_digit_capture_time_is_refused_by_name():
    with pytest.raises(InvalidInput) as caught:
        check_parameters({"camera_id": "cam-1", "capture_time_ms": "9" * 401})
    assert caught.value.reason == "bad_parameter"
    assert "capture_time_ms" in str(caught.value) and len(str(caught.value)) < 200


def test_ordinary_stream_parameters_pass():
    params = {"camera_id": "cam-1", "frame_seq": 12, "capture_time_ms": "1764500000000", "other": [1]}
    assert check_parameters(params) == params
    assert check_parameters({}) == {}


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(10**500), 10**500), st.integers(4400, 6000).map(lambda k: 7 * 10**k), st.floats(),
                    st.text(max_size=600), st.text(alphabet="0123456789", max_size=600),
                    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=500, derandomize=True)
@given(st.dictionaries(st.sampled_from(["camera_id", "frame_seq", "capture_time_ms", "x"]), _VALUES))
def test_any_parameters_are_either_accepted_or_refused_by_name(params):
    try:
        checked = check_parameters(params)
    except InvalidInput as exc:
        assert exc.reason == "bad_parameter" and len(str(exc)) < 200
        return
    for key in ("frame_seq", "capture_time_ms"):
        if checked.get(key) is not None:
            value = int(checked[key])
            assert 0 <= value < 2**63 and float(value) / 1000.0 < float("inf")


def test_text_that_is_not_latin_1_in_image_is_refused_as_a_wrong_dtype():
    with pytest.raises(InvalidInput) as caught:
        preprocess_request(np.array([["\u20ac"]], dtype=np.object_))
    assert caught.value.reason == "bad_dtype"


def test_a_request_holds_one_decoded_frame_at_a_time(monkeypatch):
    """32 frames of a request are decoded, letterboxed and measured one by one."""
    import sightline.steps.preprocess as pre

    alive = []
    real = pre.decode_frame

    def tracked(data, max_pixels, min_side=0):
        decoded = real(data, max_pixels, min_side)
        frame = decoded.image
        alive.append(__import__("weakref").ref(frame.base if frame.base is not None else frame))
        return decoded

    monkeypatch.setattr(pre, "decode_frame", tracked)
    result = preprocess_request(request_of(*[good_jpeg(64, 48, seed=s) for s in range(32)]))
    assert result.images.shape[0] == 32 and len(result.features) == 32
    assert sum(ref() is not None for ref in alive) <= 2  # the first frame (kept for audit) at most, and one more


def test_postprocess_refuses_tensors_of_the_wrong_shape_by_name():
    good_row = letterbox_to_array(vision.LetterboxInfo(1.0, 0, 0, 64, 64))
    cases = [
        (np.zeros((1, 4, 2), np.float32), np.stack([good_row]), "bad_shape"),
        (np.zeros((2, 4, 4 + modelspec.NUM_CLASSES), np.float32), np.stack([good_row]), "bad_shape"),
        (np.zeros((1, 4, 4 + modelspec.NUM_CLASSES), np.float32), np.array([[0, 0, 0, 64, 64]], np.float32), "bad_letterbox"),
        (np.zeros((1, 4, 4 + modelspec.NUM_CLASSES), np.float32), np.array([[np.nan, 0, 0, 64, 64]], np.float32), "bad_letterbox"),
    ]
    for predictions, letterbox, reason in cases:
        with pytest.raises(InvalidInput) as caught:
            postprocess_request(predictions, letterbox)
        assert caught.value.reason == reason


def test_one_request_that_breaks_the_model_fails_alone():
    calls = []

    def run(feeds):
        calls.append(len(feeds["x"]))
        if np.isnan(feeds["x"]).any():
            raise RuntimeError("the model cannot take NaN")
        return {"y": feeds["x"] * 2}

    requests = [{"x": np.ones((2, 3), np.float32)}, {"x": np.full((1, 3), np.nan, np.float32)},
                ValueError("missing input x"), {"x": np.zeros((1, 3), np.float32)}]
    results = run_isolated(run, requests)
    np.testing.assert_array_equal(results[0]["y"], np.full((2, 3), 2.0))
    assert isinstance(results[1], RuntimeError) and isinstance(results[2], ValueError)
    np.testing.assert_array_equal(results[3]["y"], np.zeros((1, 3)))
    assert calls == [4, 2, 1, 1]  # the batch once, then each request alone


def test_a_model_that_returns_the_wrong_number_of_rows_fails_its_requests_not_silently():
    results = run_isolated(lambda feeds: {"y": np.zeros((1, 3))}, [{"x": np.ones((2, 3))}, {"x": np.ones((1, 3))}])
    assert isinstance(results[0], ValueError) and results[1]["y"].shape == (1, 3)


class _FakePb:
    """The few triton_python_backend_utils names the model step uses."""

    class Tensor:
        def __init__(self, name, value):
            self.name, self.value = name, value

        def as_numpy(self):
            return self.value

    class TritonError:
        def __init__(self, message, code=None):
            self.message = message

    class InferenceResponse:
        def __init__(self, output_tensors, error=None):
            self.outputs, self.error = {t.name: t.value for t in output_tensors}, error

    @staticmethod
    def get_input_tensor_by_name(request, name):
        return _FakePb.Tensor(name, request[name]) if name in request else None


class _NoTelemetry:
    def batch(self, size):
        pass

    def flush(self):
        pass


def test_the_onnx_step_serves_a_batch_whose_one_request_breaks_the_model():
    """The committed model in ONNX Runtime: a request of the wrong spatial size cannot join
    the batch nor run; it fails alone with its reason, the others get their own rows."""
    from pathlib import Path

    from sightline.steps.ort_runner import OrtRunner, TritonPythonModel

    onnx = Path(__file__).resolve().parents[2] / "model_repository" / "detector_model" / "1" / "model.onnx"
    step = TritonPythonModel()
    step.pb_utils, step.telemetry, step.runner = _FakePb, _NoTelemetry(), OrtRunner(onnx)
    name = step.runner.input_names[0]
    size = modelspec.INPUT_SIZE
    rng = np.random.default_rng(0)
    good = [rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8) for n in (1, 2)]
    requests = [{name: good[0]}, {name: np.zeros((1, 3, 17, 5), np.uint8)}, {}, {name: good[1]}]
    responses = step.execute(requests)
    assert [r.error is None for r in responses] == [True, False, False, True]
    assert "[reason=internal]" in responses[1].error.message and "missing input" in responses[2].error.message
    alone = step.runner.run({name: good[1]})
    for output, value in alone.items():
        np.testing.assert_allclose(responses[3].outputs[output], value, rtol=1e-4, atol=1e-5)
        assert responses[0].outputs[output].shape[0] == 1


def test_a_frame_larger_than_an_uncompressed_frame_at_the_limit_is_refused_before_decoding():
    from sightline.steps.preprocess import frame_byte_limit

    max_pixels = 64 * 64
    frame = good_jpeg(32, 32)
    padded = frame[:-2] + b"\x00" * (frame_byte_limit(max_pixels) - len(frame) + 1) + frame[-2:]
    with pytest.raises(InvalidInput, match=r"frame 1: frame too large: \d+ bytes, more than the limit") as refused:
        preprocess_request(request_of(frame, padded), max_pixels=max_pixels)
    assert refused.value.reason == "too_many_bytes"
    assert len(preprocess_request(request_of(frame, frame), max_pixels=max_pixels).shapes) == 2


def test_a_request_whose_frames_hold_more_than_four_frames_at_the_limit_is_refused_from_the_headers(monkeypatch):
    """32 frames of 1080p fit; 32 frames at the limit (seconds of one core) do not, and
    nothing is decoded before that is known."""
    import sightline.steps.preprocess as pre

    max_pixels = 64 * 48
    at_limit = good_jpeg(64, 48)
    served = preprocess_request(request_of(*[at_limit] * 4), max_pixels=max_pixels)
    assert len(served.shapes) == 4
    decoded = []
    monkeypatch.setattr(pre, "decode_frame", lambda *a, **k: decoded.append(1))
    with pytest.raises(InvalidInput, match=r"request too large: its 5 frames hold 15360 pixels, more than the "
                                           r"per-request limit of 12288") as refused:
        preprocess_request(request_of(*[at_limit] * 5), max_pixels=max_pixels)
    assert refused.value.reason == "request_too_large" and decoded == []
    # at the default limit: 32 frames of 1920x1080 are within it (the headers alone are read)
    assert 32 * 1920 * 1080 <= pre.REQUEST_PIXELS_IN_FRAMES * pre.DEFAULT_MAX_PIXELS


def test_megabytes_of_filler_between_jpeg_segments_are_passed_over_to_the_real_frame_header():
    from sightline.images import read_header

    frame = good_jpeg(48, 32)
    for filler in (b"\x01" * (8 << 20), b"\xff" * (8 << 20), b"\xff\x00" * (4 << 20), b"\xff\xd3" * (4 << 20)):
        header = read_header(frame[:2] + filler + frame[2:])
        assert (header.width, header.height) == (48, 32)


def scene_jpeg(width: int, height: int, seed: int = 0) -> tuple[bytes, object]:
    import cv2

    from sightline.export.scenes import Conditions, generate_scene

    scene = generate_scene(seed=seed, conditions=Conditions(width=width, height=height))
    return cv2.imencode(".jpg", scene.image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes(), scene


@pytest.mark.parametrize("width, height, factor", [(640, 480, 1), (1280, 720, 2), (1920, 1080, 4), (3840, 2160, 8)])
def test_a_large_frame_is_decoded_reduced_and_still_reported_and_mapped_at_the_cameras_size(width, height, factor):
    data, _ = scene_jpeg(width, height)
    reduced = preprocess_request(request_of(data))
    full = preprocess_request(request_of(data), reduce=False)
    assert reduced.first_factor == factor and reduced.first_frame.shape[:2] == (-(-height // factor), -(-width // factor))
    # what the resolution signals and the box mapping see is the camera's frame
    assert reduced.shapes == full.shapes == [(height, width)]
    for key in ("width", "height", "pixels", "aspect_ratio"):
        assert reduced.features[0][key] == full.features[0][key]
    np.testing.assert_allclose(reduced.letterbox, full.letterbox, rtol=2e-3, atol=0.5)
    info = letterbox_from_array(reduced.letterbox[0])
    corners = vision.unletterbox_boxes(np.array([[info.pad_x, info.pad_y, modelspec.INPUT_SIZE - info.pad_x,
                                                  modelspec.INPUT_SIZE - info.pad_y]], np.float32), info)
    np.testing.assert_allclose(corners[0], [0, 0, width, height], atol=0.01 * width)
    # the model sees nearly the same picture (libjpeg's scaling averages; a plain resize from
    # the full frame skips pixels), and the light and contrast the quality signals report agree
    assert reduced.images.dtype == np.uint8
    assert np.abs(reduced.images.astype(np.float32) - full.images).mean() < 8  # grey levels of 255
    for key in ("brightness", "contrast"):
        assert reduced.features[0][key] == pytest.approx(full.features[0][key], abs=0.01)


def test_detections_of_reduced_1080p_frames_match_the_full_decode():
    """The committed model finds the same objects at 1080p whichever way the frame was decoded."""
    from sightline.export.evaluate import onnx_predictor

    predict = onnx_predictor(str(modelspec_model_path()))
    matched = total = 0
    for seed in range(12):
        data, _ = scene_jpeg(1920, 1080, seed=40_000_000 + seed)
        outs = []
        for reduce in (True, False):
            pre = preprocess_request(request_of(data), reduce=reduce)
            raw = predict(pre.images)
            outs.append(vision.postprocess(raw[0], letterbox_from_array(pre.letterbox[0])))
        full, reduced = outs
        total += len(full)
        if len(full) and len(reduced):
            iou = vision.box_iou(full[:, :4], reduced[:, :4])
            matched += int((iou.max(axis=1) >= 0.5).sum())
    assert total > 20 and matched >= 0.9 * total, (matched, total)


def modelspec_model_path():
    from pathlib import Path

    return Path(__file__).resolve().parents[2] / "model_repository" / "detector_model" / "1" / "model.onnx"
