"""SSD320 v1.2: ResNet-50 + FPN (P3-P7) with a weight-shared convolutional box predictor and sigmoid classes.

Built as NVIDIA's TensorFlow code builds it (RECIPES.md, SSD320 section; ``ssd_resnet_v1_fpn_feature_extractor.py``,
``feature_map_generators.fpn_top_down_feature_maps``, ``WeightSharedConvolutionalBoxPredictor``):

* FPN: 1x1 laterals on C3, C4, C5 with a bias and no BatchNorm or activation; top-down sums of the nearest-2x
  upsampled running sum (``t5 = lat(C5)``, ``t4 = up(t5) + lat(C4)``, ``t3 = up(t4) + lat(C3)``); P5 = t5 as is,
  P4 / P3 = 3x3 conv + BatchNorm + ReLU6 of t4 / t3; P6 = 3x3 stride-2 conv + BatchNorm + ReLU6 of P5, P7 the same
  of P6 (TF "SAME" padding). FPN conv weights truncated normal (stddev 0.03, cut at 2 stddev as TF does).
* Head: separate box and class towers of 4 x (3x3 conv without bias -> BatchNorm -> ReLU6), conv weights shared by
  all levels and BatchNorm kept per level; final 3x3 box and class convs shared across levels; every head conv
  weight normal(0, 0.01), class bias -4.6, box bias 0.
* BatchNorm in FPN and head: epsilon 1e-3, momentum 0.003 (TF's decay 0.997). The recipe's ``freeze_batchnorm``
  (statistics never updated) is a training option (``train.freeze_bn``), not part of the module.

Checkpoints of the earlier singleshot SSD320 (torchvision's ``FeaturePyramidNetwork``: keys ``fpn.inner_blocks.*``)
do not fit this structure; loading one raises a one-line ``ValueError`` saying so.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from singleshot.models.backbones import resnet_out_channels, resnet_trunk
from singleshot.models.heads import flatten_level
from singleshot.models.spec import DetectorSpec


def tf_batch_norm(channels: int, eps: float, momentum: float) -> nn.BatchNorm2d:
    """``BatchNorm2d`` with TF's epsilon and PyTorch momentum (= 1 - TF decay)."""
    return nn.BatchNorm2d(channels, eps=eps, momentum=momentum)


def same_pad(x: Tensor, kernel: int, stride: int) -> Tensor:
    """Zero-pad ``x [B, C, H, W]`` as TF's ``padding="SAME"`` does before a ``kernel`` x ``kernel`` conv of
    ``stride``: total ``max((ceil(n / s) - 1) * s + k - n, 0)`` per side pair, the odd pixel at the bottom/right
    (PyTorch's symmetric ``padding=1`` samples a 10 x 10 map at other positions for stride 2)."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
        total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class ConvBNReLU6(nn.Module):
    """3x3 conv (no bias, TF-"SAME" padding) -> BatchNorm -> ReLU6: TF's ``conv_hyperparams`` conv."""

    def __init__(self, channels: int, stride: int, eps: float, momentum: float) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(channels, channels, 3, stride=stride, bias=False)
        self.bn = tf_batch_norm(channels, eps, momentum)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu6(self.bn(self.conv(same_pad(x, 3, self.stride))))


class TFFeaturePyramid(nn.Module):
    """``(c3, c4, c5) -> [P3, P4, P5, P6, P7]``, each ``[B, channels, H_l, W_l]`` (40, 20, 10, 5, 3 at 320 px)."""

    def __init__(
        self, in_channels: tuple[int, int, int], channels: int, eps: float, momentum: float, init_std: float
    ) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)  # C3, C4, C5; bias, no BN
        self.smooth = nn.ModuleList(ConvBNReLU6(channels, 1, eps, momentum) for _ in range(2))  # P3, P4
        self.coarse = nn.ModuleList(ConvBNReLU6(channels, 2, eps, momentum) for _ in range(2))  # P6, P7
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=init_std, a=-2 * init_std, b=2 * init_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, c3: Tensor, c4: Tensor, c5: Tensor) -> list[Tensor]:
        t5 = self.lateral[2](c5)
        t4 = F.interpolate(t5, size=c4.shape[-2:], mode="nearest") + self.lateral[1](c4)
        t3 = F.interpolate(t4, size=c3.shape[-2:], mode="nearest") + self.lateral[0](c3)
        p6 = self.coarse[0](t5)
        p7 = self.coarse[1](p6)
        return [self.smooth[0](t3), self.smooth[1](t4), t5, p6, p7]


