"""Pascal VOC reader: ``Annotations/*.xml`` + ``JPEGImages/`` + ``ImageSets/Main/{split}.txt``.

VOC boxes are 1-based inclusive pixel indices; they become pixel-edge xyxy (``x1 = xmin - 1``, ``x2 = xmax``) so
a box covering columns 1..10 is 10 pixels wide. ``difficult`` objects are left out of the targets (as crowd boxes
are for COCO) unless ``keep_difficult``. Class names: ``classes`` if given; else the 20 standard VOC classes when
every name found belongs to them; else the sorted names found in all XML files (all splits, so every split gets
the same label mapping).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from singleshot.data.base import DetectionDataset, sanitize_boxes
from singleshot.data.errors import DatasetFormatError, ProblemCollector, SplitNotFoundError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


def _text(node: ET.Element | None, path: str, field: str) -> str:
    if node is None or node.text is None or not node.text.strip():
        raise DatasetFormatError(f"{path}: missing field '{field}'")
    return node.text.strip()


MAX_SIDE = 2**31 - 1  # pixels: a larger stated size describes no real image
MAX_COORD = 2.0**31  # pixels, absolute value


def _number(text: str, path: str, field: str, limit: float) -> float:
    """A finite number of magnitude up to ``limit``; anything else is an error naming the file and field."""
    try:
        v = float(text)
    except ValueError:
        raise DatasetFormatError(f"{path}: field '{field}' must be a number, got {text[:40]!r}") from None
    if not abs(v) <= limit:  # also rejects NaN
        raise DatasetFormatError(f"{path}: field '{field}' is out of range ({text[:40]}; magnitude up to {limit:g})")
    return v


def _parse_xml(path: str) -> tuple[str, int, int, list[tuple[str, list[float], bool]]]:
    """``(filename, height, width, [(name, [xmin, ymin, xmax, ymax] as written, difficult)])``; -1 if no size."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError, ValueError) as e:  # ValueError: e.g. an encoding expat cannot read
        raise DatasetFormatError(f"{path}: invalid XML: {e}") from None
    filename = (root.findtext("filename") or "").strip()
    size = root.find("size")
    w = int(_number(size.findtext("width") or "-1", path, "size.width", MAX_SIDE)) if size is not None else -1
    h = int(_number(size.findtext("height") or "-1", path, "size.height", MAX_SIDE)) if size is not None else -1
    objects = []
    for k, obj in enumerate(root.findall("object")):
        name = _text(obj.find("name"), path, f"object[{k}].name")
        bb = obj.find("bndbox")
        if bb is None:
            raise DatasetFormatError(f"{path}: object[{k}] ({name}) has no 'bndbox'")
        tags = ("xmin", "ymin", "xmax", "ymax")
        field = f"object[{k}].bndbox."
        coords = [_number(_text(bb.find(t), path, field + t), path, field + t, MAX_COORD) for t in tags]
        objects.append((name, coords, (obj.findtext("difficult") or "0").strip() == "1"))
    return filename, h, w, objects


def find_voc_root(path: str | os.PathLike[str]) -> Path | None:
    """The folder holding ``Annotations/`` and ``JPEGImages/``: ``path`` itself or one VOCdevkit-style child."""
    p = Path(path)
    for cand in [p, *sorted(p.glob("*")), *sorted(p.glob("*/*"))] if p.is_dir() else []:
        if (cand / "Annotations").is_dir() and (cand / "JPEGImages").is_dir():
            return cand
    return None


