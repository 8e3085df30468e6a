"""The Detector API: every input type, edge-case images, original-pixel boxes, the val-transform preprocessing,
drawing and saving pictures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import singleshot
from singleshot.checkpoint import atomic_save, make_checkpoint
from singleshot.data.errors import BadImageError
from singleshot.data.loader import collate_detection
from singleshot.data.transforms import SSDValTransform
from singleshot.inference import Detector, draw_detections, save_image
from singleshot.inference.detector import Frame, to_uint8_rgb

CLASSES = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = singleshot.build_model("ssd_tiny", num_classes=len(CLASSES) + 1)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    atomic_save(make_checkpoint(model, CLASSES, {1: 5, 2: 6, 3: 9}), path)
    return path


@pytest.fixture(scope="module")
def detector(checkpoint):
    return Detector.from_checkpoint(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A 90x130 RGB image with blocks of colour (HWC uint8)."""
    rng = np.random.default_rng(0)
    img = (rng.random((90, 130, 3)) * 60).astype(np.uint8)
    img[10:60, 20:70] = [200, 30, 30]
    img[40:85, 80:125] = [30, 200, 40]
    return img


def same(a: dict, b: dict) -> None:
    torch.testing.assert_close(a["boxes"], b["boxes"])
    torch.testing.assert_close(a["scores"], b["scores"])
    assert torch.equal(a["labels"], b["labels"]) and a["names"] == b["names"]


def test_from_checkpoint(detector) -> None:
    assert detector.classes == CLASSES and detector.label_to_category_id == {1: 5, 2: 6, 3: 9}
    assert not detector.model.training and detector.device.type == "cpu"
    out = detector.model(torch.zeros(1, 3, 160, 160))  # the raw-output module
    assert out[0].shape[-1] == 4 and out[1].shape[-1] == len(CLASSES) + 1


def test_every_input_type_gives_the_same_result(detector, photo, tmp_path) -> None:
    Image.fromarray(photo).save(tmp_path / "p.png")
    chw = torch.from_numpy(photo).permute(2, 0, 1).contiguous()
    ref = detector.predict(chw, score_threshold=0.05)
    assert isinstance(ref, dict) and len(ref["scores"]) > 0
    same(detector.predict(photo, score_threshold=0.05), ref)  # numpy HWC
    same(detector.predict(Image.fromarray(photo), score_threshold=0.05), ref)  # PIL
    same(detector.predict(str(tmp_path / "p.png"), score_threshold=0.05), ref)  # path (lossless PNG)
    same(detector.predict(tmp_path / "p.png", score_threshold=0.05), ref)  # pathlib
    same(detector.predict(chw.float() / 255, score_threshold=0.05), ref)  # float tensor in [0, 1]
    batch = detector.predict([photo, chw, Image.fromarray(photo)], score_threshold=0.05, batch_size=2)
    assert isinstance(batch, list) and len(batch) == 3
    for r in batch:
        same(r, ref)


def test_result_contract(detector, photo) -> None:
    r = detector.predict(photo, score_threshold=0.05)
    k = len(r["scores"])
    assert r["boxes"].shape == (k, 4) and r["boxes"].dtype == torch.float32
    assert r["labels"].dtype == torch.int64 and ((r["labels"] >= 1) & (r["labels"] <= 3)).all()
    assert r["names"] == [CLASSES[i - 1] for i in r["labels"].tolist()]
    assert r["class_ids"].dtype == torch.int64  # the checkpoint's label -> dataset id map
    assert r["class_ids"].tolist() == [{1: 5, 2: 6, 3: 9}[i] for i in r["labels"].tolist()]
    assert (r["scores"][:-1] >= r["scores"][1:]).all() and (r["scores"] > 0.05).all()
    b = r["boxes"]
    assert (b[:, 0] >= 0).all() and (b[:, 2] <= 130).all() and (b[:, 3] <= 90).all() and (b[:, 1] >= 0).all()


def test_boxes_are_in_original_pixels(detector, photo) -> None:
    small = detector.predict(photo, score_threshold=0.05)
    big = np.repeat(np.repeat(photo, 3, axis=0), 3, axis=1)  # the same picture at 3x: boxes scale by 3
    large = detector.predict(big, score_threshold=0.05)
    assert len(small["scores"]) > 0
    # Near-equal scores of a random model may reorder, so match each box to its nearest counterpart.
    expected = small["boxes"][:10] * 3
    nearest = (large["boxes"][None] - expected[:, None]).abs().amax(-1).min(dim=1).values  # (10, K) -> (10,)
    assert (nearest < 6.0).all(), nearest


