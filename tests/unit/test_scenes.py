import numpy as np
import pytest

from sightline.export.scenes import MAX_OBJECTS, Conditions, generate_scene
from sightline.modelspec import NUM_CLASSES
from sightline.quality import quality_features


def test_the_same_seed_renders_the_same_frame_and_boxes():
    a, b = generate_scene(123), generate_scene(123)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.boxes, b.boxes)
    assert np.array_equal(a.classes, b.classes)


def test_different_seeds_render_different_frames():
    assert not np.array_equal(generate_scene(1).image, generate_scene(2).image)


def test_frames_are_bgr_uint8_with_float_boxes_and_integer_classes():
    scene = generate_scene(5)
    assert scene.image.shape == (480, 640, 3) and scene.image.dtype == np.uint8
    assert scene.boxes.dtype == np.float32 and scene.boxes.shape[1:] == (4,)
    assert scene.classes.dtype == np.int64 and len(scene.classes) == len(scene.boxes)


def test_scenes_hold_zero_to_ten_objects_of_every_class_inside_the_frame():
    counts, seen = [], set()
    for seed in range(150):
        scene = generate_scene(seed)
        counts.append(len(scene.boxes))
        seen.update(scene.classes.tolist())
        b = scene.boxes
        assert np.all(b[:, 0] >= 0) and np.all(b[:, 1] >= 0)
        assert np.all(b[:, 2] <= 640) and np.all(b[:, 3] <= 480)
        assert np.all(b[:, 2] > b[:, 0]) and np.all(b[:, 3] > b[:, 1])
    assert min(counts) == 0 and max(counts) == MAX_OBJECTS
    assert seen == set(range(NUM_CLASSES))


def test_objects_are_large_enough_to_learn_at_the_model_input():
    scale = 256 / 640
    for seed in range(100):
        scene = generate_scene(seed)
        long_side = np.maximum(scene.boxes[:, 2] - scene.boxes[:, 0], scene.boxes[:, 3] - scene.boxes[:, 1])
        assert np.all(long_side * scale >= 20)


def test_night_and_dusk_are_darker_than_day_with_the_same_objects():
    day = generate_scene(9)
    dusk = generate_scene(9, Conditions(brightness="dusk"))
    night = generate_scene(9, Conditions(brightness="night"))
    assert np.array_equal(day.boxes, night.boxes)
    b = [quality_features(s.image)["brightness"] for s in (day, dusk, night)]
    assert b[0] > b[1] > b[2]
    assert b[2] < 0.4 * b[0]


def test_a_numeric_brightness_scales_the_light():
    day = quality_features(generate_scene(4).image)["brightness"]
    half = quality_features(generate_scene(4, Conditions(brightness=0.5)).image)["brightness"]
    assert half == pytest.approx(day * 0.5, rel=0.05)


def test_motion_blur_makes_frames_measurably_less_sharp():
    sharp = quality_features(generate_scene(3).image)["sharpness"]
    blurred = quality_features(generate_scene(3, Conditions(motion_blur=15)).image)["sharpness"]
    assert blurred < 0.5 * sharp


def test_noise_and_rain_change_the_frame_but_not_the_objects():
    clean = generate_scene(8)
    for conditions in (Conditions(noise=12.0), Conditions(rain=0.5)):
        other = generate_scene(8, conditions)
        assert np.array_equal(clean.boxes, other.boxes)
        assert np.abs(clean.image.astype(int) - other.image.astype(int)).mean() > 1.0


@pytest.mark.parametrize("width,height", [(1280, 720), (320, 240), (480, 640), (800, 800)])
def test_resolution_and_aspect_ratio_are_honoured(width, height):
    scene = generate_scene(11, Conditions(width=width, height=height))
    assert scene.image.shape == (height, width, 3)
    if len(scene.boxes):
        assert scene.boxes[:, 2].max() <= width and scene.boxes[:, 3].max() <= height


def test_conditions_reject_unknown_fields_and_bad_values():
    with pytest.raises(ValueError):
        Conditions(fog=1.0)
    with pytest.raises(ValueError):
        Conditions(noise=-1.0)
    with pytest.raises(ValueError):
        Conditions(brightness="midnight")
