"""Starting weights for fine-tuning: a trained detector's tensors loaded into a new model by name and shape.

    model = singleshot.build_model("ssd_tiny", num_classes=4, weights="runs/a/checkpoints/best.pt",
                                   classes=["circle", "square", "kite"])
    # model.weights runs/a/checkpoints/best.pt (singleshot ssd_tiny, 6 classes): loaded 78 tensors, ...

The source may be a singleshot checkpoint or an MLPerf / NVIDIA SSD300 checkpoint (converted in memory by
:func:`singleshot.interop.read_checkpoint`). Every tensor whose name and shape match is copied. The class head is
the exception: its output channels are ``outputs x anchors`` (channel ``c`` is output ``c // anchors`` of box type
``c % anchors``, the references' layout; outputs = background + K for softmax heads, K for sigmoid heads), so
when the class lists differ it is rebuilt from the new model's fresh initialisation and the rows of every class
present in both lists (matched by name), and of the background, are copied from the source. Only weights move:
optimizer, schedule and epoch start fresh.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from singleshot.checkpoint import unwrap
from singleshot.interop.convert import strip_wrapper_prefixes
from singleshot.interop.reader import read_checkpoint
from singleshot.models import build_architecture


@dataclass
class WeightsReport:
    """What :func:`load_weights` did, tensor by tensor (names are the target model's state-dict keys)."""

    source: str
    description: str  # e.g. "nvidia ssd300_resnet50, 80 classes"
    loaded: list[str] = field(default_factory=list)  # copied whole
    class_head: list[str] = field(default_factory=list)  # rebuilt: fresh rows plus the carried-over classes
    reinitialized: list[str] = field(default_factory=list)  # absent from the source or of another shape
    skipped: list[str] = field(default_factory=list)  # source tensors the model has no place for
    carried_classes: list[str] = field(default_factory=list)  # class names whose head rows were copied
    new_classes: list[str] = field(default_factory=list)  # class names initialised fresh

    def summary(self) -> str:
        """The one line printed when weights are loaded."""
        text = (
            f"model.weights {self.source} ({self.description}): loaded {len(self.loaded)} tensors, "
            f"re-initialized {len(self.reinitialized) + len(self.class_head)}, skipped {len(self.skipped)}"
        )
        if self.class_head:
            text += (
                f"; class head ({len(self.class_head)} tensors) rebuilt by class name: carried over "
                f"{len(self.carried_classes)} {self.carried_classes}, new {len(self.new_classes)} {self.new_classes}"
            )
        if self.reinitialized:
            shown = ", ".join(self.reinitialized[:4]) + (", ..." if len(self.reinitialized) > 4 else "")
            text += f"; re-initialized: {shown}"
        return text


def _class_head_anchors(name: str, num_classes: int) -> dict[str, int]:
    """``{state-dict key: anchors per location}`` of the tensors whose first dim grows with the class count.

    Found by building the model for ``num_classes`` and ``num_classes + 1`` on the meta device (no memory, no
    initialisation) and comparing shapes, so any head layout registered in :mod:`singleshot.models` works.
    """
    with torch.device("meta"):
        a = build_architecture(name, num_classes=num_classes).state_dict()
        b = build_architecture(name, num_classes=num_classes + 1).state_dict()
    return {k: int(b[k].shape[0] - v.shape[0]) for k, v in a.items() if b[k].shape != v.shape}


def _output_labels(num_outputs: int, background: bool) -> list[int]:
    """The label of each class output row: softmax heads have the background (0) first, sigmoid heads do not."""
    return list(range(num_outputs)) if background else list(range(1, num_outputs + 1))


def _rebuild_head_tensor(
    fresh: Tensor, src: Tensor, anchors: int, rows: dict[int, int]
) -> Tensor:
    """``fresh`` with output rows ``rows`` ({target row: source row}) copied from ``src``.

    ``fresh``/``src``: ``[outputs * anchors, ...]`` (conv weight or bias), output-major as in the module docstring.
    """
    out = fresh.detach().clone()
    o_t, o_s = out.shape[0] // anchors, src.shape[0] // anchors
    dst_view = out.view(o_t, anchors, *out.shape[1:])  # (O_t * A, ...) -> (O_t, A, ...)
    src_view = src.view(o_s, anchors, *src.shape[1:])  # (O_s * A, ...) -> (O_s, A, ...)
    for t, s in rows.items():
        dst_view[t] = src_view[s].to(out.dtype)
    return out


def load_weights(
    model: nn.Module,
    weights: str | os.PathLike[str] | dict[str, Any],
    classes: Sequence[str] | None = None,
    *,
    trust_pickle: bool = False,
    log: Callable[[str], None] | None = print,
) -> WeightsReport:
    """Load a trained detector's weights into ``model`` by name and shape, carrying class rows over by name.

    Args:
        model: a registered detector (``model.spec``, ``model.num_classes``), freshly built: its own initial values
            stay wherever the source has nothing that fits.
        weights: a checkpoint file (singleshot, MLPerf or NVIDIA SSD300), or a checkpoint dict already read.
        classes: the model's K class names (label ``k`` is ``classes[k - 1]``). None: the source's names if it
            has as many classes, otherwise the class head is re-initialized without carrying rows.
        trust_pickle: allow arbitrary pickled objects in the file (see :func:`singleshot.interop.load_file`).
        log: where the one-line summary goes (None: silent).
    Returns:
        A :class:`WeightsReport`.
    Raises:
        FileNotFoundError, singleshot.interop.InteropError (a ValueError): the file is missing or unreadable.
        ValueError: ``classes`` does not have ``model.num_classes - 1`` names, or nothing at all matched.
    """
    inner = unwrap(model)
    if isinstance(weights, dict):
        ckpt, where = weights, str(weights.get("source", {}).get("file", "checkpoint"))
    else:
        ckpt, where = read_checkpoint(Path(weights), trust_pickle=trust_pickle), os.fspath(weights)
    src_state = strip_wrapper_prefixes(ckpt["state_dict"], where)
    src_classes = list(ckpt.get("classes") or [])
    src_model = ckpt.get("model", {})
    kind = ckpt.get("source", {}).get("kind", "singleshot") if isinstance(ckpt.get("source"), dict) else "singleshot"
    report = WeightsReport(
        where, f"{kind} {src_model.get('name', '?')}, {len(src_classes)} classes"
    )
    k = inner.num_classes - 1
    if classes is None:
        classes = src_classes if len(src_classes) == k else None
    elif len(classes) != k:
        raise ValueError(f"{len(classes)} class names given for a model with {k} classes")
    spec = inner.spec
    background = spec.classifier.has_background
    same_classes = classes is not None and list(classes) == src_classes
    head = {} if same_classes else _class_head_anchors(spec.name, inner.num_classes)
    src_label = {name: i for i, name in enumerate(src_classes, start=1)}

    target = inner.state_dict()
    new_state: dict[str, Tensor] = {}
    src_outputs = len(src_classes) + int(background)
    for key, fresh in target.items():
        src = src_state.get(key)
        in_head = key in head and src is not None and src.shape[1:] == fresh.shape[1:]
        if in_head and src.shape[0] == src_outputs * head[key]:  # type: ignore[union-attr]
            anchors = head[key]
            src_rows = {lab: r for r, lab in enumerate(_output_labels(src.shape[0] // anchors, background))}
            rows: dict[int, int] = {}
            carried, new = [], []
            for r, lab in enumerate(_output_labels(fresh.shape[0] // anchors, background)):
                if lab == 0:
                    rows[r] = src_rows[0]
                    continue
                name = classes[lab - 1] if classes is not None else None
                if name is not None and name in src_label and src_label[name] in src_rows:
                    rows[r] = src_rows[src_label[name]]
                    carried.append(name)
                else:
                    new.append(name if name is not None else f"label {lab}")
            new_state[key] = _rebuild_head_tensor(fresh, src, anchors, rows)
            report.class_head.append(key)
            report.carried_classes, report.new_classes = carried, new
        elif src is not None and src.shape == fresh.shape:
            new_state[key] = src.to(fresh.dtype)
            report.loaded.append(key)
        else:
            report.reinitialized.append(key)
    report.skipped = [key for key in src_state if key not in target]
    if not report.loaded and not report.class_head:
        raise ValueError(
            f"{where}: no tensor of this {report.description} checkpoint matches a {spec.name} model by name and "
            f"shape (first keys: {', '.join(list(src_state)[:4])})"
        )
    inner.load_state_dict(new_state, strict=False)
    if log is not None:
        log(report.summary())
    return report


def build_model(
    name: str,
    num_classes: int = 81,
    pretrained_backbone: str | Path | None = None,
    *,
    weights: str | os.PathLike[str] | None = None,
    classes: Sequence[str] | None = None,
    image_size: int | None = None,
) -> nn.Module:
    """The one way to make a detector: the registered architecture (:func:`singleshot.models.build_architecture`),
    plus starting weights from a trained detector.

    Args:
        name: one of :func:`singleshot.list_models`.
        num_classes: labels including background (81 for COCO).
        pretrained_backbone: a torchvision ImageNet file of the backbone (e.g. ``resnet34-333f7ec4.pth``), loaded
            key-for-key into ``model.backbone``; never downloaded.
        weights: a singleshot, MLPerf or NVIDIA SSD300 checkpoint to start from (see :func:`load_weights`, whose
            one-line summary is printed).
        classes: the model's class names, for carrying class-head rows over by name (see :func:`load_weights`).
        image_size: input size in pixels, the default boxes rebuilt for it (:func:`singleshot.get_spec`); None = the
            model's own.
    """
    model = build_architecture(name, num_classes=num_classes, pretrained_backbone=pretrained_backbone,
                               image_size=image_size)
    if weights is not None:
        load_weights(model, weights, classes)
    elif classes is not None and len(classes) != num_classes - 1:
        raise ValueError(f"{len(classes)} class names given for a model with {num_classes - 1} classes")
    return model
