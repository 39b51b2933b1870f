"""Post-processing results hold each mask cropped to its box; these helpers read them with numpy
alone (no m2f_edge code), so tests compare what the core produced with independent references."""

import numpy as np


def check_crop_layout(result):
    """crops, crop_offsets and boxes agree: integer windows inside the frame, offsets stepping by
    the window areas, 0/1 bytes, and every window tight (each border row and column holds a 1)."""
    n = len(result["scores"])
    height, width = result["image_size"]
    crops, offsets, boxes = result["crops"], result["crop_offsets"], result["boxes"]
    assert crops.dtype == np.uint8 and crops.ndim == 1
    assert offsets.dtype == np.int64 and offsets.shape == (n + 1,) and offsets[0] == 0
    assert boxes.dtype == np.float32 and boxes.shape == (n, 4)
    assert np.array_equal(boxes, np.round(boxes))
    assert crops.shape[0] == offsets[-1]
    assert set(np.unique(crops)) <= {0, 1}
    for i, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert offsets[i + 1] - offsets[i] == (x2 - x1) * (y2 - y1)
        crop = crop_of(result, i)
        assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()


def crop_of(result, i):
    x1, y1, x2, y2 = result["boxes"][i].astype(int)
    offsets = result["crop_offsets"]
    return result["crops"][offsets[i]:offsets[i + 1]].reshape(y2 - y1, x2 - x1)


def full_masks(result):
    """(N, H, W) uint8 frame masks: each crop pasted into zeros at its window."""
    n = len(result["scores"])
    out = np.zeros((n,) + tuple(result["image_size"]), np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(result["boxes"].astype(int)):
        out[i, y1:y2, x1:x2] = crop_of(result, i)
    return out
