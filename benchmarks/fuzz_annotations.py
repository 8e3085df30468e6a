"""Seeded fuzzing of the COCO, VOC and YOLO readers and of ``data check``.

Each mutant is a small valid dataset (two 8x6 PNG images) whose annotation files were damaged: a field set to an
out-of-range or mistyped value (2**64, -2**63 - 1, 1e80, NaN, Infinity, 10**5000, strings, lists, null), a field
or record removed, the text cut short, bytes flipped. Every mutant is read three ways: strictly (what training
does), leniently (what ``data check`` does) and through :func:`singleshot.data.check.check_dataset`. The only
acceptable outcomes are success or a :class:`singleshot.data.errors.DataError` (a one-line message naming the
file); anything else is counted as unhandled. A strict load that succeeds must also hold only sane targets:
finite float32 xyxy boxes inside the image with positive width and height, labels in 1..K.

    python benchmarks/fuzz_annotations.py --count 3000 --seed 0     # prints the counts and any failure
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from singleshot.data.check import check_dataset
from singleshot.data.errors import DataError
from singleshot.data.formats import load_dataset

FORMATS = ("coco", "voc", "yolo")
IMAGE_W, IMAGE_H = 8, 6
NASTY_JSON: list[Any] = [
    2**64, 2**63, -(2**63) - 1, 10**400, 1e80, -1e80, 1e308, float("nan"), float("inf"), float("-inf"), -1, 0,
    0.5, 3, True, None, "", "x", "1", [], [1, 2], {}, {"id": 1}, [1e80, 0, 2**64, -1], [0, 0, -5, 3],
    [1, 1, 1e-30, 1e-30], "\u0000", "a" * 300,
]
NASTY_TEXT = [
    "1e80", "-1e80", "nan", "inf", "-inf", "1e400", str(2**64), str(-(2**63) - 1), "9" * 5000, "", "abc",
    "-1", "0", "0.5", "1e-40", "3", "   ", "0x10", "1_000", "\u0663", "&amp;", "<", "]]>",
]


def _write_images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (IMAGE_W, IMAGE_H), (90, 120, 150)).save(folder / name)


# --------------------------------------------------------------------------------------------------------- COCO
def _coco_doc() -> dict[str, Any]:
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": IMAGE_W, "height": IMAGE_H},
            {"id": 2, "file_name": "b.png", "width": IMAGE_W, "height": IMAGE_H},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 3], "area": 12, "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 2, "bbox": [0, 0, 8, 6], "area": 48, "iscrowd": 0},
            {"id": 12, "image_id": 2, "category_id": 2, "bbox": [2.5, 1.5, 3, 2], "area": 6, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }


def _mutate_json(doc: dict[str, Any], rng: random.Random) -> str:
    for _ in range(rng.choice([1, 1, 2, 3])):
        kind = rng.random()
        section = rng.choice(["images", "annotations", "categories"])
        records = doc.get(section)
        if kind < 0.6 and isinstance(records, list) and records:
            rec = rng.choice(records)
            if isinstance(rec, dict) and rec:
                key = rng.choice(list(rec))
                if rng.random() < 0.15:
                    del rec[key]
                elif key == "bbox" and isinstance(rec[key], list) and rec[key] and rng.random() < 0.5:
                    rec[key][rng.randrange(len(rec[key]))] = rng.choice(NASTY_JSON)
                else:
                    rec[key] = rng.choice(NASTY_JSON)
        elif kind < 0.7 and isinstance(records, list) and records:
            records[rng.randrange(len(records))] = rng.choice(NASTY_JSON)
        elif kind < 0.8:
            doc[section] = rng.choice(NASTY_JSON)
        elif kind < 0.9 and isinstance(records, list) and records:
            records.append(json.loads(json.dumps(rng.choice(records))))  # a duplicate record
        else:
            doc.pop(section, None)
    text = json.dumps(doc)  # NaN and Infinity are written as Python's json reads them
    return _mutate_text(text, rng) if rng.random() < 0.2 else text


def _mutate_text(text: str, rng: random.Random) -> str:
    choice = rng.random()
    if choice < 0.3:
        return text[: rng.randrange(len(text) + 1)]
    if choice < 0.5:
        return "[" * rng.choice([10, 5000, 100000]) + text
    chars = list(text)
    for _ in range(rng.randint(1, 4)):
        if chars:
            chars[rng.randrange(len(chars))] = chr(rng.choice([0, 10, 34, 44, 48, 57, 91, 93, 123, 125, 255, 0x663]))
    return "".join(chars)


# --------------------------------------------------------------------------------------------------------- VOC
def _voc_fields() -> list[dict[str, str]]:
    return [
        {"filename": "a.png", "width": str(IMAGE_W), "height": str(IMAGE_H),
         "objects": [("cat", "2", "2", "5", "4", "0"), ("dog", "1", "1", "8", "6", "0")]},  # type: ignore[dict-item]
        {"filename": "b.png", "width": str(IMAGE_W), "height": str(IMAGE_H),
         "objects": [("dog", "3", "2", "6", "4", "1")]},  # type: ignore[dict-item]
    ]


def _voc_xml(f: dict[str, Any], rng: random.Random | None) -> str:
    def val(v: str) -> str:
        return rng.choice(NASTY_TEXT) if rng is not None and rng.random() < 0.06 else v

    parts = [f"<annotation><filename>{val(f['filename'])}</filename>"]
    if rng is None or rng.random() > 0.05:
        parts.append(f"<size><width>{val(f['width'])}</width><height>{val(f['height'])}</height><depth>3</depth></size>")
    for name, x0, y0, x1, y1, diff in f["objects"]:
        tags = [("xmin", x0), ("ymin", y0), ("xmax", x1), ("ymax", y1)]
        if rng is not None and rng.random() < 0.05:
            tags.pop(rng.randrange(4))
        box = "".join(f"<{t}>{val(v)}</{t}>" for t, v in tags)
        parts.append(f"<object><name>{val(name)}</name><difficult>{val(diff)}</difficult><bndbox>{box}</bndbox></object>")
    text = "".join(parts) + "</annotation>"
    return _mutate_text(text, rng) if rng is not None and rng.random() < 0.15 else text


# --------------------------------------------------------------------------------------------------------- YOLO
YOLO_LINES = [["0 0.5 0.5 0.4 0.5", "1 0.25 0.25 0.5 0.5"], ["1 0.6 0.4 0.3 0.2", "0 0.1 0.1 0.2 0.2 0.3 0.1"]]


def _yolo_text(lines: list[str], rng: random.Random | None) -> str:
    out = []
    for line in lines:
        tokens = line.split()
        if rng is not None:
            for i in range(len(tokens)):
                if rng.random() < 0.06:
                    tokens[i] = rng.choice(NASTY_TEXT)
            if rng.random() < 0.05:
                tokens = tokens[: rng.randrange(len(tokens) + 1)]
            elif rng.random() < 0.05:
                tokens.append(rng.choice(NASTY_TEXT))
        out.append(" ".join(tokens))
    text = "\n".join(out) + "\n"
    return _mutate_text(text, rng) if rng is not None and rng.random() < 0.1 else text


# --------------------------------------------------------------------------------------------------------- driver
class Fuzzer:
    """Writes one dataset per format under ``root`` once and rewrites only its annotation files per mutant."""

    def __init__(self, root: Path) -> None:
        self.root = root
        _write_images(root / "coco" / "train", ["a.png", "b.png"])
        (root / "coco" / "annotations").mkdir(parents=True, exist_ok=True)
        _write_images(root / "voc" / "JPEGImages", ["a.png", "b.png"])
        (root / "voc" / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "voc" / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (root / "voc" / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
        _write_images(root / "yolo" / "images" / "train", ["a.png", "b.png"])
        (root / "yolo" / "labels" / "train").mkdir(parents=True, exist_ok=True)
        (root / "yolo" / "classes.txt").write_text("cat\ndog\n")

    def write(self, fmt: str, rng: random.Random | None) -> Path:
        """Write a mutant (``rng`` None: the valid original) of ``fmt``; returns the dataset folder."""
        if fmt == "coco":
            doc = _coco_doc()
            text = json.dumps(doc) if rng is None else _mutate_json(doc, rng)
            (self.root / "coco" / "annotations" / "instances_train.json").write_text(text, encoding="utf-8")
        elif fmt == "voc":
            for stem, fields in zip("ab", _voc_fields()):
                (self.root / "voc" / "Annotations" / f"{stem}.xml").write_text(_voc_xml(fields, rng), encoding="utf-8")
        else:
            for stem, lines in zip("ab", YOLO_LINES):
                (self.root / "yolo" / "labels" / "train" / f"{stem}.txt").write_text(_yolo_text(lines, rng),
                                                                                      encoding="utf-8")
        return self.root / fmt


def _sane(ds: Any) -> str | None:
    """None if every record's targets respect the sample contract, else what is wrong."""
    k = len(ds.classes)
    for i in range(len(ds)):
        boxes, labels = ds.annotation(i)
        if boxes.dtype != np.float32 or labels.dtype != np.int64 or len(boxes) != len(labels):
            return f"record {i}: dtypes {boxes.dtype}/{labels.dtype} or lengths differ"
        w, h = (1.0, 1.0) if ds.normalized_boxes else (IMAGE_W, IMAGE_H)
        if len(boxes) and not (np.isfinite(boxes).all() and (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
                               and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
                               and (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()):
            return f"record {i}: box outside the image or degenerate: {boxes.tolist()}"
        if len(labels) and not ((labels >= 1) & (labels <= k)).all():
            return f"record {i}: label outside 1..{k}: {labels.tolist()}"
        int(ds.image_id(i))
    return None


def run_one(fmt: str, folder: Path) -> list[tuple[str, str]]:
    """Read one mutant three ways; returns ``[(way, outcome)]`` with outcome "ok", "error" or a failure text."""
    ways: list[tuple[str, Callable[[], Any]]] = [
        ("strict", lambda: load_dataset(folder, "train", format=fmt)),
        ("lenient", lambda: load_dataset(folder, "train", format=fmt, keep_empty=True, strict=False)),
        ("check", lambda: check_dataset(folder, splits=["train"], decode=False, format=fmt)),
    ]
    out = []
    for way, call in ways:
        try:
            result = call()
        except DataError:
            out.append((way, "error"))
            continue
        except Exception:  # exactly what the fuzzer counts
            text = traceback.format_exc(limit=-3)
            out.append((way, "UNHANDLED " + (text if len(text) < 1500 else text[:700] + " ... " + text[-700:])))
            continue
        problem = _sane(result) if way == "strict" else None
        if way == "check":
            str(result.text())  # the report must render
        out.append((way, f"WRONG {problem[:600]}" if problem else "ok"))
    return out


def fuzz(count: int, seed: int, root: Path | None = None) -> dict[str, Any]:
    """Run ``count`` mutants per format; returns the counts and the first failures."""
    with tempfile.TemporaryDirectory() as tmp:
        fuzzer = Fuzzer(Path(root or tmp))
        counts: Counter[str] = Counter()
        failures: list[str] = []
        for fmt in FORMATS:
            base = run_one(fmt, fuzzer.write(fmt, None))
            assert all(o == "ok" for _, o in base), f"the unmutated {fmt} dataset must load: {base}"
            for i in range(count):
                rng = random.Random(f"{seed}-{fmt}-{i}")
                for way, outcome in run_one(fmt, fuzzer.write(fmt, rng)):
                    tag = outcome.split(" ", 1)[0]
                    counts[f"{fmt}.{way}.{tag}"] += 1
                    if tag in ("UNHANDLED", "WRONG"):
                        failures.append(f"{fmt} mutant {i} ({way}): {outcome}")
    return {"counts": counts, "failures": failures, "mutants": count * len(FORMATS)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=3000, help="mutants per format")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t0 = time.perf_counter()
    result = fuzz(args.count, args.seed)
    counts = result["counts"]
    for key in sorted(counts):
        print(f"{key:28s} {counts[key]:7d}")
    bad = len(result["failures"])
    print(f"{result['mutants']} mutants ({args.count} per format, seed {args.seed}), 3 reads each, "
          f"{time.perf_counter() - t0:.1f} s: {bad} unhandled or wrong")
    for failure in result["failures"][:10]:
        print(failure)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