class SharedTower(nn.Module):
    """``num_convs`` x (3x3 conv shared across levels -> per-level BN -> ReLU6)."""

    def __init__(self, channels: int, num_convs: int, num_levels: int, eps: float, momentum: float) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1, bias=False) for _ in range(num_convs))
        self.norms = nn.ModuleList(
            nn.ModuleList(tf_batch_norm(channels, eps, momentum) for _ in range(num_levels)) for _ in range(num_convs)
        )
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: Tensor, level: int) -> Tensor:
        for conv, norms in zip(self.convs, self.norms):
            x = self.act(norms[level](conv(x)))
        return x


_OLD_FPN_KEYS = ("fpn.inner_blocks.", "fpn.layer_blocks.", "fpn.extra_blocks.")


class SSDFPN(nn.Module):
    """``forward(images [B, 3, S, S]) -> (bbox_regression [B, A, 4], cls_logits [B, A, num_classes - 1])``.

    Args:
        spec: the preset's :class:`DetectorSpec` (anchors: 6 per location on P3-P7).
        num_classes: labels including background (the class head has ``num_classes - 1`` sigmoid channels).
        backbone: torchvision ResNet name; C3-C5 are ``layer2``-``layer4``.
        fpn_channels: FPN and head depth (256).
        tower_depth: shared 3x3 convs per tower (4).
        bn_eps, bn_momentum: BatchNorm of FPN and head (TF: epsilon 1e-3, decay 0.997).
        fpn_init_std: truncated-normal stddev of the FPN conv weights (0.03).
        head_init_std: normal stddev of every head conv weight (0.01).
        class_bias_init: initial class-logit bias (-4.6, about a 1% prior).
    """

    def __init__(
        self,
        spec: DetectorSpec,
        num_classes: int,
        backbone: str = "resnet50",
        fpn_channels: int = 256,
        tower_depth: int = 4,
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.003,
        fpn_init_std: float = 0.03,
        head_init_std: float = 0.01,
        class_bias_init: float = -4.6,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.num_classes = num_classes
        self.backbone_arch = backbone
        self.backbone = resnet_trunk(backbone, 4, stride1_last=False)
        c3, c4, c5 = (resnet_out_channels(backbone, i) for i in (2, 3, 4))
        self.fpn = TFFeaturePyramid((c3, c4, c5), fpn_channels, bn_eps, bn_momentum, fpn_init_std)
        levels = len(spec.anchors.num_anchors_per_location)
        self.num_anchors = spec.anchors.num_anchors_per_location[0]
        self.num_outputs = spec.num_outputs(num_classes)
        self.box_tower = SharedTower(fpn_channels, tower_depth, levels, bn_eps, bn_momentum)
        self.cls_tower = SharedTower(fpn_channels, tower_depth, levels, bn_eps, bn_momentum)
        self.box_pred = nn.Conv2d(fpn_channels, 4 * self.num_anchors, 3, padding=1)
        self.cls_pred = nn.Conv2d(fpn_channels, self.num_outputs * self.num_anchors, 3, padding=1)
        for module in (self.box_tower, self.cls_tower, self.box_pred, self.cls_pred):
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, std=head_init_std)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_pred.bias, class_bias_init)
        self._register_load_state_dict_pre_hook(_refuse_old_fpn)

    def features(self, images: Tensor) -> list[Tensor]:
        """Pyramid levels P3..P7, each ``[B, fpn_channels, H_l, W_l]``."""
        x = self.backbone[:5](images)  # conv1 .. layer1
        c3 = self.backbone.layer2(x)
        c4 = self.backbone.layer3(c3)
        c5 = self.backbone.layer4(c4)
        return self.fpn(c3, c4, c5)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        locs, confs = [], []
        for level, f in enumerate(self.features(images)):
            locs.append(flatten_level(self.box_pred(self.box_tower(f, level)), self.num_anchors, 4))
            confs.append(flatten_level(self.cls_pred(self.cls_tower(f, level)), self.num_anchors, self.num_outputs))
        return torch.cat(locs, dim=1), torch.cat(confs, dim=1)


def _refuse_old_fpn(state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Load hook: a state dict with the earlier torchvision-FPN keys gets one sentence instead of a key dump."""
    if any(key.startswith(prefix + old) for key in state_dict for old in _OLD_FPN_KEYS):
        raise ValueError(
            "this ssd320_resnet50_fpn checkpoint has the earlier singleshot FPN (torchvision FeaturePyramidNetwork, "
            "keys fpn.inner_blocks.*); the model now has NVIDIA SSD320 v1.2's FPN structure, so these weights "
            "cannot be loaded: retrain, or use the singleshot release that wrote them"
        )
