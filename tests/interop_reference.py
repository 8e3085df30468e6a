"""Stand-ins for the two reference SSD300 implementations, for the interop parity tests.

The real code (MLPerf Training's ``single_stage_detector`` and NVIDIA DeepLearningExamples' SSD) cannot be
installed here, so this file rebuilds each one's *module structure* as /work/shared/interop describes it, written
from torchvision directly and sharing no code with singleshot: the same module names (so their state dicts have
exactly the documented keys), the same forward (``.view(N, 4, -1)`` per level, concatenated on dim 2, giving
``locs [N, 4, 8732]`` and ``confs [N, C, 8732]``), their default boxes and their decoding (per-class loop).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops import nms

DATA = Path(__file__).parent / "data" / "interop"
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def read_key_list(name: str) -> dict[str, tuple[int, ...]]:
    """Parse a ``key<TAB>(shape)`` list from tests/data/interop (copied from shared/interop)."""
    out: dict[str, tuple[int, ...]] = {}
    for line in (DATA / name).read_text().splitlines():
        if not line.strip():
            continue
        key, shape = line.split("\t")
        out[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return out


MLPERF_KEYS = "mlperf_ssd300_r34_state_dict.txt"
NVIDIA_KEYS = "nvidia_ssd300_r50_state_dict.txt"


def _extra_blocks(channels: list[int], mids: list[int], batch_norm: bool) -> nn.ModuleList:
    blocks = []
    for i, (cin, cout, mid) in enumerate(zip(channels[:-1], channels[1:], mids)):
        stride, pad = (2, 1) if i < 3 else (1, 0)
        if batch_norm:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(cin, mid, 1, bias=False),
                    nn.BatchNorm2d(mid),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(mid, cout, 3, stride=stride, padding=pad, bias=False),
                    nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True),
                )
            )
        else:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(cin, mid, 1),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(mid, cout, 3, stride=stride, padding=pad),
                    nn.ReLU(inplace=True),
                )
            )
    return nn.ModuleList(blocks)


class _ReferenceSSD300(nn.Module):
    NUM_DEFAULTS = (4, 6, 6, 6, 4, 4)

    def _build_rest(self, channels: list[int], batch_norm: bool, label_num: int) -> None:
        self.label_num = label_num
        self.additional_blocks = _extra_blocks(channels, [256, 256, 128, 128, 128], batch_norm)
        self.loc = nn.ModuleList(nn.Conv2d(c, nd * 4, 3, padding=1) for nd, c in zip(self.NUM_DEFAULTS, channels))
        self.conf = nn.ModuleList(
            nn.Conv2d(c, nd * label_num, 3, padding=1) for nd, c in zip(self.NUM_DEFAULTS, channels)
        )

    def backbone_forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.backbone_forward(x)
        feeds = [x]
        for block in self.additional_blocks:
            x = block(x)
            feeds.append(x)
        locs, confs = [], []
        for f, lh, ch in zip(feeds, self.loc, self.conf):
            locs.append(lh(f).view(f.size(0), 4, -1))
            confs.append(ch(f).view(f.size(0), self.label_num, -1))
        return torch.cat(locs, 2).contiguous(), torch.cat(confs, 2).contiguous()


class _MLPerfResNet34(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        rn = torchvision.models.resnet34(weights=None)
        children = list(rn.children())  # conv1, bn1, relu, maxpool, layer1, layer2, layer3, layer4, avgpool, fc
        self.layer1 = nn.Sequential(*children[:6])
        self.layer2 = nn.Sequential(*children[6:7])
        first = self.layer2[0][0]
        first.conv1.stride = (1, 1)
        first.downsample[0].stride = (1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer2(self.layer1(x))


class MLPerfSSD300(_ReferenceSSD300):
    """The MLPerf reference SSD300-ResNet-34: ``model``, ``additional_blocks`` (bias, no BN), ``loc``, ``conf``."""

    def __init__(self, label_num: int = 81) -> None:
        super().__init__()
        self.model = _MLPerfResNet34()
        self._build_rest([256, 512, 512, 256, 256, 256], batch_norm=False, label_num=label_num)

    def backbone_forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class _NvidiaResNet50(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        rn = torchvision.models.resnet50(weights=None)
        self.feature_extractor = nn.Sequential(*list(rn.children())[:7])
        first = self.feature_extractor[-1][0]
        first.conv1.stride = (1, 1)
        first.conv2.stride = (1, 1)
        first.downsample[0].stride = (1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.feature_extractor(x)


class NvidiaSSD300(_ReferenceSSD300):
    """NVIDIA SSD300 v1.1: ``feature_extractor.feature_extractor``, ``additional_blocks`` (BN), ``loc``, ``conf``."""

    def __init__(self, label_num: int = 81) -> None:
        super().__init__()
        self.feature_extractor = _NvidiaResNet50()
        self._build_rest([1024, 512, 512, 256, 256, 256], batch_norm=True, label_num=label_num)

    def backbone_forward(self, x: Tensor) -> Tensor:
        return self.feature_extractor(x)


def randomize(model: nn.Module, generator: torch.Generator) -> None:
    """Random weights *and* BatchNorm statistics, scaled so activations stay O(1) through the deep backbones."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + 0.5 * torch.rand(n, generator=generator))
                m.bias.copy_(0.1 * torch.randn(n, generator=generator))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                m.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                m.num_batches_tracked.fill_(int(torch.randint(1, 10_000, (1,), generator=generator)))


