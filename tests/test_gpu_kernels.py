"""Every CUDA kernel against its CPU twin (the reference), on many shapes, strides, sizes and dtypes;
zero-copy input from CuPy / PyTorch / DLPack; the TensorRT runner against ONNX Runtime where
TensorRT is present. All marked `gpu`: they skip themselves without a usable NVIDIA GPU."""

import os

import numpy as np
import pytest

from m2f_edge import _core
from mask_crops import check_crop_layout, crop_of

pytestmark = pytest.mark.gpu

gpu = _core.gpu

# The CUDA emulation build (M2F_CUDA=EMULATE, tools/run_emulated_gpu_tests.sh) runs every kernel
# thread by thread on the CPU: the same checks, a thousand times slower than a GPU.
EMULATED = bool(_core.build_info().get("cuda_emulation"))


def gpu_only_case(*values):
    """A case too big for the CPU emulator (a minute or more there); it runs wherever a GPU is, and
    under the emulator too with M2F_EMULATION_ALL_CASES=1."""
    return pytest.param(*values, marks=pytest.mark.skipif(
        EMULATED and os.environ.get("M2F_EMULATION_ALL_CASES") != "1",
        reason="too big for the CUDA emulator (minutes on the CPU; M2F_EMULATION_ALL_CASES=1 runs it)"))


def to_device(array):
    return gpu.DeviceArray.from_numpy(np.ascontiguousarray(array))


class StridedDeviceView:
    """A strided window into a DeviceArray, exposed through __cuda_array_interface__ (as CuPy and
    PyTorch expose their non-contiguous views), to test that kernels read any strides in place."""

    def __init__(self, host_like, base, offset_bytes=0):
        self._base = base  # keeps the memory alive
        self.__cuda_array_interface__ = {
            "shape": tuple(host_like.shape), "typestr": host_like.dtype.str,
            "data": (base.ptr + offset_bytes, False), "strides": tuple(host_like.strides), "version": 3,
        }


class DlpackOnly:
    """Exposes an array through DLPack alone, no __cuda_array_interface__ (as JAX or jetson-utils objects)."""

    def __init__(self, array):
        self.array = array

    def __dlpack__(self, stream=None):
        return self.array.__dlpack__(stream=stream)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()


def strided_copy_on_device(view):
    """Put a numpy view (a slice of a bigger array) on the GPU with the same strides and offset."""
    base = view
    while isinstance(base.base, np.ndarray):
        base = base.base
    # the owner's bytes in memory order (C or Fortran: ravel("K") keeps them), so the view's strides
    # and offset hold unchanged on the GPU
    assert base.flags.c_contiguous or base.flags.f_contiguous
    raw = base.ravel(order="K").view(np.uint8)
    assert raw.__array_interface__["data"][0] == base.__array_interface__["data"][0]
    device_base = to_device(raw)
    offset = view.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    return StridedDeviceView(view, device_base, offset)


def random_frame(rng, height, width, channels):
    shape = (height, width) if channels == 0 else (height, width, channels)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


# ---- preprocessing ------------------------------------------------------------------------------------

PRE_CASES = [
    # frame (h, w), net (h, w), color, resize
    ((1080, 1920), (800, 800), "bgr", "stretch"),
    ((1080, 1920), (544, 960), "rgb", "letterbox"),
    ((480, 640), (640, 640), "bgra", "stretch"),
    ((720, 1280), (800, 800), "rgba", "letterbox"),
    ((37, 53), (64, 96), "bgr", "stretch"),       # upsampling
    ((333, 257), (128, 128), "gray", "letterbox"),
    ((2160, 3840), (544, 960), "bgr", "stretch"),
    ((32, 32), (1, 1), "rgb", "stretch"),         # the smallest frame, a one-pixel input
    ((40, 3001), (17, 703), "bgra", "letterbox"), # odd sizes, a very wide frame: a few content rows
]
CHANNELS = {"bgr": 3, "rgb": 3, "bgra": 4, "rgba": 4, "gray": 1}


def compare_tensors(gpu_out, cpu_out):
    if gpu_out.dtype == np.float32:
        np.testing.assert_allclose(gpu_out, cpu_out, rtol=0, atol=1e-5)
        assert np.mean(gpu_out == cpu_out) > 0.999
    else:
        a, b = gpu_out.astype(np.float32), cpu_out.astype(np.float32)
        np.testing.assert_allclose(a, b, rtol=0, atol=4e-3)  # one float16 ulp at |x| < 4
        assert np.mean(gpu_out == cpu_out) > 0.999


@pytest.mark.parametrize("frame_size,net_size,color,resize", PRE_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_preprocess_matches_cpu(frame_size, net_size, color, resize, dtype):
    rng = np.random.default_rng(frame_size[0] * 7 + frame_size[1] + len(color) + len(resize))
    frame = random_frame(rng, *frame_size, CHANNELS[color])
    cpu_out = np.empty((1, 3) + net_size, dtype)
    cpu_t = _core.preprocess(frame, cpu_out, color=color, resize=resize)
    dev_out = gpu.DeviceArray((1, 3) + net_size, np.dtype(dtype).name)
    gpu_t = gpu.preprocess(to_device(frame if frame.ndim == 3 else frame[..., None]), dev_out, color=color,
                           resize=resize)
    assert [(t.content_height, t.content_width) for t in gpu_t] == [(t.content_height, t.content_width)
                                                                     for t in cpu_t]
    compare_tensors(dev_out.to_numpy(), cpu_out)


def test_preprocess_batch_strided_and_custom_normalisation():
    rng = np.random.default_rng(7)
    big = random_frame(rng, 1200, 2000, 4)
    # a cropped, channel-dropping, column-skipping view: strides (8000, 8, 1), an offset into the buffer
    view = big[100:1180, 10:1930:2, :3]
    # plus a frame flipped upside down and left-right (negative strides) and one with the channels reversed
    frames = [view, big[:720, :1280, 1:4], big[1199:479:-1, 1999:719:-1, :3], big[:600, :800, 2::-1]]
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.15)
    cpu_out = np.empty((4, 3, 320, 480), np.float32)
    _core.preprocess([np.ascontiguousarray(f) for f in frames], cpu_out, color="bgr", resize="letterbox",
                     mean=mean, std=std)
    dev_out = gpu.DeviceArray((4, 3, 320, 480), "float32")
    gpu.preprocess([strided_copy_on_device(f) for f in frames], dev_out, color="bgr", resize="letterbox", mean=mean,
                   std=std)
    compare_tensors(dev_out.to_numpy(), cpu_out)


