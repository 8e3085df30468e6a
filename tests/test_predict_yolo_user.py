"""``singleshot predict`` as a YOLO user runs it: a folder with an animated GIF and broken files, a video, YOLO txt
labels with the dataset's class ids, crops per class, and the numbered ``runs/predict`` folders when ``--out`` is
not given. The cached trained tiny model (:func:`trained_model.trained_checkpoint`) finds its training shapes."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from train_helpers import tiny_dataset
from trained_model import images_with_objects, trained_checkpoint

from singleshot.checkpoint import atomic_save
from singleshot.cli import main
from singleshot.data.formats import load_dataset

CLASSES = ["circle", "triangle", "square", "hexagon", "star", "cross"]


def predict(*args: object) -> int:
    return main(["predict", "--checkpoint", str(trained_checkpoint()), "--device", "cpu", *map(str, args)])


def rgb(image_chw: torch.Tensor) -> Image.Image:
    return Image.fromarray(image_chw.permute(1, 2, 0).numpy())  # (3, H, W) -> (H, W, 3)


def write_video(path: Path, frames: torch.Tensor) -> None:
    """``uint8[N, 3, H, W]`` -> an MPEG-4 file, with PyAV."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = frames.shape[-1], frames.shape[-2], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame.permute(1, 2, 0).numpy(), format="rgb24")))
        container.mux(stream.encode())


def test_folder_with_a_gif_and_broken_files_predicts_the_rest(tmp_path, capsys) -> None:
    images = images_with_objects(count=4)
    folder = tmp_path / "mixed"
    folder.mkdir()
    rgb(images[0]).save(folder / "a.jpg", quality=95)
    rgb(images[1]).save(folder / "b.png")
    rgb(images[1]).save(folder / "anim.gif", save_all=True, append_images=[rgb(images[2]), rgb(images[3])],
                        duration=100, loop=0)  # fmt: skip
    good = (folder / "a.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "notes.jpg").write_text("a text file named .jpg\n")
    out = tmp_path / "out"

    code = predict(folder, "--out", out, "--batch-size", 2)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    warnings = [line for line in captured.err.splitlines() if "skipped" in line]
    assert warnings == [
        f"singleshot predict: skipped {folder / 'notes.jpg'}: cannot decode image: cannot identify image file "
        f"'{folder / 'notes.jpg'}'",
        f"singleshot predict: skipped {folder / 'truncated.jpg'}: cannot decode image: Image is incomplete or "
        "truncated",
    ]
    assert captured.out.startswith("5 images, ") and "; 2 input(s) skipped (see the warnings above)" in captured.out
    data = json.loads((out / "predictions.json").read_text())
    got = [(Path(r["file"]).name, r["frame"], r.get("picture")) for r in data["images"]]
    assert got == [("a.jpg", None, "a.jpg"), ("anim.gif", 0, "anim_0.jpg"), ("anim.gif", 1, "anim_1.jpg"),
                   ("anim.gif", 2, "anim_2.jpg"), ("b.png", None, "b.png")]  # fmt: skip
    for record in data["images"]:
        assert (record["height"], record["width"]) == (160, 160)
        assert (out / record["picture"]).is_file()
        assert record["detections"], record  # the trained shapes are found in every frame
        for det in record["detections"]:
            assert det["class_name"] == det["name"] == CLASSES[det["label"] - 1]
            assert det["class_id"] == det["label"]  # a COCO-format training set: category ids 1..6
    # Every GIF frame is the picture it was made of (256 colours): frame 0 finds what b.png, the same image, finds.
    names = [sorted(d["name"] for d in r["detections"]) for r in data["images"]]
    assert names[1] == names[4] and names[1] != names[2]


def test_video_gives_one_record_per_frame(tmp_path, capsys) -> None:
    pytest.importorskip("av")
    frames = images_with_objects(count=4)
    write_video(tmp_path / "clip.mp4", frames)
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    out = tmp_path / "out"

    code = predict(tmp_path / "clip.mp4", tmp_path / "broken.mp4", "--out", out, "--batch-size", 3, "--save-txt")
    captured = capsys.readouterr()
    assert code == 0
    assert f"singleshot predict: skipped {tmp_path / 'broken.mp4'}: cannot open video: " in captured.err
    records = json.loads((out / "predictions.json").read_text())["images"]
    assert [(Path(r["file"]).name, r["frame"]) for r in records] == [("clip.mp4", i) for i in range(4)]
    assert [r["picture"] for r in records] == [f"clip_{i}.jpg" for i in range(4)]
    assert sorted(p.name for p in (out / "labels").iterdir()) == [f"clip_{i}.txt" for i in range(4)]
    # Each frame finds the shapes its still image finds (the codec's loss moves boxes by a pixel or two).
    stills = tmp_path / "stills"
    stills.mkdir()
    for i, frame in enumerate(frames):
        rgb(frame).save(stills / f"clip_{i}.png")
    assert predict(stills, "--out", tmp_path / "s") == 0
    expected = json.loads((tmp_path / "s" / "predictions.json").read_text())["images"]
    for record, reference in zip(records, expected):
        assert record["detections"] and Path(reference["file"]).stem == record["picture"][:-4]
        assert sorted(d["name"] for d in record["detections"]) == sorted(d["name"] for d in reference["detections"])


def test_video_without_pyav_is_a_one_line_error(tmp_path, capsys, monkeypatch) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 64)
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ModuleNotFoundError, as when it is not installed
    code = predict(tmp_path / "clip.mp4", "--out", tmp_path / "out")
    err = capsys.readouterr().err.splitlines()
    assert code == 1
    assert err == [
        f"singleshot predict: skipped {tmp_path / 'clip.mp4'}: reading the video needs the optional package 'av', "
        "which is not installed: pip install 'singleshot[video]'",
        "singleshot predict: error: no image was predicted",
    ]


