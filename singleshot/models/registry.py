"""The preset registry: ``build_architecture(name, ...)`` over named builder functions (timm's pattern).

:func:`singleshot.build_model` is the public way to make a model: this registry's architecture, plus starting weights
from a trained detector (:mod:`singleshot.interop.weights`); the packages below it (checkpoints, interop, the engine)
use :func:`build_architecture` directly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from singleshot.box.anchors import SSD300_ANCHORS, MultiscaleAnchorSpec, SSDAnchorSpec
from singleshot.box.classifier import SIGMOID
from singleshot.box.coder import TF_ARGMAX_MATCH, MatchRule
from singleshot.box.postprocess import PostprocessConfig
from singleshot.models.backbones import load_backbone_weights
from singleshot.models.spec import DetectorSpec
from singleshot.models.ssd import SSD, ExtraBlock
from singleshot.models.ssd_fpn import SSDFPN

_BUILDERS: dict[str, Callable[[int], nn.Module]] = {}
_SPECS: dict[str, DetectorSpec] = {}


def register(spec: DetectorSpec) -> Callable[[Callable[[int], nn.Module]], Callable[[int], nn.Module]]:
    def deco(fn: Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
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
def ssd300_resnet34(num_classes: int) -> nn.Module:
    """MLPerf Training reference SSD300: ResNet-34 to conv4_x (stride 1), extra blocks with bias, no BN."""
    return SSD(_SPECS["ssd300_resnet34"], num_classes, "resnet34", 3, _SSD300_EXTRAS, extra_batch_norm=False)


@register(DetectorSpec("ssd300_resnet50", 300, SSD300_ANCHORS, reference_backbone_file="resnet50-0676ba61.pth"))
def ssd300_resnet50(num_classes: int) -> nn.Module:
    """NVIDIA SSD300 v1.1: ResNet-50 to conv4_x (stride 1), extra blocks with BN and no bias."""
    return SSD(_SPECS["ssd300_resnet50"], num_classes, "resnet50", 3, _SSD300_EXTRAS, extra_batch_norm=True)


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
    )
)
def ssd320_resnet50_fpn(num_classes: int) -> nn.Module:
    """NVIDIA SSD320 v1.2: ResNet-50 + TF-style FPN P3-P7, shared 4-conv towers, sigmoid focal-loss classifier;
    BatchNorm epsilon 1e-3 / momentum 0.003 in FPN and head, FPN weights truncated normal 0.03, head normal 0.01,
    class bias -4.6 (the TF config's values)."""
    return SSDFPN(
        _SPECS["ssd320_resnet50_fpn"],
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


# IoU > 0.4 rather than SSD300's 0.5: more positive default boxes per object for a model this small.
@register(DetectorSpec("ssd_tiny", 160, TINY_ANCHORS, match=MatchRule(iou_threshold=0.4)))
def ssd_tiny(num_classes: int) -> nn.Module:
    """Small SSD for CPUs, the demo and the tests (~0.9M parameters): ResNet-18 through layer2, the first block of
    each layer only (1.7x faster training steps on 2 CPU cores than both blocks), + 4 extra blocks."""
    extras = [
        ExtraBlock(64, 128, 2, 1),
        ExtraBlock(64, 128, 2, 1),
        ExtraBlock(64, 128, 2, 1),
        ExtraBlock(64, 128, 1, 0),
    ]
    return SSD(
        _SPECS["ssd_tiny"], num_classes, "resnet18", 2, extras, extra_batch_norm=True, stride1_last=False,
        blocks_per_layer=1,
    )


def list_models() -> list[str]:
    """Names accepted by :func:`build_architecture` (and :func:`singleshot.build_model`)."""
    return sorted(_BUILDERS)


def get_spec(name: str) -> DetectorSpec:
    """The :class:`DetectorSpec` of a registered model (its input size, anchors, loss, post-processing, ...)."""
    if name not in _SPECS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _SPECS[name]


def build_architecture(
    name: str, num_classes: int = 81, pretrained_backbone: str | Path | None = None
) -> nn.Module:
    """Build a registered detector with fresh weights (the backbone's from a torchvision file when given).

    Args:
        name: one of :func:`list_models`.
        num_classes: labels including background (81 for COCO).
        pretrained_backbone: path to a torchvision ImageNet checkpoint of the backbone architecture
            (e.g. ``resnet34-333f7ec4.pth``); loaded key-for-key into ``model.backbone``. Never downloaded.
    Returns:
        The model; ``model.spec`` is its :class:`DetectorSpec`.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    model = _BUILDERS[name](num_classes)
    if pretrained_backbone is not None:
        load_backbone_weights(model.backbone, pretrained_backbone, arch=model.backbone_arch)
    return model
