"""Converting MLPerf / NVIDIA SSD300 checkpoints to singleshot checkpoints and back, strictly.

Strict means: every tensor of the source lands in exactly one place of the target, every parameter and buffer of
the target is filled, and shapes agree; anything else raises :class:`InteropError` listing the offending keys.
Tensors are moved as they are (same values, same dtype): the layouts agree, so nothing is permuted or approximated
(see :mod:`singleshot.interop.keymaps`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from singleshot.checkpoint import FORMAT, VERSION, is_singleshot_checkpoint
from singleshot.interop.coco import COCO_CLASSES, COCO_LABEL_TO_CATEGORY_ID
from singleshot.interop.keymaps import FORMATS, ForeignFormat
from singleshot.models import build_architecture, get_spec

# Wrapper prefixes that may precede every key: DDP / DataParallel, and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_MAX_LISTED = 25


class InteropError(ValueError):
    """A checkpoint cannot be converted; the message names the source and lists the offending keys."""


def _listing(title: str, items: list[str]) -> str:
    shown = items[:_MAX_LISTED]
    more = f"\n    ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return f"  {title} ({len(items)}):\n" + "\n".join(f"    {s}" for s in shown) + more


def strip_wrapper_prefixes(state_dict: Mapping[str, Any], where: str = "checkpoint") -> dict[str, Any]:
    """Remove ``module.`` (DDP/DataParallel) and ``_orig_mod.`` (torch.compile) prefixes from every key.

    Raises :class:`InteropError` when two keys become one (a file holding both wrapped and unwrapped copies).
    """
    out: dict[str, Any] = {}
    collisions = []
    for key, value in state_dict.items():
        name = key
        while name.startswith(_WRAPPER_PREFIXES):
            name = name.removeprefix("module.").removeprefix("_orig_mod.")
        if name in out:
            collisions.append(f"{key} -> {name}")
        out[name] = value
    if collisions:
        raise InteropError(
            f"{where}: keys collide once DDP/compile prefixes are removed\n" + _listing("keys", collisions)
        )
    return out


def extract_state_dict(obj: Any, where: str = "checkpoint") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split a foreign checkpoint into ``(state_dict, other fields)``.

    Accepts ``{"model": state_dict, ...}`` (both references' training checkpoints), ``{"state_dict": ...}`` and a
    bare state dict, with or without DDP ``module.`` prefixes. Every value of the state dict must be a tensor.
    """
    if not isinstance(obj, Mapping):
        raise InteropError(f"{where}: expected a dict (a state dict or {{'model': state_dict, ...}}), got {type(obj)}")
    extras: dict[str, Any] = {}
    state = obj
    for field in ("model", "state_dict"):
        if isinstance(obj.get(field), Mapping):
            state = obj[field]
            extras = {k: v for k, v in obj.items() if k != field}
            break
    bad = [f"{k}: {type(v).__name__}" for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise InteropError(f"{where}: the state dict holds values that are not tensors\n" + _listing("keys", bad))
    return strip_wrapper_prefixes(state, where), extras


def detect_kind(obj: Any) -> str:
    """ "singleshot", "mlperf" or "nvidia" for a loaded checkpoint object, or "unknown"."""
    if is_singleshot_checkpoint(obj):
        return "singleshot"
    try:
        state, _ = extract_state_dict(obj)
    except InteropError:
        return "unknown"
    for fmt in FORMATS.values():
        if fmt.signature in state:
            return fmt.kind
    return "unknown"


def _target_shapes(model_name: str, num_classes: int) -> dict[str, torch.Size]:
    # Built on the meta device: all names and shapes, no memory, no initialisation cost.
    with torch.device("meta"):
        model = build_architecture(model_name, num_classes=num_classes)
    return {k: v.shape for k, v in model.state_dict().items()}


def _rename_strict(
    state: Mapping[str, Tensor],
    rename: Callable[[str], str | None],
    expected: Mapping[str, torch.Size],
    where: str,
    direction: str,
) -> dict[str, Tensor]:
    """Rename every key of ``state`` with ``rename(key) -> new key | None`` and check it against ``expected``."""
    out: dict[str, Tensor] = {}
    unmapped, unexpected, duplicated, mismatched = [], [], [], []
    for key, value in state.items():
        new = rename(key)
        if new is None:
            unmapped.append(key)
        elif new not in expected:
            unexpected.append(f"{key} -> {new}")
        elif new in out:
            duplicated.append(f"{key} -> {new}")
        else:
            if tuple(value.shape) != tuple(expected[new]):
                mismatched.append(f"{key} {tuple(value.shape)} -> {new} expects {tuple(expected[new])}")
            out[new] = value
    missing = [k for k in expected if k not in out]
    if unmapped or unexpected or duplicated or mismatched or missing:
        parts = [f"{where}: cannot convert {direction}; every source tensor must be used once and every target filled"]
        if unmapped:
            parts.append(_listing("source keys no rule maps", unmapped))
        if unexpected:
            parts.append(_listing("source keys whose target does not exist", unexpected))
        if duplicated:
            parts.append(_listing("source keys mapping to an already-filled target", duplicated))
        if mismatched:
            parts.append(_listing("shape mismatches", mismatched))
        if missing:
            parts.append(_listing("target keys left unfilled", missing))
        raise InteropError("\n".join(parts))
    return {k: out[k] for k in expected}  # in the target model's own order


def _num_classes(state: Mapping[str, Tensor], anchors_first_level: int, where: str) -> int:
    conf = state.get("conf.0.weight")
    if conf is None:
        return 81  # the strict check then reports what is missing
    channels = conf.shape[0]
    if channels % anchors_first_level:
        raise InteropError(
            f"{where}: conf.0.weight has {channels} output channels, not a multiple of {anchors_first_level} "
            "default boxes per location"
        )
    return channels // anchors_first_level


def _class_names(extras: Mapping[str, Any], num_classes: int) -> list[str] | None:
    """Names from a reference ``label_map`` ({0: "background", 1: name, ...}) when it is one and fits."""
    label_map = extras.get("label_map")
    if not isinstance(label_map, Mapping) or len(label_map) != num_classes:
        return None
    try:
        by_label = {int(k): v for k, v in label_map.items()}
    except (TypeError, ValueError):
        return None
    if set(by_label) != set(range(num_classes)) or not all(isinstance(v, str) for v in by_label.values()):
        return None
    return [by_label[i] for i in range(1, num_classes)]


def from_foreign(
    obj: Any,
    kind: str,
    *,
    classes: list[str] | None = None,
    label_to_category_id: Mapping[int, int] | None = None,
    source: str = "checkpoint",
) -> dict[str, Any]:
    """Convert a loaded MLPerf or NVIDIA SSD300 checkpoint to a singleshot checkpoint dict.

    Args:
        obj: ``{"model": state_dict, ...}`` or a bare state dict (``module.`` prefixes allowed).
        kind: "mlperf" or "nvidia".
        classes: the K foreground class names; default: the source's ``label_map`` if it has one of the right
            size, else the 80 COCO names for an 81-class model, else ``class_1 .. class_K``.
        label_to_category_id: label (1..K) -> dataset category id; default: COCO ids (1..90 with gaps, in
            increasing order) for an 81-class model, else identity.
        source: where ``obj`` came from, for messages and the ``source`` field.
    Returns:
        A singleshot checkpoint (see :mod:`singleshot.checkpoint`) with an extra ``source`` field
        ``{"kind", "file", "epoch"}``; training state (optimizer, scheduler) is not carried over.
    """
    fmt = _format(kind)
    state, extras = extract_state_dict(obj, source)
    num_classes = _num_classes(state, get_spec(fmt.model).anchors.num_anchors_per_location[0], source)
    expected = _target_shapes(fmt.model, num_classes)
    converted = _rename_strict(state, fmt.to_singleshot, expected, source, f"from {fmt.description}")

    if classes is None:
        classes = _class_names(extras, num_classes)
    if classes is None:
        classes = list(COCO_CLASSES) if num_classes == 81 else [f"class_{i}" for i in range(1, num_classes)]
    if len(classes) != num_classes - 1:
        raise InteropError(f"{source}: {len(classes)} class names given for a model with {num_classes - 1} classes")
    if label_to_category_id is None:
        label_to_category_id = COCO_LABEL_TO_CATEGORY_ID if num_classes == 81 else {i: i for i in range(1, num_classes)}
    epoch = extras.get("epoch")
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": {"name": fmt.model, "num_classes": num_classes},
        "state_dict": converted,
        "classes": list(classes),
        "label_to_category_id": {int(k): int(v) for k, v in label_to_category_id.items()},
        "source": {"kind": fmt.kind, "file": source, "epoch": int(epoch) if isinstance(epoch, int) else None},
    }