def yolo_dataset(root: Path, count: int) -> Path:
    """The tiny set's first training images in the Ultralytics layout: data.yaml, images/train, labels/train."""
    ds = load_dataset(str(tiny_dataset()), split="train")
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    names = "".join(f"  {k}: {name}\n" for k, name in enumerate(ds.classes))
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/train\nnames:\n{names}")
    for i in range(count):
        image, target = ds[i]
        h, w = image.shape[-2:]
        shutil.copy(ds.image_path(i), root / "images" / "train" / f"img{i}.jpg")
        lines = []
        for (x0, y0, x1, y1), label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            lines.append(f"{label - 1} {(x0 + x1) / 2 / w} {(y0 + y1) / 2 / h} {(x1 - x0) / w} {(y1 - y0) / h}\n")
        (root / "labels" / "train" / f"img{i}.txt").write_text("".join(lines))
    return root


def test_save_txt_writes_yolo_lines_with_the_dataset_class_ids(tmp_path, capsys) -> None:
    data = yolo_dataset(tmp_path / "shapes", count=4)
    yolo = load_dataset(str(data / "data.yaml"), split="train")
    assert yolo.classes == CLASSES and yolo.label_to_category_id == {k + 1: k for k in range(6)}
    # The cached model trained on these images, saved as a training run on the YOLO copy stores it.
    ckpt = torch.load(trained_checkpoint(), map_location="cpu", weights_only=False)
    ckpt["label_to_category_id"] = dict(yolo.label_to_category_id)
    checkpoint = atomic_save(ckpt, tmp_path / "yolo.pt")
    out = tmp_path / "out"

    code = main(["predict", "--checkpoint", str(checkpoint), str(data / "images" / "train"), "--out", str(out),
                 "--save-txt", "--save-conf", "--device", "cpu"])  # fmt: skip
    assert code == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"results saved to {out} (labels/)"
    records = json.loads((out / "predictions.json").read_text())["images"]
    for i, record in enumerate(records):
        truth = np.loadtxt(data / "labels" / "train" / f"img{i}.txt", ndmin=2)  # (G, 5) class cx cy w h
        lines = (out / "labels" / f"img{i}.txt").read_text().splitlines()
        found = np.array([[float(v) for v in line.split()] for line in lines])  # (K, 6) class cx cy w h score
        assert found.shape == (len(record["detections"]), 6)
        assert [int(c) for c in found[:, 0]] == [d["class_id"] for d in record["detections"]]
        assert [d["class_id"] for d in record["detections"]] == [d["label"] - 1 for d in record["detections"]]
        np.testing.assert_allclose(found[:, 5], [d["score"] for d in record["detections"]], atol=1e-4)
        for row in truth:  # every ground-truth box is found with the same class id, at the same place
            match = found[np.abs(found[:, 1:5] - row[1:5]).max(axis=1) < 0.03]
            assert len(match) >= 1 and int(match[0, 0]) == int(row[0]), (i, row, found)


