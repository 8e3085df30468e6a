"""The synthetic dataset: COCO-loadable, exact boxes, deterministic, cached safely; the ``data`` CLI."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from singleshot.data import load_dataset, synth
from singleshot.data.check import check_dataset


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth.generate(tmp_path_factory.mktemp("synth"), num_train=12, num_val=4, seed=0)


def test_pycocotools_loads_it_unchanged(small_set: Path) -> None:
    from pycocotools.coco import COCO

    coco = COCO(str(small_set / "annotations" / "instances_val.json"))
    assert len(coco.getImgIds()) == 4
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(synth.CLASSES)
    res = coco.loadRes([{"image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.5}])
    assert len(res.getAnnIds()) == 1


def test_boxes_are_exact_and_inside(small_set: Path) -> None:
    data = json.loads((small_set / "annotations" / "instances_train.json").read_text())
    per_image: dict[int, int] = {}
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        assert w >= 1 and h >= 1 and x >= 0 and y >= 0 and x + w <= 320 and y + h <= 240
        assert 0 < ann["area"] <= w * h
        per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
    assert all(1 <= n <= 6 for n in per_image.values()) and len(per_image) == 12
    # the box edges touch the object: the shapes are saturated, the background is not
    img = np.asarray(Image.open(small_set / "train" / "000000.jpg").convert("HSV"))
    ann = next(a for a in data["annotations"] if a["image_id"] == 1)
    x, y, w, h = (int(v) for v in ann["bbox"])
    inside = img[y : y + h, x : x + w, 1]
    assert inside.max() > 120


def test_deterministic_by_seed(tmp_path: Path, small_set: Path) -> None:
    again = synth.generate(tmp_path / "again", num_train=3, num_val=0, seed=0)
    a = json.loads((small_set / "annotations" / "instances_train.json").read_text())
    b = json.loads((again / "annotations" / "instances_train.json").read_text())
    assert [x for x in a["annotations"] if x["image_id"] <= 3] == b["annotations"]
    assert (small_set / "train" / "000002.jpg").read_bytes() == (again / "train" / "000002.jpg").read_bytes()
    other = synth.generate(tmp_path / "other", num_train=3, num_val=0, seed=1)
    assert (other / "train" / "000000.jpg").read_bytes() != (again / "train" / "000000.jpg").read_bytes()


def test_loads_through_our_reader_and_check(small_set: Path) -> None:
    ds = load_dataset(small_set, "val")
    assert ds.classes == list(synth.CLASSES) and len(ds) == 4
    report = check_dataset(small_set)
    assert report.ok and [s.split for s in report.splits] == ["train", "val"]


def _race(_: int) -> str:
    return str(synth.default_dataset_path())


def test_default_path_cached_and_race_safe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SINGLESHOT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(synth.DEFAULTS, "num_train", 3)
    monkeypatch.setitem(synth.DEFAULTS, "num_val", 2)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        paths = pool.map(_race, [0, 1])
    assert paths[0] == paths[1] == str(tmp_path / "cache" / "synth-v1")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["synth-v1"]  # no temp folder left
    first = (tmp_path / "cache" / "synth-v1" / "train" / "000000.jpg").stat().st_mtime_ns
    assert synth.default_dataset_path() == tmp_path / "cache" / "synth-v1"
    assert (tmp_path / "cache" / "synth-v1" / "train" / "000000.jpg").stat().st_mtime_ns == first
    assert len(load_dataset(None, "train")) == 3


def test_cli_synth_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from singleshot.cli import main

    assert main(["data", "synth", "--out", str(tmp_path / "s"), "--num-train", "4", "--num-val", "2",
                 "--image-size", "160x120", "--seed", "2"]) == 0
    assert main(["data", "synth", "--out", str(tmp_path / "s")]) == 1  # not empty
    assert main(["data", "check", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "[train] 4 images" in out and "0 errors" in out
    (tmp_path / "s" / "val" / "000001.jpg").write_bytes(b"\xff\xd8\xff")
    assert main(["data", "check", str(tmp_path / "s")]) == 1
    out = capsys.readouterr().out
    assert "1 errors" in out and "000001.jpg" in out and "image_id=2" in out


def test_default_style_is_the_built_in_set(small_set: Path) -> None:
    # Golden: the first two training images of synth-v1 (seed 0) as the pre-style generator wrote them.
    data = json.loads((small_set / "annotations" / "instances_train.json").read_text())
    got = [(a["category_id"], a["bbox"], a["area"]) for a in data["annotations"] if a["image_id"] in (1, 2)]
    assert got == [
        (2, [8.0, 41.0, 83.0, 70.0], 2738.0), (1, [178.0, 191.0, 36.0, 34.0], 956.0),
        (5, [41.0, 188.0, 12.0, 13.0], 69.0), (6, [107.0, 115.0, 87.0, 64.0], 2831.0),
        (1, [254.0, 150.0, 14.0, 15.0], 162.0), (5, [69.0, 26.0, 50.0, 49.0], 938.0),
        (4, [44.0, 132.0, 44.0, 47.0], 1536.0), (4, [176.0, 4.0, 80.0, 75.0], 4372.0),
        (3, [109.0, 195.0, 59.0, 45.0], 1961.0),
    ]
    assert "style" not in data["info"]


def test_random_styles_vary_and_their_sets_are_valid(tmp_path: Path) -> None:
    styles = [synth.random_style(s) for s in range(12)]
    assert synth.random_style(3) == styles[3]  # deterministic by seed
    for attr in ("classes", "colour_by_class", "image_size", "max_objects", "background"):
        assert len({getattr(s, attr) for s in styles}) > 1, attr
    style = synth.SynthStyle(classes=("ring", "ell", "arrow", "half_disc"), colour_by_class=False,
                             image_size=(200, 120), size_jitter=0.3, max_objects=12, min_size=6,
                             background="texture", distractors=(10, 20))
    out = synth.generate(tmp_path / "s", num_train=8, num_val=2, seed=5, style=style)
    data = json.loads((out / "annotations" / "instances_train.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["ring", "ell", "arrow", "half_disc"]
    assert data["info"]["style"]["background"] == "texture"
    sizes = {(im["width"], im["height"]) for im in data["images"]}
    assert len(sizes) > 1  # size jitter: images differ in size
    by_id = {im["id"]: im for im in data["images"]}
    for ann in data["annotations"]:
        im = by_id[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert Image.open(out / "train" / im["file_name"]).size == (im["width"], im["height"])
        assert w >= 1 and h >= 1 and x >= 0 and y >= 0 and x + w <= im["width"] and y + h <= im["height"]
        assert 0 < ann["area"] <= w * h
    assert check_dataset(out).ok
    with pytest.raises(ValueError, match="classes"):
        synth.SynthStyle(classes=("circle", "blob"))


def _annotations(root, style) -> dict:
    import json

    from singleshot.data.synth import generate

    generate(root, num_train=24, num_val=2, seed=11, style=style)
    return json.loads((root / "annotations" / "instances_train.json").read_text())


def test_hard_styles_are_hard_in_the_way_they_say(tmp_path, monkeypatch) -> None:
    """``HARD_STYLES`` (the accuracy benchmark's --hard-styles): outline objects are hollow (their pixels fill a small
    part of their box, where the same style filled covers most of it); crowded images hold many overlapping
    objects; decoy images carry unlabelled shapes of other kinds outside the labelled boxes."""
    import dataclasses

    from singleshot.data.synth import HARD_STYLES

    def fill_ratio(data: dict) -> float:
        return float(np.mean([a["area"] / (a["bbox"][2] * a["bbox"][3]) for a in data["annotations"]]))

    outline = HARD_STYLES["outline"]
    hollow = fill_ratio(_annotations(tmp_path / "outline", outline))
    solid = fill_ratio(_annotations(tmp_path / "solid", dataclasses.replace(outline, fill="solid")))
    assert hollow < 0.3 < 0.5 < solid, (hollow, solid)

    crowded = _annotations(tmp_path / "crowded", HARD_STYLES["crowded"])
    per_image: dict[int, list[list[float]]] = {}
    for a in crowded["annotations"]:
        per_image.setdefault(a["image_id"], []).append(a["bbox"])
    assert len(crowded["annotations"]) / len(crowded["images"]) >= 10

    def overlaps(boxes: list[list[float]]) -> bool:
        return any(x0 < x1 + w1 and x1 < x0 + w0 and y0 < y1 + h1 and y1 < y0 + h0
                   for i, (x0, y0, w0, h0) in enumerate(boxes) for (x1, y1, w1, h1) in boxes[i + 1:])  # fmt: skip

    assert sum(overlaps(b) for b in per_image.values()) >= 0.8 * len(per_image)

    decoys = HARD_STYLES["decoys"]
    drawn: list[int] = []  # pixels each image's decoys changed, seen by a spy around the drawing
    original = synth._draw_decoys

    def spy(rng, pixels, style) -> None:
        before = pixels.copy()
        original(rng, pixels, style)
        drawn.append(int((pixels != before).any(axis=-1).sum()))

    monkeypatch.setattr(synth, "_draw_decoys", spy)
    data = _annotations(tmp_path / "decoys", decoys)
    assert [c["name"] for c in data["categories"]] == list(decoys.classes)  # the decoys are not labelled
    assert len(drawn) == 26 and sum(d > 0 for d in drawn) >= 18  # 0..8 decoys per image: most images have some
    assert np.mean(drawn) > 0.02 * 320 * 256  # and they are object-sized, not specks
