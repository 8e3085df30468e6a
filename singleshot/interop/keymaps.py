"""How the reference SSD300 checkpoints name their tensors, and how those names map onto singleshot's.

The mapping is a pure renaming. Both references and singleshot lay the head channels out the same way (channel
``c`` of a level's conv is value ``c // num_types`` of box type ``c % num_types``; see
:func:`singleshot.models.heads.flatten_level`) and order default boxes the same way (type-major, then row-major
positions; see :class:`singleshot.box.anchors.SSDAnchorSpec`), so no tensor needs permuting. The parity tests
(``tests/test_interop_parity.py``) check this against re-implementations of both reference models.

MLPerf SSD300-ResNet-34 wraps torchvision's ResNet-34 as ``model.layer1 = Sequential(conv1, bn1, relu, maxpool,
layer1, layer2)`` and ``model.layer2 = Sequential(layer3)``; NVIDIA SSD300 v1.1 wraps ResNet-50 as
``feature_extractor.feature_extractor = Sequential(conv1, bn1, relu, maxpool, layer1, layer2, layer3)``. Both
have ``additional_blocks.i.j`` laid out as ours, and heads ``loc.i`` / ``conf.i`` (ours: ``head.loc.i`` /
``head.conf.i``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ForeignFormat:
    """One foreign checkpoint family.

    Attributes:
        kind: the name used on the command line ("mlperf", "nvidia").
        description: human-readable name for messages.
        model: the singleshot preset with the same architecture (see :func:`singleshot.build_model`).
        rules: ``(foreign prefix, singleshot prefix)`` pairs; a key is renamed by the one rule whose foreign prefix
            it starts with. Prefixes end at a module boundary (``.``), so ``x.1.`` never matches ``x.10.``.
        signature: a key only this family has, used to recognise its checkpoints.
    """

    kind: str
    description: str
    model: str
    rules: tuple[tuple[str, str], ...]
    signature: str

    def to_singleshot(self, key: str) -> str | None:
        """The singleshot name of foreign ``key``, or None when no rule covers it."""
        return _apply(key, self.rules)

    def from_singleshot(self, key: str) -> str | None:
        """The foreign name of singleshot ``key``, or None when no rule covers it."""
        return _apply(key, tuple((ours, theirs) for theirs, ours in self.rules))


def _apply(key: str, rules: tuple[tuple[str, str], ...]) -> str | None:
    for src, dst in rules:
        if key.startswith(src):
            return dst + key[len(src) :]
    return None


_HEADS = (("additional_blocks.", "additional_blocks."), ("loc.", "head.loc."), ("conf.", "head.conf."))

MLPERF = ForeignFormat(
    kind="mlperf",
    description="MLPerf Training reference SSD300-ResNet-34",
    model="ssd300_resnet34",
    rules=(
        ("model.layer1.0.", "backbone.conv1."),
        ("model.layer1.1.", "backbone.bn1."),
        ("model.layer1.4.", "backbone.layer1."),
        ("model.layer1.5.", "backbone.layer2."),
        ("model.layer2.0.", "backbone.layer3."),
        *_HEADS,
    ),
    signature="model.layer1.0.weight",
)

NVIDIA = ForeignFormat(
    kind="nvidia",
    description="NVIDIA SSD300 v1.1 ResNet-50",
    model="ssd300_resnet50",
    rules=(
        ("feature_extractor.feature_extractor.0.", "backbone.conv1."),
        ("feature_extractor.feature_extractor.1.", "backbone.bn1."),
        ("feature_extractor.feature_extractor.4.", "backbone.layer1."),
        ("feature_extractor.feature_extractor.5.", "backbone.layer2."),
        ("feature_extractor.feature_extractor.6.", "backbone.layer3."),
        *_HEADS,
    ),
    signature="feature_extractor.feature_extractor.0.weight",
)

FORMATS: dict[str, ForeignFormat] = {f.kind: f for f in (MLPERF, NVIDIA)}
