"""COCO RLE against pycocotools: the `counts` bytes must be identical."""

import numpy as np
import pytest

mask_api = pytest.importorskip("pycocotools.mask")
_core = pytest.importorskip("m2f_edge._core")


def reference_counts(mask):
    return mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"]


def check(mask):
    ours = _core.rle_encode(mask)
    assert isinstance(ours, list) and len(ours) == 1 and isinstance(ours[0], bytes)
    assert ours[0] == reference_counts(np.asarray(mask)), mask.shape


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1), (5, 3), (17, 33), (64, 64), (31, 129), (480, 641)])
def test_special_masks(shape):
    empty = np.zeros(shape, np.uint8)
    check(empty)
    check(np.ones(shape, np.uint8))
    for y, x in [(0, 0), (shape[0] - 1, shape[1] - 1), (shape[0] // 2, shape[1] // 2), (shape[0] - 1, 0)]:
        single = empty.copy()
        single[y, x] = 1
        check(single)


@pytest.mark.parametrize("density", [0.01, 0.3, 0.5, 0.97])
@pytest.mark.parametrize("shape", [(23, 41), (200, 301), (1080, 1920)])
def test_random_masks(shape, density):
    rng = np.random.default_rng(int(density * 100) + shape[0])
    check(rng.uniform(size=shape) < density)
    blobs = np.zeros(shape, np.uint8)
    for _ in range(5):
        y0, x0 = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        blobs[y0 : y0 + rng.integers(1, shape[0]), x0 : x0 + rng.integers(1, shape[1])] = 1
    check(blobs)


def test_long_runs_use_the_delta_form():
    """Long runs (several 5-bit groups) and negative deltas exercise every branch of the string form."""
    mask = np.zeros((1000, 1500), np.uint8)
    mask[:, 700:] = 1
    mask[3, 10] = 1
    mask[998:, 20:40] = 1
    check(mask)


def test_batch_and_bool():
    rng = np.random.default_rng(1)
    masks = rng.uniform(size=(6, 37, 29)) < 0.4
    masks[2] = False
    masks[3] = True
    ours = _core.rle_encode(masks)
    reference = mask_api.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    assert ours == [r["counts"] for r in reference]
    assert _core.rle_encode(masks.astype(np.uint8)) == ours
    assert _core.rle_encode(np.zeros((0, 5, 5), np.uint8)) == []


def test_non_contiguous_views():
    rng = np.random.default_rng(2)
    big = (rng.uniform(size=(4, 90, 120)) < 0.5).astype(np.uint8)
    views = [big[1, ::2, ::3], big[2].T, big[3, ::-1, ::-1], np.asfortranarray(big[0]), big[0, 5:70, 11:13]]
    for view in views:
        check(view)
    batch = big[:, ::3, 1::2]
    expected = [reference_counts(np.ascontiguousarray(m)) for m in batch]
    assert _core.rle_encode(batch) == expected


def test_values_other_than_one_follow_pycocotools():
    """pycocotools starts a new run at every change of byte value; so does rle_encode."""
    mask = np.zeros((8, 9), np.uint8)
    mask[2:5, 1:4] = 255
    mask[3, 2] = 7
    check(mask)


def test_decodes_back_with_pycocotools():
    rng = np.random.default_rng(3)
    mask = (rng.uniform(size=(61, 47)) < 0.2).astype(np.uint8)
    counts = _core.rle_encode(mask)[0]
    decoded = mask_api.decode({"size": [61, 47], "counts": counts})
    np.testing.assert_array_equal(decoded, mask)


def test_bad_input():
    with pytest.raises(TypeError, match="masks"):
        _core.rle_encode(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="masks"):
        _core.rle_encode(np.zeros((1, 2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="masks"):
        _core.rle_encode(np.zeros(4, np.uint8))
    check(np.eye(4, dtype=np.uint8))
