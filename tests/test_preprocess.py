"""_core.preprocess against an independent reference built from OpenCV and numpy.

The reference resizes the frame as float32 with cv2.resize(INTER_LINEAR) (cv2's uint8 path rounds
to integers, so it is not comparable), reorders channels with cv2.cvtColor, pads with numpy,
normalises with numpy and transposes to planar. Where OpenCV 5 resizes floats with Intel IPP (the
x86 wheels) it takes each sample's source position exactly, as the core does (within 1.2e-6 after
normalisation, measured on IPP's AVX-512, AVX2 and SSE4.2 paths). OpenCV's own code (ARM builds,
distribution builds, OPENCV_IPP=disabled) and OpenCV 4.x round that position to float first, which
moves the result by up to 2.9e-4 (OpenCV 5.1) or ~1e-3 (4.x) after normalisation on large frames, so
the tolerance is wider there.
"""

import pickle

import cv2
import numpy as np
import pytest

from m2f_edge import _core

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
OPENCV_EXACT_POSITIONS = (int(cv2.__version__.split(".")[0]) >= 5 and hasattr(cv2, "ipp")
                          and cv2.ipp.useIPP())
TOL_F32 = 1e-4 if OPENCV_EXACT_POSITIONS else 2e-3
TOL_F16 = 2e-3 if OPENCV_EXACT_POSITIONS else 4e-3

TO_RGB = {
    "bgr": cv2.COLOR_BGR2RGB,
    "rgb": None,
    "bgra": cv2.COLOR_BGRA2RGB,
    "rgba": cv2.COLOR_RGBA2RGB,
    "gray": cv2.COLOR_GRAY2RGB,
}
CHANNELS = {"bgr": 3, "rgb": 3, "bgra": 4, "rgba": 4, "gray": 1}


def content_size(mode, height, width, net_h, net_w):
    if mode == "stretch":
        return net_h, net_w
    scale = min(net_h / height, net_w / width)
    return min(net_h, int(height * scale + 0.5)), min(net_w, int(width * scale + 0.5))