def test_save_crop_writes_each_detection_under_its_class(tmp_path, capsys) -> None:
    images = images_with_objects(count=2)
    for i, image in enumerate(images):
        rgb(image).save(tmp_path / f"p{i}.png")
    out = tmp_path / "out"
    assert predict(tmp_path / "p0.png", tmp_path / "p1.png", "--out", out, "--save-crop", "--no-pictures") == 0
    records = json.loads((out / "predictions.json").read_text())["images"]
    expected = {}
    for record in records:
        stem = Path(record["file"]).stem
        assert "picture" not in record
        for k, det in enumerate(record["detections"]):
            x0, y0, x1, y1 = det["box"]
            expected[f"{det['class_name']}/{stem}_{k}.jpg"] = (int(np.ceil(x1) - np.floor(x0)),
                                                              int(np.ceil(y1) - np.floor(y0)))  # fmt: skip
    written = {p.relative_to(out / "crops").as_posix(): p for p in (out / "crops").rglob("*.jpg")}
    assert len(expected) >= 3 and sorted(written) == sorted(expected)
    for name, path in written.items():
        with Image.open(path) as crop:
            assert abs(crop.size[0] - expected[name][0]) <= 1 and abs(crop.size[1] - expected[name][1]) <= 1, name
    assert f"results saved to {out} (crops/ ({len(expected)}))" in capsys.readouterr().out
    assert not list(out.glob("*.png")) and not list(out.glob("*.jpg"))  # --no-pictures


def test_without_out_each_run_gets_a_new_numbered_folder(tmp_path, capsys, monkeypatch) -> None:
    rgb(images_with_objects(count=1)[0]).save(tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    assert predict("photo.jpg") == 0
    assert capsys.readouterr().out.splitlines() == [
        f"1 images, {len(json.loads(Path('runs/predict/predictions.json').read_text())['images'][0]['detections'])} "
        "detections -> runs/predict/predictions.json",
        "results saved to runs/predict",
    ]
    assert predict("photo.jpg", "--save-txt") == 0
    assert capsys.readouterr().out.splitlines()[-1] == "results saved to runs/predict2 (labels/)"
    assert (tmp_path / "runs" / "predict" / "photo.jpg").is_file()
    assert (tmp_path / "runs" / "predict2" / "labels" / "photo.txt").read_text().strip()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["predict", "predict2"]


def test_quoted_glob_patterns_pick_their_files(tmp_path, capsys) -> None:
    images = images_with_objects(count=3)
    (tmp_path / "shots" / "day2").mkdir(parents=True)
    rgb(images[0]).save(tmp_path / "shots" / "a.jpg")
    rgb(images[1]).save(tmp_path / "shots" / "b.png")
    rgb(images[2]).save(tmp_path / "shots" / "day2" / "c.jpg")
    out = tmp_path / "out"

    def files(pattern: str) -> list[str]:
        assert predict(str(tmp_path / pattern), "--out", out, "--no-pictures") == 0, capsys.readouterr()
        capsys.readouterr()
        data = json.loads((out / "predictions.json").read_text())
        return [Path(r["file"]).relative_to(tmp_path / "shots").as_posix() for r in data["images"]]

    assert files("shots/*.jpg") == ["a.jpg"]
    assert files("shots/**/*.jpg") == ["a.jpg", "day2/c.jpg"]
    assert files("shots/*") == ["a.jpg", "b.png"]  # a folder the pattern matches is not an image
