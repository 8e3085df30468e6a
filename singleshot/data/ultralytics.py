"""Ultralytics ``data.yaml``: the dataset description YOLO tools (and Roboflow's YOLO exports) write.

    path: ../datasets/shapes      # dataset root; relative to this file's folder (then to the working directory)
    train: images/train           # relative to path: a folder of images, a .txt list of image files, or a list
    val: images/val
    names: [circle, square]       # or {0: circle, 1: square}; nc: 2 may accompany either

Label files sit beside the images with the last ``images`` path component replaced by ``labels`` (see
:mod:`singleshot.data.yolo`). As Ultralytics does for Roboflow exports (``train: ../train/images`` next to a
``data.yaml`` at the dataset root), an entry starting with ``../`` that does not exist is also tried without it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from singleshot.data.errors import DatasetFormatError, SplitNotFoundError
from singleshot.data.yolo import IMAGE_EXTS

YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml")
_SPLIT_KEYS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


@dataclass
class DataYaml:
    """A parsed ``data.yaml``: the file, its resolved dataset root, the raw mapping and the class names."""

    file: Path
    root: Path
    data: dict[str, Any]
    names: list[str] | None

    def split_key(self, split: str) -> str | None:
        """The key of ``split`` in the file (val: val, valid or validation), or None when it has none."""
        return next((k for k in _SPLIT_KEYS.get(split, (split,)) if self.data.get(k)), None)

    def images(self, split: str) -> list[Path]:
        """The image files of ``split``, sorted within each entry.

        Raises:
            SplitNotFoundError: the file has no key for ``split``.
            DatasetFormatError: an entry names nothing that exists (the message names the path searched and the
                key of this file that sets it) or is not a string.
        """
        key = self.split_key(split)
        if key is None:
            raise SplitNotFoundError(f"{self.file}: no '{split}:' entry")
        entries = self.data[key] if isinstance(self.data[key], list) else [self.data[key]]
        files: list[Path] = []
        for entry in entries:
            if not isinstance(entry, str):
                raise DatasetFormatError(f"{self.file}: '{key}:' entries must be paths, got {entry!r}")
            files += self._entry_images(entry, key)
        return files

    def _entry_images(self, entry: str, key: str) -> list[Path]:
        cand = Path(entry) if Path(entry).is_absolute() else self.root / entry
        if not cand.exists() and entry.startswith("../"):
            cand = self.root / entry[3:]
        if cand.is_dir():
            return sorted(p for p in cand.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
        if cand.is_file() and cand.suffix == ".txt":  # one image path per line, relative to the dataset root
            lines = [s.strip() for s in cand.read_text().splitlines() if s.strip()]
            return [Path(s) if Path(s).is_absolute() else (self.root / s) for s in lines]
        raise DatasetFormatError(
            f"{self.file}: the '{key}:' images {entry!r} were looked for at {cand}, which does not exist; fix "
            f"'{key}:' (relative to 'path:', here {self.root}) or 'path:' in {self.file.name}"
        )


def find_data_yaml(folder: str | os.PathLike[str]) -> Path | None:
    """``data.yaml`` (or ``data.yml``, ``dataset.yaml``) inside ``folder``, or None."""
    return next((Path(folder) / n for n in YAML_NAMES if (Path(folder) / n).is_file()), None)


def _names(value: Any, file: Path) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        try:
            keys = sorted(value, key=int)
        except (TypeError, ValueError):
            raise DatasetFormatError(f"{file}: 'names:' as a mapping needs integer keys, got {list(value)}") from None
        if [int(k) for k in keys] != list(range(len(keys))):
            raise DatasetFormatError(f"{file}: 'names:' keys must be 0..{len(keys) - 1}, got {keys}")
        return [str(value[k]) for k in keys]
    if isinstance(value, list):
        return [str(v) for v in value]
    raise DatasetFormatError(f"{file}: 'names:' must be a list or a mapping, got {type(value).__name__}")


def read_data_yaml(file: str | os.PathLike[str]) -> DataYaml:
    """Parse an Ultralytics ``data.yaml``; errors name the file and the field."""
    import yaml

    file = Path(file)
    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetFormatError(f"{file}: cannot read: {e}") from None
    except yaml.YAMLError as e:
        raise DatasetFormatError(f"{file}: invalid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise DatasetFormatError(f"{file}: the top level must be a mapping (path:, train:, val:, names:)")
    declared = data.get("path")
    if declared is not None and not isinstance(declared, str):
        raise DatasetFormatError(f"{file}: 'path:' must be a string, got {declared!r}")
    root = Path(declared) if declared else file.parent
    if not root.is_absolute():
        beside = file.parent / root
        root = beside if beside.exists() or not root.exists() else root
    names = _names(data.get("names"), file)
    nc = data.get("nc")
    if names is not None and isinstance(nc, int) and nc != len(names):
        raise DatasetFormatError(f"{file}: 'nc: {nc}' but 'names:' lists {len(names)} classes")
    return DataYaml(file, root, data, names)