def reference(frame, net_h, net_w, color="bgr", mode="stretch", mean=MEAN, std=STD):
    """(3, net_h, net_w) float32 computed with OpenCV and numpy only."""
    frame = np.ascontiguousarray(frame)
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    height, width = frame.shape[:2]
    content_h, content_w = content_size(mode, height, width, net_h, net_w)
    resized = cv2.resize(frame.astype(np.float32), (content_w, content_h), interpolation=cv2.INTER_LINEAR)
    rgb = resized if TO_RGB[color] is None else cv2.cvtColor(resized, TO_RGB[color])
    canvas = np.zeros((net_h, net_w, 3), np.float32)  # letterbox pad: pixel value 0
    canvas[:content_h, :content_w] = rgb
    normalised = (canvas / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def random_frame(rng, height, width, color="bgr"):
    channels = CHANNELS[color]
    shape = (height, width) if channels == 1 else (height, width, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def run(frames, net_h, net_w, dtype=np.float32, batch=None, **kwargs):
    if batch is None:
        batch = len(frames) if isinstance(frames, list) else (frames.shape[0] if frames.ndim == 4 else 1)
    out = np.full((batch, 3, net_h, net_w), np.nan, dtype)
    transforms = _core.preprocess(frames, out, **kwargs)
    return out, transforms


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ---- correctness -----------------------------------------------------------


@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
@pytest.mark.parametrize("color", ["bgr", "rgb", "bgra", "rgba", "gray"])
def test_every_color_layout_matches_opencv(rng, color, mode):
    frame = random_frame(rng, 97, 131, color)
    out, transforms = run(frame, 64, 80, color=color, resize=mode)
    np.testing.assert_allclose(out[0], reference(frame, 64, 80, color, mode), atol=TOL_F32, rtol=0)
    assert len(transforms) == 1


def test_gray_with_a_channel_axis_matches_2d_gray(rng):
    frame = random_frame(rng, 45, 77, "gray")
    out_2d, _ = run(frame, 50, 60, color="gray")
    out_3d, _ = run(frame[:, :, None], 50, 60, color="gray")
    np.testing.assert_array_equal(out_2d, out_3d)
    np.testing.assert_allclose(out_2d[0], reference(frame, 50, 60, "gray"), atol=TOL_F32, rtol=0)
    # gray is replicated: the three planes differ only by their mean/std
    pixels = out_2d[0] * STD[:, None, None] + MEAN[:, None, None]
    np.testing.assert_allclose(pixels[0], pixels[1], atol=1e-5)
    np.testing.assert_allclose(pixels[0], pixels[2], atol=1e-5)


@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
@pytest.mark.parametrize(
    "frame_size,net_size",
    [
        ((1080, 1920), (800, 800)),  # NGC deployable model
        ((1080, 1920), (544, 960)),  # TAO export default
        ((544, 960), (544, 960)),  # same size
        ((32, 32), (800, 800)),  # smallest frame, large upscale
        ((37, 53), (61, 47)),  # odd, up in one axis and down in the other
        ((1000, 999), (40, 41)),  # strong downscale, no antialiasing
        ((480, 640), (640, 640)),  # TAO tutorial spec
        ((720, 1280), (360, 640)),  # exact 2x downscale (OpenCV switches to INTER_AREA: same result)
    ],
)
def test_sizes_match_opencv(rng, frame_size, net_size, mode):
    frame = random_frame(rng, *frame_size)
    out, transforms = run(frame, *net_size, resize=mode)
    np.testing.assert_allclose(out[0], reference(frame, *net_size, mode=mode), atol=TOL_F32, rtol=0)
    t = transforms[0]
    assert (t.mode, t.frame_height, t.frame_width, t.net_height, t.net_width) == (mode,) + frame_size + net_size
    assert (t.content_height, t.content_width) == content_size(mode, *frame_size, *net_size)


def test_smooth_image_is_close_to_the_continuous_resize():
    # a linear ramp is reproduced exactly by bilinear sampling away from the clamped borders
    height, width = 100, 200
    ramp = np.tile(np.arange(width, dtype=np.float32), (height, 1))
    frame = np.repeat(ramp.astype(np.uint8)[:, :, None], 3, axis=2)
    out, _ = run(frame, 50, 400)
    pixels = (out[0, 0] * STD[0] + MEAN[0]) * 255.0
    xs = (np.arange(400) + 0.5) * (width / 400) - 0.5
    inner = (xs >= 0) & (xs <= width - 1)
    np.testing.assert_allclose(pixels[:, inner], np.broadcast_to(xs[inner], (50, inner.sum())), atol=2e-3)


def test_letterbox_pads_bottom_and_right_with_normalised_zero(rng):
    wide = random_frame(rng, 300, 600)
    out, transforms = run(wide, 256, 256, resize="letterbox")
    t = transforms[0]
    assert (t.content_height, t.content_width) == (128, 256)
    pad = (0.0 - MEAN) / STD
    for c in range(3):
        np.testing.assert_allclose(out[0, c, 128:, :], pad[c], rtol=0, atol=1e-6)
    tall = random_frame(rng, 600, 300)
    out, transforms = run(tall, 256, 256, resize="letterbox")
    assert (transforms[0].content_height, transforms[0].content_width) == (256, 128)
    for c in range(3):
        np.testing.assert_allclose(out[0, c, :, 128:], pad[c], rtol=0, atol=1e-6)
    assert not np.isnan(out).any()


@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_float16_output(rng, mode):
    frame = random_frame(rng, 1080, 1920)
    out16, _ = run(frame, 544, 960, dtype=np.float16, resize=mode)
    out32, _ = run(frame, 544, 960, dtype=np.float32, resize=mode)
    assert out16.dtype == np.float16
    np.testing.assert_allclose(out16[0].astype(np.float32), reference(frame, 544, 960, mode=mode), atol=TOL_F16, rtol=0)
    # the half conversion rounds to nearest even, as numpy does
    np.testing.assert_array_equal(out16.view(np.uint16), out32.astype(np.float16).view(np.uint16))


def test_custom_mean_and_std_and_a_single_std(rng):
    frame = random_frame(rng, 64, 64)
    mean, std = (0.5, 0.25, 0.125), (0.5, 0.25, 2.0)
    out, _ = run(frame, 40, 40, mean=mean, std=std)
    np.testing.assert_allclose(out[0], reference(frame, 40, 40, mean=mean, std=std), atol=TOL_F32, rtol=0)
    out, _ = run(frame, 40, 40, std=0.224)  # DeepStream's single std
    np.testing.assert_allclose(out[0], reference(frame, 40, 40, std=(0.224,) * 3), atol=TOL_F32, rtol=0)
    out, _ = run(frame, 40, 40, mean=np.array(mean), std=[0.5, 0.25, 2])
    np.testing.assert_allclose(out[0], reference(frame, 40, 40, mean=mean, std=std), atol=TOL_F32, rtol=0)


# ---- batches ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_batch_array(rng, mode):
    frames = rng.integers(0, 256, (3, 90, 160, 3), dtype=np.uint8)
    out, transforms = run(frames, 72, 72, resize=mode)
    assert len(transforms) == 3
    for b in range(3):
        np.testing.assert_allclose(out[b], reference(frames[b], 72, 72, mode=mode), atol=TOL_F32, rtol=0)


@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_list_of_frames_with_different_sizes(rng, mode):
    frames = [random_frame(rng, 1080, 1920), random_frame(rng, 48, 33), random_frame(rng, 640, 480)]
    out, transforms = run(frames, 96, 128, resize=mode)
    for b, frame in enumerate(frames):
        np.testing.assert_allclose(out[b], reference(frame, 96, 128, mode=mode), atol=TOL_F32, rtol=0)
        assert (transforms[b].frame_height, transforms[b].frame_width) == frame.shape[:2]
    out_tuple, _ = run(tuple(frames), 96, 128, batch=3, resize=mode)
    np.testing.assert_array_equal(out, out_tuple)


def test_thread_count_does_not_change_the_result(rng):
    frames = rng.integers(0, 256, (2, 300, 500, 3), dtype=np.uint8)
    results = [run(frames, 200, 333, threads=t, resize="letterbox")[0] for t in (1, 2, 3, 7, 0)]
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)


def test_transforms_are_resize_transforms_and_pickle(rng):
    _, transforms = run(random_frame(rng, 100, 200), 64, 64, resize="letterbox")
    t = transforms[0]
    assert isinstance(t, _core.ResizeTransform)
    assert (t.content_height, t.content_width) == (32, 64)
    u = pickle.loads(pickle.dumps(t))
    assert (u.mode, u.content_height, u.content_width) == ("letterbox", 32, 64)


# ---- strides: read in place -------------------------------------------------


def strided_cases(rng):
    base = random_frame(rng, 120, 150, "bgra")
    bgr = np.ascontiguousarray(base[:, :, :3])
    return {
        "crop": (bgr[10:-7, 5:-9], "bgr"),
        "step": (bgr[::2, ::3], "bgr"),
        "negative": (bgr[::-1, ::-1], "bgr"),
        "channels_reversed": (bgr[:, :, ::-1], "rgb"),
        "fortran": (np.asfortranarray(bgr), "bgr"),
        "alpha_dropped_view": (base[:, :, :3], "bgr"),
        "transposed": (bgr.transpose(1, 0, 2), "bgr"),
        "broadcast": (np.broadcast_to(bgr[:1], bgr.shape), "bgr"),
        "gray_column_view": (base[:, :, 1], "gray"),
        "gray_fortran": (np.asfortranarray(base[:, :, 0]), "gray"),
        "rgba_negative": (base[::-1], "rgba"),
        "read_only": (read_only(bgr.copy()), "bgr"),
    }


@pytest.mark.parametrize(
    "case",
    ["crop", "step", "negative", "channels_reversed", "fortran", "alpha_dropped_view", "transposed", "broadcast",
     "gray_column_view", "gray_fortran", "rgba_negative", "read_only"],
)
@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_any_strides(rng, case, mode):
    frame, color = strided_cases(rng)[case]
    before = frame.copy()
    out, _ = run(frame, 56, 88, color=color, resize=mode)
    np.testing.assert_allclose(out[0], reference(frame, 56, 88, color, mode), atol=TOL_F32, rtol=0)
    np.testing.assert_array_equal(frame, before)  # read only
    # same numbers as the packed layout
    packed, _ = run(np.ascontiguousarray(frame), 56, 88, color=color, resize=mode)
    np.testing.assert_array_equal(out, packed)


def test_strided_batch(rng):
    frames = rng.integers(0, 256, (4, 80, 100, 3), dtype=np.uint8)
    view = frames[::-2, 3:-3, ::-1]  # 2 frames, reversed batch, cropped rows, reversed columns
    out, _ = run(view, 64, 64)
    for b in range(2):
        np.testing.assert_allclose(out[b], reference(view[b], 64, 64), atol=TOL_F32, rtol=0)


# ---- end to end with a tiny model --------------------------------------------


def test_colour_order_reaches_a_model_that_knows_red_from_blue(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from tiny_models import make_deployable_model, make_test_frame, mask_iou

    net_h, net_w = 64, 96
    path = str(tmp_path / "tiny.onnx")
    make_deployable_model(path, height=net_h, width=net_w)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    frame, masks = make_test_frame(240, 320, "bgr")
    for color, shown in (("bgr", frame), ("rgb", np.ascontiguousarray(frame[:, :, ::-1]))):
        out = np.empty((1, 3, net_h, net_w), np.float32)
        _core.preprocess(shown, out, color=color)
        pred = session.run(["pred_masks"], {session.get_inputs()[0].name: out})[0][0]
        # query 1 is the red mask, query 0 the blue one, query 3 the green one
        for query, name in ((1, "red"), (0, "blue"), (3, "green")):
            expected = cv2.resize(masks[name].astype(np.uint8), (net_w, net_h), interpolation=cv2.INTER_NEAREST)
            assert mask_iou(pred[query] > 0.5, expected) > 0.8, (color, name)


# ---- bad input ---------------------------------------------------------------


def good_call():
    frame = np.zeros((40, 50, 3), np.uint8)
    frame[:, 25:] = 255
    out = np.empty((1, 3, 32, 32), np.float32)
    _core.preprocess(frame, out)
    np.testing.assert_allclose(out[0], reference(frame, 32, 32), atol=TOL_F32, rtol=0)


FRAME = np.zeros((40, 50, 3), np.uint8)


def out32(batch=1, h=32, w=32):
    return np.empty((batch, 3, h, w), np.float32)


BAD_CALLS = [
    # (name, call, exception type, message fragment)
    ("float frame", lambda: _core.preprocess(FRAME.astype(np.float32), out32()), TypeError, "'frames'.*uint8"),
    ("int16 frame", lambda: _core.preprocess(FRAME.astype(np.int16), out32()), TypeError, "'frames'.*uint8"),
    ("bool frame", lambda: _core.preprocess(FRAME.astype(bool), out32()), TypeError, "'frames'.*uint8"),
    ("not an array", lambda: _core.preprocess(FRAME.tolist(), out32()), TypeError, "'frames\\[0\\]'"),
    ("None frame", lambda: _core.preprocess(None, out32()), TypeError, "'frames'"),
    ("list item float", lambda: _core.preprocess([FRAME, FRAME.astype(np.float64)], out32(2)), TypeError,
     "'frames\\[1\\]'.*uint8"),
    ("1-D frame", lambda: _core.preprocess(np.zeros(3000, np.uint8), out32()), ValueError, "'frames'.*shape"),
    ("5-D frame", lambda: _core.preprocess(np.zeros((1, 1, 40, 40, 3), np.uint8), out32()), ValueError, "'frames'"),
    ("4-D in a list", lambda: _core.preprocess([FRAME[None]], out32()), ValueError, "'frames\\[0\\]'"),
    ("2 channels", lambda: _core.preprocess(np.zeros((40, 40, 2), np.uint8), out32()), ValueError,
     "'frames'.*3 channels"),
    ("bgr given 4 channels", lambda: _core.preprocess(np.zeros((40, 40, 4), np.uint8), out32()), ValueError,
     "'frames'.*color='bgr'"),
    ("gray given 3 channels", lambda: _core.preprocess(FRAME, out32(), color="gray"), ValueError,
     "'frames'.*color='gray'"),
    ("2-D frame as bgr", lambda: _core.preprocess(FRAME[:, :, 0], out32()), ValueError, "'frames'.*gray"),
    ("too small", lambda: _core.preprocess(np.zeros((31, 40, 3), np.uint8), out32()), ValueError,
     "'frames'.*32x32"),
    ("too narrow", lambda: _core.preprocess(np.zeros((40, 31, 3), np.uint8), out32()), ValueError, "'frames'.*32"),
    ("small in a list", lambda: _core.preprocess([FRAME, np.zeros((8, 8, 3), np.uint8)], out32(2)), ValueError,
     "'frames\\[1\\]'.*32"),
    ("empty frame", lambda: _core.preprocess(np.zeros((0, 0, 3), np.uint8), out32()), ValueError, "'frames'.*empty"),
    ("empty batch", lambda: _core.preprocess(np.zeros((0, 40, 40, 3), np.uint8), out32(0)), ValueError,
     "'frames'.*empty"),
    ("empty list", lambda: _core.preprocess([], out32()), ValueError, "'frames'.*empty"),
    ("out batch mismatch", lambda: _core.preprocess(FRAME, out32(2)), ValueError, "'out'.*\\(1, 3,"),
    ("out batch mismatch list", lambda: _core.preprocess([FRAME, FRAME], out32(1)), ValueError, "'out'.*\\(2, 3,"),
    ("out 4 channels", lambda: _core.preprocess(FRAME, np.empty((1, 4, 32, 32), np.float32)), ValueError, "'out'"),
    ("out 3-D", lambda: _core.preprocess(FRAME, np.empty((3, 32, 32), np.float32)), ValueError, "'out'.*dimensions"),
    ("out empty", lambda: _core.preprocess(FRAME, np.empty((1, 3, 0, 32), np.float32)), ValueError, "'out'"),
    ("out float64", lambda: _core.preprocess(FRAME, np.empty((1, 3, 32, 32))), TypeError, "'out'.*float32"),
    ("out uint8", lambda: _core.preprocess(FRAME, np.empty((1, 3, 32, 32), np.uint8)), TypeError, "'out'"),
    ("out big-endian", lambda: _core.preprocess(FRAME, np.empty((1, 3, 32, 32), ">f4")), TypeError, "'out'.*native"),
    ("out a list", lambda: _core.preprocess(FRAME, [[0.0]]), TypeError, "'out'"),
    ("out not contiguous", lambda: _core.preprocess(FRAME, np.empty((1, 3, 32, 64), np.float32)[..., ::2]),
     ValueError, "'out'.*contiguous"),
    ("out Fortran", lambda: _core.preprocess(FRAME, np.asfortranarray(out32())), ValueError, "'out'.*contiguous"),
    ("out read-only", lambda: _core.preprocess(FRAME, read_only(out32())), ValueError, "'out'.*read-only"),
    ("bad color", lambda: _core.preprocess(FRAME, out32(), color="yuv"), ValueError, "'color'.*yuv"),
    ("bad resize", lambda: _core.preprocess(FRAME, out32(), resize="crop"), ValueError, "'resize'.*crop"),
    ("std zero", lambda: _core.preprocess(FRAME, out32(), std=(0.2, 0.0, 0.2)), ValueError, "'std'.*nonzero"),
    ("std scalar zero", lambda: _core.preprocess(FRAME, out32(), std=0), ValueError, "'std'"),
    ("std nan", lambda: _core.preprocess(FRAME, out32(), std=(0.2, float("nan"), 0.2)), ValueError, "'std'"),
    ("mean 2 values", lambda: _core.preprocess(FRAME, out32(), mean=(0.5, 0.5)), ValueError, "'mean'.*3 values"),
    ("mean text", lambda: _core.preprocess(FRAME, out32(), mean="abc"), TypeError, "'mean'"),
    ("mean inf", lambda: _core.preprocess(FRAME, out32(), mean=(0.5, float("inf"), 0.5)), ValueError, "'mean'"),
    ("huge frame", lambda: _core.preprocess(np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (40, 2**20 + 1, 3)),
                                            out32()), ValueError, "'frames'.*at most"),
    ("huge out", lambda: _core.preprocess(FRAME, np.broadcast_to(np.zeros(1, np.float32), (1, 3, 1, 2**20 + 1))),
     ValueError, "'out'"),
    ("negative threads", lambda: _core.preprocess(FRAME, out32(), threads=-1), ValueError, "'threads'"),
]


def read_only(array):
    array.setflags(write=False)
    return array


@pytest.mark.parametrize("name,call,error,message", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_input_raises_a_clear_error_and_the_next_call_works(name, call, error, message):
    with pytest.raises(error, match=message):
        call()
    good_call()


def test_keyword_only_options():
    with pytest.raises(TypeError):
        _core.preprocess(FRAME, out32(), "bgr")  # color must be passed by name


# ---- the shared host/device half conversion ------------------------------------


def test_portable_float_to_half_matches_numpy():
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**32, 2_000_000, dtype=np.uint64).astype(np.uint32)
    # every exponent near the half range, halfway cases and their neighbours, and specials
    exponents = np.arange(96, 146, dtype=np.uint32) << 23
    halfway = (exponents[:, None] | np.array([0x1000, 0x0fff, 0x1001, 0x3000, 0x7fffff, 0], np.uint32)).ravel()
    specials = np.array([0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x477fefff, 0x477ff000, 0x33000000,
                         0x33000001, 0x38800000, 0x387fffff, 0x00000001], np.uint32)
    values = np.concatenate([bits, halfway, halfway | 0x80000000, specials]).view(np.float32)
    got = _core._float_to_half_bits(values)
    with np.errstate(over="ignore", invalid="ignore"):
        expected = values.astype(np.float16).view(np.uint16)
    nan = np.isnan(values)
    np.testing.assert_array_equal(got[~nan], expected[~nan])
    assert np.isnan(got[nan].view(np.float16)).all()
    with pytest.raises(TypeError, match="'values'"):
        _core._float_to_half_bits(np.zeros(4, np.float64))
