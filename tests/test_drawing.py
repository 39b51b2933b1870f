"""The core's overlay (_core.draw_instances) against a numpy reference of the blend and outline, and the
Python drawing layer (boxes, labels, FPS line) on real Instances."""

import numpy as np
import pytest

from m2f_edge import _core
from m2f_edge.drawing import draw_instances, palette

cv2 = pytest.importorskip("cv2")


def reference_overlay(frame, instance_map, colors, alpha, outline):
    """Integer blend round((f*(255-w) + c*w)/255), w = round(alpha*255); outline pixels get the colour."""
    out = frame.astype(np.int64).copy()
    weight = int(np.floor(alpha * 255.0 + 0.5))
    ids = instance_map.astype(np.int64)
    inside = ids > 0
    weights = np.where(inside, weight, 0)
    if outline:
        border = np.zeros_like(inside)
        h, w = ids.shape
        # a neighbour inside the image with another id puts the pixel on the outline
        border[1:, :] |= ids[1:, :] != ids[:-1, :]
        border[:-1, :] |= ids[:-1, :] != ids[1:, :]
        border[:, 1:] |= ids[:, 1:] != ids[:, :-1]
        border[:, :-1] |= ids[:, :-1] != ids[:, 1:]
        weights = np.where(inside & border, 255, weights)
    paint = np.zeros(frame.shape, np.int64)
    paint[inside] = colors[ids[inside] - 1]
    wgt = weights[..., None]
    blended = (out * (255 - wgt) + paint * wgt + 127) // 255
    return np.where(inside[..., None], blended, out).astype(np.uint8)


def random_case(rng, height=57, width=83, count=5):
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    instance_map = np.zeros((height, width), np.int32)
    for i in range(count):
        y0, x0 = rng.integers(0, height - 5), rng.integers(0, width - 5)
        instance_map[y0:y0 + rng.integers(3, 30), x0:x0 + rng.integers(3, 40)] = i + 1
    colors = rng.integers(0, 256, (count, 3), dtype=np.uint8)
    return frame, instance_map, colors


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 0.77, 1.0])
@pytest.mark.parametrize("outline", [False, True])
def test_blend_matches_numpy_reference(alpha, outline):
    rng = np.random.default_rng(int(alpha * 100) + outline)
    frame, instance_map, colors = random_case(rng)
    expected = reference_overlay(frame, instance_map, colors, alpha, outline)
    _core.draw_instances(frame, instance_map, colors, alpha=alpha, outline=outline, threads=3)
    np.testing.assert_array_equal(frame, expected)


def test_alpha_extremes_without_outline():
    rng = np.random.default_rng(1)
    frame, instance_map, colors = random_case(rng)
    original = frame.copy()
    _core.draw_instances(frame, instance_map, colors, alpha=0.0, outline=False)
    np.testing.assert_array_equal(frame, original)
    _core.draw_instances(frame, instance_map, colors, alpha=1.0, outline=False)
    inside = instance_map > 0
    np.testing.assert_array_equal(frame[inside], colors[instance_map[inside] - 1])
    np.testing.assert_array_equal(frame[~inside], original[~inside])


def test_outline_of_a_rectangle_is_its_border():
    frame = np.zeros((10, 12, 3), np.uint8)
    instance_map = np.zeros((10, 12), np.int32)
    instance_map[2:7, 3:9] = 1
    _core.draw_instances(frame, instance_map, np.array([[200, 100, 50]], np.uint8), alpha=0.0, outline=True)
    painted = frame[..., 0] == 200
    expected = np.zeros((10, 12), bool)
    expected[2:7, 3:9] = True
    expected[3:6, 4:8] = False
    np.testing.assert_array_equal(painted, expected)
    assert not frame[~expected].any()


def test_strided_views_are_drawn_in_place():
    rng = np.random.default_rng(7)
    frame, instance_map, colors = random_case(rng, 40, 50, 3)
    big = np.zeros((80, 50, 3), np.uint8)
    big[::2] = frame[:, ::-1]
    view = big[::2, ::-1]  # non-contiguous, negative column stride
    big_map = np.zeros((40, 100), np.int32)
    big_map[:, ::2] = instance_map
    map_view = big_map[:, ::2]
    colors_f = np.asfortranarray(colors)
    expected = reference_overlay(frame, instance_map, colors, 0.4, True)
    _core.draw_instances(view, map_view, colors_f, alpha=0.4, outline=True)
    np.testing.assert_array_equal(view, expected)
    assert not big[1::2].any()  # the rows between the view's rows stay untouched