class VOCDetection(DetectionDataset):
    """A Pascal VOC folder as a :class:`DetectionDataset` (image ids are positions in the split list)."""

    format = "voc"

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        classes: Sequence[str] | None = None,
        keep_difficult: bool = False,
        keep_empty: bool = False,
        on_bad_image: str = "raise",
        strict: bool = True,
    ) -> None:
        voc = find_voc_root(root)
        if voc is None:
            raise DatasetFormatError(f"{root}: no Annotations/ and JPEGImages/ folders found")
        split_file = voc / "ImageSets" / "Main" / f"{split}.txt"
        xml_all = sorted((voc / "Annotations").glob("*.xml"))
        if split_file.exists():
            try:
                stems = [s.split()[0] for s in split_file.read_text().splitlines() if s.strip()]
            except (OSError, UnicodeDecodeError) as e:
                raise DatasetFormatError(f"{split_file}: cannot read split list: {e}") from None
        elif not (voc / "ImageSets" / "Main").is_dir():
            stems = [p.stem for p in xml_all]
        else:
            have = sorted(p.stem for p in (voc / "ImageSets" / "Main").glob("*.txt") if "_" not in p.stem)
            raise SplitNotFoundError(f"{voc}: no split '{split}' (ImageSets/Main has {', '.join(have) or 'none'})")
        col = ProblemCollector(str(voc), strict)
        parsed = []
        for stem in stems:
            xml = str(voc / "Annotations" / f"{stem}.xml")
            try:
                parsed.append((stem, *_parse_xml(xml)))
            except DatasetFormatError as e:
                if strict:
                    raise
                col.error(str(e).split(": ", 1)[-1], file=xml)
        if classes is None:
            names = _all_names(xml_all)
            classes = list(VOC_CLASSES) if names <= set(VOC_CLASSES) else sorted(names)
        name_to_label = {n: i + 1 for i, n in enumerate(classes)}
        paths, ids, sizes, boxes, labels = [], [], [], [], []
        for idx, (stem, filename, h, w, objs) in enumerate(parsed):
            xml = str(voc / "Annotations" / f"{stem}.xml")
            img_boxes, img_labels = [], []
            for k, (name, (x0, y0, x1, y1), difficult) in enumerate(objs):
                if name not in name_to_label:
                    col.warn(f"unknown class '{name}'; dropped", f"object[{k}]", "name", "boxes_unknown_category",
                             file=xml)
                    continue
                if difficult and not keep_difficult:
                    col.count("boxes_difficult")
                    continue
                box, keep, changed = sanitize_boxes(np.array([x0 - 1, y0 - 1, x1, y1]), w if w > 0 else np.inf,
                                                    h if h > 0 else np.inf)
                col.box_repairs(keep, changed, lambda _, k=k: f"object[{k}]", "bndbox", file=xml)
                if not keep[0]:
                    continue
                img_boxes.append(box[0])
                img_labels.append(name_to_label[name])
            if not img_boxes and not keep_empty:
                col.count("images_skipped_empty")
                continue
            paths.append(str(_image_file(voc / "JPEGImages", stem, filename)))
            ids.append(idx)
            sizes.append((h, w))
            boxes.append(np.asarray(img_boxes, np.float32).reshape(-1, 4))
            labels.append(np.asarray(img_labels, np.int64))
        super().__init__(
            root=str(voc), paths=paths, image_ids=ids, sizes=np.asarray(sizes, np.int64).reshape(-1, 2),
            boxes=boxes, labels=labels, classes=classes,
            label_to_category_id={i + 1: i + 1 for i in range(len(classes))},
            on_bad_image=on_bad_image, problems=col.problems, stats=col.stats,
        )


def _all_names(xml_files: Sequence[Path]) -> set[str]:
    """Object names in every readable XML file (all splits), so all splits share one label mapping."""
    names: set[str] = set()
    for p in xml_files:
        try:
            names.update(o[0] for o in _parse_xml(str(p))[3])
        except DatasetFormatError:
            continue  # reported when its split is loaded
    return names


def _image_file(folder: Path, stem: str, filename: str) -> Path:
    """The image of an annotation: the XML's ``filename`` if it exists, else ``stem`` with a known extension."""
    for cand in ([folder / filename] if filename else []) + [folder / f"{stem}{ext}" for ext in _IMAGE_EXTS]:
        try:
            if cand.exists():
                return cand
        except (OSError, ValueError):  # a name too long or holding a NUL byte: no such file
            continue
    return folder / (filename or f"{stem}.jpg")  # missing: reported when read
