"""Exceptions and the problem record shared by the dataset readers and ``singleshot data check``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


class DataError(Exception):
    """Base class of every data-layer error; the message is one line that names the file."""


class DatasetFormatError(DataError, ValueError):
    """A dataset file is malformed (bad JSON/XML/txt, missing or mistyped field).

    The message names the file and, where known, the record (index and id) and the field.
    """


class SplitNotFoundError(DatasetFormatError):
    """The dataset has no such split (e.g. no ``val`` annotations)."""


class BadImageError(DataError):
    """An image file is missing, unreadable, truncated or in an unsupported format."""


class DataLoadError(DataError):
    """Any other failure while loading one sample in a loader worker, re-raised in the main process."""


@dataclass(frozen=True)
class Problem:
    """One problem found in a dataset.

    Attributes:
        severity: "error" (the record is unusable) or "warning" (it was repaired, e.g. a box clipped).
        file: the file at fault (annotation file or image).
        message: what is wrong, in one line.
        record: where inside ``file``, e.g. "annotations[12] (id=345)", or "" for the whole file.
        field: the offending field, e.g. "bbox", or "".
    """

    severity: str
    file: str
    message: str
    record: str = ""
    field: str = ""

    def __str__(self) -> str:
        where = self.file
        if self.record:
            where += f" {self.record}"
        if self.field:
            where += f" field '{self.field}'"
        return f"{self.severity}: {where}: {self.message}"


class ProblemCollector:
    """What a reader finds while parsing: :class:`Problem` records and counters (``boxes_clipped``, ...) for the
    dataset's ``problems`` and ``stats``. In strict mode an error raises :class:`DatasetFormatError` at once.

    ``file`` is the annotation file problems belong to unless a call names another (VOC: one XML file per image;
    YOLO: one label file per image).
    """

    def __init__(self, file: str, strict: bool) -> None:
        self.file, self.strict = file, strict
        self.problems: list[Problem] = []
        self.stats: Counter[str] = Counter()

    def error(self, message: str, record: str = "", field: str = "", *, file: str | None = None) -> None:
        problem = Problem("error", file or self.file, message, record, field)
        if self.strict:
            raise DatasetFormatError(str(problem).removeprefix("error: "))
        self.problems.append(problem)

    def warn(
        self, message: str, record: str = "", field: str = "", counter: str = "", *, file: str | None = None
    ) -> None:
        self.problems.append(Problem("warning", file or self.file, message, record, field))
        if counter:
            self.stats[counter] += 1

    def count(self, counter: str, n: int = 1) -> None:
        self.stats[counter] += n

    def box_repairs(
        self,
        keep: np.ndarray,
        changed: np.ndarray,
        record: Callable[[int], str],
        field: str,
        *,
        file: str | None = None,
    ) -> None:
        """Report what :func:`singleshot.data.base.sanitize_boxes` did to ``N`` boxes (``keep``/``changed``:
        ``bool[N]``; ``record(k)`` names box ``k``, built only for the boxes reported): a warning per dropped or
        clipped box, counted in ``boxes_dropped`` / ``boxes_clipped``."""
        for k in np.flatnonzero(~keep):
            self.warn("degenerate box; dropped", record(int(k)), field, "boxes_dropped", file=file)
        for k in np.flatnonzero(changed):
            self.warn("box outside the image; clipped", record(int(k)), field, "boxes_clipped", file=file)