def test_preprocessing_is_the_validation_transform(detector, photo) -> None:
    chw = torch.from_numpy(photo).permute(2, 0, 1).contiguous()
    spec = detector.spec
    x, sizes = detector.core.preprocess([chw])
    ours = x[0]
    assert sizes.tolist() == [[90, 130]]
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "image_id": 0, "orig_size": (1, 1)}
    sample = SSDValTransform(spec.image_size)(chw, empty)
    theirs = collate_detection([sample], mean=spec.mean, std=spec.std)["images"][0]  # the evaluation loader's pixels
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "shape", [(1, 1, 3), (3, 7, 3), (2000, 3000, 3), (50, 40), (50, 40, 1), (60, 80, 4)],
    ids=["1x1", "3x7", "huge", "gray2d", "gray1ch", "rgba"],
)
def test_edge_case_images(detector, shape) -> None:
    img = np.random.default_rng(1).integers(0, 255, shape, dtype=np.uint8)
    r = detector.predict(img, score_threshold=0.05)
    h, w = shape[:2]
    assert r["boxes"].shape[1] == 4
    if len(r["boxes"]):
        assert r["boxes"][:, 2].max() <= w + 1e-3 and r["boxes"][:, 3].max() <= h + 1e-3


def test_grayscale_and_png_files(detector, photo, tmp_path) -> None:
    Image.fromarray(photo).convert("L").save(tmp_path / "g.jpg")
    Image.fromarray(photo).convert("RGBA").save(tmp_path / "a.png")
    results = detector.predict([tmp_path / "g.jpg", tmp_path / "a.png"], score_threshold=0.05)
    assert len(results) == 2 and all(r["boxes"].shape[1] == 4 for r in results)


def test_multi_frame_files_give_one_result_per_frame(detector, photo, tmp_path) -> None:
    frames = [Image.fromarray(np.roll(photo, 10 * k, axis=1)) for k in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(tmp_path / "still.gif")
    results = detector.predict(tmp_path / "anim.gif", score_threshold=0.05)
    assert isinstance(results, list) and len(results) == 3
    assert isinstance(detector.predict(tmp_path / "still.gif", score_threshold=0.05), dict)
    items = [item for item, _, _ in detector.stream([tmp_path / "anim.gif"], batch_size=2)]
    assert items == [Frame(tmp_path / "anim.gif", k) for k in range(3)]
    same(results[1], detector.predict(_gif_frame(tmp_path / "anim.gif", 1), score_threshold=0.05))  # frame 1


def _gif_frame(path, index: int) -> Image.Image:
    with Image.open(path) as im:
        im.seek(index)
        return im.convert("RGB")


def test_no_detections(detector, photo) -> None:
    r = detector.predict(photo, score_threshold=1.0)
    assert r["boxes"].shape == (0, 4) and r["scores"].shape == (0,) and r["names"] == []


def test_bad_inputs_are_named(detector, tmp_path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(BadImageError, match=r"broken\.jpg"):
        detector.predict(bad)
    with pytest.raises(TypeError, match="uint8"):
        to_uint8_rgb(np.zeros((4, 4, 3), dtype=np.float64))
    with pytest.raises(ValueError, match="shape"):
        to_uint8_rgb(torch.zeros(5, 4, 4, dtype=torch.uint8))
    with pytest.raises(TypeError, match="unsupported image type"):
        detector.predict(42)


def test_draw_and_save(tmp_path) -> None:
    img = torch.full((3, 60, 80), 100, dtype=torch.uint8)
    out = draw_detections(img, torch.tensor([[10.0, 10.0, 50.0, 40.0]]), torch.tensor([2]), torch.tensor([0.87]),
                          CLASSES)
    assert out.dtype == torch.uint8 and out.shape == img.shape
    assert not torch.equal(out[:, 10, 10:50], img[:, 10, 10:50])  # the top edge is drawn
    assert torch.equal(out[:, 55:, :], img[:, 55:, :])  # nothing outside the box
    assert torch.equal(img, torch.full((3, 60, 80), 100, dtype=torch.uint8))  # input untouched
    empty = draw_detections(img, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), None, CLASSES)
    assert torch.equal(empty, img)
    for name in ("x.jpg", "x.png"):
        save_image(out, tmp_path / "sub" / name)
        back = to_uint8_rgb(tmp_path / "sub" / name)
        assert back.shape == out.shape
    assert torch.equal(to_uint8_rgb(tmp_path / "sub" / "x.png"), out)  # PNG is lossless
