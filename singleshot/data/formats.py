"""Format detection and the single entry point :func:`load_dataset` for COCO, Pascal VOC and YOLO datasets."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from singleshot.data.base import DetectionDataset
from singleshot.data.coco import CocoDetection
from singleshot.data.errors import DatasetFormatError, SplitNotFoundError
from singleshot.data.ultralytics import YAML_NAMES, find_data_yaml, read_data_yaml
from singleshot.data.voc import VOCDetection, find_voc_root
from singleshot.data.yolo import YOLODetection, yolo_image_dir

FORMATS = ("coco", "voc", "yolo")
_SPLIT_ALIASES = {"val": ("val", "valid", "validation"), "train": ("train",), "test": ("test",)}


def find_coco_split(root: str | os.PathLike[str], split: str) -> tuple[Path, Path] | None:
    """``(image_dir, ann_file)`` of ``split`` in a COCO-format folder, or None.

    Searched, for each alias of ``split`` (val: val, valid, validation): ``annotations/instances_{s}2017.json`` with
    ``{s}2017/``; ``annotations/instances_{s}.json`` with ``{s}/``, ``images/{s}/`` or ``images/``; and the Roboflow
    layout ``{s}/_annotations.coco.json`` with images beside it.
    """
    r = Path(root)
    for s in _SPLIT_ALIASES.get(split, (split,)):
        for ann_name, dirs in (
            (f"instances_{s}2017.json", (f"{s}2017", f"images/{s}2017")),
            (f"instances_{s}.json", (s, f"images/{s}", "images")),
            (f"{s}.json", (s, f"images/{s}", "images")),
        ):
            ann = r / "annotations" / ann_name
            if ann.is_file():
                image_dir = next((r / d for d in dirs if (r / d).is_dir()), r / dirs[0])
                return image_dir, ann
        if (r / s / "_annotations.coco.json").is_file():
            return r / s, r / s / "_annotations.coco.json"
    return None


def _image_dir_for_json(ann: Path) -> Path:
    """Guess the image folder of a lone COCO JSON: ``instances_val2017.json`` -> ``../val2017``, else beside it."""
    stem = ann.stem.removeprefix("instances_")
    for cand in (ann.parent.parent / stem, ann.parent.parent / "images" / stem, ann.parent / "images", ann.parent):
        if cand.is_dir():
            return cand
    return ann.parent


def _check_images_found(ds: CocoDetection, *, guessed: bool, key: str, probe: int = 16) -> None:
    """Stop early, naming the folder and the setting, when none of the first ``probe`` images exists there.

    A wrong image folder otherwise surfaces as "cannot read image" on the first batch (or, with skipping, as an
    empty epoch); a few missing files among present ones stay the loader's business (``on_bad_image``).
    """
    n = min(probe, len(ds))
    if n == 0 or any(os.path.exists(ds.image_path(i)) for i in range(n)):
        return
    how = "guessed from the JSON's location" if guessed else "as given"
    first = os.path.relpath(ds.image_path(0), ds.image_dir)
    raise DatasetFormatError(
        f"{ds.ann_file}: images not found: looked for {first!r} (and {n - 1} more) in {ds.image_dir} ({how}); "
        f"set {key}=FOLDER to the folder holding the images"
    )


def detect_format(path: str | os.PathLike[str]) -> str:
    """"coco", "voc" or "yolo" for a dataset folder (or a COCO JSON file); raises :class:`DatasetFormatError`."""
    p = Path(path)
    if not p.exists():
        raise DatasetFormatError(f"{p}: no such file or directory")
    if p.is_file():
        if p.suffix.lower() == ".json":
            return "coco"
        if p.suffix.lower() in (".yaml", ".yml"):
            return "yolo"  # an Ultralytics data.yaml
        raise DatasetFormatError(
            f"{p}: not a dataset folder, COCO JSON file or Ultralytics data.yaml ({', '.join(YAML_NAMES)})"
        )
    if any(find_coco_split(p, s) for s in ("train", "val", "test")) or any((p / "annotations").glob("*.json")):
        return "coco"
    if find_data_yaml(p) is not None:
        return "yolo"
    if find_voc_root(p) is not None:
        return "voc"
    if any(yolo_image_dir(p, s) for s in ("train", "val", "test")):
        return "yolo"
    raise DatasetFormatError(
        f"{p}: unrecognised dataset layout (expected COCO annotations/*.json, VOC Annotations/ + JPEGImages/, "
        "or YOLO images/ + labels/)"
    )


def load_dataset(
    path: str | os.PathLike[str] | None = None,
    split: str = "train",
    *,
    format: str | None = None,
    image_dir: str | os.PathLike[str] | None = None,
    classes: Sequence[str] | None = None,
    keep_empty: bool = False,
    on_bad_image: str = "raise",
    strict: bool = True,
    image_dir_key: str = "image_dir",
    crowd: str = "drop",
) -> DetectionDataset:
    """Open a detection dataset of any supported format.

    Args:
        path: dataset folder (COCO, VOC or YOLO layout), a COCO JSON file or an Ultralytics ``data.yaml``; None or
            "synth" means the built-in synthetic dataset, generated into the cache on first use.
        split: "train", "val" (also matches "valid"/"validation" folders), "test", ...
        format: force "coco", "voc" or "yolo" instead of detecting it.
        image_dir: image folder for a COCO JSON given as ``path`` (default: guessed from the file name).
        classes: class names for VOC/YOLO (ignored for COCO, whose categories define them).
        keep_empty: keep images without boxes as negatives (default: skip them for training, as the reference).
        on_bad_image: "raise" (stop at the first unreadable image, naming it) or "skip" (skip and count).
        strict: raise on the first malformed record; False collects problems instead (``data check``).
        image_dir_key: the setting that gives ``image_dir`` where the caller takes it from (``data.train_images``,
            ``--images``), named in the error when a COCO set's images are not where they were looked for.
        crowd: COCO ``iscrowd`` annotations: "drop" (default) or "keep" as ordinary targets (the SSD300
            references); see :class:`CocoDetection`.

    Returns:
        A :class:`DetectionDataset` yielding ``(image uint8[3, H, W], target)`` with boxes xyxy absolute pixels.
    """
    if path is None or (str(path) == "synth" and not Path("synth").exists()):
        from singleshot.data.synth import default_dataset_path

        path = default_dataset_path()
    p = Path(path)
    fmt = format or detect_format(p)
    common = {"keep_empty": keep_empty, "on_bad_image": on_bad_image, "strict": strict}
    if fmt == "coco":
        if p.is_file():
            ds = CocoDetection(image_dir or _image_dir_for_json(p), p, crowd=crowd, **common)
        else:
            found = find_coco_split(p, split)
            if found is None:
                raise SplitNotFoundError(f"{p}: no COCO annotation file for split '{split}' (looked in annotations/)")
            ds = CocoDetection(image_dir or found[0], found[1], crowd=crowd, **common)
        _check_images_found(ds, guessed=image_dir is None, key=image_dir_key)
        return ds
    if fmt == "voc":
        return VOCDetection(p, split, classes=classes, **common)
    if fmt == "yolo":
        yaml_file = p if p.is_file() else find_data_yaml(p)
        if yaml_file is not None:
            desc = read_data_yaml(yaml_file)
            if desc.split_key(split) is not None or p.is_file():
                names = list(classes) if classes is not None else desc.names
                return YOLODetection(yaml_file, split, classes=names, images=desc.images(split), **common)
        return YOLODetection(p, split, classes=classes, **common)
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")


def dataset_splits(path: str | os.PathLike[str]) -> list[str]:
    """The splits among train / val / test a dataset path has (a data.yaml's keys, a COCO folder's annotation
    files, a VOC folder's ``ImageSets/Main/*.txt`` lists, a YOLO root's image folders); [] for a lone COCO JSON (its
    one set is whatever it is asked for) or a path that is no dataset. Looks at names only: nothing is parsed."""
    p = Path(path)
    try:
        fmt = detect_format(p)
    except DatasetFormatError:
        return []
    splits = ("train", "val", "test")
    if fmt == "coco":
        return [] if p.is_file() else [s for s in splits if find_coco_split(p, s) is not None]
    if fmt == "voc":
        root = find_voc_root(p)
        return [s for s in splits if root is not None and (root / "ImageSets" / "Main" / f"{s}.txt").is_file()]
    yaml_file = p if p.is_file() else find_data_yaml(p)
    if yaml_file is not None:
        try:
            desc = read_data_yaml(yaml_file)
        except DatasetFormatError:
            return []
        return [s for s in splits if desc.split_key(s) is not None]
    return [s for s in splits if yolo_image_dir(p, s) is not None]
