"""Dataset readers: COCO conventions, bad input of every kind, VOC, YOLO and format detection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from data_fixtures import coco_dict, make_coco, make_voc, make_yolo, write_image

from singleshot.data import (
    BadImageError,
    CocoDetection,
    DatasetFormatError,
    build_loader,
    detect_format,
    load_dataset,
    read_image,
)
from singleshot.data.transforms import SSDValTransform


def test_coco_labels_crowd_and_empty(tmp_path: Path) -> None:
    ds = load_dataset(make_coco(tmp_path), "train")
    assert ds.format == "coco"
    assert ds.classes == ["dog", "cat"]  # sorted by category id: 3 -> 1, 7 -> 2
    assert ds.label_to_category_id == {1: 3, 2: 7}
    # image 11 has only a crowd box and image 12 none: both skipped for training
    assert len(ds) == 1 and ds.stats["images_skipped_empty"] == 2 and ds.stats["boxes_crowd"] == 1
    image, target = ds[0]
    assert image.shape == (3, 48, 64) and image.dtype == torch.uint8
    assert target["image_id"] == 10 and target["orig_size"] == (48, 64)
    torch.testing.assert_close(target["boxes"], torch.tensor([[2.0, 3.0, 22.0, 13.0], [30.0, 20.0, 40.0, 30.0]]))
    assert target["labels"].tolist() == [2, 1]
    kept = load_dataset(tmp_path, "train", keep_empty=True)
    assert len(kept) == 3 and kept[1][1]["boxes"].shape == (0, 4)


def test_malformed_json_names_file_and_position(tmp_path: Path) -> None:
    make_coco(tmp_path)
    ann = tmp_path / "annotations" / "instances_train.json"
    ann.write_text('{"images": [1, 2,, ]}')
    with pytest.raises(DatasetFormatError, match=r"instances_train\.json: invalid JSON at line 1 column"):
        load_dataset(tmp_path, "train")


def test_bad_field_names_record_and_field(tmp_path: Path) -> None:
    data = coco_dict()
    data["annotations"][1]["bbox"] = [1, 2, "x", 4]
    make_coco(tmp_path, data)
    with pytest.raises(DatasetFormatError, match=r"annotations\[1\] \(id=2\) field 'bbox'"):
        load_dataset(tmp_path, "train")
    lenient = load_dataset(tmp_path, "train", strict=False)  # what `data check` uses: record, skip, go on
    assert any(p.field == "bbox" and p.record == "annotations[1] (id=2)" for p in lenient.problems)


def test_unknown_category_and_degenerate_boxes(tmp_path: Path) -> None:
    data = coco_dict()
    data["annotations"] += [
        {"id": 4, "image_id": 10, "category_id": 99, "bbox": [1, 1, 5, 5]},  # unknown category
        {"id": 5, "image_id": 10, "category_id": 3, "bbox": [5, 5, 0, 4]},  # zero width
        {"id": 6, "image_id": 10, "category_id": 3, "bbox": [5, 5, -3, 4]},  # negative width
        {"id": 7, "image_id": 10, "category_id": 3, "bbox": [100, 5, 10, 4]},  # wholly outside
        {"id": 8, "image_id": 10, "category_id": 3, "bbox": [50, 40, 30, 30]},  # partly outside: clipped
    ]
    ds = load_dataset(make_coco(tmp_path, data), "train")
    assert ds.stats["boxes_unknown_category"] == 1
    assert ds.stats["boxes_dropped"] == 3
    assert ds.stats["boxes_clipped"] == 1
    boxes = ds[0][1]["boxes"]
    assert len(boxes) == 3
    torch.testing.assert_close(boxes[-1], torch.tensor([50.0, 40.0, 64.0, 48.0]))
    assert any("unknown category_id 99" in str(p) and "annotations[3] (id=4)" in str(p) for p in ds.problems)


def test_missing_and_corrupt_images(tmp_path: Path) -> None:
    ds = load_dataset(make_coco(tmp_path), "train", keep_empty=True)
    (tmp_path / "train" / "img1.jpg").unlink()
    with pytest.raises(BadImageError, match=r"img1\.jpg"):
        ds[1]
    good = (tmp_path / "train" / "img0.jpg").read_bytes()
    (tmp_path / "train" / "img2.jpg").write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(BadImageError, match=r"img2\.jpg.*(truncated|incomplete)"):
        ds[2]
    (tmp_path / "train" / "img0.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(BadImageError, match=r"img0\.jpg"):
        ds[0]
    (tmp_path / "train" / "img0.jpg").write_bytes(b"")
    with pytest.raises(BadImageError, match=r"img0\.jpg: file is empty"):
        ds[0]


@pytest.mark.parametrize(("mode", "fmt", "name"), [("L", "JPEG", "g.jpg"), ("CMYK", "JPEG", "c.jpg"),
                                                   ("RGBA", "PNG", "a.png"), ("P", "PNG", "p.png"),
                                                   ("RGB", "BMP", "b.bmp")])
def test_colour_modes_become_rgb(tmp_path: Path, mode: str, fmt: str, name: str) -> None:
    image = read_image(write_image(tmp_path / name, 40, 30, mode=mode, fmt=fmt))
    assert image.shape == (3, 30, 40) and image.dtype == torch.uint8


def test_grayscale_values_replicated(tmp_path: Path) -> None:
    image = read_image(write_image(tmp_path / "g.png", 16, 8, mode="L", fmt="PNG"))
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_loader_bad_image_raise_and_skip(tmp_path: Path) -> None:
    make_coco(tmp_path)
    (tmp_path / "train" / "img1.jpg").write_bytes(b"garbage")
    ds = load_dataset(tmp_path, "train", keep_empty=True)
    loader = build_loader(ds, SSDValTransform(32), batch_size=3, shuffle=False, num_workers=0)
    with pytest.raises(BadImageError, match=r"img1\.jpg") as info:
        list(loader)
    assert "Traceback" not in str(info.value)
    ds_skip = load_dataset(tmp_path, "train", keep_empty=True, on_bad_image="skip")
    loader = build_loader(ds_skip, SSDValTransform(32), batch_size=3, shuffle=False, num_workers=0)
    with pytest.warns(UserWarning, match="img1.jpg"):
        batches = list(loader)
    assert [b["image_ids"].tolist() for b in batches] == [[10, 12]]
    assert loader.num_skipped == 1


def test_worker_error_is_one_clear_message(tmp_path: Path) -> None:
    """In a worker process too: the message names the file, not a DataLoader traceback."""
    make_coco(tmp_path)
    (tmp_path / "train" / "img0.jpg").write_bytes(b"garbage")
    ds = load_dataset(tmp_path, "train")
    loader = build_loader(ds, SSDValTransform(32), batch_size=1, shuffle=False, num_workers=1,
                          persistent_workers=False)
    with pytest.raises(BadImageError) as info:
        list(loader)
    first_line = str(info.value).splitlines()[0]
    assert "img0.jpg" in first_line and "DataLoader worker" not in str(info.value)


def test_voc_reader(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc")
    assert detect_format(root) == "voc"
    ds = load_dataset(root, "train")
    assert ds.classes[:3] == ["aeroplane", "bicycle", "bird"]  # the standard 20 (all names are VOC names)
    assert ds.stats["boxes_difficult"] == 1
    _, target = ds[0]
    torch.testing.assert_close(target["boxes"], torch.tensor([[0.0, 0.0, 20.0, 20.0]]))  # 1-based inclusive
    assert ds.classes[target["labels"][0] - 1] == "dog"
    with pytest.raises(DatasetFormatError, match="no split 'val'"):
        load_dataset(root, "val")


def test_voc_malformed_xml(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc")
    (root / "Annotations" / "b.xml").write_text("<annotation><object>")
    with pytest.raises(DatasetFormatError, match=r"b\.xml: invalid XML"):
        load_dataset(root, "train")


def test_yolo_reader(tmp_path: Path) -> None:
    root = make_yolo(tmp_path / "yolo")
    assert detect_format(root) == "yolo"
    ds = load_dataset(root, "train")
    assert ds.classes == ["cat", "dog"] and ds.label_to_category_id == {1: 0, 2: 1}
    _, target = ds[0]
    torch.testing.assert_close(target["boxes"][0], torch.tensor([24.0, 12.0, 40.0, 36.0]))  # 64x48 image
    assert target["labels"].tolist() == [1, 2]


def test_yolo_bad_lines(tmp_path: Path) -> None:
    root = make_yolo(tmp_path / "yolo", {"a": "0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.2 0.2\n0 1.2 0.5 0.2 0.2\n"})
    ds = load_dataset(root, "train")
    assert ds.stats["boxes_unknown_category"] == 1 and ds.stats["boxes_dropped"] == 1
    make_yolo(tmp_path / "bad", {"a": "0 0.5 0.5 0.2\n"})
    with pytest.raises(DatasetFormatError, match=r"a\.txt: line 1"):
        load_dataset(tmp_path / "bad", "train")


def test_detect_coco_layouts(tmp_path: Path) -> None:
    root = make_coco(tmp_path / "c")
    assert detect_format(root) == "coco"
    ann = root / "annotations" / "instances_train.json"
    assert detect_format(ann) == "coco"
    assert len(load_dataset(ann)) == 1  # lone JSON: images found in ../train
    coco17 = tmp_path / "coco17"
    make_coco(coco17, split="val2017")
    (coco17 / "annotations" / "instances_val2017.json").rename(coco17 / "annotations" / "instances_val2017.json")
    assert isinstance(load_dataset(coco17, "val"), CocoDetection)
    rf = tmp_path / "rf" / "valid"
    write_image(rf / "img0.jpg")
    (rf / "_annotations.coco.json").write_text(json.dumps(coco_dict(1)))
    assert len(load_dataset(tmp_path / "rf", "val")) == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetFormatError, match="unrecognised dataset layout"):
        detect_format(tmp_path / "empty")