def test_bad_arguments_name_the_argument():
    frame = np.zeros((8, 8, 3), np.uint8)
    instance_map = np.zeros((8, 8), np.int32)
    colors = np.zeros((2, 3), np.uint8)
    with pytest.raises(TypeError, match="frame"):
        _core.draw_instances(frame.astype(np.float32), instance_map, colors)
    with pytest.raises(TypeError, match="instance_map"):
        _core.draw_instances(frame, instance_map.astype(np.int64), colors)
    with pytest.raises(ValueError, match="instance_map"):
        _core.draw_instances(frame, np.zeros((8, 9), np.int32), colors)
    with pytest.raises(ValueError, match="colors"):
        _core.draw_instances(frame, instance_map, np.zeros((2, 4), np.uint8))
    with pytest.raises(ValueError, match="alpha"):
        _core.draw_instances(frame, instance_map, colors, alpha=1.5)
    readonly = frame.copy()
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="frame.*read-only"):
        _core.draw_instances(readonly, instance_map, colors)


def test_out_of_range_id_raises_and_leaves_the_frame_untouched():
    rng = np.random.default_rng(3)
    frame, instance_map, colors = random_case(rng)
    instance_map[-1, -1] = colors.shape[0] + 1
    original = frame.copy()
    with pytest.raises(ValueError, match=r"instance_map value 6 at row 56, column 82 is outside 0..5"):
        _core.draw_instances(frame, instance_map, colors)
    np.testing.assert_array_equal(frame, original)
    instance_map[-1, -1] = -1
    with pytest.raises(ValueError, match="outside"):
        _core.draw_instances(frame, instance_map, colors)
    # the next, valid call works
    instance_map[-1, -1] = 0
    _core.draw_instances(frame, instance_map, colors)


def test_palette_is_stable_and_distinct():
    colors = palette(12)
    assert colors.shape == (12, 3) and colors.dtype == np.uint8
    np.testing.assert_array_equal(colors, palette(12))
    np.testing.assert_array_equal(colors[:5], palette(5))
    assert len({tuple(c) for c in colors}) == 12
    assert palette(0).shape == (0, 3)


def make_instances():
    from m2f_edge.instances import Instances

    masks = np.zeros((2, 60, 80), bool)
    masks[0, 10:30, 5:25] = True
    masks[1, 20:50, 30:70] = True
    boxes = np.array([[5, 10, 25, 30], [30, 20, 70, 50]], np.float32)
    return Instances(masks, np.array([0.9, 0.6], np.float32), np.array([0, 1]), boxes,
                     class_table=["cat", "dog"])


def test_draw_instances_on_real_instances():
    instances = make_instances()
    frame = np.full((60, 80, 3), 50, np.uint8)
    colors = np.array([[0, 0, 255], [0, 255, 0]], np.uint8)
    plain = frame.copy()
    _core.draw_instances(plain, instances.instance_map, colors, alpha=0.5, outline=True)
    drawn = draw_instances(frame.copy(), instances, colors=colors, boxes=False, labels=False)
    np.testing.assert_array_equal(drawn, plain)

    # boxes: the rectangle's edge pixels carry the instance colour (x2, y2 exclusive -> last pixel x2 - 1)
    boxed = draw_instances(frame.copy(), instances, colors=colors, alpha=0.0, outline=False, labels=False)
    assert tuple(boxed[10, 15]) == (0, 0, 255) and tuple(boxed[29, 15]) == (0, 0, 255)
    assert tuple(boxed[35, 30]) == (0, 255, 0) and tuple(boxed[35, 69]) == (0, 255, 0)
    assert tuple(boxed[35, 50]) == (50, 50, 50)

    # labels: text written near each box changes pixels there; copy=True leaves the input alone
    original = frame.copy()
    labelled = draw_instances(frame, instances, colors=colors, alpha=0.0, outline=False, boxes=False, copy=True,
                              fps=12.5)
    np.testing.assert_array_equal(frame, original)
    assert (labelled[:10, :60] != 50).any()  # the FPS line in the top-left corner
    assert (labelled[10:30, 5:40] != 50).any()


def test_draw_checks_the_frame():
    instances = make_instances()
    with pytest.raises(ValueError, match="frame"):
        draw_instances(np.zeros((60, 81, 3), np.uint8), instances)
    with pytest.raises(ValueError, match="frame"):
        draw_instances(np.zeros((60, 80), np.uint8), instances)
    with pytest.raises(ValueError, match="colors"):
        draw_instances(np.zeros((60, 80, 3), np.uint8), instances, colors=np.zeros((1, 3), np.uint8))


def test_color_by_label_uses_one_colour_per_class():
    instances = make_instances()
    frame = np.zeros((60, 80, 3), np.uint8)
    colors = np.array([[10, 20, 30], [40, 50, 60]], np.uint8)
    out = draw_instances(frame, instances[::-1], colors=colors, color_by="label", alpha=1.0, outline=False,
                         boxes=False, labels=False)
    assert tuple(out[15, 10]) == (10, 20, 30)  # label 0 although it is instance 1 after reversing
    assert tuple(out[45, 60]) == (40, 50, 60)
