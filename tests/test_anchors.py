"""Default boxes: counts, order and golden values of the SSD300 and SSD320 presets."""

import math

import pytest
import torch

from singleshot.box import SSD300_ANCHORS, MultiscaleAnchorSpec, default_boxes
from singleshot.models import get_spec

# (first box, last box) of each SSD300 level, normalized (cx, cy, w, h).
# Centres are (i + 0.5) / (300 / step); sizes are s_k / 300 for the first type; the last type of a level is the
# swapped box of its last aspect ratio a: (s_k / sqrt(a), s_k * sqrt(a)) / 300. Values are clamped to [0, 1].
SSD300_GOLDEN = [
    ((0.5 / 37.5, 0.5 / 37.5, 0.07, 0.07), (1.0, 1.0, 0.07 / math.sqrt(2), 0.07 * math.sqrt(2))),
    ((0.5 / 18.75, 0.5 / 18.75, 0.15, 0.15), (18.5 / 18.75, 18.5 / 18.75, 0.15 / math.sqrt(3), 0.15 * math.sqrt(3))),
    ((0.5 / 9.375, 0.5 / 9.375, 0.33, 0.33), (1.0, 1.0, 0.33 / math.sqrt(3), 0.33 * math.sqrt(3))),
    ((0.5 / 4.6875, 0.5 / 4.6875, 0.51, 0.51), (0.96, 0.96, 0.51 / math.sqrt(3), 0.51 * math.sqrt(3))),
    ((0.5 / 3, 0.5 / 3, 0.69, 0.69), (2.5 / 3, 2.5 / 3, 0.69 / math.sqrt(2), 0.69 * math.sqrt(2))),
    ((0.5, 0.5, 0.87, 0.87), (0.5, 0.5, 0.87 / math.sqrt(2), 1.0)),
]


@pytest.mark.parametrize("name", ["ssd300_resnet34", "ssd300_resnet50"])
def test_ssd300_default_boxes_golden(name):
    spec = get_spec(name).anchors
    boxes = default_boxes(spec, dtype=torch.float64)
    assert boxes.shape == (8732, 4)
    sizes = [f * f * n for f, n in zip(spec.feature_sizes, spec.num_anchors_per_location)]
    assert sizes == [5776, 2166, 600, 150, 36, 4]
    start = 0
    for level, (first, last) in enumerate(SSD300_GOLDEN):
        end = start + sizes[level]
        torch.testing.assert_close(boxes[start], torch.tensor(first, dtype=torch.float64), rtol=0, atol=1e-9)
        torch.testing.assert_close(boxes[end - 1], torch.tensor(last, dtype=torch.float64), rtol=0, atol=1e-9)
        start = end


def test_ssd300_order_is_type_major_then_row_major():
    boxes = default_boxes(SSD300_ANCHORS, dtype=torch.float64)
    # Level 0, type 0: index = row * 38 + col; second type starts at 38 * 38 with the geometric-mean size.
    torch.testing.assert_close(boxes[1, :2], torch.tensor([1.5 / 37.5, 0.5 / 37.5], dtype=torch.float64))
    torch.testing.assert_close(boxes[38, :2], torch.tensor([0.5 / 37.5, 1.5 / 37.5], dtype=torch.float64))
    assert boxes[1444, 2].item() == pytest.approx(math.sqrt(21 * 45) / 300)


def test_default_boxes_cached_per_device_and_dtype():
    a = default_boxes(SSD300_ANCHORS)
    assert a is default_boxes(SSD300_ANCHORS)
    assert a.dtype == torch.float32
    b = default_boxes(SSD300_ANCHORS, dtype=torch.float64)
    assert b is not a and b.dtype == torch.float64


def test_ssd320_fpn_anchors():
    spec = get_spec("ssd320_resnet50_fpn").anchors
    assert spec.feature_sizes == (40, 20, 10, 5, 3)
    boxes = default_boxes(spec, dtype=torch.float64)
    assert boxes.shape == (12804, 4)
    # P3 first anchor: stride 8, centre 4 px, side 4 * 8 = 32 px at aspect 1.
    torch.testing.assert_close(boxes[0], torch.tensor([4 / 320, 4 / 320, 32 / 320, 32 / 320], dtype=torch.float64))
    # Type 4 of P3 = second octave (2**0.5), aspect 2: w = 32 * sqrt(2) * sqrt(2) px.
    t4 = boxes[4 * 1600]
    assert t4[2].item() == pytest.approx(64 / 320)
    assert t4[3].item() == pytest.approx(32 / 320)
    # P7 (stride 128) does not divide 320, so centres sit at 0, 128, 256 px (the TF grid rule).
    p7_first = boxes[12804 - 6 * 9]
    assert p7_first[0].item() == 0.0


def test_multiscale_spec_counts():
    spec = MultiscaleAnchorSpec(image_size=256, min_level=3, max_level=5, aspect_ratios=(1.0,), scales_per_octave=1)
    assert default_boxes(spec).shape == ((32 * 32 + 16 * 16 + 8 * 8), 4)
