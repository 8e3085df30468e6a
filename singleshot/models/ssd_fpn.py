"""SSD320 v1.2: ResNet-50 + FPN (P3-P7) with a weight-shared convolutional box predictor and sigmoid classes.

The TF object-detection API's ``WeightSharedConvolutionalBoxPredictor``: separate box and class towers of
``depth``-channel 3x3 convs, each followed by BatchNorm and ReLU6; conv weights shared by all levels, BatchNorm
kept per level (as the TF implementation does); final 3x3 box and class convs shared across levels, the class
bias initialised to ``-log((1 - p) / p)`` with prior probability ``p = 0.01``.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

from singleshot.models.backbones import resnet_out_channels, resnet_trunk
from singleshot.models.heads import flatten_level
from singleshot.models.spec import DetectorSpec


class SharedTower(nn.Module):
    """``num_convs`` x (3x3 conv shared across levels -> per-level BN -> ReLU6)."""

    def __init__(self, channels: int, num_convs: int, num_levels: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1, bias=False) for _ in range(num_convs))
        self.norms = nn.ModuleList(
            nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(num_levels)) for _ in range(num_convs)
        )
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: Tensor, level: int) -> Tensor:
        for conv, norms in zip(self.convs, self.norms):
            x = self.act(norms[level](conv(x)))
        return x


class SSDFPN(nn.Module):
    """``forward(images [B, 3, S, S]) -> (bbox_regression [B, A, 4], cls_logits [B, A, num_classes - 1])``."""

    def __init__(
        self,
        spec: DetectorSpec,
        num_classes: int,
        backbone: str = "resnet50",
        fpn_channels: int = 256,
        tower_depth: int = 4,
        prior_probability: float = 0.01,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.num_classes = num_classes
        self.backbone_arch = backbone
        self.backbone = resnet_trunk(backbone, 4, stride1_last=False)
        c3, c4, c5 = (resnet_out_channels(backbone, i) for i in (2, 3, 4))
        # P3-P5 from C3-C5, P6/P7 by stride-2 convs on P5 (torchvision's FPN; BN as the TF config uses).
        self.fpn = FeaturePyramidNetwork(
            [c3, c4, c5],
            fpn_channels,
            extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels),
            norm_layer=nn.BatchNorm2d,
        )
        levels = len(spec.anchors.num_anchors_per_location)
        self.num_anchors = spec.anchors.num_anchors_per_location[0]
        self.num_outputs = spec.num_outputs(num_classes)
        self.box_tower = SharedTower(fpn_channels, tower_depth, levels)
        self.cls_tower = SharedTower(fpn_channels, tower_depth, levels)
        self.box_pred = nn.Conv2d(fpn_channels, 4 * self.num_anchors, 3, padding=1)
        self.cls_pred = nn.Conv2d(fpn_channels, self.num_outputs * self.num_anchors, 3, padding=1)
        for module in (self.box_tower, self.cls_tower, self.box_pred, self.cls_pred):
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, std=0.01)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_pred.bias, -math.log((1 - prior_probability) / prior_probability))

    def features(self, images: Tensor) -> list[Tensor]:
        """Pyramid levels P3..P7, each ``[B, fpn_channels, H_l, W_l]``."""
        x = self.backbone[:5](images)  # conv1 .. layer1
        c3 = self.backbone.layer2(x)
        c4 = self.backbone.layer3(c3)
        c5 = self.backbone.layer4(c4)
        return list(self.fpn(OrderedDict([("c3", c3), ("c4", c4), ("c5", c5)])).values())

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        locs, confs = [], []
        for level, f in enumerate(self.features(images)):
            locs.append(flatten_level(self.box_pred(self.box_tower(f, level)), self.num_anchors, 4))
            confs.append(flatten_level(self.cls_pred(self.cls_tower(f, level)), self.num_anchors, self.num_outputs))
        return torch.cat(locs, dim=1), torch.cat(confs, dim=1)
