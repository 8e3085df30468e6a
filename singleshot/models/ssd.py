"""SSD300-family detectors: a truncated ResNet, a stack of extra down-sampling blocks, and plain conv heads.

Covers the MLPerf SSD300-ResNet-34 (extra blocks with bias + ReLU, no BN), NVIDIA SSD300 v1.1 ResNet-50 (extra
blocks without bias, with BN) and the small CPU preset. Module names follow the reference checkpoints
(``additional_blocks.i.j``, ``head.loc.i``, ``head.conf.i``) so checkpoint conversion is a renaming, not a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from singleshot.models.backbones import resnet_out_channels, resnet_trunk
from singleshot.models.heads import SSDHead
from singleshot.models.spec import DetectorSpec


@dataclass(frozen=True)
class ExtraBlock:
    """conv1x1(in -> mid) + ReLU + conv3x3(mid -> out, stride, padding) + ReLU (BN after each conv if enabled)."""

    mid: int
    out: int
    stride: int
    padding: int


def _extra_block(in_ch: int, blk: ExtraBlock, batch_norm: bool) -> nn.Sequential:
    if batch_norm:
        return nn.Sequential(
            nn.Conv2d(in_ch, blk.mid, 1, bias=False),
            nn.BatchNorm2d(blk.mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(blk.mid, blk.out, 3, stride=blk.stride, padding=blk.padding, bias=False),
            nn.BatchNorm2d(blk.out),
            nn.ReLU(inplace=True),
        )
    return nn.Sequential(
        nn.Conv2d(in_ch, blk.mid, 1),
        nn.ReLU(inplace=True),
        nn.Conv2d(blk.mid, blk.out, 3, stride=blk.stride, padding=blk.padding),
        nn.ReLU(inplace=True),
    )


class SSD(nn.Module):
    """Single-tap SSD: backbone output is the first detection level; each extra block adds one more.

    ``forward(images [B, 3, S, S]) -> (bbox_regression [B, A, 4], cls_logits [B, A, C])`` (see ``spec``).
    """

    def __init__(
        self,
        spec: DetectorSpec,
        num_classes: int,
        backbone: str,
        backbone_layers: int,
        extras: list[ExtraBlock],
        extra_batch_norm: bool,
        stride1_last: bool = True,
        blocks_per_layer: int | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.num_classes = num_classes
        self.backbone_arch = backbone
        self.backbone = resnet_trunk(
            backbone, backbone_layers, stride1_last=stride1_last, blocks_per_layer=blocks_per_layer
        )
        channels = [resnet_out_channels(backbone, backbone_layers)]
        blocks = []
        for blk in extras:
            blocks.append(_extra_block(channels[-1], blk, extra_batch_norm))
            channels.append(blk.out)
        self.additional_blocks = nn.ModuleList(blocks)
        self.head = SSDHead(channels, list(spec.anchors.num_anchors_per_location), spec.num_outputs(num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        # Xavier-uniform for extra blocks and heads; biases keep PyTorch's default, as both references do.
        for module in (self.additional_blocks, self.head):
            for p in module.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)

    def features(self, images: Tensor) -> list[Tensor]:
        """Per-level feature maps, ``[B, C_l, H_l, W_l]``, first level = backbone output."""
        x = self.backbone(images)
        feats = [x]
        for block in self.additional_blocks:
            x = block(x)
            feats.append(x)
        return feats

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.features(images))
