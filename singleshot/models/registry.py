"""The preset registry: ``build_architecture(name, ...)`` over named builder functions (timm's pattern).

:func:`singleshot.build_model` is the public way to make a model: this registry's architecture, plus starting weights
from a trained detector (:mod:`singleshot.interop.weights`); the packages below it (checkpoints, interop, the engine)
use :func:`build_architecture` directly."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from singleshot.box.anchors import SSD300_ANCHORS, MultiscaleAnchorSpec, SSDAnchorSpec
from singleshot.box.classifier import SIGMOID
from singleshot.box.coder import TF_ARGMAX_MATCH, MatchRule
from singleshot.box.postprocess import PostprocessConfig
from singleshot.models.backbones import load_backbone_weights
from singleshot.models.spec import DetectorSpec
from singleshot.models.ssd import SSD, ExtraBlock
from singleshot.models.ssd_fpn import SSDFPN

Builder = Callable[[int, DetectorSpec], nn.Module]  # (num_classes, spec) -> model
_BUILDERS: dict[str, Builder] = {}
_SPECS: dict[str, DetectorSpec] = {}


def register(spec: DetectorSpec) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        _BUILDERS[spec.name] = fn
        _SPECS[spec.name] = spec
        return fn

    return deco


# Extra blocks shared by both SSD300 models: 38 -> 19 -> 10 -> 5 -> 3 -> 1.
_SSD300_EXTRAS = [
    ExtraBlock(256, 512, 2, 1),
    ExtraBlock(256, 512, 2, 1),
    ExtraBlock(128, 256, 2, 1),
    ExtraBlock(128, 256, 1, 0),
    ExtraBlock(128, 256, 1, 0),
]


@register(DetectorSpec("ssd300_resnet34", 300, SSD300_ANCHORS, reference_backbone_file="resnet34-333f7ec4.pth"))
def ssd300_resnet34(num_classes: int, spec: DetectorSpec) -> nn.Module:
    """MLPerf Training reference SSD300: ResNet-34 to conv4_x (stride 1), extra blocks with bias, no BN."""
    return SSD(spec, num_classes, "resnet34", 3, _SSD300_EXTRAS, extra_batch_norm=False)


@register(DetectorSpec("ssd300_resnet50", 300, SSD300_ANCHORS, reference_backbone_file="resnet50-0676ba61.pth"))
def ssd300_resnet50(num_classes: int, spec: DetectorSpec) -> nn.Module:
    """NVIDIA SSD300 v1.1: ResNet-50 to conv4_x (stride 1), extra blocks with BN and no bias."""
    return SSD(spec, num_classes, "resnet50", 3, _SSD300_EXTRAS, extra_batch_norm=True)


@register(
    DetectorSpec(
        "ssd320_resnet50_fpn",
        320,
        MultiscaleAnchorSpec(image_size=320),
        classifier=SIGMOID,
        loss="focal",
        box_loss_by_codesize=True,  # TF config: normalize_loc_loss_by_codesize: true
        match=TF_ARGMAX_MATCH,  # ArgMaxMatcher: IoU >= 0.5, first-listed box wins a shared forced anchor
        postprocess=PostprocessConfig(
            score_threshold=1e-8,
            nms_iou=0.6,
            candidates_per_class=100,  # TF max_detections_per_class: counts boxes kept after NMS
            max_detections=100,
            per_class_cap="after_nms",
        ),
        reference_backbone_file="resnet50-0676ba61.pth",  # ImageNet ResNet-50 (TF-slim resnet_v1_50 in the recipe)
        size_multiple=64,  # the FPN's top-down sums need C3-C5 halving exactly
    )
)
def ssd320_resnet50_fpn(num_classes: int, spec: DetectorSpec) -> nn.Module:
    """NVIDIA SSD320 v1.2: ResNet-50 + TF-style FPN P3-P7, shared 4-conv towers, sigmoid focal-loss classifier;
    BatchNorm epsilon 1e-3 / momentum 0.003 in FPN and head, FPN weights truncated normal 0.03, head normal 0.01,
    class bias -4.6 (the TF config's values)."""
    return SSDFPN(
        spec,
        num_classes,
        bn_eps=1e-3,
        bn_momentum=0.003,
        fpn_init_std=0.03,
        head_init_std=0.01,
        class_bias_init=-4.6,
    )


# The CPU preset: the SSD300 code path at 160 px on ResNet-18's first two stages (stride 8 -> 20x20),
# with slim extra blocks. Scales 10-144 px (0.06-0.9 of the image): smaller at the first level than SSD300's
# 21/300 so that objects of 6-12 px at 160 px get default boxes they overlap (measured, see configs/cpu_tiny.yaml).
TINY_ANCHORS = SSDAnchorSpec(
    image_size=160,
    feature_sizes=(20, 10, 5, 3, 1),
    steps=(8, 16, 32, 160 / 3, 160),
    scales=(10, 24, 48, 80, 112, 144),
    aspect_ratios=((2,), (2, 3), (2, 3), (2,), (2,)),
)


# IoU > 0.3 rather than SSD300's 0.5: more positive default boxes per object for a model this small. On the six
# sets of bench_accuracy (README), 0.5 / 0.4 / 0.3 gave outline mAP 0.007 / 0.024 / 0.072, decoys 0.129 / 0.206 / 0.259.
@register(DetectorSpec("ssd_tiny", 160, TINY_ANCHORS, match=MatchRule(iou_threshold=0.3)))
def ssd_tiny(num_classes: int, spec: DetectorSpec) -> nn.Module:
    """Small SSD for CPUs, the demo and the tests (~0.9M parameters): ResNet-18 through layer2, the first block of
    each layer only (1.7x faster training steps on 2 CPU cores than both blocks), + 4 extra blocks."""
    extras = [
        ExtraBlock(64, 128, 2, 1),
        ExtraBlock(64, 128, 2, 1),
        ExtraBlock(64, 128, 2, 1),
        ExtraBlock(64, 128, 1, 0),
    ]
    return SSD(
        spec, num_classes, "resnet18", 2, extras, extra_batch_norm=True, stride1_last=False,
        blocks_per_layer=1,
    )


def list_models() -> list[str]:
    """Names accepted by :func:`build_architecture` (and :func:`singleshot.build_model`)."""
    return sorted(_BUILDERS)


def get_spec(name: str, image_size: int | None = None) -> DetectorSpec:
    """The :class:`DetectorSpec` of a registered model (its input size, anchors, loss, post-processing, ...).

    ``image_size``: another input size (``model.image_size``): the spec with the default boxes rebuilt for the
    feature maps the architecture makes at that size (:meth:`SSDAnchorSpec.resized`); None or the model's own size
    gives the registered spec itself.

    Raises:
        ValueError: unknown model, or a size the architecture cannot take (the message names the sizes it takes).
    """
    if name not in _SPECS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    spec = _SPECS[name]
    if image_size is None or image_size == spec.image_size:
        return spec
    if image_size not in _RESIZED.setdefault(name, {}):
        _RESIZED[name][image_size] = _resized_spec(spec, image_size)
    return _RESIZED[name][image_size]


_RESIZED: dict[str, dict[int, DetectorSpec]] = {}


def _feature_sizes(spec: DetectorSpec, image_size: int) -> tuple[int, ...] | None:
    """The side of each detection feature map the architecture makes from a ``image_size`` input, or None when a
    map would be empty. Shapes only: the probe model lives on the meta device (no weights, no random draws)."""
    with torch.device("meta"):
        model = _BUILDERS[spec.name](2, spec).eval()
        try:
            with torch.no_grad():
                feats = model.features(torch.zeros(1, 3, image_size, image_size))
        except RuntimeError:  # a map shrank below the next layer's kernel
            return None
    sizes = tuple(int(f.shape[-1]) for f in feats)
    return sizes if min(sizes) >= 1 and all(int(f.shape[-2]) == int(f.shape[-1]) for f in feats) else None


def _resized_spec(spec: DetectorSpec, image_size: int) -> DetectorSpec:
    sizes = _feature_sizes(spec, image_size) if image_size % spec.size_multiple == 0 else None
    if sizes is None or len(sizes) != len(spec.anchors.feature_sizes):
        own = "" if spec.image_size % spec.size_multiple == 0 else f" (or its own {spec.image_size})"
        raise ValueError(f"{spec.name} takes input sizes that are {_valid_sizes_text(spec, image_size)}{own}; got "
                         f"{image_size}")
    anchors = spec.anchors.resized(image_size, sizes)
    return dataclasses.replace(spec, image_size=image_size, anchors=anchors)


def _valid_sizes_text(spec: DetectorSpec, near: int) -> str:
    """``"multiples of 32 from 160 (nearest: 320, 352)"`` for an error message."""
    m = spec.size_multiple
    smallest = next((k * m for k in range(1, 4096 // m + 1) if _feature_sizes(spec, k * m) is not None), None)
    if smallest is None:
        return "no other size"
    below, above = max(smallest, near // m * m), max(smallest, -(-near // m) * m)
    nearest = sorted({below, above} - {near}) or [above + m]
    return f"multiples of {m} from {smallest} (nearest: {', '.join(map(str, nearest))})"


def build_architecture(
    name: str, num_classes: int = 81, pretrained_backbone: str | Path | None = None, image_size: int | None = None
) -> nn.Module:
    """Build a registered detector with fresh weights (the backbone's from a torchvision file when given).

    Args:
        name: one of :func:`list_models`.
        num_classes: labels including background (81 for COCO).
        pretrained_backbone: path to a torchvision ImageNet checkpoint of the backbone architecture
            (e.g. ``resnet34-333f7ec4.pth``); loaded key-for-key into ``model.backbone``. Never downloaded.
        image_size: input size in pixels (see :func:`get_spec`); None = the model's own.
    Returns:
        The model; ``model.spec`` is its :class:`DetectorSpec` (``model.spec.image_size`` its input size).
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    model = _BUILDERS[name](num_classes, get_spec(name, image_size))
    if pretrained_backbone is not None:
        load_backbone_weights(model.backbone, pretrained_backbone, arch=model.backbone_arch)
    return model