@torch.no_grad()
def calibrate_heads(model: _ReferenceSSD300, images: Tensor, loc_std: float = 1.0, conf_std: float = 1.0) -> None:
    """Rescale each head conv so its outputs on ``images`` have the given std: realistic offsets, and softmax
    scores that are spread out (neither saturated at 1.0, which makes ties, nor all below the 0.05 threshold)."""
    x = model.backbone_forward(images)
    feeds = [x]
    for block in model.additional_blocks:
        x = block(x)
        feeds.append(x)
    for f, lh, ch in zip(feeds, model.loc, model.conf):
        for conv, target in ((lh, loc_std), (ch, conf_std)):
            scale = target / conv(f).std().item()
            conv.weight.mul_(scale)
            conv.bias.mul_(scale)


def reference_default_boxes() -> Tensor:
    """SSD300 default boxes as the references build them: ``[8732, 4]`` normalized (cx, cy, w, h), clamped."""
    fig, feat = 300, [38, 19, 10, 5, 3, 1]
    steps, scales = [8, 16, 32, 64, 100, 300], [21, 45, 99, 153, 207, 261, 315]
    ratios = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
    boxes = []
    for k, f in enumerate(feat):
        fk = fig / steps[k]
        s1, s2 = scales[k] / fig, scales[k + 1] / fig
        sizes = [(s1, s1), (math.sqrt(s1 * s2), math.sqrt(s1 * s2))]
        for a in ratios[k]:
            w, h = s1 * math.sqrt(a), s1 / math.sqrt(a)
            sizes += [(w, h), (h, w)]
        for w, h in sizes:
            for i, j in itertools.product(range(f), repeat=2):
                boxes.append(((j + 0.5) / fk, (i + 0.5) / fk, w, h))
    return torch.tensor(boxes, dtype=torch.float64).clamp_(0, 1)


def reference_decode(
    locs: Tensor,
    confs: Tensor,
    criteria: float = 0.5,
    max_per_class: int = 200,
    max_output: int = 200,
    clip_before_nms: bool = False,
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """The references' decoding of ``locs [N, 4, A]``, ``confs [N, C, A]``: per image and class, scores > 0.05,
    the 200 best, greedy NMS on the *unclipped* boxes, then the 200 best overall. Returns per image
    (boxes [K, 4] xyxy normalized, unclipped; scores [K]; labels [K]). ``clip_before_nms`` clips the boxes to
    [0, 1] first, which the references do not do (kept to pin down where singleshot's decoding differs)."""
    dboxes = reference_default_boxes().float()
    out = []
    for loc, conf in zip(locs, confs):
        loc = loc.t()  # (4, A) -> (A, 4)
        xy = 0.1 * loc[:, :2] * dboxes[:, 2:] + dboxes[:, :2]
        wh = torch.exp(0.2 * loc[:, 2:]) * dboxes[:, 2:]
        boxes = torch.cat([xy - wh / 2, xy + wh / 2], 1)  # (A, 4) xyxy
        if clip_before_nms:
            boxes = boxes.clamp(0, 1)
        probs = conf.t().softmax(dim=-1)  # (A, C)
        all_boxes, all_scores, all_labels = [], [], []
        for c in range(1, probs.shape[1]):
            score = probs[:, c]
            keep = score > 0.05
            b, s = boxes[keep], score[keep]
            if s.numel() == 0:
                continue
            s, order = s.sort(descending=True)
            b, s = b[order[:max_per_class]], s[:max_per_class]
            kept = nms(b, s, criteria)
            all_boxes.append(b[kept])
            all_scores.append(s[kept])
            all_labels.append(torch.full((kept.numel(),), c, dtype=torch.long))
        if not all_scores:
            out.append((torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long)))
            continue
        b, s, lab = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
        top = s.sort(descending=True).indices[:max_output]
        out.append((b[top], s[top], lab[top]))
    return out