def test_preprocess_batched_4d_and_host_input():
    rng = np.random.default_rng(3)
    frames = random_frame(rng, 4 * 240, 320, 3).reshape(4, 240, 320, 3)
    cpu_out = np.empty((4, 3, 200, 200), np.float32)
    _core.preprocess(frames, cpu_out)
    dev_out = gpu.DeviceArray((4, 3, 200, 200), "float32")
    gpu.preprocess(to_device(frames), dev_out)
    compare_tensors(dev_out.to_numpy(), cpu_out)
    dev_out2 = gpu.DeviceArray((4, 3, 200, 200), "float32")
    gpu.preprocess(frames, dev_out2)  # numpy frames: copied to the GPU first
    compare_tensors(dev_out2.to_numpy(), cpu_out)


def test_preprocess_errors_name_the_argument():
    out = gpu.DeviceArray((1, 3, 64, 64), "float32")
    with pytest.raises(ValueError, match="frames"):
        gpu.preprocess(to_device(np.zeros((64, 64, 4), np.uint8)), out, color="bgr")
    with pytest.raises(ValueError, match="out"):
        gpu.preprocess(to_device(np.zeros((64, 64, 3), np.uint8)), gpu.DeviceArray((2, 3, 64, 64), "float32"))
    with pytest.raises(ValueError, match="out"):
        gpu.preprocess(to_device(np.zeros((64, 64, 3), np.uint8)), gpu.DeviceArray((1, 3, 64, 64), "int32"))
    with pytest.raises(TypeError, match="out"):
        gpu.preprocess(to_device(np.zeros((64, 64, 3), np.uint8)), np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(ValueError, match="frames"):
        gpu.preprocess([], out)
    with pytest.raises(ValueError, match="frames"):
        gpu.preprocess(to_device(np.zeros((16, 64, 3), np.uint8)), out)  # below the 32-pixel minimum
    # a numpy pointer dressed up as a GPU array is refused, not read by a kernel
    host = np.zeros((64, 64, 3), np.uint8)
    fake = type("Fake", (), {})()
    fake.__cuda_array_interface__ = {"shape": host.shape, "typestr": "|u1", "data": (host.ctypes.data, False),
                                     "strides": None, "version": 2}
    with pytest.raises(ValueError, match="frames"):
        gpu.preprocess(fake, out)
    # a float view one byte into a buffer: refused (a misaligned load would kill the CUDA context)
    buffer = to_device(np.zeros(4 * 3 * 64 * 64 + 4, np.uint8))
    odd = type("Odd", (), {})()
    odd.__cuda_array_interface__ = {"shape": (1, 3, 64, 64), "typestr": "<f4", "data": (buffer.ptr + 1, False),
                                    "strides": None, "version": 2}
    with pytest.raises(ValueError, match="out"):
        gpu.preprocess(to_device(np.zeros((64, 64, 3), np.uint8)), odd)
    # a failed frame does not poison the next
    gpu.preprocess(to_device(np.zeros((64, 64, 3), np.uint8)), out)
    np.testing.assert_allclose(out.to_numpy()[0, 0], (0 - 0.485) / 0.229, rtol=1e-6)


def test_mapped_buffer_is_zero_copy_input():
    rng = np.random.default_rng(11)
    frame = random_frame(rng, 480, 640, 3)
    mapped = gpu.DeviceArray((480, 640, 3), "uint8", "mapped")
    mapped.numpy()[...] = frame  # the CPU writes; the GPU reads the same bytes
    cpu_out = np.empty((1, 3, 256, 256), np.float32)
    _core.preprocess(frame, cpu_out)
    dev_out = gpu.DeviceArray((1, 3, 256, 256), "float32")
    gpu.preprocess(mapped, dev_out)
    compare_tensors(dev_out.to_numpy(), cpu_out)


# ---- post-processing ----------------------------------------------------------------------------------


def blob_masks(rng, k, h, w, empty_every=7):
    """K masks of random rectangles and ellipses (0/1), some empty."""
    yy, xx = np.mgrid[0:h, 0:w]
    masks = np.zeros((k, h, w), np.float32)
    for i in range(k):
        if i % empty_every == 3:
            continue
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(1, h / 3), rng.uniform(1, w / 3)
        masks[i] = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.float32)
    masks[5 % k, :1, :1] = 1  # a one-pixel mask: may vanish at the frame size
    return masks