def to_foreign(ckpt: Mapping[str, Any], kind: str, source: str = "checkpoint") -> dict[str, Any]:
    """Convert a singleshot checkpoint dict to the reference format ``kind`` ("nvidia" or "mlperf").

    Returns ``{"model": state_dict, "label_map": {0: "background", 1: name, ...}}`` with the reference's exact keys
    and no wrapper prefix: what NVIDIA's ``load_checkpoint`` / torch.hub loader and the MLPerf reference's
    ``--checkpoint`` read (``model.load_state_dict(ckpt["model"])``). The model must be the matching preset
    (``ssd300_resnet50`` for NVIDIA, ``ssd300_resnet34`` for MLPerf).
    """
    fmt = _format(kind)
    if not is_singleshot_checkpoint(ckpt):
        raise InteropError(f"{source}: not a singleshot checkpoint (no format='singleshot' field)")
    name = ckpt["model"]["name"]
    num_classes = int(ckpt["model"]["num_classes"])
    if name != fmt.model:
        raise InteropError(f"{source}: holds a {name!r} model; the {fmt.description} format needs {fmt.model!r}")
    state = strip_wrapper_prefixes(ckpt["state_dict"], source)
    # Validate against our own model first, so a damaged singleshot file is reported in our names.
    _rename_strict(state, lambda k: k, _target_shapes(name, num_classes), source, f"as a {name} model")
    expected = {new: v.shape for k, v in state.items() if (new := fmt.from_singleshot(k)) is not None}
    foreign = _rename_strict(state, fmt.from_singleshot, expected, source, f"to {fmt.description}")
    classes = list(ckpt.get("classes") or [f"class_{i}" for i in range(1, num_classes)])
    return {"model": foreign, "label_map": {0: "background", **{i: c for i, c in enumerate(classes, 1)}}}


def _format(kind: str) -> ForeignFormat:
    if kind not in FORMATS:
        raise InteropError(f"unknown checkpoint kind {kind!r}; choose from {', '.join(FORMATS)}")
    return FORMATS[kind]


def from_mlperf(obj: Any, **kwargs: Any) -> dict[str, Any]:
    """:func:`from_foreign` for an MLPerf SSD300-ResNet-34 checkpoint."""
    return from_foreign(obj, "mlperf", **kwargs)


def from_nvidia(obj: Any, **kwargs: Any) -> dict[str, Any]:
    """:func:`from_foreign` for an NVIDIA SSD300 v1.1 ResNet-50 checkpoint."""
    return from_foreign(obj, "nvidia", **kwargs)


def to_nvidia(ckpt: Mapping[str, Any], source: str = "checkpoint") -> dict[str, Any]:
    """:func:`to_foreign` in NVIDIA SSD300 v1.1 format."""
    return to_foreign(ckpt, "nvidia", source)


def to_mlperf(ckpt: Mapping[str, Any], source: str = "checkpoint") -> dict[str, Any]:
    """:func:`to_foreign` in MLPerf SSD300-ResNet-34 format."""
    return to_foreign(ckpt, "mlperf", source)
