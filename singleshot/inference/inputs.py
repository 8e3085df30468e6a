"""Turning what a user names (files, folders, glob patterns) into a list of image files."""

from __future__ import annotations

import glob
import os
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
_GLOB_CHARS = set("*?[")


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def expand_image_paths(items: list[str | os.PathLike[str]]) -> tuple[list[Path], list[str]]:
    """Files as given; folders -> their image files (sorted, not recursive); glob patterns (``*``, ``?``, ``[``,
    ``**`` recursive) -> the matching image files (sorted).

    Returns:
        ``(files, errors)``: errors name each item that is neither an existing path nor a pattern matching an image.
    """
    files: list[Path] = []
    errors: list[str] = []
    for item in items:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if is_image_file(p))
        elif path.exists():
            files.append(path)
        elif _GLOB_CHARS & set(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if is_image_file(Path(p)))
            if matches:
                files += matches
            else:
                errors.append(f"{text}: no image file matches this pattern")
        else:
            errors.append(f"{text}: no such file or folder")
    return files, errors


def is_path_pattern(item: object) -> bool:
    """True for a string/path naming a folder or a glob pattern (an input that stands for several images)."""
    if not isinstance(item, (str, os.PathLike)):
        return False
    text = os.fspath(item)
    return Path(text).is_dir() or (bool(_GLOB_CHARS & set(text)) and not Path(text).exists())