def assert_same_instances(got, want, score_rtol=0.0):
    """The same instances; masks compared as the crops both sides keep (the CPU twin's own crops are
    checked against numpy + OpenCV in test_postprocess.py)."""
    assert tuple(got["image_size"]) == tuple(want["image_size"])
    check_crop_layout(got)
    assert len(got["scores"]) == len(want["scores"]), (len(got["scores"]), len(want["scores"]))
    np.testing.assert_array_equal(got["query_indices"], want["query_indices"])
    np.testing.assert_array_equal(got["labels"], want["labels"])
    if score_rtol:
        np.testing.assert_allclose(got["scores"], want["scores"], rtol=score_rtol, atol=1e-7)
    else:
        np.testing.assert_array_equal(got["scores"], want["scores"])
    np.testing.assert_array_equal(got["crop_offsets"], want["crop_offsets"])
    np.testing.assert_array_equal(got["crops"], want["crops"])
    np.testing.assert_array_equal(got["boxes"], want["boxes"])
    np.testing.assert_array_equal(got["areas"], want["areas"])
    for name in ("crops", "crop_offsets", "scores", "labels", "boxes", "areas", "query_indices"):
        assert got[name].dtype == want[name].dtype, name


DEPLOYABLE_CASES = [
    # net (h, w), frame (h, w), resize, K
    gpu_only_case((200, 256), (1080, 1920), "stretch", 100),
    gpu_only_case((200, 256), (480, 640), "letterbox", 100),
    ((128, 128), (300, 200), "letterbox", 20),
    ((96, 160), (64, 80), "stretch", 1),
]


@pytest.mark.parametrize("net,frame,resize,k", DEPLOYABLE_CASES)
@pytest.mark.parametrize("mask_dtype", ["float32", "float16", "uint8", "bool"])
@pytest.mark.parametrize("class_dtype", ["int32", "int64"])
def test_postprocess_deployable_matches_cpu(net, frame, resize, k, mask_dtype, class_dtype):
    rng = np.random.default_rng(k + net[0])
    masks = blob_masks(rng, k, *net).astype(mask_dtype)
    scores = rng.uniform(0, 1, k).astype(np.float32)
    scores[::9] = 0.75  # ties keep model order
    scores[1 % k] = np.nan
    classes = rng.integers(0, 3, k).astype(class_dtype)
    transform = _core.ResizeTransform(resize, frame[0], frame[1], net[0], net[1])
    for threshold, cap in ((0.5, 100), (0.0, 7), (0.99, 100)):
        want = _core.postprocess_deployable(masks, scores, classes, transform, score_threshold=threshold,
                                            max_instances=cap)
        got = gpu.postprocess_deployable(to_device(masks), to_device(scores), to_device(classes), transform,
                                         score_threshold=threshold, max_instances=cap)
        assert_same_instances(got, want)


@pytest.mark.parametrize("mode,frame,net", [("stretch", (37, 53), (32, 32)), ("letterbox", (40, 90), (32, 48)),
                                             ("letterbox", (90, 40), (48, 32)), ("stretch", (3, 70), (16, 16))])
