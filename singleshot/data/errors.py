"""Exceptions and the problem record shared by the dataset readers and ``singleshot data check``."""

from __future__ import annotations

from dataclasses import dataclass


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
