import numpy as np
import pytest

from sightline.modelspec import INPUT_SIZE, LETTERBOX_PAD_VALUE
from sightline.vision import (
    LetterboxInfo,
    box_iou,
    decode_predictions,
    letterbox,
    nms_per_class,
    postprocess,
    unletterbox_boxes,
)


def _to_model(boxes, info):
    return boxes * info.scale + np.array([info.pad_x, info.pad_y] * 2, np.float32)


@pytest.mark.parametrize("width,height", [(640, 480), (1280, 720), (480, 640), (256, 256), (300, 1000), (97, 53)])
def test_a_box_letterboxed_and_back_returns_to_itself(width, height):
    image = np.zeros((height, width, 3), np.uint8)
    chw, info = letterbox(image)
    assert chw.shape == (3, INPUT_SIZE, INPUT_SIZE) and chw.dtype == np.float32
    assert (info.width, info.height) == (width, height)
    box = np.array([[0.1 * width, 0.2 * height, 0.7 * width, 0.9 * height]], np.float32)
    back = unletterbox_boxes(_to_model(box, info), info)
    np.testing.assert_allclose(back, box, atol=1e-3 * max(width, height))


def test_letterbox_fills_the_long_side_pads_grey_and_swaps_to_rgb_in_0_to_1():
    image = np.zeros((480, 640, 3), np.uint8)
    image[:, :, 0] = 255  # pure blue in BGR
    chw, info = letterbox(image)
    assert info.scale == pytest.approx(0.4) and info.pad_x == 0 and info.pad_y == 32
    assert chw[2, 128, 128] == pytest.approx(1.0) and chw[0, 128, 128] == 0.0  # blue is channel 2 in RGB
    assert chw[:, 0, 0] == pytest.approx(np.full(3, LETTERBOX_PAD_VALUE / 255.0))


def test_unletterboxed_boxes_are_clipped_to_the_image():
    info = LetterboxInfo(scale=0.4, pad_x=0, pad_y=32, width=640, height=480)
    back = unletterbox_boxes(np.array([[-10, 0, 300, 250]], np.float32), info)
    assert back.tolist() == [[0, 0, 640, 480]]


def test_box_iou_matches_hand_computed_overlaps():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0]], rtol=1e-6)


def test_nms_keeps_the_best_of_overlapping_boxes_of_one_class():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    keep = nms_per_class(boxes, np.array([0.6, 0.9, 0.5]), np.array([0, 0, 0]), iou_threshold=0.5)
    assert keep.tolist() == [1, 2]


def test_nms_keeps_overlapping_boxes_of_different_classes():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10]], np.float32)
    keep = nms_per_class(boxes, np.array([0.6, 0.9]), np.array([0, 2]), iou_threshold=0.5)
    assert sorted(keep.tolist()) == [0, 1]


def test_nms_stops_at_max_detections_and_handles_no_boxes():
    boxes = np.array([[i * 20, 0, i * 20 + 10, 10] for i in range(10)], np.float32)
    assert len(nms_per_class(boxes, np.linspace(1, 0.1, 10), np.zeros(10, int), 0.5, max_detections=3)) == 3
    assert nms_per_class(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int)).shape == (0,)


def test_decode_keeps_cells_whose_best_class_reaches_the_threshold():
    pred = np.zeros((3, 7), np.float32)
    pred[0] = [1, 2, 3, 4, 0.1, 0.8, 0.2]
    pred[1] = [5, 6, 7, 8, 0.2, 0.1, 0.25]
    boxes, scores, classes = decode_predictions(pred, score_threshold=0.3)
    assert boxes.tolist() == [[1, 2, 3, 4]]
    assert scores.tolist() == pytest.approx([0.8]) and classes.tolist() == [1]


def test_postprocess_returns_detections_in_original_image_pixels():
    info = LetterboxInfo(scale=0.4, pad_x=0, pad_y=32, width=640, height=480)
    truth = np.array([[100, 120, 260, 220]], np.float32)
    pred = np.zeros((4, 7), np.float32)
    pred[0, :4] = _to_model(truth, info)[0]
    pred[0, 4:] = [0.05, 0.9, 0.1]
    pred[1, :4] = pred[0, :4] + 1  # a duplicate, suppressed by NMS
    pred[1, 4:] = [0.0, 0.7, 0.0]
    dets = postprocess(pred, info, score_threshold=0.3)
    assert dets.shape == (1, 6) and dets.dtype == np.float32
    np.testing.assert_allclose(dets[0, :4], truth[0], atol=1e-3)
    assert dets[0, 4] == pytest.approx(0.9) and dets[0, 5] == 1


def test_postprocess_of_an_empty_prediction_is_an_empty_kx6_array():
    info = LetterboxInfo(scale=1.0, pad_x=0, pad_y=0, width=256, height=256)
    assert postprocess(np.zeros((1024, 7), np.float32), info).shape == (0, 6)