@pytest.mark.parametrize("mask_dtype", ["float32", "uint8"])
def test_crops_at_frame_borders_match_cpu(mode, frame, net, mask_dtype):
    """Instances touching each border, one-pixel masks in the corners, empty and padding-only masks:
    the GPU's crops, boxes and areas are the CPU twin's, on both contracts."""
    transform = _core.ResizeTransform(mode, frame[0], frame[1], net[0], net[1])
    ch, cw = transform.content_height, transform.content_width
    masks = np.zeros((10, net[0], net[1]), np.float32)
    masks[0, :ch // 3, cw // 4:cw // 2] = 1
    masks[1, ch - ch // 4:ch, cw // 3:cw // 2] = 1
    masks[2, ch // 4:ch // 2, :cw // 5 + 1] = 1
    masks[3, ch // 3:ch // 2, cw - cw // 6 - 1:cw] = 1
    masks[4, :ch, :cw] = 1
    masks[5, 0, 0] = masks[6, 0, cw - 1] = masks[7, ch - 1, 0] = masks[8, ch - 1, cw - 1] = 1
    if ch < net[0]:
        masks[9, ch:, :] = 1
    elif cw < net[1]:
        masks[9, :, cw:] = 1
    masks = masks.astype(mask_dtype)
    scores = np.linspace(0.95, 0.6, 10).astype(np.float32)
    classes = np.zeros(10, np.int64)
    want = _core.postprocess_deployable(masks, scores, classes, transform)
    got = gpu.postprocess_deployable(to_device(masks), to_device(scores), to_device(classes), transform)
    assert_same_instances(got, want)
    low = np.where(masks[:, ::4, ::4].astype(np.float32) > 0, 6.0, -6.0).astype(np.float32)
    class_logits = np.tile(np.array([[-4.0, 4.0]], np.float32), (10, 1))
    want = _core.postprocess_raw(class_logits, low, transform, topk=10, score_threshold=0.2)
    got = gpu.postprocess_raw(to_device(class_logits), to_device(low), transform, topk=10, score_threshold=0.2)
    assert_same_raw_instances(got, want, 0.2)


def test_postprocess_deployable_strided_batch_views():
    rng = np.random.default_rng(5)
    batch = np.stack([blob_masks(rng, 30, 160, 160) for _ in range(2)])  # (2, K, H, W)
    scores = rng.uniform(0.3, 1, (2, 30)).astype(np.float32)
    classes = np.zeros((2, 30), np.int64)
    transform = _core.ResizeTransform("stretch", 720, 1280, 160, 160)
    # masks[1, ::2] and scores[1, ::2] are strided views into device memory
    got = gpu.postprocess_deployable(strided_copy_on_device(batch[1, ::2]), strided_copy_on_device(scores[1, ::2]),
                                     strided_copy_on_device(classes[1, ::2]), transform)
    want = _core.postprocess_deployable(batch[1, ::2], scores[1, ::2], classes[1, ::2], transform)
    assert_same_instances(got, want)


def raw_logits(rng, q, classes, h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    mask_logits = np.empty((q, h, w), np.float32)
    for i in range(q):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, max(h, w) / 2)
        mask_logits[i] = 4.0 * (1 - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / r) + rng.normal(0, 0.3, (h, w))
    mask_logits[2] = -5  # a query with no positive logit
    class_logits = rng.normal(0, 2.5, (q, classes + 1)).astype(np.float32)
    return class_logits, mask_logits


RAW_CASES = [
    # Q, C, net (h, w), frame (h, w), resize, no_object_index, topk
    gpu_only_case(100, 1, (256, 256), (1080, 1920), "stretch", 0, 100),
    gpu_only_case(100, 3, (192, 320), (480, 640), "letterbox", -1, 100),
    (50, 80, (128, 128), (300, 400), "stretch", 80, 100),
    (20, 2, (96, 96), (96, 96), "letterbox", 0, 5),
]


@pytest.mark.parametrize("q,c,net,frame,resize,no_object,topk", RAW_CASES)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_postprocess_raw_matches_cpu(q, c, net, frame, resize, no_object, topk, dtype):
    rng = np.random.default_rng(q * 1000 + c)
    class_logits, mask_logits = raw_logits(rng, q, c, net[0] // 4, net[1] // 4)
    class_logits, mask_logits = class_logits.astype(dtype), mask_logits.astype(dtype)
    transform = _core.ResizeTransform(resize, frame[0], frame[1], net[0], net[1])
    for threshold, cap in ((0.5, 100), (0.05, 10)):
        kwargs = dict(no_object_index=no_object, topk=topk, score_threshold=threshold, max_instances=cap)
        want = _core.postprocess_raw(class_logits, mask_logits, transform, **kwargs)
        got = gpu.postprocess_raw(to_device(class_logits), to_device(mask_logits), transform, **kwargs)
        # expf differs by ulps and the sigmoid sums add in another order: scores agree to ~1e-6, masks exactly
        assert_same_raw_instances(got, want, threshold)


def assert_same_raw_instances(got, want, threshold, rtol=1e-4):
    """GPU and CPU raw-head results: the same instances with the same masks, boxes and areas, scores to
    rtol. The GPU's expf and summation order move scores by ~1e-6, so instances whose CPU scores tie
    within rtol may swap places, and one that sits within rtol of the threshold or of the last kept
    score may be kept on one side only; everything else must agree exactly."""
    for name in ("crops", "crop_offsets", "scores", "labels", "boxes", "areas", "query_indices"):
        assert got[name].dtype == want[name].dtype, name
    check_crop_layout(got)
    assert np.all(np.diff(got["scores"]) <= 0), "GPU scores are not sorted descending"

    def keyed(r):
        return {(int(q), int(c)): i for i, (q, c) in enumerate(zip(r["query_indices"], r["labels"]))}

    g, w = keyed(got), keyed(want)
    last = float(want["scores"][-1]) if len(want["scores"]) else threshold

    def near(a, b):
        return abs(a - b) <= rtol * max(abs(a), abs(b))

    for key in set(g) ^ set(w):
        s = float(got["scores"][g[key]]) if key in g else float(want["scores"][w[key]])
        assert near(s, threshold) or near(s, last), ("kept on one side only", key, s)
    common = sorted(set(g) & set(w), key=lambda k: w[k])
    for key in common:
        i, j = g[key], w[key]
        np.testing.assert_allclose(got["scores"][i], want["scores"][j], rtol=rtol)
        np.testing.assert_array_equal(crop_of(got, i), crop_of(want, j))
        np.testing.assert_array_equal(got["boxes"][i], want["boxes"][j])
        assert got["areas"][i] == want["areas"][j]
    for a in range(len(common)):
        for b in range(a + 1, len(common)):
            ka, kb = common[a], common[b]
            if not near(float(want["scores"][w[ka]]), float(want["scores"][w[kb]])):
                assert g[ka] < g[kb], ("order differs", ka, kb)


def test_postprocess_raw_strided_views_empty_and_degenerate_inputs():
    rng = np.random.default_rng(21)
    class_logits, mask_logits = raw_logits(rng, 30, 2, 48, 40)
    transform = _core.ResizeTransform("letterbox", 400, 300, 192, 160)
    # class_logits as a column-major view, mask_logits flipped upside down in a bigger buffer
    cl_f = np.asfortranarray(class_logits)
    big = np.zeros((30, 60, 40), np.float32)
    big[:, 5:53] = mask_logits[:, ::-1]
    ml_view = big[:, 52:4:-1]
    want = _core.postprocess_raw(cl_f, ml_view, transform, score_threshold=0.3)
    assert len(want["scores"]) > 0
    got = gpu.postprocess_raw(strided_copy_on_device(cl_f), strided_copy_on_device(ml_view), transform,
                              score_threshold=0.3)
    assert_same_raw_instances(got, want, 0.3)
    # no queries, max_instances=0, all-NaN and all -inf class logits: empty results, no launch errors
    empty_cases = [
        (np.zeros((0, 3), np.float32), np.zeros((0, 48, 40), np.float32), {}),
        (class_logits, mask_logits, {"max_instances": 0}),
        (np.full_like(class_logits, np.nan), mask_logits, {}),
        (np.full_like(class_logits, -np.inf), mask_logits, {}),
    ]
    for cl, ml, kwargs in empty_cases:
        want = _core.postprocess_raw(cl, ml, transform, **kwargs)
        got = gpu.postprocess_raw(to_device(cl), to_device(ml), transform, **kwargs)
        assert len(got["scores"]) == len(want["scores"]) == 0 and tuple(got["image_size"]) == (400, 300)
        assert got["crops"].shape == (0,) and got["crop_offsets"].tolist() == [0]
        assert got["boxes"].shape == (0, 4)
    with pytest.raises(ValueError, match="mask_logits"):
        gpu.postprocess_raw(to_device(class_logits), to_device(np.zeros((30, 0, 40), np.float32)), transform)


def test_postprocess_deployable_empty_and_flipped_inputs():
    rng = np.random.default_rng(23)
    transform = _core.ResizeTransform("stretch", 270, 480, 96, 128)
    masks = blob_masks(rng, 12, 96, 128)
    scores = rng.uniform(0.2, 1, 12).astype(np.float16)  # float16 scores
    classes = np.arange(12, dtype=np.int64)
    flipped = masks[::-1, :, ::-1]  # negative strides on two axes
    want = _core.postprocess_deployable(flipped, scores[::-1], classes[::-1], transform)
    got = gpu.postprocess_deployable(strided_copy_on_device(flipped), strided_copy_on_device(scores[::-1]),
                                     strided_copy_on_device(classes[::-1]), transform)
    assert_same_instances(got, want)
    for k, kwargs in ((0, {}), (12, {"max_instances": 0})):
        want = _core.postprocess_deployable(masks[:k], scores[:k], classes[:k], transform, **kwargs)
        got = gpu.postprocess_deployable(to_device(masks[:k]), to_device(scores[:k]), to_device(classes[:k]),
                                         transform, **kwargs)
        assert_same_instances(got, want)
        assert len(got["scores"]) == 0 and tuple(got["image_size"]) == (270, 480)


def test_postprocess_errors_name_the_argument():
    transform = _core.ResizeTransform("stretch", 100, 100, 64, 64)
    masks = to_device(np.zeros((4, 64, 64), np.float32))
    scores = to_device(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="classes"):
        gpu.postprocess_deployable(masks, scores, to_device(np.zeros(4, np.float32)), transform)
    with pytest.raises(ValueError, match="scores"):
        gpu.postprocess_deployable(masks, to_device(np.zeros(3, np.float32)), to_device(np.zeros(4, np.int32)),
                                   transform)
    with pytest.raises(ValueError, match="masks"):
        gpu.postprocess_deployable(to_device(np.zeros((4, 32, 32), np.float32)), scores,
                                   to_device(np.zeros(4, np.int32)), transform)
    with pytest.raises(ValueError, match="no_object_index"):
        gpu.postprocess_raw(to_device(np.zeros((4, 3), np.float32)), to_device(np.zeros((4, 16, 16), np.float32)),
                            transform, no_object_index=5)
    # the next frame is fine
    out = gpu.postprocess_deployable(masks, scores, to_device(np.zeros(4, np.int32)), transform)
    assert len(out["scores"]) == 0 and tuple(out["image_size"]) == (100, 100)


def test_results_are_not_overwritten_by_the_next_frame():
    rng = np.random.default_rng(2)
    transform = _core.ResizeTransform("stretch", 240, 320, 120, 160)
    first_masks = blob_masks(rng, 10, 120, 160)
    scores = np.full(10, 0.9, np.float32)
    classes = np.zeros(10, np.int32)
    first = gpu.postprocess_deployable(to_device(first_masks), to_device(scores), to_device(classes), transform)
    kept = {k: v.copy() for k, v in first.items() if isinstance(v, np.ndarray)}
    gpu.postprocess_deployable(to_device(1 - first_masks), to_device(scores), to_device(classes), transform)
    for name in kept:
        np.testing.assert_array_equal(first[name], kept[name])


@pytest.mark.parametrize("masks_to", ["device", "packed"])
def test_masks_left_on_device_or_bit_packed(masks_to):
    rng = np.random.default_rng(9)
    masks = blob_masks(rng, 40, 160, 200)
    scores = rng.uniform(0, 1, 40).astype(np.float32)
    classes = np.zeros(40, np.int32)
    transform = _core.ResizeTransform("letterbox", 333, 501, 160, 200)
    want = _core.postprocess_deployable(masks, scores, classes, transform)
    got = gpu.postprocess_deployable(to_device(masks), to_device(scores), to_device(classes), transform,
                                     masks_to=masks_to)
    if masks_to == "device":
        assert isinstance(got["crops"], gpu.DeviceArray)
        got["crops"] = got["crops"].to_numpy()
    else:
        assert "crops" not in got
        got["crops"] = np.unpackbits(got.pop("crops_packed"), count=int(got["crop_offsets"][-1]))
    assert_same_instances(got, want)
    with pytest.raises(ValueError, match="masks_to"):
        gpu.postprocess_deployable(to_device(masks), to_device(scores), to_device(classes), transform,
                                   masks_to="disk")


@pytest.mark.parametrize("n,h,w", [(0, 10, 10), (1, 1, 1), (5, 480, 640), (60, 123, 77)])
def test_instance_map_and_pack_match_cpu(n, h, w):
    rng = np.random.default_rng(n + h)
    masks = (rng.uniform(0, 1, (n, h, w)) < 0.2).astype(np.uint8)
    want = _core.instance_map(masks)
    got = gpu.instance_map(to_device(masks)).to_numpy()
    np.testing.assert_array_equal(got, want)
    packed = gpu.pack_masks(to_device(masks)).to_numpy()
    np.testing.assert_array_equal(packed, np.packbits(masks, axis=-1))
    # bool masks read in place through strides (every other row, reversed instance order)
    view = masks.astype(bool)[::-1, ::2]
    np.testing.assert_array_equal(gpu.instance_map(strided_copy_on_device(view)).to_numpy(), _core.instance_map(view))
    np.testing.assert_array_equal(gpu.pack_masks(strided_copy_on_device(view)).to_numpy(), np.packbits(view, axis=-1))


def test_concurrent_postprocessing_on_two_streams_uses_separate_scratch():
    import threading

    rng = np.random.default_rng(31)
    transform = _core.ResizeTransform("stretch", 360, 640, 96, 160)
    inputs = []
    for _ in range(2):
        masks = blob_masks(rng, 40, 96, 160)
        scores = rng.uniform(0, 1, 40).astype(np.float32)
        classes = rng.integers(0, 2, 40).astype(np.int32)
        inputs.append((masks, scores, classes, _core.postprocess_deployable(masks, scores, classes, transform)))
    errors = []

    def work(i):
        try:
            masks, scores, classes, want = inputs[i]
            d = [to_device(a) for a in (masks, scores, classes)]
            stream = gpu.Stream()
            # the emulator interleaves the two threads' launches too (one launch at a time), so a
            # shared scratch would still show in a few rounds
            for _ in range(3 if EMULATED else 20):
                got = gpu.postprocess_deployable(*d, transform, stream=stream)
                assert_same_instances(got, want)
        except Exception as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_device_array_copies_are_ordered_with_streams():
    rng = np.random.default_rng(33)
    frame = random_frame(rng, 240, 320, 3)
    d_frame = gpu.DeviceArray((240, 320, 3), "uint8")
    stream = gpu.Stream()
    d_frame.copy_from(frame, stream=stream)
    out = gpu.DeviceArray((1, 3, 128, 128), "float16")
    gpu.preprocess(d_frame, out, stream=stream, synchronize=False)
    cpu_out = np.empty((1, 3, 128, 128), np.float16)
    _core.preprocess(frame, cpu_out)
    compare_tensors(out.to_numpy(stream=stream), cpu_out)  # ordered after the kernel on that stream
    d_frame.copy_from(frame[::-1].copy())  # no stream: waits for the device, then copies
    gpu.preprocess(d_frame, out, stream=stream, synchronize=False)
    _core.preprocess(frame[::-1], cpu_out)
    compare_tensors(out.to_numpy(), cpu_out)  # no stream: waits for all work on the device
    with pytest.raises(TypeError, match="argument 'stream'"):
        d_frame.copy_from(frame, stream="not a stream")
    with pytest.raises(TypeError, match="argument 'stream'"):
        gpu.preprocess(d_frame, out, stream=object())


FIRST_FRAME_EMPTY = r"""
import numpy as np
from m2f_edge import _core
gpu = _core.gpu
rng = np.random.default_rng(8)
masks = (rng.uniform(size=(12, 40, 56)) < 0.4).astype(np.float32)
scores = rng.uniform(0.1, 0.9, 12).astype(np.float32)
classes = np.zeros(12, np.int32)
class_logits = rng.normal(0, 2, (12, 3)).astype(np.float32)
mask_logits = rng.normal(0, 2, (12, 10, 14)).astype(np.float32)
t = _core.ResizeTransform("stretch", 90, 120, 40, 56)
dev = lambda a: gpu.DeviceArray.from_numpy(np.ascontiguousarray(a))
for threshold in (0.999, 0.05):  # nothing kept, then instances: blocks that leave early come first
    want = _core.postprocess_deployable(masks, scores, classes, t, score_threshold=threshold)
    got = gpu.postprocess_deployable(dev(masks), dev(scores), dev(classes), t, score_threshold=threshold)
    assert np.array_equal(got["crops"], want["crops"]) and np.array_equal(got["boxes"], want["boxes"])
    want = _core.postprocess_raw(class_logits, mask_logits, t, score_threshold=threshold)
    got = gpu.postprocess_raw(dev(class_logits), dev(mask_logits), t, score_threshold=threshold)
    assert np.array_equal(got["crops"], want["crops"]) and np.array_equal(got["boxes"], want["boxes"])
    print(threshold, len(want["scores"]))
"""


def test_a_first_frame_without_instances_then_frames_with_them():
    """In a fresh process, so the first launches are the empty ones (the emulator once learnt from
    them, for good, that those kernels had no barrier)."""
    import subprocess
    import sys

    from subprocess_env import SUBPROCESS_CWD, subprocess_env

    done = subprocess.run([sys.executable, "-c", FIRST_FRAME_EMPTY], cwd=SUBPROCESS_CWD, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    kept = [int(line.split()[1]) for line in done.stdout.split("\n") if line]
    assert kept[0] == 0 and kept[1] > 0, done.stdout


CROPS_OUTGROW_SCRATCH = r"""
import numpy as np
from m2f_edge import _core
gpu = _core.gpu
dev = lambda a: gpu.DeviceArray.from_numpy(np.ascontiguousarray(a))
t = _core.ResizeTransform("letterbox", 60, 80, 48, 48)
scores = np.linspace(0.95, 0.6, 40).astype(np.float32)
classes = np.zeros(40, np.int32)
for frame in range(3):  # 40 masks of nearly the whole frame: 40 windows of ~4800 pixels, over 65536 bytes
    masks = np.zeros((40, 48, 48), np.float32)
    masks[:, 1 + frame:30, 2:47 - frame] = 1
    masks[:, 40:, :] = 1  # letterbox padding: never mapped
    want = _core.postprocess_deployable(masks, scores, classes, t)
    got = gpu.postprocess_deployable(dev(masks), dev(scores), dev(classes), t)
    assert int(got["crop_offsets"][-1]) > 65536
    for key in ("crops", "crop_offsets", "boxes", "areas", "scores"):
        assert np.array_equal(got[key], want[key]), key
    print(frame, int(got["crop_offsets"][-1]))
"""


def test_crops_outgrowing_the_scratch_are_recomputed_after_growth():
    """In a fresh process, so the crop scratch starts small: the first frame's windows do not fit, the
    crop kernel runs again after growth, and the next frames fit at once."""
    import subprocess
    import sys

    from subprocess_env import SUBPROCESS_CWD, subprocess_env

    done = subprocess.run([sys.executable, "-c", CROPS_OUTGROW_SCRATCH], cwd=SUBPROCESS_CWD, env=subprocess_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.split()) == 6, done.stdout


@pytest.mark.skipif(not EMULATED, reason="only the CUDA emulation build has no GPU timings to give")
def test_gpu_benchmark_refuses_the_emulation_build():
    import subprocess
    import sys

    from subprocess_env import SUBPROCESS_CWD, subprocess_env

    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "bench_gpu.py")
    done = subprocess.run([sys.executable, script, "--repeat", "1"], cwd=SUBPROCESS_CWD, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "CUDA emulation build" in done.stderr
    assert done.stdout == ""  # not even the device line: no timing at all


# ---- zero-copy input from CuPy / PyTorch / DLPack ----------------------------------------------------


def _reference_preprocess(frame, shape=(1, 3, 200, 300)):
    out = np.empty(shape, np.float32)
    _core.preprocess(frame, out)
    return out


def test_cupy_arrays_in_place():
    cp = pytest.importorskip("cupy")
    rng = np.random.default_rng(4)
    frame = random_frame(rng, 360, 640, 3)
    d_frame = cp.asarray(frame)[:, ::-1][:, ::-1]  # a view with the original strides
    out = cp.empty((1, 3, 200, 300), cp.float32)
    gpu.preprocess(d_frame, out)
    compare_tensors(cp.asnumpy(out), _reference_preprocess(frame))


def test_cupy_producer_stream_is_waited_for():
    """CUDA array interface v3 'stream': CuPy names its current stream; the kernels (on another,
    legacy default, stream here) must wait for the work still queued there."""
    cp = pytest.importorskip("cupy")
    rng = np.random.default_rng(8)
    frame = random_frame(rng, 1080, 1920, 3)
    want = _reference_preprocess(frame)
    producer = cp.cuda.Stream(non_blocking=True)
    with producer:
        d_frame = cp.zeros((1080, 1920, 3), cp.uint8)
        for _ in range(20):  # keep the producer stream busy
            d_frame = (d_frame.astype(cp.int32) * 0).astype(cp.uint8)
        d_frame += cp.asarray(frame)
        out = cp.empty((1, 3, 200, 300), cp.float32)
        gpu.preprocess(d_frame, out)
    compare_tensors(cp.asnumpy(out), want)
    # our own non-blocking stream, given as a CuPy stream object, without synchronising the call
    stream = cp.cuda.Stream(non_blocking=True)
    out2 = cp.empty((1, 3, 200, 300), cp.float32)
    gpu.preprocess(cp.asarray(frame), out2, stream=stream, synchronize=False)
    stream.synchronize()
    compare_tensors(cp.asnumpy(out2), want)


def test_cupy_through_dlpack_only():
    cp = pytest.importorskip("cupy")
    rng = np.random.default_rng(10)
    frame = random_frame(rng, 360, 640, 4)

    d_frame = cp.asarray(frame)[:, ::2]  # strided: DLPack strides are in elements
    out = cp.empty((1, 3, 200, 300), cp.float32)
    gpu.preprocess(DlpackOnly(d_frame), out, color="bgra")
    want = np.empty((1, 3, 200, 300), np.float32)
    _core.preprocess(frame[:, ::2], want, color="bgra")
    compare_tensors(cp.asnumpy(out), want)


def test_torch_tensors_in_place_and_through_dlpack():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch without CUDA")
    rng = np.random.default_rng(6)
    frame = random_frame(rng, 360, 640, 3)
    t_frame = torch.from_numpy(frame).cuda()
    out = torch.empty((1, 3, 200, 300), dtype=torch.float32, device="cuda")
    gpu.preprocess(t_frame, out)
    compare_tensors(out.cpu().numpy(), _reference_preprocess(frame))

    out2 = torch.empty((1, 3, 200, 300), dtype=torch.float32, device="cuda")
    gpu.preprocess(DlpackOnly(t_frame), out2)
    compare_tensors(out2.cpu().numpy(), _reference_preprocess(frame))

    # a torch stream object, a channels-last permuted view, float16 output and bool masks via DLPack
    stream = torch.cuda.Stream()
    chw = torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1))).cuda()
    out3 = torch.empty((1, 3, 200, 300), dtype=torch.float16, device="cuda")
    gpu.preprocess(chw.permute(1, 2, 0), out3, stream=stream, synchronize=False)
    stream.synchronize()
    want16 = np.empty((1, 3, 200, 300), np.float16)
    _core.preprocess(frame, want16)
    compare_tensors(out3.cpu().numpy(), want16)
    masks = torch.rand((6, 50, 70), device="cuda") < 0.3
    np.testing.assert_array_equal(gpu.instance_map(DlpackOnly(masks)).to_numpy(),
                                  _core.instance_map(masks.cpu().numpy()))


def test_device_array_works_with_cupy_without_copy():
    cp = pytest.importorskip("cupy")
    a = to_device(np.arange(12, dtype=np.float32).reshape(3, 4))
    view = cp.asarray(a)
    assert view.data.ptr == a.ptr
    np.testing.assert_array_equal(cp.asnumpy(view), np.arange(12, dtype=np.float32).reshape(3, 4))


# ---- TensorRT runner (needs TensorRT in the build and its Python package to build a tiny engine) -------


def _build_tiny_engine(tmp_path_factory, folder_name, batch=None):
    """The tiny deployable model as an FP32 engine; batch (MIN, OPT, MAX) or None for 1:1:1."""
    if not _core.tensorrt.available:
        pytest.skip("m2f_edge built without TensorRT")
    pytest.importorskip("tensorrt")
    import tiny_models
    from m2f_edge.backends.engine_cache import BuildOptions
    from m2f_edge.models.tensorrt_build import build_with_sidecar

    folder = tmp_path_factory.mktemp(folder_name)
    onnx_path = str(folder / "deployable.onnx")
    tiny_models.make_deployable_model(onnx_path)
    engine_path = str(folder / "deployable.engine")
    build_with_sidecar(onnx_path, engine_path, BuildOptions(fp16=False, batch=batch), progress=False)
    return onnx_path, engine_path


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory):
    return _build_tiny_engine(tmp_path_factory, "trt")


def test_tensorrt_backend_matches_onnxruntime(tiny_engine):
    import onnxruntime as ort
    import tiny_models
    from m2f_edge.backends.tensorrt import TensorRTBackend

    onnx_path, engine_path = tiny_engine
    backend = TensorRTBackend(engine_path, use_cuda_graph=True)
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    _, _, h, w = backend.input_shape
    tensor = np.empty((1, 3, h, w), np.float32)
    _core.preprocess(tiny_models.make_test_frame(240, 320), tensor)
    want = dict(zip([o.name for o in session.get_outputs()], session.run(None, {backend.input_name: tensor})))
    for _ in range(3):  # eager, capture, replay
        got = backend.run(tensor)
        for name in backend.output_names:
            np.testing.assert_allclose(got[name].astype(np.float64), want[name].astype(np.float64), atol=1e-4)


def test_gpu_pipeline_matches_cpu_reference_and_replays_graph(tiny_engine):
    import onnxruntime as ort
    import tiny_models
    from m2f_edge.backends.tensorrt import TensorRTBackend
    from m2f_edge.gpu import GpuPipeline

    onnx_path, engine_path = tiny_engine
    backend = TensorRTBackend(engine_path)
    pipeline = GpuPipeline(backend, "deployable", resize="letterbox", score_threshold=0.5)
    frame = tiny_models.make_test_frame(240, 320)
    _, _, h, w = backend.input_shape
    tensor = np.empty((1, 3, h, w), np.float32)
    (transform,) = _core.preprocess(frame, tensor, resize="letterbox")
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    outs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {backend.input_name: tensor})))
    want = _core.postprocess_deployable(outs["pred_masks"][0], outs["pred_scores"][0], outs["pred_classes"][0],
                                        transform)
    assert len(want["scores"]) > 0
    for call in range(3):  # eager, capture, replay
        (got,) = pipeline.run([frame])
        got.pop("transform")
        assert_same_instances(got, want)
    # the tiny model has no plugin that could refuse capture: the third call replayed the graph
    assert pipeline.cuda_graph_active


