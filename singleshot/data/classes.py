"""Matching class lists by name: the one rule for every place where two label spaces meet.

A model's labels (its checkpoint's class names) meet a dataset's labels in evaluation, and a training set's labels
meet a validation set's in training. Labels are positions (``classes[label - 1]``), so two lists with the same
names in another order (a VOC folder sorted alphabetically, a YOLO ``names:`` list) would silently swap classes if
compared by count; here they are matched by name, and different sets of names are an error that prints both.
"""

from __future__ import annotations

from collections.abc import Sequence

from singleshot.data.errors import DataError


class ClassMismatchError(DataError, ValueError):
    """Two class lists that must hold the same names do not; the message prints both lists."""


def _duplicates(names: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    return sorted({n for n in names if n in seen or seen.add(n)})  # type: ignore[func-returns-value]


def label_map_by_name(
    source: Sequence[str], target: Sequence[str], *, source_what: str = "source", target_what: str = "target"
) -> dict[int, int]:
    """``{source label: target label}`` (labels 1..K, 0 = background is not listed) for the same set of names.

    Args:
        source, target: class names; label ``k`` is ``names[k - 1]``.
        source_what, target_what: what each list belongs to, for the error message (e.g. "checkpoint x.pt").
    Raises:
        ClassMismatchError: the two lists hold different names, or a list repeats a name (then labels are
            ambiguous); the message prints both lists.
    """
    dups = _duplicates(source) or _duplicates(target)
    if set(source) != set(target) or len(source) != len(target) or dups:
        only_s = [n for n in source if n not in set(target)]
        only_t = [n for n in target if n not in set(source)]
        why = f"repeated names {dups}" if dups else f"only in {source_what}: {only_s}; only in {target_what}: {only_t}"
        raise ClassMismatchError(
            f"class names differ ({why}): {source_what} has {len(source)} classes {list(source)}, "
            f"{target_what} has {len(target)} classes {list(target)}"
        )
    index = {name: i for i, name in enumerate(target, start=1)}
    return {i: index[name] for i, name in enumerate(source, start=1)}