@pytest.fixture(scope="module")
def tiny_dynamic_engine(tmp_path_factory):
    """The tiny deployable model with a batch range 1..3 (the fixture above pins batch 1:1:1)."""
    return _build_tiny_engine(tmp_path_factory, "trt_dynamic", batch=(1, 2, 3))


def test_tensorrt_engine_follows_batch_changes_with_cuda_graphs(tiny_dynamic_engine):
    # Every batch change re-plans the context: the run after it must be eager (never a replay of a
    # graph captured for the other batch), and a shape the runner set before must still count as set.
    import onnxruntime as ort
    import tiny_models
    from m2f_edge.backends.tensorrt import TensorRTBackend

    onnx_path, engine_path = tiny_dynamic_engine
    backend = TensorRTBackend(engine_path, use_cuda_graph=True)
    assert backend.batch_range == (1, 3)
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    _, _, h, w = backend.input_shape
    frames = [tiny_models.make_test_frame(240, 320), tiny_models.make_test_frame(200, 200)[:, ::-1]]
    for batch in (1, 1, 1, 2, 2, 2, 1, 2, 1, 1, 1):
        tensor = np.empty((batch, 3, h, w), np.float32)
        _core.preprocess(frames[:batch], tensor)
        want = dict(zip([o.name for o in session.get_outputs()], session.run(None, {backend.input_name: tensor})))
        got = backend.run(tensor)
        for name in backend.output_names:
            assert got[name].shape == want[name].shape, (batch, name)
            np.testing.assert_allclose(got[name].astype(np.float64), want[name].astype(np.float64), atol=1e-4)



def test_tensorrt_infer_waits_for_a_dlpack_input_before_returning(tiny_engine):
    # A DLPack input is released (its deleter called) when infer() returns; with synchronize=False the
    # engine could still be reading it, so infer() must have waited for its stream.
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch without CUDA")
    import tiny_models

    _, engine_path = tiny_engine
    engine = _core.tensorrt.Engine(engine_path)
    (info,) = [t for t in engine.tensors if t["mode"] == "input"]
    _, _, h, w = info["shape"]
    tensor = np.empty((1, 3, h, w), np.float32)
    _core.preprocess(tiny_models.make_test_frame(240, 320), tensor)
    want = {name: array.to_numpy() for name, array in engine.infer({info["name"]: tensor}).items()}

    stream = torch.cuda.Stream()
    for i in range(3):
        outputs = engine.infer({info["name"]: DlpackOnly(torch.from_numpy(tensor).cuda())},
                               stream=stream if i == 1 else stream.cuda_stream, synchronize=False)
        assert stream.query(), "infer() returned with work still reading a released DLPack input"
        for name, array in outputs.items():
            np.testing.assert_allclose(array.to_numpy(stream=stream.cuda_stream), want[name], atol=1e-5)
